//! A background event publisher for long-running jobs.
//!
//! ```no_run
//! # async fn run() -> Result<(), aiflow_sdk::publisher::PublishError> {
//! use aiflow_sdk::api::NewEvent;
//! use aiflow_sdk::Publisher;
//!
//! // AIFLOW_URL / AIFLOW_TOKEN from the environment, default settings.
//! let publisher = Publisher::from_env();
//! publisher.send(NewEvent::new("model/fraud", "v7").event_type("MODEL_VERSION_CREATED"))?;
//! publisher.flush().await?; // everything sent so far is stored
//! # Ok(()) }
//! ```
//!
//! - `send` never waits for the network: it validates the event and puts it into a bounded
//!   buffer ([`PublisherConfig::buffer`] events). A full buffer is an error that hands the event
//!   back ([`PublishError::BufferFull`]); nothing is dropped silently.
//! - A background task sends the buffer in batches (up to [`PublisherConfig::max_batch`]
//!   events, after at most [`PublisherConfig::linger`]), in order.
//! - When the server is away (connection errors, 5xx, 408, 429) the batch is retried with
//!   exponential backoff until it is stored; every event carries an idempotency key (the
//!   caller's, or one the publisher makes), so a retry after a lost answer stores nothing twice.
//! - Events the server refuses (other 4xx) are kept with the server's error and returned by
//!   the next [`Publisher::flush`] or [`Publisher::close`], and [`Publisher::stats`] counts them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use aiflow_api::NewEvent;
use aiflow_api::event::EventLimits;
use tokio::sync::{mpsc, oneshot};

use crate::client::{Client, Error};

/// Settings of a [`Publisher`].
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// Most events per request (default 500).
    pub max_batch: usize,
    /// Longest wait for more events before a partial batch is sent (default 5 ms).
    pub linger: Duration,
    /// Most events held (queued or being sent) before `send` refuses (default 100,000).
    pub buffer: usize,
    /// First retry delay (default 100 ms), doubled up to `max_backoff` (default 10 s).
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Limits checked before an event is buffered (the server's defaults).
    pub limits: EventLimits,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        Self {
            max_batch: 500,
            linger: Duration::from_millis(5),
            buffer: 100_000,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            limits: EventLimits::default(),
        }
    }
}

/// An event the server refused, and why.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub event: NewEvent,
    pub error: String,
}

/// Why events were not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The buffer is full (the server has been away for a while); the event is handed back.
    #[error("publisher buffer is full ({capacity} events); the event was not queued")]
    BufferFull {
        capacity: usize,
        event: Box<NewEvent>,
    },
    /// The event breaks a limit; nothing was queued.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The server refused these events.
    #[error("the server refused {} event(s): {}", .0.len(), .0.first().map_or("", |r| r.error.as_str()))]
    Rejected(Vec<Rejected>),
    /// The publisher has stopped (after `close`).
    #[error("publisher is closed")]
    Closed,
    /// `close` ran out of time; these events were never stored.
    #[error("{} event(s) could not be sent before the deadline", .0.len())]
    Unsent(Vec<NewEvent>),
}

/// Counters of a publisher.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Events stored by the server.
    pub sent: u64,
    /// Events held right now (queued or in flight).
    pub pending: usize,
    /// Events the server refused.
    pub rejected: u64,
    /// Failed attempts (each one retried).
    pub retries: u64,
}

#[derive(Debug, Default)]
struct Shared {
    pending: AtomicUsize,
    sent: AtomicU64,
    rejected: AtomicU64,
    retries: AtomicU64,
}

enum Cmd {
    Event(NewEvent),
    Flush(oneshot::Sender<Vec<Rejected>>),
    Close(Duration, oneshot::Sender<(Vec<Rejected>, Vec<NewEvent>)>),
}

