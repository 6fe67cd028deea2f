//! Parameter constraints: `{path, op, value}` rules over a normalised view of
//! one outbound request (product §8.2), compiled once and checked per call.
//!
//! The language, with its missing-field and type rules, is documented in
//! `docs/proxy.md`; the short form:
//!
//! * paths: `method`, `path` (alias `url.pathname`), `url.host` (alias
//!   `host`), `url.search` (the raw query string), `query.<name>`, `headers.<name>`, `body.<dotted.path>` (a
//!   numeric segment indexes an array: `body.items.0.id`);
//! * ops: `eq`, `not_eq`, `in`, `not_in`, `matches` (whole-value regex),
//!   `starts_with`, and the numeric `lte` / `gte`;
//! * a missing field fails every op except `not_eq` / `not_in`, which pass;
//! * every constraint must hold (AND); at most [`MAX_CONSTRAINTS`] per set.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};
use stack_core::ErrorCode;

use crate::redact::{clip, preview};

/// At most this many constraints per service scope (product §8.2).
pub const MAX_CONSTRAINTS: usize = 32;
/// Longest `matches` pattern, in characters.
pub const MAX_PATTERN_CHARS: usize = 256;
/// Compiled-size limit of one `matches` regex, in bytes.
pub const MAX_REGEX_BYTES: usize = 64 * 1024;
/// Longest constraint path, in characters.
pub const MAX_PATH_CHARS: usize = 256;
/// Most segments after `body.`.
pub const MAX_BODY_DEPTH: usize = 32;
/// Most elements of an `in` / `not_in` array.
pub const MAX_SET_ITEMS: usize = 256;
/// Longest string value (or set element), in characters.
pub const MAX_VALUE_CHARS: usize = 1024;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Eq,
    NotEq,
    In,
    NotIn,
    Matches,
    StartsWith,
    /// Numeric `≤` (an extension: the docs' six ops cannot express "at most").
    Lte,
    /// Numeric `≥`.
    Gte,
}

impl Op {
    /// The wire name (`not_eq`, `starts_with`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Eq => "eq",
            Self::NotEq => "not_eq",
            Self::In => "in",
            Self::NotIn => "not_in",
            Self::Matches => "matches",
            Self::StartsWith => "starts_with",
            Self::Lte => "lte",
            Self::Gte => "gte",
        }
    }

    /// `not_eq` and `not_in`: the ops a missing field passes.
    pub const fn is_negative(self) -> bool {
        matches!(self, Self::NotEq | Self::NotIn)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule, exactly as stored in `ServiceGrant::constraints`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraint {
    pub path: String,
    pub op: Op,
    pub value: Value,
}

impl Constraint {
    pub fn new(path: impl Into<String>, op: Op, value: impl Into<Value>) -> Self {
        Self {
            path: path.into(),
            op,
            value: value.into(),
        }
    }

    /// The JSON form `{path, op, value}` that travels in passports and grants.
    pub fn to_value(&self) -> Value {
        serde_json::json!({ "path": self.path, "op": self.op.as_str(), "value": self.value })
    }
}

/// Why a constraint list was refused at grant or issue time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    #[error("constraint #{index} is not a {{path, op, value}} object: {reason}")]
    Malformed { index: usize, reason: String },
    #[error("too many constraints: {count} (at most 32 per service scope)")]
    TooMany { count: usize },
    #[error("constraint #{index}: unknown path {path:?}")]
    UnknownPath { index: usize, path: String },
    #[error("constraint #{index}: {reason}")]
    BadValue { index: usize, reason: String },
    #[error("constraint #{index}: the pattern is longer than 256 characters")]
    PatternTooLong { index: usize },
    #[error("constraint #{index}: invalid pattern: {reason}")]
    BadPattern { index: usize, reason: String },
}

