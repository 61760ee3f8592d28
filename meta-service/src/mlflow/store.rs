//! The SQL behind the MLflow routes: experiments are projects, runs are job executions with a
//! `meta_run_info` row, params and tags are rows of the run, metrics are metric points whose
//! job execution is the run.

use std::collections::BTreeMap;

use aiflow_api::meta::{MetricKind, MetricPoint, NewMetric};
use sqlx::any::AnyRow;

use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::sql::{Sql, get_i, get_oi, get_os, get_s, get_tags, now_us};

/// An experiment: a project.
#[derive(Debug, Clone)]
pub(crate) struct Experiment {
    pub id: i64,
    pub name: String,
    pub tags: BTreeMap<String, String>,
    pub created_us: i64,
    pub updated_us: i64,
    pub deleted: bool,
}

/// One metric point of a run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Point {
    pub key: String,
    pub value: f64,
    pub step: i64,
    pub ts_ms: i64,
}

/// A run with its data.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub id: String,
    pub experiment_id: i64,
    pub name: String,
    pub user_id: Option<String>,
    /// The job execution state word (`RUNNING`, `SUCCEEDED`, …).
    pub state: String,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub artifact_uri: String,
    pub deleted: bool,
    pub params: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    /// The latest point of each key (largest step, then timestamp, then value).
    pub metrics: BTreeMap<String, Point>,
    pub inputs: Vec<serde_json::Value>,
}

/// A run to create.
#[derive(Debug, Clone, Default)]
pub(crate) struct NewRun {
    pub experiment_id: i64,
    pub name: String,
    pub user_id: Option<String>,
    pub start_ms: Option<i64>,
    pub tags: BTreeMap<String, String>,
}

/// The project name of the experiment MLflow calls "0".
pub(crate) const DEFAULT_EXPERIMENT: &str = "Default";
/// The metric entity holding the points of an experiment's runs.
pub(crate) fn metric_name(experiment_id: i64) -> String {
    format!("mlflow-experiment-{experiment_id}")
}

const EXP_SELECT: &str =
    "SELECT id, name, tags, created_at, updated_at, deleted_at FROM meta_projects";

fn experiment_row(r: &AnyRow) -> Result<Experiment> {
    Ok(Experiment {
        id: get_i(r, "id")?,
        name: get_s(r, "name")?,
        tags: get_tags(r, "tags")?,
        created_us: get_i(r, "created_at")?,
        updated_us: get_i(r, "updated_at")?,
        deleted: get_oi(r, "deleted_at")?.is_some(),
    })
}

const RUN_SELECT: &str = "SELECT j.id, j.job_name, j.state, j.started_at, j.ended_at, \
    j.properties, r.project_id, r.user_id, r.artifact_uri, r.deleted_at \
    FROM meta_run_info r JOIN job_executions j ON j.id = r.run_id";

impl Store {
    // ---- experiments

    pub(crate) async fn ml_create_experiment(
        &self,
        name: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<i64> {
        if name.trim().is_empty() {
            return Err(Error::invalid("name", "name: an experiment needs a name"));
        }
        let now = now_us();
        let mut tx = self.begin().await?;
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT deleted_at FROM meta_projects WHERE name = $1 LIMIT 1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?
                .map(|d: Option<i64>| d.unwrap_or(0));
        if let Some(deleted) = exists {
            return Err(Error::conflict(
                Some("name"),
                if deleted > 0 {
                    format!("experiment {name:?} already exists in the deleted state; restore it")
                } else {
                    format!("experiment {name:?} already exists")
                },
            ));
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO meta_projects (name, description, properties, tags, created_at, updated_at) \
             VALUES ($1, NULL, '{}', $2, $3, $3) RETURNING id",
        )
        .bind(name)
        .bind(serde_json::to_string(tags).unwrap_or_default())
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(crate::store::dup("experiment", name))?;
        Self::write_tags(&mut tx, crate::store::entities::PROJECTS, id, tags).await?;
        self.commit(tx, false).await?;
        tracing::info!(experiment = name, id, "experiment created");
        Ok(id)
    }

    /// An experiment by id, deleted ones too; "0" is the default experiment, created on first
    /// use.
    pub(crate) async fn ml_experiment(&self, id: &str) -> Result<Experiment> {
        let id = if id == "0" {
            self.ml_default_experiment().await?
        } else {
            id.parse::<i64>().map_err(|_| {
                Error::invalid(
                    "experiment_id",
                    format!("experiment_id {id:?} is not an experiment id"),
                )
            })?
        };
        let mut s = Sql::new(EXP_SELECT);
        s.push(" WHERE id = ").bind(id);
        match s.query().fetch_optional(&self.db.pool).await? {
            Some(r) => experiment_row(&r),
            None => Err(Error::not_found("experiment", id.to_string())),
        }
    }

    async fn ml_default_experiment(&self) -> Result<i64> {
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM meta_projects WHERE name = $1 AND deleted_at IS NULL",
        )
        .bind(DEFAULT_EXPERIMENT)
        .fetch_optional(&self.db.pool)
        .await?;
        match id {
            Some(id) => Ok(id),
            None => match self
                .ml_create_experiment(DEFAULT_EXPERIMENT, &BTreeMap::new())
                .await
            {
                Ok(id) => Ok(id),
                // Created meanwhile by another request.
                Err(Error::Conflict { .. }) => Box::pin(self.ml_default_experiment()).await,
                Err(e) => Err(e),
            },
        }
    }

