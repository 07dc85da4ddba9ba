//! Storage of consents: which scopes a person approved for a service.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use gatehouse_engine::{Error, Result};

use super::datastore::{TxError, db_error, pool_error, utc};
use super::schema::{consents, token_families};
use super::{Backend, SqlStore, SqliteConn};

/// A person's approval of what a service may learn of them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Consent {
    pub client_id: String,
    /// The scopes approved, space-separated.
    pub scope: String,
    pub granted_at: DateTime<Utc>,
}

impl SqlStore {
    /// What `user` approved for `client_id`, if anything.
    pub async fn consent(&self, user: &str, client_id: &str) -> Result<Option<Consent>> {
        let row: Option<(String, String, NaiveDateTime)> = with_conn!(self, |conn| {
            consents::table
                .find((user, client_id))
                .select((consents::client_id, consents::scope, consents::granted_at))
                .first(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        Ok(row.map(|(client_id, scope, at)| Consent {
            client_id,
            scope,
            granted_at: utc(at),
        }))
    }

    /// Records that `user` approved `scope` for `client_id` (what they approved before is
    /// replaced: the caller passes the union it wants kept).
    pub async fn grant_consent(
        &self,
        user: &str,
        client_id: &str,
        scope: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let at = now.naive_utc();
        write_tx!(self, |conn| {
            diesel::insert_into(consents::table)
                .values((
                    consents::user_id.eq(user),
                    consents::client_id.eq(client_id),
                    consents::scope.eq(scope),
                    consents::granted_at.eq(at),
                ))
                .on_conflict((consents::user_id, consents::client_id))
                .do_update()
                .set((consents::scope.eq(scope), consents::granted_at.eq(at)))
                .execute(conn)
                .await?;
            Ok(())
        })
        .map_err(Error::from)
    }

    /// Everything `user` approved, newest first.
    pub async fn consents_of(&self, user: &str) -> Result<Vec<Consent>> {
        let rows: Vec<(String, String, NaiveDateTime)> = with_conn!(self, |conn| {
            consents::table
                .filter(consents::user_id.eq(user))
                .order(consents::granted_at.desc())
                .limit(1000)
                .select((consents::client_id, consents::scope, consents::granted_at))
                .load(conn)
                .await
                .map_err(db_error)?
        });
        Ok(rows
            .into_iter()
            .map(|(client_id, scope, at)| Consent {
                client_id,
                scope,
                granted_at: utc(at),
            })
            .collect())
    }

    /// Withdraws `user`'s consent to `client_id` and revokes the refresh token families the
    /// service holds for them, in one transaction; the ids of the families revoked, or `None`
    /// when there was no consent.
    pub async fn revoke_consent(
        &self,
        user: &str,
        client_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<String>>> {
        let at = now.naive_utc();
        write_tx!(self, |conn| {
            let n = diesel::delete(consents::table.find((user, client_id)))
                .execute(conn)
                .await?;
            if n == 0 {
                return Ok(None);
            }
            let ids: Vec<String> = token_families::table
                .filter(token_families::user_id.eq(user))
                .filter(token_families::client_id.eq(client_id))
                .filter(token_families::revoked_at.is_null())
                .select(token_families::id)
                .load(conn)
                .await?;
            diesel::update(
                token_families::table
                    .filter(token_families::user_id.eq(user))
                    .filter(token_families::client_id.eq(client_id))
                    .filter(token_families::revoked_at.is_null()),
            )
            .set(token_families::revoked_at.eq(Some(at)))
            .execute(conn)
            .await?;
            Ok(Some(ids))
        })
        .map_err(Error::from)
    }
}
