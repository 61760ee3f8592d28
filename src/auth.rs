//! The guard in front of every route: request body size, list page size, and with
//! authentication on, API tokens, roles, and per-token limits (event streams open, publish
//! rate). Refusals are JSON error bodies; tokens never reach a log line.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aiflow_api::auth::Role;
use aiflow_api::server::{HttpError, JobScope};
use aiflow_meta::auth::{AuthError, Principal, Tokens};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use crate::config::Config;

/// The limits the guard enforces (from [`Config`]).
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) max_body_bytes: usize,
    /// Largest body of `POST /api/v1/events`.
    pub(crate) max_event_body_bytes: usize,
    /// Event streams and log follows open at once on the server (0: no limit).
    pub(crate) max_streams: usize,
    pub(crate) max_page_size: u32,
    pub(crate) max_streams_per_token: usize,
    pub(crate) publish_rate_per_token: f64,
    pub(crate) publish_burst_per_token: u32,
    /// Origins besides the server's own that may call it (`*`: any).
    pub(crate) allowed_origins: Vec<String>,
    /// `Host` names accepted besides the loopback ones, when `check_host` is on (`*`: any).
    pub(crate) allowed_hosts: Vec<String>,
    /// Only loopback `Host` names (and `allowed_hosts`) are served: on with authentication
    /// off, against DNS rebinding.
    pub(crate) check_host: bool,
}

impl Limits {
    pub(crate) fn of(config: &Config) -> Self {
        Self {
            max_body_bytes: config.max_body_bytes,
            max_event_body_bytes: config.max_event_body_bytes.min(config.max_body_bytes),
            max_streams: config.max_streams,
            max_page_size: config.max_page_size,
            max_streams_per_token: config.max_streams_per_token,
            publish_rate_per_token: config.publish_rate_per_token,
            publish_burst_per_token: config.publish_burst_per_token,
            allowed_origins: config
                .allowed_origins
                .iter()
                .map(|o| normalize_origin(o))
                .collect(),
            allowed_hosts: config
                .allowed_hosts
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect(),
            check_host: !config.auth,
        }
    }
}

/// A token bucket: `tokens` left at `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// State of the guard. `tokens` is `None` with authentication off.
pub(crate) struct Guard {
    tokens: Option<Tokens>,
    limits: Limits,
    streams: Mutex<HashMap<String, usize>>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Guard {
    pub(crate) fn new(tokens: Option<Tokens>, limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            tokens,
            limits,
            streams: Mutex::default(),
            buckets: Mutex::default(),
        })
    }

    /// Takes one publish from the token's bucket, or says in how many seconds one is back.
    fn take_publish(&self, key: &str) -> Result<(), u64> {
        let rate = self.limits.publish_rate_per_token;
        if rate <= 0.0 {
            return Ok(());
        }
        let burst = f64::from(self.limits.publish_burst_per_token);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate buckets");
        if buckets.len() > 10_000 {
            // Forget full buckets (idle tokens): they would start full anyway.
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let b = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    /// Counts one more open stream of the token, unless it has its most open.
    fn open_stream(self: &Arc<Self>, key: &str) -> Option<StreamSlot> {
        self.open_slot(key, self.limits.max_streams_per_token)
    }

    /// Counts one more event stream or log follow on the whole server, unless it has its
    /// most open.
    fn open_server_stream(self: &Arc<Self>) -> Option<StreamSlot> {
        self.open_slot(SERVER_STREAMS, self.limits.max_streams)
    }

    fn open_slot(self: &Arc<Self>, key: &str, max: usize) -> Option<StreamSlot> {
        let mut streams = self.streams.lock().expect("stream counts");
        let n = streams.entry(key.to_string()).or_insert(0);
        if max > 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(StreamSlot {
            guard: self.clone(),
            key: key.to_string(),
        })
    }
}

/// The key of the server-wide count of streams (token ids are hex digits).
const SERVER_STREAMS: &str = "*server*";

/// One open event stream of a token; dropped with the response body (the client left).
struct StreamSlot {
    guard: Arc<Guard>,
    key: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self.guard.streams.lock().expect("stream counts");
        if let Some(n) = streams.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                streams.remove(&self.key);
            }
        }
    }
}

/// What a route asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Need {
    /// `None`: anyone (health, the web UI, Swagger UI, the OpenAPI document).
    pub(crate) role: Option<Role>,
    /// A job's token (scoped to its execution) may call it.
    pub(crate) job: bool,
}

