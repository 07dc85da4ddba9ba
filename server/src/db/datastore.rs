//! [`Datastore`] for [`SqlStore`]: one body of diesel queries, run on either backend.
//!
//! Revisions: each store has a row in `store_revisions`; a write transaction locks it
//! (`SELECT … FOR UPDATE` on PostgreSQL; on SQLite the transaction is `BEGIN IMMEDIATE` and
//! writers of this process queue on a mutex), so writers of one store are serialized and each
//! gets the next revision. Pagination tokens are opaque keyset positions.

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use gatehouse_engine::model::AuthorizationModel;
use gatehouse_engine::store::{
    Assertions, ChangeFilter, Datastore, DecisionFilter, EntityAttributes, LoggedDecision,
    Operation, Page, Paged, PolicyVersion, Revision, StoreInfo, StoredRisk, TupleChange,
    TupleFilter, WriteOptions,
};
use gatehouse_engine::tuple::{ContextMap, RelationshipCondition, Tuple, TupleKey};
use gatehouse_engine::{Error, Result};

use super::models::{
    AssertionRow, AttributesRow, ChangeRow, DecisionBlockRow, DecisionKeyRow, HeadRow, ModelRow,
    NewTuple, PolicyHeadRow, PolicyRow, RiskProfileRow, SettingRow, StoreRow, TupleRow,
};
use super::schema::{
    assertions, authorization_models, changelog, decision_block_keys, decision_blocks,
    entity_attributes, policy_heads, policy_versions, risk_profiles, store_revisions,
    store_settings, stores, tuples,
};
use super::{Backend, SqlStore, SqliteConn};

/// Most tuple identities matched by one statement (keeps SQLite's expression depth and bind
/// counts small).
const KEY_CHUNK: usize = 100;
/// Most rows inserted by one statement.
const INSERT_CHUNK: usize = 500;

const WRITE: &str = "write";
const DELETE: &str = "delete";

/// An error inside a transaction: from the database, or a rule of the datastore.
#[derive(Debug)]
pub(super) enum TxError {
    Db(DieselError),
    Engine(Error),
}

impl From<DieselError> for TxError {
    fn from(e: DieselError) -> Self {
        Self::Db(e)
    }
}

impl From<Error> for TxError {
    fn from(e: Error) -> Self {
        Self::Engine(e)
    }
}

impl From<TxError> for Error {
    fn from(e: TxError) -> Self {
        match e {
            TxError::Db(e) => db_error(e),
            TxError::Engine(e) => e,
        }
    }
}

pub(super) fn pool_error(e: diesel_async::pooled_connection::deadpool::PoolError) -> Error {
    Error::Unavailable(format!("no database connection: {e}"))
}

/// Maps a database error; connection trouble and lock contention are "unavailable" (retryable).
pub(super) fn db_error(e: DieselError) -> Error {
    match e {
        DieselError::DatabaseError(kind, info) => match kind {
            DatabaseErrorKind::ClosedConnection
            | DatabaseErrorKind::UnableToSendCommand
            | DatabaseErrorKind::SerializationFailure => {
                Error::Unavailable(info.message().to_string())
            }
            _ if info.message().contains("database is locked") => {
                Error::Unavailable(info.message().to_string())
            }
            _ => Error::Storage(info.message().to_string()),
        },
        other => Error::Storage(other.to_string()),
    }
}

fn is_unique_violation(e: &TxError) -> bool {
    matches!(
        e,
        TxError::Db(DieselError::DatabaseError(
            DatabaseErrorKind::UniqueViolation,
            _
        ))
    )
}

/// Locks a store's revision row for the rest of the transaction and reads its head.
trait LockHead {
    fn lock_head<'a>(
        &'a mut self,
        store: &'a str,
    ) -> impl Future<Output = QueryResult<Option<i64>>> + Send + 'a;
}

impl LockHead for AsyncPgConnection {
    #[expect(
        clippy::manual_async_fn,
        reason = "the trait promises a `Send` future, which `async fn` cannot state"
    )]
    fn lock_head<'a>(
        &'a mut self,
        store: &'a str,
    ) -> impl Future<Output = QueryResult<Option<i64>>> + Send + 'a {
        async move {
            store_revisions::table
                .find(store)
                .select(store_revisions::head)
                .for_update()
                .first::<i64>(self)
                .await
                .optional()
        }
    }
}

impl LockHead for SqliteConn {
    #[expect(
        clippy::manual_async_fn,
        reason = "the trait promises a `Send` future, which `async fn` cannot state"
    )]
    fn lock_head<'a>(
        &'a mut self,
        store: &'a str,
    ) -> impl Future<Output = QueryResult<Option<i64>>> + Send + 'a {
        // `BEGIN IMMEDIATE` already holds the database's write lock.
        async move {
            store_revisions::table
                .find(store)
                .select(store_revisions::head)
                .first::<i64>(self)
                .await
                .optional()
        }
    }
}

/// Inserts new tuple versions and their changelog entries in as few statements as the backend
/// allows.
trait InsertRows {
    fn insert_rows(
        &mut self,
        tuples: Vec<NewTuple>,
        changes: Vec<ChangeRow>,
    ) -> impl Future<Output = QueryResult<()>> + Send + '_;
}

impl InsertRows for AsyncPgConnection {
    #[expect(
        clippy::manual_async_fn,
        reason = "the trait promises a `Send` future, which `async fn` cannot state"
    )]
    fn insert_rows(
        &mut self,
        new: Vec<NewTuple>,
        changes: Vec<ChangeRow>,
    ) -> impl Future<Output = QueryResult<()>> + Send + '_ {
        async move {
            for chunk in new.chunks(INSERT_CHUNK) {
                diesel::insert_into(tuples::table)
                    .values(chunk)
                    .execute(self)
                    .await?;
            }
            for chunk in changes.chunks(INSERT_CHUNK) {
                diesel::insert_into(changelog::table)
                    .values(chunk)
                    .execute(self)
                    .await?;
            }
            Ok(())
        }
    }
}

impl InsertRows for SqliteConn {
    fn insert_rows(
        &mut self,
        new: Vec<NewTuple>,
        changes: Vec<ChangeRow>,
    ) -> impl Future<Output = QueryResult<()>> + Send + '_ {
        // Batch inserts on SQLite need diesel's sync connection; this runs inside the open
        // transaction of the same connection.
        self.spawn_blocking(move |conn| {
            for chunk in new.chunks(INSERT_CHUNK) {
                diesel::RunQueryDsl::execute(
                    diesel::insert_into(tuples::table).values(chunk),
                    conn,
                )?;
            }
            for chunk in changes.chunks(INSERT_CHUNK) {
                diesel::RunQueryDsl::execute(
                    diesel::insert_into(changelog::table).values(chunk),
                    conn,
                )?;
            }
            Ok(())
        })
    }
}

/// In a write transaction: fails with [`Error::StoreNotFound`] unless the store exists and is
/// not deleted.
macro_rules! require_live_store {
    ($conn:expr, $store:expr) => {{
        let n: i64 = stores::table
            .filter(stores::id.eq($store))
            .filter(stores::deleted_at.is_null())
            .count()
            .get_result($conn)
            .await?;
        if n == 0 {
            return Err(Error::StoreNotFound($store.to_string()).into());
        }
    }};
}

// ---- conversions ----

fn to_db_rev(rev: Revision) -> i64 {
    i64::try_from(rev).unwrap_or(i64::MAX)
}

fn from_db_rev(rev: i64) -> Result<Revision> {
    Revision::try_from(rev)
        .map_err(|_| Error::Storage(format!("negative revision {rev} in the database")))
}

fn limit_for(size: usize) -> i64 {
    i64::try_from(size.saturating_add(1)).unwrap_or(i64::MAX)
}

pub(super) fn utc(t: NaiveDateTime) -> chrono::DateTime<chrono::Utc> {
    t.and_utc()
}

/// The parts of a tuple as stored.
struct Parts<'a> {
    object_type: &'a str,
    object_id: &'a str,
    relation: &'a str,
    user: &'a str,
}

