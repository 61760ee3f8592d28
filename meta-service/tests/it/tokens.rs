//! The token store and `/tokens` routes on SQLite and PostgreSQL: create, authenticate,
//! expire, revoke; jobs' tokens are refused when expired, altered, or of no running execution.

use std::time::Duration;

use aiflow_api::auth::Role;
use aiflow_meta::auth::{AuthError, Tokens, token_routes};
use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use utoipa_axum::router::OpenApiRouter;

use crate::{App, both};

both!(tokens_live_expire_and_are_revoked);

async fn call(
    router: &axum::Router,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("/api/v1{path}"));
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn tokens_live_expire_and_are_revoked(app: App) {
    let tokens = Tokens::open(app.db.db.clone()).await.unwrap();
    // A second open of the same database shares the job key: its jobs' tokens are accepted.
    let other = Tokens::open(app.db.db.clone()).await.unwrap();
    let (router, _) = OpenApiRouter::new()
        .nest("/api/v1", token_routes(tokens.clone()))
        .split_for_parts();

    let (s, created) = call(
        &router,
        Method::POST,
        "/tokens",
        Some(json!({"role": "operator", "name": "ci"})),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    let secret = created["token"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    assert!(secret.starts_with(&format!("afl_{id}_")));
    let p = tokens.authenticate(&secret).await.unwrap();
    assert_eq!(
        (p.role, p.name.as_str(), p.execution),
        (Role::Operator, "ci", None)
    );
    // Only a hash is stored.
    let stored: String = sqlx::query_scalar("SELECT secret_sha256 FROM api_tokens WHERE id = $1")
        .bind(&id)
        .fetch_one(&app.db.db.pool)
        .await
        .unwrap();
    assert!(!secret.contains(&stored) && stored.len() == 64);
    // A wrong secret with a real id is unknown.
    let wrong = format!("afl_{id}_{}", "0".repeat(64));
    assert!(matches!(
        tokens.authenticate(&wrong).await,
        Err(AuthError::Unknown)
    ));
    assert!(matches!(
        tokens.authenticate("afl_nope").await,
        Err(AuthError::Malformed)
    ));

    let (s, body) = call(
        &router,
        Method::POST,
        "/tokens",
        Some(json!({"role": "root"})),
    )
    .await;
    assert_eq!(s, 422, "{body}");
    assert_eq!(body["error"]["field"], "role");

    // Expiry.
    let short = tokens
        .create(Role::Viewer, None, Some(Duration::from_millis(300)))
        .await
        .unwrap();
    assert!(tokens.authenticate(&short.token).await.is_ok());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(matches!(
        tokens.authenticate(&short.token).await,
        Err(AuthError::Expired)
    ));

    // Revocation (an unknown id is 404).
    let (s, revoked) = call(&router, Method::DELETE, &format!("/tokens/{id}"), None).await;
    assert_eq!(s, 200);
    assert!(revoked["revoked_at"].is_string());
    assert!(matches!(
        tokens.authenticate(&secret).await,
        Err(AuthError::Revoked)
    ));
    let (s, _) = call(&router, Method::DELETE, "/tokens/000000000000", None).await;
    assert_eq!(s, 404);
    let (s, list) = call(&router, Method::GET, "/tokens", None).await;
    assert_eq!(s, 200);
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(!list.to_string().contains(&secret[16..]));

    // Jobs' tokens (a job of a running execution using its token is tested end to end in
    // tests/security.rs): refused for an execution that is not running, once expired, or
    // altered.
    let missing = tokens.job_token("no-such-execution", Duration::from_secs(60));
    assert!(matches!(
        other.authenticate(&missing).await,
        Err(AuthError::ExecutionEnded)
    ));
    let expired = tokens.job_token("x", Duration::ZERO);
    assert!(matches!(
        tokens.authenticate(&expired).await,
        Err(AuthError::Expired)
    ));
    let tampered = tokens
        .job_token("a", Duration::from_secs(60))
        .replacen("_a", "_b", 1);
    assert!(tokens.authenticate(&tampered).await.is_err());
}