const PUBLIC: Need = Need {
    role: None,
    job: true,
};

/// The role matrix (docs/security.md): viewers read, operators also run and publish, admins
/// also manage workflows and tokens. A write the matrix does not name needs an admin.
pub(crate) fn need(method: &Method, path: &str) -> Need {
    let need = |role, job| Need {
        role: Some(role),
        job,
    };
    if let Some(rest) = path
        .strip_prefix("/api/2.0/mlflow")
        .or_else(|| path.strip_prefix("/ajax-api/2.0/mlflow"))
    {
        // The MLflow APIs (docs/mlflow.md): reads (searches are POSTs) for viewers, writes
        // for operators and jobs.
        let read = matches!(*method, Method::GET | Method::HEAD)
            || rest.ends_with("/search")
            || rest.ends_with("/get-history");
        return need(if read { Role::Viewer } else { Role::Operator }, true);
    }
    let Some(rest) = path.strip_prefix("/api/v1/") else {
        return if path == "/metrics" {
            need(Role::Viewer, true)
        } else {
            PUBLIC
        };
    };
    let seg: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    if seg == ["openapi.json"] {
        return PUBLIC;
    }
    if seg[0] == "tokens" {
        return need(Role::Admin, false);
    }
    if matches!(*method, Method::GET | Method::HEAD) {
        return need(Role::Viewer, true);
    }
    match (method, seg.as_slice()) {
        (&Method::POST, ["events"]) => need(Role::Operator, true),
        (&Method::POST, ["workflows", _, "executions"]) => need(Role::Operator, false),
        (&Method::POST, ["executions", _, "stop"]) => need(Role::Operator, false),
        (&Method::POST, ["workflows"])
        | (&Method::POST, ["workflows", _, "pause" | "resume"])
        | (&Method::DELETE, ["workflows", _]) => need(Role::Admin, false),
        (
            _,
            [
                "projects" | "datasets" | "models" | "metrics" | "artifacts" | "lineage",
                ..,
            ],
        ) => need(Role::Operator, true),
        _ => need(Role::Admin, false),
    }
}

fn refuse(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    HttpError::new(status, code, message).into_response()
}

fn unauthenticated(e: &AuthError) -> Response {
    if let AuthError::Db(err) = e {
        tracing::error!(error = %err, "cannot check a token");
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "cannot check the token now",
        );
    }
    let mut resp = refuse(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string());
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// The request's query pairs, decoded.
fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Percent-decoding of a query component (`+` is a space).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URI with its query rewritten by `edit` over the raw `key=value` parts.
fn with_query(uri: &Uri, edit: impl FnOnce(&mut Vec<String>)) -> Uri {
    let mut parts: Vec<String> = uri
        .query()
        .map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    edit(&mut parts);
    let pq = if parts.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{}", uri.path(), parts.join("&"))
    };
    let mut builder = Uri::builder();
    if let Some(s) = uri.scheme() {
        builder = builder.scheme(s.clone());
    }
    if let Some(a) = uri.authority() {
        builder = builder.authority(a.clone());
    }
    builder
        .path_and_query(pq)
        .build()
        .unwrap_or_else(|_| uri.clone())
}

/// `scheme://host[:port]` in lower case without a trailing `/` (how browsers send `Origin`).
pub(crate) fn normalize_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// Splits `host[:port]` (also `[v6]:port`) into the host, without brackets, and the port.
fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    if let Some(rest) = authority.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':')),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, Some(port)),
        _ => (authority, None),
    }
}

/// Names that always mean this machine: `localhost` (and `*.localhost`, which browsers resolve
/// to loopback), 127.0.0.0/8 and `::1`.
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The host the request was sent to: the `Host` header, or the URI's authority (HTTP/2).
fn request_host(parts: &axum::http::request::Parts) -> Option<String> {
    parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.as_str().to_string()))
}

