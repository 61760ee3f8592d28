//! Database access shared by the notification bus and the meta service.
//!
//! One SQL code path for SQLite and PostgreSQL goes through sqlx's `Any` driver: queries use `$1`
//! placeholders (both engines accept them), times are stored as integer microseconds since the
//! Unix epoch and JSON as text. DDL differs per engine and lives in `migrations/sqlite` and
//! `migrations/postgres`, embedded into the binary and applied by [`Db::connect`].

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, ConnectOptions};

/// Throw-away databases for tests and benchmarks: only with the `testing` feature, which the
/// workspace's dev-dependencies turn on, so release builds leave it out.
#[cfg(any(test, feature = "testing"))]
pub mod testing;

/// Whether a write failed for want of disk space: SQLite `SQLITE_FULL` (13) and the I/O errors
/// SQLite reports when a file cannot grow or be written (`SQLITE_IOERR_WRITE`, `_FSYNC`,
/// `_DIR_FSYNC`, `_TRUNCATE`, `_SHMSIZE`, `_SHMMAP`: the WAL, the journal or the shared-memory
/// index on a full disk), PostgreSQL `disk_full` (53100), "No space left on device" or "Disk
/// quota exceeded" in a database's message, and `ENOSPC`/`EDQUOT` from the file system, also
/// when wrapped (a failed migration, an error's source chain). Stores answer such a failure with
/// 507 `storage_full`.
#[must_use]
pub fn storage_full(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(d) => {
            d.code().as_deref().is_some_and(storage_full_code) || storage_full_message(d.message())
        }
        sqlx::Error::Io(e) => storage_full_io(e),
        sqlx::Error::Migrate(m) => match m.as_ref() {
            sqlx::migrate::MigrateError::Execute(e)
            | sqlx::migrate::MigrateError::ExecuteMigration(e, _) => storage_full(e),
            other => chain_full(std::error::Error::source(other)),
        },
        other => chain_full(std::error::Error::source(other)),
    }
}

