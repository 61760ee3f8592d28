//! MLflow's search syntax: `filter_string` (clauses joined by `AND`) and `order_by`, evaluated
//! over rows loaded into memory. Identifiers are `metrics.k`, `params.k`, `tags.k`,
//! `attributes.k` or a bare attribute; a key may be quoted with backticks or double quotes.

use std::cmp::Ordering;

/// Where an identifier looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Space {
    Metric,
    Param,
    Tag,
    Attribute,
}

/// A value of a row under an identifier.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val {
    S(String),
    N(f64),
}

/// What a searched thing answers for an identifier.
pub(crate) trait Row {
    fn get(&self, space: Space, key: &str) -> Option<Val>;
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Like,
    ILike,
    In,
    NotIn,
    IsNull,
    IsNotNull,
}

#[derive(Debug, Clone, PartialEq)]
enum Lit {
    S(String),
    N(f64),
    List(Vec<String>),
    None,
}

/// One `identifier op value` clause.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Clause {
    space: Space,
    key: String,
    op: Op,
    value: Lit,
}

/// A parsed filter: every clause must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Filter(Vec<Clause>);

struct Lexer<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            s: text.as_bytes(),
            text,
            i: 0,
        }
    }

    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn done(&mut self) -> bool {
        self.ws();
        self.i >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// A quoted string (`'…'`, `"…"` or `` `…` ``), quotes removed; a doubled quote or a
    /// backslash escapes one.
    fn quoted(&mut self) -> Result<String, String> {
        let q = self.s[self.i];
        self.i += 1;
        let mut out = String::new();
        let rest = &self.text[self.i..];
        let mut chars = rest.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            if c == '\\' {
                if let Some((_, n)) = chars.next() {
                    out.push(n);
                }
                continue;
            }
            if c as u32 == u32::from(q) {
                if chars.peek().is_some_and(|(_, n)| *n as u32 == u32::from(q)) {
                    chars.next();
                    out.push(c);
                    continue;
                }
                self.i += at + 1;
                return Ok(out);
            }
            out.push(c);
        }
        Err(format!(
            "unterminated quote {:?} in the filter",
            char::from(q)
        ))
    }

    /// A bare word: anything up to white space, an operator character or a parenthesis.
    fn word(&mut self) -> String {
        let start = self.i;
        while let Some(c) = self.peek() {
            if c.is_ascii_whitespace()
                || matches!(c, b'=' | b'!' | b'<' | b'>' | b'(' | b')' | b',')
            {
                break;
            }
            self.i += 1;
        }
        self.text[start..self.i].to_string()
    }

    fn keyword(&mut self, kw: &str) -> bool {
        self.ws();
        let end = self.i + kw.len();
        if end <= self.s.len()
            && self.text[self.i..end].eq_ignore_ascii_case(kw)
            && self
                .s
                .get(end)
                .is_none_or(|c| c.is_ascii_whitespace() || *c == b'(' || *c == b'\'')
        {
            self.i = end;
            true
        } else {
            false
        }
    }
}

fn space_of(word: &str) -> Option<Space> {
    match word.to_ascii_lowercase().as_str() {
        "metric" | "metrics" => Some(Space::Metric),
        "param" | "params" | "parameter" | "parameters" => Some(Space::Param),
        "tag" | "tags" => Some(Space::Tag),
        "attribute" | "attributes" | "attr" | "run" => Some(Space::Attribute),
        _ => None,
    }
}

/// Reads `space.key` or a bare attribute.
fn identifier(lx: &mut Lexer<'_>) -> Result<(Space, String), String> {
    lx.ws();
    let Some(c) = lx.peek() else {
        return Err("the filter ends where an identifier was expected".into());
    };
    if matches!(c, b'"' | b'`') {
        // A quoted bare attribute.
        return Ok((Space::Attribute, lx.quoted()?));
    }
    let start = lx.i;
    while let Some(c) = lx.peek() {
        if c == b'.' || c.is_ascii_whitespace() || matches!(c, b'=' | b'!' | b'<' | b'>') {
            break;
        }
        lx.i += 1;
    }
    let head = lx.text[start..lx.i].to_string();
    if lx.peek() == Some(b'.')
        && let Some(space) = space_of(&head)
    {
        lx.i += 1;
        let key = match lx.peek() {
            Some(b'"' | b'`') => lx.quoted()?,
            _ => lx.word(),
        };
        if key.is_empty() {
            return Err(format!("{head}. needs a key after the dot"));
        }
        return Ok((space, key));
    }
    if lx.peek() == Some(b'.') {
        // `a.b` with an unknown prefix.
        let rest = lx.word();
        return Err(format!(
            "invalid identifier {:?}: use metrics., params., tags. or attributes.",
            format!("{head}{rest}")
        ));
    }
    if head.is_empty() {
        return Err(format!(
            "expected an identifier at position {} of the filter",
            lx.i
        ));
    }
    Ok((Space::Attribute, head))
}