/// With authentication off, only a loopback `Host` (or an allowed one) is served: a web page
/// whose name was rebound to 127.0.0.1 sends its own name. A request without a `Host` (an
/// HTTP/1.0 probe) is no browser's and passes.
fn host_refused(limits: &Limits, host: Option<&str>) -> Option<Response> {
    if !limits.check_host {
        return None;
    }
    let host = host?.trim();
    let (name, _) = split_host_port(host);
    let lower = host.to_ascii_lowercase();
    let name_lower = name.to_ascii_lowercase();
    let allowed = is_loopback_host(name)
        || limits
            .allowed_hosts
            .iter()
            .any(|a| a == "*" || *a == lower || *a == name_lower);
    if allowed {
        return None;
    }
    Some(
        HttpError::new(
            StatusCode::FORBIDDEN,
            "permission_denied",
            format!(
                "Host {host:?} is not served: with authentication off only loopback names (localhost, 127.0.0.1, [::1]) are, and those given with --allowed-host"
            ),
        )
        .field("host")
        .into_response(),
    )
}

/// `scheme://host[:port]` → (scheme, host, port with the scheme's default).
fn origin_parts(origin: &str) -> Option<(&str, &str, Option<u16>)> {
    let (scheme, rest) = origin.split_once("://")?;
    let (host, port) = split_host_port(rest);
    let port = match port {
        Some(p) => Some(p.parse().ok()?),
        None => match scheme {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        },
    };
    Some((scheme, host, port))
}

/// Whether `origin` is the server's own: the same host and port the request was sent to.
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let (Some((scheme, o_host, o_port)), Some(host)) = (origin_parts(origin), host) else {
        return false;
    };
    let (h_host, h_port) = split_host_port(host.trim());
    let h_port = match h_port {
        Some(p) => p.parse::<u16>().ok(),
        None => match scheme {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        },
    };
    o_host.eq_ignore_ascii_case(h_host) && o_port == h_port
}

/// A browser says where a request comes from (`Origin`, `Sec-Fetch-Site`): one from another
/// site is refused unless its origin is allowed. A link followed to the web UI (a top-level
/// navigation, which carries no `Origin` on `GET`) still opens it.
fn origin_refused(
    limits: &Limits,
    parts: &axum::http::request::Parts,
    host: Option<&str>,
) -> Option<Response> {
    let allowed = |o: &str| {
        let o = normalize_origin(o);
        same_origin(&o, host) || limits.allowed_origins.iter().any(|a| a == "*" || *a == o)
    };
    let header_str = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let refused = |field: &str, message: String| {
        Some(
            HttpError::new(StatusCode::FORBIDDEN, "permission_denied", message)
                .field(field)
                .into_response(),
        )
    };
    if let Some(origin) = parts.headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("(not text)");
        if !allowed(origin) {
            return refused(
                "origin",
                format!(
                    "requests from origin {origin:?} are refused: only the server's own origin and those given with --allowed-origin are served"
                ),
            );
        }
        return None;
    }
    let navigation = matches!(parts.method, Method::GET | Method::HEAD)
        && header_str("sec-fetch-mode") == Some("navigate");
    if header_str("sec-fetch-site").is_some_and(|s| s.eq_ignore_ascii_case("cross-site"))
        && !navigation
        && !limits.allowed_origins.iter().any(|a| a == "*")
    {
        return refused(
            "sec-fetch-site",
            "a cross-site request without an Origin is refused".to_string(),
        );
    }
    None
}

/// `PUT /api/v1/artifacts/{name}/content`: the one `/api/v1` route whose body is a file
/// (`application/octet-stream`), limited by the route itself (`max_artifact_bytes`).
fn artifact_upload(method: &Method, path: &str) -> bool {
    *method == Method::PUT
        && path
            .strip_prefix("/api/v1/artifacts/")
            .and_then(|rest| rest.strip_suffix("/content"))
            .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

/// Routes under `/api/v1` read JSON bodies only (and a file upload its raw bytes): a body of another type (a form, text/plain,
/// which browsers send across sites without asking first) is refused with 415.
fn media_type_refused(parts: &axum::http::request::Parts) -> Option<Response> {
    if !matches!(parts.method, Method::POST | Method::PUT | Method::PATCH)
        || !parts.uri.path().starts_with("/api/v1/")
    {
        return None;
    }
    let has_body = match parts.headers.get(header::CONTENT_LENGTH) {
        Some(len) => len.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) != Some(0),
        None => parts.headers.contains_key(header::TRANSFER_ENCODING),
    };
    if !has_body {
        return None;
    }
    let ty = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ty
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    // A file upload: raw bytes, which browsers cannot send across sites without asking first.
    let file =
        essence == "application/octet-stream" && artifact_upload(&parts.method, parts.uri.path());
    if json || file {
        return None;
    }
    let shown = if ty.is_empty() { "none" } else { ty };
    Some(
        HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            if artifact_upload(&parts.method, parts.uri.path()) {
                format!(
                    "the file must be sent with Content-Type: application/octet-stream, not {shown}"
                )
            } else {
                format!(
                    "the body must be JSON sent with Content-Type: application/json, not {shown}"
                )
            },
        )
        .field("content-type")
        .into_response(),
    )
}

