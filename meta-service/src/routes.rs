//! REST routes of the meta service (paths relative to `/api/v1`), each documented with
//! `#[utoipa::path]` and registered with `routes!`, so the OpenAPI document cannot drift.

use aiflow_api::meta::*;
use aiflow_api::server::{ApiJson, HttpError};
use aiflow_api::{ErrorBody, Page, PageQuery};
use axum::Json;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::Store;
use crate::error::Error;

/// Largest request body of the meta routes (413 above).
pub const BODY_LIMIT: usize = 4 * 1024 * 1024;
/// Largest body of `POST /metrics/{name}/points`.
pub const POINTS_BODY_LIMIT: usize = 64 * 1024 * 1024;

type R<T> = Result<Json<T>, HttpError>;
type Created<T> = Result<(StatusCode, Json<T>), HttpError>;

/// `Query<T>` whose rejections are 400s naming the parameter.
#[derive(Debug, Clone, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::try_from_uri(&parts.uri) {
            Ok(q) => Ok(ApiQuery(q.0)),
            Err(e) => {
                let text = e.body_text();
                let detail = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                let (field, message) = match detail.split_once(": ") {
                    Some((f, m)) if !f.contains(' ') => (f.to_string(), format!("{f}: {m}")),
                    _ => ("query".to_string(), detail.to_string()),
                };
                Err(HttpError::invalid(field, message))
            }
        }
    }
}

/// [`ApiJson`] that also names the missing field of a "missing field" error.
#[derive(Debug, Clone, Default)]
pub struct Body<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for Body<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match ApiJson::<T>::from_request(req, state).await {
            Ok(ApiJson(v)) => Ok(Body(v)),
            Err(mut e) => {
                let missing = e
                    .error
                    .message
                    .strip_prefix("missing field `")
                    .and_then(|m| m.split_once('`'))
                    .map(|(name, _)| name.to_string());
                if let Some(name) = missing {
                    let field = match e.error.field.as_deref() {
                        None | Some("body") | Some(".") => name,
                        Some(path) => format!("{path}.{name}"),
                    };
                    e.error.field = Some(field);
                }
                Err(e)
            }
        }
    }
}

fn version_of(v: &str) -> Result<i64, HttpError> {
    v.parse::<i64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
        HttpError::invalid(
            "version",
            format!("version {v:?} is not a positive integer"),
        )
    })
}

fn ok<T>(r: Result<T, Error>) -> R<T> {
    r.map(Json).map_err(HttpError::from)
}

fn created<T>(r: Result<T, Error>) -> Created<T> {
    r.map(|v| (StatusCode::CREATED, Json(v)))
        .map_err(HttpError::from)
}

fn no_content(r: Result<(), Error>) -> Result<StatusCode, HttpError> {
    r.map(|()| StatusCode::NO_CONTENT).map_err(HttpError::from)
}

/// The meta routes, to be nested under `/api/v1`.
pub fn routes(store: Store) -> OpenApiRouter {
    let points = OpenApiRouter::new()
        .routes(routes!(log_points, read_points))
        .routes(routes!(metric_keys))
        .layer(DefaultBodyLimit::max(POINTS_BODY_LIMIT));
    OpenApiRouter::new()
        .routes(routes!(list_projects, create_project))
        .routes(routes!(get_project, update_project, delete_project))
        .routes(routes!(list_datasets, create_dataset))
        .routes(routes!(get_dataset, update_dataset, delete_dataset))
        .routes(routes!(list_dataset_versions, create_dataset_version))
        .routes(routes!(get_dataset_version))
        .routes(routes!(list_models, create_model))
        .routes(routes!(get_model, update_model, delete_model))
        .routes(routes!(list_model_versions, create_model_version))
        .routes(routes!(get_model_version, update_model_version))
        .routes(routes!(stage_history))
        .routes(routes!(get_alias, set_alias, delete_alias))
        .routes(routes!(alias_history))
        .routes(routes!(list_metrics, create_metric))
        .routes(routes!(get_metric, update_metric, delete_metric))
        .routes(routes!(list_artifacts, create_artifact))
        .routes(routes!(get_artifact, update_artifact, delete_artifact))
        .routes(routes!(get_lineage, post_openlineage))
        .routes(routes!(post_lineage_edges))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            store.clone(),
            crate::owner::guard,
        ))
        .merge(points)
        .with_state(store)
}