fn operator(lx: &mut Lexer<'_>) -> Result<Op, String> {
    lx.ws();
    for (sym, op) in [
        ("!=", Op::Ne),
        ("<>", Op::Ne),
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("==", Op::Eq),
        ("=", Op::Eq),
        ("<", Op::Lt),
        (">", Op::Gt),
    ] {
        if lx.text[lx.i..].starts_with(sym) {
            lx.i += sym.len();
            return Ok(op);
        }
    }
    if lx.keyword("LIKE") {
        return Ok(Op::Like);
    }
    if lx.keyword("ILIKE") {
        return Ok(Op::ILike);
    }
    if lx.keyword("IN") {
        return Ok(Op::In);
    }
    if lx.keyword("NOT") {
        if lx.keyword("IN") {
            return Ok(Op::NotIn);
        }
        return Err("NOT must be followed by IN".into());
    }
    if lx.keyword("IS") {
        if lx.keyword("NOT") {
            if lx.keyword("NULL") {
                return Ok(Op::IsNotNull);
            }
        } else if lx.keyword("NULL") {
            return Ok(Op::IsNull);
        }
        return Err("IS must be followed by NULL or NOT NULL".into());
    }
    Err(format!(
        "expected a comparison operator (=, !=, <, <=, >, >=, LIKE, ILIKE, IN, NOT IN) at position {}",
        lx.i
    ))
}

fn value(lx: &mut Lexer<'_>, op: &Op) -> Result<Lit, String> {
    lx.ws();
    match op {
        Op::IsNull | Op::IsNotNull => return Ok(Lit::None),
        Op::In | Op::NotIn => {
            if lx.peek() != Some(b'(') {
                return Err("IN needs a list in parentheses: ('a', 'b')".into());
            }
            lx.i += 1;
            let mut items = Vec::new();
            loop {
                lx.ws();
                match lx.peek() {
                    Some(b'\'' | b'"') => items.push(lx.quoted()?),
                    Some(b')') if items.is_empty() => {}
                    _ => return Err("IN lists hold quoted strings".into()),
                }
                lx.ws();
                match lx.peek() {
                    Some(b',') => lx.i += 1,
                    Some(b')') => {
                        lx.i += 1;
                        return Ok(Lit::List(items));
                    }
                    _ => return Err("an IN list must end with ')'".into()),
                }
            }
        }
        _ => {}
    }
    match lx.peek() {
        Some(b'\'' | b'"') => Ok(Lit::S(lx.quoted()?)),
        Some(_) => {
            let w = lx.word();
            w.parse::<f64>()
                .map(Lit::N)
                .map_err(|_| format!("expected a quoted string or a number, found {w:?}"))
        }
        None => Err("the filter ends where a value was expected".into()),
    }
}

