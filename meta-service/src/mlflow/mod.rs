//! The MLflow REST API (`/api/2.0/mlflow/…` and its `/ajax-api/2.0/mlflow/…` twin) and the
//! `mlflow-artifacts` proxy API, over the meta store: an experiment is a project, a run a job
//! execution, a metric a series of metric points, a registered model a model, a model version a
//! model version. Registrations, alias moves and stage changes go through the same store
//! functions as the native API, so their events leave through the outbox. See docs/mlflow.md.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use aiflow_api::meta::{
    MetaUpdate, ModelStage, ModelStatus, ModelVersion, ModelVersionUpdate, NewModel,
    NewModelVersion,
};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};

use crate::Store;
use crate::error::Error;

pub(crate) mod artifacts;
mod filter;
mod registry;
mod store;

use filter::{Filter, Row, Space, Val};
use store::{NewRun, Point, Run};

/// Largest body of an MLflow API request (artifacts have their own limit).
const API_BODY_LIMIT: usize = 16 * 1024 * 1024;
/// Largest `max_results` of a run search.
const MAX_RUNS: usize = 50_000;

/// What the MLflow routes share.
#[derive(Clone)]
pub(crate) struct Ml {
    store: Store,
    artifacts: Arc<artifacts::Artifacts>,
}

/// The MLflow routes. Artifacts are files under `artifact_dir` on SQLite and rows of the
/// database on PostgreSQL; an upload over `max_artifact_bytes` is refused (413).
pub fn router(store: Store, artifact_dir: PathBuf, max_artifact_bytes: u64) -> axum::Router {
    let st = Ml {
        artifacts: artifact_store(&store, artifact_dir, max_artifact_bytes),
        store,
    };
    axum::Router::new()
        .route("/api/2.0/mlflow/{*endpoint}", any(api))
        .route("/ajax-api/2.0/mlflow/{*endpoint}", any(api))
        .route(
            "/api/2.0/mlflow-artifacts/artifacts",
            any(artifacts::list_root),
        )
        .route(
            "/api/2.0/mlflow-artifacts/artifacts/{*path}",
            any(artifacts::object),
        )
        .with_state(st)
}

/// The artifact store of `store`: on PostgreSQL every replica serves every file from the
/// database; on SQLite, files under `artifact_dir`.
pub(crate) fn artifact_store(
    store: &Store,
    artifact_dir: PathBuf,
    max_artifact_bytes: u64,
) -> Arc<artifacts::Artifacts> {
    let db = (store.db().backend == aiflow_db::Backend::Postgres).then(|| store.clone());
    Arc::new(artifacts::Artifacts::new(
        artifact_dir,
        max_artifact_bytes,
        db,
    ))
}

/// An MLflow error: `{"error_code": …, "message": …}` with its HTTP status.
#[derive(Debug)]
pub(crate) struct MlError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

pub(crate) type MlResult<T> = Result<T, MlError>;

impl MlError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "INVALID_PARAMETER_VALUE",
            message: message.into(),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "RESOURCE_DOES_NOT_EXIST",
            message: message.into(),
        }
    }

    /// 507 `RESOURCE_EXHAUSTED`: `what` has no space left on its disk; nothing was stored.
    pub(crate) fn storage_full(what: &str) -> Self {
        Self {
            status: StatusCode::INSUFFICIENT_STORAGE,
            code: "RESOURCE_EXHAUSTED",
            message: format!("{what} has no space left on its disk; nothing was stored"),
        }
    }

    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<Error> for MlError {
    fn from(e: Error) -> Self {
        match e {
            e @ Error::NotFound { .. } => Self::not_found(e.to_string()),
            Error::Conflict {
                field: Some(f),
                message,
            } if f == "name" => Self {
                status: StatusCode::BAD_REQUEST,
                code: "RESOURCE_ALREADY_EXISTS",
                message,
            },
            Error::Invalid { message, .. }
            | Error::Unprocessable { message, .. }
            | Error::UnknownReference { message, .. }
            | Error::Conflict { message, .. } => Self::invalid(message),
            Error::Db(err) if aiflow_db::storage_full(&err) => {
                tracing::error!(error = %err, "metadata store is full");
                Self::storage_full("the metadata store")
            }
            e @ (Error::Db(_) | Error::Bus(_)) => {
                tracing::error!(error = %e, "mlflow api failure");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL_ERROR",
                    "internal error; see the server log",
                )
            }
        }
    }
}

