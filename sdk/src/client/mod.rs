//! Typed HTTP client of the AI Flow API.
//!
//! Route groups add their methods in `impl Client` blocks of their own modules.

mod meta;
mod workflows;

pub mod events;

pub use events::Events;
pub use workflows::StateChange;

use aiflow_api::{ApiError, ErrorBody};
use reqwest::{Method, RequestBuilder, StatusCode};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The header carrying a file's sha256 on artifact content uploads and downloads.
pub const CHECKSUM_HEADER: &str = "x-checksum-sha256";

/// The server the SDK talks to when nothing says otherwise.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Errors of SDK calls.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error body.
    #[error("{status}: {error}")]
    Api {
        status: u16,
        error: ApiError,
        /// How long the server asked to wait before trying again (`Retry-After`, in seconds,
        /// on 429 and 503 answers).
        retry_after: Option<std::time::Duration>,
    },
    /// The server could not be reached or the connection broke.
    #[error("cannot reach {url}: {}", chain(source))]
    Connect { url: String, source: reqwest::Error },
    /// The answer was not what the API promises.
    #[error("unexpected answer from {url}: {message}")]
    Decode { url: String, message: String },
    /// The graph or request was rejected before sending.
    #[error(transparent)]
    Invalid(#[from] aiflow_translator::ValidationErrors),
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// HTTPS could not be set up (the CA file of `AIFLOW_CA_CERT` is unreadable, say).
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

impl Error {
    /// The HTTP status of an API error.
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// How long the server asked to wait before the call is tried again, if it said.
    #[must_use]
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The wait before trying again: what the server asked for (`Retry-After`) when it said,
    /// and never less than `backoff`.
    #[must_use]
    pub fn wait_before_retry(&self, backoff: std::time::Duration) -> std::time::Duration {
        self.retry_after().map_or(backoff, |r| r.max(backoff))
    }
}

/// A client of one AI Flow server. Cheap to clone.
///
/// It speaks HTTP and HTTPS; for HTTPS it trusts the system's root certificates plus the CA
/// certificates in the PEM file named by `AIFLOW_CA_CERT` (or [`Client::with_ca_cert`]).
/// Connecting may take [`crate::tls::CONNECT_TIMEOUT`], a request [`crate::tls::REQUEST_TIMEOUT`]
/// ([`Client::with_request_timeout`]); streams have no request timeout.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    request_timeout: Duration,
    /// Why HTTPS could not be set up: every request fails with it.
    setup_error: Option<crate::tls::TlsError>,
}

impl Client {
    /// A client of the server at `base_url` (e.g. `http://127.0.0.1:8080`), trusting the CA
    /// of `AIFLOW_CA_CERT` besides the system roots. A CA file that cannot be read makes every
    /// request fail with [`Error::Tls`].
    #[must_use]
    pub fn new(base_url: impl Into<String>) -> Self {
        let base = base_url.into().trim_end_matches('/').to_string();
        let (http, setup_error) = match Self::http(crate::tls::ca_cert_from_env().as_deref()) {
            Ok(http) => (http, None),
            Err(e) => (
                Self::http(None).expect("HTTP client with the system roots"),
                Some(e),
            ),
        };
        Self {
            base,
            token: None,
            http,
            request_timeout: crate::tls::REQUEST_TIMEOUT,
            setup_error,
        }
    }

    fn http(ca_cert: Option<&std::path::Path>) -> Result<reqwest::Client, crate::tls::TlsError> {
        crate::tls::http_builder(ca_cert)?
            .build()
            .map_err(|e| crate::tls::TlsError(format!("HTTP client: {e}")))
    }

    /// Trusts the CA certificates of this PEM file (besides the system roots) instead of
    /// those of `AIFLOW_CA_CERT`. A file that cannot be read makes every request fail with
    /// [`Error::Tls`].
    #[must_use]
    pub fn with_ca_cert(mut self, pem_file: impl AsRef<std::path::Path>) -> Self {
        match Self::http(Some(pem_file.as_ref())) {
            Ok(http) => {
                self.http = http;
                self.setup_error = None;
            }
            Err(e) => self.setup_error = Some(e),
        }
        self
    }

    /// How long one request may take, answer included (streams excepted).
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// A client configured as a running job is: `AIFLOW_URL` (default
    /// `http://127.0.0.1:8080`) and `AIFLOW_TOKEN`.
    #[must_use]
    pub fn from_env() -> Self {
        let url = std::env::var("AIFLOW_URL").unwrap_or_else(|_| DEFAULT_URL.to_string());
        let client = Self::new(url);
        match std::env::var("AIFLOW_TOKEN") {
            Ok(t) if !t.is_empty() => client.with_token(t),
            _ => client,
        }
    }