/// Whether a file-system error is a full disk (`ENOSPC`) or an exceeded quota (`EDQUOT`),
/// looking through errors wrapped inside it.
#[must_use]
pub fn storage_full_io(err: &std::io::Error) -> bool {
    if matches!(err.raw_os_error(), Some(ENOSPC | EDQUOT))
        || err.kind() == std::io::ErrorKind::StorageFull
        || err.kind() == std::io::ErrorKind::QuotaExceeded
    {
        return true;
    }
    chain_full(
        err.get_ref()
            .map(|e| e as &(dyn std::error::Error + 'static)),
    )
}

const ENOSPC: i32 = 28;
const EDQUOT: i32 = 122;

/// An error code of a full disk: SQLite's (extended) result codes as sqlx reports them, and
/// PostgreSQL's SQLSTATE.
fn storage_full_code(code: &str) -> bool {
    // SQLITE_IOERR (10) extended with WRITE (3), FSYNC (4), DIR_FSYNC (5), TRUNCATE (6),
    // SHMSIZE (19) and SHMMAP (21): the forms a write, a sync or a file's growth takes when
    // the disk has no room left (SQLite keeps the errno to itself).
    const IOERR_OF_A_FULL_DISK: [i64; 6] = [3, 4, 5, 6, 19, 21];
    if code == "53100" {
        return true; // PostgreSQL disk_full
    }
    let Ok(n) = code.parse::<i64>() else {
        return false;
    };
    let (primary, extended) = (n & 0xff, n >> 8);
    primary == 13 || (primary == 10 && IOERR_OF_A_FULL_DISK.contains(&extended))
}

fn storage_full_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("disk is full")
        || m.contains("no space left on device")
        || m.contains("disk quota exceeded")
}

/// Walks `first` and its sources for a file-system or database error of a full disk.
fn chain_full(first: Option<&(dyn std::error::Error + 'static)>) -> bool {
    let mut next = first;
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && (matches!(io.raw_os_error(), Some(ENOSPC | EDQUOT))
                || matches!(
                    io.kind(),
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                ))
        {
            return true;
        }
        if let Some(sql) = e.downcast_ref::<sqlx::Error>()
            && storage_full(sql)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// Times one store operation into `aiflow_store_query_duration_seconds{store, op}` when dropped.
/// Both labels are fixed names (a store and a method), so the label set stays bounded.
#[must_use = "the timer records when it is dropped"]
pub struct QueryTimer {
    store: &'static str,
    op: &'static str,
    started: std::time::Instant,
}

impl QueryTimer {
    pub fn new(store: &'static str, op: &'static str) -> Self {
        Self {
            store,
            op,
            started: std::time::Instant::now(),
        }
    }
}

impl Drop for QueryTimer {
    fn drop(&mut self) {
        metrics::histogram!("aiflow_store_query_duration_seconds", "store" => self.store, "op" => self.op)
            .record(self.started.elapsed().as_secs_f64());
    }
}

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database url {url:?} is not supported: use sqlite:PATH or postgres://…")]
    UnsupportedUrl { url: String },
    #[error("cannot connect to database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("cannot apply migrations to {url}: {source}")]
    Migrate {
        url: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// Which engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The engine named by a connection URL.
    pub fn of_url(url: &str) -> Result<Self, Error> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(Error::UnsupportedUrl { url: url.into() })
        }
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// The SQLite file of `url` is readable by its owner only (0600): it holds the jobs' token key
/// and the hashes of API tokens. A missing file is created so (SQLite gives its `-wal` and `-shm`
/// files the same mode); an existing one, and those files, are narrowed to it.
fn private_sqlite_file(url: &str) {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path.starts_with(':') {
        return; // in memory
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        if created.is_ok() {
            return;
        }
        for file in [
            path.to_string(),
            format!("{path}-wal"),
            format!("{path}-shm"),
        ] {
            if let Ok(meta) = std::fs::metadata(&file)
                && meta.permissions().mode() & 0o077 != 0
            {
                match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
                    Ok(()) => tracing::info!(file, "database file narrowed to mode 0600"),
                    Err(e) => {
                        tracing::warn!(file, error = %e, "cannot narrow the database file to mode 0600");
                    }
                }
            }
        }
    }
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct DbConfig {
    /// `sqlite:PATH` (created when missing) or `postgres://…`.
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl DbConfig {
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

/// A migrated connection pool and the engine behind it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
    /// The connection URL (for `LISTEN` connections on PostgreSQL).
    url: std::sync::Arc<str>,
}

impl Db {
    /// Connects, creating the SQLite file if needed, and applies all migrations.
    pub async fn connect(config: &DbConfig) -> Result<Self, Error> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(&config.url)?;
        let connect_err = |source| Error::Connect {
            url: redact(&config.url),
            source,
        };
        let url = match backend {
            Backend::Sqlite if !config.url.contains('?') => format!("{}?mode=rwc", config.url),
            _ => config.url.clone(),
        };
        if backend == Backend::Sqlite {
            private_sqlite_file(&config.url);
        }
        let options = AnyConnectOptions::from_str(&url)
            .map_err(connect_err)?
            .disable_statement_logging();
        let mut pool_options = AnyPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(config.acquire_timeout)
            .after_release(|conn, _meta| Box::pin(still_outside_transaction(conn)));
        if backend == Backend::Sqlite {
            pool_options = pool_options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    // WAL lets readers run beside the one writer; NORMAL sync is durable across
                    // process crashes (the WAL is fsynced at checkpoints).
                    // Checkpoints run beside the writers (see `checkpointer`), never inside a
                    // commit: no commit pays for one (tail latency).
                    sqlx::raw_sql(
                        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; \
                         PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON; \
                         PRAGMA wal_autocheckpoint=0;",
                    )
                    .execute(conn)
                    .await?;
                    Ok(())
                })
            });
        }
        let pool = pool_options
            .connect_with(options)
            .await
            .map_err(connect_err)?;
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&pool).await.map_err(|source| Error::Migrate {
            url: redact(&config.url),
            source,
        })?;
        if backend == Backend::Sqlite {
            tokio::spawn(checkpointer(pool.clone()));
        }
        tracing::debug!(backend = backend.name(), "database ready");
        Ok(Self {
            pool,
            backend,
            url: config.url.as_str().into(),
        })
    }

    /// `true` when a trivial query succeeds (for `/readyz`).
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Calls `wake` on every PostgreSQL `NOTIFY` on `channel` until `stop` (nothing on SQLite,
    /// where every writer is in this process). The listener reconnects after a failure; after a
    /// reconnect it wakes once, since notifications sent meanwhile are lost.
    pub fn on_notify(
        &self,
        channel: &'static str,
        wake: impl Fn() + Send + Sync + 'static,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        if self.backend != Backend::Postgres {
            return;
        }
        let url = self.url.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                let listened = async {
                    let mut l = sqlx::postgres::PgListener::connect(&url).await?;
                    l.listen(channel).await?;
                    wake();
                    loop {
                        l.recv().await?;
                        wake();
                    }
                    #[allow(unreachable_code)]
                    Ok::<(), sqlx::Error>(())
                };
                tokio::select! {
                    r = listened => {
                        if let Err(e) = r {
                            tracing::debug!(channel, error = %e, "LISTEN connection failed; again shortly");
                        }
                    }
                    _ = stop.wait_for(|s| *s) => return,
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
    }

    /// `true` when a small write commits (a full disk or a read-only store answers reads but
    /// not this).
    pub async fn ping_write(&self) -> bool {
        sqlx::query(
            "INSERT INTO aiflow_kv (k, v, updated_at) VALUES ('health.write_probe', '', $1) \
             ON CONFLICT (k) DO UPDATE SET updated_at = excluded.updated_at",
        )
        .bind(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
        )
        .execute(&self.pool)
        .await
        .is_ok()
    }
}