fn parts(key: &TupleKey) -> Result<Parts<'_>> {
    let (object_type, object_id) =
        key.object
            .split_once(':')
            .ok_or_else(|| Error::InvalidTuple {
                tuple: key.to_string(),
                reason: "the object must be `type:id`".into(),
            })?;
    Ok(Parts {
        object_type,
        object_id,
        relation: &key.relation,
        user: &key.user,
    })
}

fn user_type(user: &str) -> &str {
    user.split_once(':').map_or(user, |(t, _)| t)
}

fn encode_condition(key: &TupleKey) -> (Option<String>, Option<String>) {
    match &key.condition {
        None => (None, None),
        Some(c) => (
            Some(c.name.clone()),
            c.context
                .as_ref()
                .map(|ctx| serde_json::Value::Object(ctx.0.clone()).to_string()),
        ),
    }
}

fn decode_condition(
    name: Option<String>,
    context: Option<String>,
) -> Result<Option<RelationshipCondition>> {
    let Some(name) = name else { return Ok(None) };
    let context = match context {
        None => None,
        Some(text) => match serde_json::from_str(&text) {
            Ok(serde_json::Value::Object(map)) => Some(ContextMap(map)),
            Ok(_) | Err(_) => {
                return Err(Error::Storage(format!(
                    "stored condition context of `{name}` is not a JSON object"
                )));
            }
        },
    };
    Ok(Some(RelationshipCondition { name, context }))
}

fn tuple_key(
    object_type: &str,
    object_id: &str,
    relation: String,
    user: String,
    condition_name: Option<String>,
    condition_context: Option<String>,
    expires_at: Option<NaiveDateTime>,
) -> Result<TupleKey> {
    Ok(TupleKey {
        user,
        relation,
        object: format!("{object_type}:{object_id}"),
        condition: decode_condition(condition_name, condition_context)?,
        expires_at: expires_at.map(utc),
    })
}

fn store_info(row: StoreRow) -> StoreInfo {
    StoreInfo {
        id: row.id,
        name: row.name,
        created_at: utc(row.created_at),
        updated_at: utc(row.updated_at),
    }
}

fn model_from_row(id: String, json: &str) -> Result<AuthorizationModel> {
    let mut model: AuthorizationModel = serde_json::from_str(json).map_err(|e| {
        Error::Storage(format!(
            "stored authorization model `{id}` does not parse: {e}"
        ))
    })?;
    model.id = id;
    Ok(model)
}

fn change_from_row(row: ChangeRow) -> Result<TupleChange> {
    let operation = match row.operation.as_str() {
        WRITE => Operation::Write,
        DELETE => Operation::Delete,
        other => {
            return Err(Error::Storage(format!(
                "unknown changelog operation `{other}`"
            )));
        }
    };
    Ok(TupleChange {
        tuple_key: tuple_key(
            &row.object_type,
            &row.object_id,
            row.relation,
            row.user_value,
            row.condition_name,
            row.condition_context,
            row.expires_at,
        )?,
        operation,
        timestamp: utc(row.created_at),
        revision: from_db_rev(row.revision)?,
    })
}

// ---- continuation tokens: base64url of `<kind>:<position>` ----

const STORE_TOKEN: &str = "store";
const MODEL_TOKEN: &str = "model";
const TUPLE_TOKEN: &str = "tuple";
const CHANGE_TOKEN: &str = "change";
const POLICY_TOKEN: &str = "policy";
const DECISION_TOKEN: &str = "decision";
/// Most expired rows one retention statement removes.
const PRUNE_BATCH: i64 = 5_000;
/// Most expired decision log blocks one retention transaction removes.
const PRUNE_BLOCKS: i64 = 200;
/// Retention statements (SQLite, PostgreSQL): expired rows, one batch at a time.
const PRUNE_PROFILES: (&str, &str) = (
    "DELETE FROM risk_profiles WHERE (store_id, subject) IN \
     (SELECT store_id, subject FROM risk_profiles WHERE expires_at < ? LIMIT ?)",
    "DELETE FROM risk_profiles WHERE (store_id, subject) IN \
     (SELECT store_id, subject FROM risk_profiles WHERE expires_at < $1 LIMIT $2)",
);
/// Removing expired tuples (SQLite, PostgreSQL): up to a batch, through the expiry index.
const REMOVE_EXPIRED_TUPLES: (&str, &str) = (
    "DELETE FROM tuples WHERE id IN \
     (SELECT id FROM tuples WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?)",
    "DELETE FROM tuples WHERE id IN \
     (SELECT id FROM tuples WHERE expires_at IS NOT NULL AND expires_at <= $1 LIMIT $2)",
);
const ATTRIBUTES_TOKEN: &str = "attributes";

fn encode_token(kind: &str, position: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{position}"))
}

fn decode_token(kind: &str, token: &str) -> Result<String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(token.trim())
        .map_err(|_| Error::InvalidContinuationToken)?;
    let text = String::from_utf8(bytes).map_err(|_| Error::InvalidContinuationToken)?;
    text.strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix(':'))
        .map(str::to_string)
        .ok_or(Error::InvalidContinuationToken)
}

fn page_token(kind: &str, page: &Page) -> Result<Option<String>> {
    page.token
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(|t| decode_token(kind, t))
        .transpose()
}

fn tuple_token(page: &Page) -> Result<Option<i64>> {
    page_token(TUPLE_TOKEN, page)?
        .map(|p| {
            p.parse::<i64>()
                .map_err(|_| Error::InvalidContinuationToken)
        })
        .transpose()
}

/// A changelog position: after change `seq` of `revision`.
fn change_token(page: &Page) -> Result<(i64, i32)> {
    let Some(p) = page_token(CHANGE_TOKEN, page)? else {
        return Ok((0, -1));
    };
    let (rev, seq) = p.split_once('.').ok_or(Error::InvalidContinuationToken)?;
    let rev = rev
        .parse::<i64>()
        .map_err(|_| Error::InvalidContinuationToken)?;
    let seq = seq
        .parse::<i32>()
        .map_err(|_| Error::InvalidContinuationToken)?;
    Ok((rev, seq))
}

/// Cuts one extra row fetched beyond the page size into a token for the next page.
fn paged<R, T>(
    mut rows: Vec<R>,
    size: usize,
    token_of: impl Fn(&R) -> String,
    convert: impl Fn(R) -> Result<T>,
) -> Result<Paged<T>> {
    let next = if size > 0 && rows.len() > size {
        rows.truncate(size);
        rows.last().map(token_of)
    } else {
        None
    };
    let items = rows.into_iter().map(convert).collect::<Result<Vec<_>>>()?;
    Ok(Paged { items, next })
}

/// Checks for duplicate identities within one list of a write.
fn check_unique(keys: &[TupleKey], list: &str) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for k in keys {
        if !seen.insert(k.identity()) {
            return Err(Error::Validation(format!(
                "duplicate tuple in the {list} list ({k})"
            )));
        }
    }
    Ok(())
}

/// `(object_type, object_id, relation, user_value)` of a tuple, owned.
type Identity = (String, String, String, String);

fn identity(p: &Parts<'_>) -> Identity {
    (
        p.object_type.into(),
        p.object_id.into(),
        p.relation.into(),
        p.user.into(),
    )
}

fn row_identity(r: &TupleRow) -> Identity {
    (
        r.object_type.clone(),
        r.object_id.clone(),
        r.relation.clone(),
        r.user_value.clone(),
    )
}

/// Loads the live versions of the given identities (a non-empty slice) in one statement.
trait LiveMatching {
    fn live_matching<'a>(
        &'a mut self,
        store: &'a str,
        keys: &'a [Identity],
    ) -> impl Future<Output = QueryResult<Vec<TupleRow>>> + Send + 'a;
}