/// Read routes of workflows and their runs (`/workflows`, `/workflows/{name}`,
/// `/workflows/{name}/versions`, `/workflows/{name}/versions/{version}`, `/executions`,
/// `/executions/{id}`, `/executions/{id}/jobs`, `/job_executions/{id}`).
/// Optional: the scheduler may serve these paths itself instead.
pub fn run_routes(store: Store) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_workflows))
        .routes(routes!(get_workflow))
        .routes(routes!(list_workflow_versions))
        .routes(routes!(get_workflow_version))
        .routes(routes!(list_executions))
        .routes(routes!(get_execution))
        .routes(routes!(list_execution_jobs))
        .routes(routes!(get_job_execution))
        .with_state(store)
}

// ---- projects

#[utoipa::path(get, path = "/projects", tag = "projects", params(ListQuery),
    responses((status = 200, body = Page<Project>), (status = 400, body = ErrorBody)))]
async fn list_projects(
    State(s): State<Store>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> R<Page<Project>> {
    ok(s.list_projects(&q).await)
}

#[utoipa::path(post, path = "/projects", tag = "projects", request_body = NewProject,
    responses((status = 201, body = Project), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_project(State(s): State<Store>, Body(b): Body<NewProject>) -> Created<Project> {
    created(s.create_project(&b).await)
}

#[utoipa::path(get, path = "/projects/{name}", tag = "projects", params(("name" = String, Path)),
    responses((status = 200, body = Project), (status = 404, body = ErrorBody)))]
async fn get_project(State(s): State<Store>, Path(name): Path<String>) -> R<Project> {
    ok(s.get_project(&name).await)
}

#[utoipa::path(patch, path = "/projects/{name}", tag = "projects", params(("name" = String, Path)),
    request_body = MetaUpdate,
    responses((status = 200, body = Project), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_project(
    State(s): State<Store>,
    Path(name): Path<String>,
    Body(b): Body<MetaUpdate>,
) -> R<Project> {
    ok(s.update_project(&name, &b).await)
}

#[utoipa::path(delete, path = "/projects/{name}", tag = "projects", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_project(
    State(s): State<Store>,
    Path(name): Path<String>,
) -> Result<StatusCode, HttpError> {
    no_content(s.delete_project(&name).await)
}

// ---- datasets

#[utoipa::path(get, path = "/datasets", tag = "datasets", params(ListQuery),
    responses((status = 200, body = Page<Dataset>), (status = 400, body = ErrorBody)))]
async fn list_datasets(
    State(s): State<Store>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> R<Page<Dataset>> {
    ok(s.list_datasets(&q).await)
}

#[utoipa::path(post, path = "/datasets", tag = "datasets", request_body = NewDataset,
    responses((status = 201, body = Dataset), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_dataset(State(s): State<Store>, Body(b): Body<NewDataset>) -> Created<Dataset> {
    created(s.create_dataset(&b).await)
}

#[utoipa::path(get, path = "/datasets/{name}", tag = "datasets", params(("name" = String, Path)),
    responses((status = 200, body = Dataset), (status = 404, body = ErrorBody)))]
async fn get_dataset(State(s): State<Store>, Path(name): Path<String>) -> R<Dataset> {
    ok(s.get_dataset(&name).await)
}

#[utoipa::path(patch, path = "/datasets/{name}", tag = "datasets", params(("name" = String, Path)),
    request_body = DatasetUpdate,
    responses((status = 200, body = Dataset), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_dataset(
    State(s): State<Store>,
    Path(name): Path<String>,
    Body(b): Body<DatasetUpdate>,
) -> R<Dataset> {
    ok(s.update_dataset(&name, &b).await)
}

#[utoipa::path(delete, path = "/datasets/{name}", tag = "datasets", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_dataset(
    State(s): State<Store>,
    Path(name): Path<String>,
) -> Result<StatusCode, HttpError> {
    no_content(s.delete_dataset(&name).await)
}

#[utoipa::path(get, path = "/datasets/{name}/versions", tag = "datasets",
    params(("name" = String, Path), PageQuery),
    responses((status = 200, body = Page<DatasetVersion>), (status = 404, body = ErrorBody)))]
