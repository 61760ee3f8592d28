//! Tag URIs (`name?k=v&k2=v2`) and the checks every named thing shares.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// A parsed tag URI: an optional name and a tag subset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagUri {
    pub name: Option<String>,
    pub tags: BTreeMap<String, String>,
}

/// Parses `name?k=v&k2=v2`, `?k=v` or `k=v&k2=v2` (the last only when `allow_bare` is true).
/// Values may be percent-encoded. `field` is named in errors.
pub fn parse_tag_uri(input: &str, field: &str, allow_bare: bool) -> Result<TagUri> {
    let (name, query) = match input.split_once('?') {
        Some((n, q)) => (n, q),
        None if allow_bare && input.contains('=') => ("", input),
        None => (input, ""),
    };
    let name = if name.is_empty() {
        None
    } else {
        // A bad name in a query is a bad argument (400), like a bad tag.
        check_name(name, field).map_err(|e| match e {
            Error::Unprocessable { field, message } => Error::Invalid { field, message },
            e => e,
        })?;
        Some(name.to_string())
    };
    let mut tags = BTreeMap::new();
    if !query.is_empty() {
        for (i, pair) in query.split(['&', ',']).enumerate() {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(Error::invalid(
                    field,
                    format!("{field}: tag {} {pair:?} is not key=value", i + 1),
                ));
            };
            let k = percent_decode(k, field)?;
            let v = percent_decode(v, field)?;
            check_tag(&k, &v, field)?;
            if tags.insert(k.clone(), v).is_some() {
                return Err(Error::invalid(
                    field,
                    format!("{field}: tag {k:?} is given twice"),
                ));
            }
        }
    }
    if name.is_none() && tags.is_empty() {
        return Err(Error::invalid(field, format!("{field} is empty")));
    }
    Ok(TagUri { name, tags })
}

/// Formats a name and tags as a tag URI.
#[must_use]
pub fn format_tag_uri(name: &str, tags: &BTreeMap<String, String>) -> String {
    if tags.is_empty() {
        return name.to_string();
    }
    let q: Vec<String> = tags
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect();
    format!("{name}?{}", q.join("&"))
}

fn percent_decode(s: &str, field: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3).ok_or_else(|| {
                    Error::invalid(field, format!("{field}: bad percent escape in {s:?}"))
                })?;
                let b = u8::from_str_radix(hex, 16).map_err(|_| {
                    Error::invalid(field, format!("{field}: bad percent escape in {s:?}"))
                })?;
                out.push(b);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map_err(|_| Error::invalid(field, format!("{field}: {s:?} is not UTF-8 once decoded")))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Names: 1..=200 characters, no spaces or control characters, none of `? & = @ ,` (they
/// delimit tag URIs and lineage node ids), not starting with `/` or `.`.
pub fn check_name(name: &str, field: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::unprocessable(
            field,
            format!("{field} must not be empty"),
        ));
    }
    if name.chars().count() > 200 {
        return Err(Error::unprocessable(
            field,
            format!("{field} is longer than 200 characters"),
        ));
    }
    if let Some(c) = name.chars().find(|c| {
        c.is_whitespace()
            || aiflow_api::is_deceptive_char(*c)
            || matches!(c, '?' | '&' | '=' | '@' | ',' | '%')
    }) {
        return Err(Error::unprocessable(
            field,
            format!("{field} {name:?} holds {c:?}, which names may not"),
        ));
    }
    if name.starts_with(['/', '.']) {
        return Err(Error::unprocessable(
            field,
            format!("{field} {name:?} must not start with '/' or '.'"),
        ));
    }
    Ok(())
}

/// Tag keys: 1..=100 characters; values up to 500.
fn check_tag(k: &str, v: &str, field: &str) -> Result<()> {
    if k.is_empty() || k.chars().count() > 100 {
        return Err(Error::invalid(
            field,
            format!("{field}: tag key {k:?} must be 1 to 100 characters"),
        ));
    }
    if v.chars().count() > 500 {
        return Err(Error::invalid(
            field,
            format!("{field}: value of tag {k:?} is longer than 500 characters"),
        ));
    }
    Ok(())
}

/// Checks tags given in a body (422 naming `tags`).
pub(crate) fn check_tags(tags: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in tags {
        check_tag(k, v, "tags").map_err(|e| match e {
            Error::Invalid { field, message } => Error::Unprocessable { field, message },
            e => e,
        })?;
    }
    Ok(())
}

/// `properties` must be a JSON object; absent means `{}`.
pub(crate) fn properties_text(p: Option<&serde_json::Value>) -> Result<String> {
    match p {
        None => Ok("{}".into()),
        Some(v @ serde_json::Value::Object(_)) => Ok(v.to_string()),
        Some(_) => Err(Error::unprocessable(
            "properties",
            "properties must be a JSON object",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tag_uris() {
        let t = parse_tag_uri("fraud?team=risk&env=prod%20eu", "uri", false).unwrap();
        assert_eq!(t.name.as_deref(), Some("fraud"));
        assert_eq!(t.tags["team"], "risk");
        assert_eq!(t.tags["env"], "prod eu");
        let t = parse_tag_uri("team=risk,env=prod", "tags", true).unwrap();
        assert_eq!(t.name, None);
        assert_eq!(t.tags.len(), 2);
        assert_eq!(format_tag_uri("m", &t.tags), "m?env=prod&team=risk");
    }

    #[test]
    fn rejects_bad_tag_uris() {
        for bad in [
            "x?team",
            "x?=v",
            "x?a=1&a=2",
            "x?a=%zz",
            "",
            "?",
            "bad name?a=1",
        ] {
            let e = parse_tag_uri(bad, "tags", true).unwrap_err();
            assert!(e.to_string().contains("tags"), "{bad}: {e}");
        }
    }

    #[test]
    fn checks_names() {
        assert!(check_name("raw/clicks-v2.parquet", "name").is_ok());
        for bad in ["", "a b", "a?b", "a@1", "/x", ".x"] {
            assert!(check_name(bad, "name").is_err(), "{bad}");
        }
    }
}
