//! The content of AI Flow's own artifacts: `PUT` and `GET /api/v1/artifacts/{name}/content`.
//! The file is kept beside the artifact's metadata in the same store as the `mlflow-artifacts`
//! API (embedded: files under the data folder; distributed: PostgreSQL), keyed by the
//! artifact's id, so a deleted and re-registered name never serves old bytes. Uploads stream
//! (one chunk in memory at a time), are size-limited (413), and are checked against the sha256
//! given in `X-Checksum-Sha256` or recorded on the artifact (422 on a mismatch, nothing kept).
//! A successful upload records the file's sha256 and size on the artifact.

use std::path::PathBuf;
use std::sync::Arc;

use aiflow_api::ErrorBody;
use aiflow_api::meta::{Artifact, ArtifactUpdate};
use aiflow_api::server::HttpError;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::Store;
use crate::mlflow::artifacts::{Artifacts, DRAIN_MAX, drain};
use crate::mlflow::{MlError, artifact_store};

/// The request and answer header carrying a file's sha256 (64 hex digits).
pub const CHECKSUM_HEADER: &str = "x-checksum-sha256";

#[derive(Clone)]
struct Content {
    store: Store,
    artifacts: Arc<Artifacts>,
}

/// The content routes (relative to `/api/v1`). Files go under `artifact_dir` on SQLite and into
/// the database on PostgreSQL, as the `mlflow-artifacts` API's do; an upload over
/// `max_artifact_bytes` is refused.
pub fn content_routes(
    store: Store,
    artifact_dir: PathBuf,
    max_artifact_bytes: u64,
) -> OpenApiRouter {
    let st = Content {
        artifacts: artifact_store(&store, artifact_dir, max_artifact_bytes),
        store,
    };
    OpenApiRouter::new()
        .routes(routes!(put_content, get_content))
        .with_state(st)
}

/// The HTTP error of a store error, naming `field`.
pub(crate) fn http_error(e: MlError, field: &str) -> HttpError {
    let code = match e.status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNPROCESSABLE_ENTITY => "checksum_mismatch",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::BAD_REQUEST => "invalid_argument",
        StatusCode::INSUFFICIENT_STORAGE => {
            return HttpError::new(e.status, "storage_full", e.message);
        }
        _ => return HttpError::internal(e.message),
    };
    HttpError::new(e.status, code, e.message).field(field)
}

/// Uploads the file of an artifact, streamed. The bytes must match the sha256 in
/// `X-Checksum-Sha256` when given, and the artifact's recorded `sha256` when it has one;
/// otherwise nothing is stored (422). Over the server's `--max-artifact-bytes`: 413. A new
/// upload replaces the previous file. Answers the artifact with the file's `sha256` and `size`.
#[utoipa::path(put, path = "/artifacts/{name}/content", tag = "artifacts",
    params(
        ("name" = String, Path, description = "The artifact's name (registered before with POST /artifacts)"),
        ("X-Checksum-Sha256" = Option<String>, Header, nullable = false, pattern = "^[0-9a-fA-F]{64}$", description = "The sha256 of the body, 64 hex digits; the upload is refused when the bytes differ"),
    ),
    request_body(content = String, content_type = "application/octet-stream",
        description = "The file's bytes, sent as they are (not JSON)"),
    responses(
        (status = 200, description = "The file is stored; the artifact with its sha256 and size", body = Artifact),
        (status = 400, description = "The checksum header is not 64 hex digits", body = ErrorBody),
        (status = 404, description = "No artifact of that name", body = ErrorBody),
        (status = 413, description = "The file is over the server's --max-artifact-bytes; nothing was stored", body = ErrorBody),
        (status = 415, description = "The body is not sent as `Content-Type: application/octet-stream` (or JSON)", body = ErrorBody),
        (status = 422, description = "The bytes do not have the expected sha256 (`checksum_mismatch`); nothing was stored", body = ErrorBody),
    ))]