impl IntoResponse for MlError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error_code": self.code, "message": self.message})),
        )
            .into_response()
    }
}

/// A request's parameters: the query string and the JSON body, merged.
#[derive(Debug, Default)]
pub(crate) struct Req(serde_json::Map<String, Value>);

impl Req {
    fn parse(uri: &Uri, body: &[u8]) -> MlResult<Self> {
        let mut map = serde_json::Map::new();
        if uri.query().is_some() {
            let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
                .map_err(|e| MlError::invalid(format!("bad query string: {}", e.body_text())))?;
            for (k, v) in pairs.0 {
                match map.get_mut(&k) {
                    Some(Value::Array(a)) => a.push(Value::String(v)),
                    Some(old) => {
                        let first = old.take();
                        *old = Value::Array(vec![first, Value::String(v)]);
                    }
                    None => {
                        map.insert(k, Value::String(v));
                    }
                }
            }
        }
        if !body.iter().all(u8::is_ascii_whitespace) {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(o)) => map.extend(o),
                Ok(_) => return Err(MlError::invalid("the request body must be a JSON object")),
                Err(e) => {
                    return Err(MlError::invalid(format!(
                        "the request body is not valid JSON: {e}"
                    )));
                }
            }
        }
        Ok(Self(map))
    }

    /// A string parameter (numbers and booleans as text).
    pub(crate) fn s(&self, k: &str) -> Option<String> {
        match self.0.get(k)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            Value::Array(a) => a.first().and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                _ => None,
            }),
            v => Some(v.to_string()),
        }
    }

    pub(crate) fn req(&self, k: &str) -> MlResult<String> {
        self.s(k)
            .ok_or_else(|| MlError::invalid(format!("Missing value for required parameter '{k}'")))
    }

    pub(crate) fn i(&self, k: &str) -> MlResult<Option<i64>> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| n.as_f64().map(|f| f as i64))
                .map(Some)
                .ok_or_else(|| MlError::invalid(format!("{k}: {n} is not an integer"))),
            Some(_) => {
                let s = self.s(k).unwrap_or_default();
                s.trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| MlError::invalid(format!("{k}: {s:?} is not an integer")))
            }
        }
    }

    pub(crate) fn f(&self, k: &str) -> MlResult<Option<f64>> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(_) => {
                let s = self.s(k).unwrap_or_default();
                s.trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| MlError::invalid(format!("{k}: {s:?} is not a number")))
            }
        }
    }

    pub(crate) fn b(&self, k: &str) -> bool {
        match self.0.get(k) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
            _ => false,
        }
    }

    /// A repeated parameter: a JSON array or one or more query values.
    pub(crate) fn list(&self, k: &str) -> Vec<Value> {
        match self.0.get(k) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(v) => vec![v.clone()],
        }
    }

    pub(crate) fn strings(&self, k: &str) -> Vec<String> {
        self.list(k)
            .into_iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s),
                Value::Null => None,
                v => Some(v.to_string()),
            })
            .collect()
    }

    /// `[{"key": …, "value": …}]` as pairs.
    pub(crate) fn key_values(&self, k: &str) -> MlResult<Vec<(String, String)>> {
        self.list(k)
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let key = t["key"].as_str().ok_or_else(|| {
                    MlError::invalid(format!("{k}[{i}].key is required and must be a string"))
                })?;
                let value = match &t["value"] {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    v => v.to_string(),
                };
                Ok((key.to_string(), value))
            })
            .collect()
    }
}

/// A page of `items` from an offset token.
pub(crate) fn paginate<T>(
    items: Vec<T>,
    max: usize,
    token: Option<&str>,
) -> MlResult<(Vec<T>, Option<String>)> {
    let start = match token.filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => t
            .strip_prefix("off-")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| {
                MlError::invalid(format!(
                    "page_token {t:?} is not a token this server gave out"
                ))
            })?,
    };
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(start).take(max).collect();
    let next = (start + page.len() < total).then(|| format!("off-{}", start + page.len()));
    Ok((page, next))
}