async fn list_dataset_versions(
    State(s): State<Store>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> R<Page<DatasetVersion>> {
    ok(s.list_dataset_versions(&name, &q).await)
}

/// Adds the next version and announces it (`DATASET_VERSION_CREATED`, key `dataset/<name>`).
#[utoipa::path(post, path = "/datasets/{name}/versions", tag = "datasets",
    params(("name" = String, Path)), request_body = NewDatasetVersion,
    responses((status = 201, body = DatasetVersion), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_dataset_version(
    State(s): State<Store>,
    Path(name): Path<String>,
    Body(b): Body<NewDatasetVersion>,
) -> Created<DatasetVersion> {
    created(s.create_dataset_version(&name, &b).await)
}

#[utoipa::path(get, path = "/datasets/{name}/versions/{version}", tag = "datasets",
    params(("name" = String, Path), ("version" = i64, Path)),
    responses((status = 200, body = DatasetVersion), (status = 404, body = ErrorBody)))]
async fn get_dataset_version(
    State(s): State<Store>,
    Path((name, version)): Path<(String, String)>,
) -> R<DatasetVersion> {
    let v = version_of(&version)?;
    ok(s.get_dataset_version(&name, v).await)
}

// ---- models

#[utoipa::path(get, path = "/models", tag = "models", params(ListQuery),
    responses((status = 200, body = Page<Model>), (status = 400, body = ErrorBody)))]
async fn list_models(State(s): State<Store>, ApiQuery(q): ApiQuery<ListQuery>) -> R<Page<Model>> {
    ok(s.list_models(&q).await)
}

#[utoipa::path(post, path = "/models", tag = "models", request_body = NewModel,
    responses((status = 201, body = Model), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_model(State(s): State<Store>, Body(b): Body<NewModel>) -> Created<Model> {
    created(s.create_model(&b).await)
}

#[utoipa::path(get, path = "/models/{name}", tag = "models", params(("name" = String, Path)),
    responses((status = 200, body = Model), (status = 404, body = ErrorBody)))]
async fn get_model(State(s): State<Store>, Path(name): Path<String>) -> R<Model> {
    ok(s.get_model(&name).await)
}

#[utoipa::path(patch, path = "/models/{name}", tag = "models", params(("name" = String, Path)),
    request_body = MetaUpdate,
    responses((status = 200, body = Model), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_model(
    State(s): State<Store>,
    Path(name): Path<String>,
    Body(b): Body<MetaUpdate>,
) -> R<Model> {
    ok(s.update_model(&name, &b).await)
}

#[utoipa::path(delete, path = "/models/{name}", tag = "models", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_model(
    State(s): State<Store>,
    Path(name): Path<String>,
) -> Result<StatusCode, HttpError> {
    no_content(s.delete_model(&name).await)
}

/// `?stage=` filter of the version list.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct VersionListQuery {
    /// Only versions in this stage.
    stage: Option<ModelStage>,
    limit: Option<u32>,
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/models/{name}/versions", tag = "models",
    params(("name" = String, Path), VersionListQuery),
    responses((status = 200, body = Page<ModelVersion>), (status = 404, body = ErrorBody)))]
async fn list_model_versions(
    State(s): State<Store>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<VersionListQuery>,
) -> R<Page<ModelVersion>> {
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    };
    ok(s.list_model_versions(&name, q.stage, &page).await)
}

/// Registers the next version (stage GENERATED) and announces it (`MODEL_VERSION_CREATED`,
/// key `model/<name>`).
#[utoipa::path(post, path = "/models/{name}/versions", tag = "models",
    params(("name" = String, Path)), request_body = NewModelVersion,
    responses((status = 201, body = ModelVersion), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_model_version(
    State(s): State<Store>,
    Path(name): Path<String>,
    Body(b): Body<NewModelVersion>,
) -> Created<ModelVersion> {
    created(s.create_model_version(&name, &b).await)
}

#[utoipa::path(get, path = "/models/{name}/versions/{version}", tag = "models",
    params(("name" = String, Path), ("version" = i64, Path)),
    responses((status = 200, body = ModelVersion), (status = 404, body = ErrorBody)))]
