//! Named intents: short names that expand into constraint lists (product
//! §8.3), declared as data in the service files of the catalog.
//!
//! An intent holds parameter declarations and constraint *templates*. Each
//! template takes its value from exactly one source:
//!
//! * `value`: a literal;
//! * `param`: a parameter's value as given (a list becomes an array);
//! * `each`: a string with one `{{param}}` placeholder, filled once per
//!   element of a list parameter (an array, for `in` / `not_in`);
//! * `regex`: a pattern whose `{{param}}` placeholders become the escaped
//!   value, or `(?:a|b|…)` for a list.
//!
//! A template that names an optional parameter the caller left out is
//! skipped. The expansion is compiled before it is returned, so it is
//! always a valid [`ConstraintSet`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use stack_core::ErrorCode;

use crate::constraint::{Constraint, ConstraintError, ConstraintSet, Op, compile_pattern};
use crate::redact::clip;

/// Longest string parameter value, in characters.
pub const MAX_PARAM_CHARS: usize = 256;
/// Most elements of a list parameter unless the intent says otherwise.
pub const DEFAULT_MAX_ITEMS: usize = 64;

/// A parameter's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    String,
    /// A list of strings; a single string is accepted as a list of one.
    StringList,
    Integer,
}

/// One parameter of an intent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentParam {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ParamKind,
    pub description: String,
    #[serde(default = "yes")]
    pub required: bool,
    /// Every string value must match this (whole-value) pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Smallest integer accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<usize>,
}

fn yes() -> bool {
    true
}

/// A constraint with its value still to be filled from parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConstraintTemplate {
    pub path: String,
    pub op: Op,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub each: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// A request used to test an intent (catalog data, checked at load).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExampleRequest {
    pub method: String,
    /// Absolute; hosts with placeholders use the credential fields' examples.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

/// A named intent of one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intent {
    /// `<service slug>.<action>`.
    pub name: String,
    /// The service slug; filled in from the file at load.
    #[serde(default)]
    pub service: String,
    pub description: String,
    /// Scopes the grant must hold for the intent to be useful.
    pub scopes: Vec<String>,
    #[serde(default)]
    pub params: Vec<IntentParam>,
    pub constraints: Vec<ConstraintTemplate>,
    /// Parameters for the examples below.
    #[serde(default)]
    pub example_params: Map<String, Value>,
    /// Requests the example expansion must allow.
    #[serde(default)]
    pub allow: Vec<ExampleRequest>,
    /// Neighbouring requests the example expansion must deny.
    #[serde(default)]
    pub deny: Vec<ExampleRequest>,
}

/// Why an intent could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntentError {
    #[error("unknown intent {0:?}")]
    UnknownIntent(String),
    #[error("intent {intent:?} belongs to service {service:?}, not to this grant's service")]
    WrongService { intent: String, service: String },
    #[error("intent {intent:?} needs scope {scope:?}, which the grant does not hold")]
    MissingScope { intent: String, scope: String },
    #[error("a named intent must be {{name, params}}: {0}")]
    Malformed(String),
    #[error("intent params must be an object")]
    ParamsNotObject,
    #[error("unknown parameter {0:?}")]
    UnknownParam(String),
    #[error("missing required parameter {0:?}")]
    MissingParam(String),
    #[error("parameter {name:?}: {reason}")]
    InvalidParam { name: String, reason: String },
    #[error("the expansion is not a valid constraint list: {0}")]
    Constraint(#[from] ConstraintError),
}

impl IntentError {
    pub const fn code(&self) -> &'static str {
        match self {
            Self::UnknownIntent(_) => "intent_unknown",
            Self::WrongService { .. } => "intent_wrong_service",
            Self::MissingScope { .. } => "intent_missing_scope",
            Self::Malformed(_) => "intent_malformed",
            Self::ParamsNotObject => "intent_params_not_object",
            Self::UnknownParam(_) => "intent_unknown_param",
            Self::MissingParam(_) => "intent_missing_param",
            Self::InvalidParam { .. } => "intent_invalid_param",
            Self::Constraint(e) => e.code(),
        }
    }

    pub const fn error_code(&self) -> ErrorCode {
        ErrorCode::ValidationError
    }
}

