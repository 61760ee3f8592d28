//! The one error type of the meta service and its mapping to HTTP answers.

use aiflow_api::server::HttpError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Errors of the meta service. Messages are lower-case and name the thing at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A malformed request part (bad cursor, bad tag URI, bad query value): 400.
    #[error("{message}")]
    Invalid { field: String, message: String },
    /// Well-formed but unacceptable content (bad name, non-object properties): 422.
    #[error("{message}")]
    Unprocessable { field: String, message: String },
    /// The request names something that does not exist (a project, a job execution): 422.
    #[error("{message}")]
    UnknownReference { field: String, message: String },
    /// The addressed thing does not exist: 404.
    #[error("{what} {name:?} not found")]
    NotFound { what: &'static str, name: String },
    /// The change clashes with what is stored (duplicate name, illegal stage move): 409.
    #[error("{message}")]
    Conflict {
        field: Option<String>,
        message: String,
    },
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("event bus: {0}")]
    Bus(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn unprocessable(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Unprocessable {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn unknown(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::UnknownReference {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn not_found(what: &'static str, name: impl Into<String>) -> Self {
        Self::NotFound {
            what,
            name: name.into(),
        }
    }

    pub(crate) fn conflict(field: Option<&str>, message: impl Into<String>) -> Self {
        Self::Conflict {
            field: field.map(str::to_string),
            message: message.into(),
        }
    }

    /// The HTTP status this error answers with.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid { .. } => StatusCode::BAD_REQUEST,
            Self::Unprocessable { .. } | Self::UnknownReference { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Db(e) if aiflow_db::storage_full(e) => StatusCode::INSUFFICIENT_STORAGE,
            Self::Db(_) | Self::Bus(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<Error> for HttpError {
    fn from(e: Error) -> Self {
        let status = e.status();
        match e {
            Error::Invalid { field, message } => HttpError::invalid(field, message),
            Error::Unprocessable { field, message } => {
                HttpError::new(status, "invalid_argument", message).field(field)
            }
            Error::UnknownReference { field, message } => {
                HttpError::new(status, "unknown_reference", message).field(field)
            }
            e @ Error::NotFound { .. } => HttpError::not_found(e.to_string()),
            Error::Conflict { field, message } => {
                let err = HttpError::conflict(message);
                match field {
                    Some(f) => err.field(f),
                    None => err,
                }
            }
            Error::Db(err) if aiflow_db::storage_full(&err) => {
                tracing::error!(error = %err, "metadata store is full");
                HttpError::new(
                    status,
                    "storage_full",
                    "the metadata store has no space left on its disk; nothing was stored",
                )
            }
            e @ (Error::Db(_) | Error::Bus(_)) => {
                tracing::error!(error = %e, "meta service failure");
                HttpError::internal("internal error; see the server log")
            }
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        HttpError::from(self).into_response()
    }
}

#[cfg(test)]
mod tests {
    use aiflow_db::testing::database_error;
    use axum::body::to_bytes;

    use super::*;
    use crate::mlflow::MlError;

    /// The full-disk forms a meta write can meet, as the store reports them.
    fn full_disk_errors() -> Vec<(&'static str, sqlx::Error)> {
        vec![
            (
                "SQLITE_FULL",
                database_error("13", "database or disk is full"),
            ),
            (
                "SQLITE_IOERR_WRITE",
                database_error("778", "disk I/O error"),
            ),
            (
                "SQLITE_IOERR_FSYNC",
                database_error("1034", "disk I/O error"),
            ),
            (
                "SQLITE_IOERR_SHMSIZE",
                database_error("4874", "disk I/O error"),
            ),
            (
                "PostgreSQL disk_full",
                database_error("53100", "could not extend file"),
            ),
            (
                "ENOSPC",
                sqlx::Error::Io(std::io::Error::from_raw_os_error(28)),
            ),
            (
                "a failed migration",
                sqlx::Error::Migrate(Box::new(sqlx::migrate::MigrateError::Execute(
                    database_error("13", "database or disk is full"),
                ))),
            ),
        ]
    }

    async fn body_of(r: Response) -> serde_json::Value {
        serde_json::from_slice(&to_bytes(r.into_body(), 1 << 16).await.unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_full_disk_answers_507_storage_full_in_json() {
        for (what, e) in full_disk_errors() {
            let r = Error::Db(e).into_response();
            assert_eq!(r.status(), StatusCode::INSUFFICIENT_STORAGE, "{what}");
            assert_eq!(
                r.headers()[axum::http::header::CONTENT_TYPE],
                "application/json",
                "{what}"
            );
            let body = body_of(r).await;
            assert_eq!(body["error"]["code"], "storage_full", "{what}: {body}");
        }
        // Other database failures stay 500 `internal`, their details in the log only.
        let r = Error::Db(database_error("5", "database is locked")).into_response();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = body_of(r).await;
        assert_eq!(body["error"]["code"], "internal");
        assert!(!body.to_string().contains("locked"), "{body}");
    }

    #[tokio::test]
    async fn the_mlflow_api_answers_a_full_disk_with_507() {
        for (what, e) in full_disk_errors() {
            let r = MlError::from(Error::Db(e)).into_response();
            assert_eq!(r.status(), StatusCode::INSUFFICIENT_STORAGE, "{what}");
            let body = body_of(r).await;
            assert_eq!(body["error_code"], "RESOURCE_EXHAUSTED", "{what}: {body}");
        }
        let r = MlError::from(Error::Db(sqlx::Error::RowNotFound)).into_response();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
