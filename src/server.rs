//! `aiflow server`: the notification bus, the meta service and the HTTP API in one process.

use std::sync::Arc;
use std::time::Duration;

use aiflow_db::{Db, DbConfig};
use aiflow_notification::{EmbeddedBus, EmbeddedConfig, EventBus, NatsBus, NatsConfig};
use anyhow::Context;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::watch;
use utoipa_axum::router::OpenApiRouter;

use aiflow_scheduler::{Scheduler, SchedulerConfig};

use crate::config::Config;

/// What the health routes look at.
#[derive(Clone)]
struct Health {
    db: Db,
    bus: Arc<dyn EventBus>,
    scheduler: Scheduler,
}

/// A started server: its parts, and how to stop it.
pub(crate) struct Running {
    pub(crate) base: String,
    pub(crate) bus: Arc<dyn EventBus>,
    pub(crate) scheduler: Scheduler,
    pub(crate) startup: Duration,
    shutdown: watch::Sender<bool>,
    serve: tokio::task::JoinHandle<std::io::Result<()>>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting requests, lets in-flight ones finish, then stops the scheduler and the
    /// meta event relay. Running jobs keep their processes (the next start recovers them).
    pub(crate) async fn shutdown(self) {
        tracing::info!("shutting down");
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.serve).await;
        for task in self.background {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

/// Builds every part and starts serving in the background.
pub(crate) async fn start(config: &Config) -> anyhow::Result<Running> {
    let started = std::time::Instant::now();
    config.check_exposure()?;
    let addr = config.listen_addr()?;
    crate::config::private_dir(&config.data_dir)
        .with_context(|| format!("cannot create data folder {}", config.data_dir.display()))?;
    let db_url = config.database_url();
    let db = Db::connect(&DbConfig::new(&db_url))
        .await
        .with_context(|| format!("database {}", aiflow_db::redact(&db_url)))?;
    let mut fabric = None;
    let bus: Arc<dyn EventBus> = match &config.nats {
        Some(url) => {
            let nats = NatsBus::connect(
                NatsConfig::new(url)
                    .stream(&config.nats_stream)
                    .subject_prefix(format!("{}.events", config.cluster)),
            )
            .await
            .with_context(|| format!("NATS at {url}"))?;
            fabric = Some(
                aiflow_scheduler::remote::Fabric::new(nats.client(), &config.cluster)
                    .await
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("NATS at {url}: work queue"))?,
            );
            Arc::new(nats)
        }
        None => Arc::new(
            EmbeddedBus::start(db.clone(), EmbeddedConfig::default())
                .await
                .context("embedded event bus")?,
        ),
    };
    let store = aiflow_meta::Store::new(db.clone());
    let tokens = aiflow_meta::auth::Tokens::open(db.clone())
        .await
        .context("api tokens")?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let upkeep = crate::metrics::start(db.backend.name(), bus.backend(), shutdown_rx.clone());
    let relay = aiflow_meta::spawn_outbox_relay(store.clone(), bus.clone(), shutdown_rx.clone());
    let lineage = config.openlineage_url.as_ref().map(|url| {
        tracing::info!(url = %url, namespace = %config.openlineage_namespace, "OpenLineage RunEvents of job attempts are sent");
        crate::openlineage::spawn(
            crate::openlineage::Emitter {
                url: url.clone(),
                namespace: config.openlineage_namespace.clone(),
            },
            db.clone(),
            store.clone(),
            bus.clone(),
            shutdown_rx.clone(),
        )
    });

    // Read before anything listens, so a bad certificate stops the start with a clear error.
    let tls = match config.tls() {
        Some((cert, key)) => Some(crate::tls::server_config(cert, key)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let base = format!("{scheme}://{local}");
    // Local jobs reach a server listening on every address through loopback.
    let jobs_url = if local.ip().is_unspecified() {
        let ip: std::net::IpAddr = if local.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        format!("{scheme}://{}", std::net::SocketAddr::new(ip, local.port()))
    } else {
        base.clone()
    };
    let (scheduler, scheduler_task) = Scheduler::start(
        store.clone(),
        bus.clone(),
        SchedulerConfig {
            data_dir: config.data_dir.clone(),
            server_url: jobs_url,
            stop_grace: Duration::from_secs(10),
            aiflow_bin: std::env::current_exe().ok(),
            max_running: config.max_running,
            node: aiflow_scheduler::leader::node_name(),
            fabric,
            remote: config.remote_executor(),
            job_tokens: config.auth.then(|| tokens.clone()),
            job_token_ttl: Duration::from_secs(config.job_token_ttl_s),
            log_max_bytes: (config.job_log_max_bytes > 0).then_some(config.job_log_max_bytes),
            // Local jobs outlive the server under `aiflow supervise` unless asked otherwise.
            ca_cert: config.ca_cert.clone(),
            supervisor: if config.stop_jobs_on_exit {
                None
            } else {
                std::env::current_exe().ok()
            },
            docker_host: config.docker_host.clone(),
            container_network: config.container_network.clone(),
            gpus: config.gpus,
            job_env_passthrough: config.job_env_passthrough.clone(),
        },
        shutdown_rx.clone(),
    )
    .await
    .context("scheduler")?;
    // The dags folder is loaded now and again on every change to it.
    if let Some(dir) = &config.dags {
        if dir.is_dir() {
            if let Err(e) =
                aiflow_scheduler::dags::watch(scheduler.clone(), dir.clone(), shutdown_rx.clone())
                    .await
            {
                tracing::warn!(dags = %dir.display(), error = %e, "cannot watch the dags folder; it is loaded once");
                aiflow_scheduler::dags::load_dir(&scheduler, dir).await;
            }
        } else {
            tracing::debug!(dags = %dir.display(), "no dags folder");
        }
    }
    let guard = crate::auth::Guard::new(
        config.auth.then(|| tokens.clone()),
        crate::auth::Limits::of(config),
    );
    let mlflow = aiflow_meta::mlflow::router(
        store.clone(),
        config.data_dir.join("artifacts"),
        config.max_artifact_bytes,
    );
    let content = aiflow_meta::content_routes(
        store.clone(),
        config.data_dir.join("artifacts"),
        config.max_artifact_bytes,
    );
    let app = router(
        db.clone(),
        bus.clone(),
        store,
        scheduler.clone(),
        tokens.clone(),
        guard,
        (mlflow, content),
    );
    let header_timeout = Duration::from_secs(config.header_timeout_s);
    let serve = match tls {
        Some(tls) => {
            let listener = crate::tls::TlsListener::new(listener, tls)?;
            tokio::spawn(crate::serve::serve(
                listener,
                app,
                header_timeout,
                shutdown_rx.clone(),
            ))
        }
        None => {
            use axum::serve::ListenerExt;
            let listener = listener.tap_io(|tcp| {
                // Small JSON answers go out at once instead of waiting for Nagle's timer.
                let _ = tcp.set_nodelay(true);
            });
            tokio::spawn(crate::serve::serve(
                listener,
                app,
                header_timeout,
                shutdown_rx.clone(),
            ))
        }
    };
    let startup = started.elapsed();
    tracing::info!(
        listen = %base,
        database = db.backend.name(),
        events = bus.backend(),
        ready_ms = startup.as_millis() as u64,
        "aiflow server ready"
    );
    let auth = if config.auth {
        match tokens.list().await {
            Ok(list) if list.is_empty() => "on; no token yet: create one with `aiflow token create --role admin --data-dir DIR` (or --database URL)".to_string(),
            _ => "on (Authorization: Bearer <token>)".to_string(),
        }
    } else {
        "off".to_string()
    };
    eprintln!(
        "AI Flow is ready in {} ms\n  UI       {base}/\n  API      {base}/api/v1\n  OpenAPI  {base}/api/v1/openapi.json\n  Docs     {base}/docs\n  Health   {base}/healthz  {base}/readyz\n  State    {} ({}), events: {}\n  Auth     {auth}",
        startup.as_millis(),
        aiflow_db::redact(&db_url),
        db.backend.name(),
        bus.backend()
    );
    Ok(Running {
        base,
        bus,
        scheduler,
        startup,
        shutdown: shutdown_tx,
        serve,
        background: [relay, scheduler_task, upkeep]
            .into_iter()
            .chain(lineage)
            .collect(),
    })
}

/// Serves until Ctrl-C or SIGTERM, then shuts down gracefully.
pub(crate) async fn run(config: Config) -> anyhow::Result<()> {
    let running = start(&config).await?;
    shutdown_signal().await;
    running.shutdown().await;
    Ok(())
}

/// The whole HTTP surface: `/api/v1/…`, the OpenAPI document, Swagger UI, health routes and
/// the web UI at `/`.
pub(crate) fn router(
    db: Db,
    bus: Arc<dyn EventBus>,
    store: aiflow_meta::Store,
    scheduler: Scheduler,
    tokens: aiflow_meta::auth::Tokens,
    guard: std::sync::Arc<crate::auth::Guard>,
    (mlflow, content): (axum::Router, OpenApiRouter),
) -> axum::Router {
    let api = OpenApiRouter::new()
        .merge(aiflow_notification::routes(bus.clone()))
        .merge(aiflow_meta::auth::token_routes(tokens))
        .merge(aiflow_meta::routes(store.clone()))
        .merge(content)
        .merge(aiflow_meta::run_routes(store))
        .merge(aiflow_scheduler::http::routes(scheduler.clone()));
    let (api, mut openapi) = OpenApiRouter::with_openapi(aiflow_meta::base_openapi())
        .nest("/api/v1", api)
        .split_for_parts();
    aiflow_meta::document_error_responses(&mut openapi);
    // Errors that axum's extractors write as plain text get the JSON error body too.
    let api = api.layer(axum::middleware::from_fn(aiflow_api::server::json_errors));
    let metrics = crate::metrics::MetricsState {
        bus: bus.clone(),
        scheduler: scheduler.clone(),
    };
    let health = Health {
        db,
        bus,
        scheduler: scheduler.clone(),
    };
    api.merge(aiflow_meta::docs_router(openapi))
        .merge(
            axum::Router::new()
                .route(
                    "/healthz",
                    get(|| async { Json(serde_json::json!({"status": "ok"})) }),
                )
                .route("/readyz", get(readyz))
                .with_state(health),
        )
        .merge(aiflow_ui::router())
        // The MLflow tracking, registry and artifact APIs (docs/mlflow.md).
        .merge(mlflow)
        .merge(
            axum::Router::new()
                .route("/metrics", get(crate::metrics::scrape))
                .with_state(metrics),
        )
        .layer(axum::middleware::from_fn_with_state(
            guard,
            crate::auth::guard,
        ))
        .layer(crate::metrics::HttpMetricsLayer)
}

/// A backend that does not answer within 2 s counts as unreachable: a probe must answer.
async fn within(check: impl std::future::Future<Output = bool>) -> bool {
    tokio::time::timeout(Duration::from_secs(2), check)
        .await
        .unwrap_or(false)
}

async fn readyz(State(h): State<Health>) -> impl IntoResponse {
    let (db_ok, bus_ok) = tokio::join!(within(h.db.ping()), within(h.bus.ping()));
    let writable = db_ok && within(h.db.ping_write()).await;
    // The store answers reads but the scheduler cannot write (a full disk, say).
    let storing = !h.scheduler.progress().commit_failing();
    // The loop ended (a fault stopped it): nothing starts or stops any more.
    let looping = h.scheduler.loop_running();
    let ready = writable && bus_ok && storing && looping;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok: bool| if ok { "ok" } else { "unreachable" };
    let role = h.scheduler.role();
    let leader = if db_ok {
        aiflow_scheduler::leader::current(&h.db)
            .await
            .ok()
            .flatten()
    } else {
        None
    };
    let mut scheduler = serde_json::json!({
        "role": role.name(),
        "status": if !looping {
            "stopped: the scheduler loop is not running (see the server's log)"
        } else if storing {
            "ok"
        } else {
            "cannot store its state (retrying)"
        },
    });
    if let aiflow_scheduler::leader::Role::Leader { epoch } = role {
        scheduler["epoch"] = epoch.into();
    }
    if let Some(l) = leader.filter(|_| role.name() != "single") {
        scheduler["leader"] =
            serde_json::json!({"node": l.holder, "url": l.url, "epoch": l.epoch, "since": l.since});
    }
    if let Some(f) = h.scheduler.fabric().filter(|_| bus_ok) {
        scheduler["workers"] = tokio::time::timeout(Duration::from_secs(1), f.workers())
            .await
            .ok()
            .and_then(Result::ok)
            .map_or(serde_json::Value::Null, |w| {
                serde_json::json!(w.iter().filter(|w| w.alive).count())
            });
    }
    (
        status,
        Json(serde_json::json!({
            "status": if ready { "ready" } else { "not ready" },
            "database": {"backend": h.db.backend.name(), "status": if db_ok && !writable { "read-only (disk full?)" } else { word(db_ok) }},
            "events": {"backend": h.bus.backend(), "status": word(bus_ok)},
            "scheduler": scheduler,
        })),
    )
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
