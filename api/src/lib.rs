//! Request and response types of the AI Flow HTTP API (`/api/v1`).
//!
//! They live apart from the server so the SDK and the CLI reuse them without pulling in the
//! server. Every type derives serde and utoipa's `ToSchema`, so the OpenAPI document and the
//! wire format cannot drift apart.

pub mod error;
pub mod meta;
pub mod page;

pub use error::{ApiError, ErrorBody};
pub use page::{Page, PageQuery};