async fn put_content(
    State(st): State<Content>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<Artifact>, HttpError> {
    let mut body = Some(body);
    let result = store_content(&st, &name, &headers, &mut body).await;
    // Refused before the body was read (no artifact, a bad or differing checksum): read it
    // anyway (bounded), so the client hears the answer instead of a reset connection.
    if let (Err(_), Some(unread)) = (&result, body) {
        drain(unread).await;
    }
    result
}

async fn store_content(
    st: &Content,
    name: &str,
    headers: &HeaderMap,
    body: &mut Option<axum::body::Body>,
) -> Result<Json<Artifact>, HttpError> {
    let name = name.to_string();
    let artifact = st.store.get_artifact(&name).await?;
    let given = match headers.get(CHECKSUM_HEADER) {
        None => None,
        Some(v) => {
            let v = v.to_str().unwrap_or("").trim().to_ascii_lowercase();
            if v.len() != 64 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(HttpError::invalid(
                    CHECKSUM_HEADER,
                    format!("{CHECKSUM_HEADER} must be 64 hex digits, not {v:?}"),
                ));
            }
            Some(v)
        }
    };
    let recorded = artifact.sha256.as_deref().map(str::to_ascii_lowercase);
    if let (Some(g), Some(r)) = (&given, &recorded)
        && g != r
    {
        return Err(HttpError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "checksum_mismatch",
            format!("{CHECKSUM_HEADER} {g} differs from the sha256 {r} recorded on artifact {name:?}; nothing was stored"),
        )
        .field(CHECKSUM_HEADER));
    }
    // Far over the limit: refused before reading. A little over: read to the end first (the
    // client then hears the answer rather than a reset), and refused.
    let max = st.artifacts.max_bytes();
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > max.saturating_add(DRAIN_MAX)
    {
        return Err(HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the file of {len} bytes is over the limit of {max} bytes (--max-artifact-bytes); nothing was stored"),
        )
        .field("body"));
    }
    let field = if given.is_some() {
        CHECKSUM_HEADER
    } else {
        "sha256"
    };
    let (key, path) = st.artifacts.native(artifact.id);
    let stored = st
        .artifacts
        .put(
            &key,
            &path,
            body.take().unwrap_or_default(),
            given.as_deref().or(recorded.as_deref()),
        )
        .await
        .map_err(|e| {
            let f = if e.status == StatusCode::PAYLOAD_TOO_LARGE {
                "body"
            } else {
                field
            };
            http_error(e, f)
        })?;
    tracing::info!(artifact = %name, id = artifact.id, bytes = stored.bytes, sha256 = %stored.sha256, "artifact content stored");
    let size = i64::try_from(stored.bytes).unwrap_or(i64::MAX);
    if recorded.as_deref() == Some(stored.sha256.as_str()) && artifact.size == Some(size) {
        return Ok(Json(artifact));
    }
    let updated = st
        .store
        .update_artifact(
            &name,
            &ArtifactUpdate {
                sha256: Some(stored.sha256),
                size: Some(size),
                ..ArtifactUpdate::default()
            },
        )
        .await?;
    Ok(Json(updated))
}

/// Downloads the file of an artifact, streamed, with its recorded sha256 in
/// `X-Checksum-Sha256`. 404 when the artifact does not exist or has no file yet.
#[utoipa::path(get, path = "/artifacts/{name}/content", tag = "artifacts",
    params(("name" = String, Path, description = "The artifact's name")),
    responses(
        (status = 200, description = "The file's bytes", content_type = "application/octet-stream", body = String,
            headers(("X-Checksum-Sha256" = String, description = "The sha256 recorded on the artifact"))),
        (status = 404, description = "No artifact of that name, or no file uploaded for it", body = ErrorBody),
    ))]
async fn get_content(
    State(st): State<Content>,
    Path(name): Path<String>,
) -> Result<Response, HttpError> {
    let artifact = st.store.get_artifact(&name).await?;
    let (key, path) = st.artifacts.native(artifact.id);
    let mut resp = st.artifacts.get(&key, &path).await.map_err(|e| {
        if e.status == StatusCode::NOT_FOUND {
            HttpError::not_found(format!(
                "artifact {name:?} has no content yet: upload it with PUT /api/v1/artifacts/{{name}}/content"
            ))
            .field("content")
        } else {
            http_error(e, "content")
        }
    })?;
    if let Some(sha) = artifact
        .sha256
        .as_deref()
        .and_then(|s| HeaderValue::from_str(s).ok())
    {
        resp.headers_mut().insert(CHECKSUM_HEADER, sha);
    }
    Ok(resp.into_response())
}
