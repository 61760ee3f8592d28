//! Small helpers for the one SQL code path over sqlx `Any`: dynamic statements with `$n`
//! placeholders, row decoding, times as microseconds, cursors.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AssertSqlSafe, Row};

use crate::error::{Error, Result};

/// A bind value.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    I(Option<i64>),
    S(Option<String>),
    F(f64),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::I(Some(v))
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::I(v)
    }
}
impl From<f64> for Arg {
    fn from(v: f64) -> Self {
        Arg::F(v)
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::S(Some(v.to_string()))
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::S(Some(v))
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg::S(Some(v.clone()))
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::S(v)
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Arg::S(v.map(str::to_string))
    }
}

/// A statement built piece by piece; only constant text and computed integers go into the
/// text, every value from outside is bound.
#[derive(Debug, Default)]
pub(crate) struct Sql {
    pub(crate) text: String,
    pub(crate) args: Vec<Arg>,
}

impl Sql {
    pub(crate) fn new(text: &str) -> Self {
        Self {
            text: text.to_string(),
            args: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Binds `value` and appends its placeholder.
    pub(crate) fn bind(&mut self, value: impl Into<Arg>) -> &mut Self {
        self.args.push(value.into());
        let n = self.args.len();
        self.text.push('$');
        self.text.push_str(&n.to_string());
        self
    }

    pub(crate) fn query(self) -> Query<'static, Any, AnyArguments> {
        bind_all(sqlx::query(AssertSqlSafe(self.text)), self.args)
    }
}

pub(crate) fn bind_all(
    mut q: Query<'static, Any, AnyArguments>,
    args: Vec<Arg>,
) -> Query<'static, Any, AnyArguments> {
    for a in args {
        q = match a {
            Arg::I(v) => q.bind(v),
            Arg::S(v) => q.bind(v),
            Arg::F(v) => q.bind(v),
        };
    }
    q
}

pub(crate) fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

pub(crate) fn to_us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn from_us(us: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us).single().unwrap_or_default()
}

// ---- row decoding (column names are ours, so a failure is a bug: report it as a db error)

pub(crate) fn get_i(row: &AnyRow, col: &str) -> Result<i64> {
    Ok(row.try_get::<i64, _>(col)?)
}
pub(crate) fn get_oi(row: &AnyRow, col: &str) -> Result<Option<i64>> {
    Ok(row.try_get::<Option<i64>, _>(col)?)
}
pub(crate) fn get_s(row: &AnyRow, col: &str) -> Result<String> {
    Ok(row.try_get::<String, _>(col)?)
}
pub(crate) fn get_os(row: &AnyRow, col: &str) -> Result<Option<String>> {
    Ok(row.try_get::<Option<String>, _>(col)?)
}
pub(crate) fn get_f(row: &AnyRow, col: &str) -> Result<f64> {
    Ok(row.try_get::<f64, _>(col)?)
}
pub(crate) fn get_time(row: &AnyRow, col: &str) -> Result<DateTime<Utc>> {
    Ok(from_us(get_i(row, col)?))
}
pub(crate) fn get_otime(row: &AnyRow, col: &str) -> Result<Option<DateTime<Utc>>> {
    Ok(get_oi(row, col)?.map(from_us))
}
pub(crate) fn get_json(row: &AnyRow, col: &str) -> Result<serde_json::Value> {
    let text = get_os(row, col)?.unwrap_or_else(|| "{}".into());
    serde_json::from_str(&text).map_err(|e| Error::Db(sqlx::Error::Decode(Box::new(e))))
}
pub(crate) fn get_ojson(row: &AnyRow, col: &str) -> Result<Option<serde_json::Value>> {
    match get_os(row, col)? {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::Db(sqlx::Error::Decode(Box::new(e)))),
    }
}
pub(crate) fn get_tags(row: &AnyRow, col: &str) -> Result<BTreeMap<String, String>> {
    let text = get_s(row, col)?;
    serde_json::from_str(&text).map_err(|e| Error::Db(sqlx::Error::Decode(Box::new(e))))
}

// ---- cursors: opaque to clients (hex of a small tagged text)

/// Encodes a cursor from its parts.
pub(crate) fn encode_cursor(parts: &[&str]) -> String {
    let text = parts.join("\u{1f}");
    let mut out = String::with_capacity(text.len() * 2 + 2);
    out.push_str("c1");
    for b in text.bytes() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Decodes a cursor made by [`encode_cursor`] with `n` parts; a bad one is a 400 naming `cursor`.
pub(crate) fn decode_cursor(cursor: &str, n: usize) -> Result<Vec<String>> {
    let bad = || {
        Error::invalid(
            "cursor",
            format!("cursor {cursor:?} is not a cursor this server gave out"),
        )
    };
    let hex = cursor.strip_prefix("c1").ok_or_else(bad)?;
    if hex.len() % 2 != 0 || !hex.is_ascii() {
        return Err(bad());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let parts: Vec<String> = text.split('\u{1f}').map(str::to_string).collect();
    if parts.len() != n {
        return Err(bad());
    }
    Ok(parts)
}

/// A cursor holding one integer (the last id of a page).
pub(crate) fn decode_id_cursor(cursor: &str) -> Result<i64> {
    let parts = decode_cursor(cursor, 2)?;
    if parts[0] != "id" {
        return Err(Error::invalid(
            "cursor",
            format!("cursor {cursor:?} is not a cursor this server gave out"),
        ));
    }
    parts[1].parse().map_err(|_| {
        Error::invalid(
            "cursor",
            format!("cursor {cursor:?} is not a cursor this server gave out"),
        )
    })
}

pub(crate) fn encode_id_cursor(id: i64) -> String {
    encode_cursor(&["id", &id.to_string()])
}

/// The page size asked for, checked: 1..=max (default `default`).
pub(crate) fn page_limit(limit: Option<u32>, default: u32, max: u32) -> Result<i64> {
    match limit {
        None => Ok(i64::from(default)),
        Some(0) => Err(Error::invalid("limit", "limit must be at least 1")),
        Some(n) if n > max => Err(Error::invalid(
            "limit",
            format!("limit {n} is over the largest page size {max}"),
        )),
        Some(n) => Ok(i64::from(n)),
    }
}

/// `true` for a unique-constraint violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip() {
        let c = encode_id_cursor(42);
        assert_eq!(decode_id_cursor(&c).unwrap(), 42);
        assert!(decode_id_cursor("nope").is_err());
        assert!(decode_id_cursor("c1zz").is_err());
        assert!(decode_id_cursor(&encode_cursor(&["x", "1"])).is_err());
    }

    #[test]
    fn limits() {
        assert_eq!(page_limit(None, 100, 1000).unwrap(), 100);
        assert!(page_limit(Some(0), 100, 1000).is_err());
        assert!(page_limit(Some(1001), 100, 1000).is_err());
    }
}
