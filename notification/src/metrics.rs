//! Metrics of the event buses, through the `metrics` facade (the `aiflow` binary installs the
//! Prometheus recorder; without one these calls do nothing). Labels: the backend (`sqlite`,
//! `postgres`, `nats`) and the store operation, never keys.

use futures::StreamExt;
use metrics::counter;

use crate::EventStream;

/// `n` events newly stored (a duplicate under an idempotency key is not counted).
pub(crate) fn published(backend: &'static str, n: usize) {
    if n > 0 {
        counter!("aiflow_events_published_total", "backend" => backend).increment(n as u64);
    }
}

/// Counts each event handed to a subscriber.
pub(crate) fn counted(stream: EventStream, backend: &'static str) -> EventStream {
    let delivered = counter!("aiflow_events_delivered_total", "backend" => backend);
    Box::pin(stream.inspect(move |item| {
        if item.is_ok() {
            delivered.increment(1);
        }
    }))
}
