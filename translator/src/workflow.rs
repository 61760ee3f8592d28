//! The workflow document: jobs, job rules and workflow triggers, as the scheduler runs them.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::graph::{Action, Catchup, EventCondition, Life, Op, Pull, Resources, StatusCondition};

/// The version of the workflow document format this crate writes.
pub const SCHEMA_VERSION: u32 = 1;

/// The queue a job goes to when it names none.
pub const DEFAULT_QUEUE: &str = "default";

/// The `kind` field that tells a workflow document from an AI graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkflowKind {
    #[default]
    Workflow,
}

/// Jobs plus the rules and triggers that run them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// Always `"workflow"`.
    pub kind: WorkflowKind,
    pub schema_version: u32,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub jobs: Vec<Job>,
    #[serde(default)]
    pub rules: Vec<JobRule>,
    #[serde(default)]
    pub triggers: Vec<WorkflowTrigger>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_jobs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration_s: Option<u64>,
    /// Once met in an execution, its rules take no more actions and the execution ends when its
    /// running jobs have ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_on: Option<RuleCondition>,
}

/// The unit the scheduler runs: the nodes of one data-edge component with one executor config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub name: String,
    /// The job's nodes in data order; those with a command run one after another.
    pub nodes: Vec<JobNode>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Variables whose values are the server's named secrets (`VARIABLE → secret name`),
    /// read when each attempt starts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_from: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// The container image the job runs in (none: a host process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// When the image is pulled (none: `if_missing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<Pull>,
    /// Bind mounts of the container, `/host/path:/in/container[:ro|rw]` (needs `image`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub mounts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    #[serde(default)]
    pub retries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff_s: Option<u64>,
    #[serde(default)]
    pub streaming: bool,
    #[serde(default = "default_queue")]
    pub queue: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default)]
    pub priority: i32,
}

fn default_queue() -> String {
    DEFAULT_QUEUE.to_string()
}

impl Job {
    /// The commands the job runs, in order.
    pub fn commands(&self) -> impl Iterator<Item = &[String]> {
        self.nodes
            .iter()
            .filter(|n| !n.command.is_empty())
            .map(|n| n.command.as_slice())
    }
}

/// One node of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobNode {
    pub name: String,
    pub op: Op,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<serde_json::Value>,
}

/// A control edge, bound to jobs: when `condition` is met, apply `action` to `job`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRule {
    /// The job acted on.
    pub job: String,
    pub action: Action,
    #[serde(default)]
    pub life: Life,
    pub condition: RuleCondition,
    /// The node the control edge pointed at, and the edge's index in the AI graph.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<RuleSource>,
}

/// Where a rule came from in the AI graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSource {
    pub control_edge: usize,
    pub node: String,
}

/// A rule's condition; `job_status` names jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RuleCondition {
    Event(EventCondition),
    JobStatus(JobStatusRule),
    AllOf(Vec<RuleCondition>),
    AnyOf(Vec<RuleCondition>),
}

/// Met when `job` reaches `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobStatusRule {
    pub job: String,
    /// The node the AI graph named (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub status: StatusCondition,
}

/// A workflow trigger in parsed form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum WorkflowTrigger {
    Cron {
        /// As the user wrote it.
        cron: String,
        timezone: String,
        catchup: Catchup,
        /// For information: the `cron` crate form the expression comes down to (seconds first;
        /// two joined by ` | ` when a day matching either day field runs). The scheduler
        /// evaluates `cron`.
        schedule: String,
    },
    Interval {
        interval_s: u64,
    },
    Event {
        event: EventCondition,
        #[serde(default)]
        delay_s: u64,
    },
    AllOf {
        all_of: Vec<WorkflowTrigger>,
    },
}

impl Workflow {
    /// The job called `name`.
    #[must_use]
    pub fn job(&self, name: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// Serialises as pretty JSON with a trailing newline. Deterministic: equal workflows give
    /// byte-identical text.
    #[must_use]
    pub fn to_json_pretty(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a workflow always serialises");
        s.push('\n');
        s
    }
}
