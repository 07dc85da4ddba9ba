//! Storage of users, memberships, refresh token families and the audit log.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use gatehouse_engine::{Error, Result};

use super::datastore::{TxError, db_error, pool_error, utc};
use super::schema::{
    api_keys, audit_events, email_tokens, external_identities, memberships, organizations,
    plugin_credentials, refresh_tokens, service_plugins, services, token_families,
    uploaded_plugins, users,
};
use super::{Backend, SqlStore, SqliteConn, SqliteReadConn};

/// What an insert bounded by a limit came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Inserted,
    /// The row exists already.
    Exists,
    /// The limit is reached.
    Full,
}

/// A user: global, joined to organizations by memberships.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct User {
    pub id: String,
    /// Lowercased.
    pub email: String,
    pub email_verified: bool,
    pub name: String,
    /// Argon2id, PHC string form.
    #[serde(skip)]
    pub password_hash: Option<String>,
    /// No longer counted: sign-in failures are throttled per (account, address) in the
    /// ephemeral store (`crate::cache::limits`). The column stays until a later migration.
    #[serde(skip)]
    pub failed_logins: i32,
    /// No longer set (see `failed_logins`).
    #[serde(skip)]
    pub locked_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = users)]
struct UserRow {
    id: String,
    email: String,
    email_verified: bool,
    name: String,
    password_hash: Option<String>,
    failed_logins: i32,
    locked_until: Option<NaiveDateTime>,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        Self {
            id: r.id,
            email: r.email,
            email_verified: r.email_verified,
            name: r.name,
            password_hash: r.password_hash,
            failed_logins: r.failed_logins,
            locked_until: r.locked_until.map(utc),
            created_at: utc(r.created_at),
            updated_at: utc(r.updated_at),
        }
    }
}

/// A user's role in an organization.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Queryable, Selectable, Insertable)]
#[diesel(table_name = memberships)]
pub struct Membership {
    pub organization_id: String,
    pub user_id: String,
    pub role: String,
    #[serde(serialize_with = "as_utc")]
    pub created_at: NaiveDateTime,
}

fn as_utc<S: serde::Serializer>(t: &NaiveDateTime, s: S) -> std::result::Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&utc(*t), s)
}

/// A service API key (without the key, which is shown once).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Queryable, Selectable, Insertable)]
#[diesel(table_name = api_keys)]
pub struct ApiKey {
    pub id: String,
    pub service_id: String,
    pub name: String,
    pub prefix: String,
    #[serde(skip)]
    pub key_sha256: String,
    #[serde(serialize_with = "as_utc")]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "as_utc_opt")]
    pub revoked_at: Option<NaiveDateTime>,
}

fn as_utc_opt<S: serde::Serializer>(
    t: &Option<NaiveDateTime>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&t.map(utc), s)
}

/// A single-use token sent by email (verification, password reset, invitation).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Queryable, Selectable, Insertable)]
#[diesel(table_name = email_tokens)]
pub struct EmailToken {
    /// The SHA-256 of the token (not the token): an invitation's id.
    #[serde(rename = "id")]
    pub token_sha256: String,
    pub purpose: String,
    pub email: String,
    pub user_id: Option<String>,
    pub organization_id: Option<String>,
    pub role: Option<String>,
    pub invited_by: Option<String>,
    #[serde(serialize_with = "as_utc")]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "as_utc")]
    pub expires_at: NaiveDateTime,
    #[serde(serialize_with = "as_utc_opt")]
    pub used_at: Option<NaiveDateTime>,
}

/// A refresh token family: the tokens rotated from one authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFamily {
    pub id: String,
    pub client_id: String,
    pub user_id: String,
    /// The login session's public id.
    pub session_id: String,
    pub scope: String,
    pub amr: Vec<String>,
    pub auth_time: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = token_families)]
struct FamilyRow {
    id: String,
    client_id: String,
    user_id: String,
    session_id: String,
    scope: String,
    amr: String,
    auth_time: NaiveDateTime,
    created_at: NaiveDateTime,
    expires_at: NaiveDateTime,
    revoked_at: Option<NaiveDateTime>,
}

fn family_from(r: FamilyRow) -> Result<TokenFamily> {
    Ok(TokenFamily {
        amr: serde_json::from_str(&r.amr)
            .map_err(|e| Error::Storage(format!("stored amr does not parse: {e}")))?,
        id: r.id,
        client_id: r.client_id,
        user_id: r.user_id,
        session_id: r.session_id,
        scope: r.scope,
        auth_time: utc(r.auth_time),
        created_at: utc(r.created_at),
        expires_at: utc(r.expires_at),
        revoked_at: r.revoked_at.map(utc),
    })
}

