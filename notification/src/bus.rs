//! The event bus contract every backend implements.

use aiflow_api::{Event, EventFilter, NewEvent, Offset};
use futures::stream::BoxStream;

use crate::Error;

/// Events as a subscriber receives them: stored ones after the start offset, then live ones,
/// in offset order, each once.
pub type EventStream = BoxStream<'static, Result<Event, Error>>;

/// A durable, ordered event log with replay-then-live subscriptions.
///
/// Implementations: the embedded SQL bus (SQLite or PostgreSQL `events` table) and NATS
/// JetStream. One behavioural test suite runs against each.
#[async_trait::async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Stores one event and returns it with its offset. With an `idempotency_key` already
    /// stored, returns the stored event and stores nothing.
    async fn publish(&self, event: NewEvent) -> Result<Event, Error>;

    /// Stores all events or none, in order, with increasing offsets (consecutive on the
    /// embedded bus). Every event is validated before anything is stored; an invalid one fails
    /// the batch with an [`Error::Invalid`] naming `[index].field`.
    async fn publish_batch(&self, events: Vec<NewEvent>) -> Result<Vec<Event>, Error>;

    /// Stored events matching `filter` with offset > `after`, oldest first, at most `limit`.
    async fn list(
        &self,
        filter: &EventFilter,
        after: Offset,
        limit: usize,
    ) -> Result<Vec<Event>, Error>;

    /// How many stored events match `filter` with offset > `after`.
    async fn count(&self, filter: &EventFilter, after: Offset) -> Result<u64, Error>;

    /// The offset of the newest stored event (`Offset(0)` when there is none).
    async fn latest_offset(&self) -> Result<Offset, Error>;

    /// Every matching event with offset > `after`, then live ones: no gap, no duplicate.
    /// A slow subscriber never blocks publishers; it catches up from storage.
    async fn subscribe(&self, filter: EventFilter, after: Offset) -> Result<EventStream, Error>;

    /// `true` when the backend answers (for `/readyz`).
    async fn ping(&self) -> bool;

    /// `"sqlite"`, `"postgres"` or `"nats"`.
    fn backend(&self) -> &'static str;
}
