//! SQL implementations of the engine's storage traits (PostgreSQL and SQLite).
//!
//! [`SqlStore`] implements [`gatehouse_engine::store::Datastore`] over one diesel schema
//! ([`schema`]) for two backends chosen by the URL: PostgreSQL through diesel-async and a
//! deadpool pool, or SQLite through diesel-async's sync wrapper (WAL mode, one in-process writer
//! at a time). Migrations are embedded (`gatehouse-migrations`) and run on connect.

/// Runs `$body` with `$conn` bound to a pooled connection of whichever backend the store uses.
macro_rules! with_conn {
    ($store:expr, |$conn:ident| $body:expr) => {
        match &$store.backend {
            Backend::Postgres(pool) => {
                let mut pooled = pool.get().await.map_err(pool_error)?;
                let $conn: &mut AsyncPgConnection = &mut pooled;
                $body
            }
            Backend::Sqlite { pool, .. } => {
                let mut pooled = pool.get().await.map_err(pool_error)?;
                let $conn: &mut SqliteConn = &mut pooled;
                $body
            }
        }
    };
}

/// Runs `$body`, a read by key that takes no lock, with `$conn` bound to a pooled connection.
/// SQLite runs it on the calling thread ([`Inline`]): a point read of a local file takes
/// microseconds, less than handing it to the blocking pool and waking the caller again. A read
/// in WAL mode never waits for a writer, so it cannot hold the thread up; scans and writes
/// stay on the blocking pool ([`with_conn!`]). An in-memory database has one connection only,
/// shared by every query.
macro_rules! read_conn {
    ($store:expr, |$conn:ident| $body:expr) => {
        match &$store.backend {
            Backend::Sqlite {
                reads: Some(pool), ..
            } => {
                let mut pooled = pool.get().await.map_err(pool_error)?;
                let $conn: &mut SqliteReadConn = &mut pooled;
                $body
            }
            _ => with_conn!($store, |$conn| $body),
        }
    };
}

/// Runs `$body` (returning `Result<_, TxError>`) in a write transaction, all or nothing.
macro_rules! write_tx {
    ($store:expr, |$conn:ident| $body:expr) => {
        match &$store.backend {
            Backend::Postgres(pool) => {
                let mut pooled = pool.get().await.map_err(pool_error)?;
                let conn: &mut AsyncPgConnection = &mut pooled;
                conn.transaction(
                    async |$conn: &mut AsyncPgConnection| -> std::result::Result<_, TxError> {
                        $body
                    },
                )
                .await
            }
            Backend::Sqlite {
                pool, write_lock, ..
            } => {
                let _writer = write_lock.lock().await;
                let mut pooled = pool.get().await.map_err(pool_error)?;
                let conn: &mut SqliteConn = &mut pooled;
                conn.immediate_transaction(
                    async |$conn: &mut SqliteConn| -> std::result::Result<_, TxError> { $body },
                )
                .await
            }
        }
    };
}

pub mod consents;
mod datastore;
pub mod keys;
mod models;
pub mod schema;
pub mod tenancy;
#[cfg(test)]
pub(crate) mod tests;
pub mod users;

use std::path::Path;
use std::time::Duration;

use diesel::SqliteConnection;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures::FutureExt;

/// The SQLite connection type: diesel's sync connection run on tokio's blocking pool.
type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

/// The SQLite connection of [`read_conn!`]: diesel's sync connection run on the calling thread.
type SqliteReadConn = SyncConnectionWrapper<SqliteConnection, Inline>;

/// Runs a SQLite connection's work where it is awaited, without a thread hand-off.
struct Inline;

impl diesel_async::sync_connection_wrapper::SpawnBlocking for Inline {
    fn spawn_blocking<'a, R>(
        &mut self,
        task: impl FnOnce() -> R + Send + 'static,
    ) -> futures::future::BoxFuture<'a, Result<R, Box<dyn std::error::Error + Send + Sync + 'static>>>
    where
        R: Send + 'static,
    {
        futures::future::ready(Ok(task())).boxed()
    }

    fn get_runtime() -> Self {
        Inline
    }
}

/// Per-connection SQLite settings: WAL for concurrent readers, a busy timeout for writers of
/// other processes, enforced foreign keys, and the database file mapped into memory (up to
/// 256 MiB). Every write (an audit event, a login's lockout count) makes each connection drop
/// its page cache at its next read; mapped, a read takes the file's pages where they lie
/// instead of copying them into freshly allocated buffers with a system call per page.
const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA mmap_size = 268435456;";

/// What can go wrong opening or migrating a database. Messages never carry the URL, which may
/// hold a password.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported database url: {0}")]
    InvalidUrl(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database migration failed: {0}")]
    Migration(String),
    #[error("database error: {0}")]
    Storage(String),
}

/// Result with [`DbError`].
pub type Result<T, E = DbError> = std::result::Result<T, E>;

