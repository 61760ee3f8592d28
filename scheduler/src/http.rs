//! Routes of workflows and executions that act (submit, start, stop, pause) and job logs and
//! rule explanations. Read routes of workflows and executions are the meta service's.

use std::time::Duration;

use aiflow_api::meta::{WorkflowExecutionInfo, WorkflowInfo};
use aiflow_api::server::{ApiJson, HttpError};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use aiflow_api::scheduler::{RuleEvaluationInfo, Stopping, Submitted, TriggerInfo};

use crate::runtime::Scheduler;
use crate::state::JobState;

/// `/workflows` (submit, pause, resume, delete, start), `/executions/…` (stop, logs, why) and
/// `/events/{offset}/trace`.
pub fn routes(scheduler: Scheduler) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(submit_workflow))
        .routes(routes!(start_execution))
        .routes(routes!(pause_workflow))
        .routes(routes!(resume_workflow))
        .routes(routes!(delete_workflow))
        .routes(routes!(stop_execution))
        .routes(routes!(job_logs))
        .routes(routes!(job_why))
        .routes(routes!(list_workers))
        .routes(routes!(workflow_triggers))
        .routes(routes!(crate::trace::event_trace))
        .with_state(scheduler)
}

/// Submit an AI graph (translated here) or a workflow document. A changed document becomes a
/// new version (201); an unchanged one stores nothing (200).
#[utoipa::path(post, path = "/workflows", tag = "workflows",
    request_body(content = Object, description = "AI graph or workflow document"),
    responses(
        (status = 201, body = Submitted, description = "new version stored"),
        (status = 200, body = Submitted, description = "unchanged"),
        (status = 422, body = aiflow_api::ErrorBody, description = "invalid document; every problem listed"),
    ))]
async fn submit_workflow(
    State(s): State<Scheduler>,
    ApiJson(doc): ApiJson<serde_json::Value>,
) -> Result<(StatusCode, axum::Json<Submitted>), HttpError> {
    let submitted = s.submit(doc).await?;
    let status = if submitted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(submitted)))
}

/// Start an execution of the workflow's latest version.
#[utoipa::path(post, path = "/workflows/{name}/executions", tag = "executions",
    params(("name" = String, Path, description = "workflow name")),
    responses(
        (status = 201, body = WorkflowExecutionInfo),
        (status = 404, body = aiflow_api::ErrorBody),
        (status = 409, body = aiflow_api::ErrorBody, description = "workflow is paused"),
    ))]
async fn start_execution(
    State(s): State<Scheduler>,
    Path(name): Path<String>,
) -> Result<(StatusCode, axum::Json<WorkflowExecutionInfo>), HttpError> {
    let info = s
        .start_execution(&name, serde_json::json!({"type": "manual"}))
        .await?;
    Ok((StatusCode::CREATED, axum::Json(info)))
}

/// Pause a workflow: its triggers stop starting executions; manual starts are refused.
#[utoipa::path(post, path = "/workflows/{name}/pause", tag = "workflows",
    params(("name" = String, Path)), responses((status = 200, body = WorkflowInfo), (status = 404, body = aiflow_api::ErrorBody)))]
async fn pause_workflow(
    State(s): State<Scheduler>,
    Path(name): Path<String>,
) -> Result<axum::Json<WorkflowInfo>, HttpError> {
    let info = s
        .store()
        .set_workflow_paused(&name, true)
        .await
        .map_err(crate::Error::from)?;
    s.reload().await;
    Ok(axum::Json(info))
}

/// Resume a paused workflow.
#[utoipa::path(post, path = "/workflows/{name}/resume", tag = "workflows",
    params(("name" = String, Path)), responses((status = 200, body = WorkflowInfo), (status = 404, body = aiflow_api::ErrorBody)))]
async fn resume_workflow(
    State(s): State<Scheduler>,
    Path(name): Path<String>,
) -> Result<axum::Json<WorkflowInfo>, HttpError> {
    let info = s
        .store()
        .set_workflow_paused(&name, false)
        .await
        .map_err(crate::Error::from)?;
    s.reload().await;
    Ok(axum::Json(info))
}

/// Delete a workflow (its name can be reused).
#[utoipa::path(delete, path = "/workflows/{name}", tag = "workflows",
    params(("name" = String, Path)), responses((status = 204), (status = 404, body = aiflow_api::ErrorBody)))]
async fn delete_workflow(
    State(s): State<Scheduler>,
    Path(name): Path<String>,
) -> Result<StatusCode, HttpError> {
    s.store()
        .delete_workflow(&name)
        .await
        .map_err(crate::Error::from)?;
    s.reload().await;
    Ok(StatusCode::NO_CONTENT)
}

/// Stop a running execution: running jobs get SIGTERM (SIGKILL after the grace period).
#[utoipa::path(post, path = "/executions/{id}/stop", tag = "executions",
    params(("id" = String, Path)),
    responses((status = 202, body = Stopping), (status = 404, body = aiflow_api::ErrorBody), (status = 409, body = aiflow_api::ErrorBody)))]
