//! AI Flow meta service: the record of projects, datasets, workflows and their runs, models,
//! metrics and artifacts, with lineage between them and meta events through an outbox.
//!
//! - [`Store`]: every entity operation, one SQL code path for SQLite and PostgreSQL.
//! - [`routes`]: the REST routes (relative to `/api/v1`) with their OpenAPI description;
//!   [`run_routes`]: read routes of workflows and executions; [`docs_router`]: OpenAPI JSON
//!   and Swagger UI.
//! - [`spawn_outbox_relay`]: publishes meta events to the event bus.

pub mod auth;
mod content;
mod docs;
mod error;
pub mod mlflow;
mod outbox;
mod owner;
mod routes;
pub(crate) mod store;
pub mod tags;

pub use content::{CHECKSUM_HEADER, content_routes};
pub use docs::{base_openapi, docs_router, document_error_responses};
pub use error::{Error, Result};
pub use outbox::{relay_once, spawn_outbox_relay};
pub use routes::{ApiQuery, BODY_LIMIT, Body, POINTS_BODY_LIMIT, routes, run_routes};
pub use store::outbox::SENDER;
pub use store::{NewJobExecution, NewWorkflowExecution, NewWorkflowVersion, OutboxRow, Store};