impl ConstraintError {
    /// A stable machine code.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "constraint_malformed",
            Self::TooMany { .. } => "constraint_too_many",
            Self::UnknownPath { .. } => "constraint_unknown_path",
            Self::BadValue { .. } => "constraint_bad_value",
            Self::PatternTooLong { .. } => "constraint_pattern_too_long",
            Self::BadPattern { .. } => "constraint_bad_pattern",
        }
    }

    /// A malformed constraint list is a client error.
    pub const fn error_code(&self) -> ErrorCode {
        ErrorCode::ValidationError
    }
}

/// What a constraint looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Method,
    Path,
    Host,
    /// The raw query string with its `?`, `""` when there is none.
    Search,
    Query(String),
    Header(String),
    Body(Vec<String>),
}

impl Field {
    fn parse(path: &str) -> Option<Self> {
        if path.chars().count() > MAX_PATH_CHARS {
            return None;
        }
        match path {
            "method" => return Some(Self::Method),
            "path" | "url.pathname" => return Some(Self::Path),
            "host" | "url.host" => return Some(Self::Host),
            "url.search" => return Some(Self::Search),
            _ => {}
        }
        if let Some(name) = path.strip_prefix("query.") {
            return (!name.is_empty()).then(|| Self::Query(name.to_owned()));
        }
        if let Some(name) = path.strip_prefix("headers.") {
            let ok = !name.is_empty() && name.bytes().all(is_token_byte);
            return ok.then(|| Self::Header(name.to_ascii_lowercase()));
        }
        let rest = path.strip_prefix("body.")?;
        let segments: Vec<String> = rest.split('.').map(str::to_owned).collect();
        if segments.len() > MAX_BODY_DEPTH || segments.iter().any(String::is_empty) {
            return None;
        }
        Some(Self::Body(segments))
    }

    /// Text fields (everything but the body) hold strings that may be read
    /// as numbers or booleans when the constraint value is one.
    const fn is_text(&self) -> bool {
        !matches!(self, Self::Body(_))
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[derive(Debug, Clone)]
enum Test {
    Eq(Value),
    NotEq(Value),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    Matches(Regex),
    StartsWith(String),
    Lte(Number),
    Gte(Number),
}

#[derive(Debug, Clone)]
struct Compiled {
    field: Field,
    test: Test,
}

/// A compiled, checked list of constraints (AND). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ConstraintSet {
    source: Vec<Constraint>,
    compiled: Vec<Compiled>,
}

impl ConstraintSet {
    /// The set that allows everything.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Parses and validates `ServiceGrant::constraints`. Refuses more than
    /// [`MAX_CONSTRAINTS`], unknown paths, values of the wrong shape for
    /// their op, and patterns over the length or compiled-size limits.
    pub fn compile(values: &[Value]) -> Result<Self, ConstraintError> {
        let mut constraints = Vec::with_capacity(values.len().min(MAX_CONSTRAINTS));
        if values.len() > MAX_CONSTRAINTS {
            return Err(ConstraintError::TooMany {
                count: values.len(),
            });
        }
        for (index, value) in values.iter().enumerate() {
            let c: Constraint =
                serde_json::from_value(value.clone()).map_err(|e| ConstraintError::Malformed {
                    index,
                    reason: clip(&strip_serde_echo(&e.to_string())),
                })?;
            constraints.push(c);
        }
        Self::from_constraints(constraints)
    }

