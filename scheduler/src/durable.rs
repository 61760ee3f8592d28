//! The scheduler's durable state (tables `scheduler_*`, migration `…000400_scheduler_state`).
//!
//! Everything the loop changes while handling a batch of commands (job states and attempts,
//! rule memory, `why` records, status events, trigger clocks, the event offset) is written here
//! in **one** transaction, and only then do its actions take effect (a process started or
//! stopped, a status event published). A crash before the commit loses the whole batch, and the
//! events in it are read again from the committed offset and handled again from the same
//! state; a crash after the commit finds the actions recorded, so none is repeated.

use std::collections::HashMap;

use aiflow_api::{Event, NewEvent};
use aiflow_db::Db;
use chrono::Utc;
use sqlx::Row;

use crate::rules::RuleMemory;
use crate::state::JobState;

/// `scheduler_jobs.flags`: start a new attempt once the running one has stopped.
pub(crate) const FLAG_RESTART: i64 = 1;
/// `scheduler_jobs.flags`: a stop was asked for the running attempt.
pub(crate) const FLAG_STOP: i64 = 2;

/// Why a commit failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommitError {
    /// Another replica took the scheduling lease: this one must not act any more.
    #[error("another scheduler replica holds the lease now")]
    Fenced,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The key of the committed event offset in `aiflow_kv`.
pub(crate) const OFFSET_KEY: &str = "scheduler.committed_offset";

/// One running execution.
pub(crate) struct ExecRow {
    pub id: String,
    pub workflow: String,
    pub version: i64,
    pub stopping: bool,
    pub trigger_event: Option<Event>,
}

/// One job of a running execution.
pub(crate) struct JobRow {
    pub state: JobState,
    pub attempt: u32,
    pub row: Option<String>,
    pub flags: i64,
    pub cause: Option<Event>,
    /// When a RETRYING job's next attempt is due (µs since the epoch).
    pub retry_at: Option<i64>,
}

/// A rule evaluation that changed something (`execution why`).
pub(crate) struct Record {
    pub execution: String,
    pub job: String,
    pub rule: usize,
    pub offset: Option<i64>,
    pub signal: String,
    pub met: String,
    pub fired: Option<String>,
    pub decision: String,
    pub explanation: String,
}

/// An event-triggered start waiting for its `delay_s`.
#[derive(Clone)]
pub(crate) struct Delayed {
    pub id: String,
    pub workflow: String,
    pub fire_at: chrono::DateTime<Utc>,
    pub trigger: serde_json::Value,
    pub event: Event,
}

/// A change to the execution rows the API serves (`workflow_executions`, `job_executions`),
/// committed with the scheduler's own state so the two never disagree.
pub(crate) enum MetaWrite {
    ExecCreate {
        id: String,
        workflow_id: i64,
        version: i64,
        state: &'static str,
        trigger: Option<serde_json::Value>,
    },
    ExecState {
        id: String,
        state: &'static str,
        /// Why it ended so, kept in the execution's `properties.reason`.
        reason: Option<String>,
    },
    JobCreate {
        row: String,
        execution: String,
        job: String,
        attempt: u32,
        state: &'static str,
    },
    JobState {
        row: String,
        state: JobState,
        /// The exit code of the attempt's command, once it ended (kept when `None`).
        exit_code: Option<i64>,
    },
}

/// One transaction's worth of changes.
#[derive(Default)]
pub(crate) struct Batch {
    pub meta: Vec<MetaWrite>,
    pub execs: Vec<ExecRow>,
    pub jobs: Vec<(String, String, JobRow)>,
    pub rules: Vec<(String, usize, RuleMemory)>,
    pub finished: Vec<String>,
    pub records: Vec<Record>,
    pub statuses: Vec<NewEvent>,
    pub kv: Vec<(String, String)>,
    pub delayed_add: Vec<Delayed>,
    pub delayed_done: Vec<String>,
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.meta.is_empty()
            && self.execs.is_empty()
            && self.jobs.is_empty()
            && self.rules.is_empty()
            && self.finished.is_empty()
            && self.records.is_empty()
            && self.statuses.is_empty()
            && self.kv.is_empty()
            && self.delayed_add.is_empty()
            && self.delayed_done.is_empty()
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("scheduler state serialises")
}