fn family_row(f: &TokenFamily) -> Result<FamilyRow> {
    Ok(FamilyRow {
        id: f.id.clone(),
        client_id: f.client_id.clone(),
        user_id: f.user_id.clone(),
        session_id: f.session_id.clone(),
        scope: f.scope.clone(),
        amr: serde_json::to_string(&f.amr)
            .map_err(|e| Error::Storage(format!("cannot serialize amr: {e}")))?,
        auth_time: f.auth_time.naive_utc(),
        created_at: f.created_at.naive_utc(),
        expires_at: f.expires_at.naive_utc(),
        revoked_at: f.revoked_at.map(|t| t.naive_utc()),
    })
}

/// What presenting a refresh token came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    /// It was current: it is now used and the new token replaces it.
    Rotated(TokenFamily),
    /// No such token.
    Unknown,
    /// It had been exchanged before: the family is now revoked.
    Reused(TokenFamily),
    /// Its family was revoked or has expired.
    Dead(TokenFamily),
}

/// An audit log entry.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditEvent {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub organization_id: Option<String>,
    pub actor: String,
    pub ip: Option<String>,
    pub kind: String,
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = audit_events)]
struct NewAuditRow {
    at: NaiveDateTime,
    organization_id: Option<String>,
    actor: String,
    ip: Option<String>,
    kind: String,
    details: String,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = audit_events)]
struct AuditRow {
    id: i64,
    at: NaiveDateTime,
    organization_id: Option<String>,
    actor: String,
    ip: Option<String>,
    kind: String,
    details: String,
}

/// A page of an organization's audit log, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub organization_id: String,
    pub kind: Option<String>,
    pub actor: Option<String>,
    /// Entries older than this id (the previous page's last).
    pub before: Option<i64>,
    pub since: Option<DateTime<Utc>>,
    pub limit: i64,
}

/// A login plugin a service offers, as stored: `config` without its secret fields, which are
/// in `secrets`, sealed.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = service_plugins)]
pub struct ServicePluginRow {
    pub service_id: String,
    pub plugin: String,
    pub config: String,
    pub secrets: Option<String>,
    pub position: i32,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// A plugin uploaded through the platform API.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = uploaded_plugins)]
pub struct UploadedPlugin {
    pub id: String,
    pub manifest: String,
    pub wasm: Vec<u8>,
    pub sha256: String,
    pub uploaded_by: String,
    pub uploaded_at: NaiveDateTime,
}

/// What linking an identity provider's account to a new user came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewExternalUser {
    Created(User),
    /// A user has that email already (and is not linked to this account).
    EmailTaken,
    /// The account was linked meanwhile, to this user.
    Linked(String),
}

impl SqlStore {
    /// The plugins uploaded through the platform API, by id.
    pub async fn uploaded_plugins(&self) -> Result<Vec<UploadedPlugin>> {
        with_conn!(self, |conn| {
            uploaded_plugins::table
                .order(uploaded_plugins::id)
                .select(UploadedPlugin::as_select())
                .load(conn)
                .await
                .map_err(db_error)
        })
    }

    /// The id and component digest of every uploaded plugin (without the components).
    pub async fn uploaded_plugin_digests(&self) -> Result<Vec<(String, String)>> {
        with_conn!(self, |conn| {
            uploaded_plugins::table
                .order(uploaded_plugins::id)
                .select((uploaded_plugins::id, uploaded_plugins::sha256))
                .load(conn)
                .await
                .map_err(db_error)
        })
    }

    /// One uploaded plugin.
    pub async fn uploaded_plugin(&self, id: &str) -> Result<Option<UploadedPlugin>> {
        with_conn!(self, |conn| {
            uploaded_plugins::table
                .find(id)
                .select(UploadedPlugin::as_select())
                .first(conn)
                .await
                .optional()
                .map_err(db_error)
        })
    }

    /// Keeps an uploaded plugin, replacing one with the same id.
    pub async fn put_uploaded_plugin(&self, p: &UploadedPlugin) -> Result<()> {
        with_conn!(self, |conn| {
            diesel::insert_into(uploaded_plugins::table)
                .values(p)
                .on_conflict(uploaded_plugins::id)
                .do_update()
                .set((
                    uploaded_plugins::manifest.eq(&p.manifest),
                    uploaded_plugins::wasm.eq(&p.wasm),
                    uploaded_plugins::sha256.eq(&p.sha256),
                    uploaded_plugins::uploaded_by.eq(&p.uploaded_by),
                    uploaded_plugins::uploaded_at.eq(p.uploaded_at),
                ))
                .execute(conn)
                .await
                .map_err(db_error)?
        });
        Ok(())
    }

    /// Forgets an uploaded plugin; false if there was none.
    pub async fn delete_uploaded_plugin(&self, id: &str) -> Result<bool> {
        let n = with_conn!(self, |conn| {
            diesel::delete(uploaded_plugins::table.find(id))
                .execute(conn)
                .await
                .map_err(db_error)?
        });
        Ok(n == 1)
    }

