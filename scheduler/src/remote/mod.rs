//! Remote execution over NATS JetStream: the scheduler hands job attempts ("tasks") to a
//! work-queue stream, `aiflow worker` agents take them, run them and report back.
//!
//! - [`wire`]: the messages and the streams they travel on;
//! - [`dispatch`]: the scheduler side, the [`crate::exec::Executor`] of remote workers;
//! - [`agent`]: the worker (`aiflow worker`).

pub mod agent;
pub mod dispatch;
pub mod wire;

pub use agent::{WorkerConfig, run_worker};
pub use dispatch::RemoteExecutor;
pub(crate) use wire::stopped;
pub use wire::{
    DEFAULT_CLUSTER, Fabric, HEARTBEAT_EVERY, HEARTBEAT_TIMEOUT, Report, ReportKind, Resources,
    Task, WorkerInfo, is_last_chunk, token,
};
