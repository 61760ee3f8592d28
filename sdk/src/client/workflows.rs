//! Workflows and executions: submit, start, wait, stop, logs and rule explanations.

use std::time::Duration;

use aiflow_api::Page;
use aiflow_api::meta::{
    ExecutionQuery, JobExecutionInfo, ListQuery, WorkflowExecutionInfo, WorkflowInfo,
    WorkflowVersionInfo,
};
use aiflow_api::scheduler::{RuleEvaluationInfo, Stopping, Submitted};
use aiflow_translator::AiGraph;
use reqwest::Method;

use super::{Client, Error, segment};

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

    pub async fn list_workflows(&self, q: &ListQuery) -> Result<Page<WorkflowInfo>, Error> {
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
            .request(
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

    /// Polls an execution until it leaves RUNNING or `timeout` passes.
    pub async fn wait_execution(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<WorkflowExecutionInfo, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let e = self.get_execution(id).await?;
            if e.state != "RUNNING" || tokio::time::Instant::now() >= deadline {
                return Ok(e);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
