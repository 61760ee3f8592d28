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
    #[schema(value_type = Vec<u64>)]
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

/// What one event did (`GET /events/{offset}/trace`, `aiflow event trace`): the executions it
/// started through workflow triggers, and the rules it was evaluated against in running
/// executions, with the job attempts that followed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventTrace {
    pub offset: i64,
    /// Executions started by a workflow's event trigger on this event.
    pub started_executions: Vec<TracedExecution>,
    /// Recorded rule evaluations of this event, oldest first.
    pub evaluations: Vec<TracedEvaluation>,
}

/// An execution an event started, with the attempts of its first jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TracedExecution {
    pub execution: String,
    pub workflow: String,
    pub state: String,
    pub jobs: Vec<TracedAttempt>,
}

/// One rule of one execution evaluated on the event, and what followed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TracedEvaluation {
    pub execution: String,
    pub workflow: String,
    pub job: String,
    /// Index of the rule in the workflow.
    pub rule: i64,
    /// The action fired, if the condition became true.
    pub fired: Option<String>,
    /// What the scheduler did: START, STOP, RESTART or `ignored: why`.
    pub decision: String,
    pub explanation: String,
    pub created_at: DateTime<Utc>,
    /// The attempt the decision started (START, RESTART) or stopped (STOP).
    pub attempt: Option<TracedAttempt>,
}

/// One job attempt as it stands now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TracedAttempt {
    pub job: String,
    pub attempt: i64,
    pub state: String,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::PartialSchema;

    #[test]
    fn met_is_described_as_the_array_it_is() {
        // Schemathesis found `met` described as an object while the server sends `[0, 2]`.
        let schema = serde_json::to_value(RuleEvaluationInfo::schema()).unwrap();
        let met = &schema["properties"]["met"];
        assert_eq!(met["type"], "array", "{met}");
        assert_eq!(met["items"]["type"], "integer", "{met}");
    }
}
