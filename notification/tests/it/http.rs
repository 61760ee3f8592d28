//! The HTTP routes in-process (`oneshot`) and over a real socket (SSE, SDK Publisher and
//! Listener, server restarts).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aiflow_api::event::EventQuery;
use aiflow_api::{Event, EventFilter, NewEvent, Offset};
use aiflow_db::testing::TestDb;
use aiflow_notification::{EmbeddedBus, EmbeddedConfig, EventBus, HttpConfig, routes_with};
use aiflow_sdk::publisher::{PublishError, PublisherConfig};
use aiflow_sdk::{Client, Listener, Publisher};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::StreamExt;
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn bus(db: &TestDb) -> Arc<dyn EventBus> {
    Arc::new(
        EmbeddedBus::start(db.db.clone(), EmbeddedConfig::default())
            .await
            .unwrap(),
    )
}

fn app(bus: Arc<dyn EventBus>, heartbeat: Duration) -> axum::Router {
    let (router, _openapi) = routes_with(bus, HttpConfig { heartbeat }).split_for_parts();
    axum::Router::new().nest("/api/v1", router)
}

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json)
}

fn field(v: &serde_json::Value) -> &str {
    v["error"]["field"].as_str().unwrap_or("")
}

/// The answer of `POST /events` is the stored event as JSON, whatever path it took (the
/// body is serialised by hand, not through `Json`); a body with a wrong type still names it.
#[tokio::test]
async fn publish_answers_the_stored_event_as_json() {
    crate::init_tracing();
    let db = TestDb::sqlite().await;
    let bus = bus(&db).await;
    let app = app(bus.clone(), Duration::from_secs(15));
    for body in [
        r#"{"key":"a/b","value":"x\"y","context":{"execution":"e1"}}"#,
        r#"[{"key":"a/c"},{"key":"a/d","sender":"s"}]"#,
    ] {
        let req = Request::builder()
            .method("POST")
            .uri("/api/v1/events")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let stored: Vec<Event> = match answer {
            serde_json::Value::Array(_) => serde_json::from_value(answer).unwrap(),
            one => vec![serde_json::from_value(one).unwrap()],
        };
        let listed = bus
            .list(&EventFilter::default(), Offset(stored[0].offset.0 - 1), 10)
            .await
            .unwrap();
        assert_eq!(stored[..], listed[..stored.len()], "answered as stored");
    }
    let (s, v) = call(&app, "POST", "/api/v1/events", r#"{"key":"k","value":7}"#).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(field(&v), "value");
}

#[tokio::test]
async fn routes_publish_list_count_and_refuse_bad_input() {
    crate::init_tracing();
    let db = TestDb::sqlite().await;
    let app = app(bus(&db).await, Duration::from_secs(15));

    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/events",
        r#"{"key":"model/fraud","value":"v1","event_type":"MODEL_VERSION_CREATED"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["offset"], 1);
    assert_eq!(v["namespace"], "default");
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/events",
        r#"[{"key":"a"},{"key":"b","sender":"s1"},{"key":"dataset/raw/1","idempotency_key":"i1"}]"#,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["offset"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [2, 3, 4]
    );
    let (_, v) = call(
        &app,
        "POST",
        "/api/v1/events",
        r#"{"key":"other","idempotency_key":"i1"}"#,
    )
    .await;
    assert_eq!(v["offset"], 4, "idempotent repeat returns the stored event");

    // Bad input: a clear error naming the field, nothing stored.
    for (body, status, f) in [
        (r#"{"key":""}"#, StatusCode::BAD_REQUEST, "key"),
        (
            r#"[{"key":"ok"},{"key":"x","namespace":"a\nb"}]"#,
            StatusCode::BAD_REQUEST,
            "[1].namespace",
        ),
        (
            r#"{"key":"k","value":5}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "value",
        ),
        (r#"{"value":"v"}"#, StatusCode::UNPROCESSABLE_ENTITY, "body"),
        (r#"{"key":"k""#, StatusCode::BAD_REQUEST, "body"),
    ] {
        let (s, v) = call(&app, "POST", "/api/v1/events", body).await;
        assert_eq!(s, status, "{body}: {v}");
        assert_eq!(field(&v), f, "{body}: {v}");
    }
    let big = format!(r#"{{"key":"k","value":"{}"}}"#, "x".repeat(1024 * 1024 + 1));
    let (s, v) = call(&app, "POST", "/api/v1/events", &big).await;
    assert_eq!((s, field(&v)), (StatusCode::BAD_REQUEST, "value"));

    let (s, v) = call(&app, "GET", "/api/v1/events/count", "").await;
    assert_eq!((s, v["count"].as_u64()), (StatusCode::OK, Some(4)));

    // Lists: filters, pages, cursor.
    let (s, v) = call(&app, "GET", "/api/v1/events?limit=2", "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    let cursor = v["next_cursor"].as_str().unwrap().to_string();
    let (_, v) = call(
        &app,
        "GET",
        &format!("/api/v1/events?limit=2&cursor={cursor}"),
        "",
    )
    .await;
    assert_eq!(v["items"][0]["offset"], 3);
    let (_, v) = call(&app, "GET", "/api/v1/events?limit=10&after=3", "").await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert!(v["next_cursor"].is_null());
    let (_, v) = call(&app, "GET", "/api/v1/events?key=dataset/raw/*", "").await;
    assert_eq!(v["items"][0]["key"], "dataset/raw/1");
    let (_, v) = call(
        &app,
        "GET",
        "/api/v1/events/count?event_type=MODEL_VERSION_CREATED,UNDEFINED&sender=s1",
        "",
    )
    .await;
    assert_eq!(v["count"], 1);
    let (_, v) = call(
        &app,
        "GET",
        "/api/v1/events/count?namespace=default&key=*",
        "",
    )
    .await;
    assert_eq!(v["count"], 4);
    for (uri, f) in [
        ("/api/v1/events?limit=0", "limit"),
        ("/api/v1/events?limit=1001", "limit"),
        ("/api/v1/events?after=-1", "after"),
        ("/api/v1/events?after=x", "query"),
        ("/api/v1/events?cursor=zz", "cursor"),
        ("/api/v1/events/stream?from=-2", "from"),
    ] {
        let (s, v) = call(&app, "GET", uri, "").await;
        assert_eq!((s, field(&v)), (StatusCode::BAD_REQUEST, f), "{uri}: {v}");
    }
}

#[tokio::test]
async fn openapi_documents_every_route() {
    let db = TestDb::sqlite().await;
    let (_, openapi) = routes_with(bus(&db).await, HttpConfig::default()).split_for_parts();
    let json = serde_json::to_value(&openapi).unwrap();
    for path in ["/events", "/events/count", "/events/stream"] {
        assert!(json["paths"][path].is_object(), "{path} missing");
    }
    assert!(json["paths"]["/events"]["post"].is_object());
    assert!(json["components"]["schemas"]["NewEvent"].is_object());
}

/// An HTTP server on its own runtime and thread, so stopping it really drops every connection.
struct TestServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    fn start(bus: Arc<dyn EventBus>, addr: Option<SocketAddr>, heartbeat: Duration) -> Self {
        let listener =
            std::net::TcpListener::bind(addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap()))
                .unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let server = axum::serve(listener, app(bus, heartbeat));
                tokio::select! {
                    _ = server => {}
                    _ = stopped => {}
                }
            });
            rt.shutdown_background();
        });
        Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn stop(mut self) -> SocketAddr {
        self.halt();
        self.addr
    }

    fn halt(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Raw SSE: `id:` lines are offsets, `from=` is inclusive, `Last-Event-ID` resumes after,
/// heartbeat comments flow while idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_stream_ids_resume_and_heartbeats() {
    crate::init_tracing();
    let db = TestDb::sqlite().await;
    let bus = bus(&db).await;
    for i in 1..=5 {
        bus.publish(NewEvent::new("k", i.to_string()))
            .await
            .unwrap();
    }
    let server = TestServer::start(bus.clone(), None, Duration::from_millis(100));
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    let read = |resp: reqwest::Response, until: &'static str| async move {
        let mut body = resp.bytes_stream();
        let mut text = String::new();
        while !text.contains(until) {
            let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text
    };
    let resp = http
        .get(format!("{}/api/v1/events/stream?from=3", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = read(resp, ": heartbeat").await;
    assert!(text.starts_with("id: 2\n\n"), "{text}");
    assert!(text.contains("id: 3\ndata: {"), "{text}");
    assert!(text.contains("id: 5\n"), "{text}");
    assert!(!text.contains("id: 1\n"), "{text}");

    let resp = http
        .get(format!("{}/api/v1/events/stream?from=1", server.url()))
        .header("Last-Event-ID", "4")
        .send()
        .await
        .unwrap();
    let text = read(resp, "id: 5\ndata").await;
    assert!(
        !text.contains("id: 3\ndata"),
        "Last-Event-ID wins over from: {text}"
    );

    // Without a start: only new events.
    let resp = http
        .get(format!("{}/api/v1/events/stream?key=k", server.url()))
        .send()
        .await
        .unwrap();
    let reader = tokio::spawn(read(resp, "id: 6\ndata"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    bus.publish(NewEvent::new("k", "6")).await.unwrap();
    let text = reader.await.unwrap();
    assert!(
        text.starts_with("id: 5\n\n") && !text.contains("id: 5\ndata"),
        "{text}"
    );
}

/// The SDK end to end: Publisher batches and flushes, Listener follows and resumes across a
/// server restart without missing or repeating an event; the Publisher keeps events while the
/// server is away and reports a full buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_publisher_and_listener_survive_a_server_restart() {
    crate::init_tracing();
    let db = TestDb::sqlite().await;
    let bus = bus(&db).await;
    let server = TestServer::start(bus.clone(), None, Duration::from_millis(200));
    let client = Client::new(server.url());

    // Typed client.
    let e = client
        .events()
        .publish(&NewEvent::new("sdk", "0"))
        .await
        .unwrap();
    assert_eq!(e.offset, Offset(1));
    let err = client
        .events()
        .publish(&NewEvent::new("", "0"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));

    let mut listener = Listener::new(
        client.clone(),
        EventFilter {
            key: Some("sdk".into()),
            ..EventFilter::default()
        },
    )
    .from(Offset(1));
    let publisher = Publisher::new(client.clone(), PublisherConfig::default());
    for i in 1..=1000 {
        publisher.send(NewEvent::new("sdk", i.to_string())).unwrap();
    }
    publisher.flush().await.unwrap();
    assert_eq!(publisher.stats().sent, 1000);
    assert_eq!(
        client.events().count(&EventQuery::default()).await.unwrap(),
        1001
    );
    let mut seen: Vec<Event> = Vec::new();
    while seen.len() < 600 {
        seen.push(listener.next().await.unwrap().unwrap());
    }

    // The server goes away; the publisher keeps events and retries.
    let addr = server.stop();
    let quick = PublisherConfig {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        buffer: 500,
        ..PublisherConfig::default()
    };
    let away = Publisher::new(client.clone(), quick);
    for i in 1001..=1500 {
        away.send(NewEvent::new("sdk", i.to_string())).unwrap();
    }
    match away.send(NewEvent::new("sdk", "overflow")) {
        Err(PublishError::BufferFull {
            capacity: 500,
            event,
        }) => assert_eq!(event.value, "overflow"),
        other => panic!("expected a full buffer, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(away.stats().retries > 0);
    assert_eq!(away.stats().pending, 500);

    // Back on the same address: everything arrives once, the listener resumes.
    let server = TestServer::start(bus.clone(), Some(addr), Duration::from_millis(200));
    tokio::time::timeout(Duration::from_secs(20), away.flush())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        client.events().count(&EventQuery::default()).await.unwrap(),
        1501
    );
    while seen.len() < 1501 {
        let e = tokio::time::timeout(Duration::from_secs(20), listener.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push(e);
    }
    assert!(listener.reconnects() >= 1);
    let values: Vec<String> = seen.iter().map(|e| e.value.clone()).collect();
    assert_eq!(
        values,
        (0..=1500).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    assert!(seen.windows(2).all(|w| w[0].offset < w[1].offset));
    away.close(Duration::from_secs(1)).await.unwrap();
    assert!(matches!(
        away.send(NewEvent::new("sdk", "late")),
        Err(PublishError::Closed)
    ));

    // A refused event is reported by flush, the others are stored.
    let limits_client = Client::new(server.url());
    let p = Publisher::new(limits_client, PublisherConfig::default());
    p.send(NewEvent::new("sdk", "ok")).unwrap();
    assert!(matches!(
        p.send(NewEvent::new("", "bad")),
        Err(PublishError::Invalid { .. })
    ));
    p.flush().await.unwrap();
    drop(server);
}