async fn get_model_version(
    State(s): State<Store>,
    Path((name, version)): Path<(String, String)>,
) -> R<ModelVersion> {
    let v = version_of(&version)?;
    ok(s.get_model_version(&name, v).await)
}

/// Changes status, uri, description, properties, tags or stage. A stage change is recorded
/// and announced (`MODEL_VALIDATED`, `MODEL_DEPLOYED`, `MODEL_DEPRECATED`); an illegal move is 409.
#[utoipa::path(patch, path = "/models/{name}/versions/{version}", tag = "models",
    params(("name" = String, Path), ("version" = i64, Path)), request_body = ModelVersionUpdate,
    responses((status = 200, body = ModelVersion), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn update_model_version(
    State(s): State<Store>,
    Path((name, version)): Path<(String, String)>,
    Body(b): Body<ModelVersionUpdate>,
) -> R<ModelVersion> {
    let v = version_of(&version)?;
    ok(s.update_model_version(&name, v, &b).await)
}

#[utoipa::path(get, path = "/models/{name}/versions/{version}/stages", tag = "models",
    params(("name" = String, Path), ("version" = i64, Path)),
    responses((status = 200, body = Vec<StageChange>), (status = 404, body = ErrorBody)))]
async fn stage_history(
    State(s): State<Store>,
    Path((name, version)): Path<(String, String)>,
) -> R<Vec<StageChange>> {
    let v = version_of(&version)?;
    ok(s.stage_history(&name, v).await)
}

/// Where an alias points now, or at `?at=` (RFC 3339).
#[utoipa::path(get, path = "/models/{name}/aliases/{alias}", tag = "models",
    params(("name" = String, Path), ("alias" = String, Path), AliasQuery),
    responses((status = 200, body = ModelAlias), (status = 404, body = ErrorBody)))]
async fn get_alias(
    State(s): State<Store>,
    Path((name, alias)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<AliasQuery>,
) -> R<ModelAlias> {
    ok(s.get_alias(&name, &alias, q.at).await)
}

/// Moves an alias to a version (recorded; announced as `MODEL_ALIAS_MOVED`).
#[utoipa::path(put, path = "/models/{name}/aliases/{alias}", tag = "models",
    params(("name" = String, Path), ("alias" = String, Path)), request_body = SetAlias,
    responses((status = 200, body = ModelAlias), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn set_alias(
    State(s): State<Store>,
    Path((name, alias)): Path<(String, String)>,
    Body(b): Body<SetAlias>,
) -> R<ModelAlias> {
    ok(s.set_alias(&name, &alias, b.version).await)
}

#[utoipa::path(delete, path = "/models/{name}/aliases/{alias}", tag = "models",
    params(("name" = String, Path), ("alias" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_alias(
    State(s): State<Store>,
    Path((name, alias)): Path<(String, String)>,
) -> Result<StatusCode, HttpError> {
    no_content(s.delete_alias(&name, &alias).await)
}

#[utoipa::path(get, path = "/models/{name}/aliases/{alias}/history", tag = "models",
    params(("name" = String, Path), ("alias" = String, Path)),
    responses((status = 200, body = Vec<AliasMove>), (status = 404, body = ErrorBody)))]
async fn alias_history(
    State(s): State<Store>,
    Path((name, alias)): Path<(String, String)>,
) -> R<Vec<AliasMove>> {
    ok(s.alias_history(&name, &alias).await)
}

// ---- metrics

#[utoipa::path(get, path = "/metrics", tag = "metrics", params(ListQuery),
    responses((status = 200, body = Page<Metric>), (status = 400, body = ErrorBody)))]
async fn list_metrics(State(s): State<Store>, ApiQuery(q): ApiQuery<ListQuery>) -> R<Page<Metric>> {
    ok(s.list_metrics(&q).await)
}

#[utoipa::path(post, path = "/metrics", tag = "metrics", request_body = NewMetric,
    responses((status = 201, body = Metric), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_metric(State(s): State<Store>, Body(b): Body<NewMetric>) -> Created<Metric> {
    created(s.create_metric(&b).await)
}

#[utoipa::path(get, path = "/metrics/{name}", tag = "metrics", params(("name" = String, Path)),
    responses((status = 200, body = Metric), (status = 404, body = ErrorBody)))]
