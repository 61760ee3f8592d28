//! Server-side helpers shared by every route group (feature `server`): errors as responses with
//! the JSON body of INTERFACE.md, and a JSON extractor whose rejections name the bad field.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
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
