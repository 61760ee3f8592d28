//! Types of the scheduler's routes: submitting workflows, stopping executions, rule
//! evaluations.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a submit did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Submitted {
    pub workflow: String,
    pub version: i64,
    /// `false` when the document equals the latest version (nothing stored).
    pub created: bool,
}

/// Answer of a stop request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Stopping {
    pub execution: String,
    pub stopping: bool,
}

/// One recorded rule evaluation: what `execution why` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RuleEvaluationInfo {
    /// Index of the rule in the workflow.
    pub rule: i64,
    /// The event evaluated, when the signal was an event.
    pub event_offset: Option<i64>,
    pub signal: String,
    /// Condition parts met after this evaluation (leaf numbers in pre-order).
    #[schema(value_type = Object)]
    pub met: serde_json::Value,
    /// The action fired, if the condition became true.
    pub fired: Option<String>,
    /// What the scheduler did: START, STOP, RESTART or `ignored: why`.
    pub decision: String,
    pub explanation: String,
    pub created_at: DateTime<Utc>,
}

/// One trigger of a workflow and when it fires next: what the UI's workflow list shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TriggerInfo {
    /// Position in the workflow's `triggers`.
    pub index: usize,
    /// `cron`, `interval`, `event` or `all_of`.
    pub kind: String,
    /// One line for people, e.g. `cron 0 */6 * * * (UTC)`.
    pub description: String,
    /// When the trigger fires next; `null` for a paused workflow, for event triggers, and for
    /// an interval trigger that has not fired yet.
    pub next_at: Option<DateTime<Utc>>,
}