impl Filter {
    /// Parses a filter string; empty means "everything".
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut lx = Lexer::new(text);
        let mut clauses = Vec::new();
        if lx.done() {
            return Ok(Self(clauses));
        }
        loop {
            let (space, key) = identifier(&mut lx)?;
            let op = operator(&mut lx)?;
            let value = value(&mut lx, &op)?;
            if space == Space::Metric
                && !matches!(value, Lit::N(_) | Lit::None)
                && !matches!(op, Op::IsNull | Op::IsNotNull)
            {
                return Err(format!(
                    "metrics.{key} is compared with numbers, not {}",
                    match value {
                        Lit::S(s) => format!("{s:?}"),
                        _ => "a list".into(),
                    }
                ));
            }
            if space != Space::Metric && matches!(value, Lit::N(_)) && space != Space::Attribute {
                return Err(format!(
                    "{}.{key} is a string: quote the value",
                    if space == Space::Param {
                        "params"
                    } else {
                        "tags"
                    }
                ));
            }
            clauses.push(Clause {
                space,
                key,
                op,
                value,
            });
            if lx.done() {
                return Ok(Self(clauses));
            }
            if !lx.keyword("AND") {
                return Err(format!(
                    "expected AND at position {} of the filter (OR is not supported)",
                    lx.i
                ));
            }
        }
    }

    /// The attribute keys the clauses name (to check them against what a search knows).
    pub(crate) fn attributes(&self) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(|c| c.space == Space::Attribute)
            .map(|c| c.key.as_str())
    }

    /// Whether `row` passes every clause.
    pub(crate) fn matches(&self, row: &dyn Row) -> bool {
        self.0.iter().all(|c| clause_holds(c, row))
    }
}

fn clause_holds(c: &Clause, row: &dyn Row) -> bool {
    let got = row.get(c.space, &c.key);
    match (&c.op, got) {
        (Op::IsNull, v) => v.is_none(),
        (Op::IsNotNull, v) => v.is_some(),
        (_, None) => false,
        (op, Some(Val::N(n))) => {
            let want = match &c.value {
                Lit::N(w) => *w,
                Lit::S(s) => match s.parse::<f64>() {
                    Ok(w) => w,
                    Err(_) => return false,
                },
                _ => return false,
            };
            match op {
                Op::Eq => n == want,
                Op::Ne => n != want,
                Op::Lt => n < want,
                Op::Le => n <= want,
                Op::Gt => n > want,
                Op::Ge => n >= want,
                _ => false,
            }
        }
        (op, Some(Val::S(s))) => {
            let want = match &c.value {
                Lit::S(w) => w.clone(),
                Lit::N(w) => fmt_num(*w),
                Lit::List(items) => {
                    let found = items.contains(&s);
                    return if *op == Op::In { found } else { !found };
                }
                Lit::None => return false,
            };
            match op {
                Op::Eq => s == want,
                Op::Ne => s != want,
                Op::Lt => s < want,
                Op::Le => s <= want,
                Op::Gt => s > want,
                Op::Ge => s >= want,
                Op::Like => like(&s, &want),
                Op::ILike => like(&s.to_lowercase(), &want.to_lowercase()),
                _ => false,
            }
        }
    }
}

fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

/// SQL LIKE: `%` any run, `_` one character.
pub(crate) fn like(s: &str, pattern: &str) -> bool {
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    // Iterative matcher with backtracking on the last `%`.
    let (mut i, mut j) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if j < p.len() && (p[j] == '_' || p[j] == s[i]) {
            i += 1;
            j += 1;
        } else if j < p.len() && p[j] == '%' {
            star = Some((j, i));
            j += 1;
        } else if let Some((sj, si)) = star {
            j = sj + 1;
            i = si + 1;
            star = Some((sj, si + 1));
        } else {
            return false;
        }
    }
    while j < p.len() && p[j] == '%' {
        j += 1;
    }
    j == p.len()
}

/// One `order_by` term.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OrderTerm {
    space: Space,
    key: String,
    asc: bool,
}

/// Parses `order_by` terms such as `metrics.acc DESC`, `start_time`, `params."lr" ASC`.
pub(crate) fn parse_order(terms: &[String]) -> Result<Vec<OrderTerm>, String> {
    terms
        .iter()
        .map(|t| {
            let mut lx = Lexer::new(t);
            let (space, key) = identifier(&mut lx)?;
            let asc = if lx.done() || lx.keyword("ASC") {
                true
            } else if lx.keyword("DESC") {
                false
            } else {
                return Err(format!(
                    "order_by {t:?}: expected ASC or DESC after the key"
                ));
            };
            if !lx.done() {
                return Err(format!(
                    "order_by {t:?}: unexpected text after the direction"
                ));
            }
            Ok(OrderTerm { space, key, asc })
        })
        .collect()
}

