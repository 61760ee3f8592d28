//! Events: what the bus stores and delivers, what publishers send, and how listeners filter.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The namespace of an event that names none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The type of an event that names none.
pub const DEFAULT_EVENT_TYPE: &str = "UNDEFINED";

/// Position of an event in the bus: assigned by the bus, strictly increasing, never reused.
/// `Offset(0)` is "before the first event".
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
)]
#[serde(transparent)]
pub struct Offset(pub i64);

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Offset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().parse::<i64>() {
            Ok(n) if n >= 0 => Ok(Offset(n)),
            _ => Err(format!("offset {s:?} is not a non-negative integer")),
        }
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    pub offset: Offset,
    pub namespace: String,
    pub key: String,
    #[serde(default)]
    pub value: String,
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// Free JSON; names the workflow execution (`{"execution": "…"}`) for events of a job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

/// An event to publish. The bus assigns `offset` and `created_at`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"key": "dataset/clicks/2026-12-05", "value": "s3://lake/clicks/2026-12-05", "event_type": "DATASET_READY", "sender": "ingest"}))]
pub struct NewEvent {
    /// Default `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"
    )]
    pub namespace: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"
    )]
    pub key: String,
    #[serde(default)]
    pub value: String,
    /// Default `UNDEFINED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"
    )]
    pub event_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"
    )]
    pub sender: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<serde_json::Value>,
    /// An event with a key already stored is not stored again; its first offset is returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"
    )]
    pub idempotency_key: Option<String>,
}

impl NewEvent {
    #[must_use]
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            ..Self::default()
        }
    }

    #[must_use]
    pub fn event_type(mut self, t: impl Into<String>) -> Self {
        self.event_type = Some(t.into());
        self
    }

    #[must_use]
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = Some(ns.into());
        self
    }

    #[must_use]
    pub fn sender(mut self, s: impl Into<String>) -> Self {
        self.sender = Some(s.into());
        self
    }

    #[must_use]
    pub fn context(mut self, c: serde_json::Value) -> Self {
        self.context = Some(c);
        self
    }

    #[must_use]
    pub fn idempotency_key(mut self, k: impl Into<String>) -> Self {
        self.idempotency_key = Some(k.into());
        self
    }
}

/// Which events a listener or a list wants. Empty fields match everything.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Key pattern: `*` matches any run of characters (`dataset/raw/*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Any of these types (empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_types: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
}

impl EventFilter {
    /// `true` when `event` passes this filter.
    #[must_use]
    pub fn matches(&self, event: &Event) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| ns == event.namespace)
            && self
                .key
                .as_deref()
                .is_none_or(|k| key_matches(k, &event.key))
            && (self.event_types.is_empty() || self.event_types.contains(&event.event_type))
            && self
                .sender
                .as_deref()
                .is_none_or(|s| Some(s) == event.sender.as_deref())
    }
}

/// Glob match where `*` stands for any run of characters (also none) and everything else is
/// literal. Linear time: no backtracking blow-up on hostile patterns.
#[must_use]
pub fn key_matches(pattern: &str, key: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = key.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty(); // no `*` at all: exact match
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Longest namespace, key, event type, sender or idempotency key, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 256;
/// Default largest `value` and `context` (serialised), in bytes: 1 MiB.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// Size limits checked before an event is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLimits {
    /// Largest `value`, in bytes (default 1 MiB).
    pub max_value_bytes: usize,
    /// Largest `context` as compact JSON, in bytes (default 1 MiB).
    pub max_context_bytes: usize,
}

impl Default for EventLimits {
    fn default() -> Self {
        Self {
            max_value_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_context_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
        }
    }
}

/// Why an event was refused: the field at fault (`key`, `[3].context`) and a lower-case message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidEvent {
    pub field: String,
    pub message: String,
}

impl InvalidEvent {
    #[must_use]
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error for the `index`-th event of a batch (`[index].field`).
    #[must_use]
    pub fn at(mut self, index: usize) -> Self {
        self.field = format!("[{index}].{}", self.field);
        self
    }
}

/// Checks a name-like field: 1..=256 bytes, no control characters.
fn check_name(field: &str, value: &str) -> Result<(), InvalidEvent> {
    if value.is_empty() {
        return Err(InvalidEvent::new(
            field,
            format!("{field} must not be empty"),
        ));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(InvalidEvent::new(
            field,
            format!(
                "{field} is {} bytes long, the limit is {MAX_NAME_BYTES}",
                value.len()
            ),
        ));
    }
    if let Some(c) = value.chars().find(|c| crate::is_deceptive_char(*c)) {
        return Err(InvalidEvent::new(
            field,
            format!(
                "{field} must not contain control, invisible or bidirectional characters (it holds U+{:04X})",
                u32::from(c)
            ),
        ));
    }
    Ok(())
}

impl NewEvent {
    /// The namespace, `default` when none is given.
    #[must_use]
    pub fn namespace_or_default(&self) -> &str {
        self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
    }

    /// The event type, `UNDEFINED` when none is given.
    #[must_use]
    pub fn event_type_or_default(&self) -> &str {
        self.event_type.as_deref().unwrap_or(DEFAULT_EVENT_TYPE)
    }

