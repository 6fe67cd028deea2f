//! Turning untrusted JSON into typed commands, with one error shape.

use serde::de::DeserializeOwned;
use serde_json::Value;
use stack_core::{Error, Result};

/// Deserializes a command from JSON. A `null` or absent body counts as `{}`
/// (the SDK sends bodiless POSTs); type errors become `VALIDATION_ERROR` with
/// serde's description of what was wrong, with any echoed string value cut
/// out so a misplaced secret never comes back in an error.
pub fn parse_input<T: DeserializeOwned>(value: Value) -> Result<T> {
    let value = if value.is_null() {
        Value::Object(serde_json::Map::new())
    } else {
        value
    };
    if !value.is_object() {
        return Err(Error::validation("the request body must be a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| {
        Error::validation(format!(
            "invalid request: {}",
            redact_strings(&e.to_string())
        ))
    })
}

/// Replaces `string "…"` in a serde message with `a string`.
pub(crate) fn redact_strings(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some((before, after)) = rest.split_once("string \"") {
        out.push_str(before);
        out.push_str("a string");
        rest = after.split_once('"').map_or("", |(_, tail)| tail);
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Cmd {
        flag: bool,
    }

    #[test]
    fn null_is_empty_object_and_values_are_not_echoed() {
        let err = parse_input::<Cmd>(serde_json::json!({"flag": "sk_live_secret"})).unwrap_err();
        assert!(!err.message.contains("sk_live_secret"), "{}", err.message);
        assert!(
            err.message.contains("expected a boolean"),
            "{}",
            err.message
        );
        let err = parse_input::<Cmd>(Value::Null).unwrap_err();
        assert!(err.message.contains("flag"), "{}", err.message);
        assert!(parse_input::<Cmd>(serde_json::json!([1])).is_err());
    }
}