fn cmp_val(a: &Val, b: &Val) -> Ordering {
    match (a, b) {
        (Val::N(x), Val::N(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
        (Val::S(x), Val::S(y)) => x.cmp(y),
        (Val::N(_), Val::S(_)) => Ordering::Less,
        (Val::S(_), Val::N(_)) => Ordering::Greater,
    }
}

/// Compares two rows by the terms; a missing value sorts last in either direction.
pub(crate) fn compare(terms: &[OrderTerm], a: &dyn Row, b: &dyn Row) -> Ordering {
    for t in terms {
        let (x, y) = (a.get(t.space, &t.key), b.get(t.space, &t.key));
        let o = match (x, y) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) => {
                let o = cmp_val(&x, &y);
                if t.asc { o } else { o.reverse() }
            }
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    struct R(BTreeMap<(u8, String), Val>);

    fn sp(s: Space) -> u8 {
        s as u8
    }

    impl Row for R {
        fn get(&self, space: Space, key: &str) -> Option<Val> {
            self.0.get(&(sp(space), key.to_string())).cloned()
        }
    }

    fn row(items: &[(Space, &str, Val)]) -> R {
        R(items
            .iter()
            .map(|(s, k, v)| ((sp(*s), (*k).to_string()), v.clone()))
            .collect())
    }

    #[test]
    fn filters_params_tags_metrics_attributes() {
        let r = row(&[
            (Space::Metric, "acc", Val::N(0.9)),
            (Space::Param, "lr", Val::S("0.01".into())),
            (Space::Tag, "team a", Val::S("Risk".into())),
            (Space::Attribute, "status", Val::S("FINISHED".into())),
        ]);
        let yes = [
            "",
            "metrics.acc > 0.8",
            "metrics.acc >= 0.9 and params.lr = '0.01'",
            "tags.`team a` = 'Risk'",
            "tags.\"team a\" ILIKE 'ri%'",
            "tags.`team a` LIKE 'R_sk'",
            "attributes.status = 'FINISHED'",
            "status IN ('FINISHED', 'FAILED')",
            "status NOT IN ('RUNNING')",
            "params.missing IS NULL",
            "params.lr != '0.1'",
        ];
        for f in yes {
            assert!(Filter::parse(f).unwrap().matches(&r), "{f} should match");
        }
        let no = [
            "metrics.acc < 0.5",
            "metrics.missing > 0",
            "params.lr = '0.1'",
            "tags.`team a` LIKE 'ri%'",
            "status = 'RUNNING'",
            "params.lr IS NULL",
        ];
        for f in no {
            assert!(
                !Filter::parse(f).unwrap().matches(&r),
                "{f} should not match"
            );
        }
    }

    #[test]
    fn refuses_bad_filters_with_a_reason() {
        for (f, part) in [
            ("metrics.acc > 'high'", "numbers"),
            ("params.lr = 0.1", "quote the value"),
            ("metrics.acc > 1 OR metrics.acc < 0", "OR is not supported"),
            ("foo.bar = 'x'", "invalid identifier"),
            ("tags.x = 'open", "unterminated"),
            ("metrics.acc ~ 1", "comparison operator"),
        ] {
            let e = Filter::parse(f).unwrap_err();
            assert!(e.contains(part), "{f}: {e}");
        }
    }

    #[test]
    fn orders_with_missing_values_last() {
        let a = row(&[(Space::Metric, "acc", Val::N(0.5))]);
        let b = row(&[(Space::Metric, "acc", Val::N(0.9))]);
        let c = row(&[]);
        let desc = parse_order(&["metrics.acc DESC".into()]).unwrap();
        let mut v: Vec<&R> = vec![&a, &c, &b];
        v.sort_by(|x, y| compare(&desc, *x, *y));
        assert_eq!(v[0].get(Space::Metric, "acc"), Some(Val::N(0.9)));
        assert_eq!(v[2].get(Space::Metric, "acc"), None);
        let asc = parse_order(&["metrics.`acc`".into()]).unwrap();
        v.sort_by(|x, y| compare(&asc, *x, *y));
        assert_eq!(v[0].get(Space::Metric, "acc"), Some(Val::N(0.5)));
        assert!(parse_order(&["metrics.acc SIDEWAYS".into()]).is_err());
    }

    #[test]
    fn like_patterns() {
        assert!(like("abc", "a%"));
        assert!(like("abc", "%c"));
        assert!(like("abc", "a_c"));
        assert!(like("abc", "%"));
        assert!(!like("abc", "a_"));
        assert!(like("a%c", "a%c"));
    }
}
