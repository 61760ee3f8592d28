//! `GET /events/{offset}/trace`: what one event did, from the recorded rule evaluations, the
//! executions its workflow triggers started, and the job attempts that followed.

use std::collections::HashMap;

use aiflow_api::meta::JobExecutionInfo;
use aiflow_api::scheduler::{EventTrace, TracedAttempt, TracedEvaluation, TracedExecution};
use aiflow_api::server::HttpError;
use aiflow_translator::Workflow;
use axum::extract::{Path, State};
use sqlx::Row;

use crate::rules::initial_jobs;
use crate::runtime::Scheduler;

/// Most executions listed as started by one event.
const MAX_STARTED: i64 = 100;

fn attempt_of(j: &JobExecutionInfo) -> TracedAttempt {
    TracedAttempt {
        job: j.job.clone(),
        attempt: j.attempt,
        state: j.state.clone(),
        started_at: j.started_at,
        ended_at: j.ended_at,
    }
}

fn store_error(e: impl std::fmt::Display) -> HttpError {
    HttpError::internal(format!("cannot read the event's trace: {e}"))
}

/// What one event did: the executions it started through workflow triggers, and every rule
/// evaluation it caused in running executions with the job attempt each decision started or
/// stopped.
#[utoipa::path(get, path = "/events/{offset}/trace", tag = "events",
    params(("offset" = i64, Path, description = "the event's offset")),
    responses(
        (status = 200, body = EventTrace),
        (status = 400, body = aiflow_api::ErrorBody, description = "offset is not a positive number"),
    ))]
pub(crate) async fn event_trace(
    State(s): State<Scheduler>,
    Path(offset): Path<String>,
) -> Result<axum::Json<EventTrace>, HttpError> {
    let offset: i64 = offset
        .parse()
        .ok()
        .filter(|o| *o > 0)
        .ok_or_else(|| HttpError::invalid("offset", "offset must be a positive number"))?;
    let store = s.store();
    let pool = &store.db().pool;
    let rows = {
        let _timer = aiflow_db::QueryTimer::new("scheduler", "event_trace");
        sqlx::query(
            "SELECT r.execution_id, r.job_name, r.rule_index, r.fired, r.decision, \
             r.explanation, r.created_at, w.name AS workflow \
             FROM rule_evaluations r \
             LEFT JOIN workflow_executions e ON e.id = r.execution_id \
             LEFT JOIN workflows w ON w.id = e.workflow_id \
             WHERE r.event_offset = $1 ORDER BY r.id",
        )
        .bind(offset)
        .fetch_all(pool)
        .await
        .map_err(store_error)?
    };
    // Job attempts of each execution named, read once.
    let mut attempts: HashMap<String, Vec<JobExecutionInfo>> = HashMap::new();
    let mut evaluations = Vec::with_capacity(rows.len());
    for r in &rows {
        let execution: String = r.get("execution_id");
        let job: String = r.get("job_name");
        let decision: String = r.get("decision");
        let created_at = chrono::DateTime::from_timestamp_micros(r.get::<i64, _>("created_at"))
            .unwrap_or_default();
        if !attempts.contains_key(&execution) {
            let jobs = store
                .list_job_executions(&execution)
                .await
                .map_err(store_error)?;
            attempts.insert(execution.clone(), jobs);
        }
        let of_job = attempts[&execution].iter().filter(|j| j.job == job);
        let attempt = match decision.as_str() {
            // The first attempt created after the decision.
            "START" | "RESTART" => of_job
                .filter(|j| j.created_at >= created_at)
                .min_by_key(|j| j.attempt),
            // The latest attempt created before it.
            "STOP" => of_job
                .filter(|j| j.created_at <= created_at)
                .max_by_key(|j| j.attempt),
            _ => None,
        };
        evaluations.push(TracedEvaluation {
            workflow: r.get::<Option<String>, _>("workflow").unwrap_or_default(),
            execution,
            job,
            rule: r.get("rule_index"),
            fired: r.get("fired"),
            decision,
            explanation: r.get("explanation"),
            created_at,
            attempt: attempt.map(attempt_of),
        });
    }
    // Executions started by an event trigger record `{"type":"event","offset":N,…}` (in any
    // key order).
    let started: Vec<String> = {
        let _timer = aiflow_db::QueryTimer::new("scheduler", "event_trace");
        sqlx::query_scalar(
            "SELECT id FROM workflow_executions WHERE trigger_info LIKE '%\"type\":\"event\"%' \
             AND (trigger_info LIKE $1 OR trigger_info LIKE $2) ORDER BY created_at LIMIT $3",
        )
        .bind(format!("%\"offset\":{offset},%"))
        .bind(format!("%\"offset\":{offset}}}%"))
        .bind(MAX_STARTED)
        .fetch_all(pool)
        .await
        .map_err(store_error)?
    };
    let mut started_executions = Vec::with_capacity(started.len());
    for id in started {
        let info = store
            .get_workflow_execution(&id)
            .await
            .map_err(store_error)?;
        let first: Vec<String> = match store
            .get_workflow_version(&info.workflow, info.workflow_version)
            .await
            .ok()
            .and_then(|v| serde_json::from_value::<Workflow>(v.workflow_doc).ok())
        {
            Some(wf) => initial_jobs(&wf).into_iter().map(str::to_string).collect(),
            None => Vec::new(),
        };
        let jobs = store
            .list_job_executions(&id)
            .await
            .map_err(store_error)?
            .iter()
            .filter(|j| j.attempt == 1 && first.contains(&j.job))
            .map(attempt_of)
            .collect();
        started_executions.push(TracedExecution {
            execution: info.id,
            workflow: info.workflow,
            state: info.state,
            jobs,
        });
    }
    Ok(axum::Json(EventTrace {
        offset,
        started_executions,
        evaluations,
    }))
}
