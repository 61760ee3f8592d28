//! AI Flow translator: the AI graph and workflow documents, their validation, and the
//! translation of a graph into a workflow.
//!
//! Pure code: no I/O, no runtime, no clock. The same graph always gives byte-identical workflow
//! JSON.
//!
//! ```
//! use aiflow_translator::{Document, translate};
//!
//! let doc = Document::parse(r#"{
//!   "name": "demo",
//!   "nodes": [
//!     {"name": "ingest", "op": "ingest", "job": {"command": ["echo", "ingest"]}},
//!     {"name": "train", "op": "train", "job": {"command": ["echo", "train"]}}
//!   ],
//!   "data_edges": [{"from": "ingest", "to": "train"}]
//! }"#).unwrap();
//! let workflow = doc.into_workflow().unwrap();
//! assert_eq!(workflow.jobs.len(), 1);
//! assert_eq!(workflow.jobs[0].name, "ingest");
//! ```
#![warn(clippy::must_use_candidate)]

mod check;
mod document;
pub mod graph;
mod names;
mod problem;
pub mod render;
pub mod schedule;
mod translate;
pub mod workflow;

pub use check::{
    MAX_CPUS, MAX_DURATION_S, MAX_GPUS, MAX_IMAGE_LEN, MAX_KEY_LEN, MAX_MEMORY_MB, MAX_MOUNT_LEN,
    MAX_MOUNTS, MAX_NAME_LEN, MAX_RETRIES, MAX_RETRY_BACKOFF_S, Mount, image_problem, parse_mount,
};
pub use document::{Document, parse_graph, validate_workflow};
pub use graph::{
    Action, AiGraph, AiNode, Catchup, Condition, ControlEdge, DataEdge, EventCondition, JobSpec,
    JobStatusCondition, Life, Op, Pull, Resources, StatusCondition, Trigger,
};
pub use problem::{Problem, ValidationErrors};
pub use translate::{translate, validate};
pub use workflow::{
    Job, JobNode, JobRule, JobStatusRule, RuleCondition, SCHEMA_VERSION, Workflow, WorkflowTrigger,
};

/// JSON Schemas of the two documents, generated from the types.
pub mod schemas {
    /// JSON Schema of the AI graph document.
    #[must_use]
    pub fn ai_graph() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(crate::AiGraph)).expect("schema serialises")
    }

    /// JSON Schema of the workflow document.
    #[must_use]
    pub fn workflow() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(crate::Workflow)).expect("schema serialises")
    }
}
