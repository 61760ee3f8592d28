//! The relay that publishes outbox rows to the event bus.

use std::sync::Arc;
use std::time::Duration;

use aiflow_notification::EventBus;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Store;
use crate::error::{Error, Result};

/// How often the relay sweeps for rows without a wake-up (rows a crash left behind). Writers
/// wake it: in this process directly, on PostgreSQL from any server by `NOTIFY`.
const POLL: Duration = Duration::from_secs(60);

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
        let notify = store.outbox_notify.clone();
        let wake = notify.clone();
        store
            .db()
            .on_notify(OUTBOX_CHANNEL, move || wake.notify_one(), shutdown.clone());
        let mut backoff =
            aiflow_api::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        // Once the sender is gone nobody can ask us to stop: keep relaying until the runtime ends.
        let mut watching = true;
        loop {
            match relay_once(&store, bus.as_ref()).await {
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(published = n, "meta events relayed");
                    }
                    backoff.reset();
                }
                Err(e) => {
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
                () = notify.notified() => {}
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
