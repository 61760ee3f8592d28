//! HTTP routes of the events resource, relative to `/api/v1`: `POST /events`, `GET /events`,
//! `GET /events/count`, `GET /events/stream` (Server-Sent Events).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use aiflow_api::auth::Role;
use aiflow_api::event::{EventCount, EventQuery};
use aiflow_api::page::{DEFAULT_LIMIT, MAX_LIMIT};
use aiflow_api::server::{CallerRole, HttpError, JobScope, decode_json};
use aiflow_api::{ErrorBody, Event, NewEvent, Offset, Page};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{self, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::EventBus;

/// Largest `POST /events` body (a batch of many events): 64 MiB.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Most events in one `POST /events`.
const MAX_BATCH: usize = 10_000;

/// Settings of the routes.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Interval of the `: heartbeat` comments of `GET /events/stream` (default 15 s).
    pub heartbeat: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(15),
        }
    }
}

#[derive(Clone)]
struct AppState {
    bus: Arc<dyn EventBus>,
    config: Arc<HttpConfig>,
}

/// The events routes (relative to `/api/v1`) with default settings.
pub fn routes(bus: Arc<dyn EventBus>) -> OpenApiRouter {
    routes_with(bus, HttpConfig::default())
}

/// The events routes (relative to `/api/v1`).
pub fn routes_with(bus: Arc<dyn EventBus>, config: HttpConfig) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(publish_events, list_events))
        .routes(routes!(count_events))
        .routes(routes!(stream_events))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(AppState {
            bus,
            config: Arc::new(config),
        })
}

/// One event or an array of events (published atomically, in order).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PublishBody {
    One(NewEvent),
    Many(Vec<NewEvent>),
}

/// The stored event, or the stored events in request order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PublishAnswer {
    One(Event),
    Many(Vec<Event>),
}

/// Publishes one event or a batch (all or none). An event whose `idempotency_key` is already
/// stored is not stored again; the stored event is returned.
#[utoipa::path(
    post,
    path = "/events",
    tag = "events",
    request_body = PublishBody,
    responses(
        (status = 201, description = "stored", body = PublishAnswer),
        (status = 400, description = "invalid event; `field` names it", body = ErrorBody),
        (status = 401, description = "authentication on: no valid token", body = ErrorBody),
        (status = 403, description = "the token's role may not publish, a job's token names another execution, or a server event type, `aiflow-*` sender or reserved idempotency key (`field` names it)", body = ErrorBody),
        (status = 413, description = "body too large", body = ErrorBody),
        (status = 422, description = "wrong type in the body", body = ErrorBody),
        (status = 429, description = "the token's publish rate is used up; see `Retry-After`", body = ErrorBody),
        (status = 503, description = "the bus is unavailable", body = ErrorBody),
    )
)]
async fn publish_events(
    State(state): State<AppState>,
    TraceParent(traceparent): TraceParent,
    scope: Option<axum::Extension<JobScope>>,
    role: Option<axum::Extension<CallerRole>>,
    body: Bytes,
) -> Result<Response, HttpError> {
    let caller = Caller {
        role: role.map(|axum::Extension(CallerRole(r))| r),
        job: scope.is_some(),
    };
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let mut events: Vec<NewEvent> = decode(&body)?;
        if let Some(axum::Extension(scope)) = &scope {
            for (i, e) in events.iter_mut().enumerate() {
                in_scope(e, scope).map_err(|(err, field)| err.field(format!("[{i}].{field}")))?;
            }
        }
        for (i, e) in events.iter_mut().enumerate() {
            from_client(e, caller).map_err(|(err, field)| err.field(format!("[{i}].{field}")))?;
        }
        if let Some(tp) = &traceparent {
            events.iter_mut().for_each(|e| carry_traceparent(e, tp));
        }
        if events.len() > MAX_BATCH {
            return Err(HttpError::invalid(
                "body",
                format!(
                    "a batch holds at most {MAX_BATCH} events, this one {}",
                    events.len()
                ),
            ));
        }
        let stored = state.bus.publish_batch(events).await?;
        Ok(created(&stored, 192 * stored.len()))
    } else {
        let mut event: NewEvent = decode(&body)?;
        if let Some(axum::Extension(scope)) = &scope {
            in_scope(&mut event, scope).map_err(|(err, field)| err.field(field))?;
        }
        from_client(&mut event, caller).map_err(|(err, field)| err.field(field))?;
        if let Some(tp) = &traceparent {
            carry_traceparent(&mut event, tp);
        }
        let stored = state.bus.publish(event).await?;
        Ok(created(&stored, 256))
    }
}

