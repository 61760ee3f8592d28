//! Request and response types of the AI Flow HTTP API (`/api/v1`).
//!
//! They live apart from the server so the SDK and the CLI reuse them without pulling in the
//! server. Every type derives serde and utoipa's `ToSchema`, so the OpenAPI document and the
//! wire format cannot drift apart.

pub mod auth;
pub mod backoff;
pub mod error;
pub mod event;
pub mod meta;
pub mod page;
pub mod scheduler;

pub use error::{ApiError, ErrorBody};
pub use event::{Event, EventFilter, NewEvent, Offset};
pub use page::{Page, PageQuery};

#[cfg(feature = "server")]
pub mod server;
