//! Which scheduler replica schedules: the leader lease of the distributed shape.
//!
//! Every `aiflow server` on one PostgreSQL serves the API; one of them is the scheduling leader.
//! A replica becomes leader by taking a PostgreSQL advisory lock on a connection of its own
//! (`pg_advisory_lock` waits inside PostgreSQL: a standby does not poll). The lock goes with the
//! connection: when the leader dies its connection closes and the next standby gets the lock at
//! once; a leader that hangs stops pinging its lock connection, PostgreSQL ends the idle session
//! after [`IDLE_TIMEOUT`] and the lock passes on.
//!
//! Fencing: on taking the lock the new leader raises `scheduler_leader.epoch`, and every commit
//! of scheduler state first reads the epoch (`FOR SHARE`, so the raise waits for commits in
//! flight) and gives up when it is no longer its own. A paused old leader that wakes up after
//! losing the lock therefore cannot commit anything, and without a commit it acts on nothing.

use std::time::Duration;

use aiflow_db::{Backend, Db};
use sqlx::AnyConnection;
use sqlx::Row;

/// The advisory lock key ("aiflow" in ASCII).
const LOCK_KEY: i64 = 0x6169_666c_6f77;
/// PostgreSQL ends the lock session when the leader has not pinged it for this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(6);
/// How often the leader pings its lock session.
const PING_EVERY: Duration = Duration::from_secs(2);

/// What a replica is doing now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The only scheduler (embedded shape, SQLite).
    Single,
    /// Waiting for the lease; forwards scheduler requests to the leader.
    Standby,
    /// Holds the lease with this epoch.
    Leader { epoch: i64 },
}

impl Role {
    /// `single`, `standby` or `leader`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Role::Single => "single",
            Role::Standby => "standby",
            Role::Leader { .. } => "leader",
        }
    }
}

/// The leader as recorded in `scheduler_leader`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct LeaderInfo {
    pub epoch: i64,
    /// Name of the replica (host name and process id unless configured).
    pub holder: String,
    /// Its API address.
    pub url: Option<String>,
    /// When it took the lease.
    pub since: chrono::DateTime<chrono::Utc>,
}

/// The recorded leader, if any replica ever led.
pub async fn current(db: &Db) -> Result<Option<LeaderInfo>, sqlx::Error> {
    let row = sqlx::query("SELECT epoch, holder, url, since FROM scheduler_leader WHERE id = 1")
        .fetch_optional(&db.pool)
        .await?;
    Ok(row.map(|r| LeaderInfo {
        epoch: r.get(0),
        holder: r.get(1),
        url: r.get(2),
        since: chrono::DateTime::from_timestamp_micros(r.get(3)).unwrap_or_default(),
    }))
}

/// A held lease: keeps the lock connection alive and tells when it is lost.
pub struct Lease {
    pub epoch: i64,
    lost: tokio::sync::watch::Receiver<bool>,
}

impl Lease {
    /// Resolves once the lease is lost (the lock connection failed).
    pub async fn lost(&mut self) {
        let _ = self.lost.wait_for(|l| *l).await;
    }
}

/// Waits (inside PostgreSQL, without polling) until this replica holds the lock, then raises
/// the epoch and records itself as the leader.
pub async fn acquire(db: &Db, holder: &str, url: &str) -> Result<Lease, sqlx::Error> {
    debug_assert_eq!(db.backend, Backend::Postgres);
    let mut conn: AnyConnection = db.pool.acquire().await?.detach();
    // A hung leader loses its lock: its session ends after IDLE_TIMEOUT without a ping.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET idle_session_timeout = {}",
        IDLE_TIMEOUT.as_millis()
    )))
    .execute(&mut conn)
    .await?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(LOCK_KEY)
        .execute(&mut conn)
        .await?;
    let epoch: i64 = sqlx::query(
        "INSERT INTO scheduler_leader (id, epoch, holder, url, since) VALUES (1, 1, $1, $2, $3) \
         ON CONFLICT (id) DO UPDATE SET epoch = scheduler_leader.epoch + 1, \
         holder = excluded.holder, url = excluded.url, since = excluded.since RETURNING epoch",
    )
    .bind(holder)
    .bind(url)
    .bind(chrono::Utc::now().timestamp_micros())
    .fetch_one(&mut conn)
    .await?
    .get(0);
    let (tx, lost) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(PING_EVERY);
        loop {
            every.tick().await;
            if tx.is_closed() {
                // The leader is gone; closing the connection releases the lock.
                return;
            }
            if let Err(e) = sqlx::query("SELECT 1").execute(&mut conn).await {
                tracing::error!(error = %e, "the scheduling lease connection failed");
                let _ = tx.send(true);
                return;
            }
        }
    });
    Ok(Lease { epoch, lost })
}

/// Inside a commit: `true` while `epoch` is still the leader's (see the module notes).
pub(crate) async fn still_leader(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    epoch: i64,
) -> Result<bool, sqlx::Error> {
    let current: Option<i64> =
        sqlx::query("SELECT epoch FROM scheduler_leader WHERE id = 1 FOR SHARE")
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| r.get(0));
    Ok(current == Some(epoch))
}

/// This replica's name: `AIFLOW_NODE`, else host name and process id.
#[must_use]
pub fn node_name() -> String {
    std::env::var("AIFLOW_NODE").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into());
        format!("{host}-{}", std::process::id())
    })
}