fn max_results(req: &Req, default: usize, cap: usize) -> MlResult<usize> {
    match req.i("max_results")? {
        None => Ok(default),
        Some(n) if n < 1 => Err(MlError::invalid(format!(
            "max_results must be at least 1, got {n}"
        ))),
        Some(n) if n as usize > cap => Err(MlError::invalid(format!(
            "max_results {n} is over the largest page of {cap}"
        ))),
        Some(n) => Ok(n as usize),
    }
}

fn parse_filter(req: &Req, allowed: &[&str], what: &str) -> MlResult<Filter> {
    let text = req.s("filter").unwrap_or_default();
    let f = Filter::parse(&text).map_err(|e| MlError::invalid(format!("filter {text:?}: {e}")))?;
    if let Some(a) = f.attributes().find(|a| !allowed.contains(a)) {
        return Err(MlError::invalid(format!(
            "filter {text:?}: {a:?} is not an attribute of {what}; use one of {}",
            allowed.join(", ")
        )));
    }
    Ok(f)
}

fn parse_order(req: &Req, allowed: &[&str], what: &str) -> MlResult<Vec<filter::OrderTerm>> {
    let terms = req.strings("order_by");
    let parsed = filter::parse_order(&terms).map_err(MlError::invalid)?;
    for t in &terms {
        if let Ok(f) = Filter::parse(&format!(
            "{} IS NULL",
            t.split_whitespace().next().unwrap_or("")
        )) && let Some(a) = f.attributes().find(|a| !allowed.contains(a))
        {
            return Err(MlError::invalid(format!(
                "order_by {t:?}: {a:?} is not an attribute of {what}; use one of {}",
                allowed.join(", ")
            )));
        }
    }
    Ok(parsed)
}

async fn api(
    State(st): State<Ml>,
    Path(endpoint): Path<String>,
    method: Method,
    uri: Uri,
    body: Body,
) -> Response {
    let bytes = match axum::body::to_bytes(body, API_BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            return MlError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "INVALID_PARAMETER_VALUE",
                format!("the request body is over the limit of {API_BODY_LIMIT} bytes"),
            )
            .into_response();
        }
    };
    let req = match Req::parse(&uri, &bytes) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match dispatch(&st, &method, endpoint.trim_end_matches('/'), &req).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => {
            tracing::debug!(endpoint, code = e.code, message = %e.message, "mlflow request refused");
            e.into_response()
        }
    }
}

