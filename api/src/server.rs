//! Server-side helpers shared by every route group (feature `server`): errors as responses with
//! the JSON body of INTERFACE.md, and a JSON extractor whose rejections name the bad field.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::{ApiError, ErrorBody};

/// An error answer: a status and the error body.
#[derive(Debug, Clone)]
pub struct HttpError {
    pub status: StatusCode,
    pub error: ApiError,
}

impl HttpError {
    #[must_use]
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            error: ApiError::new(code, message),
        }
    }

    /// 400 `invalid_argument` naming `field`.
    #[must_use]
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_argument", message).field(field)
    }

    /// 404 `not_found`.
    #[must_use]
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409 `conflict`.
    #[must_use]
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 500 `internal`; the details go to the log, not to the client.
    #[must_use]
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    #[must_use]
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.error.field = Some(field.into());
        self
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { error: self.error })).into_response()
    }
}

/// `Json<T>` whose rejections are [`HttpError`]s: 413 for a body over the limit, 415 without a
/// JSON content type, 400 for syntax errors and 422 for type errors, naming the field.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = match axum::body::Bytes::from_request(req, state).await {
            Ok(b) => b,
            Err(e) => {
                let status = e.status();
                let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "payload_too_large"
                } else {
                    "invalid_argument"
                };
                return Err(HttpError::new(status, code, e.body_text()).field("body"));
            }
        };
        decode_json(&bytes).map(ApiJson)
    }
}

/// Decodes a JSON body, naming the field at fault.
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, HttpError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let (status, field) = if inner.is_syntax() || inner.is_eof() {
            (StatusCode::BAD_REQUEST, "body".to_string())
        } else if path == "." {
            (StatusCode::UNPROCESSABLE_ENTITY, "body".to_string())
        } else {
            (StatusCode::UNPROCESSABLE_ENTITY, path)
        };
        HttpError::new(status, "invalid_argument", inner.to_string()).field(field)
    })
}

/// Maps axum's own JSON rejections (for handlers that still use `Json`).
impl From<JsonRejection> for HttpError {
    fn from(e: JsonRejection) -> Self {
        HttpError::new(e.status(), "invalid_argument", e.body_text()).field("body")
    }
}

/// Request extension set by the server's authentication when the caller is a running job
/// (its token is scoped to one workflow execution). Routes that accept job tokens use it to
/// keep the job inside its execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobScope {
    /// The workflow execution the job belongs to.
    pub execution: String,
}

/// Request extension set by the server's authentication with the caller's role (authentication
/// on). Routes that must tell admins from other callers read it; it is absent with
/// authentication off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallerRole(pub crate::auth::Role);

/// Middleware: every error answer of the API carries the JSON error body, also those that
/// axum's own extractors write as plain text (a path segment that is not UTF-8, a query string
/// that does not deserialise, a wrong method). Headers such as `Allow` are kept.
pub async fn json_errors(req: Request, next: axum::middleware::Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        StatusCode::UNAUTHORIZED => "unauthenticated",
        StatusCode::FORBIDDEN => "permission_denied",
        s if s.is_server_error() => "internal",
        _ => "invalid_argument",
    };
    let mut error = HttpError::new(status, code, message);
    error.error.field = rejected_field(&error.error.message);
    let mut out = error.into_response();
    for (k, v) in &parts.headers {
        if k != CONTENT_TYPE && k != CONTENT_LENGTH {
            out.headers_mut().append(k.clone(), v.clone());
        }
    }
    out
}

/// The field an axum rejection names: ``Invalid UTF-8 in `name` `` or
/// `Failed to deserialize query string: follow: …`.
fn rejected_field(message: &str) -> Option<String> {
    if let Some((_, rest)) = message.split_once(" in `")
        && let Some((field, _)) = rest.split_once('`')
    {
        return Some(field.to_string());
    }
    let rest = message.strip_prefix("Failed to deserialize query string: ")?;
    let (field, _) = rest.split_once(": ")?;
    field
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
        .then(|| field.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::extract::{Path, Query};
    use axum::routing::get;
    use tower::ServiceExt;

    #[derive(serde::Deserialize)]
    struct Q {
        #[allow(dead_code)]
        follow: Option<bool>,
    }

    async fn call(uri: &str, method: &str) -> (StatusCode, Option<String>, serde_json::Value) {
        let app = Router::new()
            .route(
                "/things/{name}",
                get(|Path(_n): Path<String>, Query(_q): Query<Q>| async { "ok" }),
            )
            .layer(axum::middleware::from_fn(json_errors));
        let resp = app
            .oneshot(
                axum::http::Request::builder()
                    .method(method)
                    .uri(uri)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = resp.status();
        let allow = resp
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, allow, body)
    }

    #[tokio::test]
    async fn axum_rejections_become_json_errors() {
        // Found by schemathesis: these answered 400 in plain text.
        let (s, _, b) = call("/things/%FF", "GET").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(b["error"]["code"], "invalid_argument", "{b}");
        assert_eq!(b["error"]["field"], "name", "{b}");
        let (s, _, b) = call("/things/x?follow=maybe", "GET").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(b["error"]["field"], "follow", "{b}");
        let (s, allow, b) = call("/things/x", "POST").await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(b["error"]["code"], "method_not_allowed", "{b}");
        assert!(allow.is_some_and(|a| a.contains("GET")));
        let (s, _, b) = call("/elsewhere", "GET").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(b["error"]["code"], "not_found", "{b}");
        let (s, _, b) = call("/things/x?follow=true", "GET").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b, serde_json::Value::Null, "a success passes untouched");
    }
}