impl LiveMatching for AsyncPgConnection {
    /// The identities unnested from four arrays, each looked up on its own: an index lookup per
    /// identity, whatever the table's statistics say. PostgreSQL turns the equivalent OR of
    /// conjunctions into one index range over the columns all terms share (store, type,
    /// relation) and filters every live tuple in it, which made writes slow down linearly with
    /// the store's size; a plain join is hashed over the whole store while statistics are
    /// stale. The `LIMIT 1` (a tuple has at most one live version) keeps the subquery lateral.
    fn live_matching<'a>(
        &'a mut self,
        store: &'a str,
        keys: &'a [Identity],
    ) -> impl Future<Output = QueryResult<Vec<TupleRow>>> + Send + 'a {
        use diesel::sql_types::{Array, Text};
        async move {
            let column = |f: fn(&Identity) -> &String| -> Vec<&str> {
                keys.iter().map(|k| f(k).as_str()).collect()
            };
            diesel::sql_query(
                "SELECT t.id, t.object_type, t.object_id, t.relation, t.user_value, \
                        t.condition_name, t.condition_context, t.created_at, t.expires_at \
                 FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) \
                        AS k (object_type, object_id, relation, user_value) \
                 CROSS JOIN LATERAL ( \
                    SELECT * FROM tuples \
                    WHERE store_id = $1 AND deleted_rev IS NULL \
                        AND object_type = k.object_type AND object_id = k.object_id \
                        AND relation = k.relation AND user_value = k.user_value \
                    LIMIT 1) t",
            )
            .bind::<Text, _>(store)
            .bind::<Array<Text>, _>(column(|k| &k.0))
            .bind::<Array<Text>, _>(column(|k| &k.1))
            .bind::<Array<Text>, _>(column(|k| &k.2))
            .bind::<Array<Text>, _>(column(|k| &k.3))
            .load::<TupleRow>(self)
            .await
        }
    }
}

impl LiveMatching for SqliteConn {
    /// An OR of fully constrained conjunctions: SQLite serves each term with its own lookup in
    /// the live-uniqueness index.
    #[expect(
        clippy::manual_async_fn,
        reason = "the trait promises a `Send` future, which `async fn` cannot state"
    )]
    fn live_matching<'a>(
        &'a mut self,
        store: &'a str,
        keys: &'a [Identity],
    ) -> impl Future<Output = QueryResult<Vec<TupleRow>>> + Send + 'a {
        async move {
            let mut q = tuples::table.select(TupleRow::as_select()).into_boxed();
            for (n, (t, i, r, u)) in keys.iter().enumerate() {
                let one = tuples::store_id
                    .eq(store)
                    .and(tuples::deleted_rev.is_null())
                    .and(tuples::object_type.eq(t))
                    .and(tuples::object_id.eq(i))
                    .and(tuples::relation.eq(r))
                    .and(tuples::user_value.eq(u));
                q = if n == 0 {
                    q.filter(one)
                } else {
                    q.or_filter(one)
                };
            }
            q.load(self).await
        }
    }
}

impl SqlStore {
    /// Removes the decision log's expired blocks and their key rows, a batch per
    /// transaction; returns how many entries went.
    async fn prune_decision_blocks(&self, now: NaiveDateTime) -> Result<u64> {
        let mut removed = 0u64;
        loop {
            let expired: Vec<(String, String, String, String)> = with_conn!(self, |conn| {
                decision_blocks::table
                    .filter(decision_blocks::expires_at.lt(now))
                    .select((
                        decision_blocks::store_id,
                        decision_blocks::first_id,
                        decision_blocks::keys_json,
                        decision_blocks::entries_json,
                    ))
                    .limit(PRUNE_BLOCKS)
                    .load(conn)
                    .await
                    .map_err(db_error)?
            });
            let n = expired.len();
            let mut doomed = Vec::with_capacity(n);
            for (store, first, keys, entries) in expired {
                let keys: Vec<String> = parse_json("decision log keys", &keys)?;
                let entries: Vec<serde::de::IgnoredAny> =
                    parse_json("decision log block", &entries)?;
                removed += entries.len() as u64;
                doomed.push((store, first, keys));
            }
            if !doomed.is_empty() {
                write_tx!(self, |conn| {
                    for (store, first, keys) in &doomed {
                        for key in keys {
                            diesel::delete(decision_block_keys::table.find((store, key, first)))
                                .execute(conn)
                                .await?;
                        }
                        diesel::delete(decision_blocks::table.find((store, first)))
                            .execute(conn)
                            .await?;
                    }
                    Ok(())
                })
                .map_err(Error::from)?;
            }
            if (n as i64) < PRUNE_BLOCKS {
                return Ok(removed);
            }
        }
    }

    /// Up to [`BLOCK_READ_BATCH`] blocks of a store's decision log, newest (by first entry)
    /// first, before `cursor` and not before `lower`; with `key`, those its key rows point to
    /// (`None` for a block retention removed in between).
    async fn decision_block_batch(
        &self,
        store: &str,
        key: Option<&str>,
        cursor: Option<&str>,
        lower: Option<&str>,
    ) -> Result<Vec<(String, Option<DecisionBlockRow>)>> {
        let batch = i64::try_from(BLOCK_READ_BATCH).unwrap_or(8);
        let Some(key) = key else {
            let rows: Vec<DecisionBlockRow> = with_conn!(self, |conn| {
                let mut q = decision_blocks::table
                    .select(DecisionBlockRow::as_select())
                    .filter(decision_blocks::store_id.eq(store))
                    .into_boxed();
                if let Some(c) = cursor {
                    q = q.filter(decision_blocks::first_id.lt(c));
                }
                if let Some(l) = lower {
                    q = q.filter(decision_blocks::first_id.ge(l));
                }
                q.order(decision_blocks::first_id.desc())
                    .limit(batch)
                    .load(conn)
                    .await
                    .map_err(db_error)?
            });
            return Ok(rows
                .into_iter()
                .map(|r| (r.first_id.clone(), Some(r)))
                .collect());
        };
        let ids: Vec<String> = with_conn!(self, |conn| {
            let mut q = decision_block_keys::table
                .select(decision_block_keys::first_id)
                .filter(decision_block_keys::store_id.eq(store))
                .filter(decision_block_keys::key.eq(key))
                .into_boxed();
            if let Some(c) = cursor {
                q = q.filter(decision_block_keys::first_id.lt(c));
            }
            if let Some(l) = lower {
                q = q.filter(decision_block_keys::first_id.ge(l));
            }
            q.order(decision_block_keys::first_id.desc())
                .limit(batch)
                .load(conn)
                .await
                .map_err(db_error)?
        });
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<DecisionBlockRow> = with_conn!(self, |conn| {
            decision_blocks::table
                .select(DecisionBlockRow::as_select())
                .filter(decision_blocks::store_id.eq(store))
                .filter(decision_blocks::first_id.eq_any(&ids))
                .load(conn)
                .await
                .map_err(db_error)?
        });
        let mut by_id: std::collections::HashMap<String, DecisionBlockRow> =
            rows.into_iter().map(|r| (r.first_id.clone(), r)).collect();
        Ok(ids
            .into_iter()
            .map(|id| {
                let row = by_id.remove(&id);
                (id, row)
            })
            .collect())
    }
}

impl SqlStore {
    /// Runs one batch delete (SQLite, PostgreSQL) bound to `now` and `limit`, as its own
    /// statement (on SQLite under the writers' lock, held for this batch only); returns how
    /// many rows went.
    async fn delete_batch(
        &self,
        (sqlite, postgres): (&str, &str),
        now: NaiveDateTime,
        limit: i64,
    ) -> Result<usize> {
        Ok(match &self.backend {
            Backend::Postgres(pool) => {
                let mut pooled = pool.get().await.map_err(pool_error)?;
                let conn: &mut AsyncPgConnection = &mut pooled;
                diesel::sql_query(postgres)
                    .bind::<diesel::sql_types::Timestamp, _>(now)
                    .bind::<diesel::sql_types::BigInt, _>(limit)
                    .execute(conn)
                    .await
                    .map_err(db_error)?
            }
            Backend::Sqlite {
                pool, write_lock, ..
            } => {
                let _writer = write_lock.lock().await;
                let mut pooled = pool.get().await.map_err(pool_error)?;
                let conn: &mut SqliteConn = &mut pooled;
                diesel::sql_query(sqlite)
                    .bind::<diesel::sql_types::Timestamp, _>(now)
                    .bind::<diesel::sql_types::BigInt, _>(limit)
                    .execute(conn)
                    .await
                    .map_err(db_error)?
            }
        })
    }
}