/// Idempotency key prefixes of the server's own events (the meta outbox relay's
/// `meta-outbox-<id>`, the scheduler's `sched-<uuid>`, and `aiflow-` for any to come): no client
/// may use them, so no client can store an event under a key the server will use and suppress
/// the server's event.
pub(crate) const RESERVED_KEY_PREFIXES: [&str; 3] = ["meta-outbox-", "sched-", "aiflow-"];
/// The server's senders start with this (`aiflow-meta`, `aiflow-scheduler`).
pub(crate) const RESERVED_SENDER_PREFIX: &str = "aiflow-";
/// What the server adds to the context of an event of its own kinds that a client published
/// (authentication off, or an admin's token): `"published_by": "client"`.
pub(crate) const CLIENT_MARK: &str = "published_by";

/// Whether `event_type` is one the server publishes: `MODEL_*`, `DATASET_*`, `JOB_STATUS`,
/// `WORKFLOW_STATUS` (compared without regard to case).
#[must_use]
pub(crate) fn is_server_event_type(event_type: &str) -> bool {
    let t = event_type.to_ascii_uppercase();
    t.starts_with("MODEL_")
        || t.starts_with("DATASET_")
        || t == "JOB_STATUS"
        || t == "WORKFLOW_STATUS"
}

/// Who publishes: the role of the token (none with authentication off) and whether it is a
/// job's.
#[derive(Debug, Clone, Copy)]
struct Caller {
    role: Option<Role>,
    job: bool,
}

/// The server's own events cannot be forged (docs/security.md): a reserved idempotency key is
/// refused from everyone; an `aiflow-*` sender or a server event type is refused from a job's
/// token and from tokens below admin, and marked `context.published_by = "client"` otherwise
/// (an admin's token, or authentication off). Errors name the field.
fn from_client(event: &mut NewEvent, caller: Caller) -> Result<(), (HttpError, &'static str)> {
    let forbidden =
        |message: String| HttpError::new(StatusCode::FORBIDDEN, "permission_denied", message);
    if let Some(k) = &event.idempotency_key
        && let Some(prefix) = RESERVED_KEY_PREFIXES.iter().find(|p| k.starts_with(*p))
    {
        return Err((
            forbidden(format!(
                "idempotency keys starting with {prefix:?} are the server's own; choose another"
            )),
            "idempotency_key",
        ));
    }
    let sender = event
        .sender
        .as_deref()
        .filter(|s| s.to_ascii_lowercase().starts_with(RESERVED_SENDER_PREFIX));
    let server_type = event
        .event_type
        .as_deref()
        .filter(|t| is_server_event_type(t));
    let (field, what) = match (sender, server_type) {
        (Some(s), _) => ("sender", format!("sender {s:?}")),
        (None, Some(t)) => ("event_type", format!("event type {t:?}")),
        (None, None) => return Ok(()),
    };
    let admin = caller.role == Some(Role::Admin) && !caller.job;
    if caller.role.is_some() && !admin {
        let who = if caller.job {
            "a job's token"
        } else {
            "a token below admin"
        };
        return Err((
            forbidden(format!(
                "{what} is the server's own: {who} may not publish it (senders aiflow-*, types MODEL_*, DATASET_*, JOB_STATUS, WORKFLOW_STATUS)"
            )),
            field,
        ));
    }
    match &mut event.context {
        None => event.context = Some(serde_json::json!({ CLIENT_MARK: "client" })),
        Some(serde_json::Value::Object(m)) => {
            m.insert(CLIENT_MARK.into(), "client".into());
        }
        Some(_) => {
            return Err((
                HttpError::invalid(
                    "context",
                    format!(
                        "an event with {what} from a client needs an object context (or none): the server marks it published_by=client"
                    ),
                ),
                "context",
            ));
        }
    }
    Ok(())
}