/// Whether a connection handed back to the pool may serve again: only outside any transaction.
///
/// A dropped transaction queues its `ROLLBACK`, which the ping runs first. When SQLite has
/// already rolled the transaction back by itself (it does on `SQLITE_FULL` and some I/O
/// errors), that `ROLLBACK` fails and sqlx keeps counting the transaction as open: the next
/// `BEGIN IMMEDIATE` on the connection is refused ("non-zero transaction depth"), and a plain
/// `begin` opens a `SAVEPOINT` whose rollback leaves a real transaction open, holding the
/// write lock and refusing the next `BEGIN`. On a full disk that turned storage errors of
/// unrelated requests into 500s and "database is locked". Such a connection is closed here
/// instead; a connection at depth 0 (every committed or never-begun one) costs nothing.
async fn still_outside_transaction(conn: &mut sqlx::AnyConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Connection as _;
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    conn.ping().await?;
    if conn.is_in_transaction() {
        tracing::warn!(
            "a database connection was left in a transaction its database had already ended; closing it"
        );
        return Ok(false);
    }
    Ok(true)
}

/// Moves the SQLite write-ahead log into the database every 200 ms with a passive checkpoint,
/// which never blocks a writer, until the pool is closed. Connections do not checkpoint on
/// their own (`wal_autocheckpoint=0`), so no commit waits for one.
async fn checkpointer(pool: AnyPool) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !pool.is_closed() {
        tick.tick().await;
        if let Err(e) = sqlx::raw_sql("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::debug!(error = %e, "wal checkpoint failed");
        }
    }
}

