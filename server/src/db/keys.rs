//! Storage of token signing keys (see [`crate::oidc::keys`]).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use gatehouse_engine::Result;

use super::datastore::{db_error, pool_error, utc};
use super::models::SigningKeyRow;
use super::schema::{revoked_tokens, signing_keys};
use super::{Backend, SqlStore, SqliteConn};

/// A stored signing key (its private half still sealed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub kid: String,
    pub alg: String,
    pub generation: i64,
    pub sealed_private_key: String,
    pub public_jwk: String,
    pub created_at: DateTime<Utc>,
    pub signs_from: DateTime<Utc>,
    pub signs_until: DateTime<Utc>,
    pub published_until: DateTime<Utc>,
}

impl From<SigningKeyRow> for StoredKey {
    fn from(r: SigningKeyRow) -> Self {
        Self {
            kid: r.kid,
            alg: r.alg,
            generation: r.generation,
            sealed_private_key: r.private_key,
            public_jwk: r.public_jwk,
            created_at: utc(r.created_at),
            signs_from: utc(r.signs_from),
            signs_until: utc(r.signs_until),
            published_until: utc(r.published_until),
        }
    }
}

impl SqlStore {
    /// Keys still published at `now`, oldest generation first.
    pub async fn published_keys(&self, now: DateTime<Utc>) -> Result<Vec<StoredKey>> {
        let now = now.naive_utc();
        let rows: Vec<SigningKeyRow> = with_conn!(self, |conn| {
            signing_keys::table
                .filter(signing_keys::published_until.gt(now))
                .select(SigningKeyRow::as_select())
                .order((signing_keys::alg, signing_keys::generation))
                .load(conn)
                .await
                .map_err(db_error)?
        });
        Ok(rows.into_iter().map(StoredKey::from).collect())
    }

    /// The highest generation of `alg` ever stored.
    pub async fn last_key_generation(&self, alg: &str) -> Result<Option<i64>> {
        with_conn!(self, |conn| {
            signing_keys::table
                .filter(signing_keys::alg.eq(alg))
                .select(diesel::dsl::max(signing_keys::generation))
                .first::<Option<i64>>(conn)
                .await
                .map_err(db_error)
        })
    }

    /// Adds a key; false (nothing written) when its generation of its algorithm exists already
    /// (another node rotated first).
    pub async fn insert_key(&self, k: &StoredKey) -> Result<bool> {
        let row = SigningKeyRow {
            kid: k.kid.clone(),
            alg: k.alg.clone(),
            generation: k.generation,
            private_key: k.sealed_private_key.clone(),
            public_jwk: k.public_jwk.clone(),
            created_at: k.created_at.naive_utc(),
            signs_from: k.signs_from.naive_utc(),
            signs_until: k.signs_until.naive_utc(),
            published_until: k.published_until.naive_utc(),
        };
        let n = with_conn!(self, |conn| {
            diesel::insert_into(signing_keys::table)
                .values(&row)
                .on_conflict_do_nothing()
                .execute(conn)
                .await
                .map_err(db_error)?
        });
        Ok(n == 1)
    }

    /// Removes keys no longer published before `now`; returns how many.
    pub async fn remove_expired_keys(&self, now: DateTime<Utc>) -> Result<usize> {
        let now = now.naive_utc();
        with_conn!(self, |conn| {
            diesel::delete(signing_keys::table.filter(signing_keys::published_until.le(now)))
                .execute(conn)
                .await
                .map_err(db_error)
        })
    }

    /// Records that the token `jti` is revoked until `expires_at`.
    pub async fn revoke_token(&self, jti: &str, expires_at: DateTime<Utc>) -> Result<()> {
        let exp = expires_at.naive_utc();
        let now = Utc::now().naive_utc();
        with_conn!(self, |conn| {
            diesel::insert_into(revoked_tokens::table)
                .values((
                    revoked_tokens::jti.eq(jti),
                    revoked_tokens::expires_at.eq(exp),
                    revoked_tokens::revoked_at.eq(Some(now)),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await
                .map_err(db_error)?
        });
        Ok(())
    }

    /// The revoked tokens that have not expired (`jti`, expiry); with `since`, only those
    /// revoked at or after it.
    pub async fn live_revocations(
        &self,
        now: DateTime<Utc>,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<(String, DateTime<Utc>)>> {
        let now = now.naive_utc();
        let since = since.map(|s| s.naive_utc());
        let rows: Vec<(String, chrono::NaiveDateTime)> = with_conn!(self, |conn| {
            let mut q = revoked_tokens::table
                .filter(revoked_tokens::expires_at.gt(now))
                .select((revoked_tokens::jti, revoked_tokens::expires_at))
                .into_boxed();
            if let Some(since) = since {
                q = q.filter(revoked_tokens::revoked_at.ge(since));
            }
            q.load(conn).await.map_err(db_error)?
        });
        Ok(rows.into_iter().map(|(j, e)| (j, e.and_utc())).collect())
    }

    /// Forgets revocations of tokens that have expired anyway.
    pub async fn prune_revocations(&self, now: DateTime<Utc>) -> Result<usize> {
        let now = now.naive_utc();
        with_conn!(self, |conn| {
            diesel::delete(revoked_tokens::table.filter(revoked_tokens::expires_at.lt(now)))
                .execute(conn)
                .await
                .map_err(db_error)
        })
    }
}