async fn dispatch(st: &Ml, method: &Method, endpoint: &str, req: &Req) -> MlResult<Value> {
    let s = &st.store;
    match endpoint {
        // ---- experiments
        "experiments/create" => {
            let name = req.req("name")?;
            let tags: BTreeMap<_, _> = req.key_values("tags")?.into_iter().collect();
            let id = s.ml_create_experiment(&name, &tags).await?;
            Ok(json!({"experiment_id": id.to_string()}))
        }
        "experiments/get" => {
            let e = s.ml_experiment(&req.req("experiment_id")?).await?;
            Ok(json!({"experiment": experiment_json(&e)}))
        }
        "experiments/get-by-name" => {
            let name = req.req("experiment_name")?;
            let e = s.ml_experiment_by_name(&name).await.map_err(|_| {
                MlError::not_found(format!("Could not find experiment with name '{name}'"))
            })?;
            Ok(json!({"experiment": experiment_json(&e)}))
        }
        "experiments/search" | "experiments/list" => search_experiments(s, req).await,
        "experiments/update" => {
            let e = s.ml_experiment(&req.req("experiment_id")?).await?;
            if let Some(n) = req.s("new_name") {
                s.ml_rename_experiment(e.id, &n).await?;
            }
            Ok(json!({}))
        }
        "experiments/delete" | "experiments/restore" => {
            let e = s.ml_experiment(&req.req("experiment_id")?).await?;
            s.ml_set_experiment_deleted(e.id, endpoint.ends_with("delete"))
                .await?;
            Ok(json!({}))
        }
        "experiments/set-experiment-tag" | "experiments/delete-experiment-tag" => {
            let mut e = s.ml_experiment(&req.req("experiment_id")?).await?;
            let key = req.req("key")?;
            if endpoint.ends_with("set-experiment-tag") {
                e.tags.insert(key, req.s("value").unwrap_or_default());
            } else if e.tags.remove(&key).is_none() {
                return Err(MlError::not_found(format!(
                    "no tag {key:?} on experiment {}",
                    e.id
                )));
            }
            s.ml_set_experiment_tags(e.id, &e.tags).await?;
            Ok(json!({}))
        }
        // ---- runs
        "runs/create" => {
            let exp = s
                .ml_experiment(&req.s("experiment_id").unwrap_or_else(|| "0".into()))
                .await?;
            if exp.deleted {
                return Err(MlError::invalid(format!(
                    "experiment {:?} is deleted: restore it to log runs to it",
                    exp.name
                )));
            }
            let tags: BTreeMap<_, _> = req.key_values("tags")?.into_iter().collect();
            let name = req
                .s("run_name")
                .filter(|n| !n.is_empty())
                .or_else(|| tags.get(store::RUN_NAME_TAG).cloned())
                .unwrap_or_else(|| {
                    format!("run-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
                });
            let id = s
                .ml_create_run(
                    &NewRun {
                        experiment_id: exp.id,
                        name,
                        user_id: req.s("user_id"),
                        start_ms: req.i("start_time")?,
                        tags,
                    },
                    artifacts::SCHEME_ROOT,
                )
                .await?;
            Ok(json!({"run": run_json(&s.ml_run(&id).await?)}))
        }
        "runs/get" => Ok(json!({"run": run_json(&s.ml_run(&run_id(req)?).await?)})),
        "runs/update" => {
            let id = run_id(req)?;
            let state = req.s("status").map(|st| status_to_state(&st)).transpose()?;
            s.ml_update_run(&id, state, req.i("end_time")?, req.s("run_name").as_deref())
                .await?;
            let run = s.ml_run(&id).await?;
            Ok(json!({"run_info": run_json(&run)["info"]}))
        }
        "runs/delete" | "runs/restore" => {
            s.ml_set_run_deleted(&run_id(req)?, endpoint.ends_with("delete"))
                .await?;
            Ok(json!({}))
        }
        "runs/log-metric" => {
            let run = active_run(s, req).await?;
            let p = Point {
                key: req.req("key")?,
                value: metric_value(req.f("value")?, "value")?,
                step: req.i("step")?.unwrap_or(0),
                ts_ms: req.i("timestamp")?.unwrap_or_else(now_ms),
            };
            s.ml_log_batch(&run, &[], &[], &[p]).await?;
            Ok(json!({}))
        }
        "runs/log-parameter" => {
            let run = active_run(s, req).await?;
            let kv = (req.req("key")?, req.s("value").unwrap_or_default());
            s.ml_log_batch(&run, &[kv], &[], &[]).await?;
            Ok(json!({}))
        }
        "runs/set-tag" => {
            let run = active_run(s, req).await?;
            let kv = (req.req("key")?, req.s("value").unwrap_or_default());
            if kv.0 == store::RUN_NAME_TAG {
                s.ml_update_run(&run.id, None, None, Some(&kv.1)).await?;
            }
            s.ml_log_batch(&run, &[], &[kv], &[]).await?;
            Ok(json!({}))
        }
        "runs/delete-tag" => {
            let run = active_run(s, req).await?;
            s.ml_delete_tag(&run.id, &req.req("key")?).await?;
            Ok(json!({}))
        }
        "runs/log-batch" => {
            let run = active_run(s, req).await?;
            let params = req.key_values("params")?;
            let tags = req.key_values("tags")?;
            let mut points = Vec::new();
            for (i, m) in req.list("metrics").iter().enumerate() {
                let one = Req(m.as_object().cloned().unwrap_or_default());
                points.push(Point {
                    key: one
                        .s("key")
                        .ok_or_else(|| MlError::invalid(format!("metrics[{i}].key is required")))?,
                    value: metric_value(one.f("value")?, &format!("metrics[{i}].value"))?,
                    step: one.i("step")?.unwrap_or(0),
                    ts_ms: one.i("timestamp")?.unwrap_or_else(now_ms),
                });
            }
            if let Some((_, n)) = tags.iter().find(|(k, _)| k == store::RUN_NAME_TAG) {
                s.ml_update_run(&run.id, None, None, Some(n)).await?;
            }
            s.ml_log_batch(&run, &params, &tags, &points).await?;
            Ok(json!({}))
        }
        "runs/log-inputs" => {
            let run = active_run(s, req).await?;
            s.ml_log_inputs(&run.id, &req.list("datasets")).await?;
            Ok(json!({}))
        }
        "runs/search" => search_runs(s, req).await,
        "metrics/get-history" => {
            let id = run_id(req)?;
            s.ml_run(&id).await?;
            let key = req.req("metric_key")?;
            let all = s.ml_metric_history(&id, &key).await?;
            let max = max_results(req, 25_000, 1_000_000)?;
            let (page, next) = paginate(all, max, req.s("page_token").as_deref())?;
            let mut out = json!({"metrics": page.iter().map(point_json).collect::<Vec<_>>()});
            if let Some(n) = next {
                out["next_page_token"] = n.into();
            }
            Ok(out)
        }
        // Logged models (MLflow 3) are not stored: a search finds none, so the client's
        // `register_model` falls back to the run's artifacts.
        "logged-models/search" => Ok(json!({"models": []})),
        // ---- the model registry
        e if e.starts_with("registered-models/") || e.starts_with("model-versions/") => {
            registry::dispatch(s, method, e, req).await
        }
        _ => Err(MlError::new(
            StatusCode::NOT_FOUND,
            "ENDPOINT_NOT_FOUND",
            format!(
                "{method} /api/2.0/mlflow/{endpoint} is not part of AI Flow's MLflow API (docs/mlflow.md lists what is)"
            ),
        )),
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn metric_value(v: Option<f64>, field: &str) -> MlResult<f64> {
    let v = v.ok_or_else(|| {
        MlError::invalid(format!("Missing value for required parameter '{field}'"))
    })?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(MlError::invalid(format!(
            "{field}: {v} is not stored: AI Flow keeps finite metric values only"
        )))
    }
}

fn run_id(req: &Req) -> MlResult<String> {
    req.s("run_id")
        .or_else(|| req.s("run_uuid"))
        .ok_or_else(|| MlError::invalid("Missing value for required parameter 'run_id'"))
}

async fn active_run(s: &Store, req: &Req) -> MlResult<Run> {
    let run = s.ml_run_brief(&run_id(req)?).await?;
    if run.deleted {
        return Err(MlError::invalid(format!(
            "The run {} must be in the 'active' state. Current state is deleted.",
            run.id
        )));
    }
    Ok(run)
}

// ---- mappings

/// MLflow run status → job execution state.
fn status_to_state(status: &str) -> MlResult<&'static str> {
    Ok(match status {
        "RUNNING" => "RUNNING",
        "SCHEDULED" => "QUEUED",
        "FINISHED" => "SUCCEEDED",
        "FAILED" => "FAILED",
        "KILLED" => "STOPPED",
        other => {
            return Err(MlError::invalid(format!(
                "status {other:?} is not a run status: use RUNNING, SCHEDULED, FINISHED, FAILED or KILLED"
            )));
        }
    })
}

/// Job execution state → MLflow run status.
fn state_to_status(state: &str) -> &'static str {
    match state {
        "QUEUED" | "WAITING" => "SCHEDULED",
        "SUCCEEDED" => "FINISHED",
        "FAILED" => "FAILED",
        "STOPPED" => "KILLED",
        _ => "RUNNING",
    }
}

