//! What the scheduler loop takes in: API requests, bus events, executors' reports, clock
//! ticks and timers. Its own module, so that the runtime and the forwarding of a standby's
//! requests both use it without depending on each other.

use aiflow_api::Event;
use aiflow_api::meta::WorkflowExecutionInfo;
use tokio::sync::oneshot;

use crate::Error;
use crate::durable::Delayed;
use crate::exec::StatusReport;

/// One input of the scheduler loop.
pub(crate) enum Command {
    Start {
        workflow: String,
        trigger: serde_json::Value,
        event: Option<Event>,
        reply: oneshot::Sender<Result<WorkflowExecutionInfo, Error>>,
    },
    Stop {
        execution: String,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Event(Event),
    /// An executor's report on an attempt (acknowledged, when it asks, once committed).
    Status(Box<StatusReport>),
    Retry {
        execution: String,
        job: String,
        attempt: u32,
    },
    Reload,
    /// The clock moved: fire due time triggers.
    Tick(chrono::DateTime<chrono::Utc>),
    /// An event-triggered start whose `delay_s` has passed.
    Delayed(Box<Delayed>),
}