async fn get_metric(State(s): State<Store>, Path(name): Path<String>) -> R<Metric> {
    ok(s.get_metric(&name).await)
}

#[utoipa::path(patch, path = "/metrics/{name}", tag = "metrics", params(("name" = String, Path)),
    request_body = MetaUpdate,
    responses((status = 200, body = Metric), (status = 404, body = ErrorBody)))]
async fn update_metric(
    State(s): State<Store>,
    Path(name): Path<String>,
    Body(b): Body<MetaUpdate>,
) -> R<Metric> {
    ok(s.update_metric(&name, &b).await)
}

#[utoipa::path(delete, path = "/metrics/{name}", tag = "metrics", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_metric(
    State(s): State<Store>,
    Path(name): Path<String>,
) -> Result<StatusCode, HttpError> {
    no_content(s.delete_metric(&name).await)
}

/// Appends points (an array), all or none. Bodies up to 64 MiB.
#[utoipa::path(post, path = "/metrics/{name}/points", tag = "metrics",
    params(("name" = String, Path)), request_body = Vec<MetricPoint>,
    responses((status = 201, body = PointsWritten), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn log_points(
    State(s): State<Store>,
    Path(name): Path<String>,
    Body(b): Body<Vec<MetricPoint>>,
) -> Created<PointsWritten> {
    created(s.log_points(&name, &b).await)
}

/// One key's history by step (paged), or downsampled with `max_points`.
#[utoipa::path(get, path = "/metrics/{name}/points", tag = "metrics",
    params(("name" = String, Path), PointsQuery),
    responses((status = 200, body = PointSeries), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn read_points(
    State(s): State<Store>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<PointsQuery>,
) -> R<PointSeries> {
    ok(s.read_points(&name, &q).await)
}

/// The keys a metric has points under, each with its number of points.
#[utoipa::path(get, path = "/metrics/{name}/keys", tag = "metrics",
    params(("name" = String, Path)),
    responses((status = 200, body = std::collections::BTreeMap<String, i64>), (status = 404, body = ErrorBody)))]
async fn metric_keys(
    State(s): State<Store>,
    Path(name): Path<String>,
) -> R<std::collections::BTreeMap<String, i64>> {
    ok(s.metric_keys(&name).await)
}

// ---- artifacts

#[utoipa::path(get, path = "/artifacts", tag = "artifacts", params(ListQuery),
    responses((status = 200, body = Page<Artifact>), (status = 400, body = ErrorBody)))]
async fn list_artifacts(
    State(s): State<Store>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> R<Page<Artifact>> {
    ok(s.list_artifacts(&q).await)
}

#[utoipa::path(post, path = "/artifacts", tag = "artifacts", request_body = NewArtifact,
    responses((status = 201, body = Artifact), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_artifact(State(s): State<Store>, Body(b): Body<NewArtifact>) -> Created<Artifact> {
    created(s.create_artifact(&b).await)
}

#[utoipa::path(get, path = "/artifacts/{name}", tag = "artifacts", params(("name" = String, Path)),
    responses((status = 200, body = Artifact), (status = 404, body = ErrorBody)))]
async fn get_artifact(State(s): State<Store>, Path(name): Path<String>) -> R<Artifact> {
    ok(s.get_artifact(&name).await)
}

#[utoipa::path(patch, path = "/artifacts/{name}", tag = "artifacts", params(("name" = String, Path)),
    request_body = ArtifactUpdate,
    responses((status = 200, body = Artifact), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_artifact(
    State(s): State<Store>,
    Path(name): Path<String>,
    Body(b): Body<ArtifactUpdate>,
) -> R<Artifact> {
    ok(s.update_artifact(&name, &b).await)
}

#[utoipa::path(delete, path = "/artifacts/{name}", tag = "artifacts", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_artifact(
    State(s): State<Store>,
    Path(name): Path<String>,
) -> Result<StatusCode, HttpError> {
    no_content(s.delete_artifact(&name).await)
}

// ---- lineage