/// MLflow stage → ours.
pub(crate) fn stage_from_mlflow(stage: &str) -> MlResult<ModelStage> {
    match stage.to_ascii_lowercase().as_str() {
        "none" => Ok(ModelStage::Generated),
        "staging" => Ok(ModelStage::Validated),
        "production" => Ok(ModelStage::Deployed),
        "archived" => Ok(ModelStage::Deprecated),
        _ => Err(MlError::invalid(format!(
            "stage {stage:?} is not a model stage: use None, Staging, Production or Archived"
        ))),
    }
}

pub(crate) fn stage_to_mlflow(stage: ModelStage) -> &'static str {
    match stage {
        ModelStage::Generated => "None",
        ModelStage::Validated => "Staging",
        ModelStage::Deployed => "Production",
        ModelStage::Deprecated => "Archived",
    }
}

fn kv_json(m: &BTreeMap<String, String>) -> Vec<Value> {
    m.iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect()
}

fn experiment_json(e: &store::Experiment) -> Value {
    json!({
        "experiment_id": e.id.to_string(),
        "name": e.name,
        "artifact_location": format!("{}/{}", artifacts::SCHEME_ROOT, e.id),
        "lifecycle_stage": if e.deleted { "deleted" } else { "active" },
        "creation_time": e.created_us / 1000,
        "last_update_time": e.updated_us / 1000,
        "tags": kv_json(&e.tags),
    })
}