    /// The plugins `service` offers, in order.
    pub async fn service_plugins(&self, service: &str) -> Result<Vec<ServicePluginRow>> {
        with_conn!(self, |conn| {
            service_plugins::table
                .filter(service_plugins::service_id.eq(service))
                .order((service_plugins::position, service_plugins::plugin))
                .select(ServicePluginRow::as_select())
                .load(conn)
                .await
                .map_err(db_error)
        })
    }

    /// Enables a plugin on a service, or replaces its configuration; a new one goes last.
    pub async fn put_service_plugin(&self, row: &ServicePluginRow) -> Result<()> {
        let row = row.clone();
        let _: () = write_tx!(self, |conn| {
            let existing: Option<i32> = service_plugins::table
                .find((&row.service_id, &row.plugin))
                .select(service_plugins::position)
                .first(conn)
                .await
                .optional()?;
            match existing {
                Some(_) => {
                    diesel::update(service_plugins::table.find((&row.service_id, &row.plugin)))
                        .set((
                            service_plugins::config.eq(&row.config),
                            service_plugins::secrets.eq(&row.secrets),
                            service_plugins::updated_at.eq(row.updated_at),
                        ))
                        .execute(conn)
                        .await?;
                }
                None => {
                    let last: Option<i32> = service_plugins::table
                        .filter(service_plugins::service_id.eq(&row.service_id))
                        .select(diesel::dsl::max(service_plugins::position))
                        .first(conn)
                        .await?;
                    let mut row = row.clone();
                    row.position = last.map_or(0, |p| p + 1);
                    diesel::insert_into(service_plugins::table)
                        .values(&row)
                        .execute(conn)
                        .await?;
                }
            }
            Ok(())
        })
        .map_err(Error::from)?;
        Ok(())
    }

    /// Stops a service offering a plugin; false if it did not.
    pub async fn delete_service_plugin(&self, service: &str, plugin: &str) -> Result<bool> {
        let n = with_conn!(self, |conn| {
            diesel::delete(service_plugins::table.find((service, plugin)))
                .execute(conn)
                .await
                .map_err(db_error)?
        });
        Ok(n == 1)
    }

    /// The user linked to an account at an identity provider.
    pub async fn external_identity(
        &self,
        plugin: &str,
        provider: &str,
        subject: &str,
    ) -> Result<Option<String>> {
        with_conn!(self, |conn| {
            external_identities::table
                .find((plugin, provider, subject))
                .select(external_identities::user_id)
                .first(conn)
                .await
                .optional()
                .map_err(db_error)
        })
    }