/// A background, batching, retrying event publisher. Cheap to clone; all clones feed one
/// background task, which stops after [`Publisher::close`] or when the last clone is dropped
/// (after sending what it holds).
#[derive(Debug, Clone)]
pub struct Publisher {
    tx: mpsc::UnboundedSender<Cmd>,
    shared: Arc<Shared>,
    capacity: usize,
    limits: EventLimits,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cmd::Event(_) => "Event",
            Cmd::Flush(_) => "Flush",
            Cmd::Close(..) => "Close",
        })
    }
}

/// Inside a job (`AIFLOW_EXECUTION` set), an event whose context names no execution gets
/// `context.execution` = the job's execution, so the scheduler routes it to that execution
/// only. A context the caller set (or one that is not an object) is kept as it is.
#[must_use]
pub fn with_job_execution(event: NewEvent) -> NewEvent {
    match std::env::var("AIFLOW_EXECUTION") {
        Ok(id) if !id.is_empty() => add_execution(event, &id),
        _ => event,
    }
}

fn add_execution(mut event: NewEvent, id: &str) -> NewEvent {
    match &mut event.context {
        None => event.context = Some(serde_json::json!({ "execution": id })),
        Some(serde_json::Value::Object(map)) => {
            map.entry("execution")
                .or_insert_with(|| serde_json::Value::String(id.to_string()));
        }
        Some(_) => {}
    }
    event
}

impl Publisher {
    /// A publisher configured from `AIFLOW_URL` and `AIFLOW_TOKEN` ([`Client::from_env`]).
    /// Must be called inside a tokio runtime.
    #[must_use]
    pub fn from_env() -> Self {
        Self::new(Client::from_env(), PublisherConfig::default())
    }

    /// A publisher sending through `client`. Must be called inside a tokio runtime.
    #[must_use]
    pub fn new(client: Client, config: PublisherConfig) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        let capacity = config.buffer.max(1);
        let limits = config.limits;
        let worker = Worker {
            client,
            config,
            shared: shared.clone(),
            prefix: idempotency_prefix(),
            next_id: 0,
            rejected: Vec::new(),
        };
        tokio::spawn(worker.run(rx));
        Self {
            tx,
            shared,
            capacity,
            limits,
        }
    }

    /// Queues an event without waiting. Fails when the event is invalid or the buffer is full
    /// (the event is handed back), or after `close`.
    pub fn send(&self, event: NewEvent) -> Result<(), PublishError> {
        let event = with_job_execution(event);
        event
            .validate(&self.limits)
            .map_err(|e| PublishError::Invalid {
                field: e.field,
                message: e.message,
            })?;
        let reserved = self
            .shared
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            });
        if reserved.is_err() {
            return Err(PublishError::BufferFull {
                capacity: self.capacity,
                event: Box::new(event),
            });
        }
        self.tx.send(Cmd::Event(event)).map_err(|_| {
            self.shared.pending.fetch_sub(1, Ordering::AcqRel);
            PublishError::Closed
        })
    }

    /// Waits until every event queued before this call is stored or refused; returns the
    /// refused ones (since the previous flush) as [`PublishError::Rejected`]. While the server
    /// is away this waits (wrap it in `tokio::time::timeout` to bound it).
    pub async fn flush(&self) -> Result<(), PublishError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Flush(reply))
            .map_err(|_| PublishError::Closed)?;
        let rejected = rx.await.map_err(|_| PublishError::Closed)?;
        if rejected.is_empty() {
            Ok(())
        } else {
            Err(PublishError::Rejected(rejected))
        }
    }

    /// Sends what is buffered, for at most `deadline`, then stops the background task. Events
    /// refused or still unsent are returned in the error.
    pub async fn close(&self, deadline: Duration) -> Result<(), PublishError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Close(deadline, reply))
            .map_err(|_| PublishError::Closed)?;
        let (rejected, unsent) = rx.await.map_err(|_| PublishError::Closed)?;
        if !unsent.is_empty() {
            Err(PublishError::Unsent(unsent))
        } else if !rejected.is_empty() {
            Err(PublishError::Rejected(rejected))
        } else {
            Ok(())
        }
    }

    /// Counters: sent, pending, rejected, retries.
    #[must_use]
    pub fn stats(&self) -> PublisherStats {
        PublisherStats {
            sent: self.shared.sent.load(Ordering::Relaxed),
            pending: self.shared.pending.load(Ordering::Relaxed),
            rejected: self.shared.rejected.load(Ordering::Relaxed),
            retries: self.shared.retries.load(Ordering::Relaxed),
        }
    }
}