/// The graph within `depth` hops of `node` (`dataset:NAME@V`, `model:NAME@V`, `job_execution:ID`).
#[utoipa::path(get, path = "/lineage", tag = "lineage", params(LineageQuery),
    responses((status = 200, body = LineageGraph), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn get_lineage(
    State(s): State<Store>,
    ApiQuery(q): ApiQuery<LineageQuery>,
) -> R<LineageGraph> {
    let node = q
        .node
        .ok_or_else(|| HttpError::invalid("node", "node is required"))?;
    ok(s.lineage(&node, q.depth.unwrap_or(1)).await)
}

/// Accepts an OpenLineage RunEvent (START, RUNNING, COMPLETE, FAIL, ABORT).
#[utoipa::path(post, path = "/lineage", tag = "lineage", request_body = OpenLineageRunEvent,
    responses((status = 201, body = OpenLineageResult), (status = 422, body = ErrorBody)))]
async fn post_openlineage(
    State(s): State<Store>,
    scope: Option<axum::Extension<aiflow_api::server::JobScope>>,
    Body(b): Body<OpenLineageRunEvent>,
) -> Created<OpenLineageResult> {
    if let Some(axum::Extension(scope)) = scope {
        own_run(&s, &scope, b.run.run_id.trim(), "run.runId").await?;
    }
    created(s.openlineage(&b).await)
}

/// A job's token reports on the job executions of its own workflow execution only: a run the
/// scheduler keeps for another execution is refused (403 naming `field`). A run unknown to the
/// scheduler (an outside OpenLineage run id) is the job's to report.
async fn own_run(
    s: &Store,
    scope: &aiflow_api::server::JobScope,
    run: &str,
    field: &str,
) -> Result<(), HttpError> {
    match s.get_job_execution(run).await {
        Ok(j) => match j.workflow_execution {
            Some(w) if w != scope.execution => Err(HttpError::new(
                StatusCode::FORBIDDEN,
                "permission_denied",
                format!(
                    "job execution {run} belongs to workflow execution {w}; a job of execution {} may report only on its own",
                    scope.execution
                ),
            )
            .field(field)),
            _ => Ok(()),
        },
        Err(Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Records what a job execution read and wrote.
#[utoipa::path(post, path = "/lineage/edges", tag = "lineage", request_body = NewLineage,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn post_lineage_edges(
    State(s): State<Store>,
    scope: Option<axum::Extension<aiflow_api::server::JobScope>>,
    Body(b): Body<NewLineage>,
) -> Result<StatusCode, HttpError> {
    if let Some(axum::Extension(scope)) = scope {
        own_run(&s, &scope, b.job_execution.trim(), "job_execution").await?;
    }
    no_content(s.add_lineage(&b).await)
}

// ---- workflows and runs (read side)

#[utoipa::path(get, path = "/workflows", tag = "workflows", params(ListQuery),
    responses((status = 200, body = WorkflowList), (status = 400, body = ErrorBody)))]
async fn list_workflows(
    State(s): State<Store>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> R<WorkflowList> {
    let page = s.list_workflows(&q).await;
    let errors = s.dag_load_errors().await;
    ok(page.and_then(|page| {
        Ok(WorkflowList {
            items: page.items,
            next_cursor: page.next_cursor,
            load_errors: errors?,
        })
    }))
}

#[utoipa::path(get, path = "/workflows/{name}", tag = "workflows", params(("name" = String, Path)),
    responses((status = 200, body = WorkflowInfo), (status = 404, body = ErrorBody)))]
async fn get_workflow(State(s): State<Store>, Path(name): Path<String>) -> R<WorkflowInfo> {
    ok(s.get_workflow(&name).await)
}

#[utoipa::path(get, path = "/workflows/{name}/versions", tag = "workflows", params(("name" = String, Path)),
    responses((status = 200, body = Vec<WorkflowVersionInfo>), (status = 404, body = ErrorBody)))]
async fn list_workflow_versions(
    State(s): State<Store>,
    role: Option<axum::Extension<aiflow_api::server::CallerRole>>,
    Path(name): Path<String>,
) -> R<Vec<WorkflowVersionInfo>> {
    let mut versions = s.list_workflow_versions(&name).await?;
    if !sees_env(role) {
        versions.iter_mut().for_each(redact_env);
    }
    Ok(Json(versions))
}

/// What a job's `env` value reads as to callers other than admins.
pub(crate) const REDACTED: &str = "<redacted>";

