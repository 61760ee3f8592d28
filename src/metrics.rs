//! `GET /metrics`: the Prometheus text format, rendered from the `metrics` facade that every
//! crate writes to; and the HTTP layer that counts and times requests by route template.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use aiflow_notification::EventBus;
use aiflow_scheduler::Scheduler;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics::{Label, counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Histogram buckets (seconds): from half a millisecond to a minute.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// The process-wide Prometheus recorder, installed on first use.
pub(crate) fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .expect("buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics stays empty");
        }
        describe();
        handle
    })
}

/// What `/metrics` needs at scrape time.
#[derive(Clone)]
pub(crate) struct MetricsState {
    pub(crate) bus: Arc<dyn EventBus>,
    pub(crate) scheduler: Scheduler,
}

/// Installs the recorder, records what does not change (build info, start time), and keeps
/// histograms drained every few seconds (the exporter's upkeep) until `shutdown`.
pub(crate) fn start(
    database: &'static str,
    events: &'static str,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let handle = handle();
    gauge!(
        "aiflow_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "database" => database,
        "events" => events,
    )
    .set(1.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    gauge!("aiflow_start_time_seconds").set(now.as_secs_f64());
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = every.tick() => handle.run_upkeep(),
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
    })
}

/// `GET /metrics`: every metric in the Prometheus text format (version 0.0.4). The event log's
/// latest offset and the scheduler's lag are read at scrape time.
pub(crate) async fn scrape(State(s): State<MetricsState>) -> Response {
    let backend = s.bus.backend();
    match s.bus.latest_offset().await {
        Ok(latest) => {
            let progress = s.scheduler.progress();
            gauge!("aiflow_events_latest_offset", "backend" => backend).set(latest.0 as f64);
            gauge!("aiflow_scheduler_lag_events")
                .set((latest.0 - progress.committed()).max(0) as f64);
            gauge!("aiflow_scheduler_pending_events")
                .set((latest.0 - progress.handled()).max(0) as f64);
            gauge!("aiflow_events_bus_up", "backend" => backend).set(1.0);
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read the latest event offset");
            gauge!("aiflow_events_bus_up", "backend" => backend).set(0.0);
        }
    }
    // One process runs the scheduler loop: it is the leader of its own (single) shape.
    gauge!("aiflow_scheduler_leader").set(1.0);
    let handle = handle();
    handle.run_upkeep();
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        handle.render(),
    )
        .into_response()
}

/// Help texts, shown as `# HELP` lines.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "aiflow_build_info",
        "Version and backends of this server (always 1)"
    );
    describe_gauge!(
        "aiflow_start_time_seconds",
        Unit::Seconds,
        "Start time of the server process, seconds since the Unix epoch"
    );
    describe_counter!(
        "aiflow_events_published_total",
        "Events newly stored by the event bus"
    );
    describe_counter!(
        "aiflow_events_delivered_total",
        "Events handed to subscribers (the scheduler, event streams)"
    );
    describe_gauge!(
        "aiflow_events_latest_offset",
        "Offset of the newest stored event"
    );
    describe_gauge!(
        "aiflow_events_bus_up",
        "1 when the event bus answered the last scrape"
    );
    describe_gauge!(
        "aiflow_scheduler_handled_offset",
        "Offset of the last event the scheduler handled"
    );
    describe_gauge!(
        "aiflow_scheduler_committed_offset",
        "Offset the scheduler stored as its restart point"
    );
    describe_gauge!(
        "aiflow_scheduler_lag_events",
        "Latest event offset minus the scheduler's committed offset"
    );
    describe_gauge!(
        "aiflow_scheduler_pending_events",
        "Latest event offset minus the last offset the scheduler handled"
    );
    describe_gauge!(
        "aiflow_scheduler_leader",
        "1 when this process runs the scheduler loop"
    );
    describe_counter!(
        "aiflow_scheduler_panics_total",
        "Panics the scheduler loop caught (the command failed alone), by what it handled"
    );
    describe_counter!(
        "aiflow_scheduler_events_handled_total",
        "Events the scheduler handled"
    );
    describe_histogram!(
        "aiflow_scheduler_event_handling_seconds",
        Unit::Seconds,
        "Time the scheduler loop spent on one event (rules, actions, job starts)"
    );
    describe_histogram!(
        "aiflow_scheduler_event_delay_seconds",
        Unit::Seconds,
        "Time from an event's creation to the end of its handling by the scheduler"
    );
    describe_counter!(
        "aiflow_rule_evaluations_total",
        "Recorded rule evaluations, by signal (event or job_status)"
    );
    describe_counter!(
        "aiflow_rule_actions_total",
        "Decisions of rule evaluations: start, stop, restart, none"
    );
    describe_counter!(
        "aiflow_workflow_executions_total",
        "Workflow executions entering each state"
    );
    describe_counter!(
        "aiflow_job_executions_total",
        "Job attempts entering each state, by queue"
    );
    describe_gauge!("aiflow_queue_depth", "Job attempts waiting for a slot");
    describe_gauge!("aiflow_jobs_running", "Job processes holding a slot");
    describe_histogram!(
        "aiflow_queue_wait_seconds",
        Unit::Seconds,
        "Time a job attempt waited QUEUED for a slot"
    );
    describe_histogram!(
        "aiflow_job_start_latency_seconds",
        Unit::Seconds,
        "From the event that caused a start (cause=event) or from queueing (cause=other) to the job's process running"
    );
    describe_counter!(
        "aiflow_http_requests_total",
        "HTTP requests by method, route template and status"
    );
    describe_histogram!(
        "aiflow_http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request (to the response head), by method and route template"
    );
    describe_histogram!(
        "aiflow_store_query_duration_seconds",
        Unit::Seconds,
        "Duration of store operations, by store (meta, events, scheduler) and operation"
    );
}