fn point_json(p: &Point) -> Value {
    json!({"key": p.key, "value": p.value, "timestamp": p.ts_ms, "step": p.step})
}

fn run_json(r: &Run) -> Value {
    let mut info = json!({
        "run_id": r.id,
        "run_uuid": r.id,
        "run_name": r.name,
        "experiment_id": r.experiment_id.to_string(),
        "status": state_to_status(&r.state),
        "artifact_uri": r.artifact_uri,
        "lifecycle_stage": if r.deleted { "deleted" } else { "active" },
    });
    if let Some(u) = &r.user_id {
        info["user_id"] = u.clone().into();
    }
    if let Some(t) = r.start_ms {
        info["start_time"] = t.into();
    }
    if let Some(t) = r.end_ms {
        info["end_time"] = t.into();
    }
    json!({
        "info": info,
        "data": {
            "metrics": r.metrics.values().map(point_json).collect::<Vec<_>>(),
            "params": kv_json(&r.params),
            "tags": kv_json(&r.tags),
        },
        "inputs": {"dataset_inputs": r.inputs},
    })
}

// ---- searches

impl Row for Run {
    fn get(&self, space: Space, key: &str) -> Option<Val> {
        match space {
            Space::Metric => self.metrics.get(key).map(|p| Val::N(p.value)),
            Space::Param => self.params.get(key).cloned().map(Val::S),
            Space::Tag => self.tags.get(key).cloned().map(Val::S),
            Space::Attribute => match key {
                "run_id" | "run_uuid" => Some(Val::S(self.id.clone())),
                "run_name" => Some(Val::S(self.name.clone())),
                "status" => Some(Val::S(state_to_status(&self.state).into())),
                "user_id" => self.user_id.clone().map(Val::S),
                "artifact_uri" => Some(Val::S(self.artifact_uri.clone())),
                "lifecycle_stage" => Some(Val::S(
                    if self.deleted { "deleted" } else { "active" }.into(),
                )),
                "start_time" | "created" | "Created" => self.start_ms.map(|t| Val::N(t as f64)),
                "end_time" => self.end_ms.map(|t| Val::N(t as f64)),
                _ => None,
            },
        }
    }
}

const RUN_ATTRIBUTES: &[&str] = &[
    "run_id",
    "run_uuid",
    "run_name",
    "status",
    "user_id",
    "artifact_uri",
    "lifecycle_stage",
    "start_time",
    "end_time",
    "created",
    "Created",
];

/// `ACTIVE_ONLY` (default), `DELETED_ONLY` or `ALL`.
fn view_keeps(view: Option<&str>, deleted: bool) -> MlResult<bool> {
    match view.unwrap_or("ACTIVE_ONLY") {
        "ACTIVE_ONLY" | "1" => Ok(!deleted),
        "DELETED_ONLY" | "2" => Ok(deleted),
        "ALL" | "3" => Ok(true),
        v => Err(MlError::invalid(format!(
            "view type {v:?} is not one of ACTIVE_ONLY, DELETED_ONLY, ALL"
        ))),
    }
}

async fn search_runs(s: &Store, req: &Req) -> MlResult<Value> {
    let filter = parse_filter(req, RUN_ATTRIBUTES, "runs")?;
    let order = parse_order(req, RUN_ATTRIBUTES, "runs")?;
    let max = max_results(req, 1000, MAX_RUNS)?;
    let view = req.s("run_view_type");
    let mut ids = Vec::new();
    for e in req.strings("experiment_ids") {
        ids.push(s.ml_experiment(&e).await?.id);
    }
    let mut runs = Vec::new();
    for r in s.ml_runs(None, &ids).await? {
        if view_keeps(view.as_deref(), r.deleted)? && filter.matches(&r) {
            runs.push(r);
        }
    }
    runs.sort_by(|a, b| {
        filter::compare(&order, a, b)
            .then_with(|| b.start_ms.cmp(&a.start_ms))
            .then_with(|| a.id.cmp(&b.id))
    });
    let (page, next) = paginate(runs, max, req.s("page_token").as_deref())?;
    let mut out = json!({"runs": page.iter().map(run_json).collect::<Vec<_>>()});
    if let Some(n) = next {
        out["next_page_token"] = n.into();
    }
    Ok(out)
}