#[async_trait]
impl Datastore for SqlStore {
    async fn create_store(&self, store: &StoreInfo) -> Result<()> {
        let row = StoreRow {
            id: store.id.clone(),
            name: store.name.clone(),
            created_at: store.created_at.naive_utc(),
            updated_at: store.updated_at.naive_utc(),
            deleted_at: None,
        };
        let head = HeadRow {
            store_id: store.id.clone(),
            head: 0,
        };
        let res: std::result::Result<(), TxError> = write_tx!(self, |conn| {
            diesel::insert_into(stores::table)
                .values(&row)
                .execute(conn)
                .await?;
            diesel::insert_into(store_revisions::table)
                .values(&head)
                .execute(conn)
                .await?;
            Ok(())
        });
        res.map_err(|e| {
            if is_unique_violation(&e) {
                Error::Validation(format!("store `{}` already exists", store.id))
            } else {
                e.into()
            }
        })
    }

    async fn get_store(&self, id: &str) -> Result<Option<StoreInfo>> {
        let row: Option<StoreRow> = with_conn!(self, |conn| {
            stores::table
                .find(id)
                .filter(stores::deleted_at.is_null())
                .select(StoreRow::as_select())
                .first(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        Ok(row.map(store_info))
    }

    async fn list_stores(&self, name: Option<&str>, page: &Page) -> Result<Paged<StoreInfo>> {
        let after = page_token(STORE_TOKEN, page)?;
        let rows: Vec<StoreRow> = with_conn!(self, |conn| {
            let mut q = stores::table
                .select(StoreRow::as_select())
                .filter(stores::deleted_at.is_null())
                .into_boxed();
            if let Some(n) = name {
                q = q.filter(stores::name.eq(n));
            }
            if let Some(a) = &after {
                q = q.filter(stores::id.gt(a));
            }
            q = q.order(stores::id.asc());
            if page.size > 0 {
                q = q.limit(limit_for(page.size));
            }
            q.load(conn).await.map_err(db_error)?
        });
        paged(
            rows,
            page.size,
            |r| encode_token(STORE_TOKEN, &r.id),
            |r| Ok(store_info(r)),
        )
    }

    async fn delete_store(&self, id: &str) -> Result<bool> {
        let now = chrono::Utc::now().naive_utc();
        let updated: usize = write_tx!(self, |conn| {
            let n = diesel::update(stores::table.find(id).filter(stores::deleted_at.is_null()))
                .set((stores::deleted_at.eq(Some(now)), stores::updated_at.eq(now)))
                .execute(conn)
                .await?;
            Ok(n)
        })?;
        Ok(updated > 0)
    }

    async fn write_model(&self, store: &str, model: &AuthorizationModel) -> Result<()> {
        let json = serde_json::to_string(model).map_err(|e| {
            Error::Storage(format!(
                "cannot serialize authorization model `{}`: {e}",
                model.id
            ))
        })?;
        let row = ModelRow {
            store_id: store.to_string(),
            id: model.id.clone(),
            schema_version: model.schema_version.clone(),
            model_json: json,
            created_at: chrono::Utc::now().naive_utc(),
        };
        write_tx!(self, |conn| {
            require_live_store!(conn, store);
            diesel::insert_into(authorization_models::table)
                .values(&row)
                .execute(conn)
                .await?;
            Ok(())
        })
        .map_err(Error::from)
    }

    async fn read_model(&self, store: &str, id: &str) -> Result<Option<AuthorizationModel>> {
        let json: Option<String> = with_conn!(self, |conn| {
            authorization_models::table
                .find((store, id))
                .select(authorization_models::model_json)
                .first::<String>(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        json.map(|j| model_from_row(id.to_string(), &j)).transpose()
    }

    async fn latest_model(&self, store: &str) -> Result<Option<AuthorizationModel>> {
        let row: Option<(String, String)> = with_conn!(self, |conn| {
            authorization_models::table
                .filter(authorization_models::store_id.eq(store))
                .order(authorization_models::id.desc())
                .select((authorization_models::id, authorization_models::model_json))
                .first::<(String, String)>(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        row.map(|(id, j)| model_from_row(id, &j)).transpose()
    }

    async fn list_models(&self, store: &str, page: &Page) -> Result<Paged<AuthorizationModel>> {
        let before = page_token(MODEL_TOKEN, page)?;
        let rows: Vec<(String, String)> = with_conn!(self, |conn| {
            let mut q = authorization_models::table
                .select((authorization_models::id, authorization_models::model_json))
                .filter(authorization_models::store_id.eq(store))
                .into_boxed();
            if let Some(b) = &before {
                q = q.filter(authorization_models::id.lt(b));
            }
            q = q.order(authorization_models::id.desc());
            if page.size > 0 {
                q = q.limit(limit_for(page.size));
            }
            q.load::<(String, String)>(conn).await.map_err(db_error)?
        });
        paged(
            rows,
            page.size,
            |(id, _)| encode_token(MODEL_TOKEN, id),
            |(id, j)| model_from_row(id, &j),
        )
    }

    async fn write_tuples(
        &self,
        store: &str,
        deletes: &[TupleKey],
        writes: &[TupleKey],
        opts: WriteOptions,
    ) -> Result<Revision> {
        check_unique(deletes, "delete")?;
        check_unique(writes, "write")?;
        let delete_ids: Vec<Identity> = deletes
            .iter()
            .map(|k| parts(k).map(|p| identity(&p)))
            .collect::<Result<_>>()?;
        let write_parts: Vec<Parts<'_>> = writes.iter().map(parts).collect::<Result<_>>()?;
        let head: i64 = write_tx!(self, |conn| {
            let Some(head) = conn.lock_head(store).await? else {
                return Err(Error::StoreNotFound(store.to_string()).into());
            };
            // Taken under the revision lock, so changelog times follow revision order.
            let now = chrono::Utc::now().naive_utc();
            require_live_store!(conn, store);
            let rev = head
                .checked_add(1)
                .ok_or_else(|| Error::Storage("revision overflow".into()))?;
            let mut changes: Vec<ChangeRow> = Vec::new();
            let change = |seq: usize,
                          operation: &str,
                          p: &Parts<'_>,
                          cond: (Option<String>, Option<String>),
                          expires_at: Option<NaiveDateTime>|
             -> std::result::Result<ChangeRow, TxError> {
                Ok(ChangeRow {
                    store_id: store.to_string(),
                    revision: rev,
                    seq: i32::try_from(seq)
                        .map_err(|_| Error::Validation("too many tuples in one write".into()))?,
                    operation: operation.to_string(),
                    object_type: p.object_type.to_string(),
                    object_id: p.object_id.to_string(),
                    relation: p.relation.to_string(),
                    user_value: p.user.to_string(),
                    condition_name: cond.0,
                    condition_context: cond.1,
                    created_at: now,
                    expires_at,
                })
            };

            // Deletes: mark the live versions deleted at `rev`, keeping what they were. A
            // version past its expiry no longer exists: deleting it is a missing delete.
            let mut deleted: std::collections::HashMap<Identity, TupleRow> =
                std::collections::HashMap::new();
            for chunk in delete_ids.chunks(KEY_CHUNK) {
                let mut rows = conn.live_matching(store, chunk).await?;
                rows.retain(|r| r.expires_at.is_none_or(|e| e > now));
                let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
                if !ids.is_empty() {
                    diesel::update(tuples::table.filter(tuples::id.eq_any(ids)))
                        .set(tuples::deleted_rev.eq(Some(rev)))
                        .execute(conn)
                        .await?;
                }
                deleted.extend(rows.into_iter().map(|r| (row_identity(&r), r)));
            }
            for (k, id) in deletes.iter().zip(&delete_ids) {
                match deleted.get(id) {
                    Some(row) => {
                        let p = Parts {
                            object_type: &id.0,
                            object_id: &id.1,
                            relation: &id.2,
                            user: &id.3,
                        };
                        let seq = changes.len();
                        changes.push(change(
                            seq,
                            DELETE,
                            &p,
                            (row.condition_name.clone(), row.condition_context.clone()),
                            row.expires_at,
                        )?);
                    }
                    None if opts.ignore_missing => {}
                    None => return Err(Error::MissingDelete(k.to_string()).into()),
                }
            }

            // Writes: anything still live is a duplicate. A version past its expiry gives way
            // to the new one, without a change of its own: it had stopped counting already.
            let write_ids: Vec<Identity> = write_parts.iter().map(identity).collect();
            let mut live = std::collections::HashSet::new();
            let mut lapsed = Vec::new();
            for chunk in write_ids.chunks(KEY_CHUNK) {
                for r in conn.live_matching(store, chunk).await? {
                    if r.expires_at.is_some_and(|e| e <= now) {
                        lapsed.push(r.id);
                    } else {
                        live.insert(row_identity(&r));
                    }
                }
            }
            for chunk in lapsed.chunks(KEY_CHUNK) {
                diesel::update(tuples::table.filter(tuples::id.eq_any(chunk)))
                    .set(tuples::deleted_rev.eq(Some(rev)))
                    .execute(conn)
                    .await?;
            }
            let mut new_rows = Vec::new();
            for ((k, p), id) in writes.iter().zip(&write_parts).zip(&write_ids) {
                if live.contains(id) {
                    if opts.ignore_duplicates {
                        continue;
                    }
                    return Err(Error::DuplicateWrite(k.to_string()).into());
                }
                let cond = encode_condition(k);
                let expires_at = k.expires_at.map(|e| e.naive_utc());
                let seq = changes.len();
                changes.push(change(seq, WRITE, p, cond.clone(), expires_at)?);
                new_rows.push(NewTuple {
                    store_id: store.to_string(),
                    object_type: p.object_type.to_string(),
                    object_id: p.object_id.to_string(),
                    relation: p.relation.to_string(),
                    user_value: p.user.to_string(),
                    user_type: user_type(p.user).to_string(),
                    condition_name: cond.0,
                    condition_context: cond.1,
                    created_rev: rev,
                    deleted_rev: None,
                    created_at: now,
                    expires_at,
                });
            }

            if changes.is_empty() {
                // Nothing changed: no new revision.
                return Ok(head);
            }
            conn.insert_rows(new_rows, changes).await?;
            diesel::update(store_revisions::table.find(store))
                .set(store_revisions::head.eq(rev))
                .execute(conn)
                .await?;
            Ok(rev)
        })
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::Unavailable("a concurrent write conflicted; retry".into())
            } else {
                Error::from(e)
            }
        })?;
        from_db_rev(head)
    }

    async fn head_revision(&self, store: &str) -> Result<Revision> {
        let head: Option<i64> = with_conn!(self, |conn| {
            store_revisions::table
                .find(store)
                .select(store_revisions::head)
                .first::<i64>(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        head.map(from_db_rev)
            .transpose()?
            .ok_or_else(|| Error::StoreNotFound(store.to_string()))
    }

    async fn read_tuples(
        &self,
        store: &str,
        filter: &TupleFilter,
        rev: Revision,
        page: &Page,
    ) -> Result<Paged<Tuple>> {
        let after = tuple_token(page)?;
        let rev = to_db_rev(rev);
        let now = chrono::Utc::now().naive_utc();
        let rows: Vec<TupleRow> = with_conn!(self, |conn| {
            let mut q = tuples::table
                .select(TupleRow::as_select())
                .filter(tuples::store_id.eq(store))
                .filter(tuples::created_rev.le(rev))
                .filter(
                    tuples::deleted_rev
                        .is_null()
                        .or(tuples::deleted_rev.gt(rev)),
                )
                .filter(tuples::expires_at.is_null().or(tuples::expires_at.gt(now)))
                .into_boxed();
            if let Some(t) = &filter.object_type {
                q = q.filter(tuples::object_type.eq(t));
            }
            if let Some(i) = &filter.object_id {
                q = q.filter(tuples::object_id.eq(i));
            }
            if let Some(r) = &filter.relation {
                q = q.filter(tuples::relation.eq(r));
            }
            if !filter.users.is_empty() {
                q = q.filter(tuples::user_value.eq_any(filter.users.clone()));
            }
            if let Some(a) = after {
                q = q.filter(tuples::id.gt(a));
            }
            q = q.order(tuples::id.asc());
            if page.size > 0 {
                q = q.limit(limit_for(page.size));
            }
            q.load(conn).await.map_err(db_error)?
        });
        paged(
            rows,
            page.size,
            |r| encode_token(TUPLE_TOKEN, &r.id.to_string()),
            |r| {
                Ok(Tuple {
                    timestamp: utc(r.created_at),
                    key: tuple_key(
                        &r.object_type,
                        &r.object_id,
                        r.relation,
                        r.user_value,
                        r.condition_name,
                        r.condition_context,
                        r.expires_at,
                    )?,
                })
            },
        )
    }

    async fn read_changes(
        &self,
        store: &str,
        filter: &ChangeFilter,
        page: &Page,
    ) -> Result<Paged<TupleChange>> {
        let (after_rev, after_seq) = change_token(page)?;
        // Without a token the start time picks the first change; with one it is ignored.
        let since = filter
            .start_time
            .filter(|_| page.token.is_none())
            .map(|t| t.naive_utc());
        let (rows, end): (Vec<ChangeRow>, Option<(i64, i32)>) = with_conn!(self, |conn| {
            let mut q = changelog::table
                .select(ChangeRow::as_select())
                .filter(changelog::store_id.eq(store))
                .filter(
                    changelog::revision.gt(after_rev).or(changelog::revision
                        .eq(after_rev)
                        .and(changelog::seq.gt(after_seq))),
                )
                .into_boxed();
            if let Some(t) = &filter.object_type {
                q = q.filter(changelog::object_type.eq(t));
            }
            if let Some(t) = since {
                q = q.filter(changelog::created_at.ge(t));
            }
            q = q.order((changelog::revision.asc(), changelog::seq.asc()));
            if page.size > 0 {
                q = q.limit(i64::try_from(page.size).unwrap_or(i64::MAX));
            }
            let rows: Vec<ChangeRow> = q.load(conn).await.map_err(db_error)?;
            // Nothing at or after the start time: resume polling after the newest change
            // there is, which was made before it.
            let end = if rows.is_empty() && since.is_some() {
                changelog::table
                    .filter(changelog::store_id.eq(store))
                    .select((changelog::revision, changelog::seq))
                    .order((changelog::revision.desc(), changelog::seq.desc()))
                    .first::<(i64, i32)>(conn)
                    .await
                    .optional()
                    .map_err(db_error)?
            } else {
                None
            };
            (rows, end)
        });
        // The token always names where reading stopped, so polling resumes there.
        let (last_rev, last_seq) = rows
            .last()
            .map(|r| (r.revision, r.seq))
            .or(end)
            .unwrap_or((after_rev, after_seq));
        let next = Some(encode_token(
            CHANGE_TOKEN,
            &format!("{last_rev}.{last_seq}"),
        ));
        let items = rows
            .into_iter()
            .map(change_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(Paged { items, next })
    }

    async fn write_assertions(
        &self,
        store: &str,
        model_id: &str,
        assertions: &Assertions,
    ) -> Result<()> {
        let row = AssertionRow {
            store_id: store.to_string(),
            model_id: model_id.to_string(),
            assertions_json: assertions.to_string(),
        };
        write_tx!(self, |conn| {
            require_live_store!(conn, store);
            diesel::insert_into(assertions::table)
                .values(&row)
                .on_conflict((assertions::store_id, assertions::model_id))
                .do_update()
                .set(assertions::assertions_json.eq(&row.assertions_json))
                .execute(conn)
                .await?;
            Ok(())
        })
        .map_err(Error::from)
    }

    async fn read_assertions(&self, store: &str, model_id: &str) -> Result<Assertions> {
        let json: Option<String> = with_conn!(self, |conn| {
            assertions::table
                .find((store, model_id))
                .select(assertions::assertions_json)
                .first::<String>(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        match json {
            None => Ok(serde_json::Value::Array(vec![])),
            Some(j) => serde_json::from_str(&j).map_err(|e| {
                Error::Storage(format!(
                    "stored assertions of model `{model_id}` do not parse: {e}"
                ))
            }),
        }
    }

    async fn write_policy_version(
        &self,
        store: &str,
        version: &PolicyVersion,
        activate: bool,
    ) -> Result<()> {
        let row = PolicyRow {
            store_id: store.to_string(),
            id: version.id.clone(),
            policies: version.policies.clone(),
            schema_json: version.schema.as_ref().map(ToString::to_string),
            links_json: serde_json::to_string(&version.links)
                .map_err(|e| Error::Storage(format!("cannot serialize template links: {e}")))?,
            created_at: version.created_at.naive_utc(),
        };
        write_tx!(self, |conn| {
            require_live_store!(conn, store);
            diesel::insert_into(policy_versions::table)
                .values(&row)
                .execute(conn)
                .await?;
            if activate {
                diesel::delete(policy_heads::table.find(store))
                    .execute(conn)
                    .await?;
                diesel::insert_into(policy_heads::table)
                    .values(PolicyHeadRow {
                        store_id: store.to_string(),
                        active_id: row.id.clone(),
                    })
                    .execute(conn)
                    .await?;
            }
            Ok(())
        })
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::Validation(format!("policy version `{}` already exists", version.id))
            } else {
                Error::from(e)
            }
        })
    }

    async fn read_policy_version(&self, store: &str, id: &str) -> Result<Option<PolicyVersion>> {
        let row: Option<PolicyRow> = with_conn!(self, |conn| {
            policy_versions::table
                .find((store, id))
                .select(PolicyRow::as_select())
                .first(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        row.map(policy_from_row).transpose()
    }

    async fn list_policy_versions(&self, store: &str, page: &Page) -> Result<Paged<PolicyVersion>> {
        let before = page_token(POLICY_TOKEN, page)?;
        let rows: Vec<PolicyRow> = with_conn!(self, |conn| {
            let mut q = policy_versions::table
                .select(PolicyRow::as_select())
                .filter(policy_versions::store_id.eq(store))
                .into_boxed();
            if let Some(b) = &before {
                q = q.filter(policy_versions::id.lt(b));
            }
            q = q.order(policy_versions::id.desc());
            if page.size > 0 {
                q = q.limit(limit_for(page.size));
            }
            q.load(conn).await.map_err(db_error)?
        });
        paged(
            rows,
            page.size,
            |r| encode_token(POLICY_TOKEN, &r.id),
            policy_from_row,
        )
    }

    async fn activate_policy_version(&self, store: &str, id: &str) -> Result<bool> {
        write_tx!(self, |conn| {
            require_live_store!(conn, store);
            let exists: i64 = policy_versions::table
                .filter(policy_versions::store_id.eq(store))
                .filter(policy_versions::id.eq(id))
                .count()
                .get_result(conn)
                .await?;
            if exists == 0 {
                return Ok(false);
            }
            diesel::delete(policy_heads::table.find(store))
                .execute(conn)
                .await?;
            diesel::insert_into(policy_heads::table)
                .values(PolicyHeadRow {
                    store_id: store.to_string(),
                    active_id: id.to_string(),
                })
                .execute(conn)
                .await?;
            Ok(true)
        })
        .map_err(Error::from)
    }

    async fn active_policy_version(&self, store: &str) -> Result<Option<PolicyVersion>> {
        let row: Option<PolicyRow> = with_conn!(self, |conn| {
            policy_heads::table
                .inner_join(
                    policy_versions::table.on(policy_versions::store_id
                        .eq(policy_heads::store_id)
                        .and(policy_versions::id.eq(policy_heads::active_id))),
                )
                .filter(policy_heads::store_id.eq(store))
                .select(PolicyRow::as_select())
                .first(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        row.map(policy_from_row).transpose()
    }

    async fn read_setting(&self, store: &str, kind: &str) -> Result<Option<serde_json::Value>> {
        let row: Option<String> = with_conn!(self, |conn| {
            store_settings::table
                .find((store, kind))
                .select(store_settings::settings_json)
                .first(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        row.map(|t| parse_json("settings", &t)).transpose()
    }

    async fn write_setting(
        &self,
        store: &str,
        kind: &str,
        value: &serde_json::Value,
    ) -> Result<()> {
        let row = SettingRow {
            store_id: store.to_string(),
            kind: kind.to_string(),
            settings_json: json_text("settings", value)?,
        };
        write_tx!(self, |conn| {
            require_live_store!(conn, store);
            diesel::insert_into(store_settings::table)
                .values(&row)
                .on_conflict((store_settings::store_id, store_settings::kind))
                .do_update()
                .set(store_settings::settings_json.eq(&row.settings_json))
                .execute(conn)
                .await?;
            Ok(())
        })
        .map_err(Error::from)
    }

    async fn read_risk_profile(&self, store: &str, subject: &str) -> Result<Option<StoredRisk>> {
        let row: Option<(String, i64)> = with_conn!(self, |conn| {
            risk_profiles::table
                .find((store, subject))
                .select((risk_profiles::profile_json, risk_profiles::version))
                .first(conn)
                .await
                .optional()
                .map_err(db_error)?
        });
        row.map(|(t, version)| {
            Ok(StoredRisk {
                profile: parse_json("risk profile", &t)?,
                version,
            })
        })
        .transpose()
    }

    async fn write_risk_profile(
        &self,
        store: &str,
        subject: &str,
        profile: &serde_json::Value,
        expires_at: chrono::DateTime<chrono::Utc>,
        expected: Option<i64>,
    ) -> Result<bool> {
        let row = RiskProfileRow {
            store_id: store.to_string(),
            subject: subject.to_string(),
            profile_json: json_text("risk profile", profile)?,
            expires_at: expires_at.naive_utc(),
            version: expected.map_or(1, |v| v + 1),
        };
        // A compare-and-swap: the first save inserts (losing to a concurrent insert), later
        // ones update only the version they read.
        let n = match expected {
            None => with_conn!(self, |conn| {
                diesel::insert_into(risk_profiles::table)
                    .values(&row)
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await
                    .map_err(db_error)?
            }),
            Some(v) => with_conn!(self, |conn| {
                diesel::update(
                    risk_profiles::table
                        .find((store, subject))
                        .filter(risk_profiles::version.eq(v)),
                )
                .set((
                    risk_profiles::profile_json.eq(&row.profile_json),
                    risk_profiles::expires_at.eq(row.expires_at),
                    risk_profiles::version.eq(row.version),
                ))
                .execute(conn)
                .await
                .map_err(db_error)?
            }),
        };
        Ok(n == 1)
    }

    async fn delete_risk_profile(&self, store: &str, subject: &str) -> Result<bool> {
        let n = with_conn!(self, |conn| {
            diesel::delete(risk_profiles::table.find((store, subject)))
                .execute(conn)
                .await
                .map_err(db_error)?
        });
        Ok(n > 0)
    }

    async fn append_decisions(&self, entries: &[LoggedDecision]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut ids: Vec<&str> = entries.iter().map(|e| e.store_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let live: Vec<String> = with_conn!(self, |conn| {
            stores::table
                .filter(stores::id.eq_any(&ids))
                .filter(stores::deleted_at.is_null())
                .select(stores::id)
                .load(conn)
                .await
                .map_err(db_error)?
        });
        let live: std::collections::HashSet<&str> = live.iter().map(String::as_str).collect();
        let entries: Vec<&LoggedDecision> = entries
            .iter()
            .filter(|e| live.contains(e.store_id.as_str()))
            .collect();
        let (blocks, keys) = decision_blocks_of(entries)?;
        if blocks.is_empty() {
            return Ok(());
        }
        match &self.backend {
            // PostgreSQL: batched inserts in one transaction; a block already written (a
            // retried batch) is skipped, so a retry can never jam on its own rows.
            Backend::Postgres(pool) => {
                let mut pooled = pool.get().await.map_err(pool_error)?;
                let conn: &mut AsyncPgConnection = &mut pooled;
                conn.transaction(async |conn: &mut AsyncPgConnection| -> QueryResult<()> {
                    for chunk in blocks.chunks(50) {
                        diesel::insert_into(decision_blocks::table)
                            .values(chunk)
                            .on_conflict_do_nothing()
                            .execute(conn)
                            .await?;
                    }
                    for chunk in keys.chunks(INSERT_CHUNK) {
                        diesel::insert_into(decision_block_keys::table)
                            .values(chunk)
                            .on_conflict_do_nothing()
                            .execute(conn)
                            .await?;
                    }
                    Ok(())
                })
                .await
                .map_err(db_error)
            }
            // SQLite: on diesel's sync connection, in one transaction, so a flush costs one
            // commit; one row per statement, whose prepared statement is cached.
            Backend::Sqlite {
                pool, write_lock, ..
            } => {
                let _writer = write_lock.lock().await;
                let mut pooled = pool.get().await.map_err(pool_error)?;
                let conn: &mut SqliteConn = &mut pooled;
                let rows = std::sync::Arc::new((blocks, keys));
                conn.immediate_transaction(async |conn: &mut SqliteConn| -> QueryResult<()> {
                    let rows = rows.clone();
                    conn.spawn_blocking(move |c| {
                        for b in &rows.0 {
                            diesel::RunQueryDsl::execute(
                                diesel::insert_or_ignore_into(decision_blocks::table).values(b),
                                c,
                            )?;
                        }
                        for k in &rows.1 {
                            diesel::RunQueryDsl::execute(
                                diesel::insert_or_ignore_into(decision_block_keys::table).values(k),
                                c,
                            )?;
                        }
                        Ok(())
                    })
                    .await
                })
                .await
                .map_err(db_error)
            }
        }
    }

    async fn read_decisions(
        &self,
        store: &str,
        f: &DecisionFilter,
        page: &Page,
    ) -> Result<Paged<LoggedDecision>> {
        let before = page_token(DECISION_TOKEN, page)?;
        let now = chrono::Utc::now();
        // Entries are read block by block, newest block (by first entry) first. A block
        // spans at most BLOCK_SPAN_MS, so every entry of the blocks not read yet is older
        // than `ceiling_after(first id of the next block)`.
        let mut upper = before.clone();
        if let Some(until) = f.until {
            let u = ulid_at(until.timestamp_millis(), 0);
            upper = Some(upper.map_or(u.clone(), |b| b.min(u)));
        }
        // Blocks whose first entry is older than this cannot hold an entry since `since`.
        let lower = f
            .since
            .map(|s| ulid_at(s.timestamp_millis() - BLOCK_SPAN_MS, 0));
        let key = f
            .subject
            .as_ref()
            .map(|s| format!("s:{s}"))
            .or_else(|| f.resource.as_ref().map(|r| format!("r:{r}")));
        let want = if page.size > 0 {
            page.size + 1
        } else {
            usize::MAX
        };
        let mut found: Vec<LoggedDecision> = Vec::new();
        let mut cursor = upper.clone();
        'blocks: loop {
            let batch = self
                .decision_block_batch(store, key.as_deref(), cursor.as_deref(), lower.as_deref())
                .await?;
            let n = batch.len();
            for (first_id, block) in batch {
                // Enough entries newer than anything left to read: done.
                if found.len() >= want {
                    found.sort_unstable_by(|a, b| b.id.cmp(&a.id));
                    found.truncate(want);
                    if found
                        .last()
                        .is_some_and(|e| e.id >= ceiling_after(&first_id))
                    {
                        break 'blocks;
                    }
                }
                cursor = Some(first_id);
                let Some(block) = block else { continue };
                if block.expires_at.and_utc() < now {
                    continue;
                }
                let entries: Vec<BlockEntry<'_>> =
                    parse_json("decision log block", &block.entries_json)?;
                // An entry expires on its own (its store's retention when it was logged);
                // the block goes when its last entry has.
                found.extend(
                    entries
                        .into_iter()
                        .map(|e| e.into_logged(store))
                        .filter(|e| {
                            e.expires_at >= now
                                && f.matches(e)
                                && before.as_ref().is_none_or(|b| e.id < *b)
                        }),
                );
            }
            if n < BLOCK_READ_BATCH {
                break;
            }
        }
        found.sort_unstable_by(|a, b| b.id.cmp(&a.id));
        paged(
            found,
            page.size,
            |e| encode_token(DECISION_TOKEN, &e.id),
            Ok,
        )
    }

    async fn prune_expired(&self, now: chrono::DateTime<chrono::Utc>) -> Result<u64> {
        let now = now.naive_utc();
        // In batches, each its own statement (on SQLite, under the writers' lock), so that a
        // large backlog never holds the database's write lock for long.
        let mut removed = self.prune_decision_blocks(now).await?;
        for statements in [PRUNE_PROFILES] {
            loop {
                let n = self.delete_batch(statements, now, PRUNE_BATCH).await?;
                removed += n as u64;
                if (n as i64) < PRUNE_BATCH {
                    break;
                }
            }
        }
        Ok(removed)
    }

    async fn remove_expired_tuples(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<u64> {
        let now = now.naive_utc();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let n = self.delete_batch(REMOVE_EXPIRED_TUPLES, now, limit).await?;
        Ok(n as u64)
    }

    async fn write_entity_attributes(
        &self,
        store: &str,
        entity: &str,
        attributes: Option<&EntityAttributes>,
    ) -> Result<bool> {
        let row = attributes
            .map(|a| {
                Ok::<_, Error>(AttributesRow {
                    store_id: store.to_string(),
                    entity: entity.to_string(),
                    entity_type: entity
                        .split_once(':')
                        .map_or(entity, |(t, _)| t)
                        .to_string(),
                    attributes_json: json_text("entity attributes", &a.attributes)?,
                    updated_at: a.updated_at.naive_utc(),
                })
            })
            .transpose()?;
        write_tx!(self, |conn| {
            require_live_store!(conn, store);
            let had = diesel::delete(entity_attributes::table.find((store, entity)))
                .execute(conn)
                .await?;
            if let Some(row) = &row {
                diesel::insert_into(entity_attributes::table)
                    .values(row)
                    .execute(conn)
                    .await?;
            }
            Ok(had > 0)
        })
        .map_err(Error::from)
    }

    async fn read_entity_attributes(
        &self,
        store: &str,
        entities: &[String],
    ) -> Result<Vec<EntityAttributes>> {
        let mut out = Vec::new();
        for chunk in entities.chunks(KEY_CHUNK) {
            let rows: Vec<AttributesRow> = with_conn!(self, |conn| {
                entity_attributes::table
                    .select(AttributesRow::as_select())
                    .filter(entity_attributes::store_id.eq(store))
                    .filter(entity_attributes::entity.eq_any(chunk))
                    .load(conn)
                    .await
                    .map_err(db_error)?
            });
            for r in rows {
                out.push(attributes_from_row(r)?);
            }
        }
        Ok(out)
    }

    async fn list_entity_attributes(
        &self,
        store: &str,
        entity_type: Option<&str>,
        page: &Page,
    ) -> Result<Paged<EntityAttributes>> {
        let after = page_token(ATTRIBUTES_TOKEN, page)?;
        let rows: Vec<AttributesRow> = with_conn!(self, |conn| {
            let mut q = entity_attributes::table
                .select(AttributesRow::as_select())
                .filter(entity_attributes::store_id.eq(store))
                .into_boxed();
            if let Some(t) = entity_type {
                q = q.filter(entity_attributes::entity_type.eq(t));
            }
            if let Some(a) = &after {
                q = q.filter(entity_attributes::entity.gt(a));
            }
            q = q.order(entity_attributes::entity.asc());
            if page.size > 0 {
                q = q.limit(limit_for(page.size));
            }
            q.load(conn).await.map_err(db_error)?
        });
        paged(
            rows,
            page.size,
            |r| encode_token(ATTRIBUTES_TOKEN, &r.entity),
            attributes_from_row,
        )
    }
}

/// Most entries in one block of the decision log.
const BLOCK_MAX_ENTRIES: usize = 1_000;
/// Most bytes of one block's entries (a block holds at least one entry).
const BLOCK_MAX_BYTES: usize = 1 << 20;
/// Most milliseconds between the first and the last entry of a block (by their ULIDs), which
/// bounds how far a read must look past a block.
const BLOCK_SPAN_MS: i64 = 1_000;
/// Blocks fetched per query of a read.
const BLOCK_READ_BATCH: usize = 8;

/// The ULID string at `ms` (milliseconds since the epoch) with `random` bits.
fn ulid_at(ms: i64, random: u128) -> String {
    ulid::Ulid::from_parts(u64::try_from(ms).unwrap_or(0), random).to_string()
}

fn ulid_ms(id: &str) -> Result<i64> {
    ulid::Ulid::from_string(id)
        .map(|u| i64::try_from(u.timestamp_ms()).unwrap_or(i64::MAX))
        .map_err(|_| Error::Storage(format!("decision log id `{id}` is not a ULID")))
}

/// An id above every entry of a block whose first entry is `first_id`.
fn ceiling_after(first_id: &str) -> String {
    let ms = ulid_ms(first_id).unwrap_or(i64::MAX - BLOCK_SPAN_MS - 1);
    ulid_at(ms + BLOCK_SPAN_MS + 1, 0)
}

/// One entry as a block keeps it: the store is the block's, times are integers, short keys,
/// and what is empty or default is left out (about half the bytes of the API's form, which
/// the log's writer moves at tens of thousands of entries a second).
#[derive(serde::Serialize, serde::Deserialize)]
struct BlockEntry<'a> {
    i: std::borrow::Cow<'a, str>,
    /// Decided at, microseconds since the epoch.
    t: i64,
    s: std::borrow::Cow<'a, str>,
    a: std::borrow::Cow<'a, str>,
    r: std::borrow::Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<std::borrow::Cow<'a, serde_json::Map<String, serde_json::Value>>>,
    ok: bool,
    p: std::borrow::Cow<'a, [String]>,
    #[serde(default, skip_serializing_if = "<[String]>::is_empty")]
    e: std::borrow::Cow<'a, [String]>,
    rb: bool,
    #[serde(default, skip_serializing_if = "is_default_risk")]
    k: std::borrow::Cow<'a, gatehouse_engine::risk::Assessment>,
    rev: Revision,
    pv: std::borrow::Cow<'a, str>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    l: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    iu: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    sent: bool,
    #[serde(default, skip_serializing_if = "is_empty_map")]
    at: std::borrow::Cow<
        'a,
        std::collections::HashMap<String, serde_json::Map<String, serde_json::Value>>,
    >,
    #[serde(default, skip_serializing_if = "<[String]>::is_empty")]
    rd: std::borrow::Cow<'a, [String]>,
    us: u64,
    /// Expires at, microseconds since the epoch.
    x: i64,
}

fn is_default_risk(r: &gatehouse_engine::risk::Assessment) -> bool {
    *r == gatehouse_engine::risk::Assessment::default()
}

fn is_empty_map(
    m: &std::collections::HashMap<String, serde_json::Map<String, serde_json::Value>>,
) -> bool {
    m.is_empty()
}

impl<'a> BlockEntry<'a> {
    fn of(d: &'a LoggedDecision) -> Self {
        use std::borrow::Cow::Borrowed;
        Self {
            i: Borrowed(&d.id),
            t: d.decided_at.timestamp_micros(),
            s: Borrowed(&d.subject),
            a: Borrowed(&d.action),
            r: Borrowed(&d.resource),
            c: d.context.as_ref().map(Borrowed),
            ok: d.allowed,
            p: Borrowed(&d.policies),
            e: Borrowed(&d.errors),
            rb: d.rebac,
            k: Borrowed(&d.risk),
            rev: d.revision,
            pv: Borrowed(&d.policy_version),
            l: d.lean,
            iu: d.ignore_undeclared,
            sent: d.attributes_sent,
            at: Borrowed(&d.attributes),
            rd: Borrowed(&d.redacted),
            us: d.latency_us,
            x: d.expires_at.timestamp_micros(),
        }
    }

    fn into_logged(self, store: &str) -> LoggedDecision {
        let at = |t: Option<chrono::DateTime<chrono::Utc>>| t.unwrap_or_default();
        LoggedDecision {
            id: self.i.into_owned(),
            store_id: store.to_string(),
            decided_at: at(chrono::DateTime::from_timestamp_micros(self.t)),
            subject: self.s.into_owned(),
            action: self.a.into_owned(),
            resource: self.r.into_owned(),
            context: self.c.map(std::borrow::Cow::into_owned),
            allowed: self.ok,
            policies: self.p.into_owned(),
            errors: self.e.into_owned(),
            rebac: self.rb,
            risk: self.k.into_owned(),
            revision: self.rev,
            policy_version: self.pv.into_owned(),
            lean: self.l,
            ignore_undeclared: self.iu,
            attributes_sent: self.sent,
            attributes: self.at.into_owned(),
            redacted: self.rd.into_owned(),
            latency_us: self.us,
            expires_at: at(chrono::DateTime::from_timestamp_micros(self.x)),
        }
    }
}

/// Cuts entries (of live stores) into blocks per store, oldest first, each with its key rows.
fn decision_blocks_of(
    mut entries: Vec<&LoggedDecision>,
) -> Result<(Vec<DecisionBlockRow>, Vec<DecisionKeyRow>)> {
    entries.sort_unstable_by(|a, b| (&a.store_id, &a.id).cmp(&(&b.store_id, &b.id)));
    let mut blocks = Vec::new();
    let mut keys = Vec::new();
    let mut i = 0;
    while i < entries.len() {
        let first = entries[i];
        let first_ms = ulid_ms(&first.id)?;
        let mut json = String::from("[");
        let mut block_keys = std::collections::BTreeSet::new();
        let mut expires = first.expires_at;
        let mut last = first;
        let mut j = i;
        while j < entries.len() {
            let e = entries[j];
            if j > i
                && (e.store_id != first.store_id
                    || j - i >= BLOCK_MAX_ENTRIES
                    || json.len() >= BLOCK_MAX_BYTES
                    || ulid_ms(&e.id)? - first_ms > BLOCK_SPAN_MS)
            {
                break;
            }
            if j > i {
                json.push(',');
            }
            json.push_str(&json_text("decision log entry", &BlockEntry::of(e))?);
            block_keys.insert(format!("s:{}", e.subject));
            block_keys.insert(format!("r:{}", e.resource));
            expires = expires.max(e.expires_at);
            last = e;
            j += 1;
        }
        json.push(']');
        let block_keys: Vec<String> = block_keys.into_iter().collect();
        keys.extend(block_keys.iter().map(|k| DecisionKeyRow {
            store_id: first.store_id.clone(),
            key: k.clone(),
            first_id: first.id.clone(),
        }));
        blocks.push(DecisionBlockRow {
            store_id: first.store_id.clone(),
            first_id: first.id.clone(),
            last_id: last.id.clone(),
            entries_json: json,
            keys_json: json_text("decision log keys", &block_keys)?,
            expires_at: expires.naive_utc(),
        });
        i = j;
    }
    Ok((blocks, keys))
}

fn json_text(what: &str, v: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Storage(format!("cannot serialize {what}: {e}")))
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|e| Error::Storage(format!("stored {what} does not parse: {e}")))
}

fn attributes_from_row(r: AttributesRow) -> Result<EntityAttributes> {
    Ok(EntityAttributes {
        attributes: parse_json("entity attributes", &r.attributes_json)?,
        entity: r.entity,
        updated_at: utc(r.updated_at),
    })
}

fn policy_from_row(r: PolicyRow) -> Result<PolicyVersion> {
    let schema = r
        .schema_json
        .map(|j| {
            serde_json::from_str(&j).map_err(|e| {
                Error::Storage(format!(
                    "stored schema of policy version `{}` does not parse: {e}",
                    r.id
                ))
            })
        })
        .transpose()?;
    let links = serde_json::from_str(&r.links_json).map_err(|e| {
        Error::Storage(format!(
            "stored template links of policy version `{}` do not parse: {e}",
            r.id
        ))
    })?;
    Ok(PolicyVersion {
        id: r.id,
        policies: r.policies,
        schema,
        links,
        created_at: utc(r.created_at),
    })
}