/// A job's token publishes for its own workflow execution only: the server sets
/// `context.execution` to the token's execution (an event without a context gets one), so
/// its rules and triggers see the job's execution. An event whose context names another
/// execution, names it with something other than a string, or is not an object is refused
/// (403, 422); the error names the field.
fn in_scope(event: &mut NewEvent, scope: &JobScope) -> Result<(), (HttpError, &'static str)> {
    let forbidden =
        |message: String| HttpError::new(StatusCode::FORBIDDEN, "permission_denied", message);
    let ctx = event
        .context
        .get_or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
    let serde_json::Value::Object(map) = ctx else {
        return Err((
            HttpError::invalid(
                "context",
                "an event from a job's token needs an object context (or none): the server sets its execution",
            ),
            "context",
        ));
    };
    match map.get("execution") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(id)) if *id == scope.execution => return Ok(()),
        Some(serde_json::Value::String(id)) => {
            return Err((
                forbidden(format!(
                    "a job of execution {} cannot publish events for execution {id}",
                    scope.execution
                )),
                "context.execution",
            ));
        }
        Some(other) => {
            return Err((
                forbidden(format!(
                    "a job of execution {} cannot publish events for execution {other}",
                    scope.execution
                )),
                "context.execution",
            ));
        }
    }
    map.insert(
        "execution".into(),
        serde_json::Value::String(scope.execution.clone()),
    );
    Ok(())
}

/// Decodes a body: first without tracking the path (the common, valid case costs less), and
/// when that fails, again through [`decode_json`] for the error that names the field.
fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, HttpError> {
    serde_json::from_slice(body).or_else(|_| decode_json(body))
}

/// A `201 Created` JSON answer, serialised into a buffer of about the right size (one
/// allocation instead of a growing one).
fn created<T: Serialize>(value: &T, capacity: usize) -> Response {
    let mut buf = Vec::with_capacity(capacity);
    match serde_json::to_writer(&mut buf, value) {
        Ok(()) => (
            StatusCode::CREATED,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            buf,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialise the stored events");
            HttpError::internal("cannot serialise the stored events").into_response()
        }
    }
}

/// The request's W3C `traceparent` header, when it has one of the right shape (the scheduler
/// checks it fully before use).
struct TraceParent(Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for TraceParent {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(TraceParent(
            parts
                .headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .filter(|v| v.len() == 55)
                .map(str::to_string),
        ))
    }
}

/// Puts the request's trace parent into the event's context (`context.traceparent`), unless
/// the event names one itself or its context is not an object: the trace then reaches the
/// scheduler's spans and the `TRACEPARENT` of the job the event starts.
fn carry_traceparent(event: &mut NewEvent, traceparent: &str) {
    let tp = serde_json::Value::String(traceparent.to_string());
    match &mut event.context {
        None => event.context = Some(serde_json::json!({ "traceparent": tp })),
        Some(serde_json::Value::Object(map)) => {
            map.entry("traceparent").or_insert(tp);
        }
        Some(_) => {}
    }
}

fn query_of(q: Result<Query<EventQuery>, QueryRejection>) -> Result<EventQuery, HttpError> {
    q.map(|Query(q)| q)
        .map_err(|e| HttpError::invalid("query", e.body_text()))
}

fn after_of(q: &EventQuery) -> Result<Offset, HttpError> {
    let after = match (&q.cursor, q.after) {
        (Some(c), _) => c
            .parse::<Offset>()
            .map_err(|e| HttpError::invalid("cursor", format!("cursor: {e}")))?,
        (None, Some(a)) if a < 0 => {
            return Err(HttpError::invalid("after", "after must not be negative"));
        }
        (None, Some(a)) => Offset(a),
        (None, None) => Offset(0),
    };
    Ok(after)
}