    /// Validates typed constraints (what an intent expansion produces).
    pub fn from_constraints(constraints: Vec<Constraint>) -> Result<Self, ConstraintError> {
        if constraints.len() > MAX_CONSTRAINTS {
            return Err(ConstraintError::TooMany {
                count: constraints.len(),
            });
        }
        let compiled = constraints
            .iter()
            .enumerate()
            .map(|(index, c)| compile_one(index, c))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            source: constraints,
            compiled,
        })
    }

    /// Narrowing: a child passport's constraints are the parent's plus its
    /// own, exact duplicates dropped; every one must hold. Refused past
    /// [`MAX_CONSTRAINTS`].
    pub fn union(parent: &Self, child: &Self) -> Result<Self, ConstraintError> {
        let mut out = parent.clone();
        for (c, compiled) in child.source.iter().zip(&child.compiled) {
            if out.source.contains(c) {
                continue;
            }
            out.source.push(c.clone());
            out.compiled.push(compiled.clone());
        }
        if out.source.len() > MAX_CONSTRAINTS {
            return Err(ConstraintError::TooMany {
                count: out.source.len(),
            });
        }
        Ok(out)
    }

    /// The constraints, in order.
    pub fn constraints(&self) -> &[Constraint] {
        &self.source
    }

    /// The JSON list for `ServiceGrant::constraints`.
    pub fn to_values(&self) -> Vec<Value> {
        self.source.iter().map(Constraint::to_value).collect()
    }

    pub fn len(&self) -> usize {
        self.source.len()
    }

    pub fn is_empty(&self) -> bool {
        self.source.is_empty()
    }

    /// Checks every constraint against the request, in order; the first one
    /// that fails is reported.
    pub fn check(&self, request: &RequestView<'_>) -> Result<(), Violation> {
        for (index, (c, compiled)) in self.source.iter().zip(&self.compiled).enumerate() {
            if let Err(kind) = evaluate(compiled, request) {
                return Err(Violation::new(index, c, kind));
            }
        }
        Ok(())
    }
}

/// serde messages quote the offending value (`invalid type: string "…"`);
/// keep only the part before the quote.
fn strip_serde_echo(message: &str) -> String {
    match message.find(['"', '`']) {
        Some(i) => message.get(..i).unwrap_or_default().trim_end().to_owned(),
        None => message.to_owned(),
    }
}

fn compile_one(index: usize, c: &Constraint) -> Result<Compiled, ConstraintError> {
    let field = Field::parse(&c.path).ok_or_else(|| ConstraintError::UnknownPath {
        index,
        path: clip(&c.path),
    })?;
    let bad = |reason: &str| ConstraintError::BadValue {
        index,
        reason: reason.to_owned(),
    };
    let normalise = |v: &Value| -> Result<Value, ConstraintError> {
        check_scalar(v).map_err(bad)?;
        Ok(normalise_expected(&field, v))
    };
    let test = match c.op {
        Op::Eq => Test::Eq(normalise(&c.value)?),
        Op::NotEq => Test::NotEq(normalise(&c.value)?),
        Op::In | Op::NotIn => {
            let Value::Array(items) = &c.value else {
                return Err(bad("in and not_in take an array"));
            };
            if items.is_empty() || items.len() > MAX_SET_ITEMS {
                return Err(bad("the array must hold 1 to 256 values"));
            }
            let items = items.iter().map(normalise).collect::<Result<Vec<_>, _>>()?;
            if c.op == Op::In {
                Test::In(items)
            } else {
                Test::NotIn(items)
            }
        }
        Op::Matches => {
            let Value::String(pattern) = &c.value else {
                return Err(bad("matches takes a string pattern"));
            };
            if pattern.chars().count() > MAX_PATTERN_CHARS {
                return Err(ConstraintError::PatternTooLong { index });
            }
            Test::Matches(
                compile_pattern(pattern)
                    .map_err(|reason| ConstraintError::BadPattern { index, reason })?,
            )
        }
        Op::StartsWith => {
            let Value::String(prefix) = &c.value else {
                return Err(bad("starts_with takes a string"));
            };
            check_scalar(&c.value).map_err(bad)?;
            match normalise_expected(&field, &Value::String(prefix.clone())) {
                Value::String(p) if field != Field::Path => Test::StartsWith(p),
                // A path prefix keeps its trailing slash: `/repos/acme/`
                // must not become `/repos/acme`, a prefix of `/repos/acme-evil`.
                _ => Test::StartsWith(prefix.clone()),
            }
        }
        Op::Lte | Op::Gte => {
            let Value::Number(n) = &c.value else {
                return Err(bad("lte and gte take a number"));
            };
            if c.op == Op::Lte {
                Test::Lte(n.clone())
            } else {
                Test::Gte(n.clone())
            }
        }
    };
    Ok(Compiled { field, test })
}

