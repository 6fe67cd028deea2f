//! Short, redacted previews of request values for error messages and logs.

use serde_json::Value;

/// Longest caller-supplied text kept in an error (paths, names).
const MAX_ECHO: usize = 64;
/// Strings up to this many characters are shown whole (unless secret-looking).
const SHOW_WHOLE: usize = 8;
/// Characters shown of a longer string.
const SHOW_HEAD: usize = 4;

/// Cuts caller-controlled text so an error can never be made large.
pub(crate) fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(MAX_ECHO).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// A preview of a value safe to put in a message: short strings quoted,
/// longer ones cut to four characters and a length, anything that looks
/// like a credential or a card number reduced to its length.
pub fn preview(v: &Value) -> String {
    match v {
        Value::Null | Value::Bool(_) => v.to_string(),
        Value::Number(n) => {
            let s = n.to_string();
            if s.chars().filter(char::is_ascii_digit).count() > 6 {
                "a number".to_owned()
            } else {
                s
            }
        }
        Value::String(s) => preview_str(s),
        Value::Array(items) => format!("an array of {} items", items.len()),
        Value::Object(_) => "an object".to_owned(),
    }
}

fn preview_str(s: &str) -> String {
    let chars = s.chars().count();
    if looks_secret(s) {
        return format!("[redacted, {chars} chars]");
    }
    if chars <= SHOW_WHOLE {
        return format!("{:?}", s);
    }
    let head: String = s.chars().take(SHOW_HEAD).collect();
    format!("{head:?}… ({chars} chars)")
}

/// Known credential prefixes, and long unbroken strings mixing letters and
/// digits (tokens, keys, card numbers).
pub fn looks_secret(s: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "sk_",
        "sk-",
        "rk_",
        "pk_",
        "whsec_",
        "xox",
        "ghp_",
        "gho_",
        "ghu_",
        "ghs_",
        "ghr_",
        "github_pat_",
        "glpat-",
        "eyj",
        "akia",
        "asia",
        "bearer ",
        "basic ",
        "ya29.",
        "lin_api_",
        "ntn_",
        "secret_",
        "-----begin",
        "sk_live",
        "stk_",
    ];
    let lower: String = s.chars().take(16).collect::<String>().to_ascii_lowercase();
    if PREFIXES.iter().any(|p| lower.starts_with(p)) {
        return true;
    }
    let digits = s.chars().filter(char::is_ascii_digit).count();
    if digits >= 12
        && s.chars()
            .all(|c| c.is_ascii_digit() || c == ' ' || c == '-')
    {
        return true; // card or account numbers
    }
    s.chars().count() >= 16
        && !s.chars().any(char::is_whitespace)
        && s.chars().any(|c| c.is_ascii_alphabetic())
        && digits > 0
        && !s.starts_with('/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn previews() {
        assert_eq!(preview(&json!("C0999")), "\"C0999\"");
        assert_eq!(preview(&json!("general-chat")), "\"gene\"… (12 chars)");
        assert_eq!(
            preview(&json!("sk_live_51Habcdefghijkl")),
            "[redacted, 23 chars]"
        );
        assert_eq!(
            preview(&json!("4242 4242 4242 4242")),
            "[redacted, 19 chars]"
        );
        assert_eq!(preview(&json!(4_242_424_242_424_242_u64)), "a number");
        assert_eq!(preview(&json!(500)), "500");
        assert_eq!(preview(&json!([1, 2])), "an array of 2 items");
        assert!(looks_secret("a1b2c3d4e5f6g7h8i9"));
        assert!(!looks_secret("hello world and more"));
    }
}
