//! The NATS JetStream bus: one stream (file storage) whose subjects encode namespace and key.
//!
//! - Subject: `{prefix}.{namespace}.{key}` (prefix default `aiflow.events`), namespace and key
//!   each one token escaped by [`escape_token`]: every byte outside `A-Z a-z 0-9 - _ / : @ + = , ! ~`
//!   becomes `%XX` (upper-case hex), so `.`, `*`, `>`, spaces, `%` and non-ASCII never reach
//!   NATS raw.
//! - Body: JSON `{"value": "…", "event_type": "…", "sender": "…", "context": {…}}`, every field
//!   optional. A body that is not a JSON object is taken as the value of an `UNDEFINED` event.
//! - Offset = stream sequence; `created_at` = the time JetStream stored the message.
//! - Idempotency: `Nats-Msg-Id` = the idempotency key; JetStream drops a repeat within the
//!   stream's duplicate window ([`NatsConfig::duplicate_window`]) and answers with the first
//!   sequence.
//! - Subscriptions and lists read through ordered pull consumers starting at a sequence.

use std::time::Duration;

use aiflow_api::event::{DEFAULT_EVENT_TYPE, EventLimits, validate_batch};
use aiflow_api::{Event, EventFilter, NewEvent, Offset};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::{Error, EventBus, EventStream};

/// Settings of a [`NatsBus`].
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// `nats://host:4222`.
    pub url: String,
    /// Stream name (default `AIFLOW_EVENTS`).
    pub stream: String,
    /// Subject prefix (default `aiflow.events`); the stream holds `{prefix}.>`.
    pub subject_prefix: String,
    /// How long JetStream remembers idempotency keys (default 24 h).
    pub duplicate_window: Duration,
    /// Delete events older than this (default: keep).
    pub max_age: Option<Duration>,
    /// Keep at most this many events (default: all).
    pub max_count: Option<u64>,
    /// Size limits of value and context.
    pub limits: EventLimits,
}

impl NatsConfig {
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream: "AIFLOW_EVENTS".into(),
            subject_prefix: "aiflow.events".into(),
            duplicate_window: Duration::from_secs(24 * 3600),
            max_age: None,
            max_count: None,
            limits: EventLimits::default(),
        }
    }

    #[must_use]
    pub fn stream(mut self, name: impl Into<String>) -> Self {
        self.stream = name.into();
        self
    }

    #[must_use]
    pub fn subject_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.subject_prefix = prefix.into();
        self
    }
}

/// The NATS JetStream bus. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    prefix: String,
    limits: EventLimits,
}

/// The message body on the wire.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Body {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sender: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    context: Option<serde_json::Value>,
}

fn unavailable(what: &str) -> impl FnOnce(&dyn std::fmt::Display) -> Error + '_ {
    move |e| Error::Unavailable(format!("nats {what}: {e}"))
}