/// The whole value must match: the pattern is wrapped as `^(?:…)$`.
pub(crate) fn compile_pattern(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(MAX_REGEX_BYTES)
        .dfa_size_limit(MAX_REGEX_BYTES)
        .nest_limit(64)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => "the compiled pattern is too large".to_owned(),
            _ => "the pattern does not parse".to_owned(),
        })
}

fn check_scalar(v: &Value) -> Result<(), &'static str> {
    match v {
        Value::String(s) if s.chars().count() > MAX_VALUE_CHARS => {
            Err("a string value is longer than 1024 characters")
        }
        Value::Array(_) | Value::Object(_) => {
            Err("values must be strings, numbers, booleans or null")
        }
        _ => Ok(()),
    }
}

/// `method` values are upper-cased, hosts lower-cased, `path` values lose a
/// trailing slash, the same way the request side is normalised.
fn normalise_expected(field: &Field, v: &Value) -> Value {
    match (field, v) {
        (Field::Method, Value::String(s)) => Value::String(s.to_ascii_uppercase()),
        (Field::Host, Value::String(s)) => Value::String(s.to_ascii_lowercase()),
        (Field::Path, Value::String(s)) => Value::String(trim_trailing_slash(s).to_owned()),
        _ => v.clone(),
    }
}

fn trim_trailing_slash(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() { "/" } else { trimmed }
}

/// The normalised view of one outbound request that constraints read.
///
/// `query` holds every value of a repeated key: a constraint on
/// `query.<name>` must hold for each of them.
#[derive(Debug, Clone, Default)]
pub struct RequestView<'a> {
    /// As given; compared upper-cased.
    pub method: &'a str,
    /// The URL path, percent-encoded as sent (see [`crate::Target::path`]);
    /// compared without a trailing slash.
    pub path: &'a str,
    /// Compared lower-cased. Empty when unknown (then `url.host` is missing).
    pub host: &'a str,
    /// The raw query string with its leading `?` (`""` for none), as
    /// `url.search`; `None` when unknown (then `url.search` is missing).
    /// [`crate::check_target`] fills it.
    pub search: Option<&'a str>,
    pub query: BTreeMap<String, Vec<String>>,
    /// Names compared case-insensitively.
    pub headers: BTreeMap<String, String>,
    /// The JSON body; `None` when there is none (every `body.*` is missing).
    pub body: Option<&'a Value>,
}

impl<'a> RequestView<'a> {
    pub fn new(method: &'a str, path: &'a str) -> Self {
        Self {
            method,
            path,
            ..Self::default()
        }
    }

    pub fn with_host(mut self, host: &'a str) -> Self {
        self.host = host;
        self
    }

    pub fn with_query(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.query
            .entry(name.into())
            .or_default()
            .push(value.into());
        self
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    pub fn with_body(mut self, body: &'a Value) -> Self {
        self.body = Some(body);
        self
    }
}

/// One value a constraint tests.
#[derive(Clone, Copy)]
enum Candidate<'v> {
    /// From the method, path, host, query or a header.
    Text(&'v str),
    /// From the JSON body.
    Json(&'v Value),
}

impl Candidate<'_> {
    fn to_value(self) -> Value {
        match self {
            Self::Text(s) => Value::String(s.to_owned()),
            Self::Json(v) => v.clone(),
        }
    }
}

/// Why one constraint failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViolationKind {
    /// The field is absent from the request.
    Missing,
    /// The field holds a type the op cannot compare.
    WrongType { found: String },
    /// The field's value is not allowed.
    NotAllowed { found: String },
}

/// A denied request: which constraint failed and why. The message shows at
/// most a short, redacted preview of the request's value and never the
/// constraint's allowed values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Violation {
    /// Position in the constraint list.
    pub index: usize,
    pub path: String,
    pub op: Op,
    pub kind: ViolationKind,
    pub message: String,
}

