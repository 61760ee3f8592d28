//! The embedded bus: an `events` table through sqlx (SQLite or PostgreSQL, one SQL code path)
//! and an in-process fan-out for live delivery.
//!
//! **Writes.** One writer task per bus owns every write. Publishers hand it their events over a
//! channel; it takes whatever is queued (up to [`EmbeddedConfig::max_group_events`]) and stores
//! it in one transaction (group commit), then answers each publisher. Offsets come from the
//! one-row `event_log` counter, read and advanced inside that transaction: the single writer makes
//! offsets strictly increasing in commit order within a process, and the counter's row lock does
//! the same across processes sharing one PostgreSQL database (a second writer waits for the first
//! to commit before it reads the counter). Retention deletes rows and never touches the counter,
//! so offsets are never renumbered nor reused.
//!
//! **Reads.** A subscriber first subscribes to the live fan-out (a `tokio::sync::broadcast` of
//! committed groups), then replays the table from its start offset, then follows the live
//! channel, skipping what it already delivered (offset ≤ its cursor): no gap, no duplicate. A
//! subscriber that falls behind gets `Lagged` and goes back to reading the table from its cursor;
//! publishers never wait for subscribers. Live delivery covers events published through this
//! process; events written by another process sharing the database are seen on replay only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aiflow_api::event::{EventLimits, validate_batch};
use aiflow_api::{Event, EventFilter, NewEvent, Offset};
use aiflow_db::{Backend, Db};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AssertSqlSafe, Connection, Row};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::{Error, EventBus, EventStream};

/// Events per page when a subscriber replays the table.
const REPLAY_PAGE: usize = 1000;
/// Rows per `INSERT` statement.
const INSERT_CHUNK: usize = 2000;

const INSERT_SQLITE: &str = "INSERT INTO events \
    (seq, namespace, event_key, value, event_type, sender, context, created_at, idempotency_key) \
    SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
    value ->> 6, value ->> 7, value ->> 8 FROM json_each($1)";

const INSERT_POSTGRES: &str = "INSERT INTO events \
    (seq, namespace, event_key, value, event_type, sender, context, created_at, idempotency_key) \
    SELECT (e ->> 0)::BIGINT, e ->> 1, e ->> 2, e ->> 3, e ->> 4, e ->> 5, e ->> 6, \
    (e ->> 7)::BIGINT, e ->> 8 FROM json_array_elements($1::json) AS e";
/// A group without idempotency keys on SQLite, in one round trip: `$1` = number of events, `$2`
/// = their rows as a JSON array of `[namespace, key, value, event_type, sender, context]`, `$3`
/// = `created_at` (microseconds). Answers the new `last_offset`; the group's events get the
/// offsets `last_offset - $1 + 1 ..= last_offset` in row order.
const GROUP_SQLITE: &str = "BEGIN IMMEDIATE; \
    UPDATE event_log SET last_offset = last_offset + $1 WHERE id = 1 RETURNING last_offset; \
    INSERT INTO events (seq, namespace, event_key, value, event_type, sender, context, created_at) \
    SELECT (SELECT last_offset FROM event_log WHERE id = 1) - $1 + key + 1, \
    value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, $3 \
    FROM json_each($2); \
    COMMIT;";
/// Keys per `IN (…)` lookup of idempotency keys.
const LOOKUP_CHUNK: usize = 500;

/// How long events are kept. Keep everything by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Delete events older than this.
    pub max_age: Option<Duration>,
    /// Keep at most this many of the newest events.
    pub max_count: Option<u64>,
}

impl Retention {
    fn is_enabled(&self) -> bool {
        self.max_age.is_some() || self.max_count.is_some()
    }
}

