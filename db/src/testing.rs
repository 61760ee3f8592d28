//! Fresh databases for tests: a temporary SQLite file, or a new PostgreSQL database on the
//! server named by `AIFLOW_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`), dropped
//! when the [`TestDb`] goes out of scope.

use std::net::ToSocketAddrs;
use std::time::Duration;

use sqlx::Connection;

use crate::{Db, DbConfig};

/// The admin URL of the test PostgreSQL server.
#[must_use]
pub fn postgres_admin_url() -> String {
    std::env::var("AIFLOW_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// `true` when something listens at the host and port of `url`. Prints a loud notice otherwise.
#[must_use]
pub fn server_reachable(what: &str, url: &str) -> bool {
    let hostport = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', '?'])
        .next()
        .unwrap_or_default();
    let hostport = hostport.rsplit_once('@').map_or(hostport, |(_, h)| h);
    let reachable = hostport.to_socket_addrs().ok().is_some_and(|mut addrs| {
        addrs.any(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
    });
    if !reachable {
        eprintln!(
            "\n!!!!!!!! SKIPPED: {what} is not reachable at {url}; this test needs the real server !!!!!!!!\n"
        );
    }
    reachable
}

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDb {
    pub db: Db,
    pub url: String,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    Sqlite(#[allow(dead_code)] tempfile_dir::TempDir),
    Postgres { admin_url: String, name: String },
}

/// A minimal temporary directory (removed on drop) so the crate needs no extra dependency.
mod tempfile_dir {
    #[derive(Debug)]
    pub(super) struct TempDir(pub(super) std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl TestDb {
    /// A new SQLite database in a temporary directory.
    pub async fn sqlite() -> TestDb {
        let dir = std::env::temp_dir().join(format!("aiflow-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        let url = format!("sqlite:{}", dir.join("aiflow.db").display());
        let db = Db::connect(&DbConfig::new(&url))
            .await
            .expect("sqlite test db");
        TestDb {
            db,
            url,
            cleanup: Cleanup::Sqlite(tempfile_dir::TempDir(dir)),
        }
    }

    /// A new, migrated PostgreSQL database, or `None` (after a loud notice) when no server runs.
    pub async fn postgres() -> Option<TestDb> {
        let admin_url = postgres_admin_url();
        if !server_reachable("PostgreSQL", &admin_url) {
            return None;
        }
        let name = format!("aiflow_t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect to the test PostgreSQL server");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        admin.close().await.ok();
        let url = replace_db_name(&admin_url, &name);
        let db = Db::connect(&DbConfig::new(&url))
            .await
            .expect("postgres test db");
        Some(TestDb {
            db,
            url,
            cleanup: Cleanup::Postgres { admin_url, name },
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Cleanup::Postgres { admin_url, name } = &self.cleanup {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs inside a test's runtime: do the async clean-up on a thread of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut admin)
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

/// `postgres://host/db?x` with the database name replaced.
fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let (scheme, rest) = base.split_once("://").unwrap_or(("postgres", base));
    let host = rest.split('/').next().unwrap_or(rest);
    match query {
        Some(q) => format!("{scheme}://{host}/{name}?{q}"),
        None => format!("{scheme}://{host}/{name}"),
    }
}

/// A database error as a driver reports it: a code and a message.
#[derive(Debug)]
struct DbErr(&'static str, &'static str);

impl std::fmt::Display for DbErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "(code: {}) {}", self.0, self.1)
    }
}

impl std::error::Error for DbErr {}

impl sqlx::error::DatabaseError for DbErr {
    fn message(&self) -> &str {
        self.1
    }
    fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
        Some(self.0.into())
    }
    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }
    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }
    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }
    fn kind(&self) -> sqlx::error::ErrorKind {
        sqlx::error::ErrorKind::Other
    }
}

/// A database error as a driver reports it, with `code` and `message` (an SQLite result code
/// such as `"13"` or a PostgreSQL SQLSTATE): for tests of how errors are answered.
#[must_use]
pub fn database_error(code: &'static str, message: &'static str) -> sqlx::Error {
    sqlx::Error::Database(Box::new(DbErr(code, message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_database_name() {
        assert_eq!(
            replace_db_name("postgres://127.0.0.1:5432/test", "x"),
            "postgres://127.0.0.1:5432/x"
        );
        assert_eq!(
            replace_db_name("postgres://u@h/test?sslmode=disable", "y"),
            "postgres://u@h/y?sslmode=disable"
        );
    }
}