impl Violation {
    fn new(index: usize, c: &Constraint, kind: ViolationKind) -> Self {
        let path = clip(&c.path);
        let detail = match &kind {
            ViolationKind::Missing => "the request has no such field".to_owned(),
            ViolationKind::WrongType { found } => {
                format!(
                    "the request's value {found} cannot be compared with {}",
                    c.op
                )
            }
            ViolationKind::NotAllowed { found } => {
                format!("the request's value {found} is not allowed")
            }
        };
        let message = format!(
            "constraint #{index} ({path} {}) denied the request: {detail}",
            c.op
        );
        Self {
            index,
            path,
            op: c.op,
            kind,
            message,
        }
    }

    /// A stable machine code.
    pub const fn code(&self) -> &'static str {
        "constraint_violation"
    }

    /// A failed constraint denies the call like an out-of-scope service: 403.
    pub const fn error_code(&self) -> ErrorCode {
        ErrorCode::Forbidden
    }
}

fn evaluate(c: &Compiled, req: &RequestView<'_>) -> Result<(), ViolationKind> {
    let method;
    let path;
    let host;
    let candidates: Vec<Candidate<'_>> = match &c.field {
        Field::Method => {
            method = req.method.to_ascii_uppercase();
            vec![Candidate::Text(&method)]
        }
        Field::Path => {
            path = trim_trailing_slash(req.path);
            vec![Candidate::Text(path)]
        }
        Field::Host => {
            host = req.host.to_ascii_lowercase();
            if host.is_empty() {
                vec![]
            } else {
                vec![Candidate::Text(&host)]
            }
        }
        Field::Search => req
            .search
            .map(|s| vec![Candidate::Text(s)])
            .unwrap_or_default(),
        Field::Query(name) => req
            .query
            .get(name)
            .map(|vs| vs.iter().map(|v| Candidate::Text(v)).collect())
            .unwrap_or_default(),
        Field::Header(name) => req
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| Candidate::Text(v))
            .collect(),
        Field::Body(segments) => req
            .body
            .and_then(|b| walk(b, segments))
            .map(|v| vec![Candidate::Json(v)])
            .unwrap_or_default(),
    };
    if candidates.is_empty() {
        return if is_negative(&c.test) {
            Ok(())
        } else {
            Err(ViolationKind::Missing)
        };
    }
    for candidate in candidates {
        test_one(&c.test, candidate, c.field.is_text())?;
    }
    Ok(())
}

const fn is_negative(t: &Test) -> bool {
    matches!(t, Test::NotEq(_) | Test::NotIn(_))
}

fn walk<'v>(mut v: &'v Value, segments: &[String]) -> Option<&'v Value> {
    for seg in segments {
        v = match v {
            Value::Object(map) => map.get(seg)?,
            Value::Array(items) => {
                // Plain decimal indexes only: no sign, no leading zeros.
                if (seg.len() > 1 && seg.starts_with('0'))
                    || !seg.bytes().all(|b| b.is_ascii_digit())
                {
                    return None;
                }
                items.get(seg.parse::<usize>().ok()?)?
            }
            _ => return None,
        };
    }
    Some(v)
}

fn test_one(test: &Test, cand: Candidate<'_>, text: bool) -> Result<(), ViolationKind> {
    let not_allowed = || ViolationKind::NotAllowed {
        found: preview(&cand.to_value()),
    };
    let wrong_type = || ViolationKind::WrongType {
        found: preview(&cand.to_value()),
    };
    let ok = match test {
        Test::Eq(expected) => equals(cand, expected, text),
        Test::NotEq(expected) => !equals(cand, expected, text),
        Test::In(items) => items.iter().any(|e| equals(cand, e, text)),
        Test::NotIn(items) => !items.iter().any(|e| equals(cand, e, text)),
        Test::Matches(re) => re.is_match(as_str(cand).ok_or_else(wrong_type)?),
        Test::StartsWith(prefix) => as_str(cand).ok_or_else(wrong_type)?.starts_with(prefix),
        Test::Lte(limit) => {
            cmp_numbers(&as_number(cand).ok_or_else(wrong_type)?, limit) != Some(Ordering::Greater)
        }
        Test::Gte(limit) => {
            cmp_numbers(&as_number(cand).ok_or_else(wrong_type)?, limit) != Some(Ordering::Less)
        }
    };
    if ok { Ok(()) } else { Err(not_allowed()) }
}