/// Settings of an [`EmbeddedBus`].
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// Size limits of value and context.
    pub limits: EventLimits,
    /// Most events stored in one group commit (default 8192).
    pub max_group_events: usize,
    /// Publish requests that may wait for the writer (default 16384); more make publishers wait.
    pub queue_capacity: usize,
    /// Committed groups kept for live subscribers (default 4096); a subscriber further behind
    /// reads the table instead.
    pub live_capacity: usize,
    /// Retention (default: keep everything).
    pub retention: Retention,
    /// How often retention runs when enabled (default one minute).
    pub retention_interval: Duration,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            limits: EventLimits::default(),
            max_group_events: 8192,
            queue_capacity: 16384,
            live_capacity: 4096,
            retention: Retention::default(),
            retention_interval: Duration::from_secs(60),
        }
    }
}

/// The embedded event bus. Cheap to clone; the writer task stops when the last clone (and the
/// last subscription) is dropped.
#[derive(Debug, Clone)]
pub struct EmbeddedBus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Db,
    limits: EventLimits,
    requests: mpsc::Sender<Request>,
    live: broadcast::Sender<Arc<[Event]>>,
}

type Reply<T> = oneshot::Sender<Result<T, Error>>;

#[derive(Debug)]
enum Request {
    Publish {
        events: Vec<NewEvent>,
        reply: Reply<Vec<Event>>,
    },
    Retention {
        reply: Reply<u64>,
    },
}

impl EmbeddedBus {
    /// Starts the bus on a migrated database (see `aiflow_db::Db::connect`) and spawns its writer
    /// task on the current tokio runtime.
    pub async fn start(db: Db, config: EmbeddedConfig) -> Result<Self, Error> {
        // Fail early when the schema is missing.
        sqlx::query("SELECT last_offset FROM event_log WHERE id = 1")
            .fetch_one(&db.pool)
            .await?;
        let (requests, rx) = mpsc::channel(config.queue_capacity.max(1));
        let (live, _) = broadcast::channel(config.live_capacity.max(16));
        let writer = Writer {
            db: db.clone(),
            conn: None,
            live: live.clone(),
            max_group_events: config.max_group_events.max(1),
            retention: config.retention,
        };
        tokio::spawn(writer.run(rx, config.retention_interval));
        tracing::info!(backend = db.backend.name(), "embedded event bus started");
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                limits: config.limits,
                requests,
                live,
            }),
        })
    }

    /// Applies the retention settings now; returns how many events were deleted.
    pub async fn apply_retention(&self) -> Result<u64, Error> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Retention { reply }).await?;
        rx.await.map_err(|_| closed())?
    }

    async fn send(&self, request: Request) -> Result<(), Error> {
        self.inner
            .requests
            .send(request)
            .await
            .map_err(|_| closed())
    }

    async fn write(&self, events: Vec<NewEvent>) -> Result<Vec<Event>, Error> {
        validate_batch(&events, &self.inner.limits)?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        self.send(Request::Publish { events, reply }).await?;
        rx.await.map_err(|_| closed())?
    }
}

fn closed() -> Error {
    Error::Unavailable("the embedded bus writer has stopped".into())
}

#[async_trait]
impl EventBus for EmbeddedBus {
    async fn publish(&self, event: NewEvent) -> Result<Event, Error> {
        let mut stored = self.write(vec![event]).await.map_err(unbatch_error)?;
        stored.pop().ok_or_else(closed)
    }

    async fn publish_batch(&self, events: Vec<NewEvent>) -> Result<Vec<Event>, Error> {
        self.write(events).await
    }

    async fn list(
        &self,
        filter: &EventFilter,
        after: Offset,
        limit: usize,
    ) -> Result<Vec<Event>, Error> {
        list(&self.inner.db, filter, after, limit).await
    }