impl From<DbError> for gatehouse_engine::Error {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(m) => Self::Unavailable(m),
            other => Self::Storage(other.to_string()),
        }
    }
}

/// How to open a [`SqlStore`].
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Most connections the pool keeps open (SQLite in-memory databases always use one).
    pub max_connections: usize,
    /// How long a request waits for a free connection before the store reports itself unavailable.
    pub acquire_timeout: Duration,
    /// Runs the embedded migrations before returning.
    pub migrate: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(30),
            migrate: true,
        }
    }
}

/// The datastore over PostgreSQL or SQLite.
pub struct SqlStore {
    backend: Backend,
}

enum Backend {
    Postgres(Pool<AsyncPgConnection>),
    Sqlite {
        pool: Pool<SqliteConn>,
        /// Connections for [`read_conn!`] (none for an in-memory database, which lives in the
        /// one connection of `pool`).
        reads: Option<Pool<SqliteReadConn>>,
        /// SQLite has one writer at a time; writers of this process queue here rather than
        /// spinning on the busy timeout.
        write_lock: tokio::sync::Mutex<()>,
    },
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &self.backend_name())
            .finish_non_exhaustive()
    }
}

/// Where a URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Postgres(String),
    /// A file path, `:memory:` or a `file:` URI, as SQLite takes it.
    Sqlite(String),
}

impl Target {
    fn parse(url: &str) -> Result<Self> {
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_string()));
        }
        let path = if let Some(p) = url.strip_prefix("sqlite://") {
            p
        } else if let Some(p) = url.strip_prefix("sqlite:") {
            p
        } else if let Some((scheme, _)) = url.split_once("://") {
            return Err(DbError::InvalidUrl(format!(
                "scheme `{scheme}` (expected postgres:// or sqlite://)"
            )));
        } else {
            url
        };
        if path.is_empty() {
            return Err(DbError::InvalidUrl("empty sqlite path".into()));
        }
        Ok(Self::Sqlite(path.to_string()))
    }
}

fn is_sqlite_memory(path: &str) -> bool {
    path == ":memory:" || path.contains("mode=memory")
}

impl SqlStore {
    /// Opens the database at `url` (`postgres://…`, `sqlite://path` or a file path) and
    /// brings its schema up to date.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, &ConnectOptions::default()).await
    }

    /// Opens the database at `url` with explicit pool settings.
    pub async fn connect_with(url: &str, opts: &ConnectOptions) -> Result<Self> {
        let target = Target::parse(url)?;
        // An in-memory SQLite database lives in its one pooled connection, migrated below.
        let in_memory = matches!(&target, Target::Sqlite(p) if is_sqlite_memory(p));
        if opts.migrate && !in_memory {
            migrate_target(&target).await?;
        }
        let backend = match target {
            Target::Postgres(url) => {
                let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
                Backend::Postgres(build_pool(
                    manager,
                    opts.max_connections,
                    opts.acquire_timeout,
                )?)
            }
            Target::Sqlite(path) => {
                prepare_sqlite_path(&path)?;
                let mut config = ManagerConfig::<SqliteConn>::default();
                config.custom_setup = Box::new(|path| establish_sqlite(path.to_string()).boxed());
                let manager = AsyncDieselConnectionManager::<SqliteConn>::new_with_config(
                    path.clone(),
                    config,
                );
                let in_memory = is_sqlite_memory(&path);
                let reads = if in_memory {
                    None
                } else {
                    let mut config = ManagerConfig::<SqliteReadConn>::default();
                    config.custom_setup =
                        Box::new(|path| establish_sqlite(path.to_string()).boxed());
                    let manager = AsyncDieselConnectionManager::<SqliteReadConn>::new_with_config(
                        path.clone(),
                        config,
                    );
                    Some(build_pool(
                        manager,
                        opts.max_connections,
                        opts.acquire_timeout,
                    )?)
                };
                let size = if in_memory { 1 } else { opts.max_connections };
                Backend::Sqlite {
                    pool: build_pool(manager, size, opts.acquire_timeout)?,
                    reads,
                    write_lock: tokio::sync::Mutex::new(()),
                }
            }
        };
        let store = Self { backend };
        store.ping().await?;
        if opts.migrate && in_memory {
            store.migrate_in_place().await?;
        }
        Ok(store)
    }

    /// Runs the embedded migrations against the database at `url` (what `gatehouse migrate` does).
    pub async fn migrate(url: &str) -> Result<()> {
        migrate_target(&Target::parse(url)?).await
    }

    /// Migrates through a pooled SQLite connection (for in-memory databases, which exist only
    /// in that connection).
    async fn migrate_in_place(&self) -> Result<()> {
        use diesel_migrations::MigrationHarness as _;
        let Backend::Sqlite { pool, .. } = &self.backend else {
            return Ok(());
        };
        let mut conn = pool
            .get()
            .await
            .map_err(|e| DbError::Unavailable(e.to_string()))?;
        conn.spawn_blocking(|c| {
            Ok(c.run_pending_migrations(gatehouse_migrations::SQLITE)
                .map(|v| v.len())
                .map_err(|e| e.to_string()))
        })
        .await
        .map_err(|e| DbError::Storage(e.to_string()))?
        .map_err(DbError::Migration)?;
        Ok(())
    }

    /// `postgres` or `sqlite`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Postgres(_) => "postgres",
            Backend::Sqlite { .. } => "sqlite",
        }
    }

    /// Checks that a connection can be had.
    pub async fn ping(&self) -> Result<()> {
        let unavailable = |e: diesel_async::pooled_connection::deadpool::PoolError| {
            DbError::Unavailable(e.to_string())
        };
        match &self.backend {
            Backend::Postgres(pool) => pool.get().await.map(drop).map_err(unavailable),
            Backend::Sqlite { pool, .. } => pool.get().await.map(drop).map_err(unavailable),
        }
    }
}