fn as_str(cand: Candidate<'_>) -> Option<&str> {
    match cand {
        Candidate::Text(s) => Some(s),
        Candidate::Json(Value::String(s)) => Some(s),
        Candidate::Json(_) => None,
    }
}

fn as_number(cand: Candidate<'_>) -> Option<Number> {
    match cand {
        Candidate::Text(s) => parse_number(s),
        Candidate::Json(Value::Number(n)) => Some(n.clone()),
        Candidate::Json(_) => None,
    }
}

/// A text value read as a JSON number: plain decimal only (`10`, `-2.5`,
/// `1e3`), never `NaN`, `0x10` or a padded `" 10"`.
fn parse_number(s: &str) -> Option<Number> {
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    match serde_json::from_str::<Value>(s).ok()? {
        Value::Number(n) => Some(n),
        _ => None,
    }
}

fn equals(cand: Candidate<'_>, expected: &Value, text: bool) -> bool {
    match (cand, expected) {
        (Candidate::Json(Value::Number(a)), Value::Number(b)) => {
            cmp_numbers(a, b) == Some(Ordering::Equal)
        }
        (Candidate::Json(v), e) => v == e,
        (Candidate::Text(s), Value::String(e)) => s == e,
        (Candidate::Text(s), Value::Number(b)) if text => {
            parse_number(s).is_some_and(|a| cmp_numbers(&a, b) == Some(Ordering::Equal))
        }
        (Candidate::Text(s), Value::Bool(b)) if text => s == if *b { "true" } else { "false" },
        (Candidate::Text(_), _) => false,
    }
}

/// Numbers compare by value: integers exactly (through `i128`), anything
/// with a fraction or exponent as `f64`.
fn cmp_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    let int = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (int(a), int(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(v: Value) -> ConstraintSet {
        let Value::Array(items) = v else {
            panic!("array")
        };
        ConstraintSet::compile(&items).unwrap()
    }

    #[test]
    fn round_trips_through_values() {
        let s = set(json!([{"path": "body.channel", "op": "in", "value": ["C1"]}]));
        let back = ConstraintSet::compile(&s.to_values()).unwrap();
        assert_eq!(back.constraints(), s.constraints());
    }

    #[test]
    fn numbers_compare_by_value() {
        let a: Number = serde_json::from_str("1").unwrap();
        let b: Number = serde_json::from_str("1.0").unwrap();
        assert_eq!(cmp_numbers(&a, &b), Some(Ordering::Equal));
        let big: Number = serde_json::from_str("18446744073709551615").unwrap();
        let neg: Number = serde_json::from_str("-1").unwrap();
        assert_eq!(cmp_numbers(&neg, &big), Some(Ordering::Less));
    }

    #[test]
    fn serde_echo_is_stripped() {
        let err = ConstraintSet::compile(&[
            json!({"path": "method", "op": "sk_live_secret", "value": 1}),
        ])
        .unwrap_err();
        assert!(!err.to_string().contains("sk_live"), "{err}");
    }

    #[test]
    fn array_indexes_are_plain_decimals() {
        let body = json!({"items": [{"id": 1}, {"id": 2}]});
        assert_eq!(
            walk(&body, &["items".into(), "1".into(), "id".into()]),
            Some(&json!(2))
        );
        assert_eq!(
            walk(&body, &["items".into(), "01".into(), "id".into()]),
            None
        );
        assert_eq!(
            walk(&body, &["items".into(), "+1".into(), "id".into()]),
            None
        );
    }
}