/// A prefix unique to this publisher: process id and start time.
fn idempotency_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    static INSTANCE: AtomicU64 = AtomicU64::new(0);
    format!(
        "pub-{}-{nanos:x}-{}",
        std::process::id(),
        INSTANCE.fetch_add(1, Ordering::Relaxed)
    )
}

struct Worker {
    client: Client,
    config: PublisherConfig,
    shared: Arc<Shared>,
    prefix: String,
    next_id: u64,
    rejected: Vec<Rejected>,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        let mut queue: VecDeque<NewEvent> = VecDeque::new();
        loop {
            // Wait for work when idle.
            if queue.is_empty() {
                match rx.recv().await {
                    Some(cmd) => {
                        if self.handle(cmd, &mut queue, &mut rx).await {
                            return;
                        }
                    }
                    None => return,
                }
            }
            // Linger briefly for a fuller batch.
            if queue.len() < self.config.max_batch {
                let linger = tokio::time::sleep(self.config.linger);
                tokio::pin!(linger);
                loop {
                    tokio::select! {
                        cmd = rx.recv() => match cmd {
                            Some(cmd) => {
                                if self.handle(cmd, &mut queue, &mut rx).await {
                                    return;
                                }
                                if queue.len() >= self.config.max_batch {
                                    break;
                                }
                            }
                            None => break,
                        },
                        () = &mut linger => break,
                    }
                }
            }
            self.send_batch(&mut queue, None).await;
            if rx.is_closed() && queue.is_empty() {
                return;
            }
        }
    }

    fn enqueue(&mut self, mut e: NewEvent, queue: &mut VecDeque<NewEvent>) {
        if e.idempotency_key.is_none() {
            self.next_id += 1;
            e.idempotency_key = Some(format!("{}-{}", self.prefix, self.next_id));
        }
        queue.push_back(e);
    }

    /// Handles one command; `true` when the worker must stop.
    async fn handle(
        &mut self,
        cmd: Cmd,
        queue: &mut VecDeque<NewEvent>,
        rx: &mut mpsc::UnboundedReceiver<Cmd>,
    ) -> bool {
        match cmd {
            Cmd::Event(e) => {
                self.enqueue(e, queue);
                false
            }
            Cmd::Flush(reply) => {
                // The channel is in order: every event sent before the flush is queued now.
                while !queue.is_empty() {
                    self.send_batch(queue, None).await;
                }
                let _ = reply.send(std::mem::take(&mut self.rejected));
                false
            }
            Cmd::Close(deadline, reply) => {
                rx.close();
                while let Some(cmd) = rx.recv().await {
                    match cmd {
                        Cmd::Event(e) => self.enqueue(e, queue),
                        Cmd::Flush(r) => {
                            let _ = r.send(Vec::new());
                        }
                        Cmd::Close(_, r) => {
                            let _ = r.send((Vec::new(), Vec::new()));
                        }
                    }
                }
                let until = tokio::time::Instant::now() + deadline;
                while !queue.is_empty() && tokio::time::Instant::now() < until {
                    self.send_batch(queue, Some(until)).await;
                }
                let unsent: Vec<NewEvent> = queue.drain(..).collect();
                self.shared
                    .pending
                    .fetch_sub(unsent.len(), Ordering::AcqRel);
                let _ = reply.send((std::mem::take(&mut self.rejected), unsent));
                true
            }
        }
    }

    /// Sends the front batch until it is stored, refused, or `until` passes.
    async fn send_batch(
        &mut self,
        queue: &mut VecDeque<NewEvent>,
        until: Option<tokio::time::Instant>,
    ) {
        let n = queue.len().min(self.config.max_batch);
        if n == 0 {
            return;
        }
        let batch: Vec<NewEvent> = queue.iter().take(n).cloned().collect();
        let mut backoff =
            aiflow_api::backoff::Backoff::new(self.config.initial_backoff, self.config.max_backoff);
        loop {
            match self.client.events().publish_batch(&batch).await {
                Ok(_) => {
                    queue.drain(..n);
                    self.shared.sent.fetch_add(n as u64, Ordering::Relaxed);
                    self.shared.pending.fetch_sub(n, Ordering::AcqRel);
                    return;
                }
                Err(e) if retryable(&e) => {
                    self.shared.retries.fetch_add(1, Ordering::Relaxed);
                    // A server that says how long to wait (`Retry-After`) is believed.
                    let delay = e.wait_before_retry(backoff.next_delay());
                    tracing::warn!(error = %e, events = n, backoff_ms = delay.as_millis() as u64, "publish failed, retrying");
                    if until.is_some_and(|u| tokio::time::Instant::now() + delay >= u) {
                        return;
                    }
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    // The batch is atomic: find the refused events by sending one at a time.
                    tracing::warn!(error = %e, events = n, "server refused a batch");
                    let events: Vec<NewEvent> = queue.drain(..n).collect();
                    self.shared.pending.fetch_sub(n, Ordering::AcqRel);
                    for ev in events {
                        self.send_one(ev).await;
                    }
                    return;
                }
            }
        }
    }

    async fn send_one(&mut self, event: NewEvent) {
        let mut backoff =
            aiflow_api::backoff::Backoff::new(self.config.initial_backoff, self.config.max_backoff);
        loop {
            match self.client.events().publish(&event).await {
                Ok(_) => {
                    self.shared.sent.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(e) if retryable(&e) => {
                    self.shared.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(e.wait_before_retry(backoff.next_delay())).await;
                }
                Err(e) => {
                    self.shared.rejected.fetch_add(1, Ordering::Relaxed);
                    self.rejected.push(Rejected {
                        event,
                        error: e.to_string(),
                    });
                    return;
                }
            }
        }
    }
}

