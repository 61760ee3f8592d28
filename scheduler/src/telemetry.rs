//! Trace context across the event bus: the W3C `traceparent` an event carries in its `context`
//! becomes the parent of the scheduler's spans for that event, and the job it starts gets a
//! `TRACEPARENT` naming the same trace.
//!
//! Without an OpenTelemetry layer installed (no `--otlp-endpoint`) spans have no trace ids: the
//! event's `traceparent` is then handed to the job unchanged, so a trace started by the
//! publisher still reaches the job.

use aiflow_api::Event;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The key of an event's `context` that holds the W3C trace parent.
pub const TRACEPARENT_KEY: &str = "traceparent";

/// The `traceparent` an event carries in its context, when it is well formed.
#[must_use]
pub fn traceparent_of(event: &Event) -> Option<&str> {
    let tp = event.context.as_ref()?.get(TRACEPARENT_KEY)?.as_str()?;
    is_traceparent(tp).then_some(tp)
}

/// `true` for `00-<32 hex>-<16 hex>-<2 hex>` with non-zero ids (W3C Trace Context, version 00).
#[must_use]
pub fn is_traceparent(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2)
}

/// Makes the remote span named by `traceparent` the parent of `span` (a no-op without an
/// OpenTelemetry layer).
pub fn set_remote_parent(span: &tracing::Span, traceparent: &str) {
    if let Some(sc) = span_context(traceparent) {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc));
    }
}

/// The span of one event's handling by the scheduler loop, child of the event's
/// `traceparent` when it has one. Debug level: free unless spans are exported.
#[must_use]
pub fn event_span(event: &Event) -> tracing::Span {
    let span = tracing::debug_span!(
        "scheduler.event",
        offset = event.offset.0,
        event_type = %event.event_type,
    );
    if !span.is_disabled()
        && let Some(tp) = traceparent_of(event)
    {
        set_remote_parent(&span, tp);
    }
    span
}

/// The span from a job attempt's launch until its process runs: a child of the `traceparent`
/// of the event that caused the start (a new trace when no event did).
#[must_use]
pub fn job_start_span(
    workflow: &str,
    execution: &str,
    job: &str,
    attempt: u32,
    cause: Option<&Event>,
) -> tracing::Span {
    let span = tracing::debug_span!(parent: None, "job.start", workflow, execution, job, attempt);
    if !span.is_disabled()
        && let Some(tp) = cause.and_then(traceparent_of)
    {
        set_remote_parent(&span, tp);
    }
    span
}

/// The `TRACEPARENT` a job is given: its `job.start` span when spans are exported, else the
/// cause event's own `traceparent`.
#[must_use]
pub fn job_traceparent(span: &tracing::Span, cause: Option<&Event>) -> Option<String> {
    if !span.is_disabled()
        && let Some(tp) = traceparent_of_span(span)
    {
        return Some(tp);
    }
    cause.and_then(traceparent_of).map(str::to_string)
}

/// The remote span context a `traceparent` names.
#[must_use]
pub fn span_context(traceparent: &str) -> Option<SpanContext> {
    if !is_traceparent(traceparent) {
        return None;
    }
    let mut parts = traceparent.split('-').skip(1);
    let trace = TraceId::from_hex(parts.next()?).ok()?;
    let span = SpanId::from_hex(parts.next()?).ok()?;
    let flags = u8::from_str_radix(parts.next()?, 16).ok()?;
    Some(SpanContext::new(
        trace,
        span,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    ))
}

/// The `traceparent` naming `span`, when spans are exported (an OpenTelemetry layer is
/// installed and the span is enabled).
#[must_use]
pub fn traceparent_of_span(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_checked() {
        assert!(is_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473x-00f067aa0ba902b7-01",
        ] {
            assert!(!is_traceparent(bad), "{bad:?}");
        }
    }

    #[test]
    fn without_an_exporter_spans_name_no_trace() {
        let span = tracing::info_span!("x");
        set_remote_parent(
            &span,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        assert_eq!(traceparent_of_span(&span), None);
    }
}
