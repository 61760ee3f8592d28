//! AI Flow scheduler: rule engine, execution state machines, triggers and executors.
//!
//! The decisions are pure: [`state`] holds the state machines with their allowed transitions,
//! [`rules`] evaluates job rules against signals and decides what a fired action does, and the
//! scheduler core (`core`) decides over plain data, returning what to commit and the effects to
//! carry out. [`runtime`] carries them out (event loop, commit, leader term, feeds, resume),
//! [`exec`] runs job attempts behind the [`Executor`] trait (local processes, [`remote`]
//! workers), and [`http`] holds the routes.

mod command;
mod core;
pub mod dags;
mod durable;
pub mod exec;
mod forward;
pub mod http;
pub mod jobenv;
pub mod leader;
pub mod metrics;
pub mod reaper;
pub mod remote;
pub mod rules;
pub mod runtime;
/// The runtime under its former name.
pub use runtime as service;
pub mod state;
pub mod telemetry;
mod trace;
pub mod triggers;

use aiflow_api::server::HttpError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// The local process executor (kept under its former path).
pub use exec::process as executor;
/// Jobs that outlive the server (kept under its former path).
pub use exec::supervisor;
pub use exec::{Executor, LaunchSpec, LocalExecutor, Outcome, RunningJob};
pub use rules::{
    Decision, Evaluation, RuleMemory, Signal, decide, evaluate, initial_jobs, outcome,
};
pub use runtime::{Scheduler, SchedulerConfig, Submitted};
pub use state::{JobState, WorkflowState};

/// Errors of the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The submitted document is invalid (every problem listed).
    #[error(transparent)]
    Invalid(aiflow_translator::ValidationErrors),
    #[error(transparent)]
    Meta(#[from] aiflow_meta::Error),
    /// The request clashes with the current state (paused workflow, finished execution).
    #[error("{0}")]
    Conflict(String),
    #[error("store: {0}")]
    Store(#[from] sqlx::Error),
    /// A stored or received document the scheduler cannot read.
    #[error("{what} is unreadable: {source}")]
    Unreadable {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("event bus: {0}")]
    Bus(#[source] aiflow_notification::Error),
    /// NATS (remote workers, forwarded requests), with what was being done.
    #[error("{0}")]
    Nats(String),
    #[error("the scheduler is not running")]
    Stopped,
    /// The answer of the scheduling leader to a request forwarded by a standby.
    #[error("{}", error.message)]
    Forwarded {
        status: u16,
        error: aiflow_api::ApiError,
    },
}

impl Error {
    pub(crate) fn bus(e: aiflow_notification::Error) -> Self {
        Error::Bus(e)
    }
}

impl From<Error> for HttpError {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid(v) => {
                let first = v
                    .problems
                    .first()
                    .map(|p| p.location.clone())
                    .unwrap_or_default();
                let message = v
                    .problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                HttpError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_argument",
                    message,
                )
                .field(first)
            }
            Error::Meta(m) => HttpError::from(m),
            Error::Conflict(m) => HttpError::conflict(m),
            Error::Forwarded { status, error } => HttpError {
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                error,
            },
            Error::Store(err) if aiflow_db::storage_full(&err) => {
                tracing::error!(error = %err, "scheduler store is full");
                HttpError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "storage_full",
                    "the scheduler's store has no space left on its disk; nothing was stored",
                )
            }
            Error::Bus(aiflow_notification::Error::Store(err)) if aiflow_db::storage_full(&err) => {
                HttpError::from(aiflow_notification::Error::Store(err))
            }
            Error::Stopped => HttpError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the scheduler is not running",
            ),
            other => {
                tracing::error!(error = %other, "scheduler request failed");
                HttpError::internal(other.to_string())
            }
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        HttpError::from(self).into_response()
    }
}