    async fn count(&self, filter: &EventFilter, after: Offset) -> Result<u64, Error> {
        let _timer = aiflow_db::QueryTimer::new("events", "count");
        let mut q = SqlFilter::new(self.inner.db.backend, filter);
        let sql = format!("SELECT COUNT(*) FROM events WHERE {}", q.clause);
        let mut query = sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql)).bind(after.0);
        for b in q.binds.drain(..) {
            query = query.bind(b);
        }
        let n = query.fetch_one(&self.inner.db.pool).await?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    async fn latest_offset(&self) -> Result<Offset, Error> {
        let _timer = aiflow_db::QueryTimer::new("events", "latest_offset");
        let n: i64 = sqlx::query_scalar("SELECT last_offset FROM event_log WHERE id = 1")
            .fetch_one(&self.inner.db.pool)
            .await?;
        Ok(Offset(n))
    }

    async fn subscribe(&self, filter: EventFilter, after: Offset) -> Result<EventStream, Error> {
        // Subscribe to live events *before* replaying, so nothing committed in between is missed.
        let mut live = self.inner.live.subscribe();
        let db = self.inner.db.clone();
        let stream = async_stream::try_stream! {
            let mut cursor = after;
            'replay: loop {
                loop {
                    let page = list(&db, &filter, cursor, REPLAY_PAGE).await?;
                    let full = page.len() == REPLAY_PAGE;
                    for event in page {
                        cursor = event.offset;
                        yield event;
                    }
                    if !full {
                        break;
                    }
                }
                loop {
                    match live.recv().await {
                        Ok(group) => {
                            for event in group.iter() {
                                if event.offset <= cursor {
                                    continue;
                                }
                                cursor = event.offset;
                                if filter.matches(event) {
                                    yield event.clone();
                                }
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            tracing::debug!(missed, cursor = cursor.0, "slow subscriber reads from storage");
                            continue 'replay;
                        }
                        Err(broadcast::error::RecvError::Closed) => {
                            Err(closed())?;
                        }
                    }
                }
            }
        };
        Ok(crate::metrics::counted(
            Box::pin(stream),
            self.inner.db.backend.name(),
        ))
    }

    async fn ping(&self) -> bool {
        self.inner.db.ping().await && !self.inner.requests.is_closed()
    }

    fn backend(&self) -> &'static str {
        self.inner.db.backend.name()
    }
}

/// A single event's validation error names its field without the `[0].` of the batch.
fn unbatch_error(e: Error) -> Error {
    match e {
        Error::Invalid { field, message } => Error::Invalid {
            field: field.strip_prefix("[0].").unwrap_or(&field).to_string(),
            message,
        },
        other => other,
    }
}

// ---- SQL ------------------------------------------------------------------------------------

const COLUMNS: &str = "seq, namespace, event_key, value, event_type, sender, context, created_at";

/// The `WHERE` clause of a filter; `$1` is always the offset (`seq > $1`).
struct SqlFilter {
    clause: String,
    binds: Vec<String>,
}

impl SqlFilter {
    fn new(backend: Backend, filter: &EventFilter) -> Self {
        let mut clause = String::from("seq > $1");
        let mut binds: Vec<String> = Vec::new();
        let param = |binds: &mut Vec<String>, v: String| {
            binds.push(v);
            format!("${}", binds.len() + 1)
        };
        if let Some(ns) = &filter.namespace {
            let p = param(&mut binds, ns.clone());
            clause.push_str(&format!(" AND namespace = {p}"));
        }
        if let Some(key) = &filter.key {
            if key.contains('*') {
                match backend {
                    // GLOB is case-sensitive (LIKE is not, on SQLite).
                    Backend::Sqlite => {
                        let p = param(&mut binds, sqlite_glob(key));
                        clause.push_str(&format!(" AND event_key GLOB {p}"));
                    }
                    Backend::Postgres => {
                        let p = param(&mut binds, postgres_like(key));
                        clause.push_str(&format!(" AND event_key LIKE {p} ESCAPE '\\'"));
                    }
                }
            } else {
                let p = param(&mut binds, key.clone());
                clause.push_str(&format!(" AND event_key = {p}"));
            }
        }
        if !filter.event_types.is_empty() {
            let ps: Vec<String> = filter
                .event_types
                .iter()
                .map(|t| param(&mut binds, t.clone()))
                .collect();
            clause.push_str(&format!(" AND event_type IN ({})", ps.join(", ")));
        }
        if let Some(sender) = &filter.sender {
            let p = param(&mut binds, sender.clone());
            clause.push_str(&format!(" AND sender = {p}"));
        }
        Self { clause, binds }
    }
}

