//! Canonical JSON: object keys sorted by their UTF-8 bytes, no whitespace,
//! strings and numbers as `serde_json` writes them.
//!
//! Key order is imposed here explicitly rather than relying on `serde_json`'s
//! map type, because another crate in a build may switch that map to insertion
//! order (the `preserve_order` feature), which would silently change hashes.

use serde_json::Value;

/// The canonical text of `v`.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write(v, &mut out);
    out
}

fn write(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_str(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(k, out);
                out.push(':');
                if let Some(val) = map.get(k) {
                    write(val, out);
                }
            }
            out.push('}');
        }
    }
}

fn write_str(s: &str, out: &mut String) {
    // serde_json's string escaping is deterministic: `"`, `\`, and control
    // characters (as \n, \t, … or \u00XX); everything else verbatim.
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        // Serializing a &str cannot fail; keep a total fallback anyway.
        Err(_) => out.push_str("\"\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_recursively_and_drops_whitespace() {
        let v = json!({"b": 1, "a": {"z": [1, {"y": null, "x": true}], "c": "q\"\n"}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":"q\"\n","z":[1,{"x":true,"y":null}]},"b":1}"#
        );
    }
}