impl NatsBus {
    /// Connects and creates the stream when it does not exist (its settings are updated to the
    /// config's when it does).
    pub async fn connect(config: NatsConfig) -> Result<Self, Error> {
        if config.stream.is_empty()
            || config
                .stream
                .contains(|c: char| c == '.' || c == '*' || c == '>' || c.is_whitespace())
        {
            return Err(Error::invalid(
                "stream",
                "stream name must be non-empty without `.`, `*`, `>` or spaces",
            ));
        }
        let client = async_nats::ConnectOptions::new()
            .name("aiflow-notification")
            .connect(&config.url)
            .await
            .map_err(|e| unavailable("connect")(&e))?;
        let js = jetstream::new(client.clone());
        let stream_config = stream::Config {
            name: config.stream.clone(),
            subjects: vec![format!("{}.>", config.subject_prefix)],
            storage: stream::StorageType::File,
            duplicate_window: config.duplicate_window,
            max_age: config.max_age.unwrap_or_default(),
            max_messages: config
                .max_count
                .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)),
            allow_direct: true,
            ..Default::default()
        };
        let stream = match js.get_stream(&config.stream).await {
            Ok(s) => {
                js.update_stream(stream_config)
                    .await
                    .map_err(|e| unavailable("update stream")(&e))?;
                s
            }
            Err(_) => {
                js.create_stream(stream_config)
                    .await
                    .map_err(|e| unavailable("create stream")(&e))?;
                js.get_stream(&config.stream)
                    .await
                    .map_err(|e| unavailable("get stream")(&e))?
            }
        };
        tracing::info!(stream = %config.stream, prefix = %config.subject_prefix, "nats event bus ready");
        Ok(Self {
            client,
            js,
            stream,
            prefix: config.subject_prefix,
            limits: config.limits,
        })
    }

    /// The NATS connection (shared with the scheduler's work queue).
    #[must_use]
    pub fn client(&self) -> async_nats::Client {
        self.client.clone()
    }

    /// Deletes the stream and everything in it (tests and tear-down).
    pub async fn delete_stream(&self) -> Result<(), Error> {
        let name = self.stream.cached_info().config.name.clone();
        self.js
            .delete_stream(&name)
            .await
            .map_err(|e| unavailable("delete stream")(&e))?;
        Ok(())
    }

    fn subject(&self, e: &NewEvent) -> String {
        subject_for(&self.prefix, e.namespace_or_default(), &e.key)
    }

    /// The narrowest subject filter that selects at least what `filter` selects.
    fn filter_subject(&self, filter: &EventFilter) -> String {
        let exact_key = filter.key.as_deref().filter(|k| !k.contains('*'));
        match (filter.namespace.as_deref(), exact_key) {
            (Some(ns), Some(k)) => subject_for(&self.prefix, ns, k),
            (Some(ns), None) => format!("{}.{}.*", self.prefix, escape_token(ns)),
            (None, Some(k)) => format!("{}.*.{}", self.prefix, escape_token(k)),
            (None, None) => format!("{}.>", self.prefix),
        }
    }

    /// `true` when the subject filter alone decides (no glob, type or sender to check).
    fn subject_decides(filter: &EventFilter) -> bool {
        filter.key.as_deref().is_none_or(|k| !k.contains('*'))
            && filter.event_types.is_empty()
            && filter.sender.is_none()
    }

    async fn send(&self, e: &NewEvent) -> Result<jetstream::context::PublishAckFuture, Error> {
        let body = Body {
            value: e.value.clone(),
            event_type: e.event_type.clone(),
            sender: e.sender.clone(),
            context: e.context.clone(),
        };
        let payload =
            serde_json::to_vec(&body).map_err(|err| Error::invalid("body", err.to_string()))?;
        let mut headers = HeaderMap::new();
        if let Some(k) = &e.idempotency_key {
            headers.insert("Nats-Msg-Id", k.as_str());
        }
        self.js
            .publish_with_headers(self.subject(e), headers, payload.into())
            .await
            .map_err(|err| unavailable("publish")(&err))
    }

    async fn stored(&self, seq: u64) -> Result<Event, Error> {
        let m = self
            .stream
            .get_raw_message(seq)
            .await
            .map_err(|e| unavailable("get message")(&e))?;
        Ok(event_of(
            &self.prefix,
            m.subject.as_str(),
            m.sequence,
            chrono_of(&m.time),
            &m.payload,
        ))
    }

    /// An ordered consumer of the matching subjects from offset `after + 1`, and the number
    /// of messages it has pending at creation.
    async fn consumer(
        &self,
        filter: &EventFilter,
        after: Offset,
    ) -> Result<(consumer::Consumer<consumer::pull::OrderedConfig>, u64), Error> {
        let deliver_policy = if after.0 <= 0 {
            consumer::DeliverPolicy::All
        } else {
            consumer::DeliverPolicy::ByStartSequence {
                start_sequence: u64::try_from(after.0).unwrap_or(0) + 1,
            }
        };
        let c = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: self.filter_subject(filter),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable("create consumer")(&e))?;
        let pending = c.cached_info().num_pending;
        Ok((c, pending))
    }

    /// Reads the stored matching events after `after`, at most `limit` matches (or all when
    /// `limit` is `None`), calling `f` with each.
    async fn scan(
        &self,
        filter: &EventFilter,
        after: Offset,
        limit: Option<usize>,
        mut f: impl FnMut(Event),
    ) -> Result<(), Error> {
        let (c, pending) = self.consumer(filter, after).await?;
        if pending == 0 || limit == Some(0) {
            return Ok(());
        }
        let mut messages = c.messages().await.map_err(|e| unavailable("consume")(&e))?;
        let mut matched = 0;
        while let Some(m) = messages.next().await {
            let m = m.map_err(|e| unavailable("consume")(&e))?;
            let info = m.info().map_err(|e| unavailable("message info")(&e))?;
            let event = event_of(
                &self.prefix,
                m.subject.as_str(),
                info.stream_sequence,
                chrono_of(&info.published),
                &m.payload,
            );
            let rest = info.pending;
            if filter.matches(&event) {
                f(event);
                matched += 1;
                if limit.is_some_and(|l| matched >= l) {
                    break;
                }
            }
            if rest == 0 {
                break;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl EventBus for NatsBus {
    async fn publish(&self, event: NewEvent) -> Result<Event, Error> {
        event.validate(&self.limits)?;
        let ack = self
            .send(&event)
            .await?
            .await
            .map_err(|e| unavailable("publish ack")(&e))?;
        if ack.duplicate {
            return self.stored(ack.sequence).await;
        }
        crate::metrics::published("nats", 1);
        Ok(stored_event(event, ack.sequence))
    }

    /// Validates all events first (an invalid one stores nothing), then publishes them in order
    /// with pipelined acknowledgements. NATS 2.9 has no atomic batch: when the server fails
    /// mid-batch, the events already stored are deleted again before the error is returned.
    async fn publish_batch(&self, events: Vec<NewEvent>) -> Result<Vec<Event>, Error> {
        validate_batch(&events, &self.limits)?;
        let mut acks = Vec::with_capacity(events.len());
        let mut failure = None;
        for e in &events {
            match self.send(e).await {
                Ok(a) => acks.push(a),
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
        }
        let mut stored = Vec::with_capacity(events.len());
        let mut fresh_seqs = Vec::new();
        for (e, ack) in events.into_iter().zip(acks) {
            match ack.await {
                Ok(a) if a.duplicate => stored.push(self.stored(a.sequence).await?),
                Ok(a) => {
                    fresh_seqs.push(a.sequence);
                    stored.push(stored_event(e, a.sequence));
                }
                Err(err) => {
                    failure.get_or_insert(unavailable("publish ack")(&err));
                }
            }
        }
        if let Some(err) = failure {
            for seq in fresh_seqs {
                if let Err(e) = self.stream.delete_message(seq).await {
                    tracing::error!(seq, error = %e, "cannot undo part of a failed batch");
                }
            }
            return Err(err);
        }
        crate::metrics::published("nats", fresh_seqs.len());
        Ok(stored)
    }

    async fn list(
        &self,
        filter: &EventFilter,
        after: Offset,
        limit: usize,
    ) -> Result<Vec<Event>, Error> {
        let mut out = Vec::new();
        self.scan(filter, after, Some(limit), |e| out.push(e))
            .await?;
        Ok(out)
    }

    async fn count(&self, filter: &EventFilter, after: Offset) -> Result<u64, Error> {
        if Self::subject_decides(filter) {
            return Ok(self.consumer(filter, after).await?.1);
        }
        let mut n = 0;
        self.scan(filter, after, None, |_| n += 1).await?;
        Ok(n)
    }

    async fn latest_offset(&self) -> Result<Offset, Error> {
        let info = self
            .stream
            .get_info()
            .await
            .map_err(|e| unavailable("stream info")(&e))?;
        Ok(Offset(
            i64::try_from(info.state.last_sequence).unwrap_or(i64::MAX),
        ))
    }

    async fn subscribe(&self, filter: EventFilter, after: Offset) -> Result<EventStream, Error> {
        let (c, _) = self.consumer(&filter, after).await?;
        let messages = c.messages().await.map_err(|e| unavailable("consume")(&e))?;
        let prefix = self.prefix.clone();
        let stream = async_stream::try_stream! {
            let mut messages = messages;
            let mut cursor = after;
            while let Some(m) = messages.next().await {
                let m = m.map_err(|e| unavailable("consume")(&e))?;
                let info = m.info().map_err(|e| unavailable("message info")(&e))?;
                let event = event_of(
                    &prefix,
                    m.subject.as_str(),
                    info.stream_sequence,
                    chrono_of(&info.published),
                    &m.payload,
                );
                // The ordered consumer never goes back, but be safe against a reset.
                if event.offset <= cursor {
                    continue;
                }
                cursor = event.offset;
                if filter.matches(&event) {
                    yield event;
                }
            }
            Err(Error::Unavailable("nats subscription ended".into()))?;
        };
        Ok(crate::metrics::counted(Box::pin(stream), "nats"))
    }

    async fn ping(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
            && self.stream.get_info().await.is_ok()
    }

    fn backend(&self) -> &'static str {
        "nats"
    }
}

fn stored_event(e: NewEvent, seq: u64) -> Event {
    Event {
        offset: Offset(i64::try_from(seq).unwrap_or(i64::MAX)),
        namespace: e.namespace_or_default().to_string(),
        event_type: e.event_type_or_default().to_string(),
        key: e.key,
        value: e.value,
        sender: e.sender,
        context: e.context,
        // The ack carries no time; the stored message's time differs by the round trip.
        created_at: Utc::now(),
    }
}

/// An event from a stored message (lenient: foreign publishers may send any body).
fn event_of(prefix: &str, subject: &str, seq: u64, time: DateTime<Utc>, payload: &[u8]) -> Event {
    let rest = subject
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('.'))
        .unwrap_or(subject);
    let (ns, key) = rest.split_once('.').unwrap_or(("", rest));
    let body = match serde_json::from_slice::<Body>(payload) {
        Ok(b) => b,
        Err(_) => Body {
            value: String::from_utf8_lossy(payload).into_owned(),
            ..Body::default()
        },
    };
    Event {
        offset: Offset(i64::try_from(seq).unwrap_or(i64::MAX)),
        namespace: unescape_token(ns),
        key: unescape_token(key),
        value: body.value,
        event_type: body
            .event_type
            .unwrap_or_else(|| DEFAULT_EVENT_TYPE.to_string()),
        sender: body.sender,
        context: body.context,
        created_at: time,
    }
}

/// async-nats' time type is `time::OffsetDateTime`, or chrono's when some crate enables its
/// `chrono` feature; read either through serde so this works under both.
fn chrono_of<T: Serialize>(t: &T) -> DateTime<Utc> {
    let fallback = Utc::now;
    match serde_json::to_value(t) {
        Ok(serde_json::Value::String(s)) => DateTime::parse_from_rfc3339(&s)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_else(|_| fallback()),
        // time's compact form: [year, ordinal, hour, minute, second, nanosecond, oh, om, os]
        Ok(serde_json::Value::Array(v)) if v.len() >= 9 => {
            let n = |i: usize| v[i].as_i64().unwrap_or(0);
            let local = chrono::NaiveDate::from_yo_opt(n(0) as i32, n(1) as u32).and_then(|d| {
                d.and_hms_nano_opt(n(2) as u32, n(3) as u32, n(4) as u32, n(5) as u32)
            });
            match local {
                Some(l) => {
                    let offset = n(6) * 3600 + n(7) * 60 + n(8);
                    l.and_utc() - chrono::Duration::seconds(offset)
                }
                None => fallback(),
            }
        }
        _ => fallback(),
    }
}

/// The subject of an event: `{prefix}.{escaped namespace}.{escaped key}`.
#[must_use]
pub fn subject_for(prefix: &str, namespace: &str, key: &str) -> String {
    format!("{prefix}.{}.{}", escape_token(namespace), escape_token(key))
}

fn keeps(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_/:@+=,!~".contains(&b)
}

/// One subject token: bytes outside `A-Z a-z 0-9 - _ / : @ + = , ! ~` become `%XX`.
#[must_use]
pub fn escape_token(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if keeps(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`escape_token`] (lenient: a malformed `%` stays as it is).
#[must_use]
pub fn unescape_token(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_escape_what_nats_treats_specially() {
        let raw = "a.b*c>d e%f/ü";
        let t = escape_token(raw);
        assert_eq!(t, "a%2Eb%2Ac%3Ed%20e%25f/%C3%BC");
        assert!(!t.contains(['.', '*', '>', ' ']));
        assert_eq!(unescape_token(&t), raw);
        assert_eq!(
            subject_for("aiflow.events", "default", "model/fraud"),
            "aiflow.events.default.model/fraud"
        );
        assert_eq!(unescape_token("100%"), "100%");
    }

    #[test]
    fn message_bodies_decode_leniently() {
        let now = Utc::now();
        let e = event_of(
            "p.q",
            "p.q.ns.k%2E1",
            7,
            now,
            br#"{"value":"v","event_type":"T","context":{"a":1}}"#,
        );
        assert_eq!(
            (e.offset, e.namespace.as_str(), e.key.as_str()),
            (Offset(7), "ns", "k.1")
        );
        assert_eq!((e.value.as_str(), e.event_type.as_str()), ("v", "T"));
        let e = event_of("p", "p.ns.k", 1, now, b"plain text");
        assert_eq!(
            (e.value.as_str(), e.event_type.as_str()),
            ("plain text", "UNDEFINED")
        );
    }
}
