//! The OpenAPI document: version 3.1, every route described, every reference resolvable;
//! served at /api/v1/openapi.json with Swagger UI at /docs.

use std::collections::BTreeSet;

use aiflow_db::testing::TestDb;
use aiflow_meta::Store;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use utoipa_axum::router::OpenApiRouter;

fn refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    out.insert(x.as_str().unwrap().to_string());
                } else {
                    refs(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn document_is_openapi_3_1_and_served() {
    let db = TestDb::sqlite().await;
    let store = Store::new(db.db.clone());
    let (router, api) = OpenApiRouter::with_openapi(aiflow_meta::base_openapi())
        .nest("/api/v1", aiflow_meta::routes(store.clone()))
        .nest("/api/v1", aiflow_meta::run_routes(store))
        .split_for_parts();
    let doc: Value = serde_json::to_value(&api).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "AI Flow API");
    let paths = doc["paths"].as_object().unwrap();
    for want in [
        "/api/v1/projects",
        "/api/v1/projects/{name}",
        "/api/v1/datasets",
        "/api/v1/datasets/{name}/versions",
        "/api/v1/models",
        "/api/v1/models/{name}/versions",
        "/api/v1/models/{name}/aliases/{alias}",
        "/api/v1/metrics",
        "/api/v1/metrics/{name}/points",
        "/api/v1/artifacts",
        "/api/v1/lineage",
        "/api/v1/executions",
    ] {
        assert!(paths.contains_key(want), "missing {want}");
    }
    let mut operation_ids = BTreeSet::new();
    for (path, item) in paths {
        let declared: BTreeSet<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_string)
            .collect();
        for (method, op) in item.as_object().unwrap() {
            assert!(
                ["get", "post", "put", "patch", "delete"].contains(&method.as_str()),
                "{method}"
            );
            assert!(
                operation_ids.insert(op["operationId"].as_str().unwrap().to_string()),
                "duplicate operationId in {path}"
            );
            let responses = op["responses"].as_object().unwrap();
            assert!(!responses.is_empty(), "{method} {path} has no responses");
            for code in responses.keys() {
                assert!(code.len() == 3 && code.parse::<u16>().is_ok(), "{code}");
            }
            let params: BTreeSet<String> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "path")
                        .map(|p| {
                            assert_eq!(p["required"], true, "{path}");
                            p["name"].as_str().unwrap().to_string()
                        })
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(params, declared, "{method} {path}: path parameters");
            if let Some(ps) = op["parameters"].as_array() {
                for p in ps {
                    assert!(
                        ["path", "query", "header", "cookie"].contains(&p["in"].as_str().unwrap())
                    );
                    assert!(
                        p.get("schema").is_some(),
                        "{path}: parameter without schema"
                    );
                }
            }
        }
    }
    let mut all = BTreeSet::new();
    refs(&doc, &mut all);
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for r in &all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("odd ref {r}"));
        assert!(schemas.contains_key(name), "unresolved {r}");
    }
    // 3.1: nullable is expressed with type arrays, never the 3.0 keyword
    assert!(!doc.to_string().contains("\"nullable\""));

    // An OpenAPI 3.1 parser accepts the document, and every operation's parameters, request
    // body and response schemas resolve.
    let spec = oas3::from_json(doc.to_string()).expect("a valid OpenAPI 3.1 document");
    let version = spec.validate_version().expect("OpenAPI version 3.1.x");
    assert_eq!((version.major, version.minor), (3, 1));
    let mut n = 0;
    for (path, method, op) in spec.operations() {
        op.parameters(&spec)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        if let Some(body) = op
            .request_body(&spec)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
        {
            for media in body.content.values() {
                media
                    .schema(&spec)
                    .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            }
        }
        for (code, resp) in op.responses(&spec) {
            for media in resp.content.values() {
                media
                    .schema(&spec)
                    .unwrap_or_else(|e| panic!("{method} {path} {code}: {e}"));
            }
        }
        n += 1;
    }
    assert!(n >= 40, "only {n} operations");

    let app = router.merge(aiflow_meta::docs_router(api));
    let resp = app
        .clone()
        .oneshot(
            Request::get("/api/v1/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let served: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(served, doc);
    let resp = app
        .oneshot(Request::get("/docs/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&html).contains("swagger"),
        "swagger ui page"
    );
}
