//! The storage conformance suite against SQLite and a real PostgreSQL, each test in its own
//! database; plus concurrency, URL handling and error hygiene.
//!
//! PostgreSQL is found at `GATEHOUSE_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::FutureExt;
use gatehouse_engine::Error;
use gatehouse_engine::store::{Datastore, Page, StoreInfo, TupleFilter, WriteOptions, conformance};
use gatehouse_engine::tuple::TupleKey;

use super::{ConnectOptions, DbError, SqlStore, Target};

fn pg_base() -> String {
    std::env::var("GATEHOUSE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A PostgreSQL database of its own, dropped by [`with_pg`].
struct PgDb {
    name: String,
}

impl PgDb {
    fn url(&self) -> String {
        format!("{}/{}", pg_base(), self.name)
    }

    async fn admin() -> AsyncPgConnection {
        AsyncPgConnection::establish(&format!("{}/postgres", pg_base()))
            .await
            .expect("connect to PostgreSQL's `postgres` database (is PostgreSQL running?)")
    }

    async fn create() -> Self {
        let name = format!(
            "gatehouse_test_{}",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        let mut admin = Self::admin().await;
        // The name is generated here (lowercase ULID), never user input.
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        Self { name }
    }

    async fn drop_db(self) {
        let mut admin = Self::admin().await;
        diesel::sql_query(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await
        .expect("drop the test database");
    }
}

/// Runs `test` against a fresh PostgreSQL database and drops it afterwards, even on failure.
pub(crate) async fn with_pg<F, Fut>(test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let db = PgDb::create().await;
    let outcome = AssertUnwindSafe(test(db.url())).catch_unwind().await;
    db.drop_db().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A SQLite database file of its own under the temp dir, removed by [`with_sqlite`].
pub(crate) async fn with_sqlite<F, Fut>(test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let path: PathBuf = std::env::temp_dir().join(format!(
        "gatehouse-test-{}.db",
        ulid::Ulid::new().to_string().to_lowercase()
    ));
    let url = format!("sqlite://{}", path.display());
    let outcome = AssertUnwindSafe(test(url)).catch_unwind().await;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn new_store_info() -> StoreInfo {
    let now = chrono::Utc::now();
    StoreInfo {
        id: ulid::Ulid::new().to_string(),
        name: "concurrency".into(),
        created_at: now,
        updated_at: now,
    }
}

/// `writers` tasks write to one store at once; each must get its own revision and every tuple
/// must land.
async fn concurrent_writers(ds: Arc<SqlStore>, writers: usize, per_writer: usize) {
    let info = new_store_info();
    ds.create_store(&info).await.expect("create store");
    let mut tasks = Vec::new();
    for w in 0..writers {
        let ds = ds.clone();
        let store = info.id.clone();
        tasks.push(tokio::spawn(async move {
            let keys: Vec<TupleKey> = (0..per_writer)
                .map(|i| TupleKey::new(format!("user:w{w}-{i}"), "viewer", format!("doc:{i}")))
                .collect();
            ds.write_tuples(&store, &[], &keys, WriteOptions::default())
                .await
        }));
    }
    let mut revs = Vec::new();
    for t in tasks {
        revs.push(t.await.expect("writer task").expect("concurrent write"));
    }
    revs.sort_unstable();
    let want: Vec<u64> = (1..=writers as u64).collect();
    assert_eq!(
        revs, want,
        "each concurrent writer gets its own revision, with no gaps"
    );
    let head = ds.head_revision(&info.id).await.expect("head");
    assert_eq!(head, writers as u64, "the head is the last revision");
    let all = ds
        .read_tuples(&info.id, &TupleFilter::default(), head, &Page::default())
        .await
        .expect("read");
    assert_eq!(
        all.items.len(),
        writers * per_writer,
        "every concurrent write landed"
    );
    let changes = ds
        .read_changes(
            &info.id,
            &gatehouse_engine::store::ChangeFilter::default(),
            &Page::default(),
        )
        .await
        .expect("changes");
    assert_eq!(
        changes.items.len(),
        writers * per_writer,
        "every concurrent write is in the changelog"
    );
    assert!(
        changes
            .items
            .windows(2)
            .all(|w| w[0].revision <= w[1].revision),
        "the changelog is in revision order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_conforms() {
    with_sqlite(|url| async move {
        let ds = Arc::new(SqlStore::connect(&url).await.expect("open sqlite"));
        assert_eq!(ds.backend_name(), "sqlite");
        conformance::run_all(ds.as_ref()).await;
        conformance::run_engine_differential(ds).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_writers() {
    with_sqlite(|url| async move {
        let ds = Arc::new(SqlStore::connect(&url).await.expect("open sqlite"));
        concurrent_writers(ds, 8, 25).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_in_memory_conforms() {
    let ds = SqlStore::connect("sqlite::memory:")
        .await
        .expect("open in-memory sqlite");
    conformance::run_all(&ds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reopen_keeps_data_and_migrations_are_idempotent() {
    with_sqlite(|url| async move {
        let info = new_store_info();
        {
            let ds = SqlStore::connect(&url).await.expect("open sqlite");
            ds.create_store(&info).await.expect("create store");
            ds.write_tuples(
                &info.id,
                &[],
                &[TupleKey::new("user:anne", "viewer", "doc:1")],
                WriteOptions::default(),
            )
            .await
            .expect("write");
        }
        SqlStore::migrate(&url).await.expect("migrate again");
        let ds = SqlStore::connect(&url).await.expect("reopen sqlite");
        assert!(
            ds.get_store(&info.id).await.expect("get").is_some(),
            "the store survives a reopen"
        );
        assert_eq!(
            ds.head_revision(&info.id).await.expect("head"),
            1,
            "the revision survives a reopen"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_conforms() {
    with_pg(|url| async move {
        let ds = Arc::new(SqlStore::connect(&url).await.expect("open postgres"));
        assert_eq!(ds.backend_name(), "postgres");
        conformance::run_all(ds.as_ref()).await;
        conformance::run_engine_differential(ds).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_writers() {
    with_pg(|url| async move {
        let opts = ConnectOptions {
            max_connections: 8,
            ..ConnectOptions::default()
        };
        let ds = Arc::new(
            SqlStore::connect_with(&url, &opts)
                .await
                .expect("open postgres"),
        );
        concurrent_writers(ds, 8, 25).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migrations_are_idempotent() {
    with_pg(|url| async move {
        SqlStore::migrate(&url).await.expect("first migration");
        SqlStore::migrate(&url)
            .await
            .expect("second migration is a no-op");
        let ds = SqlStore::connect(&url)
            .await
            .expect("connect after migrations");
        assert_eq!(
            ds.list_stores(None, &Page::default())
                .await
                .expect("list")
                .items
                .len(),
            0
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_postgres_is_unavailable_without_leaking_the_password() {
    let err = SqlStore::connect("postgres://gatehouse:supersecret@127.0.0.1:1/gatehouse")
        .await
        .expect_err("nothing listens on port 1");
    assert!(
        matches!(err, DbError::Unavailable(_)),
        "connection failures are `Unavailable`, got {err:?}"
    );
    assert!(
        !err.to_string().contains("supersecret"),
        "error messages must not carry passwords: {err}"
    );
    let engine: Error = err.into();
    assert!(matches!(engine, Error::Unavailable(_)));
}

#[test]
fn parses_urls() {
    assert_eq!(
        Target::parse("postgres://u@h/db").unwrap(),
        Target::Postgres("postgres://u@h/db".into())
    );
    assert_eq!(
        Target::parse("postgresql://h/db").unwrap(),
        Target::Postgres("postgresql://h/db".into())
    );
    assert_eq!(
        Target::parse("sqlite://data/gatehouse.db").unwrap(),
        Target::Sqlite("data/gatehouse.db".into())
    );
    assert_eq!(
        Target::parse("sqlite:///var/lib/g.db").unwrap(),
        Target::Sqlite("/var/lib/g.db".into())
    );
    assert_eq!(
        Target::parse("sqlite::memory:").unwrap(),
        Target::Sqlite(":memory:".into())
    );
    assert_eq!(
        Target::parse("./data/g.db").unwrap(),
        Target::Sqlite("./data/g.db".into())
    );
    assert!(Target::parse("sqlite://").is_err());
    let err = Target::parse("mysql://root:hunter2@db/x").unwrap_err();
    assert!(matches!(err, DbError::InvalidUrl(_)));
    assert!(
        !err.to_string().contains("hunter2"),
        "the url is not echoed: {err}"
    );
}

/// SQLite is built with the query planner stability guarantee (`.cargo/config.toml`): a
/// statement with a bound `LIMIT` (each `.first()`, each page) is planned once and reused.
/// Without it SQLite plans with the bound limit as a constant and compiles the statement
/// again every time the limit is bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_statements_with_a_bound_limit_prepared() {
    use diesel::sql_types::Integer;
    let ds = SqlStore::connect("sqlite::memory:")
        .await
        .expect("open in-memory sqlite");
    let super::Backend::Sqlite { pool, .. } = &ds.backend else {
        panic!("an in-memory store is SQLite");
    };
    let mut conn = pool.get().await.expect("a connection");
    let qpsg: i32 = diesel::select(diesel::dsl::sql::<Integer>(
        "sqlite_compileoption_used('ENABLE_QPSG')",
    ))
    .get_result(&mut *conn)
    .await
    .expect("query the compile options");
    assert_eq!(qpsg, 1, "SQLite must be built with SQLITE_ENABLE_QPSG");
}
