//! The AI graph document: what users build with the SDK or write as JSON.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::names::{Action, Catchup, Life, Op, Pull, StatusCondition};

/// The namespace used when a document names none.
pub const DEFAULT_NAMESPACE: &str = "default";

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_string()
}

fn is_default_namespace(ns: &str) -> bool {
    ns == DEFAULT_NAMESPACE
}

/// An AI graph: ML operations joined by data edges and control edges, plus workflow triggers.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AiGraph {
    /// Workflow name: letters, digits, `_`, `-`, `.`; 1–128 characters.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(
        default = "default_namespace",
        skip_serializing_if = "is_default_namespace"
    )]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub nodes: Vec<AiNode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_edges: Vec<DataEdge>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub control_edges: Vec<ControlEdge>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<Trigger>,
    /// At most this many jobs of one execution run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_jobs: Option<u32>,
    /// An execution still running after this long is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration_s: Option<u64>,
    /// Once this condition is met in an execution, its control edges take no more actions: the
    /// jobs still running end on their own, and the execution ends with them (SUCCEEDED unless a
    /// job failed) instead of waiting for more events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_on: Option<Condition>,
}

/// One ML operation.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AiNode {
    pub name: String,
    #[serde(default)]
    pub op: Op,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Executor settings. Nodes joined by data edges form one job and must agree on them.
    #[serde(default, skip_serializing_if = "JobSpec::is_empty")]
    pub job: JobSpec,
    /// Free-form settings for the node's program (passed through untouched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<serde_json::Value>,
}

/// A node's executor settings. Unset fields take the job's or the scheduler's defaults.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Name of the job this node belongs to (default: its first node in data order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The program and its arguments (no shell: use `["sh", "-c", "…"]` for one). Nodes of one
    /// job that each give a command run one after another in data order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Variables whose values are the server's named secrets, `{"VARIABLE": "secret-name"}`:
    /// read at launch from `<data_dir>/secrets/<secret-name>`, never stored in the document.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_from: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Run the job in a container from this image (`name[:tag][@digest]`, as a Docker Engine
    /// names it) instead of as a host process; `command` becomes the container's command (the
    /// image's own when no node gives one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// When the image is pulled: `if_missing` (default), `always` or `never`. Needs `image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<Pull>,
    /// Folders or files of the engine's host given to the container (bind mounts), in Docker's
    /// short syntax `/host/path:/in/container[:ro|rw]`: absolute paths on both sides, read-write
    /// unless `ro`. On a worker, the host is the worker's machine. Needs `image`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub mounts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff_s: Option<u64>,
    /// A streaming job runs until it is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streaming: Option<bool>,
    /// Which workers take this job (default `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Higher runs first when jobs wait for a slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
}

impl JobSpec {
    /// `true` when no setting is given.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// What a job needs from the machine that runs it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
}

/// `to` reads what `from` writes: both run in one job, `from` first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataEdge {
    pub from: String,
    pub to: String,
}

/// The job of node `to` reacts to `condition` with `action`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlEdge {
    pub to: String,
    pub action: Action,
    #[serde(default)]
    pub life: Life,
    pub condition: Condition,
}

/// When a control edge fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// An event matching this pattern arrives.
    Event(EventCondition),
    /// The job holding `node` reaches `status`.
    JobStatus(JobStatusCondition),
    /// Every part has been met since the rule last fired (in any order).
    AllOf(Vec<Condition>),
    /// Any part is met.
    AnyOf(Vec<Condition>),
}

/// Matches events. `key` may hold `*` wildcards (any run of characters); the other fields,
/// when given, must equal the event's.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventCondition {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
}

/// Met when the job holding `node` reaches `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobStatusCondition {
    pub node: String,
    pub status: StatusCondition,
}

/// Starts a new execution of the workflow. Exactly one of `cron`, `interval_s`, `event` and
/// `all_of` is given.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// A cron expression: 5 fields (minute hour day month weekday), or 6–7 with seconds first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// IANA time zone of `cron` (default `UTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Ticks missed while the scheduler was down: `none` (default), `latest` or `all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catchup: Option<Catchup>,
    /// Every this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_s: Option<u64>,
    /// A matching event starts an execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<EventCondition>,
    /// Wait this long after the event before starting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_s: Option<u64>,
    /// Fires when every part has fired since the last start (time and data together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_of: Option<Vec<Trigger>>,
}

impl AiGraph {
    /// Serialises the graph as pretty JSON with a trailing newline (the document format).
    #[must_use]
    pub fn to_json_pretty(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("an AI graph always serialises");
        s.push('\n');
        s
    }
}

impl EventCondition {
    /// Matches events whose key matches `key` (`*` is a wildcard).
    #[must_use]
    pub fn key(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            ..Self::default()
        }
    }

    /// … and whose type is `event_type`.
    #[must_use]
    pub fn of_type(mut self, event_type: impl Into<String>) -> Self {
        self.event_type = Some(event_type.into());
        self
    }

    /// … in namespace `namespace`.
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// … whose value is `value`.
    #[must_use]
    pub fn value(mut self, value: impl Into<String>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// … sent by `sender`.
    #[must_use]
    pub fn sender(mut self, sender: impl Into<String>) -> Self {
        self.sender = Some(sender.into());
        self
    }
}

impl From<EventCondition> for Condition {
    fn from(e: EventCondition) -> Self {
        Condition::Event(e)
    }
}

impl Condition {
    /// Met when every part has been met since the rule last fired.
    pub fn all_of<C: Into<Condition>>(parts: impl IntoIterator<Item = C>) -> Self {
        Condition::AllOf(parts.into_iter().map(Into::into).collect())
    }

    /// Met when any part is met.
    pub fn any_of<C: Into<Condition>>(parts: impl IntoIterator<Item = C>) -> Self {
        Condition::AnyOf(parts.into_iter().map(Into::into).collect())
    }

    /// Met when the job holding `node` reaches `status`.
    #[must_use]
    pub fn job_status(node: impl Into<String>, status: StatusCondition) -> Self {
        Condition::JobStatus(JobStatusCondition {
            node: node.into(),
            status,
        })
    }
}