/// Our `*` glob as an SQLite GLOB pattern: `?` and `[` are literal for us.
fn sqlite_glob(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 4);
    for c in pattern.chars() {
        match c {
            '?' => out.push_str("[?]"),
            '[' => out.push_str("[[]"),
            c => out.push(c),
        }
    }
    out
}

/// Our `*` glob as a PostgreSQL LIKE pattern with `\` as the escape character.
fn postgres_like(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 4);
    for c in pattern.chars() {
        match c {
            '*' => out.push('%'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

async fn list(
    db: &Db,
    filter: &EventFilter,
    after: Offset,
    limit: usize,
) -> Result<Vec<Event>, Error> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let _timer = aiflow_db::QueryTimer::new("events", "list");
    let mut q = SqlFilter::new(db.backend, filter);
    let sql = format!(
        "SELECT {COLUMNS} FROM events WHERE {} ORDER BY seq LIMIT {}",
        q.clause,
        limit.min(1_000_000)
    );
    let mut query = sqlx::query(AssertSqlSafe(sql)).bind(after.0);
    for b in q.binds.drain(..) {
        query = query.bind(b);
    }
    let rows = query.fetch_all(&db.pool).await?;
    rows.iter().map(event_of_row).collect()
}

fn event_of_row(row: &AnyRow) -> Result<Event, Error> {
    let context: Option<String> = row.try_get("context")?;
    let context = match context {
        Some(text) => Some(serde_json::from_str(&text).map_err(|e| {
            Error::Store(sqlx::Error::Decode(
                format!("context of a stored event is not JSON: {e}").into(),
            ))
        })?),
        None => None,
    };
    let micros: i64 = row.try_get("created_at")?;
    Ok(Event {
        offset: Offset(row.try_get("seq")?),
        namespace: row.try_get("namespace")?,
        key: row.try_get("event_key")?,
        value: row.try_get("value")?,
        event_type: row.try_get("event_type")?,
        sender: row.try_get("sender")?,
        context,
        created_at: DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or_default(),
    })
}

// ---- the writer task ------------------------------------------------------------------------

struct Writer {
    db: Db,
    /// The writer's own connection, kept between groups (re-acquired after an error).
    conn: Option<PoolConnection<Any>>,
    live: broadcast::Sender<Arc<[Event]>>,
    max_group_events: usize,
    retention: Retention,
}

struct Pending {
    events: Vec<NewEvent>,
    reply: Reply<Vec<Event>>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Request>, retention_interval: Duration) {
        let mut tick = tokio::time::interval(retention_interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut group: Vec<Pending> = Vec::new();
        loop {
            let first = tokio::select! {
                biased;
                r = rx.recv() => match r {
                    Some(r) => r,
                    None => break,
                },
                _ = tick.tick(), if self.retention.is_enabled() => {
                    if let Err(e) = self.retention().await {
                        tracing::warn!(error = %e, "event retention failed");
                    }
                    continue;
                }
            };
            // Let publishers that are about to enqueue do so, so they share this commit.
            tokio::task::yield_now().await;
            let mut next = Some(first);
            let mut size = 0;
            // Group commit: take whatever is queued right now.
            while let Some(request) = next.take() {
                match request {
                    Request::Publish { events, reply } => {
                        size += events.len();
                        group.push(Pending { events, reply });
                    }
                    Request::Retention { reply } => {
                        let _ = reply.send(self.retention().await);
                    }
                }
                if size < self.max_group_events {
                    next = rx.try_recv().ok();
                }
            }
            if !group.is_empty() {
                self.commit(std::mem::take(&mut group)).await;
            }
        }
        tracing::debug!("embedded event bus writer stopped");
    }

    /// Stores a group in one transaction; when that fails, each request alone, so one bad
    /// request cannot fail the others.
    async fn commit(&mut self, group: Vec<Pending>) {
        let started = std::time::Instant::now();
        let batches: Vec<&[NewEvent]> = group.iter().map(|p| p.events.as_slice()).collect();
        let stored = {
            let _timer = aiflow_db::QueryTimer::new("events", "append");
            self.store(&batches).await
        };
        match stored {
            Ok((results, fresh)) => {
                crate::metrics::published(self.db.backend.name(), fresh.len());
                tracing::trace!(
                    requests = group.len(),
                    events = fresh.len(),
                    micros = started.elapsed().as_micros() as u64,
                    "group committed"
                );
                if !fresh.is_empty() {
                    let _ = self.live.send(fresh.into());
                }
                for (p, r) in group.into_iter().zip(results) {
                    let _ = p.reply.send(Ok(r));
                }
            }
            Err(e) if group.len() > 1 => {
                tracing::warn!(error = %e, requests = group.len(), "group commit failed, retrying one by one");
                for p in group {
                    let result = match self.store(&[p.events.as_slice()]).await {
                        Ok((mut results, fresh)) => {
                            crate::metrics::published(self.db.backend.name(), fresh.len());
                            if !fresh.is_empty() {
                                let _ = self.live.send(fresh.into());
                            }
                            Ok(results.pop().unwrap_or_default())
                        }
                        Err(e) => Err(e),
                    };
                    let _ = p.reply.send(result);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "publish failed");
                if let Some(p) = group.into_iter().next() {
                    let _ = p.reply.send(Err(e));
                }
            }
        }
    }

    /// One transaction: the stored events of each request, and the newly stored ones in order.
    async fn store(
        &mut self,
        batches: &[&[NewEvent]],
    ) -> Result<(Vec<Vec<Event>>, Vec<Event>), Error> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            // Checkpoints run beside the writer (aiflow-db's checkpointer), not in a commit.
            None => self.db.pool.acquire().await?,
        };
        let result = Self::store_on(self.db.backend, &mut conn, batches).await;
        if result.is_ok() {
            self.conn = Some(conn);
        } else {
            // Do not hand a connection in an unknown state back to the pool.
            drop(conn.detach());
        }
        result
    }

    async fn store_on(
        backend: Backend,
        conn: &mut PoolConnection<Any>,
        batches: &[&[NewEvent]],
    ) -> Result<(Vec<Vec<Event>>, Vec<Event>), Error> {
        let keys: Vec<&str> = batches
            .iter()
            .flat_map(|b| b.iter())
            .filter_map(|e| e.idempotency_key.as_deref())
            .collect();
        let total: usize = batches.iter().map(|b| b.len()).sum();
        if keys.is_empty() {
            let rows = fast_rows(batches);
            if rows.len() <= FAST_PATH_MAX_BYTES {
                return Self::store_fast(backend, conn, batches, total, &rows).await;
            }
        }
        let mut tx = Connection::begin(&mut **conn).await?;
        // The counter row is locked first: writers of other processes wait here until we
        // commit, so offsets increase in commit order. Without idempotency keys every event is
        // new and one statement reserves the offsets.
        let advance = if keys.is_empty() { total } else { 0 };
        let reserved: i64 = sqlx::query_scalar(
            "UPDATE event_log SET last_offset = last_offset + $1 WHERE id = 1 RETURNING last_offset",
        )
        .bind(i64::try_from(advance).unwrap_or(i64::MAX))
        .fetch_one(&mut *tx)
        .await?;
        let last = reserved - i64::try_from(advance).unwrap_or(0);

        // Idempotency keys already stored.
        let mut known: HashMap<String, Event> = HashMap::new();
        for chunk in keys.chunks(LOOKUP_CHUNK) {
            let params: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT {COLUMNS}, idempotency_key FROM events WHERE idempotency_key IN ({})",
                params.join(", ")
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for k in chunk {
                query = query.bind(*k);
            }
            for row in query.fetch_all(&mut *tx).await? {
                let key: String = row.try_get("idempotency_key")?;
                known.insert(key, event_of_row(&row)?);
            }
        }

        let now = Utc::now();
        let micros = now.timestamp_micros();
        let created_at = DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or(now);
        let mut next = last;
        let mut results = Vec::with_capacity(batches.len());
        let mut fresh: Vec<Event> = Vec::new();
        let mut fresh_keys: Vec<Option<&str>> = Vec::new();
        for batch in batches {
            let mut stored = Vec::with_capacity(batch.len());
            for e in *batch {
                if let Some(k) = e.idempotency_key.as_deref()
                    && let Some(existing) = known.get(k)
                {
                    stored.push(existing.clone());
                    continue;
                }
                next += 1;
                let event = Event {
                    offset: Offset(next),
                    namespace: e.namespace_or_default().to_string(),
                    key: e.key.clone(),
                    value: e.value.clone(),
                    event_type: e.event_type_or_default().to_string(),
                    sender: e.sender.clone(),
                    context: e.context.clone(),
                    created_at,
                };
                if let Some(k) = e.idempotency_key.as_deref() {
                    known.insert(k.to_string(), event.clone());
                }
                stored.push(event.clone());
                fresh.push(event);
                fresh_keys.push(e.idempotency_key.as_deref());
            }
            results.push(stored);
        }

        // All new rows in one statement with one parameter: a JSON array of row arrays, unpacked
        // by the database (few, cached statements; no per-row binding).
        for (chunk, keys) in fresh
            .chunks(INSERT_CHUNK)
            .zip(fresh_keys.chunks(INSERT_CHUNK))
        {
            let rows: Vec<serde_json::Value> = chunk
                .iter()
                .zip(keys)
                .map(|(e, k)| {
                    serde_json::json!([
                        e.offset.0,
                        e.namespace,
                        e.key,
                        e.value,
                        e.event_type,
                        e.sender,
                        e.context.as_ref().map(ToString::to_string),
                        micros,
                        k,
                    ])
                })
                .collect();
            let rows = serde_json::Value::Array(rows).to_string();
            let sql = match backend {
                Backend::Sqlite => INSERT_SQLITE,
                Backend::Postgres => INSERT_POSTGRES,
            };
            sqlx::query(sql).bind(rows).execute(&mut *tx).await?;
        }
        if advance == 0 && next != last {
            sqlx::query("UPDATE event_log SET last_offset = $1 WHERE id = 1")
                .bind(next)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok((results, fresh))
    }

    /// Events without idempotency keys in one round trip: the transaction, the counter update
    /// and the insert are one multi-statement script. On SQLite it is [`GROUP_SQLITE`], prepared
    /// once and kept in the connection's statement cache, with the rows bound as one JSON text.
    /// On PostgreSQL (whose extended protocol takes one statement at a time) the rows are
    /// inlined as a JSON string literal (quotes doubled; an `E''` literal with backslashes
    /// doubled too, so the text cannot end the literal whatever `standard_conforming_strings`
    /// says).
    async fn store_fast(
        backend: Backend,
        conn: &mut PoolConnection<Any>,
        batches: &[&[NewEvent]],
        total: usize,
        rows: &str,
    ) -> Result<(Vec<Vec<Event>>, Vec<Event>), Error> {
        let now = Utc::now();
        let micros = now.timestamp_micros();
        let created_at = DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or(now);
        let answer = match backend {
            // One statement kept prepared on the writer's connection: nothing is parsed per
            // group, the rows come as one bound JSON text.
            Backend::Sqlite => {
                sqlx::query(GROUP_SQLITE)
                    .bind(i64::try_from(total).unwrap_or(i64::MAX))
                    .bind(rows)
                    .bind(micros)
                    .fetch_all(&mut **conn)
                    .await
            }
            Backend::Postgres => {
                let script = format!(
                    "BEGIN; \
                     UPDATE event_log SET last_offset = last_offset + {total} WHERE id = 1 RETURNING last_offset; \
                     INSERT INTO events (seq, namespace, event_key, value, event_type, sender, context, created_at) \
                     SELECT (SELECT last_offset FROM event_log WHERE id = 1) - {total} + t.n, \
                     t.e ->> 0, t.e ->> 1, t.e ->> 2, t.e ->> 3, t.e ->> 4, t.e ->> 5, {micros} \
                     FROM json_array_elements(E'{}'::json) WITH ORDINALITY AS t(e, n); COMMIT;",
                    rows.replace('\\', "\\\\").replace('\'', "''")
                );
                sqlx::raw_sql(AssertSqlSafe(script))
                    .fetch_all(&mut **conn)
                    .await
            }
        };
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                let _ = sqlx::raw_sql("ROLLBACK").execute(&mut **conn).await;
                return Err(e.into());
            }
        };
        let reserved: i64 = answer
            .first()
            .ok_or_else(|| Error::Store(sqlx::Error::RowNotFound))?
            .try_get(0)?;
        let mut next = reserved - i64::try_from(total).unwrap_or(0);
        let mut results = Vec::with_capacity(batches.len());
        let mut fresh = Vec::with_capacity(total);
        for batch in batches {
            let mut stored = Vec::with_capacity(batch.len());
            for e in *batch {
                next += 1;
                let event = Event {
                    offset: Offset(next),
                    namespace: e.namespace_or_default().to_string(),
                    key: e.key.clone(),
                    value: e.value.clone(),
                    event_type: e.event_type_or_default().to_string(),
                    sender: e.sender.clone(),
                    context: e.context.clone(),
                    created_at,
                };
                stored.push(event.clone());
                fresh.push(event);
            }
            results.push(stored);
        }
        Ok((results, fresh))
    }

    async fn retention(&mut self) -> Result<u64, Error> {
        let mut deleted = 0;
        if let Some(age) = self.retention.max_age {
            let cutoff =
                Utc::now().timestamp_micros() - i64::try_from(age.as_micros()).unwrap_or(i64::MAX);
            deleted += sqlx::query("DELETE FROM events WHERE created_at < $1")
                .bind(cutoff)
                .execute(&self.db.pool)
                .await?
                .rows_affected();
        }
        if let Some(n) = self.retention.max_count {
            let keep_from: Option<i64> =
                sqlx::query_scalar("SELECT seq FROM events ORDER BY seq DESC LIMIT 1 OFFSET $1")
                    .bind(i64::try_from(n).unwrap_or(i64::MAX))
                    .fetch_optional(&self.db.pool)
                    .await?;
            if let Some(seq) = keep_from {
                deleted += sqlx::query("DELETE FROM events WHERE seq <= $1")
                    .bind(seq)
                    .execute(&self.db.pool)
                    .await?
                    .rows_affected();
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, "event retention deleted old events");
        }
        Ok(deleted)
    }
}