/// The URL without its password, for logs and errors.
#[must_use]
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((creds, host)) = rest.split_once('@')
        && let Some((user, _)) = creds.split_once(':')
    {
        return format!("{scheme}://{user}:***@{host}");
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_password() {
        assert_eq!(
            redact("postgres://u:secret@host/db"),
            "postgres://u:***@host/db"
        );
        assert_eq!(redact("sqlite:/tmp/x.db"), "sqlite:/tmp/x.db");
    }

    #[test]
    fn backend_from_url() {
        assert_eq!(Backend::of_url("sqlite:x.db").unwrap(), Backend::Sqlite);
        assert_eq!(
            Backend::of_url("postgres://127.0.0.1/test").unwrap(),
            Backend::Postgres
        );
        assert!(Backend::of_url("mysql://x").is_err());
    }

    fn db_err(code: &'static str, message: &'static str) -> sqlx::Error {
        testing::database_error(code, message)
    }

    #[test]
    fn every_form_of_a_full_disk_is_storage_full() {
        let enospc = || std::io::Error::from_raw_os_error(28);
        let full = [
            ("SQLITE_FULL", db_err("13", "database or disk is full")),
            ("SQLITE_IOERR_WRITE", db_err("778", "disk I/O error")),
            ("SQLITE_IOERR_FSYNC", db_err("1034", "disk I/O error")),
            ("SQLITE_IOERR_DIR_FSYNC", db_err("1290", "disk I/O error")),
            ("SQLITE_IOERR_TRUNCATE", db_err("1546", "disk I/O error")),
            ("SQLITE_IOERR_SHMSIZE", db_err("4874", "disk I/O error")),
            ("SQLITE_IOERR_SHMMAP", db_err("5386", "disk I/O error")),
            (
                "PostgreSQL disk_full",
                db_err("53100", "could not extend file"),
            ),
            (
                "PostgreSQL I/O error naming ENOSPC",
                db_err(
                    "58030",
                    "could not write to file \"pg_wal/xlogtemp.1\": No space left on device",
                ),
            ),
            ("ENOSPC", sqlx::Error::Io(enospc())),
            (
                "EDQUOT",
                sqlx::Error::Io(std::io::Error::from_raw_os_error(122)),
            ),
            (
                "ENOSPC wrapped in another I/O error",
                sqlx::Error::Io(std::io::Error::other(enospc())),
            ),
            (
                "a migration failed on a full disk",
                sqlx::Error::Migrate(Box::new(sqlx::migrate::MigrateError::Execute(db_err(
                    "13",
                    "database or disk is full",
                )))),
            ),
            (
                "a migration failed on a full WAL",
                sqlx::Error::Migrate(Box::new(sqlx::migrate::MigrateError::ExecuteMigration(
                    db_err("4874", "disk I/O error"),
                    1,
                ))),
            ),
        ];
        for (what, e) in &full {
            assert!(storage_full(e), "{what}: {e}");
        }
        assert!(storage_full_io(&enospc()));
        assert!(storage_full_io(&std::io::Error::other(enospc())));
        let not_full = [
            (
                "a constraint",
                db_err("2067", "UNIQUE constraint failed: t.name"),
            ),
            ("SQLITE_BUSY", db_err("5", "database is locked")),
            ("SQLITE_IOERR_READ", db_err("266", "disk I/O error")),
            (
                "SQLITE_CANTOPEN",
                db_err("14", "unable to open database file"),
            ),
            ("PostgreSQL unique", db_err("23505", "duplicate key")),
            ("row not found", sqlx::Error::RowNotFound),
            ("pool timed out", sqlx::Error::PoolTimedOut),
            (
                "permission denied",
                sqlx::Error::Io(std::io::Error::from_raw_os_error(13)),
            ),
        ];
        for (what, e) in &not_full {
            assert!(!storage_full(e), "{what}: {e}");
        }
        assert!(!storage_full_io(&std::io::Error::from_raw_os_error(5)));
    }

    /// A real SQLite database that cannot grow answers SQLITE_FULL, which is storage_full.
    #[tokio::test]
    async fn a_database_that_cannot_grow_is_storage_full() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&DbConfig::new(format!(
            "sqlite:{}",
            dir.path().join("full.db").display()
        )))
        .await
        .unwrap();
        let mut conn = db.pool.acquire().await.unwrap();
        sqlx::raw_sql("CREATE TABLE filler (x TEXT)")
            .execute(&mut *conn)
            .await
            .unwrap();
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "PRAGMA max_page_count = {}",
            pages + 2
        )))
        .execute(&mut *conn)
        .await
        .unwrap();
        let mut err = None;
        for _ in 0..100 {
            if let Err(e) = sqlx::query("INSERT INTO filler (x) VALUES ($1)")
                .bind("x".repeat(4000))
                .execute(&mut *conn)
                .await
            {
                err = Some(e);
                break;
            }
        }
        let err = err.expect("a database of a fixed page count fills up");
        assert!(storage_full(&err), "{err}");
    }

    /// A transaction SQLite has ended by itself (as it does on SQLITE_FULL) does not poison
    /// the pooled connection: the next write transaction on it begins.
    #[tokio::test]
    async fn a_transaction_the_database_ended_does_not_poison_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = DbConfig::new(format!("sqlite:{}", dir.path().join("t.db").display()));
        config.max_connections = 1;
        config.acquire_timeout = Duration::from_secs(5);
        let db = Db::connect(&config).await.unwrap();
        for round in 0..3 {
            let mut tx = db.pool.begin().await.unwrap();
            // What SQLite does on its own after a full disk: the transaction is gone, sqlx
            // still counts it.
            sqlx::raw_sql("ROLLBACK").execute(&mut *tx).await.unwrap();
            drop(tx);
            let mut tx = db
                .pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .unwrap_or_else(|e| panic!("round {round}: the next transaction begins: {e}"));
            sqlx::query(
                "INSERT INTO aiflow_kv (k, v, updated_at) VALUES ($1, '', 0) \
                 ON CONFLICT (k) DO UPDATE SET updated_at = excluded.updated_at + 1",
            )
            .bind(format!("probe.{round}"))
            .execute(&mut *tx)
            .await
            .unwrap();
            tx.commit().await.unwrap();
        }
        // And nothing is left open: another connection can write.
        assert!(db.ping_write().await);
    }
}