/// Whether the caller sees the values of jobs' `env`: admins (who submit workflows anyway),
/// and everyone with authentication off (there is no role to tell callers apart; see
/// docs/security.md).
fn sees_env(role: Option<axum::Extension<aiflow_api::server::CallerRole>>) -> bool {
    role.is_none_or(|r| r.0.0 >= aiflow_api::auth::Role::Admin)
}

/// Replaces every `env` value of a version's workflow document and AI graph with
/// [`REDACTED`]; the names stay.
pub(crate) fn redact_env(v: &mut WorkflowVersionInfo) {
    fn redact(env: Option<&mut serde_json::Value>) {
        if let Some(serde_json::Value::Object(env)) = env {
            for value in env.values_mut() {
                *value = serde_json::Value::String(REDACTED.into());
            }
        }
    }
    if let Some(jobs) = v
        .workflow_doc
        .get_mut("jobs")
        .and_then(|j| j.as_array_mut())
    {
        for job in jobs {
            redact(job.get_mut("env"));
        }
    }
    if let Some(nodes) = v
        .graph
        .as_mut()
        .and_then(|g| g.get_mut("nodes"))
        .and_then(|n| n.as_array_mut())
    {
        for node in nodes {
            redact(node.get_mut("job").and_then(|j| j.get_mut("env")));
        }
    }
}

/// One version of a workflow: its AI graph (when submitted as one) and workflow document.
#[utoipa::path(get, path = "/workflows/{name}/versions/{version}", tag = "workflows",
    params(("name" = String, Path), ("version" = i64, Path, description = "1, 2, …")),
    responses((status = 200, body = WorkflowVersionInfo), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_workflow_version(
    State(s): State<Store>,
    role: Option<axum::Extension<aiflow_api::server::CallerRole>>,
    Path((name, version)): Path<(String, String)>,
) -> R<WorkflowVersionInfo> {
    let version = version
        .parse::<i64>()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| HttpError::invalid("version", "version must be a number from 1"))?;
    let mut v = s.get_workflow_version(&name, version).await?;
    if !sees_env(role) {
        redact_env(&mut v);
    }
    Ok(Json(v))
}

#[utoipa::path(get, path = "/executions", tag = "executions", params(ExecutionQuery),
    responses((status = 200, body = Page<WorkflowExecutionInfo>), (status = 400, body = ErrorBody)))]
async fn list_executions(
    State(s): State<Store>,
    ApiQuery(q): ApiQuery<ExecutionQuery>,
) -> R<Page<WorkflowExecutionInfo>> {
    ok(s.list_workflow_executions(&q).await)
}

#[utoipa::path(get, path = "/executions/{id}", tag = "executions", params(("id" = String, Path)),
    responses((status = 200, body = WorkflowExecutionInfo), (status = 404, body = ErrorBody)))]
async fn get_execution(State(s): State<Store>, Path(id): Path<String>) -> R<WorkflowExecutionInfo> {
    ok(s.get_workflow_execution(&id).await)
}

/// One job execution (an attempt of a job) by id, e.g. one a lineage graph names.
#[utoipa::path(get, path = "/job_executions/{id}", tag = "executions", params(("id" = String, Path)),
    responses((status = 200, body = JobExecutionInfo), (status = 404, body = ErrorBody)))]
async fn get_job_execution(State(s): State<Store>, Path(id): Path<String>) -> R<JobExecutionInfo> {
    ok(s.get_job_execution(&id).await)
}

/// Every attempt of every job of an execution, oldest first (a list, not a page); `limit` keeps
/// the first `limit` attempts.
#[utoipa::path(get, path = "/executions/{id}/jobs", tag = "executions", params(("id" = String, Path), aiflow_api::meta::ExecutionJobsQuery),
    responses((status = 200, body = Vec<JobExecutionInfo>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_execution_jobs(
    State(s): State<Store>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<aiflow_api::meta::ExecutionJobsQuery>,
) -> R<Vec<JobExecutionInfo>> {
    let limit = match q.limit {
        None => None,
        Some(n) => Some(crate::store::sql::page_limit(
            Some(n),
            n,
            aiflow_api::page::MAX_LIMIT,
        )?),
    };
    ok(s.list_job_executions_limited(&id, limit).await)
}