/// Largest inlined JSON of the one-round-trip path; bigger groups bind it as a parameter.
const FAST_PATH_MAX_BYTES: usize = 4 * 1024 * 1024;

/// The rows of a group as a JSON array of `[namespace, key, value, event_type, sender, context]`.
fn fast_rows(batches: &[&[NewEvent]]) -> String {
    /// Serialises straight from the events (no `serde_json::Value` in between).
    struct Rows<'a>(&'a [&'a [NewEvent]]);
    impl serde::Serialize for Rows<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(self.0.iter().flat_map(|b| b.iter()).map(|e| {
                (
                    e.namespace_or_default(),
                    &e.key,
                    &e.value,
                    e.event_type_or_default(),
                    &e.sender,
                    e.context.as_ref().map(ToString::to_string),
                )
            }))
        }
    }
    let events: usize = batches.iter().map(|b| b.len()).sum();
    let mut out = Vec::with_capacity(64 * events + 2);
    // Writing into a Vec cannot fail, and strings and JSON values always serialise.
    let _ = serde_json::to_writer(&mut out, &Rows(batches));
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_escape_their_specials() {
        assert_eq!(sqlite_glob("a?b[c]*"), "a[?]b[[]c]*");
        assert_eq!(postgres_like("a_b%c\\*"), "a\\_b\\%c\\\\%");
    }
}