/// Worth retrying: the server was not reached, or said "later".
fn retryable(e: &Error) -> bool {
    match e {
        Error::Connect { .. } => true,
        Error::Api { status, .. } => *status >= 500 || *status == 408 || *status == 429,
        _ => false,
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_from_a_job_name_its_execution_unless_the_caller_did() {
        let plain = add_execution(NewEvent::new("k", "v"), "e1");
        assert_eq!(plain.context, Some(serde_json::json!({"execution": "e1"})));
        let named =
            NewEvent::new("k", "v").context(serde_json::json!({"execution": "other", "x": 1}));
        assert_eq!(
            add_execution(named, "e1").context,
            Some(serde_json::json!({"execution": "other", "x": 1}))
        );
        let other = NewEvent::new("k", "v").context(serde_json::json!({"x": 1}));
        assert_eq!(
            add_execution(other, "e1").context,
            Some(serde_json::json!({"execution": "e1", "x": 1}))
        );
        let list = NewEvent::new("k", "v").context(serde_json::json!([1]));
        assert_eq!(
            add_execution(list, "e1").context,
            Some(serde_json::json!([1]))
        );
    }

    /// A small HTTP server on a local port: the first `refusals` requests to `/api/v1/events`
    /// are answered `status` with `Retry-After: 1`, the rest stored (offsets from 1). Answers
    /// its address and when each request came.
    async fn refusing_server(
        status: u16,
        refusals: usize,
    ) -> (String, Arc<std::sync::Mutex<Vec<std::time::Instant>>>) {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            let offset = Arc::new(AtomicU64::new(0));
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let (log, offset) = (log.clone(), offset.clone());
                tokio::spawn(async move {
                    let mut conn = BufReader::new(sock);
                    loop {
                        let mut line = String::new();
                        if conn.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let mut len = 0usize;
                        loop {
                            let mut h = String::new();
                            conn.read_line(&mut h).await.unwrap();
                            if h.trim().is_empty() {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':')
                                && k.eq_ignore_ascii_case("content-length")
                            {
                                len = v.trim().parse().unwrap();
                            }
                        }
                        let mut body = vec![0u8; len];
                        conn.read_exact(&mut body).await.unwrap();
                        assert!(line.starts_with("POST /api/v1/events "), "{line}");
                        let n = {
                            let mut seen = log.lock().unwrap();
                            seen.push(std::time::Instant::now());
                            seen.len()
                        };
                        let (head, answer) = if n <= refusals {
                            (
                                format!("{status} Refused\r\nRetry-After: 1"),
                                serde_json::json!({"error": {"code": "unavailable", "message": "busy"}}),
                            )
                        } else {
                            let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
                            let one = |e: &serde_json::Value| {
                                let o = offset.fetch_add(1, Ordering::Relaxed) + 1;
                                serde_json::json!({
                                    "offset": o, "namespace": "default", "key": e["key"],
                                    "value": e["value"], "event_type": "UNDEFINED",
                                    "created_at": "2026-12-06T00:00:00Z",
                                })
                            };
                            let stored = match &sent {
                                serde_json::Value::Array(events) => {
                                    serde_json::Value::Array(events.iter().map(one).collect())
                                }
                                e => one(e),
                            };
                            ("200 OK".to_string(), stored)
                        };
                        let text = answer.to_string();
                        let resp = format!(
                            "HTTP/1.1 {head}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
                            text.len()
                        );
                        if conn.get_mut().write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (format!("http://{addr}"), seen)
    }

    /// The publisher waits as long as a 503 or 429 answer's `Retry-After` says (1 s here,
    /// ten times its own first backoff), then the retry is stored.
    #[tokio::test]
    async fn the_publisher_waits_as_long_as_retry_after_says() {
        for status in [503, 429] {
            let (url, seen) = refusing_server(status, 1).await;
            let publisher = Publisher::new(
                Client::new(&url),
                PublisherConfig {
                    initial_backoff: Duration::from_millis(100),
                    ..PublisherConfig::default()
                },
            );
            let started = std::time::Instant::now();
            publisher.send(NewEvent::new("k", "v")).unwrap();
            tokio::time::timeout(Duration::from_secs(10), publisher.flush())
                .await
                .expect("the flush ends")
                .expect("the event is stored after the retry");
            let seen = seen.lock().unwrap().clone();
            assert_eq!(seen.len(), 2, "{status}: refused once, then stored");
            let waited = seen[1] - seen[0];
            assert!(
                waited >= Duration::from_millis(950) && waited < Duration::from_secs(3),
                "{status}: the retry came {waited:?} after the refusal, not about 1 s"
            );
            let stats = publisher.stats();
            assert_eq!(
                (stats.sent, stats.retries, stats.pending),
                (1, 1, 0),
                "{status}"
            );
            assert!(started.elapsed() >= Duration::from_millis(950));
        }
    }

    /// A single call answered 429 or 503 says how long the server asked to wait.
    #[tokio::test]
    async fn a_refused_call_carries_retry_after() {
        for status in [429, 503] {
            let (url, _) = refusing_server(status, 1).await;
            let client = Client::new(&url);
            let e = client
                .events()
                .publish(&NewEvent::new("k", "v"))
                .await
                .unwrap_err();
            assert_eq!(e.status(), Some(status));
            assert_eq!(e.retry_after(), Some(Duration::from_secs(1)), "{e}");
            assert_eq!(
                e.wait_before_retry(Duration::from_millis(100)),
                Duration::from_secs(1)
            );
            // Then it goes through.
            let stored = client
                .events()
                .publish(&NewEvent::new("k", "v"))
                .await
                .unwrap();
            assert_eq!(stored.offset.0, 1);
        }
    }
}