/// The middleware.
pub(crate) async fn guard(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    // 0. Cross-site requests and DNS rebinding: a foreign `Host` (authentication off), a
    //    foreign `Origin`, then a body that is not JSON.
    let host = request_host(&parts);
    if let Some(refused) = host_refused(&g.limits, host.as_deref())
        .or_else(|| origin_refused(&g.limits, &parts, host.as_deref()))
        .or_else(|| media_type_refused(&parts))
    {
        return refused;
    }
    // 1. Body size: a declared length over the limit is refused before reading; a body
    //    without one stops being read at the limit (the route answers 413).
    // An MLflow artifact upload has its own, larger limit (`max_artifact_bytes`), checked
    // by the route as the file streams in.
    let max_body = if (parts.method == Method::PUT
        && parts.uri.path().starts_with("/api/2.0/mlflow-artifacts/"))
        || artifact_upload(&parts.method, parts.uri.path())
    {
        usize::MAX
    } else if parts.method == Method::POST && parts.uri.path() == "/api/v1/events" {
        g.limits.max_event_body_bytes
    } else {
        g.limits.max_body_bytes
    };
    if let Some(len) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > max_body as u64
    {
        return HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body of {len} bytes is over the limit of {max_body} bytes"),
        )
        .field("body")
        .into_response();
    }
    let body = if max_body == usize::MAX {
        body
    } else {
        Body::new(http_body_util::Limited::new(body, max_body))
    };

    let path = parts.uri.path().to_string();
    let api = path.starts_with("/api/v1/");
    let points = path.ends_with("/points") && path.starts_with("/api/v1/metrics/");
    let pairs = if parts.uri.query().is_some() {
        query_pairs(&parts.uri)
    } else {
        Vec::new()
    };

    // 2. Page size: a `limit` over the largest page size is refused (400); without one, a
    //    list's default page is cut to it.
    if api && !points && parts.method == Method::GET {
        let cap = g.limits.max_page_size;
        match pairs.iter().find(|(k, _)| k == "limit") {
            Some((_, v)) => {
                if let Ok(n) = v.parse::<u64>()
                    && n > u64::from(cap)
                {
                    return HttpError::invalid(
                        "limit",
                        format!("limit {n} is over the largest page size {cap}"),
                    )
                    .into_response();
                }
            }
            None if cap < aiflow_api::page::DEFAULT_LIMIT => {
                parts.uri = with_query(&parts.uri, |q| q.push(format!("limit={cap}")));
            }
            None => {}
        }
    }

    // 3. Authentication and the role matrix.
    let stream = parts.method == Method::GET && path == "/api/v1/events/stream";
    let mut principal: Option<Principal> = None;
    if let Some(tokens) = &g.tokens {
        let need = need(&parts.method, &path);
        if let Some(role) = need.role {
            let from_header = parts
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(|t| t.trim().to_string());
            // Browsers' EventSource cannot set headers: the stream also takes
            // `?access_token=`.
            let from_query = if stream {
                pairs
                    .iter()
                    .find(|(k, _)| k == "access_token")
                    .map(|(_, v)| v.clone())
            } else {
                None
            };
            let Some(token) = from_header.or(from_query) else {
                return unauthenticated(&AuthError::Missing);
            };
            let p = match tokens.authenticate(&token).await {
                Ok(p) => p,
                Err(e) => return unauthenticated(&e),
            };
            if p.execution.is_some() && !need.job {
                return refuse(
                    StatusCode::FORBIDDEN,
                    "permission_denied",
                    format!(
                        "a job's token may read, publish events and write meta records, not {} {path}",
                        parts.method
                    ),
                );
            }
            if p.role < role {
                return refuse(
                    StatusCode::FORBIDDEN,
                    "permission_denied",
                    format!(
                        "{} {path} needs the {role} role; token {} has {}",
                        parts.method, p.token_id, p.role
                    ),
                );
            }
            parts
                .extensions
                .insert(aiflow_api::server::CallerRole(p.role));
            if let Some(execution) = &p.execution {
                parts.extensions.insert(JobScope {
                    execution: execution.clone(),
                });
            }
            principal = Some(p);
        }
    }
    // The token is not passed on in the query (nothing downstream needs it or may log it).
    if stream && pairs.iter().any(|(k, _)| k == "access_token") {
        parts.uri = with_query(&parts.uri, |q| {
            q.retain(|p| p.split('=').next() != Some("access_token"));
        });
    }

    // 4. Streams open on the server (also with authentication off), then per-token limits.
    let mut slots = Vec::new();
    let follow = parts.method == Method::GET
        && path.starts_with("/api/v1/executions/")
        && path.ends_with("/logs")
        && pairs
            .iter()
            .any(|(k, v)| k == "follow" && matches!(v.as_str(), "true" | "1"));
    if stream || follow {
        match g.open_server_stream() {
            Some(s) => slots.push(s),
            None => {
                return refuse(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_streams",
                    format!(
                        "the server already has {} event streams and log follows open; retry later",
                        g.limits.max_streams
                    ),
                );
            }
        }
    }
    if let Some(p) = &principal {
        if parts.method == Method::POST && path == "/api/v1/events" {
            if let Err(wait) = g.take_publish(&p.token_id) {
                let mut resp = refuse(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!(
                        "token {} is over its publish rate of {} requests per second; retry in {wait} s",
                        p.token_id, g.limits.publish_rate_per_token
                    ),
                );
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(wait));
                return resp;
            }
        } else if stream {
            match g.open_stream(&p.token_id) {
                Some(s) => slots.push(s),
                None => {
                    return refuse(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too_many_streams",
                        format!(
                            "token {} already has {} event streams open",
                            p.token_id, g.limits.max_streams_per_token
                        ),
                    );
                }
            }
        }
    }

    let resp = next.run(Request::from_parts(parts, body)).await;
    let resp = json_413(resp);
    if slots.is_empty() || !resp.status().is_success() {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let body = body.into_data_stream().map(move |chunk| {
        let _held = &slots;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(body))
}

/// A 413 that a route answered in plain text (its body reader hit the limit) gets the JSON
/// error body.
fn json_413(resp: Response) -> Response {
    if resp.status() != StatusCode::PAYLOAD_TOO_LARGE
        || resp
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
    {
        return resp;
    }
    HttpError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the request body is over the size limit",
    )
    .field("body")
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_matrix() {
        let n = |m: Method, p: &str| need(&m, p);
        let role = |m: Method, p: &str| n(m, p).role;
        assert_eq!(role(Method::GET, "/"), None);
        assert_eq!(role(Method::GET, "/healthz"), None);
        assert_eq!(role(Method::GET, "/docs/"), None);
        assert_eq!(role(Method::GET, "/api/v1/openapi.json"), None);
        assert_eq!(role(Method::GET, "/metrics"), Some(Role::Viewer));
        assert_eq!(role(Method::GET, "/api/v1/workflows"), Some(Role::Viewer));
        assert_eq!(
            role(Method::GET, "/api/v1/events/stream"),
            Some(Role::Viewer)
        );
        assert_eq!(role(Method::POST, "/api/v1/events"), Some(Role::Operator));
        assert!(n(Method::POST, "/api/v1/events").job);
        assert_eq!(
            role(Method::POST, "/api/v1/workflows/w/executions"),
            Some(Role::Operator)
        );
        assert!(!n(Method::POST, "/api/v1/workflows/w/executions").job);
        assert_eq!(
            role(Method::POST, "/api/v1/executions/e/stop"),
            Some(Role::Operator)
        );
        assert_eq!(role(Method::POST, "/api/v1/workflows"), Some(Role::Admin));
        assert_eq!(
            role(Method::POST, "/api/v1/workflows/w/pause"),
            Some(Role::Admin)
        );
        assert_eq!(
            role(Method::POST, "/api/v1/workflows/w/resume"),
            Some(Role::Admin)
        );
        assert_eq!(
            role(Method::DELETE, "/api/v1/workflows/w"),
            Some(Role::Admin)
        );
        assert_eq!(
            role(Method::POST, "/api/v1/metrics/loss/points"),
            Some(Role::Operator)
        );
        assert!(n(Method::POST, "/api/v1/models/m/versions").job);
        assert_eq!(role(Method::GET, "/api/v1/tokens"), Some(Role::Admin));
        assert!(!n(Method::GET, "/api/v1/tokens").job);
        assert_eq!(
            role(Method::POST, "/api/v1/somewhere/new"),
            Some(Role::Admin)
        );
        // The MLflow APIs are not public: searches read, everything else writes.
        assert_eq!(
            role(Method::POST, "/api/2.0/mlflow/runs/search"),
            Some(Role::Viewer)
        );
        assert_eq!(
            role(Method::GET, "/ajax-api/2.0/mlflow/runs/get"),
            Some(Role::Viewer)
        );
        assert_eq!(
            role(Method::POST, "/api/2.0/mlflow/model-versions/create"),
            Some(Role::Operator)
        );
        assert!(n(Method::POST, "/api/2.0/mlflow/runs/log-batch").job);
        assert_eq!(
            role(
                Method::PUT,
                "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/f"
            ),
            Some(Role::Operator)
        );
    }

    #[test]
    fn query_decoding_and_rewriting() {
        let uri: Uri = "/api/v1/events/stream?key=a%2Fb&access_token=afl_x_y&from=1"
            .parse()
            .unwrap();
        let pairs = query_pairs(&uri);
        assert_eq!(pairs[0], ("key".into(), "a/b".into()));
        assert_eq!(pairs[1], ("access_token".into(), "afl_x_y".into()));
        let stripped = with_query(&uri, |q| q.retain(|p| !p.starts_with("access_token=")));
        assert_eq!(
            stripped.to_string(),
            "/api/v1/events/stream?key=a%2Fb&from=1"
        );
        assert_eq!(decode("a+b%20c%"), "a b c%");
    }

    #[test]
    fn the_publish_bucket_refills_at_its_rate() {
        let g = Guard::new(
            None,
            Limits {
                max_body_bytes: 1 << 20,
                max_event_body_bytes: 1 << 20,
                max_streams: 0,
                max_page_size: 1000,
                max_streams_per_token: 1,
                publish_rate_per_token: 2.0,
                publish_burst_per_token: 3,
                allowed_origins: Vec::new(),
                allowed_hosts: Vec::new(),
                check_host: true,
            },
        );
        for _ in 0..3 {
            assert!(g.take_publish("t").is_ok());
        }
        assert_eq!(g.take_publish("t"), Err(1));
        assert!(g.take_publish("other").is_ok(), "buckets are per token");
        let slot = g.open_stream("t").expect("first stream");
        assert!(g.open_stream("t").is_none(), "one stream per token");
        drop(slot);
        assert!(
            g.open_stream("t").is_some(),
            "a closed stream frees its slot"
        );
    }

    fn parts(method: Method, uri: &str, headers: &[(&str, &str)]) -> axum::http::request::Parts {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Body::empty()).unwrap().into_parts().0
    }

    fn site_limits(origins: &[&str], hosts: &[&str]) -> Limits {
        Limits {
            max_body_bytes: 1 << 20,
            max_event_body_bytes: 1 << 20,
            max_streams: 0,
            max_page_size: 1000,
            max_streams_per_token: 1,
            publish_rate_per_token: 0.0,
            publish_burst_per_token: 1,
            allowed_origins: origins.iter().map(|o| normalize_origin(o)).collect(),
            allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            check_host: true,
        }
    }

    #[test]
    fn only_loopback_and_allowed_host_names_are_served_with_auth_off() {
        let l = site_limits(&[], &["aiflow.internal", "box:9000"]);
        for ok in [
            "localhost",
            "localhost:8080",
            "LOCALHOST:1",
            "127.0.0.1:8080",
            "127.1.2.3",
            "[::1]:8080",
            "[::1]",
            "app.localhost:80",
            "aiflow.internal:8080",
            "box:9000",
        ] {
            assert!(host_refused(&l, Some(ok)).is_none(), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "box:9001",
            "localhost.evil.example",
            "10.0.0.1:8080",
            "[::2]:80",
        ] {
            assert!(host_refused(&l, Some(bad)).is_some(), "{bad}");
        }
        assert!(host_refused(&l, None).is_none(), "no Host: not a browser");
        let any = site_limits(&[], &["*"]);
        assert!(host_refused(&any, Some("evil.example")).is_none());
        let auth_on = Limits {
            check_host: false,
            ..site_limits(&[], &[])
        };
        assert!(host_refused(&auth_on, Some("evil.example")).is_none());
    }

    #[test]
    fn foreign_origins_are_refused_and_the_own_one_served() {
        let l = site_limits(&["https://dash.example.org/"], &[]);
        let check = |method: Method, headers: &[(&str, &str)]| {
            let p = parts(method, "/api/v1/workflows", headers);
            let host = request_host(&p);
            origin_refused(&l, &p, host.as_deref()).map(|r| r.status())
        };
        let host = ("host", "127.0.0.1:8080");
        assert_eq!(
            check(Method::POST, &[host, ("origin", "http://127.0.0.1:8080")]),
            None
        );
        assert_eq!(
            check(
                Method::POST,
                &[("host", "localhost"), ("origin", "http://localhost")]
            ),
            None,
            "default port"
        );
        assert_eq!(
            check(
                Method::POST,
                &[host, ("origin", "https://dash.example.org")]
            ),
            None,
            "allowed"
        );
        for origin in [
            "http://evil.example",
            "http://127.0.0.1:8081",
            "http://127.0.0.1",
            "null",
        ] {
            assert_eq!(
                check(Method::POST, &[host, ("origin", origin)]),
                Some(StatusCode::FORBIDDEN),
                "{origin}"
            );
        }
        assert_eq!(
            check(Method::POST, &[host, ("origin", "https://127.0.0.1:8080")]),
            None,
            "behind a TLS proxy the scheme differs; host and port decide"
        );
        assert_eq!(
            check(Method::GET, &[host, ("origin", "http://evil.example")]),
            Some(StatusCode::FORBIDDEN),
            "also reads"
        );
        assert_eq!(
            check(Method::POST, &[host, ("sec-fetch-site", "cross-site")]),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            check(
                Method::GET,
                &[
                    host,
                    ("sec-fetch-site", "cross-site"),
                    ("sec-fetch-mode", "navigate")
                ]
            ),
            None,
            "a link followed to the UI"
        );
        assert_eq!(
            check(Method::POST, &[host, ("sec-fetch-site", "same-origin")]),
            None
        );
        assert_eq!(check(Method::POST, &[host]), None, "no browser");
    }

    #[test]
    fn api_bodies_must_be_json() {
        let check = |method: Method, path: &str, headers: &[(&str, &str)]| {
            media_type_refused(&parts(method, path, headers)).map(|r| r.status())
        };
        let len = ("content-length", "12");
        let refused = Some(StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(check(Method::POST, "/api/v1/workflows", &[len]), refused);
        for ty in [
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            assert_eq!(
                check(
                    Method::POST,
                    "/api/v1/workflows",
                    &[len, ("content-type", ty)]
                ),
                refused,
                "{ty}"
            );
        }
        assert_eq!(
            check(
                Method::PATCH,
                "/api/v1/models/m",
                &[
                    ("transfer-encoding", "chunked"),
                    ("content-type", "text/plain")
                ]
            ),
            refused
        );
        for ty in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
        ] {
            assert_eq!(
                check(Method::PUT, "/api/v1/x", &[len, ("content-type", ty)]),
                None,
                "{ty}"
            );
        }
        assert_eq!(
            check(
                Method::POST,
                "/api/v1/executions/e/stop",
                &[("content-length", "0")]
            ),
            None,
            "no body"
        );
        assert_eq!(
            check(Method::GET, "/api/v1/workflows", &[len]),
            None,
            "reads"
        );
        // Raw bytes on the file upload route only, still not a form or text.
        let bytes = ("content-type", "application/octet-stream");
        assert_eq!(
            check(Method::PUT, "/api/v1/artifacts/m/content", &[len, bytes]),
            None
        );
        for (method, path) in [
            (Method::POST, "/api/v1/artifacts/m/content"),
            (Method::PUT, "/api/v1/artifacts/m"),
            (Method::PUT, "/api/v1/models/m/content"),
            (Method::PUT, "/api/v1/artifacts/a/b/content"),
        ] {
            assert_eq!(check(method, path, &[len, bytes]), refused, "{path}");
        }
        assert_eq!(
            check(
                Method::PUT,
                "/api/v1/artifacts/m/content",
                &[len, ("content-type", "text/plain")]
            ),
            refused
        );
    }
}