/// `{name, params}` as a grant or passport request carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedIntent {
    pub name: String,
    #[serde(default)]
    pub params: Value,
}

/// A checked parameter value.
#[derive(Debug, Clone)]
enum ParamValue {
    Str(String),
    List(Vec<String>),
    Int(i64),
}

impl Intent {
    /// The short form for `stack_list_intents`: name, service, description,
    /// scopes and parameters.
    pub fn describe(&self) -> Value {
        serde_json::json!({
            "name": self.name,
            "service": self.service,
            "description": self.description,
            "scopes": self.scopes,
            "params": self.params,
        })
    }

    /// Expands `params` (an object, or null for none) into constraints.
    pub fn expand(&self, params: &Value) -> Result<Vec<Constraint>, IntentError> {
        let empty = Map::new();
        let given = match params {
            Value::Null => &empty,
            Value::Object(map) => map,
            _ => return Err(IntentError::ParamsNotObject),
        };
        if let Some(unknown) = given
            .keys()
            .find(|k| !self.params.iter().any(|p| &p.name == *k))
        {
            return Err(IntentError::UnknownParam(clip(unknown)));
        }
        let mut values: Vec<(&str, ParamValue)> = Vec::with_capacity(self.params.len());
        for spec in &self.params {
            match given.get(&spec.name) {
                None | Some(Value::Null) if spec.required => {
                    return Err(IntentError::MissingParam(spec.name.clone()));
                }
                None | Some(Value::Null) => {}
                Some(v) => values.push((&spec.name, check_param(spec, v)?)),
            }
        }
        let lookup = |name: &str| values.iter().find(|(n, _)| *n == name).map(|(_, v)| v);
        let mut out = Vec::with_capacity(self.constraints.len());
        for t in &self.constraints {
            if let Some(c) = fill_template(t, &lookup)? {
                out.push(c);
            }
        }
        ConstraintSet::from_constraints(out.clone())?;
        Ok(out)
    }
}

fn check_param(spec: &IntentParam, v: &Value) -> Result<ParamValue, IntentError> {
    let invalid = |reason: &str| IntentError::InvalidParam {
        name: spec.name.clone(),
        reason: reason.to_owned(),
    };
    let check_str = |s: &str| -> Result<String, IntentError> {
        let n = s.chars().count();
        if n == 0 || n > MAX_PARAM_CHARS {
            return Err(invalid("strings must hold 1 to 256 characters"));
        }
        if let Some(p) = &spec.pattern {
            let re = compile_pattern(p).map_err(|_| invalid("the intent's pattern is invalid"))?;
            if !re.is_match(s) {
                return Err(invalid("a value does not have the expected form"));
            }
        }
        Ok(s.to_owned())
    };
    match (spec.kind, v) {
        (ParamKind::String, Value::String(s)) => Ok(ParamValue::Str(check_str(s)?)),
        (ParamKind::String, _) => Err(invalid("expected a string")),
        (ParamKind::StringList, Value::String(s)) => Ok(ParamValue::List(vec![check_str(s)?])),
        (ParamKind::StringList, Value::Array(items)) => {
            let max = spec.max_items.unwrap_or(DEFAULT_MAX_ITEMS);
            if items.is_empty() || items.len() > max {
                return Err(invalid("the list is empty or too long"));
            }
            let mut list: Vec<String> = Vec::with_capacity(items.len());
            for item in items {
                let Value::String(s) = item else {
                    return Err(invalid("expected a list of strings"));
                };
                let s = check_str(s)?;
                if !list.contains(&s) {
                    list.push(s);
                }
            }
            Ok(ParamValue::List(list))
        }
        (ParamKind::StringList, _) => Err(invalid("expected a list of strings")),
        (ParamKind::Integer, Value::Number(n)) => {
            let i = n.as_i64().ok_or_else(|| invalid("expected an integer"))?;
            if spec.minimum.is_some_and(|m| i < m) {
                return Err(invalid("the value is below the minimum"));
            }
            Ok(ParamValue::Int(i))
        }
        (ParamKind::Integer, _) => Err(invalid("expected an integer")),
    }
}