    /// The live experiment of a name, else the most recently deleted one.
    pub(crate) async fn ml_experiment_by_name(&self, name: &str) -> Result<Experiment> {
        let mut s = Sql::new(EXP_SELECT);
        s.push(" WHERE name = ")
            .bind(name)
            .push(" ORDER BY CASE WHEN deleted_at IS NULL THEN 0 ELSE 1 END, id DESC LIMIT 1");
        match s.query().fetch_optional(&self.db.pool).await? {
            Some(r) => experiment_row(&r),
            None => Err(Error::not_found("experiment", name)),
        }
    }

    pub(crate) async fn ml_experiments(&self) -> Result<Vec<Experiment>> {
        let mut s = Sql::new(EXP_SELECT);
        s.push(" ORDER BY id");
        let rows = s.query().fetch_all(&self.db.pool).await?;
        rows.iter().map(experiment_row).collect()
    }

    pub(crate) async fn ml_rename_experiment(&self, id: i64, name: &str) -> Result<()> {
        if name.trim().is_empty() {
            return Err(Error::invalid("new_name", "new_name must not be empty"));
        }
        sqlx::query("UPDATE meta_projects SET name = $1, updated_at = $2 WHERE id = $3")
            .bind(name)
            .bind(now_us())
            .bind(id)
            .execute(&self.db.pool)
            .await
            .map_err(crate::store::dup("experiment", name))?;
        Ok(())
    }

    /// Deletes (`true`) or restores (`false`) an experiment.
    pub(crate) async fn ml_set_experiment_deleted(&self, id: i64, deleted: bool) -> Result<()> {
        let now = now_us();
        sqlx::query("UPDATE meta_projects SET deleted_at = $1, updated_at = $2 WHERE id = $3")
            .bind(deleted.then_some(now))
            .bind(now)
            .bind(id)
            .execute(&self.db.pool)
            .await
            .map_err(|e| {
                if crate::store::sql::is_unique_violation(&e) {
                    Error::conflict(
                        Some("name"),
                        "a live experiment of the same name exists; rename it first",
                    )
                } else {
                    Error::Db(e)
                }
            })?;
        Ok(())
    }

    pub(crate) async fn ml_set_experiment_tags(
        &self,
        id: i64,
        tags: &BTreeMap<String, String>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE meta_projects SET tags = $1, updated_at = $2 WHERE id = $3")
            .bind(serde_json::to_string(tags).unwrap_or_default())
            .bind(now_us())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        Self::write_tags(&mut tx, crate::store::entities::PROJECTS, id, tags).await?;
        self.commit(tx, false).await
    }

    // ---- runs