    /// Links an account at an identity provider to a user; false if it is linked already.
    pub async fn link_external_identity(
        &self,
        plugin: &str,
        provider: &str,
        subject: &str,
        user: &str,
        email: Option<&str>,
    ) -> Result<bool> {
        let now = Utc::now().naive_utc();
        let n = with_conn!(self, |conn| {
            diesel::insert_into(external_identities::table)
                .values((
                    external_identities::plugin.eq(plugin),
                    external_identities::provider.eq(provider),
                    external_identities::subject.eq(subject),
                    external_identities::user_id.eq(user),
                    external_identities::email.eq(email),
                    external_identities::created_at.eq(now),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await
                .map_err(db_error)?
        });
        Ok(n == 1)
    }

    /// Creates `user` linked to an account at an identity provider, both or neither.
    pub async fn create_external_user(
        &self,
        user: &User,
        plugin: &str,
        provider: &str,
        subject: &str,
    ) -> Result<NewExternalUser> {
        let row = UserRow {
            id: user.id.clone(),
            email: user.email.clone(),
            email_verified: user.email_verified,
            name: user.name.clone(),
            password_hash: None,
            failed_logins: 0,
            locked_until: None,
            created_at: user.created_at.naive_utc(),
            updated_at: user.updated_at.naive_utc(),
        };
        let (plugin, provider, subject) = (
            plugin.to_string(),
            provider.to_string(),
            subject.to_string(),
        );
        let outcome: Result<NewExternalUser> = write_tx!(self, |conn| {
            let linked: Option<String> = external_identities::table
                .find((&plugin, &provider, &subject))
                .select(external_identities::user_id)
                .first(conn)
                .await
                .optional()?;
            if let Some(u) = linked {
                return Ok(NewExternalUser::Linked(u));
            }
            let n = diesel::insert_into(users::table)
                .values(&row)
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            if n == 0 {
                return Ok(NewExternalUser::EmailTaken);
            }
            diesel::insert_into(external_identities::table)
                .values((
                    external_identities::plugin.eq(&plugin),
                    external_identities::provider.eq(&provider),
                    external_identities::subject.eq(&subject),
                    external_identities::user_id.eq(&row.id),
                    external_identities::email.eq(Some(&row.email)),
                    external_identities::created_at.eq(row.created_at),
                ))
                .execute(conn)
                .await?;
            Ok(NewExternalUser::Created(User::from(row.clone())))
        })
        .map_err(Error::from);
        outcome
    }

    /// Adds a user; false if the email is taken.
    pub async fn insert_user(&self, u: &User) -> Result<bool> {
        let row = UserRow {
            id: u.id.clone(),
            email: u.email.clone(),
            email_verified: u.email_verified,
            name: u.name.clone(),
            password_hash: u.password_hash.clone(),
            failed_logins: u.failed_logins,
            locked_until: u.locked_until.map(|t| t.naive_utc()),
            created_at: u.created_at.naive_utc(),
            updated_at: u.updated_at.naive_utc(),
        };
        let n = with_conn!(self, |conn| {
            diesel::insert_into(users::table)
                .values(&row)
                .on_conflict_do_nothing()
                .execute(conn)
                .await
                .map_err(db_error)?
        });
        Ok(n == 1)
    }

    pub async fn user(&self, id: &str) -> Result<Option<User>> {
        let row: Option<UserRow> = read_conn!(self, |conn| {
            users::table
                .find(id)
                .select(UserRow::as_select())
                .first(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        Ok(row.map(User::from))
    }

    /// The sealed credential `name` of `user` kept for `plugin`.
    pub async fn plugin_credential(
        &self,
        plugin: &str,
        user: &str,
        name: &str,
    ) -> Result<Option<String>> {
        read_conn!(self, |conn| {
            plugin_credentials::table
                .find((plugin, user, name))
                .select(plugin_credentials::sealed)
                .first(conn)
                .await
                .optional()
                .map_err(db_error)
        })
    }

    /// Whether `user` has each of the credentials `a` and `b` (plugin, name), in one read.
    /// The query's shape is fixed, so that its prepared statement is reused.
    pub async fn plugin_credentials_held(
        &self,
        user: &str,
        a: (&str, &str),
        b: (&str, &str),
    ) -> Result<(bool, bool)> {
        use plugin_credentials::{name, plugin, user_id};
        let held: Vec<(String, String)> = read_conn!(self, |conn| {
            plugin_credentials::table
                .filter(user_id.eq(user))
                .filter((plugin.eq(a.0).and(name.eq(a.1))).or(plugin.eq(b.0).and(name.eq(b.1))))
                .select((plugin, name))
                .load(conn)
                .await
                .map_err(db_error)?
        });
        let has = |(p, n): (&str, &str)| held.iter().any(|h| h.0 == p && h.1 == n);
        Ok((has(a), has(b)))
    }

    /// Keeps a sealed credential (replacing one of the same name), or with `None` removes it.
    pub async fn set_plugin_credential(
        &self,
        plugin: &str,
        user: &str,
        name: &str,
        sealed: Option<&str>,
    ) -> Result<()> {
        let now = Utc::now().naive_utc();
        match sealed {
            Some(sealed) => with_conn!(self, |conn| {
                diesel::insert_into(plugin_credentials::table)
                    .values((
                        plugin_credentials::plugin.eq(plugin),
                        plugin_credentials::user_id.eq(user),
                        plugin_credentials::name.eq(name),
                        plugin_credentials::sealed.eq(sealed),
                        plugin_credentials::updated_at.eq(now),
                    ))
                    .on_conflict((
                        plugin_credentials::plugin,
                        plugin_credentials::user_id,
                        plugin_credentials::name,
                    ))
                    .do_update()
                    .set((
                        plugin_credentials::sealed.eq(sealed),
                        plugin_credentials::updated_at.eq(now),
                    ))
                    .execute(conn)
                    .await
                    .map_err(db_error)?
            }),
            None => with_conn!(self, |conn| {
                diesel::delete(plugin_credentials::table.find((plugin, user, name)))
                    .execute(conn)
                    .await
                    .map_err(db_error)?
            }),
        };
        Ok(())
    }

    /// Removes every credential of `user` kept for `plugin`; how many there were.
    pub async fn delete_plugin_credentials(&self, plugin: &str, user: &str) -> Result<usize> {
        with_conn!(self, |conn| {
            diesel::delete(
                plugin_credentials::table
                    .filter(plugin_credentials::plugin.eq(plugin))
                    .filter(plugin_credentials::user_id.eq(user)),
            )
            .execute(conn)
            .await
            .map_err(db_error)
        })
    }

    /// The user with this (lowercased) email.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        let row: Option<UserRow> = read_conn!(self, |conn| {
            users::table
                .filter(users::email.eq(email))
                .select(UserRow::as_select())
                .first(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        Ok(row.map(User::from))
    }

    pub async fn count_members(&self, organization: &str) -> Result<i64> {
        with_conn!(self, |conn| {
            memberships::table
                .filter(memberships::organization_id.eq(organization))
                .count()
                .get_result::<i64>(conn)
                .await
                .map_err(db_error)
        })
    }

    /// Adds a membership unless the organization has `max` members already, in one
    /// transaction that holds the organization's row, so that concurrent additions (from any
    /// node) cannot together pass the limit.
    pub async fn insert_membership_within(&self, m: &Membership, max: i64) -> Result<Limited> {
        let m = m.clone();
        let outcome: Limited = write_tx!(self, |conn| {
            // Hold the organization's row until commit (a no-op update: PostgreSQL locks the
            // row; SQLite's write transaction holds the whole database).
            diesel::update(organizations::table.find(&m.organization_id))
                .set(organizations::tier.eq(organizations::tier))
                .execute(conn)
                .await?;
            let n: i64 = memberships::table
                .filter(memberships::organization_id.eq(&m.organization_id))
                .count()
                .get_result(conn)
                .await?;
            if n >= max {
                return Ok(Limited::Full);
            }
            let added = diesel::insert_into(memberships::table)
                .values(&m)
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            Ok(if added == 1 {
                Limited::Inserted
            } else {
                Limited::Exists
            })
        })
        .map_err(Error::from)?;
        Ok(outcome)
    }

    pub async fn membership(&self, organization: &str, user: &str) -> Result<Option<Membership>> {
        with_conn!(self, |conn| {
            memberships::table
                .find((organization, user))
                .select(Membership::as_select())
                .first(conn)
                .await
                .optional()
                .map_err(db_error)
        })
    }

    /// Replaces a user's password hash; clears failures and lockout.
    pub async fn set_password_hash(&self, id: &str, hash: &str) -> Result<bool> {
        let now = Utc::now().naive_utc();
        let n = with_conn!(self, |conn| {
            diesel::update(users::table.find(id))
                .set((
                    users::password_hash.eq(Some(hash)),
                    users::failed_logins.eq(0),
                    users::locked_until.eq(None::<NaiveDateTime>),
                    users::updated_at.eq(now),
                ))
                .execute(conn)
                .await
                .map_err(db_error)?
        });
        Ok(n == 1)
    }

    pub async fn set_email_verified(&self, id: &str) -> Result<bool> {
        let now = Utc::now().naive_utc();
        let n = with_conn!(self, |conn| {
            diesel::update(users::table.find(id))
                .set((users::email_verified.eq(true), users::updated_at.eq(now)))
                .execute(conn)
                .await
                .map_err(db_error)?
        });
        Ok(n == 1)
    }

    pub async fn insert_email_token(&self, t: &EmailToken) -> Result<()> {
        with_conn!(self, |conn| {
            diesel::insert_into(email_tokens::table)
                .values(t)
                .execute(conn)
                .await
                .map_err(db_error)?
        });
        Ok(())
    }

    /// The unused, unexpired token with this digest and purpose.
    pub async fn email_token(&self, sha256: &str, purpose: &str) -> Result<Option<EmailToken>> {
        let now = Utc::now().naive_utc();
        with_conn!(self, |conn| {
            email_tokens::table
                .find(sha256)
                .filter(email_tokens::purpose.eq(purpose))
                .filter(email_tokens::used_at.is_null())
                .filter(email_tokens::expires_at.gt(now))
                .select(EmailToken::as_select())
                .first(conn)
                .await
                .optional()
                .map_err(db_error)
        })
    }

    /// Marks a token used; false if it was used (or expired) already: of two uses, one wins.
    pub async fn use_email_token(&self, sha256: &str) -> Result<bool> {
        let now = Utc::now().naive_utc();
        let n = with_conn!(self, |conn| {
            diesel::update(
                email_tokens::table
                    .find(sha256)
                    .filter(email_tokens::used_at.is_null())
                    .filter(email_tokens::expires_at.gt(now)),
            )
            .set(email_tokens::used_at.eq(Some(now)))
            .execute(conn)
            .await
            .map_err(db_error)?
        });
        Ok(n == 1)
    }

    /// Withdraws an open invitation of an organization; false if there was none.
    pub async fn withdraw_invitation(&self, organization: &str, sha256: &str) -> Result<bool> {
        let now = Utc::now().naive_utc();
        let n = with_conn!(self, |conn| {
            diesel::update(
                email_tokens::table
                    .find(sha256)
                    .filter(email_tokens::organization_id.eq(organization))
                    .filter(email_tokens::purpose.eq("invite"))
                    .filter(email_tokens::used_at.is_null()),
            )
            .set(email_tokens::used_at.eq(Some(now)))
            .execute(conn)
            .await
            .map_err(db_error)?
        });
        Ok(n == 1)
    }

    /// An organization's open invitations, oldest first.
    pub async fn invitations(&self, organization: &str) -> Result<Vec<EmailToken>> {
        let now = Utc::now().naive_utc();
        with_conn!(self, |conn| {
            email_tokens::table
                .filter(email_tokens::organization_id.eq(organization))
                .filter(email_tokens::purpose.eq("invite"))
                .filter(email_tokens::used_at.is_null())
                .filter(email_tokens::expires_at.gt(now))
                .order(email_tokens::created_at.asc())
                .select(EmailToken::as_select())
                .load(conn)
                .await
                .map_err(db_error)
        })
    }

    /// Removes a membership; returns whether there was one.
    pub async fn delete_membership(&self, organization: &str, user: &str) -> Result<bool> {
        let n = with_conn!(self, |conn| {
            diesel::delete(memberships::table.find((organization, user)))
                .execute(conn)
                .await
                .map_err(db_error)?
        });
        Ok(n == 1)
    }

    /// An organization's members with their users, oldest membership first.
    pub async fn members(&self, organization: &str) -> Result<Vec<(Membership, User)>> {
        let rows: Vec<(Membership, UserRow)> = with_conn!(self, |conn| {
            memberships::table
                .inner_join(users::table)
                .filter(memberships::organization_id.eq(organization))
                .order(memberships::created_at.asc())
                .select((Membership::as_select(), UserRow::as_select()))
                .load(conn)
                .await
                .map_err(db_error)?
        });
        Ok(rows.into_iter().map(|(m, u)| (m, User::from(u))).collect())
    }

    /// The organizations a user belongs to: (organization id, slug, name, status, role).
    pub async fn memberships_of(
        &self,
        user: &str,
    ) -> Result<Vec<(String, String, String, String, String)>> {
        with_conn!(self, |conn| {
            memberships::table
                .inner_join(organizations::table)
                .filter(memberships::user_id.eq(user))
                .order(organizations::slug.asc())
                .select((
                    organizations::id,
                    organizations::slug,
                    organizations::name,
                    organizations::status,
                    memberships::role,
                ))
                .load(conn)
                .await
                .map_err(db_error)
        })
    }

    /// The client ids of an organization's services.
    pub async fn service_ids(&self, organization: &str) -> Result<Vec<String>> {
        with_conn!(self, |conn| {
            services::table
                .filter(services::organization_id.eq(organization))
                .filter(services::deleted_at.is_null())
                .order(services::created_at.asc())
                .select(services::id)
                .load(conn)
                .await
                .map_err(db_error)
        })
    }

    /// The digests of API keys revoked at or after `since`.
    pub async fn api_keys_revoked_since(&self, since: DateTime<Utc>) -> Result<Vec<String>> {
        let since = since.naive_utc();
        with_conn!(self, |conn| {
            api_keys::table
                .filter(api_keys::revoked_at.ge(since))
                .select(api_keys::key_sha256)
                .load(conn)
                .await
                .map_err(db_error)
        })
    }

    pub async fn insert_api_key(&self, k: &ApiKey) -> Result<()> {
        with_conn!(self, |conn| {
            diesel::insert_into(api_keys::table)
                .values(k)
                .execute(conn)
                .await
                .map_err(db_error)?
        });
        Ok(())
    }

    /// The live (not revoked) key with this digest.
    pub async fn api_key_by_hash(&self, sha256: &str) -> Result<Option<ApiKey>> {
        with_conn!(self, |conn| {
            api_keys::table
                .filter(api_keys::key_sha256.eq(sha256))
                .filter(api_keys::revoked_at.is_null())
                .select(ApiKey::as_select())
                .first(conn)
                .await
                .optional()
                .map_err(db_error)
        })
    }

    pub async fn api_keys_of(&self, service: &str) -> Result<Vec<ApiKey>> {
        with_conn!(self, |conn| {
            api_keys::table
                .filter(api_keys::service_id.eq(service))
                .order(api_keys::created_at.asc())
                .select(ApiKey::as_select())
                .load(conn)
                .await
                .map_err(db_error)
        })
    }

    /// Revokes a key of a service; returns whether a live one was revoked.
    pub async fn revoke_api_key(&self, service: &str, id: &str) -> Result<bool> {
        let now = Utc::now().naive_utc();
        let n = with_conn!(self, |conn| {
            diesel::update(
                api_keys::table
                    .filter(api_keys::id.eq(id))
                    .filter(api_keys::service_id.eq(service))
                    .filter(api_keys::revoked_at.is_null()),
            )
            .set(api_keys::revoked_at.eq(Some(now)))
            .execute(conn)
            .await
            .map_err(db_error)?
        });
        Ok(n == 1)
    }

    /// Starts a refresh token family with its first token.
    pub async fn insert_family(&self, f: &TokenFamily, token_sha256: &str) -> Result<()> {
        let row = family_row(f)?;
        let token = (
            refresh_tokens::token_sha256.eq(token_sha256.to_string()),
            refresh_tokens::family_id.eq(f.id.clone()),
            refresh_tokens::created_at.eq(f.created_at.naive_utc()),
        );
        write_tx!(self, |conn| {
            diesel::insert_into(token_families::table)
                .values(&row)
                .execute(conn)
                .await?;
            diesel::insert_into(refresh_tokens::table)
                .values(token.clone())
                .execute(conn)
                .await?;
            Ok(())
        })
        .map_err(Error::from)
    }

    /// Exchanges the refresh token `old` for `new`, in one transaction: a current token is
    /// marked used and `new` joins its family; a used one revokes its family (reuse).
    pub async fn rotate_refresh(
        &self,
        old: &str,
        new: &str,
        now: DateTime<Utc>,
    ) -> Result<Refresh> {
        let at = now.naive_utc();
        let (old, new) = (old.to_string(), new.to_string());
        let outcome: (u8, Option<FamilyRow>) = write_tx!(self, |conn| {
            let found: Option<(Option<NaiveDateTime>, FamilyRow)> = refresh_tokens::table
                .inner_join(token_families::table)
                .filter(refresh_tokens::token_sha256.eq(&old))
                .select((refresh_tokens::used_at, FamilyRow::as_select()))
                .first(conn)
                .await
                .optional()?;
            let Some((used_at, fam)) = found else {
                return Ok((0, None));
            };
            if fam.revoked_at.is_some() || fam.expires_at <= at {
                return Ok((3, Some(fam)));
            }
            if used_at.is_some() {
                diesel::update(token_families::table.find(&fam.id))
                    .set(token_families::revoked_at.eq(Some(at)))
                    .execute(conn)
                    .await?;
                return Ok((2, Some(fam)));
            }
            // Marked used only if nobody else did meanwhile: on PostgreSQL a concurrent
            // rotation of the same token waits here for the first one's row lock and then
            // finds the token used, which is reuse, so one rotation wins and the family
            // cannot fork.
            let marked = diesel::update(
                refresh_tokens::table
                    .find(&old)
                    .filter(refresh_tokens::used_at.is_null()),
            )
            .set(refresh_tokens::used_at.eq(Some(at)))
            .execute(conn)
            .await?;
            if marked != 1 {
                diesel::update(token_families::table.find(&fam.id))
                    .set(token_families::revoked_at.eq(Some(at)))
                    .execute(conn)
                    .await?;
                return Ok((2, Some(fam)));
            }
            diesel::insert_into(refresh_tokens::table)
                .values((
                    refresh_tokens::token_sha256.eq(&new),
                    refresh_tokens::family_id.eq(&fam.id),
                    refresh_tokens::created_at.eq(at),
                ))
                .execute(conn)
                .await?;
            Ok((1, Some(fam)))
        })
        .map_err(Error::from)?;
        Ok(match outcome {
            (1, Some(f)) => Refresh::Rotated(family_from(f)?),
            (2, Some(f)) => Refresh::Reused(family_from(f)?),
            (3, Some(f)) => Refresh::Dead(family_from(f)?),
            _ => Refresh::Unknown,
        })
    }

    /// The family of a refresh token (current or used).
    pub async fn family_of_token(&self, token_sha256: &str) -> Result<Option<TokenFamily>> {
        let row: Option<FamilyRow> = with_conn!(self, |conn| {
            refresh_tokens::table
                .inner_join(token_families::table)
                .filter(refresh_tokens::token_sha256.eq(token_sha256))
                .select(FamilyRow::as_select())
                .first(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        row.map(family_from).transpose()
    }

    /// The family of a refresh token that has not been rotated yet (a used one has none).
    pub async fn family_of_current_token(&self, token_sha256: &str) -> Result<Option<TokenFamily>> {
        let row: Option<FamilyRow> = with_conn!(self, |conn| {
            refresh_tokens::table
                .inner_join(token_families::table)
                .filter(refresh_tokens::token_sha256.eq(token_sha256))
                .filter(refresh_tokens::used_at.is_null())
                .select(FamilyRow::as_select())
                .first(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        row.map(family_from).transpose()
    }

    /// The revoked families that have not expired (id, expiry); with `since`, only those
    /// revoked at or after it.
    pub async fn revoked_families(
        &self,
        now: DateTime<Utc>,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<(String, DateTime<Utc>)>> {
        let at = now.naive_utc();
        let since = since.map(|s| s.naive_utc());
        let rows: Vec<(String, NaiveDateTime)> = with_conn!(self, |conn| {
            let mut q = token_families::table
                .filter(token_families::revoked_at.is_not_null())
                .filter(token_families::expires_at.gt(at))
                .select((token_families::id, token_families::expires_at))
                .into_boxed();
            if let Some(since) = since {
                q = q.filter(token_families::revoked_at.ge(since));
            }
            q.load(conn).await.map_err(db_error)?
        });
        Ok(rows.into_iter().map(|(id, e)| (id, e.and_utc())).collect())
    }

    /// Revokes a family; returns whether it was live.
    pub async fn revoke_family(&self, id: &str, now: DateTime<Utc>) -> Result<bool> {
        let at = now.naive_utc();
        let n = with_conn!(self, |conn| {
            diesel::update(
                token_families::table
                    .find(id)
                    .filter(token_families::revoked_at.is_null()),
            )
            .set(token_families::revoked_at.eq(Some(at)))
            .execute(conn)
            .await
            .map_err(db_error)?
        });
        Ok(n == 1)
    }

    /// Revokes every live family of a login session; returns how many.
    pub async fn revoke_session_families(
        &self,
        session: &str,
        now: DateTime<Utc>,
    ) -> Result<usize> {
        let at = now.naive_utc();
        with_conn!(self, |conn| {
            diesel::update(
                token_families::table
                    .filter(token_families::session_id.eq(session))
                    .filter(token_families::revoked_at.is_null()),
            )
            .set(token_families::revoked_at.eq(Some(at)))
            .execute(conn)
            .await
            .map_err(db_error)
        })
    }

    /// Revokes every live family of a user; returns how many.
    pub async fn revoke_user_families(&self, user: &str, now: DateTime<Utc>) -> Result<usize> {
        let at = now.naive_utc();
        with_conn!(self, |conn| {
            diesel::update(
                token_families::table
                    .filter(token_families::user_id.eq(user))
                    .filter(token_families::revoked_at.is_null()),
            )
            .set(token_families::revoked_at.eq(Some(at)))
            .execute(conn)
            .await
            .map_err(db_error)
        })
    }

    /// Removes families (and their tokens) that expired before `now`.
    pub async fn prune_families(&self, now: DateTime<Utc>) -> Result<usize> {
        let at = now.naive_utc();
        let ids: Vec<String> = with_conn!(self, |conn| {
            token_families::table
                .filter(token_families::expires_at.lt(at))
                .select(token_families::id)
                .limit(1000)
                .load(conn)
                .await
                .map_err(db_error)?
        });
        if ids.is_empty() {
            return Ok(0);
        }
        write_tx!(self, |conn| {
            diesel::delete(refresh_tokens::table.filter(refresh_tokens::family_id.eq_any(&ids)))
                .execute(conn)
                .await?;
            Ok(
                diesel::delete(token_families::table.filter(token_families::id.eq_any(&ids)))
                    .execute(conn)
                    .await?,
            )
        })
        .map_err(Error::from)
    }

    /// Appends an event to the audit log.
    pub async fn append_audit(
        &self,
        organization_id: Option<&str>,
        actor: &str,
        ip: Option<&str>,
        kind: &str,
        details: &serde_json::Value,
    ) -> Result<()> {
        let row = NewAuditRow {
            at: Utc::now().naive_utc(),
            organization_id: organization_id.map(str::to_string),
            actor: actor.to_string(),
            ip: ip.map(str::to_string),
            kind: kind.to_string(),
            details: details.to_string(),
        };
        with_conn!(self, |conn| {
            diesel::insert_into(audit_events::table)
                .values(&row)
                .execute(conn)
                .await
                .map_err(db_error)?
        });
        Ok(())
    }

    /// A page of an organization's audit log, newest first.
    pub async fn audit_events(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>> {
        // The boxed query names its backend, so it is spelled once per backend.
        macro_rules! page {
            ($db:ty) => {{
                let mut query = audit_events::table
                    .filter(audit_events::organization_id.eq(q.organization_id.clone()))
                    .select(AuditRow::as_select())
                    .order(audit_events::id.desc())
                    .limit(q.limit)
                    .into_boxed::<$db>();
                if let Some(k) = &q.kind {
                    query = query.filter(audit_events::kind.eq(k.clone()));
                }
                if let Some(a) = &q.actor {
                    query = query.filter(audit_events::actor.eq(a.clone()));
                }
                if let Some(b) = q.before {
                    query = query.filter(audit_events::id.lt(b));
                }
                if let Some(s) = q.since {
                    query = query.filter(audit_events::at.ge(s.naive_utc()));
                }
                query
            }};
        }
        let rows: Vec<AuditRow> = match &self.backend {
            Backend::Postgres(pool) => {
                let mut c = pool.get().await.map_err(pool_error)?;
                let conn: &mut AsyncPgConnection = &mut c;
                page!(diesel::pg::Pg).load(conn).await.map_err(db_error)?
            }
            Backend::Sqlite { pool, .. } => {
                let mut c = pool.get().await.map_err(pool_error)?;
                let conn: &mut SqliteConn = &mut c;
                page!(diesel::sqlite::Sqlite)
                    .load(conn)
                    .await
                    .map_err(db_error)?
            }
        };
        rows.into_iter()
            .map(|r| {
                Ok(AuditEvent {
                    id: r.id,
                    at: utc(r.at),
                    organization_id: r.organization_id,
                    actor: r.actor,
                    ip: r.ip,
                    kind: r.kind,
                    details: serde_json::from_str(&r.details).map_err(|e| {
                        Error::Storage(format!("stored audit details do not parse: {e}"))
                    })?,
                })
            })
            .collect()
    }
}
