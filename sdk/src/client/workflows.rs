//! Workflows and executions: submit, start, wait, stop, logs and rule explanations.

use std::time::Duration;

use aiflow_api::Page;
use aiflow_api::meta::{
    ExecutionQuery, JobExecutionInfo, ListQuery, WorkflowExecutionInfo, WorkflowInfo, WorkflowList,
    WorkflowVersionInfo,
};
use aiflow_api::scheduler::{RuleEvaluationInfo, Stopping, Submitted};
use aiflow_api::{EventFilter, Offset};
use aiflow_translator::AiGraph;
use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::Method;

use super::{Client, Error, segment};

/// One state change of an execution or of one of its jobs (from its `JOB_STATUS` and
/// `WORKFLOW_STATUS` events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// The job; `None` for the execution itself.
    pub job: Option<String>,
    /// The job's attempt (0 for the execution).
    pub attempt: u32,
    /// The new state, e.g. `RUNNING`, `SUCCEEDED`.
    pub state: String,
    /// Why, when the scheduler said (a failure's message).
    pub message: Option<String>,
    /// The status event's offset.
    pub offset: Offset,
}

impl StateChange {
    /// SUCCEEDED, FAILED or STOPPED of the execution itself: the last change of the stream.
    #[must_use]
    pub fn is_execution_end(&self) -> bool {
        self.job.is_none() && matches!(self.state.as_str(), "SUCCEEDED" | "FAILED" | "STOPPED")
    }
}

impl Client {
    /// Submits an AI graph or workflow document (JSON); unchanged documents store nothing.
    pub async fn submit_document(&self, doc: &serde_json::Value) -> Result<Submitted, Error> {
        self.post("/workflows", doc).await
    }

    /// Submits an AI graph built with the SDK (checked here first).
    pub async fn submit_graph(&self, graph: &AiGraph) -> Result<Submitted, Error> {
        aiflow_translator::validate(graph)?;
        self.post("/workflows", graph).await
    }

    /// One page of workflows, with the server's dags folder load errors.
    pub async fn list_workflows(&self, q: &ListQuery) -> Result<WorkflowList, Error> {
        self.get("/workflows", q).await
    }

    pub async fn get_workflow(&self, name: &str) -> Result<WorkflowInfo, Error> {
        self.get(&format!("/workflows/{}", segment(name)), &())
            .await
    }

    pub async fn list_workflow_versions(
        &self,
        name: &str,
    ) -> Result<Vec<WorkflowVersionInfo>, Error> {
        self.get(&format!("/workflows/{}/versions", segment(name)), &())
            .await
    }

    pub async fn pause_workflow(&self, name: &str) -> Result<WorkflowInfo, Error> {
        self.post(&format!("/workflows/{}/pause", segment(name)), &())
            .await
    }

    pub async fn resume_workflow(&self, name: &str) -> Result<WorkflowInfo, Error> {
        self.post(&format!("/workflows/{}/resume", segment(name)), &())
            .await
    }

    pub async fn delete_workflow(&self, name: &str) -> Result<(), Error> {
        self.delete(&format!("/workflows/{}", segment(name))).await
    }

