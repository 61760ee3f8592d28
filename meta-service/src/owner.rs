//! A job's token acts on its own things: it may delete or change (`DELETE`, `PATCH`) only the
//! named meta records (projects, datasets, models, metrics, artifacts) it created itself, and
//! the records it creates are marked `created_by = "execution:<id>"`. Other callers are not
//! affected (docs/security.md).

use aiflow_api::server::{HttpError, JobScope};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::Store;
use crate::error::Result;

/// Route segment → table of the named records a job's token may only change when it made them.
const KINDS: [(&str, &str); 5] = [
    ("projects", "meta_projects"),
    ("datasets", "meta_datasets"),
    ("models", "meta_models"),
    ("metrics", "meta_metrics"),
    ("artifacts", "meta_artifacts"),
];

/// Largest answer of a create read back for the new record's name.
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// What a job's records say in `created_by`.
fn creator(scope: &JobScope) -> String {
    format!("execution:{}", scope.execution)
}

/// `%XX` decoded (a name in a path); `None` when that is not UTF-8.
fn decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = segment.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Middleware on the meta routes; see the module documentation.
pub(crate) async fn guard(State(store): State<Store>, req: Request, next: Next) -> Response {
    let Some(scope) = req.extensions().get::<JobScope>().cloned() else {
        return next.run(req).await;
    };
    let path = req.uri().path();
    let path = path.strip_prefix("/api/v1").unwrap_or(path);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let Some(table) = segments
        .first()
        .and_then(|s| KINDS.iter().find(|(k, _)| k == s))
        .map(|(_, t)| *t)
    else {
        return next.run(req).await;
    };
    let method = req.method().clone();
    match (&method, segments.len()) {
        (&Method::DELETE | &Method::PATCH, 2) => {
            let Some(name) = decode(segments[1]) else {
                return next.run(req).await;
            };
            match store.created_by(table, &name).await {
                Ok(Some(by)) if by.as_deref() != Some(creator(&scope).as_str()) => {
                    HttpError::new(
                        StatusCode::FORBIDDEN,
                        "permission_denied",
                        format!(
                            "a job's token may {} only the records its own execution created; {} {name:?} was not created by execution {}",
                            if method == Method::DELETE { "delete" } else { "change" },
                            &segments[0][..segments[0].len() - 1],
                            scope.execution
                        ),
                    )
                    .field("name")
                    .into_response()
                }
                Ok(_) => next.run(req).await,
                Err(e) => HttpError::from(e).into_response(),
            }
        }
        (&Method::POST, 1) => {
            let resp = next.run(req).await;
            if resp.status() != StatusCode::CREATED {
                return resp;
            }
            let (parts, body) = resp.into_parts();
            let bytes = match axum::body::to_bytes(body, MAX_ANSWER).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read back a created record");
                    return Response::from_parts(parts, Body::empty());
                }
            };
            let name = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_string));
            if let Some(name) = name
                && let Err(e) = store.set_created_by(table, &name, &creator(&scope)).await
            {
                tracing::warn!(table, name, error = %e, "cannot record who created a meta record");
            }
            Response::from_parts(parts, Body::from(bytes))
        }
        _ => next.run(req).await,
    }
}

impl Store {
    /// (`table` is one of [`KINDS`], never a caller's text.)
    ///
    /// `created_by` of the live record `name` of `table` (one of [`KINDS`]); `None` when there
    /// is no such record.
    pub(crate) async fn created_by(
        &self,
        table: &str,
        name: &str,
    ) -> Result<Option<Option<String>>> {
        let sql = format!("SELECT created_by FROM {table} WHERE name = $1 AND deleted_at IS NULL");
        let row: Option<(Option<String>,)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(row.map(|(by,)| by))
    }

    /// Marks the live record `name` of `table` as created by `by`.
    pub(crate) async fn set_created_by(&self, table: &str, name: &str, by: &str) -> Result<()> {
        let sql =
            format!("UPDATE {table} SET created_by = $1 WHERE name = $2 AND deleted_at IS NULL");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(by)
            .bind(name)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn names_in_paths_are_decoded() {
        assert_eq!(decode("a%20b").as_deref(), Some("a b"));
        assert_eq!(decode("plain").as_deref(), Some("plain"));
        assert_eq!(decode("100%").as_deref(), Some("100%"));
        assert_eq!(decode("%e2%82%ac").as_deref(), Some("€"));
        assert_eq!(decode("%ff"), None);
    }
}