// ---- HTTP layer -------------------------------------------------------------------------------

/// Counts and times every request by method, route template ([`MatchedPath`], never the raw
/// path; written `/executions/:id`) and status; with span export on, also opens the `http.request` span (child of the
/// caller's `traceparent`) and hands its trace parent to the route.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HttpMetricsLayer;

impl<S> tower::Layer<S> for HttpMetricsLayer {
    type Service = HttpMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpMetrics { inner }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct HttpMetrics<S> {
    inner: S,
}

impl<S> tower::Service<Request> for HttpMetrics<S>
where
    S: tower::Service<Request, Response = Response> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let started = Instant::now();
        let method = method_label(req.method());
        let route: metrics::SharedString = match req.extensions().get::<MatchedPath>() {
            Some(p) => route_label(p.as_str()).into(),
            None => "unmatched".into(),
        };
        let span = crate::telemetry::request_span(&mut req, method, &route);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = match span {
                Some(span) => {
                    let r = tracing::Instrument::instrument(fut, span.clone()).await;
                    if let Ok(resp) = &r {
                        span.record("http.status_code", resp.status().as_u16());
                    }
                    r
                }
                None => fut.await,
            };
            let status = match &result {
                Ok(resp) => status_label(resp.status()),
                Err(_) => "error",
            };
            let labels = [
                Label::from_static_parts("method", method),
                Label::new("route", route.clone()),
            ];
            histogram!("aiflow_http_request_duration_seconds", labels.iter())
                .record(started.elapsed().as_secs_f64());
            let labels = [
                Label::from_static_parts("method", method),
                Label::new("route", route),
                Label::from_static_parts("status", status),
            ];
            counter!("aiflow_http_requests_total", labels.iter()).increment(1);
            result
        })
    }
}

/// A route template as a label: `/executions/{id}` becomes `/executions/:id`, since braces
/// inside label values trip up some parsers of the text format.
fn route_label(template: &str) -> std::sync::Arc<str> {
    if template.contains('{') {
        template.replace('{', ":").replace('}', "").into()
    } else {
        template.into()
    }
}

/// Methods as a closed set of labels.
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// The status code as a label (codes are a bounded set); without allocating.
fn status_label(s: StatusCode) -> &'static str {
    const CODES: &[&str] = &[
        "100", "101", "200", "201", "202", "204", "206", "301", "302", "303", "304", "307", "308",
        "400", "401", "403", "404", "405", "406", "408", "409", "410", "411", "412", "413", "414",
        "415", "416", "422", "429", "431", "500", "501", "502", "503", "504",
    ];
    let code = s.as_str();
    CODES
        .iter()
        .find(|c| **c == code)
        .copied()
        .unwrap_or(match s.as_u16() {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_templates_lose_their_braces() {
        assert_eq!(
            &*route_label("/api/v1/executions/{id}/jobs/{job}"),
            "/api/v1/executions/:id/jobs/:job"
        );
        assert_eq!(&*route_label("/api/v1/events"), "/api/v1/events");
    }

    #[test]
    fn status_labels_are_bounded() {
        assert_eq!(status_label(StatusCode::CREATED), "201");
        assert_eq!(status_label(StatusCode::UNPROCESSABLE_ENTITY), "422");
        assert_eq!(status_label(StatusCode::from_u16(299).unwrap()), "2xx");
        assert_eq!(status_label(StatusCode::from_u16(599).unwrap()), "5xx");
    }
}
