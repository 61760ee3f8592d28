//! Integration tests of the meta service: in-process HTTP (`tower::ServiceExt::oneshot`),
//! each run against SQLite and PostgreSQL.

mod bad_input;
mod crash;
mod crud;
mod lineage;
mod metrics;
mod models;
mod openapi;
mod outbox;
mod sdk;
mod tokens;

use aiflow_db::testing::TestDb;
use aiflow_meta::Store;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use utoipa_axum::router::OpenApiRouter;

/// One test's database, store and router.
pub(crate) struct App {
    pub(crate) db: TestDb,
    pub(crate) store: Store,
    pub(crate) router: axum::Router,
}

impl App {
    pub(crate) fn new(db: TestDb) -> Self {
        let store = Store::new(db.db.clone());
        let (router, _api) = OpenApiRouter::new()
            .nest("/api/v1", aiflow_meta::routes(store.clone()))
            .nest("/api/v1", aiflow_meta::run_routes(store.clone()))
            .split_for_parts();
        Self { db, store, router }
    }

    /// Sends a request with an optional JSON body; answers status and JSON (null when empty).
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let body = body.map(|b| b.to_string());
        self.raw(method, path, body).await
    }

    pub(crate) async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("/api/v1{path}"));
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(body.map_or_else(Body::empty, Body::from)).unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, json)
    }

    pub(crate) async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// POST that must succeed; returns the body.
    pub(crate) async fn ok_post(&self, path: &str, body: Value) -> Value {
        let (s, b) = self.post(path, body).await;
        assert!(s.is_success(), "POST {path}: {s} {b}");
        b
    }

    pub(crate) async fn ok_get(&self, path: &str) -> Value {
        let (s, b) = self.get(path).await;
        assert!(s.is_success(), "GET {path}: {s} {b}");
        b
    }

    /// Rows in a table (to check that a failed request wrote nothing).
    pub(crate) async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
            .fetch_one(&self.db.db.pool)
            .await
            .unwrap()
    }
}

/// Asserts a 4xx error body naming `field`.
pub(crate) fn assert_error(status: StatusCode, body: &Value, want: u16, field: &str) {
    assert_eq!(status.as_u16(), want, "body: {body}");
    assert_eq!(body["error"]["field"], field, "body: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// Runs an `async fn(App)` test against SQLite and PostgreSQL.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let db = aiflow_db::testing::TestDb::sqlite().await;
                    super::$name($crate::App::new(db)).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(db) = aiflow_db::testing::TestDb::postgres().await {
                        super::$name($crate::App::new(db)).await;
                    }
                }
            }
        )*
    };
}
