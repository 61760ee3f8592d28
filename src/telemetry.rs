//! Logs and traces: `tracing` with text or JSON lines on stderr (filtered by `RUST_LOG`), and,
//! when `--otlp-endpoint` is set, the spans of the event path (`http.request` →
//! `scheduler.event` → `rule.evaluate` → `rule.action` → `job.start`) exported over OTLP/HTTP.
//!
//! Without an endpoint no exporter exists and the pipeline's spans (debug level) are disabled
//! at their call sites, so they cost nothing.

use std::sync::atomic::{AtomicBool, Ordering};

use aiflow_scheduler::telemetry::{is_traceparent, set_remote_parent, traceparent_of_span};
use anyhow::Context as _;
use axum::extract::Request;
use axum::http::HeaderValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{LogFormat, OtlpProtocol};

/// `true` once spans are exported: the HTTP layer then opens request spans.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Where spans go.
#[derive(Debug, Clone)]
pub(crate) struct Otlp {
    /// Base URL of an OTLP/HTTP receiver (`http://collector:4318`); `/v1/traces` is added.
    pub(crate) endpoint: String,
    pub(crate) protocol: OtlpProtocol,
}

impl Otlp {
    /// Where the configuration says spans are exported, if anywhere.
    pub(crate) fn of(config: &crate::config::Config) -> Option<Otlp> {
        config.otlp_endpoint.as_ref().map(|endpoint| Otlp {
            endpoint: endpoint.clone(),
            protocol: config.otlp_protocol,
        })
    }
}

/// Flushes exported spans when the server stops.
#[must_use]
pub(crate) struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered and stops the exporter (blocking: call outside the
    /// async runtime).
    pub(crate) fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown()
        {
            eprintln!("warning: spans not exported at shutdown: {e}");
        }
    }
}

/// The OTLP/HTTP traces URL of a base endpoint.
fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

/// Installs the global subscriber: `RUST_LOG` (default `default_level`) filters the log lines;
/// with `otlp`, spans of the aiflow crates down to debug level are exported too. Call before
/// any async runtime exists (the exporter runs its own thread and HTTP client).
pub(crate) fn init(
    format: LogFormat,
    default_level: &str,
    otlp: Option<&Otlp>,
) -> anyhow::Result<Telemetry> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Json => fmt.json().with_filter(filter).boxed(),
        LogFormat::Text => fmt.with_filter(filter).boxed(),
    };
    let (otel, provider) = match otlp {
        Some(o) => {
            let protocol = match o.protocol {
                OtlpProtocol::HttpProtobuf => Protocol::HttpBinary,
                OtlpProtocol::HttpJson => Protocol::HttpJson,
            };
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(traces_url(&o.endpoint))
                .with_protocol(protocol)
                .build()
                .with_context(|| format!("otlp_endpoint: cannot export to {}", o.endpoint))?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(Resource::builder().with_service_name("aiflow").build())
                .build();
            let targets = Targets::new()
                .with_default(LevelFilter::INFO)
                .with_target("aiflow", LevelFilter::DEBUG);
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("aiflow"))
                .with_filter(targets);
            EXPORTING.store(true, Ordering::Relaxed);
            (Some(layer), Some(provider))
        }
        None => (None, None),
    };
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init();
    Ok(Telemetry { provider })
}

/// With span export on: the `http.request` span of one request, child of the caller's
/// `traceparent`; the request's `traceparent` header then names this span, so an event it
/// publishes carries this trace. `None` (nothing done) when spans are not exported.
pub(crate) fn request_span(
    req: &mut Request,
    method: &'static str,
    route: &str,
) -> Option<tracing::Span> {
    if !EXPORTING.load(Ordering::Relaxed) {
        return None;
    }
    let span = tracing::info_span!(
        "http.request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = method,
        http.route = route,
        http.status_code = tracing::field::Empty,
    );
    if let Some(tp) = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_traceparent(v))
    {
        set_remote_parent(&span, tp);
    }
    if let Some(tp) = traceparent_of_span(&span)
        && let Ok(v) = HeaderValue::from_str(&tp)
    {
        req.headers_mut().insert("traceparent", v);
    }
    Some(span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_added_once() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }
}
