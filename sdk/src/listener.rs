//! Follows `GET /api/v1/events/stream` (Server-Sent Events) and resumes after a disconnect from
//! the last offset it saw, so no event is missed or repeated.
//!
//! ```no_run
//! # async fn run() -> Result<(), aiflow_sdk::Error> {
//! use aiflow_sdk::api::{EventFilter, Offset};
//! use aiflow_sdk::{Client, Listener};
//!
//! let filter = EventFilter { key: Some("dataset/raw/*".into()), ..EventFilter::default() };
//! let mut listener = Listener::new(Client::from_env(), filter).from(Offset(1));
//! while let Some(event) = listener.next().await? {
//!     println!("{} {} {}", event.offset, event.key, event.value);
//! }
//! # Ok(()) }
//! ```

use std::time::Duration;

use aiflow_api::event::EventQuery;
use aiflow_api::{Event, EventFilter, Offset};
use bytes::{Buf, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::client::{Client, Error};

/// Where a listener starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// With the next new event.
    Latest,
    /// After this offset.
    After(Offset),
}

/// A resuming SSE listener.
pub struct Listener {
    client: Client,
    filter: EventFilter,
    start: Start,
    max_backoff: Duration,
    conn: Option<BoxStream<'static, Result<bytes::Bytes, reqwest::Error>>>,
    buf: BytesMut,
    reconnects: u64,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("filter", &self.filter)
            .field("start", &self.start)
            .field("connected", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// A listener of events matching `filter`, starting with the next new event.
    #[must_use]
    pub fn new(client: Client, filter: EventFilter) -> Self {
        Self {
            client,
            filter,
            start: Start::Latest,
            max_backoff: Duration::from_secs(5),
            conn: None,
            buf: BytesMut::new(),
            reconnects: 0,
        }
    }

    /// Starts at `offset`, inclusive (`Offset(1)`: from the first event).
    #[must_use]
    pub fn from(mut self, offset: Offset) -> Self {
        self.start = Start::After(Offset((offset.0 - 1).max(0)));
        self
    }

    /// Starts after `offset` (e.g. the last offset a previous run committed).
    #[must_use]
    pub fn after(mut self, offset: Offset) -> Self {
        self.start = Start::After(offset);
        self
    }

    /// Longest wait between reconnection attempts (default 5 s).
    #[must_use]
    pub fn max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }

    /// The offset the listener resumes after, once it knows one.
    #[must_use]
    pub fn last_offset(&self) -> Option<Offset> {
        match self.start {
            Start::After(o) => Some(o),
            Start::Latest => None,
        }
    }

    /// How many times the listener reconnected.
    #[must_use]
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// The next event. Reconnects (with backoff) after a lost connection; fails only on an
    /// answer that retrying cannot fix (bad filter, authentication). Never returns `Ok(None)`
    /// unless the server ends the stream for good.
    pub async fn next(&mut self) -> Result<Option<Event>, Error> {
        let mut backoff =
            aiflow_api::backoff::Backoff::new(Duration::from_millis(50), self.max_backoff);
        loop {
            if self.conn.is_none() {
                match self.connect().await {
                    Ok(()) => backoff.reset(),
                    Err(e) if retryable(&e) => {
                        tracing::debug!(error = %e, "event stream unavailable, retrying");
                        tokio::time::sleep(e.wait_before_retry(backoff.next_delay())).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            // Whole SSE messages already buffered first.
            while let Some(block) = take_block(&mut self.buf) {
                if let Some(event) = self.parse_block(&block)? {
                    return Ok(Some(event));
                }
            }
            let conn = self.conn.as_mut().expect("connected");
            match conn.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "event stream broke, resuming");
                    self.disconnect();
                }
                None => {
                    tracing::debug!("event stream ended, resuming");
                    self.disconnect();
                }
            }
        }
    }

    /// The listener as a stream of events (ends at the first error it cannot retry).
    #[must_use]
    pub fn into_stream(self) -> BoxStream<'static, Result<Event, Error>> {
        futures::stream::unfold(Some(self), |state| async move {
            let mut l = state?;
            match l.next().await {
                Ok(Some(e)) => Some((Ok(e), Some(l))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
        .boxed()
    }

    fn disconnect(&mut self) {
        self.conn = None;
        self.buf.clear();
        self.reconnects += 1;
    }

    async fn connect(&mut self) -> Result<(), Error> {
        let mut query = EventQuery::from_filter(&self.filter);
        let mut rb = self
            .client
            .stream_request(reqwest::Method::GET, "/events/stream")
            .header("accept", "text/event-stream");
        if let Start::After(o) = self.start {
            query.after = Some(o.0);
            rb = rb.header("last-event-id", o.0.to_string());
        }
        let resp = self.client.send_raw(rb.query(&query)).await?;
        self.conn = Some(resp.bytes_stream().boxed());
        self.buf.clear();
        Ok(())
    }

    /// One SSE message: `id:` moves the resume point (also without data); `data:` is an event;
    /// `event: error` means the server gave up on this connection.
    fn parse_block(&mut self, block: &str) -> Result<Option<Event>, Error> {
        let mut id = None;
        let mut data = String::new();
        let mut kind = "message";
        for line in block.lines() {
            if line.starts_with(':') {
                continue; // heartbeat comment
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => id = value.parse::<i64>().ok(),
                "data" => {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(value);
                }
                "event" => kind = if value == "error" { "error" } else { "message" },
                _ => {}
            }
        }
        if kind == "error" {
            tracing::debug!(message = %data, "server ended the event stream, resuming");
            self.disconnect();
            return Ok(None);
        }
        if let Some(id) = id {
            self.start = Start::After(Offset(id));
        }
        if data.is_empty() {
            return Ok(None);
        }
        let event: Event = serde_json::from_str(&data).map_err(|e| Error::Decode {
            url: self.client.api_url("/events/stream"),
            message: e.to_string(),
        })?;
        self.start = Start::After(event.offset);
        Ok(Some(event))
    }
}

/// Takes one whole SSE message (up to a blank line) off the buffer.
fn take_block(buf: &mut BytesMut) -> Option<String> {
    let text = &buf[..];
    let (end, sep) = [&b"\n\n"[..], b"\r\n\r\n", b"\r\r"]
        .iter()
        .filter_map(|sep| {
            text.windows(sep.len())
                .position(|w| w == *sep)
                .map(|i| (i, sep.len()))
        })
        .min()?;
    let block = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.advance(end + sep);
    Some(block)
}

fn retryable(e: &Error) -> bool {
    match e {
        Error::Connect { .. } => true,
        Error::Api { status, .. } => *status >= 500 || *status == 408 || *status == 429,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_split_on_blank_lines() {
        let mut buf = BytesMut::from(&b"id: 1\ndata: x\n\n: heartbeat\n\nid: 2"[..]);
        assert_eq!(take_block(&mut buf).as_deref(), Some("id: 1\ndata: x"));
        assert_eq!(take_block(&mut buf).as_deref(), Some(": heartbeat"));
        assert_eq!(take_block(&mut buf), None);
        assert_eq!(&buf[..], b"id: 2");
    }
}