/// The `{{name}}` placeholders of a template, in order.
pub(crate) fn placeholders(template: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = rest.get(start + 2..).unwrap_or_default();
        let Some(end) = after.find("}}") else { break };
        out.push(after.get(..end).unwrap_or_default().trim());
        rest = after.get(end + 2..).unwrap_or_default();
    }
    out
}

/// Replaces each `{{name}}` with `f(name)`; `None` if `f` has no value.
pub(crate) fn fill(template: &str, f: impl Fn(&str) -> Option<String>) -> Option<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(rest.get(..start).unwrap_or_default());
        let after = rest.get(start + 2..).unwrap_or_default();
        let Some(end) = after.find("}}") else {
            out.push_str("{{");
            rest = after;
            continue;
        };
        out.push_str(&f(after.get(..end).unwrap_or_default().trim())?);
        rest = after.get(end + 2..).unwrap_or_default();
    }
    out.push_str(rest);
    Some(out)
}

fn fill_template<'p>(
    t: &ConstraintTemplate,
    lookup: &impl Fn(&str) -> Option<&'p ParamValue>,
) -> Result<Option<Constraint>, IntentError> {
    let value = if let Some(v) = &t.value {
        v.clone()
    } else if let Some(name) = &t.param {
        match lookup(name) {
            None => return Ok(None),
            Some(ParamValue::Str(s)) => Value::String(s.clone()),
            Some(ParamValue::List(l)) => {
                Value::Array(l.iter().cloned().map(Value::String).collect())
            }
            Some(ParamValue::Int(i)) => Value::from(*i),
        }
    } else if let Some(each) = &t.each {
        let names = placeholders(each);
        let Some(name) = names.first() else {
            return Err(IntentError::Malformed(
                "an `each` template has no placeholder".into(),
            ));
        };
        let items = match lookup(name) {
            None => return Ok(None),
            Some(ParamValue::Str(s)) => vec![s.clone()],
            Some(ParamValue::List(l)) => l.clone(),
            Some(ParamValue::Int(i)) => vec![i.to_string()],
        };
        let filled: Option<Vec<Value>> = items
            .iter()
            .map(|item| fill(each, |_| Some(item.clone())).map(Value::String))
            .collect();
        Value::Array(filled.unwrap_or_default())
    } else if let Some(pattern) = &t.regex {
        if placeholders(pattern).iter().any(|n| lookup(n).is_none()) {
            return Ok(None);
        }
        let filled = fill(pattern, |name| {
            lookup(name).map(|v| match v {
                ParamValue::Str(s) => regex::escape(s),
                ParamValue::Int(i) => i.to_string(),
                ParamValue::List(l) => format!(
                    "(?:{})",
                    l.iter()
                        .map(|s| regex::escape(s))
                        .collect::<Vec<_>>()
                        .join("|")
                ),
            })
        });
        Value::String(filled.unwrap_or_default())
    } else {
        return Err(IntentError::Malformed(
            "a constraint template has no value".into(),
        ));
    };
    Ok(Some(Constraint::new(t.path.clone(), t.op, value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_parsing() {
        assert_eq!(placeholders("/repos/{{repo}}/pulls"), vec!["repo"]);
        assert_eq!(placeholders("[0-9]{2}{{ a }}x{{b}}"), vec!["a", "b"]);
        assert_eq!(
            fill("/x/{{a}}/[0-9]{2}", |n| Some(n.to_uppercase())).as_deref(),
            Some("/x/A/[0-9]{2}")
        );
        assert_eq!(fill("{{missing}}", |_| None), None);
    }
}
