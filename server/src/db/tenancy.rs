//! Storage of the platform's tenancy: its own store, tiers, organizations and services.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use gatehouse_engine::Result;

use super::datastore::{TxError, db_error, pool_error, utc};
use super::models::{OrganizationRow, ServiceRow};
use super::schema::{api_keys, organizations, platform, services, store_owners, tiers};
use super::{Backend, SqlStore, SqliteConn, SqliteReadConn};

/// An organization (tenant).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Organization {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub tier: String,
    /// `pending`, `active` or `rejected`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Branding of the hosted login pages.
    pub logo_url: Option<String>,
    pub primary_color: Option<String>,
}

impl From<OrganizationRow> for Organization {
    fn from(r: OrganizationRow) -> Self {
        Self {
            id: r.id,
            slug: r.slug,
            name: r.name,
            tier: r.tier,
            status: r.status,
            created_at: utc(r.created_at),
            updated_at: utc(r.updated_at),
            logo_url: r.logo_url,
            primary_color: r.primary_color,
        }
    }
}

/// A service: an OIDC client of an organization.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Service {
    pub client_id: String,
    pub organization_id: String,
    pub name: String,
    /// SHA-256 of the secret (hex); `None` for a public client.
    #[serde(skip)]
    pub secret_sha256: Option<String>,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    /// Marked by its organization as its own: its members sign in without a consent page.
    pub first_party: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Service {
    pub fn is_public(&self) -> bool {
        self.secret_sha256.is_none()
    }
}

fn service_from(r: ServiceRow) -> Result<Service> {
    let parse = |what: &str, t: &str| {
        serde_json::from_str::<Vec<String>>(t).map_err(|e| {
            gatehouse_engine::Error::Storage(format!("stored {what} do not parse: {e}"))
        })
    };
    Ok(Service {
        redirect_uris: parse("redirect URIs", &r.redirect_uris)?,
        grant_types: parse("grant types", &r.grant_types)?,
        client_id: r.id,
        organization_id: r.organization_id,
        name: r.name,
        secret_sha256: r.secret_sha256,
        first_party: r.first_party,
        created_at: utc(r.created_at),
        updated_at: utc(r.updated_at),
    })
}

/// A list of strings as the JSON text its column holds.
fn json_list(v: &[String]) -> Result<String> {
    serde_json::to_string(v)
        .map_err(|e| gatehouse_engine::Error::Storage(format!("cannot serialize: {e}")))
}

/// A tier's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TierLimits {
    pub max_users: i64,
    pub max_services: i64,
}

impl SqlStore {
    /// The platform's store, once it was created.
    pub async fn platform_store(&self) -> Result<Option<String>> {
        with_conn!(self, |conn| {
            platform::table
                .filter(platform::id.eq(1))
                .select(platform::store_id)
                .first::<String>(conn)
                .await
                .optional()
                .map_err(db_error)
        })
    }

    /// Records the platform's store unless one is recorded already; returns the recorded one.
    pub async fn claim_platform_store(&self, store: &str) -> Result<String> {
        with_conn!(self, |conn| {
            diesel::insert_into(platform::table)
                .values((platform::id.eq(1), platform::store_id.eq(store)))
                .on_conflict_do_nothing()
                .execute(conn)
                .await
                .map_err(db_error)?
        });
        self.platform_store().await.map(|s| s.unwrap_or_default())
    }