    pub(crate) async fn ml_create_run(&self, r: &NewRun, artifact_root: &str) -> Result<String> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let now = now_us();
        let started = r.start_ms.map_or(now, |ms| ms * 1000);
        let parent = r.tags.get(JOB_TAG).cloned();
        let mut props =
            serde_json::json!({"mlflow": {"experiment_id": r.experiment_id.to_string()}});
        if let Some(p) = &parent {
            props["mlflow"]["job_execution"] = p.clone().into();
        }
        let mut tx = self.begin().await?;
        if let Some(p) = &parent {
            Self::job_execution_ref(&mut tx, p, &format!("tags.{JOB_TAG}")).await?;
        }
        sqlx::query(
            "INSERT INTO job_executions (id, workflow_execution_id, job_name, attempt, state, \
             properties, created_at, started_at, updated_at) VALUES ($1, NULL, $2, 1, 'RUNNING', $3, $4, $5, $4)",
        )
        .bind(&id)
        .bind(&r.name)
        .bind(props.to_string())
        .bind(now)
        .bind(started)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO meta_run_info (run_id, project_id, user_id, artifact_uri) VALUES ($1, $2, $3, $4)",
        )
        .bind(&id)
        .bind(r.experiment_id)
        .bind(r.user_id.clone())
        .bind(format!("{artifact_root}/{}/{id}/artifacts", r.experiment_id))
        .execute(&mut *tx)
        .await?;
        for (k, v) in &r.tags {
            upsert_tag(&mut tx, &id, k, v).await?;
        }
        upsert_tag(&mut tx, &id, RUN_NAME_TAG, &r.name).await?;
        if let Some(p) = &parent {
            // Lineage: what the job read and wrote is what the run did.
            Self::insert_edge(&mut tx, ("job_execution", p), ("job_execution", &id)).await?;
        }
        self.commit(tx, false).await?;
        tracing::info!(run = %id, experiment = r.experiment_id, name = %r.name, "mlflow run created");
        Ok(id)
    }

    /// Runs of the given experiments (one run with `Some`), with their data.
    pub(crate) async fn ml_runs(
        &self,
        run_id: Option<&str>,
        experiments: &[i64],
    ) -> Result<Vec<Run>> {
        self.ml_runs_with(run_id, experiments, true).await
    }

    /// One run without its params, tags and metrics (to check it before logging to it).
    pub(crate) async fn ml_run_brief(&self, id: &str) -> Result<Run> {
        self.ml_runs_with(Some(id), &[], false)
            .await?
            .pop()
            .ok_or_else(|| Error::not_found("run", id))
    }

    async fn ml_runs_with(
        &self,
        run_id: Option<&str>,
        experiments: &[i64],
        data: bool,
    ) -> Result<Vec<Run>> {
        let mut s = Sql::new(RUN_SELECT);
        let mut scope = Sql::new("");
        match run_id {
            Some(id) => {
                s.push(" WHERE r.run_id = ").bind(id);
                scope.push("run_id = ").bind(id);
            }
            None => {
                // Our own integers, not client text.
                let ids = experiments
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                let ids = if ids.is_empty() { "-1".into() } else { ids };
                s.push(&format!(" WHERE r.project_id IN ({ids})"));
                scope.push(&format!("project_id IN ({ids})"));
            }
        }
        let rows = s.query().fetch_all(&self.db.pool).await?;
        let mut runs: BTreeMap<String, Run> = BTreeMap::new();
        for r in &rows {
            let props: serde_json::Value = get_os(r, "properties")?
                .and_then(|p| serde_json::from_str(&p).ok())
                .unwrap_or_default();
            let inputs = props["mlflow"]["inputs"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let id = get_s(r, "id")?;
            runs.insert(
                id.clone(),
                Run {
                    id,
                    experiment_id: get_i(r, "project_id")?,
                    name: get_s(r, "job_name")?,
                    user_id: get_os(r, "user_id")?,
                    state: get_s(r, "state")?,
                    start_ms: get_oi(r, "started_at")?.map(|us| us / 1000),
                    end_ms: get_oi(r, "ended_at")?.map(|us| us / 1000),
                    artifact_uri: get_s(r, "artifact_uri")?,
                    deleted: get_oi(r, "deleted_at")?.is_some(),
                    params: BTreeMap::new(),
                    tags: BTreeMap::new(),
                    metrics: BTreeMap::new(),
                    inputs,
                },
            );
        }
        if runs.is_empty() || !data {
            return Ok(runs.into_values().collect());
        }
        let scoped = |table: &str, cols: &str| {
            let mut q = Sql::new(&format!(
                "SELECT {cols} FROM {table} WHERE run_id IN (SELECT run_id FROM meta_run_info WHERE "
            ));
            q.args.extend(scope.args.iter().cloned());
            q.push(&scope.text).push(")");
            q
        };
        for (table, is_param) in [("meta_run_params", true), ("meta_run_tags", false)] {
            let q = scoped(table, "run_id, k, v");
            for r in q.query().fetch_all(&self.db.pool).await? {
                if let Some(run) = runs.get_mut(&get_s(&r, "run_id")?) {
                    let m = if is_param {
                        &mut run.params
                    } else {
                        &mut run.tags
                    };
                    m.insert(get_s(&r, "k")?, get_s(&r, "v")?);
                }
            }
        }
        let mut q = Sql::new(
            "SELECT job_execution_id AS run_id, key, value, step, ts FROM meta_metric_points \
             WHERE job_execution_id IN (SELECT run_id FROM meta_run_info WHERE ",
        );
        q.args.extend(scope.args.iter().cloned());
        q.push(&scope.text).push(")");
        for r in q.query().fetch_all(&self.db.pool).await? {
            let Some(run) = runs.get_mut(&get_s(&r, "run_id")?) else {
                continue;
            };
            let p = Point {
                key: get_s(&r, "key")?,
                value: crate::store::sql::get_f(&r, "value")?,
                step: get_i(&r, "step")?,
                ts_ms: get_i(&r, "ts")? / 1000,
            };
            match run.metrics.get(&p.key) {
                Some(cur) if (cur.step, cur.ts_ms, cur.value) >= (p.step, p.ts_ms, p.value) => {}
                _ => {
                    run.metrics.insert(p.key.clone(), p);
                }
            }
        }
        Ok(runs.into_values().collect())
    }

    pub(crate) async fn ml_run(&self, id: &str) -> Result<Run> {
        self.ml_runs(Some(id), &[])
            .await?
            .pop()
            .ok_or_else(|| Error::not_found("run", id))
    }

    /// Updates status, end time and name of a run.
    pub(crate) async fn ml_update_run(
        &self,
        id: &str,
        state: Option<&str>,
        end_ms: Option<i64>,
        name: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let mut s = Sql::new("UPDATE job_executions SET updated_at = ");
        s.bind(now_us());
        if let Some(st) = state {
            s.push(", state = ").bind(st);
        }
        if let Some(e) = end_ms {
            s.push(", ended_at = ").bind(e * 1000);
        }
        if let Some(n) = name {
            s.push(", job_name = ").bind(n);
        }
        s.push(" WHERE id = ")
            .bind(id)
            .push(" AND id IN (SELECT run_id FROM meta_run_info)");
        let done = s.query().execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("run", id));
        }
        if let Some(n) = name {
            upsert_tag(&mut tx, id, RUN_NAME_TAG, n).await?;
        }
        self.commit(tx, false).await
    }

    pub(crate) async fn ml_set_run_deleted(&self, id: &str, deleted: bool) -> Result<()> {
        let done = sqlx::query("UPDATE meta_run_info SET deleted_at = $1 WHERE run_id = $2")
            .bind(deleted.then(now_us))
            .bind(id)
            .execute(&self.db.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("run", id));
        }
        Ok(())
    }

    /// Params, tags and metric points of one run in one go (MLflow's log-batch). A param
    /// logged again must keep its value.
    pub(crate) async fn ml_log_batch(
        &self,
        run: &Run,
        params: &[(String, String)],
        tags: &[(String, String)],
        points: &[Point],
    ) -> Result<()> {
        if !params.is_empty() || !tags.is_empty() {
            let mut tx = self.begin().await?;
            for (i, (k, v)) in params.iter().enumerate() {
                let old: Option<String> = sqlx::query_scalar(
                    "SELECT v FROM meta_run_params WHERE run_id = $1 AND k = $2",
                )
                .bind(&run.id)
                .bind(k)
                .fetch_optional(&mut *tx)
                .await?;
                match old {
                    Some(o) if o == *v => {}
                    Some(o) => {
                        return Err(Error::invalid(
                            format!("params[{i}]"),
                            format!(
                                "Changing param values is not allowed. Param with key='{k}' was already logged with value='{o}' for run ID='{}'. Attempted logging new value '{v}'.",
                                run.id
                            ),
                        ));
                    }
                    None => {
                        sqlx::query(
                            "INSERT INTO meta_run_params (run_id, k, v) VALUES ($1, $2, $3)",
                        )
                        .bind(&run.id)
                        .bind(k)
                        .bind(v)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
            }
            for (k, v) in tags {
                upsert_tag(&mut tx, &run.id, k, v).await?;
            }
            self.commit(tx, false).await?;
        }
        if !points.is_empty() {
            let metric = self.ml_experiment_metric(run.experiment_id).await?;
            let pts: Vec<MetricPoint> = points
                .iter()
                .map(|p| MetricPoint {
                    key: p.key.clone(),
                    value: p.value,
                    step: p.step,
                    timestamp: chrono::DateTime::from_timestamp_millis(p.ts_ms),
                    model_version: None,
                    job_execution: Some(run.id.clone()),
                })
                .collect();
            self.log_points(&metric, &pts).await?;
        }
        Ok(())
    }

    /// The metric entity of an experiment, created on first use.
    async fn ml_experiment_metric(&self, experiment_id: i64) -> Result<String> {
        let name = metric_name(experiment_id);
        if self.get_metric(&name).await.is_ok() {
            return Ok(name);
        }
        let project: Option<String> = sqlx::query_scalar(
            "SELECT name FROM meta_projects WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(experiment_id)
        .fetch_optional(&self.db.pool)
        .await?;
        let m = NewMetric {
            name: name.clone(),
            kind: MetricKind::Job,
            subject: None,
            project,
            description: Some("metrics of the MLflow runs of this experiment".into()),
            properties: None,
            tags: BTreeMap::new(),
        };
        match self.create_metric(&m).await {
            Ok(_) | Err(Error::Conflict { .. }) => Ok(name),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn ml_delete_tag(&self, run_id: &str, key: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM meta_run_tags WHERE run_id = $1 AND k = $2")
            .bind(run_id)
            .bind(key)
            .execute(&self.db.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("tag", format!("{key} of run {run_id}")));
        }
        Ok(())
    }

    /// Appends dataset inputs to a run (kept in the run's properties).
    pub(crate) async fn ml_log_inputs(
        &self,
        run_id: &str,
        inputs: &[serde_json::Value],
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let props: Option<String> =
            sqlx::query_scalar("SELECT properties FROM job_executions WHERE id = $1")
                .bind(run_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(props) = props else {
            return Err(Error::not_found("run", run_id));
        };
        let mut props: serde_json::Value =
            serde_json::from_str(&props).unwrap_or_else(|_| serde_json::json!({}));
        if !props["mlflow"].is_object() {
            props["mlflow"] = serde_json::json!({});
        }
        let mut list = props["mlflow"]["inputs"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for i in inputs {
            if !list.contains(i) {
                list.push(i.clone());
            }
        }
        props["mlflow"]["inputs"] = list.into();
        sqlx::query("UPDATE job_executions SET properties = $1, updated_at = $2 WHERE id = $3")
            .bind(props.to_string())
            .bind(now_us())
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        self.commit(tx, false).await
    }

    /// One key's history of a run, by step.
    pub(crate) async fn ml_metric_history(&self, run_id: &str, key: &str) -> Result<Vec<Point>> {
        let rows = sqlx::query(
            "SELECT key, value, step, ts FROM meta_metric_points WHERE job_execution_id = $1 \
             AND key = $2 ORDER BY step, ts, id",
        )
        .bind(run_id)
        .bind(key)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Point {
                    key: get_s(r, "key")?,
                    value: crate::store::sql::get_f(r, "value")?,
                    step: get_i(r, "step")?,
                    ts_ms: get_i(r, "ts")? / 1000,
                })
            })
            .collect()
    }
}

/// The tag MLflow keeps a run's name in.
pub(crate) const RUN_NAME_TAG: &str = "mlflow.runName";
/// A run tag naming the AI Flow job execution the run was logged from (`$AIFLOW_JOB_EXECUTION`).
pub(crate) const JOB_TAG: &str = "aiflow.job_execution";

async fn upsert_tag(tx: &mut crate::store::Tx, run: &str, k: &str, v: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO meta_run_tags (run_id, k, v) VALUES ($1, $2, $3) \
         ON CONFLICT (run_id, k) DO UPDATE SET v = excluded.v",
    )
    .bind(run)
    .bind(k)
    .bind(v)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