/// Writes `batch` in one transaction; returns the status events with their outbox ids, in
/// order, for the publisher.
pub(crate) async fn commit(
    db: &Db,
    batch: &Batch,
    fence: Option<i64>,
) -> Result<Vec<i64>, CommitError> {
    let now = Utc::now().timestamp_micros();
    let mut tx = db.pool.begin().await?;
    if let Some(epoch) = fence
        && !crate::leader::still_leader(&mut tx, epoch).await?
    {
        return Err(CommitError::Fenced);
    }
    for w in &batch.meta {
        write_meta(&mut tx, w, now).await?;
    }
    for e in &batch.execs {
        sqlx::query(
            "INSERT INTO scheduler_executions (execution_id, workflow, workflow_version, stopping, \
             trigger_event, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (execution_id) DO UPDATE SET stopping = excluded.stopping, \
             updated_at = excluded.updated_at",
        )
        .bind(&e.id)
        .bind(&e.workflow)
        .bind(e.version)
        .bind(i64::from(e.stopping))
        .bind(e.trigger_event.as_ref().map(json))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    for (exec, job, j) in &batch.jobs {
        sqlx::query(
            "INSERT INTO scheduler_jobs (execution_id, job, state, attempt, row_id, flags, cause, \
             retry_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (execution_id, job) DO UPDATE SET state = excluded.state, \
             attempt = excluded.attempt, row_id = excluded.row_id, flags = excluded.flags, \
             cause = excluded.cause, retry_at = excluded.retry_at",
        )
        .bind(exec)
        .bind(job)
        .bind(j.state.as_str())
        .bind(i64::from(j.attempt))
        .bind(j.row.clone())
        .bind(j.flags)
        .bind(j.cause.as_ref().map(json))
        .bind(j.retry_at)
        .execute(&mut *tx)
        .await?;
    }
    for (exec, rule, memory) in &batch.rules {
        sqlx::query(
            "INSERT INTO scheduler_rules (execution_id, rule_index, memory) VALUES ($1, $2, $3) \
             ON CONFLICT (execution_id, rule_index) DO UPDATE SET memory = excluded.memory",
        )
        .bind(exec)
        .bind(*rule as i64)
        .bind(json(memory))
        .execute(&mut *tx)
        .await?;
    }
    for r in &batch.records {
        sqlx::query(
            "INSERT INTO rule_evaluations (execution_id, job_name, rule_index, event_offset, \
             signal, met, fired, decision, explanation, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&r.execution)
        .bind(&r.job)
        .bind(r.rule as i64)
        .bind(r.offset)
        .bind(&r.signal)
        .bind(&r.met)
        .bind(r.fired.clone())
        .bind(&r.decision)
        .bind(&r.explanation)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    for id in &batch.finished {
        for table in ["scheduler_jobs", "scheduler_rules", "scheduler_executions"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE execution_id = $1"
            )))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
    }
    for (k, v) in &batch.kv {
        kv_set(&mut *tx, k, v).await?;
    }
    for d in &batch.delayed_add {
        sqlx::query(
            "INSERT INTO scheduler_delayed (id, workflow, fire_at, trig, event) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&d.id)
        .bind(&d.workflow)
        .bind(d.fire_at.timestamp_micros())
        .bind(json(&d.trigger))
        .bind(json(&d.event))
        .execute(&mut *tx)
        .await?;
    }
    for id in &batch.delayed_done {
        sqlx::query("DELETE FROM scheduler_delayed WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    // Each status event carries an idempotency key, so a publish repeated after a crash
    // (between publishing and deleting the outbox row) is a no-op on the bus.
    let mut ids = Vec::with_capacity(batch.statuses.len());
    for event in &batch.statuses {
        let id: i64 =
            sqlx::query_scalar("INSERT INTO scheduler_outbox (event) VALUES ($1) RETURNING id")
                .bind(json(event))
                .fetch_one(&mut *tx)
                .await?;
        ids.push(id);
    }
    tx.commit().await?;
    Ok(ids)
}

async fn write_meta(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    w: &MetaWrite,
    now: i64,
) -> Result<(), sqlx::Error> {
    let q = match w {
        MetaWrite::ExecCreate {
            id,
            workflow_id,
            version,
            state,
            trigger,
        } => sqlx::query(
            "INSERT INTO workflow_executions (id, workflow_id, workflow_version, state, \
             trigger_info, properties, created_at, started_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, '{}', $6, $6, $6)",
        )
        .bind(id)
        .bind(*workflow_id)
        .bind(*version)
        .bind(*state)
        .bind(trigger.as_ref().map(ToString::to_string))
        .bind(now),
        MetaWrite::ExecState { id, state, reason } => sqlx::query(
            "UPDATE workflow_executions SET state = $1, updated_at = $2, ended_at = $2, \
             properties = COALESCE($4, properties) WHERE id = $3",
        )
        .bind(*state)
        .bind(now)
        .bind(id)
        .bind(
            reason
                .as_ref()
                .map(|r| serde_json::json!({ "reason": r }).to_string()),
        ),
        MetaWrite::JobCreate {
            row,
            execution,
            job,
            attempt,
            state,
        } => sqlx::query(
            "INSERT INTO job_executions (id, workflow_execution_id, job_name, attempt, state, \
             worker, properties, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'local', '{}', $6, $6)",
        )
        .bind(row)
        .bind(execution)
        .bind(job)
        .bind(i64::from(*attempt))
        .bind(*state)
        .bind(now),
        MetaWrite::JobState {
            row,
            state,
            exit_code,
        } => {
            let started = (*state == JobState::Running).then_some(now);
            let ended = state.is_terminal().then_some(now);
            sqlx::query(
                "UPDATE job_executions SET state = $1, updated_at = $2, \
                 started_at = COALESCE($3, started_at), ended_at = COALESCE($4, ended_at), \
                 exit_code = COALESCE($6, exit_code) WHERE id = $5",
            )
            .bind(state.as_str())
            .bind(now)
            .bind(started)
            .bind(ended)
            .bind(row)
            .bind(*exit_code)
        }
    };
    q.execute(&mut **tx).await.map(drop)
}

/// Status events committed but not yet published, oldest first.
pub(crate) async fn pending_statuses(db: &Db) -> Result<Vec<(i64, NewEvent)>, sqlx::Error> {
    let rows = sqlx::query("SELECT id, event FROM scheduler_outbox ORDER BY id")
        .fetch_all(&db.pool)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id: i64 = r.try_get("id")?;
        let text: String = r.try_get("event")?;
        match serde_json::from_str(&text) {
            Ok(e) => out.push((id, e)),
            Err(e) => tracing::warn!(outbox = id, error = %e, "unreadable status event dropped"),
        }
    }
    Ok(out)
}

/// Forgets published status events (every id up to `id`).
pub(crate) async fn published(db: &Db, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM scheduler_outbox WHERE id <= $1")
        .bind(id)
        .execute(&db.pool)
        .await
        .map(drop)
}

/// What a previous process left: running executions with their jobs and rule memory.
pub(crate) struct Saved {
    pub execs: Vec<ExecRow>,
    pub jobs: HashMap<String, Vec<(String, JobRow)>>,
    pub rules: HashMap<String, Vec<(usize, RuleMemory)>>,
    pub delayed: Vec<Delayed>,
}

fn parse<T: serde::de::DeserializeOwned>(text: Option<String>, what: &str) -> Option<T> {
    let text = text?;
    match serde_json::from_str(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(what, error = %e, "unreadable scheduler state ignored");
            None
        }
    }
}

pub(crate) async fn load(db: &Db) -> Result<Saved, sqlx::Error> {
    let mut execs = Vec::new();
    for r in sqlx::query(
        "SELECT execution_id, workflow, workflow_version, stopping, trigger_event \
         FROM scheduler_executions ORDER BY updated_at",
    )
    .fetch_all(&db.pool)
    .await?
    {
        execs.push(ExecRow {
            id: r.try_get("execution_id")?,
            workflow: r.try_get("workflow")?,
            version: r.try_get("workflow_version")?,
            stopping: r.try_get::<i64, _>("stopping")? != 0,
            trigger_event: parse(r.try_get("trigger_event")?, "trigger event"),
        });
    }
    let mut jobs: HashMap<String, Vec<(String, JobRow)>> = HashMap::new();
    for r in sqlx::query(
        "SELECT execution_id, job, state, attempt, row_id, flags, cause, retry_at FROM scheduler_jobs",
    )
    .fetch_all(&db.pool)
    .await?
    {
        let state: String = r.try_get("state")?;
        let Ok(state) = state.parse::<JobState>() else {
            tracing::warn!(state, "unknown job state in the scheduler state ignored");
            continue;
        };
        jobs.entry(r.try_get("execution_id")?).or_default().push((
            r.try_get("job")?,
            JobRow {
                state,
                attempt: u32::try_from(r.try_get::<i64, _>("attempt")?).unwrap_or(0),
                row: r.try_get("row_id")?,
                flags: r.try_get("flags")?,
                cause: parse(r.try_get("cause")?, "job cause"),
                retry_at: r.try_get("retry_at")?,
            },
        ));
    }
    let mut rules: HashMap<String, Vec<(usize, RuleMemory)>> = HashMap::new();
    for r in sqlx::query("SELECT execution_id, rule_index, memory FROM scheduler_rules")
        .fetch_all(&db.pool)
        .await?
    {
        let index: i64 = r.try_get("rule_index")?;
        if let Some(memory) = parse(r.try_get("memory")?, "rule memory") {
            rules
                .entry(r.try_get("execution_id")?)
                .or_default()
                .push((usize::try_from(index).unwrap_or(usize::MAX), memory));
        }
    }
    let mut delayed = Vec::new();
    for r in sqlx::query("SELECT id, workflow, fire_at, trig, event FROM scheduler_delayed")
        .fetch_all(&db.pool)
        .await?
    {
        let (Some(trigger), Some(event)) = (
            parse(r.try_get("trig")?, "delayed trigger"),
            parse(r.try_get("event")?, "delayed event"),
        ) else {
            continue;
        };
        delayed.push(Delayed {
            id: r.try_get("id")?,
            workflow: r.try_get("workflow")?,
            fire_at: chrono::DateTime::from_timestamp_micros(r.try_get("fire_at")?)
                .unwrap_or_else(Utc::now),
            trigger,
            event,
        });
    }
    Ok(Saved {
        execs,
        jobs,
        rules,
        delayed,
    })
}

const KV_SET: &str = "INSERT INTO aiflow_kv (k, v, updated_at) VALUES ($1, $2, $3) \
     ON CONFLICT (k) DO UPDATE SET v = excluded.v, updated_at = excluded.updated_at";

/// Stores one value of `aiflow_kv` (on the pool or inside a transaction).
pub(crate) async fn kv_set<'e, E>(executor: E, key: &str, value: &str) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(KV_SET)
        .bind(key)
        .bind(value)
        .bind(Utc::now().timestamp_micros())
        .execute(executor)
        .await
        .map(drop)
}

/// One value of `aiflow_kv`.
pub(crate) async fn kv_get(db: &Db, key: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT v FROM aiflow_kv WHERE k = $1")
        .bind(key)
        .fetch_optional(&db.pool)
        .await
}

/// Kills what is left of a job attempt's processes from a previous server process: every
/// process whose environment names the attempt (`AIFLOW_JOB_EXECUTION=<row>`), with its
/// process group. Returns how many processes were found.
#[cfg(target_os = "linux")]
pub(crate) fn kill_leftovers(row: &str) -> usize {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::{Pid, getpgid};
    let needle = format!("AIFLOW_JOB_EXECUTION={row}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let own = getpgid(None).ok();
    let mut found = 0;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ
            .split(|b| *b == 0)
            .any(|var| var == needle.as_bytes())
        {
            found += 1;
            let pid = Pid::from_raw(pid);
            match getpgid(Some(pid)) {
                Ok(pgid) if pgid.as_raw() > 1 && Some(pgid) != own => {
                    let _ = killpg(pgid, Signal::SIGKILL);
                }
                _ => {
                    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                }
            }
        }
    }
    found
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn kill_leftovers(_row: &str) -> usize {
    0
}