    /// Adds a tier unless it exists.
    pub async fn ensure_tier(&self, name: &str, limits: TierLimits) -> Result<()> {
        with_conn!(self, |conn| {
            diesel::insert_into(tiers::table)
                .values((
                    tiers::name.eq(name),
                    tiers::max_users.eq(limits.max_users),
                    tiers::max_services.eq(limits.max_services),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await
                .map_err(db_error)?
        });
        Ok(())
    }

    pub async fn tier(&self, name: &str) -> Result<Option<TierLimits>> {
        let row: Option<(i64, i64)> = with_conn!(self, |conn| {
            tiers::table
                .find(name)
                .select((tiers::max_users, tiers::max_services))
                .first(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        Ok(row.map(|(max_users, max_services)| TierLimits {
            max_users,
            max_services,
        }))
    }

    /// Adds an organization; false if the slug is taken.
    pub async fn insert_organization(&self, o: &Organization) -> Result<bool> {
        let row = OrganizationRow {
            id: o.id.clone(),
            slug: o.slug.clone(),
            name: o.name.clone(),
            tier: o.tier.clone(),
            status: o.status.clone(),
            created_at: o.created_at.naive_utc(),
            updated_at: o.updated_at.naive_utc(),
            logo_url: o.logo_url.clone(),
            primary_color: o.primary_color.clone(),
        };
        let n = with_conn!(self, |conn| {
            diesel::insert_into(organizations::table)
                .values(&row)
                .on_conflict_do_nothing()
                .execute(conn)
                .await
                .map_err(db_error)?
        });
        Ok(n == 1)
    }

    pub async fn organization_by_slug(&self, slug: &str) -> Result<Option<Organization>> {
        let row: Option<OrganizationRow> = with_conn!(self, |conn| {
            organizations::table
                .filter(organizations::slug.eq(slug))
                .select(OrganizationRow::as_select())
                .first(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        Ok(row.map(Organization::from))
    }

    pub async fn organization(&self, id: &str) -> Result<Option<Organization>> {
        let row: Option<OrganizationRow> = read_conn!(self, |conn| {
            organizations::table
                .find(id)
                .select(OrganizationRow::as_select())
                .first(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        Ok(row.map(Organization::from))
    }

    pub async fn set_organization_status(&self, id: &str, status: &str) -> Result<bool> {
        let now = Utc::now().naive_utc();
        let n = with_conn!(self, |conn| {
            diesel::update(organizations::table.find(id))
                .set((
                    organizations::status.eq(status),
                    organizations::updated_at.eq(now),
                ))
                .execute(conn)
                .await
                .map_err(db_error)?
        });
        Ok(n == 1)
    }

    /// Sets the branding of an organization's login pages.
    pub async fn set_organization_branding(
        &self,
        id: &str,
        logo_url: Option<&str>,
        primary_color: Option<&str>,
    ) -> Result<bool> {
        let now = Utc::now().naive_utc();
        let n = with_conn!(self, |conn| {
            diesel::update(organizations::table.find(id))
                .set((
                    organizations::logo_url.eq(logo_url),
                    organizations::primary_color.eq(primary_color),
                    organizations::updated_at.eq(now),
                ))
                .execute(conn)
                .await
                .map_err(db_error)?
        });
        Ok(n == 1)
    }

    pub async fn count_services(&self, organization: &str) -> Result<i64> {
        with_conn!(self, |conn| {
            services::table
                .filter(services::organization_id.eq(organization))
                .filter(services::deleted_at.is_null())
                .count()
                .get_result::<i64>(conn)
                .await
                .map_err(db_error)
        })
    }

    /// Adds a service unless its organization has `max` live services already, in one
    /// transaction that holds the organization's row, so that concurrent additions (from any
    /// node) cannot together pass the limit; false if the limit is reached.
    pub async fn insert_service_within(&self, s: &Service, max: i64) -> Result<bool> {
        let row = ServiceRow {
            id: s.client_id.clone(),
            organization_id: s.organization_id.clone(),
            name: s.name.clone(),
            secret_sha256: s.secret_sha256.clone(),
            redirect_uris: json_list(&s.redirect_uris)?,
            grant_types: json_list(&s.grant_types)?,
            created_at: s.created_at.naive_utc(),
            updated_at: s.updated_at.naive_utc(),
            deleted_at: None,
            first_party: s.first_party,
        };
        let added: bool = write_tx!(self, |conn| {
            // Hold the organization's row until commit (a no-op update: PostgreSQL locks the
            // row; SQLite's write transaction holds the whole database).
            diesel::update(organizations::table.find(&row.organization_id))
                .set(organizations::tier.eq(organizations::tier))
                .execute(conn)
                .await?;
            let n: i64 = services::table
                .filter(services::organization_id.eq(&row.organization_id))
                .filter(services::deleted_at.is_null())
                .count()
                .get_result(conn)
                .await?;
            if n >= max {
                return Ok(false);
            }
            diesel::insert_into(services::table)
                .values(&row)
                .execute(conn)
                .await?;
            Ok(true)
        })
        .map_err(gatehouse_engine::Error::from)?;
        Ok(added)
    }

    pub async fn service(&self, client_id: &str) -> Result<Option<Service>> {
        let row: Option<ServiceRow> = read_conn!(self, |conn| {
            services::table
                .find(client_id)
                .filter(services::deleted_at.is_null())
                .select(ServiceRow::as_select())
                .first(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        row.map(service_from).transpose()
    }

    /// Replaces a live service's name, redirect URIs and grant types; false if there is no
    /// such live service.
    pub async fn update_service(&self, s: &Service) -> Result<bool> {
        let (uris, grants) = (json_list(&s.redirect_uris)?, json_list(&s.grant_types)?);
        let now = Utc::now().naive_utc();
        let n = with_conn!(self, |conn| {
            diesel::update(
                services::table
                    .find(&s.client_id)
                    .filter(services::deleted_at.is_null()),
            )
            .set((
                services::name.eq(&s.name),
                services::redirect_uris.eq(&uris),
                services::grant_types.eq(&grants),
                services::first_party.eq(s.first_party),
                services::updated_at.eq(now),
            ))
            .execute(conn)
            .await
            .map_err(db_error)?
        });
        Ok(n == 1)
    }

    /// Replaces a live confidential service's secret digest; false if there is no such
    /// service (or it is public).
    pub async fn set_service_secret(&self, client_id: &str, secret_sha256: &str) -> Result<bool> {
        let now = Utc::now().naive_utc();
        let n = with_conn!(self, |conn| {
            diesel::update(
                services::table
                    .find(client_id)
                    .filter(services::deleted_at.is_null())
                    .filter(services::secret_sha256.is_not_null()),
            )
            .set((
                services::secret_sha256.eq(secret_sha256),
                services::updated_at.eq(now),
            ))
            .execute(conn)
            .await
            .map_err(db_error)?
        });
        Ok(n == 1)
    }

    /// Deletes a live service: its row stays, marked deleted (API keys, token families and
    /// audit events refer to it), and its API keys are revoked, in one transaction. False if
    /// there is no such live service.
    pub async fn delete_service(&self, client_id: &str) -> Result<bool> {
        let now = Utc::now().naive_utc();
        let id = client_id.to_string();
        let n: usize = write_tx!(self, |conn| {
            let n = diesel::update(
                services::table
                    .find(&id)
                    .filter(services::deleted_at.is_null()),
            )
            .set((
                services::deleted_at.eq(Some(now)),
                services::updated_at.eq(now),
            ))
            .execute(conn)
            .await?;
            if n == 1 {
                diesel::update(
                    api_keys::table
                        .filter(api_keys::service_id.eq(&id))
                        .filter(api_keys::revoked_at.is_null()),
                )
                .set(api_keys::revoked_at.eq(Some(now)))
                .execute(conn)
                .await?;
            }
            Ok(n)
        })
        .map_err(gatehouse_engine::Error::from)?;
        Ok(n == 1)
    }

    /// The services changed (or deleted) at or after `since`.
    pub async fn services_changed_since(&self, since: DateTime<Utc>) -> Result<Vec<String>> {
        let since = since.naive_utc();
        with_conn!(self, |conn| {
            services::table
                .filter(services::updated_at.ge(since))
                .select(services::id)
                .load(conn)
                .await
                .map_err(db_error)
        })
    }

    /// Ids of the organizations changed (status, branding, tier) at or after `since`.
    pub async fn organizations_changed_since(&self, since: DateTime<Utc>) -> Result<Vec<String>> {
        let since = since.naive_utc();
        with_conn!(self, |conn| {
            organizations::table
                .filter(organizations::updated_at.ge(since))
                .select(organizations::id)
                .load(conn)
                .await
                .map_err(db_error)
        })
    }

    /// Every tier, by name.
    pub async fn tiers(&self) -> Result<Vec<(String, TierLimits)>> {
        let rows: Vec<(String, i64, i64)> = with_conn!(self, |conn| {
            tiers::table
                .order(tiers::name.asc())
                .select((tiers::name, tiers::max_users, tiers::max_services))
                .load(conn)
                .await
                .map_err(db_error)?
        });
        Ok(rows
            .into_iter()
            .map(|(name, max_users, max_services)| {
                (
                    name,
                    TierLimits {
                        max_users,
                        max_services,
                    },
                )
            })
            .collect())
    }

    /// Adds a tier or replaces its limits.
    pub async fn set_tier(&self, name: &str, limits: TierLimits) -> Result<()> {
        with_conn!(self, |conn| {
            diesel::insert_into(tiers::table)
                .values((
                    tiers::name.eq(name),
                    tiers::max_users.eq(limits.max_users),
                    tiers::max_services.eq(limits.max_services),
                ))
                .on_conflict(tiers::name)
                .do_update()
                .set((
                    tiers::max_users.eq(limits.max_users),
                    tiers::max_services.eq(limits.max_services),
                ))
                .execute(conn)
                .await
                .map_err(db_error)?
        });
        Ok(())
    }

    /// Moves an organization to another tier.
    pub async fn set_organization_tier(&self, id: &str, tier: &str) -> Result<bool> {
        let now = Utc::now().naive_utc();
        let n = with_conn!(self, |conn| {
            diesel::update(organizations::table.find(id))
                .set((
                    organizations::tier.eq(tier),
                    organizations::updated_at.eq(now),
                ))
                .execute(conn)
                .await
                .map_err(db_error)?
        });
        Ok(n == 1)
    }

    /// Records that `store` belongs to `organization`.
    pub async fn set_store_owner(&self, store: &str, organization: &str) -> Result<()> {
        let now = Utc::now().naive_utc();
        with_conn!(self, |conn| {
            diesel::insert_into(store_owners::table)
                .values((
                    store_owners::store_id.eq(store),
                    store_owners::organization_id.eq(organization),
                    store_owners::created_at.eq(now),
                ))
                .execute(conn)
                .await
                .map_err(db_error)?
        });
        Ok(())
    }

    /// The organization `store` belongs to, if any.
    pub async fn store_owner(&self, store: &str) -> Result<Option<String>> {
        with_conn!(self, |conn| {
            store_owners::table
                .find(store)
                .select(store_owners::organization_id)
                .first(conn)
                .await
                .optional()
                .map_err(db_error)
        })
    }

    /// The stores of `organization`, by id, after `after`, at most `limit`.
    pub async fn stores_of(
        &self,
        organization: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<String>> {
        let after = after.unwrap_or_default().to_string();
        with_conn!(self, |conn| {
            store_owners::table
                .filter(store_owners::organization_id.eq(organization))
                .filter(store_owners::store_id.gt(&after))
                .order(store_owners::store_id.asc())
                .limit(limit)
                .select(store_owners::store_id)
                .load(conn)
                .await
                .map_err(db_error)
        })
    }
}