fn build_pool<C>(
    manager: AsyncDieselConnectionManager<C>,
    size: usize,
    wait: Duration,
) -> Result<Pool<C>>
where
    C: diesel_async::pooled_connection::PoolableConnection + Send + 'static,
    AsyncDieselConnectionManager<C>:
        deadpool::managed::Manager<Type = C, Error = diesel_async::pooled_connection::PoolError>,
{
    Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(wait))
        .create_timeout(Some(wait))
        .recycle_timeout(Some(wait))
        .build()
        .map_err(|e| DbError::Unavailable(format!("cannot build the connection pool: {e}")))
}

async fn establish_sqlite<S>(
    path: String,
) -> diesel::ConnectionResult<SyncConnectionWrapper<SqliteConnection, S>>
where
    S: diesel_async::sync_connection_wrapper::SpawnBlocking + Send + 'static,
    SyncConnectionWrapper<SqliteConnection, S>: AsyncConnection,
{
    let mut conn = SyncConnectionWrapper::<SqliteConnection, S>::establish(&path).await?;
    conn.batch_execute(SQLITE_PRAGMAS).await.map_err(|e| {
        diesel::ConnectionError::BadConnection(format!("cannot configure sqlite: {e}"))
    })?;
    Ok(conn)
}

/// Creates the directory of a SQLite database file so that a fresh `./data/` works.
fn prepare_sqlite_path(path: &str) -> Result<()> {
    if is_sqlite_memory(path) || path.starts_with("file:") {
        return Ok(());
    }
    match Path::new(path).parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => std::fs::create_dir_all(dir)
            .map_err(|e| {
                DbError::Unavailable(format!(
                    "cannot create the directory `{}`: {e}",
                    dir.display()
                ))
            }),
        _ => Ok(()),
    }
}

async fn migrate_target(target: &Target) -> Result<()> {
    use diesel::Connection as _;
    use diesel_migrations::MigrationHarness as _;

    let target = target.clone();
    let applied = tokio::task::spawn_blocking(move || -> Result<usize> {
        match target {
            Target::Postgres(url) => {
                let mut conn = <diesel_async::async_connection_wrapper::AsyncConnectionWrapper<
                    AsyncPgConnection,
                > as diesel::Connection>::establish(&url)
                .map_err(|e| DbError::Unavailable(e.to_string()))?;
                // Nodes that start together migrate one at a time: the others wait on this
                // session lock (released with the connection) and then find nothing to do,
                // instead of racing to create the same tables.
                diesel::connection::SimpleConnection::batch_execute(
                    &mut conn,
                    "SELECT pg_advisory_lock(7451287461350719821)",
                )
                .map_err(|e| {
                    DbError::Migration(format!("could not take the migration lock: {e}"))
                })?;
                conn.run_pending_migrations(gatehouse_migrations::POSTGRES)
                    .map(|v| v.len())
                    .map_err(|e| DbError::Migration(e.to_string()))
            }
            Target::Sqlite(path) => {
                prepare_sqlite_path(&path)?;
                let mut conn = SqliteConnection::establish(&path)
                    .map_err(|e| DbError::Unavailable(e.to_string()))?;
                diesel::connection::SimpleConnection::batch_execute(&mut conn, SQLITE_PRAGMAS)
                    .map_err(|e| DbError::Storage(e.to_string()))?;
                conn.run_pending_migrations(gatehouse_migrations::SQLITE)
                    .map(|v| v.len())
                    .map_err(|e| DbError::Migration(e.to_string()))
            }
        }
    })
    .await
    .map_err(|e| DbError::Migration(format!("the migration task failed: {e}")))??;
    if applied > 0 {
        tracing::info!(migrations.applied = applied, "database migrated");
    }
    Ok(())
}