impl Row for store::Experiment {
    fn get(&self, space: Space, key: &str) -> Option<Val> {
        match space {
            Space::Tag => self.tags.get(key).cloned().map(Val::S),
            Space::Attribute => match key {
                "name" => Some(Val::S(self.name.clone())),
                "experiment_id" => Some(Val::S(self.id.to_string())),
                "creation_time" => Some(Val::N((self.created_us / 1000) as f64)),
                "last_update_time" => Some(Val::N((self.updated_us / 1000) as f64)),
                _ => None,
            },
            _ => None,
        }
    }
}

async fn search_experiments(s: &Store, req: &Req) -> MlResult<Value> {
    let allowed = ["name", "experiment_id", "creation_time", "last_update_time"];
    let filter = parse_filter(req, &allowed, "experiments")?;
    let order = parse_order(req, &allowed, "experiments")?;
    let max = max_results(req, 1000, 50_000)?;
    let view = req.s("view_type");
    let mut list = Vec::new();
    for e in s.ml_experiments().await? {
        if view_keeps(view.as_deref(), e.deleted)? && filter.matches(&e) {
            list.push(e);
        }
    }
    list.sort_by(|a, b| {
        filter::compare(&order, a, b)
            .then_with(|| b.created_us.cmp(&a.created_us))
            .then_with(|| a.id.cmp(&b.id))
    });
    let (page, next) = paginate(list, max, req.s("page_token").as_deref())?;
    let mut out = json!({"experiments": page.iter().map(experiment_json).collect::<Vec<_>>()});
    if let Some(n) = next {
        out["next_page_token"] = n.into();
    }
    Ok(out)
}

// ---- registry helpers shared with registry.rs

pub(crate) fn version_json(v: &ModelVersion) -> Value {
    let mlflow = &v.properties["mlflow"];
    let mut out = json!({
        "name": v.model,
        "version": v.version.to_string(),
        "creation_timestamp": v.created_at.timestamp_millis(),
        "last_updated_timestamp": v.updated_at.timestamp_millis(),
        "current_stage": stage_to_mlflow(v.stage),
        "status": match v.status {
            ModelStatus::Ready => "READY",
            ModelStatus::Pending => "PENDING_REGISTRATION",
            ModelStatus::Failed => "FAILED_REGISTRATION",
        },
        "tags": kv_json(&v.tags),
        "aliases": v.aliases,
    });
    if let Some(src) = &v.uri {
        out["source"] = src.clone().into();
    }
    if let Some(d) = &v.description {
        out["description"] = d.clone().into();
    }
    let run = v
        .source_job_execution
        .clone()
        .or_else(|| mlflow["run_id"].as_str().map(str::to_string));
    if let Some(r) = run {
        out["run_id"] = r.into();
    }
    for k in ["run_link", "user_id"] {
        if let Some(x) = mlflow[k].as_str() {
            out[k] = x.into();
        }
    }
    out
}

pub(crate) fn new_version(req: &Req, run_known: bool) -> MlResult<NewModelVersion> {
    let source = req.req("source")?;
    let run = req.s("run_id").filter(|r| !r.is_empty());
    let mut mlflow = serde_json::Map::new();
    for k in ["run_id", "run_link", "user_id"] {
        if let Some(v) = req.s(k).filter(|v| !v.is_empty()) {
            mlflow.insert(k.into(), v.into());
        }
    }
    Ok(NewModelVersion {
        uri: Some(source),
        status: ModelStatus::Ready,
        source_job_execution: run.filter(|_| run_known),
        input_dataset_versions: Vec::new(),
        description: req.s("description"),
        properties: Some(json!({ "mlflow": mlflow })),
        tags: req.key_values("tags")?.into_iter().collect(),
    })
}

pub(crate) fn new_model(req: &Req) -> MlResult<NewModel> {
    Ok(NewModel {
        name: req.req("name")?,
        project: None,
        description: req.s("description"),
        properties: None,
        tags: req.key_values("tags")?.into_iter().collect(),
    })
}

pub(crate) fn description_update(d: String) -> MetaUpdate {
    MetaUpdate {
        description: Some(d),
        properties: None,
        tags: None,
    }
}

pub(crate) fn version_update() -> ModelVersionUpdate {
    ModelVersionUpdate::default()
}
