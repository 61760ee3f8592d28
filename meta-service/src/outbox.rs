//! The relay that publishes outbox rows to the event bus.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use aiflow_notification::EventBus;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::Store;
use crate::error::{Error, Result};

/// How often the relay sweeps for rows without a wake-up (rows a crash left behind). Writers
/// wake it: in this process directly, on PostgreSQL from any server by `NOTIFY`.
const POLL: Duration = Duration::from_secs(60);
/// How long a commit that wrote outbox rows waits for them to be on the bus before it returns.
/// Past it (a slow bus) the change stands and the relay sends its events later.
const ANNOUNCE_WAIT: Duration = Duration::from_secs(2);

/// What the writers of this process and its relay share, so that a change that announces
/// events returns once they are on the bus: whoever registers a model version and then lists
/// the events of `model/<name>` (or waits for the workflow it starts) sees its event.
#[derive(Debug)]
pub(crate) struct RelayState {
    /// Wakes the relay after a commit that wrote outbox rows.
    wake: Notify,
    /// Commits of this process that wrote outbox rows, counted.
    written: AtomicU64,
    /// `true` while a relay runs in this process; without one nobody waits.
    running: AtomicBool,
    progress: watch::Sender<Progress>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// `written` as read at the start of the relay's last complete pass: every row committed
    /// before it is on the bus (sent by this relay or, on PostgreSQL, by another server's).
    passed: u64,
    /// The last pass failed (the bus is down): writers do not wait meanwhile.
    failing: bool,
}

impl Default for RelayState {
    fn default() -> Self {
        Self {
            wake: Notify::new(),
            written: AtomicU64::new(0),
            running: AtomicBool::new(false),
            progress: watch::Sender::new(Progress::default()),
        }
    }
}

impl RelayState {
    /// After a commit that wrote outbox rows: wakes the relay and waits (at most
    /// [`ANNOUNCE_WAIT`]) until a pass that started after the commit has ended.
    pub(crate) async fn committed(&self) {
        let mine = self.written.fetch_add(1, Ordering::SeqCst) + 1;
        self.wake.notify_one();
        if !self.running.load(Ordering::SeqCst) {
            return;
        }
        let mut rx = self.progress.subscribe();
        let sent = tokio::time::timeout(
            ANNOUNCE_WAIT,
            rx.wait_for(|p| p.passed >= mine || p.failing),
        )
        .await;
        if sent.is_err() {
            tracing::debug!(
                wait_ms = ANNOUNCE_WAIT.as_millis() as u64,
                "meta events not relayed yet; the relay sends them later"
            );
        }
    }
}

/// Marks the relay of this process as running until dropped.
struct Running(Arc<RelayState>);

impl Running {
    fn new(state: Arc<RelayState>) -> Self {
        state.running.store(true, Ordering::SeqCst);
        Self(state)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::SeqCst);
        // Release whoever still waits.
        self.0.progress.send_modify(|p| p.failing = true);
    }
}

/// The PostgreSQL `NOTIFY` channel of new outbox rows.
pub(crate) const OUTBOX_CHANNEL: &str = "aiflow_outbox";
const BATCH: i64 = 256;

/// Publishes every unsent outbox row once, oldest first; returns how many were published.
/// Each event carries the idempotency key `meta-outbox-<id>`, so a crash between publishing
/// and marking the row sent only leads to a harmless re-publish.
pub async fn relay_once(store: &Store, bus: &dyn EventBus) -> Result<usize> {
    let mut total = 0;
    loop {
        let rows = store.pending_outbox(BATCH).await?;
        if rows.is_empty() {
            return Ok(total);
        }
        for row in &rows {
            let event = bus
                .publish(row.to_event())
                .await
                .map_err(|e| Error::Bus(e.to_string()))?;
            store.mark_outbox_sent(row.id, event.offset.0).await?;
            tracing::debug!(outbox = row.id, key = %row.key, event_type = %row.event_type, offset = event.offset.0, "meta event published");
            total += 1;
        }
    }
}

/// Runs the relay until `shutdown` turns `true`: publishes at start (recovering rows left by
/// a crash), after every commit that wrote outbox rows, and every couple of seconds.
pub fn spawn_outbox_relay(
    store: Store,
    bus: Arc<dyn EventBus>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let state = store.relay.clone();
        let _running = Running::new(state.clone());
        let wake = state.clone();
        store.db().on_notify(
            OUTBOX_CHANNEL,
            move || wake.wake.notify_one(),
            shutdown.clone(),
        );
        let mut backoff =
            aiflow_api::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        // Once the sender is gone nobody can ask us to stop: keep relaying until the runtime ends.
        let mut watching = true;
        loop {
            // Rows of every commit counted so far are visible to this pass.
            let seen = state.written.load(Ordering::SeqCst);
            match relay_once(&store, bus.as_ref()).await {
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(published = n, "meta events relayed");
                    }
                    state.progress.send_modify(|p| {
                        p.passed = p.passed.max(seen);
                        p.failing = false;
                    });
                    backoff.reset();
                }
                Err(e) => {
                    state.progress.send_modify(|p| p.failing = true);
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "meta event relay failed");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        r = shutdown.changed(), if watching => watching = r.is_ok(),
                    }
                    if *shutdown.borrow() {
                        break;
                    }
                    continue;
                }
            }
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                () = state.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                r = shutdown.changed(), if watching => watching = r.is_ok(),
            }
            if *shutdown.borrow() {
                break;
            }
        }
        tracing::debug!("meta event relay stopped");
    })
}