async fn stop_execution(
    State(s): State<Scheduler>,
    Path(id): Path<String>,
) -> Result<(StatusCode, axum::Json<Stopping>), HttpError> {
    s.stop_execution(&id).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(Stopping {
            execution: id,
            stopping: true,
        }),
    ))
}

/// `?attempt=&follow=` of the logs route.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Which attempt (default: the latest).
    pub attempt: Option<u32>,
    /// Keep the answer open and send new output until the attempt ends.
    #[serde(default)]
    pub follow: bool,
}

/// The combined stdout and stderr of one job attempt, as plain text.
#[utoipa::path(get, path = "/executions/{id}/jobs/{job}/logs", tag = "executions",
    params(("id" = String, Path), ("job" = String, Path), LogQuery),
    responses((status = 200, content_type = "text/plain", body = String), (status = 404, body = aiflow_api::ErrorBody)))]
async fn job_logs(
    State(s): State<Scheduler>,
    Path((id, job)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> Result<Response, HttpError> {
    let attempts = s
        .store()
        .list_job_executions(&id)
        .await
        .map_err(crate::Error::from)?;
    let attempt = match q.attempt {
        Some(a) => a,
        None => attempts
            .iter()
            .filter(|j| j.job == job)
            .map(|j| j.attempt as u32)
            .max()
            .ok_or_else(|| {
                HttpError::not_found(format!("job {job:?} of execution {id:?} has not run"))
            })?,
    };
    let path = s.log_path(&id, &job, attempt);
    if let Some(fabric) = s.fabric().cloned()
        && !tokio::fs::try_exists(&path).await.unwrap_or(false)
    {
        return remote_log(&fabric, &id, &job, attempt, q.follow).await;
    }
    if !q.follow {
        let text = tokio::fs::read(&path).await.map_err(|_| {
            HttpError::not_found(format!(
                "no log for job {job:?} attempt {attempt} of execution {id:?}"
            ))
        })?;
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response());
    }
    let store = s.store().clone();
    let stream = futures::stream::unfold((0u64, false), move |(pos, done)| {
        let (path, store, id, job) = (path.clone(), store.clone(), id.clone(), job.clone());
        async move {
            if done {
                return None;
            }
            loop {
                let mut chunk = Vec::new();
                let mut pos = pos;
                if let Ok(mut f) = tokio::fs::File::open(&path).await {
                    // A log over its size limit was cut to its newest part: start again.
                    if f.metadata().await.is_ok_and(|m| m.len() < pos) {
                        pos = 0;
                    }
                    if f.seek(std::io::SeekFrom::Start(pos)).await.is_ok() {
                        let _ = f.read_to_end(&mut chunk).await;
                    }
                }
                if !chunk.is_empty() {
                    let next = pos + chunk.len() as u64;
                    return Some((Ok::<_, std::io::Error>(chunk), (next, false)));
                }
                let finished = store.list_job_executions(&id).await.map_or(true, |jobs| {
                    jobs.iter()
                        .filter(|j| j.job == job && j.attempt as u32 == attempt)
                        .all(|j| {
                            j.state
                                .parse::<JobState>()
                                .is_ok_and(|s| s.is_terminal() || s == JobState::Retrying)
                        })
                });
                if finished {
                    return Some((Ok(Vec::new()), (pos, true)));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The log of an attempt that ran on a remote worker, from the log chunks it sent.
async fn remote_log(
    fabric: &crate::remote::Fabric,
    id: &str,
    job: &str,
    attempt: u32,
    follow: bool,
) -> Result<Response, HttpError> {
    let unavailable = |e: String| HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e);
    let text = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !follow {
        let log = fabric.log(id, job, attempt).await.map_err(unavailable)?;
        return Ok((text, log).into_response());
    }
    let chunks = fabric
        .log_chunks(id, job, attempt)
        .await
        .map_err(unavailable)?;
    let stream = chunks
        .map(|m| m.map(|m| m.payload.to_vec()))
        .take_while(|m| {
            std::future::ready(m.as_ref().is_ok_and(|c| !crate::remote::is_last_chunk(c)))
        })
        .map(|m| m.map_err(std::io::Error::other));
    Ok((text, Body::from_stream(stream)).into_response())
}

/// The registered remote workers (`aiflow worker`), newest heartbeat first; empty without NATS.
#[utoipa::path(get, path = "/workers", tag = "workers",
    responses((status = 200, body = WorkerList), (status = 503, body = aiflow_api::ErrorBody)))]
async fn list_workers(State(s): State<Scheduler>) -> Result<axum::Json<WorkerList>, HttpError> {
    let items = match s.fabric() {
        Some(f) => f
            .workers()
            .await
            .map_err(|e| HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e))?,
        None => Vec::new(),
    };
    Ok(axum::Json(WorkerList {
        items,
        next_cursor: None,
    }))
}

/// `GET /workers`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct WorkerList {
    pub items: Vec<crate::remote::WorkerInfo>,
    pub next_cursor: Option<String>,
}

/// Why a job started, stopped, or is still waiting: its recorded rule evaluations, oldest first.
#[utoipa::path(get, path = "/executions/{id}/jobs/{job}/why", tag = "executions",
    params(("id" = String, Path), ("job" = String, Path)),
    responses((status = 200, body = Vec<RuleEvaluationInfo>), (status = 404, body = aiflow_api::ErrorBody)))]