/// Stored events matching the filter with offset > `after` (or after `cursor`), oldest first.
#[utoipa::path(
    get,
    path = "/events",
    tag = "events",
    params(EventQuery),
    responses(
        (status = 200, description = "a page of events", body = Page<Event>),
        (status = 400, description = "bad query; `field` names it", body = ErrorBody),
    )
)]
async fn list_events(
    State(state): State<AppState>,
    query: Result<Query<EventQuery>, QueryRejection>,
) -> Result<Json<Page<Event>>, HttpError> {
    let q = query_of(query)?;
    let after = after_of(&q)?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(HttpError::invalid(
            "limit",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let items = state.bus.list(&q.filter(), after, limit as usize).await?;
    let next_cursor = (items.len() == limit as usize)
        .then(|| items.last().map(|e| e.offset.to_string()))
        .flatten();
    Ok(Json(Page { items, next_cursor }))
}

/// How many stored events match the filter (with offset > `after`).
#[utoipa::path(
    get,
    path = "/events/count",
    tag = "events",
    params(EventQuery),
    responses(
        (status = 200, description = "the count", body = EventCount),
        (status = 400, description = "bad query; `field` names it", body = ErrorBody),
    )
)]
async fn count_events(
    State(state): State<AppState>,
    query: Result<Query<EventQuery>, QueryRejection>,
) -> Result<Json<EventCount>, HttpError> {
    let q = query_of(query)?;
    let after = after_of(&q)?;
    let count = state.bus.count(&q.filter(), after).await?;
    Ok(Json(EventCount { count }))
}

/// Follows events as Server-Sent Events: each `data:` is an event as JSON and its `id:` the
/// offset. Starts after `Last-Event-ID` (a reconnecting client), else at `from` (inclusive),
/// else after `after`, else with the next new event. Comments (`: heartbeat`) keep idle
/// connections open.
#[utoipa::path(
    get,
    path = "/events/stream",
    tag = "events",
    params(
        EventQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "resume after this offset"),
        ("access_token" = Option<String>, Query, description = "API token, for clients that cannot send `Authorization` (browsers' EventSource)"),
    ),
    responses(
        (status = 200, description = "an endless `text/event-stream` of events", content_type = "text/event-stream", body = String),
        (status = 400, description = "bad query; `field` names it", body = ErrorBody),
        (status = 429, description = "the token has its most streams open", body = ErrorBody),
    )
)]
async fn stream_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<EventQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<sse::Event, Infallible>>>, HttpError> {
    let q = query_of(query)?;
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<Offset>().ok())
                .ok_or_else(|| {
                    HttpError::invalid("Last-Event-ID", "Last-Event-ID must be an offset")
                })
        })
        .transpose()?;
    let after = match (last_event_id, q.from) {
        (Some(id), _) => id,
        (None, Some(from)) if from < 0 => {
            return Err(HttpError::invalid("from", "from must not be negative"));
        }
        (None, Some(from)) => Offset((from - 1).max(0)),
        (None, None) if q.after.is_some() || q.cursor.is_some() => after_of(&q)?,
        (None, None) => state.bus.latest_offset().await?,
    };
    let filter = q.filter();
    tracing::debug!(after = after.0, ?filter, "event stream opened");
    let events = state.bus.subscribe(filter, after).await?;
    // An error is told to the client (`event: error`) and ends the stream; the client resumes
    // with `Last-Event-ID`.
    // First an `id:` without data: a client that loses the connection before any event
    // resumes from here (EventSource keeps it as its last event id).
    let start = futures::stream::once(futures::future::ready(Ok::<_, Infallible>(
        sse::Event::default().id(after.to_string()),
    )));
    let stream = events.scan(false, |failed, item| {
        if *failed {
            return futures::future::ready(None);
        }
        let ev = match item {
            Ok(e) => sse::Event::default()
                .id(e.offset.to_string())
                .data(serde_json::to_string(&e).unwrap_or_default()),
            Err(err) => {
                tracing::warn!(error = %err, "event stream failed");
                *failed = true;
                sse::Event::default().event("error").data(err.to_string())
            }
        };
        futures::future::ready(Some(Ok::<_, Infallible>(ev)))
    });
    Ok(Sse::new(start.chain(stream)).keep_alive(
        KeepAlive::new()
            .interval(state.config.heartbeat)
            .text("heartbeat"),
    ))
}
