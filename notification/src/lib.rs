//! AI Flow notification service: durable events and replay-then-live listening.
//!
//! - [`EventBus`]: the contract (publish, publish a batch, list, count, latest offset,
//!   subscribe with replay then live delivery).
//! - [`EmbeddedBus`]: an `events` table through sqlx (SQLite by default, or PostgreSQL) with a
//!   single writer task doing group commit and an in-process fan-out for live delivery.
//! - [`NatsBus`]: one NATS JetStream stream; offset = stream sequence.
//! - [`routes`]: the HTTP routes of `/api/v1/events` (axum, documented with utoipa).

mod bus;
mod embedded;
mod http;
mod metrics;
mod nats;

pub use bus::{EventBus, EventStream};
pub use embedded::{EmbeddedBus, EmbeddedConfig, Retention};
pub use http::{HttpConfig, PublishAnswer, PublishBody, routes, routes_with};
pub use nats::{NatsBus, NatsConfig, escape_token, subject_for, unescape_token};

use aiflow_api::event::InvalidEvent;
use aiflow_api::server::HttpError;

/// Errors of the notification service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The event or request is not acceptable; `field` names the part at fault.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("event store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("event bus is unavailable: {0}")]
    Unavailable(String),
}

impl From<InvalidEvent> for Error {
    fn from(e: InvalidEvent) -> Self {
        Error::Invalid {
            field: e.field,
            message: e.message,
        }
    }
}

impl Error {
    /// An [`Error::Invalid`] naming `field`.
    #[must_use]
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Errors as HTTP answers: invalid input is a 400 naming the field, an unreachable backend a
/// 503, a full disk a 507 `storage_full`, anything else a 500 whose details go to the log only.
impl From<Error> for HttpError {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid { field, message } => HttpError::invalid(field, message),
            Error::Unavailable(m) => {
                tracing::warn!(error = %m, "event bus unavailable");
                HttpError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the event bus is unavailable",
                )
            }
            Error::Store(err) if aiflow_db::storage_full(&err) => {
                tracing::error!(error = %err, "event store is full");
                HttpError::new(
                    axum::http::StatusCode::INSUFFICIENT_STORAGE,
                    "storage_full",
                    "the event store has no space left on its disk; nothing was stored",
                )
            }
            Error::Store(err) => {
                tracing::error!(error = %err, "event store failed");
                HttpError::internal("the event store failed")
            }
        }
    }
}