async fn job_why(
    State(s): State<Scheduler>,
    Path((id, job)): Path<(String, String)>,
) -> Result<axum::Json<Vec<RuleEvaluationInfo>>, HttpError> {
    s.store()
        .get_workflow_execution(&id)
        .await
        .map_err(crate::Error::from)?;
    let rows = sqlx::query(
        "SELECT rule_index, event_offset, signal, met, fired, decision, explanation, created_at \
         FROM rule_evaluations WHERE execution_id = $1 AND job_name = $2 ORDER BY id",
    )
    .bind(&id)
    .bind(&job)
    .fetch_all(&s.store().db().pool)
    .await
    .map_err(|e| HttpError::internal(format!("cannot read rule evaluations: {e}")))?;
    use sqlx::Row;
    let items = rows
        .iter()
        .map(|r| RuleEvaluationInfo {
            rule: r.get::<i64, _>("rule_index"),
            event_offset: r.get::<Option<i64>, _>("event_offset"),
            signal: r.get("signal"),
            met: serde_json::from_str(&r.get::<String, _>("met")).unwrap_or_default(),
            fired: r.get("fired"),
            decision: r.get("decision"),
            explanation: r.get("explanation"),
            created_at: chrono::DateTime::from_timestamp_micros(r.get::<i64, _>("created_at"))
                .unwrap_or_default(),
        })
        .collect();
    Ok(axum::Json(items))
}

/// A workflow's triggers (latest version) and when each fires next.
#[utoipa::path(get, path = "/workflows/{name}/triggers", tag = "workflows",
    params(("name" = String, Path)),
    responses((status = 200, body = Vec<TriggerInfo>), (status = 404, body = aiflow_api::ErrorBody)))]
async fn workflow_triggers(
    State(s): State<Scheduler>,
    Path(name): Path<String>,
) -> Result<axum::Json<Vec<TriggerInfo>>, HttpError> {
    let store = s.store();
    let info = store
        .get_workflow(&name)
        .await
        .map_err(crate::Error::from)?;
    // Only the triggers are read out of the stored document (a workflow may have thousands of
    // jobs).
    #[derive(Deserialize)]
    struct Triggers {
        #[serde(default)]
        triggers: Vec<aiflow_translator::WorkflowTrigger>,
    }
    let doc: Option<String> = sqlx::query_scalar(
        "SELECT workflow FROM workflow_versions WHERE workflow_id = $1 AND version = $2",
    )
    .bind(info.id)
    .bind(info.latest_version)
    .fetch_optional(&store.db().pool)
    .await
    .map_err(|e| HttpError::internal(format!("cannot read workflow {name}: {e}")))?;
    let wf: Triggers = match doc {
        Some(text) => serde_json::from_str(&text).map_err(|e| {
            HttpError::internal(format!("stored workflow {name} is unreadable: {e}"))
        })?,
        None => Triggers {
            triggers: Vec::new(),
        },
    };
    let now = chrono::Utc::now();
    let mut out = Vec::with_capacity(wf.triggers.len());
    for (index, trigger) in wf.triggers.iter().enumerate() {
        // The earliest next tick of the trigger's time parts (of an `all_of`, the time part:
        // its data parts must happen too). The scheduler records each time part's last firing
        // under these keys (core/mod.rs, `timer_key`).
        let all_of = matches!(trigger, aiflow_translator::WorkflowTrigger::AllOf { .. });
        let mut next_at = None;
        for (j, part) in crate::triggers::parts(trigger).into_iter().enumerate() {
            if info.paused || !crate::triggers::is_time(part) {
                continue;
            }
            let key = if all_of {
                format!("scheduler.trigger.{name}.{index}.{j}")
            } else {
                format!("scheduler.trigger.{name}.{index}")
            };
            let last = crate::durable::kv_get(store.db(), &key)
                .await
                .map_err(|e| HttpError::internal(format!("cannot read trigger state: {e}")))?
                .and_then(|v| v.parse::<chrono::DateTime<chrono::Utc>>().ok());
            if let Some(t) = crate::triggers::next_tick(part, last, now) {
                next_at = Some(next_at.map_or(t, |n: chrono::DateTime<chrono::Utc>| n.min(t)));
            }
        }
        out.push(TriggerInfo {
            index,
            kind: crate::triggers::kind(trigger).to_string(),
            description: crate::triggers::describe(trigger),
            next_at,
        });
    }
    Ok(axum::Json(out))
}