    /// Sends `Authorization: Bearer TOKEN` with every request.
    #[must_use]
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The server's base URL.
    #[must_use]
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The full URL of an API path (`/events` → `http://…/api/v1/events`).
    #[must_use]
    pub fn api_url(&self, path: &str) -> String {
        format!("{}/api/v1{}", self.base, path)
    }

    /// A GET of a full URL of the server (routes outside `/api/v1` such as `/readyz`), with
    /// authentication and the request timeout set.
    pub fn get_url(&self, url: &str) -> Result<RequestBuilder, Error> {
        if let Some(e) = &self.setup_error {
            return Err(Error::Tls(e.clone()));
        }
        let rb = self.http.get(url).timeout(self.request_timeout);
        Ok(match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        })
    }

    /// A request to an API path with authentication and the request timeout set.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.stream_request(method, path)
            .timeout(self.request_timeout)
    }

    /// A request to an API path with authentication set and no request timeout, for answers
    /// that stream for as long as they last (events, followed logs).
    pub fn stream_request(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self.http.request(method, self.api_url(path));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Sends a request and decodes a JSON answer, turning error bodies into [`Error::Api`].
    pub async fn send<T: DeserializeOwned>(&self, rb: RequestBuilder) -> Result<T, Error> {
        let resp = self.send_raw(rb).await?;
        let url = resp.url().to_string();
        let bytes = resp.bytes().await.map_err(|source| Error::Connect {
            url: url.clone(),
            source,
        })?;
        // An empty body (204) decodes as JSON null, so `()` and `Option<T>` work.
        let body: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(body).map_err(|e| Error::Decode {
            url,
            message: e.to_string(),
        })
    }

    /// Sends a request; a non-success status becomes [`Error::Api`].
    pub async fn send_raw(&self, rb: RequestBuilder) -> Result<reqwest::Response, Error> {
        if let Some(e) = &self.setup_error {
            return Err(Error::Tls(e.clone()));
        }
        let url = self.base.clone();
        let resp = rb
            .send()
            .await
            .map_err(|source| Error::Connect { url, source })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let retry_after = matches!(status.as_u16(), 429 | 503)
            .then(|| resp.headers().get(reqwest::header::RETRY_AFTER))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(std::time::Duration::from_secs);
        let text = resp.text().await.unwrap_or_default();
        let error = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error)
            .unwrap_or_else(|_| ApiError::new(code_of(status), text.trim().to_string()));
        Err(Error::Api {
            status: status.as_u16(),
            error,
            retry_after,
        })
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &(impl Serialize + ?Sized),
    ) -> Result<T, Error> {
        self.send(self.request(Method::GET, path).query(query))
            .await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &(impl Serialize + ?Sized),
    ) -> Result<T, Error> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    pub async fn patch<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &(impl Serialize + ?Sized),
    ) -> Result<T, Error> {
        self.send(self.request(Method::PATCH, path).json(body))
            .await
    }

    pub async fn put<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &(impl Serialize + ?Sized),
    ) -> Result<T, Error> {
        self.send(self.request(Method::PUT, path).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<(), Error> {
        self.send_raw(self.request(Method::DELETE, path)).await?;
        Ok(())
    }
}

/// An error and its causes on one line (`error sending request: …: invalid peer certificate:
/// UnknownIssuer`), each said once.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

fn code_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 422 => "invalid_argument",
        401 => "unauthenticated",
        403 => "permission_denied",
        404 => "not_found",
        409 => "conflict",
        413 => "payload_too_large",
        429 => "rate_limited",
        _ => "internal",
    }
}

/// Escapes one path segment (names may hold `.` and `-`, never `/`, but be safe).
#[must_use]
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// A server that accepts connections and never answers.
    async fn silent_server() -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        (url, task)
    }

    #[tokio::test]
    async fn a_silent_server_is_given_up_after_the_request_timeout() {
        let (url, server) = silent_server().await;
        let client = Client::new(&url).with_request_timeout(Duration::from_millis(300));
        let t0 = Instant::now();
        let e = client.get_project("p").await.unwrap_err();
        assert!(matches!(e, Error::Connect { .. }), "{e}");
        assert!(e.to_string().contains("timed out"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        // A stream has no request timeout: still waiting after twice as long.
        let stream = client.send_raw(client.stream_request(Method::GET, "/events/stream"));
        assert!(
            tokio::time::timeout(Duration::from_millis(700), stream)
                .await
                .is_err(),
            "the stream request ended early"
        );
        server.abort();
    }

    #[tokio::test]
    async fn an_unreadable_ca_file_fails_every_request_naming_it() {
        let client = Client::new("https://127.0.0.1:9").with_ca_cert("/nonexistent/ca.pem");
        let e = client.get_project("p").await.unwrap_err();
        assert!(matches!(e, Error::Tls(_)), "{e}");
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }
}
