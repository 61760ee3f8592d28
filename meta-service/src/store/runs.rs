//! Workflows, their versions and runs. The scheduler writes these rows through the functions
//! here; the meta routes and the CLI read them.

use aiflow_api::Page;
use aiflow_api::meta::{
    ExecutionQuery, JobExecutionInfo, ListQuery, SortOrder, WorkflowExecutionInfo, WorkflowInfo,
    WorkflowVersionInfo,
};
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;

use super::sql::{
    Sql, decode_cursor, encode_cursor, get_i, get_json, get_oi, get_ojson, get_os, get_otime,
    get_s, get_tags, get_time, now_us, page_limit, to_us,
};
use super::{Kind, Store, dup, to_page};
use crate::error::{Error, Result};
use crate::tags::{check_name, properties_text};

pub(crate) const WORKFLOWS: Kind = Kind {
    table: "workflows",
    what: "workflow",
    select: "SELECT t.id, t.name, p.name AS project_name, t.namespace, t.description, t.properties, \
             t.tags, t.paused, t.latest_version, t.created_at, t.updated_at \
             FROM workflows t LEFT JOIN meta_projects p ON p.id = t.project_id",
};

/// A workflow version to store (what `POST /workflows` produces after translation).
#[derive(Debug, Clone, Default)]
pub struct NewWorkflowVersion {
    pub name: String,
    pub project: Option<String>,
    pub namespace: Option<String>,
    pub description: Option<String>,
    /// The submitted AI graph, when one was submitted.
    pub graph: Option<serde_json::Value>,
    /// The translated workflow document.
    pub workflow: serde_json::Value,
}

/// A workflow execution to record.
#[derive(Debug, Clone, Default)]
pub struct NewWorkflowExecution {
    pub id: String,
    pub workflow: String,
    /// Default: the workflow's latest version.
    pub workflow_version: Option<i64>,
    pub state: String,
    pub trigger: Option<serde_json::Value>,
}

/// A job execution (one attempt) to record.
#[derive(Debug, Clone, Default)]
pub struct NewJobExecution {
    pub id: String,
    /// `None` for runs reported from outside (OpenLineage).
    pub workflow_execution: Option<String>,
    pub job: String,
    pub attempt: i64,
    pub state: String,
    pub worker: Option<String>,
    pub properties: Option<serde_json::Value>,
}

fn workflow_row(r: &AnyRow) -> Result<WorkflowInfo> {
    Ok(WorkflowInfo {
        id: get_i(r, "id")?,
        name: get_s(r, "name")?,
        project: get_os(r, "project_name")?,
        namespace: get_s(r, "namespace")?,
        description: get_os(r, "description")?,
        properties: get_json(r, "properties")?,
        tags: get_tags(r, "tags")?,
        paused: get_i(r, "paused")? != 0,
        latest_version: get_i(r, "latest_version")?,
        created_at: get_time(r, "created_at")?,
        updated_at: get_time(r, "updated_at")?,
    })
}

const WE_SELECT: &str = "SELECT e.id, w.name AS workflow_name, e.workflow_version, e.state, \
    e.trigger_info, e.properties, e.created_at, e.started_at, e.ended_at, e.updated_at \
    FROM workflow_executions e JOIN workflows w ON w.id = e.workflow_id";

fn execution_row(r: &AnyRow) -> Result<WorkflowExecutionInfo> {
    Ok(WorkflowExecutionInfo {
        id: get_s(r, "id")?,
        workflow: get_s(r, "workflow_name")?,
        workflow_version: get_i(r, "workflow_version")?,
        state: get_s(r, "state")?,
        trigger: get_ojson(r, "trigger_info")?,
        properties: get_json(r, "properties")?,
        created_at: get_time(r, "created_at")?,
        started_at: get_otime(r, "started_at")?,
        ended_at: get_otime(r, "ended_at")?,
        updated_at: get_time(r, "updated_at")?,
    })
}

const JE_SELECT: &str = "SELECT id, workflow_execution_id, job_name, attempt, state, exit_code, \
    worker, properties, created_at, started_at, ended_at, updated_at FROM job_executions";

pub(crate) fn job_row(r: &AnyRow) -> Result<JobExecutionInfo> {
    Ok(JobExecutionInfo {
        id: get_s(r, "id")?,
        workflow_execution: get_os(r, "workflow_execution_id")?,
        job: get_s(r, "job_name")?,
        attempt: get_i(r, "attempt")?,
        state: get_s(r, "state")?,
        exit_code: get_oi(r, "exit_code")?,
        worker: get_os(r, "worker")?,
        properties: get_json(r, "properties")?,
        created_at: get_time(r, "created_at")?,
        started_at: get_otime(r, "started_at")?,
        ended_at: get_otime(r, "ended_at")?,
        updated_at: get_time(r, "updated_at")?,
    })
}

