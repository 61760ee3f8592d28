//! `--output yaml`: what `--output json` prints, as a YAML document in block style.
//!
//! Strings are written double-quoted, as JSON writes them (valid YAML with the same escapes),
//! so `"yes"`, `"null"` or `"0123"` stay strings for every YAML reader; map keys are written
//! plainly when they are simple names.

use std::fmt::Write as _;

use serde_json::Value;

/// `value` as a YAML document (ending in a newline).
pub(crate) fn to_string(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(m) if !m.is_empty() => write_map(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => write_seq(&mut out, a, 0),
        scalar => {
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
    out
}

/// Scalars and empty collections, on one line.
fn inline(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => Value::String(s.clone()).to_string(),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

fn is_block(v: &Value) -> bool {
    match v {
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
        _ => false,
    }
}

fn key(k: &str) -> String {
    let plain = k
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !matches!(
            k.to_ascii_lowercase().as_str(),
            "null" | "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n"
        );
    if plain {
        k.to_string()
    } else {
        Value::String(k.to_string()).to_string()
    }
}

fn write_map(out: &mut String, m: &serde_json::Map<String, Value>, indent: usize) {
    for (i, (k, v)) in m.iter().enumerate() {
        // The first key of a map inside a sequence item follows its "- ".
        if i > 0 || indent == 0 || !out.ends_with("- ") {
            out.push_str(&" ".repeat(indent));
        }
        let _ = write!(out, "{}:", key(k));
        if is_block(v) {
            out.push('\n');
            match v {
                Value::Object(m) => write_map(out, m, indent + 2),
                Value::Array(a) => write_seq(out, a, indent + 2),
                _ => unreachable!("is_block"),
            }
        } else {
            let _ = writeln!(out, " {}", inline(v));
        }
    }
}

fn write_seq(out: &mut String, a: &[Value], indent: usize) {
    for v in a {
        out.push_str(&" ".repeat(indent));
        match v {
            Value::Object(m) if !m.is_empty() => {
                out.push_str("- ");
                write_map(out, m, indent + 2);
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push_str("-\n");
                write_seq(out, inner, indent + 2);
            }
            scalar => {
                let _ = writeln!(out, "- {}", inline(scalar));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn block_style_with_quoted_strings() {
        let v = json!({
            "items": [
                {"name": "churn", "tags": {"team": "ml"}, "size": 3, "empty": [], "none": null},
                {"name": "yes", "nested": [[1, 2], []]}
            ],
            "next_cursor": null,
            "odd key": "line\nbreak",
            "true": false
        });
        let text = to_string(&v);
        assert_eq!(
            text,
            "items:\n  - empty: []\n    name: \"churn\"\n    none: null\n    size: 3\n    tags:\n      team: \"ml\"\n  - name: \"yes\"\n    nested:\n      -\n        - 1\n        - 2\n      - []\nnext_cursor: null\n\"odd key\": \"line\\nbreak\"\n\"true\": false\n"
        );
        assert_eq!(to_string(&json!("x")), "\"x\"\n");
        assert_eq!(to_string(&json!([])), "[]\n");
    }
}