    /// Starts an execution of the workflow's latest version.
    pub async fn start_execution(&self, workflow: &str) -> Result<WorkflowExecutionInfo, Error> {
        self.post(
            &format!("/workflows/{}/executions", segment(workflow)),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn list_executions(
        &self,
        q: &ExecutionQuery,
    ) -> Result<Page<WorkflowExecutionInfo>, Error> {
        self.get("/executions", q).await
    }

    pub async fn get_execution(&self, id: &str) -> Result<WorkflowExecutionInfo, Error> {
        self.get(&format!("/executions/{}", segment(id)), &()).await
    }

    pub async fn stop_execution(&self, id: &str) -> Result<Stopping, Error> {
        self.post(&format!("/executions/{}/stop", segment(id)), &())
            .await
    }

    /// Every attempt of every job of an execution.
    pub async fn execution_jobs(&self, id: &str) -> Result<Vec<JobExecutionInfo>, Error> {
        let v: serde_json::Value = self
            .get(&format!("/executions/{}/jobs", segment(id)), &())
            .await?;
        // The route answers a list or a page; accept both.
        let items = v.get("items").cloned().unwrap_or(v);
        serde_json::from_value(items).map_err(|e| Error::Decode {
            url: self.api_url(&format!("/executions/{id}/jobs")),
            message: e.to_string(),
        })
    }

    /// The log of a job attempt (the latest when `attempt` is `None`).
    pub async fn job_log(
        &self,
        id: &str,
        job: &str,
        attempt: Option<u32>,
    ) -> Result<String, Error> {
        let mut rb = self.request(
            Method::GET,
            &format!("/executions/{}/jobs/{}/logs", segment(id), segment(job)),
        );
        if let Some(a) = attempt {
            rb = rb.query(&[("attempt", a)]);
        }
        let resp = self.send_raw(rb).await?;
        let url = resp.url().to_string();
        resp.text()
            .await
            .map_err(|source| Error::Connect { url, source })
    }

    /// A job's log as it grows, until the attempt ends.
    pub async fn follow_job_log(
        &self,
        id: &str,
        job: &str,
        attempt: Option<u32>,
    ) -> Result<reqwest::Response, Error> {
        let mut rb = self
            .stream_request(
                Method::GET,
                &format!("/executions/{}/jobs/{}/logs", segment(id), segment(job)),
            )
            .query(&[("follow", "true")]);
        if let Some(a) = attempt {
            rb = rb.query(&[("attempt", a)]);
        }
        self.send_raw(rb).await
    }

    /// Why a job started, stopped or still waits: its recorded rule evaluations.
    pub async fn job_why(&self, id: &str, job: &str) -> Result<Vec<RuleEvaluationInfo>, Error> {
        self.get(
            &format!("/executions/{}/jobs/{}/why", segment(id), segment(job)),
            &(),
        )
        .await
    }

    /// Streams the state changes of an execution and its jobs, from its start, live, until the
    /// execution ends (the last item is its final state). Follows the server's event stream,
    /// and resumes after a disconnect without losing or repeating a change.
    pub async fn execution_states(
        &self,
        id: &str,
    ) -> Result<BoxStream<'static, Result<StateChange, Error>>, Error> {
        let execution = self.get_execution(id).await?;
        let filter = EventFilter {
            key: Some(format!("{}*", execution.workflow)),
            event_types: vec!["JOB_STATUS".into(), "WORKFLOW_STATUS".into()],
            ..EventFilter::default()
        };
        let id = id.to_string();
        let events = crate::Listener::new(self.clone(), filter)
            .from(Offset(0))
            .into_stream();
        let changes = events.filter_map(move |r| {
            let id = id.clone();
            async move {
                match r {
                    Err(e) => Some(Err(e)),
                    Ok(e) => {
                        let context = e.context.as_ref()?;
                        if context.get("execution")?.as_str()? != id {
                            return None;
                        }
                        let job = (e.event_type == "JOB_STATUS")
                            .then(|| context.get("job").and_then(|j| j.as_str()))
                            .flatten()
                            .map(str::to_string);
                        Some(Ok(StateChange {
                            attempt: context
                                .get("attempt")
                                .and_then(serde_json::Value::as_u64)
                                .and_then(|a| u32::try_from(a).ok())
                                .unwrap_or(0),
                            message: context
                                .get("message")
                                .and_then(|m| m.as_str())
                                .map(str::to_string),
                            job,
                            state: e.value,
                            offset: e.offset,
                        }))
                    }
                }
            }
        });
        // Ends right after the execution's final state (without waiting for another event).
        let changes = changes.boxed();
        Ok(
            futures::stream::unfold((changes, false), |(mut changes, ended)| async move {
                if ended {
                    return None;
                }
                let item = changes.next().await?;
                let end = matches!(&item, Ok(c) if c.is_execution_end());
                Some((item, (changes, end)))
            })
            .boxed(),
        )
    }

    /// Polls an execution until it ends (SUCCEEDED, FAILED or STOPPED) or `timeout` passes;
    /// returns it as last seen.
    pub async fn wait_execution(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<WorkflowExecutionInfo, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let e = self.get_execution(id).await?;
            let ended = matches!(e.state.as_str(), "SUCCEEDED" | "FAILED" | "STOPPED");
            if ended || tokio::time::Instant::now() >= deadline {
                return Ok(e);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