/// Cursor over `(created_at, id)` with a text id.
fn exec_cursor(r: &AnyRow) -> Result<String> {
    Ok(encode_cursor(&[
        "ex",
        &get_i(r, "created_at")?.to_string(),
        &get_s(r, "id")?,
    ]))
}

fn decode_exec_cursor(c: &str) -> Result<(i64, String)> {
    let parts = decode_cursor(c, 3)?;
    let bad = || {
        Error::invalid(
            "cursor",
            format!("cursor {c:?} is not a cursor this server gave out"),
        )
    };
    if parts[0] != "ex" {
        return Err(bad());
    }
    Ok((parts[1].parse().map_err(|_| bad())?, parts[2].clone()))
}

impl Store {
    /// Stores a new version of a workflow, creating the workflow on first submit.
    pub async fn submit_workflow_version(
        &self,
        w: &NewWorkflowVersion,
    ) -> Result<WorkflowVersionInfo> {
        let _timer = aiflow_db::QueryTimer::new("meta", "submit_workflow_version");
        check_name(&w.name, "name")?;
        let now = now_us();
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "UPDATE workflows SET latest_version = latest_version + 1, updated_at = $1 \
             WHERE name = $2 AND deleted_at IS NULL RETURNING id, latest_version",
        )
        .bind(now)
        .bind(&w.name)
        .fetch_optional(&mut *tx)
        .await?;
        let (id, version) = match row {
            Some(r) => (get_i(&r, "id")?, get_i(&r, "latest_version")?),
            None => {
                let project = self
                    .project_ref(&mut tx, w.project.as_deref(), "project")
                    .await?;
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO workflows (name, project_id, namespace, description, properties, \
                     tags, paused, latest_version, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, '{}', '{}', 0, 1, $5, $5) RETURNING id",
                )
                .bind(&w.name)
                .bind(project)
                .bind(w.namespace.clone().unwrap_or_else(|| "default".into()))
                .bind(w.description.clone())
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(dup("workflow", &w.name))?;
                (id, 1)
            }
        };
        sqlx::query(
            "INSERT INTO workflow_versions (workflow_id, version, graph, workflow, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(version)
        .bind(w.graph.as_ref().map(ToString::to_string))
        .bind(w.workflow.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        self.commit(tx, false).await?;
        tracing::info!(workflow = %w.name, version, "workflow version stored");
        self.get_workflow_version(&w.name, version).await
    }

    pub async fn get_workflow(&self, name: &str) -> Result<WorkflowInfo> {
        let _timer = aiflow_db::QueryTimer::new("meta", "get_workflow");
        self.get_named(WORKFLOWS, name, workflow_row).await
    }

    /// The dags folder's load errors, by file (written by the server's dags loader under
    /// `aiflow_kv` keys `dags.error.<file>`).
    pub async fn dag_load_errors(&self) -> Result<Vec<aiflow_api::meta::DagLoadError>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT k, v FROM aiflow_kv WHERE k LIKE 'dags.error.%' ORDER BY k")
                .fetch_all(&self.db.pool)
                .await?;
        Ok(rows
            .iter()
            .filter_map(|(_, v)| serde_json::from_str(v).ok())
            .collect())
    }

    pub async fn list_workflows(&self, q: &ListQuery) -> Result<Page<WorkflowInfo>> {
        let _timer = aiflow_db::QueryTimer::new("meta", "list_workflows");
        let (rows, next) = self.list_named(WORKFLOWS, q, |_| {}).await?;
        to_page(rows, next, workflow_row)
    }

    pub async fn set_workflow_paused(&self, name: &str, paused: bool) -> Result<WorkflowInfo> {
        let _timer = aiflow_db::QueryTimer::new("meta", "set_workflow_paused");
        let done = sqlx::query(
            "UPDATE workflows SET paused = $1, updated_at = $2 WHERE name = $3 AND deleted_at IS NULL",
        )
        .bind(i64::from(paused))
        .bind(now_us())
        .bind(name)
        .execute(&self.db.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("workflow", name));
        }
        self.get_workflow(name).await
    }

    pub async fn delete_workflow(&self, name: &str) -> Result<()> {
        let _timer = aiflow_db::QueryTimer::new("meta", "delete_workflow");
        self.soft_delete(WORKFLOWS, name).await
    }

    /// One version of a live workflow; `version` 0 means the latest.
    pub async fn get_workflow_version(
        &self,
        name: &str,
        version: i64,
    ) -> Result<WorkflowVersionInfo> {
        let _timer = aiflow_db::QueryTimer::new("meta", "get_workflow_version");
        let row = sqlx::query(
            "SELECT w.name, v.version, v.graph, v.workflow, v.created_at FROM workflow_versions v \
             JOIN workflows w ON w.id = v.workflow_id WHERE w.name = $1 AND w.deleted_at IS NULL \
             AND v.version = CASE WHEN $2 = 0 THEN w.latest_version ELSE $2 END",
        )
        .bind(name)
        .bind(version)
        .fetch_optional(&self.db.pool)
        .await?
        .ok_or_else(|| Error::not_found("workflow version", format!("{name}@{version}")))?;
        version_info(&row)
    }

    pub async fn list_workflow_versions(&self, name: &str) -> Result<Vec<WorkflowVersionInfo>> {
        let _timer = aiflow_db::QueryTimer::new("meta", "list_workflow_versions");
        let w = self.get_workflow(name).await?;
        let rows = sqlx::query(
            "SELECT w.name, v.version, v.graph, v.workflow, v.created_at FROM workflow_versions v \
             JOIN workflows w ON w.id = v.workflow_id WHERE w.id = $1 ORDER BY v.version",
        )
        .bind(w.id)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(version_info).collect()
    }

    // ---- executions

    pub async fn create_workflow_execution(
        &self,
        e: &NewWorkflowExecution,
    ) -> Result<WorkflowExecutionInfo> {
        let _timer = aiflow_db::QueryTimer::new("meta", "create_workflow_execution");
        let w = self.get_workflow(&e.workflow).await?;
        let version = e.workflow_version.unwrap_or(w.latest_version);
        let now = now_us();
        sqlx::query(
            "INSERT INTO workflow_executions (id, workflow_id, workflow_version, state, trigger_info, \
             properties, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, '{}', $6, $6)",
        )
        .bind(&e.id)
        .bind(w.id)
        .bind(version)
        .bind(&e.state)
        .bind(e.trigger.as_ref().map(ToString::to_string))
        .bind(now)
        .execute(&self.db.pool)
        .await
        .map_err(|err| {
            if super::sql::is_unique_violation(&err) {
                Error::conflict(Some("id"), format!("workflow execution {:?} already exists", e.id))
            } else {
                Error::Db(err)
            }
        })?;
        self.get_workflow_execution(&e.id).await
    }

    /// Sets the state; `started`/`ended` stamp the start and end times when given.
    pub async fn set_workflow_execution_state(
        &self,
        id: &str,
        state: &str,
        started: Option<DateTime<Utc>>,
        ended: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let _timer = aiflow_db::QueryTimer::new("meta", "set_workflow_execution_state");
        let done = sqlx::query(
            "UPDATE workflow_executions SET state = $1, updated_at = $2, \
             started_at = COALESCE($3, started_at), ended_at = COALESCE($4, ended_at) WHERE id = $5",
        )
        .bind(state)
        .bind(now_us())
        .bind(started.map(to_us))
        .bind(ended.map(to_us))
        .bind(id)
        .execute(&self.db.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("workflow execution", id));
        }
        Ok(())
    }

    pub async fn get_workflow_execution(&self, id: &str) -> Result<WorkflowExecutionInfo> {
        let _timer = aiflow_db::QueryTimer::new("meta", "get_workflow_execution");
        let mut s = Sql::new(WE_SELECT);
        s.push(" WHERE e.id = ").bind(id);
        match s.query().fetch_optional(&self.db.pool).await? {
            Some(r) => execution_row(&r),
            None => Err(Error::not_found("workflow execution", id)),
        }
    }

    /// Workflow executions, oldest first (newest first with `order=desc`), filtered by workflow
    /// name and state.
    pub async fn list_workflow_executions(
        &self,
        q: &ExecutionQuery,
    ) -> Result<Page<WorkflowExecutionInfo>> {
        let _timer = aiflow_db::QueryTimer::new("meta", "list_workflow_executions");
        let limit = page_limit(
            q.limit,
            aiflow_api::page::DEFAULT_LIMIT,
            aiflow_api::page::MAX_LIMIT,
        )?;
        let mut s = Sql::new(WE_SELECT);
        s.push(" WHERE 1 = 1");
        if let Some(w) = &q.workflow {
            s.push(" AND w.name = ")
                .bind(w)
                .push(" AND w.deleted_at IS NULL");
        }
        if let Some(st) = &q.state {
            s.push(" AND e.state = ").bind(st);
        }
        let desc = q.order == Some(SortOrder::Desc);
        let (after, order) = if desc {
            ("<", " ORDER BY e.created_at DESC, e.id DESC LIMIT ")
        } else {
            (">", " ORDER BY e.created_at, e.id LIMIT ")
        };
        if let Some(c) = &q.cursor {
            let (t, id) = decode_exec_cursor(c)?;
            s.push(&format!(" AND (e.created_at {after} "))
                .bind(t)
                .push(" OR (e.created_at = ")
                .bind(t)
                .push(&format!(" AND e.id {after} "))
                .bind(id)
                .push("))");
        }
        s.push(order).bind(limit + 1);
        let mut rows = s.query().fetch_all(&self.db.pool).await?;
        let next = cut(&mut rows, limit)?;
        to_page(rows, next, execution_row)
    }

    pub async fn create_job_execution(&self, j: &NewJobExecution) -> Result<JobExecutionInfo> {
        let _timer = aiflow_db::QueryTimer::new("meta", "create_job_execution");
        let props = properties_text(j.properties.as_ref())?;
        let now = now_us();
        sqlx::query(
            "INSERT INTO job_executions (id, workflow_execution_id, job_name, attempt, state, worker, \
             properties, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        )
        .bind(&j.id)
        .bind(j.workflow_execution.clone())
        .bind(&j.job)
        .bind(j.attempt.max(1))
        .bind(&j.state)
        .bind(j.worker.clone())
        .bind(props)
        .bind(now)
        .execute(&self.db.pool)
        .await
        .map_err(|err| {
            if super::sql::is_unique_violation(&err) {
                Error::conflict(Some("id"), format!("job execution {:?} already exists", j.id))
            } else if matches!(&err, sqlx::Error::Database(d) if d.is_foreign_key_violation()) {
                Error::unknown("workflow_execution", "workflow_execution: no such workflow execution")
            } else {
                Error::Db(err)
            }
        })?;
        self.get_job_execution(&j.id).await
    }

    /// Sets a job execution's state (and exit code, start and end times when given).
    pub async fn set_job_execution_state(
        &self,
        id: &str,
        state: &str,
        exit_code: Option<i64>,
        started: Option<DateTime<Utc>>,
        ended: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let _timer = aiflow_db::QueryTimer::new("meta", "set_job_execution_state");
        let done = sqlx::query(
            "UPDATE job_executions SET state = $1, updated_at = $2, exit_code = COALESCE($3, exit_code), \
             started_at = COALESCE($4, started_at), ended_at = COALESCE($5, ended_at) WHERE id = $6",
        )
        .bind(state)
        .bind(now_us())
        .bind(exit_code)
        .bind(started.map(to_us))
        .bind(ended.map(to_us))
        .bind(id)
        .execute(&self.db.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("job execution", id));
        }
        Ok(())
    }

    pub async fn get_job_execution(&self, id: &str) -> Result<JobExecutionInfo> {
        let _timer = aiflow_db::QueryTimer::new("meta", "get_job_execution");
        let mut s = Sql::new(JE_SELECT);
        s.push(" WHERE id = ").bind(id);
        match s.query().fetch_optional(&self.db.pool).await? {
            Some(r) => job_row(&r),
            None => Err(Error::not_found("job execution", id)),
        }
    }

    /// The job executions of one workflow execution, oldest first.
    pub async fn list_job_executions(&self, execution: &str) -> Result<Vec<JobExecutionInfo>> {
        self.list_job_executions_limited(execution, None).await
    }

    /// The first `limit` job executions of an execution (all without one), oldest first.
    pub async fn list_job_executions_limited(
        &self,
        execution: &str,
        limit: Option<i64>,
    ) -> Result<Vec<JobExecutionInfo>> {
        let _timer = aiflow_db::QueryTimer::new("meta", "list_job_executions");
        self.get_workflow_execution(execution).await?;
        let mut s = Sql::new(JE_SELECT);
        s.push(" WHERE workflow_execution_id = ")
            .bind(execution)
            .push(" ORDER BY created_at, id");
        if let Some(n) = limit {
            s.push(" LIMIT ").bind(n);
        }
        let rows = s.query().fetch_all(&self.db.pool).await?;
        rows.iter().map(job_row).collect()
    }
}

fn version_info(r: &AnyRow) -> Result<WorkflowVersionInfo> {
    Ok(WorkflowVersionInfo {
        workflow: get_s(r, "name")?,
        version: get_i(r, "version")?,
        graph: get_ojson(r, "graph")?,
        workflow_doc: get_json(r, "workflow")?,
        created_at: get_time(r, "created_at")?,
    })
}

fn cut(rows: &mut Vec<AnyRow>, limit: i64) -> Result<Option<String>> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(exec_cursor).transpose()
    } else {
        Ok(None)
    }
}