    /// Checks the event against `limits`: key, namespace, event type, sender and idempotency key
    /// 1..=256 bytes without control characters; value and context within their limits.
    pub fn validate(&self, limits: &EventLimits) -> Result<(), InvalidEvent> {
        check_name("key", &self.key)?;
        if let Some(ns) = &self.namespace {
            check_name("namespace", ns)?;
        }
        if let Some(t) = &self.event_type {
            check_name("event_type", t)?;
        }
        if let Some(s) = &self.sender {
            check_name("sender", s)?;
        }
        if let Some(k) = &self.idempotency_key {
            check_name("idempotency_key", k)?;
        }
        if self.value.len() > limits.max_value_bytes {
            return Err(InvalidEvent::new(
                "value",
                format!(
                    "value is {} bytes long, the limit is {}",
                    self.value.len(),
                    limits.max_value_bytes
                ),
            ));
        }
        if self.value.contains('\0') {
            return Err(InvalidEvent::new(
                "value",
                "value must not contain NUL characters",
            ));
        }
        if let Some(c) = &self.context {
            let len = serde_json::to_vec(c).map_or(usize::MAX, |v| v.len());
            if len > limits.max_context_bytes {
                return Err(InvalidEvent::new(
                    "context",
                    format!(
                        "context is {len} bytes long as JSON, the limit is {}",
                        limits.max_context_bytes
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Checks every event of a batch; errors name the event's index (`[2].key`).
pub fn validate_batch(events: &[NewEvent], limits: &EventLimits) -> Result<(), InvalidEvent> {
    for (i, e) in events.iter().enumerate() {
        e.validate(limits).map_err(|err| err.at(i))?;
    }
    Ok(())
}

/// Query of `GET /events`, `GET /events/count` and `GET /events/stream`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only events of this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Key pattern: `*` matches any run of characters (`dataset/raw/*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// One event type, or several separated by commas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// Only events of this sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// Only events with a larger offset (list, count; stream when `from` is absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<i64>)]
    pub after: Option<i64>,
    /// Page size of a list, 1..=1000 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// A list's `next_cursor`: continues after the last event of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Stream only: start at this offset, inclusive (`from=1` replays everything). Without
    /// `from`, `after` and `Last-Event-ID` the stream starts with the next new event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<i64>)]
    pub from: Option<i64>,
}

impl EventQuery {
    /// The filter part of the query.
    #[must_use]
    pub fn filter(&self) -> EventFilter {
        EventFilter {
            namespace: self.namespace.clone(),
            key: self.key.clone(),
            event_types: self
                .event_type
                .as_deref()
                .map(|t| {
                    t.split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
            sender: self.sender.clone(),
        }
    }

    /// The query that selects what `filter` selects.
    #[must_use]
    pub fn from_filter(filter: &EventFilter) -> Self {
        Self {
            namespace: filter.namespace.clone(),
            key: filter.key.clone(),
            event_type: (!filter.event_types.is_empty()).then(|| filter.event_types.join(",")),
            sender: filter.sender.clone(),
            ..Self::default()
        }
    }
}

/// Answer of `GET /events/count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EventCount {
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matching() {
        assert!(key_matches("model/fraud", "model/fraud"));
        assert!(!key_matches("model/fraud", "model/fraud2"));
        assert!(key_matches("dataset/raw/*", "dataset/raw/2026-11-25"));
        assert!(key_matches("dataset/raw/*", "dataset/raw/"));
        assert!(!key_matches("dataset/raw/*", "dataset/clean/x"));
        assert!(key_matches("*", ""));
        assert!(key_matches("a*b*c", "aXXbYYc"));
        assert!(!key_matches("a*b*c", "aXXbYY"));
        assert!(key_matches("*/fraud", "model/fraud"));
        assert!(key_matches("a*a", "aa"));
        assert!(!key_matches("a*a", "a"));
        assert!(key_matches("**", "anything"));
    }

    #[test]
    fn validation_names_the_field() {
        let limits = EventLimits::default();
        assert!(NewEvent::new("k", "v").validate(&limits).is_ok());
        assert_eq!(
            NewEvent::new("", "v").validate(&limits).unwrap_err().field,
            "key"
        );
        let long = "x".repeat(257);
        assert_eq!(
            NewEvent::new(long, "").validate(&limits).unwrap_err().field,
            "key"
        );
        let e = NewEvent::new("k", "").namespace("a\nb");
        assert_eq!(e.validate(&limits).unwrap_err().field, "namespace");
        let small = EventLimits {
            max_value_bytes: 3,
            max_context_bytes: 10,
        };
        assert_eq!(
            NewEvent::new("k", "abcd")
                .validate(&small)
                .unwrap_err()
                .field,
            "value"
        );
        let e = NewEvent::new("k", "").context(serde_json::json!({"execution": "0123456789"}));
        assert_eq!(e.validate(&small).unwrap_err().field, "context");
        let batch = [NewEvent::new("k", ""), NewEvent::new("", "")];
        assert_eq!(
            validate_batch(&batch, &limits).unwrap_err().field,
            "[1].key"
        );
    }

    #[test]
    fn query_to_filter() {
        let q = EventQuery {
            event_type: Some("A, B".into()),
            key: Some("m/*".into()),
            ..EventQuery::default()
        };
        let f = q.filter();
        assert_eq!(f.event_types, vec!["A".to_string(), "B".to_string()]);
        assert_eq!(
            EventQuery::from_filter(&f).event_type.as_deref(),
            Some("A,B")
        );
    }

    #[test]
    fn offsets_parse() {
        assert_eq!("42".parse::<Offset>().unwrap(), Offset(42));
        assert!("-1".parse::<Offset>().is_err());
        assert!("x".parse::<Offset>().is_err());
    }
}
