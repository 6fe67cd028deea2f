//! Credential attachment: the header or query edits that put a stored secret
//! on an outbound request, the removal of anything the caller sent that
//! could carry or override a credential, and header redaction for logs.
//!
//! Order in the pipeline: [`strip_caller_auth`] (and
//! [`strip_caller_query`]) on the caller's request, then apply the
//! [`AuthEdits`] from [`attach`], so the stored credential is the only one
//! that leaves.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use stack_core::{ErrorCode, Secret};

/// How a service's credential is put on a request (catalog `[auth]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "snake_case")]
pub enum AuthScheme {
    /// `Authorization: Bearer <field>`.
    Bearer {
        #[serde(default = "default_field")]
        field: String,
    },
    /// `<name>: <prefix><field>` (e.g. `x-api-key`, or Linear's bare
    /// `Authorization`).
    Header {
        name: String,
        #[serde(default)]
        prefix: String,
        #[serde(default = "default_field")]
        field: String,
    },
    /// `?<param>=<field>`.
    Query {
        param: String,
        #[serde(default = "default_field")]
        field: String,
    },
    /// `Authorization: Basic base64(<username_field>:<password_field>)`; no
    /// password field means an empty password (Stripe-style keys).
    Basic {
        username_field: String,
        #[serde(default)]
        password_field: Option<String>,
    },
}

fn default_field() -> String {
    "token".to_owned()
}

impl AuthScheme {
    /// The scheme every OAuth access token uses (RFC 6750).
    pub fn oauth() -> Self {
        Self::Bearer {
            field: default_field(),
        }
    }

    /// The header this scheme writes, lower-case.
    pub fn header_name(&self) -> Option<String> {
        match self {
            Self::Bearer { .. } | Self::Basic { .. } => Some("authorization".to_owned()),
            Self::Header { name, .. } => Some(name.to_ascii_lowercase()),
            Self::Query { .. } => None,
        }
    }

    /// The credential fields this scheme reads.
    pub fn fields(&self) -> Vec<&str> {
        match self {
            Self::Bearer { field } | Self::Header { field, .. } | Self::Query { field, .. } => {
                vec![field]
            }
            Self::Basic {
                username_field,
                password_field,
            } => {
                let mut v = vec![username_field.as_str()];
                v.extend(password_field.as_deref());
                v
            }
        }
    }
}

/// A stored credential: one secret string, or named fields (`{str:str}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A single secret; it answers for whichever one field a scheme reads.
    Token(Secret<String>),
    Fields(BTreeMap<String, Secret<String>>),
}

impl Credential {
    fn field(&self, name: &str, single_ok: bool) -> Result<&Secret<String>, AttachError> {
        match self {
            Self::Token(s) if single_ok => Ok(s),
            Self::Token(_) => Err(AttachError::MissingField(crate::redact::clip(name))),
            Self::Fields(map) => map
                .get(name)
                .ok_or_else(|| AttachError::MissingField(crate::redact::clip(name))),
        }
    }
}

/// Why a credential could not be attached. Never holds the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    #[error("the stored credential has no field {0:?}")]
    MissingField(String),
    #[error(
        "the stored credential holds a character that cannot go in a request (a line break or NUL)"
    )]
    InvalidSecret,
}

impl AttachError {
    pub const fn code(&self) -> &'static str {
        match self {
            Self::MissingField(_) => "credential_missing_field",
            Self::InvalidSecret => "credential_invalid",
        }
    }

    /// The stored connection is broken: not the caller's fault.
    pub const fn error_code(&self) -> ErrorCode {
        ErrorCode::Internal
    }
}

/// Headers and query parameters to set on the outbound request. Values stay
/// [`Secret`]s until the egress client writes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthEdits {
    /// (lower-case name, value): replace any header of that name.
    pub headers: Vec<(String, Secret<String>)>,
    /// (name, value): replace any query parameter of that name.
    pub query: Vec<(String, Secret<String>)>,
}

/// The edits that attach `credential` according to `scheme`.
pub fn attach(scheme: &AuthScheme, credential: &Credential) -> Result<AuthEdits, AttachError> {
    let mut edits = AuthEdits::default();
    match scheme {
        AuthScheme::Bearer { field } => {
            let s = checked(credential.field(field, true)?)?;
            edits.headers.push((
                "authorization".to_owned(),
                Secret::new(format!("Bearer {s}")),
            ));
        }
        AuthScheme::Header {
            name,
            prefix,
            field,
        } => {
            let s = checked(credential.field(field, true)?)?;
            edits.headers.push((
                name.to_ascii_lowercase(),
                Secret::new(format!("{prefix}{s}")),
            ));
        }
        AuthScheme::Query { param, field } => {
            let s = checked(credential.field(field, true)?)?;
            edits.query.push((param.clone(), Secret::new(s.to_owned())));
        }
        AuthScheme::Basic {
            username_field,
            password_field,
        } => {
            let user = checked(credential.field(username_field, password_field.is_none())?)?;
            let pass = match password_field {
                Some(f) => checked(credential.field(f, false)?)?,
                None => "",
            };
            let encoded = STANDARD.encode(format!("{user}:{pass}"));
            edits.headers.push((
                "authorization".to_owned(),
                Secret::new(format!("Basic {encoded}")),
            ));
        }
    }
    Ok(edits)
}

fn checked(s: &Secret<String>) -> Result<&str, AttachError> {
    let v = s.expose().as_str();
    if v.is_empty() || v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(AttachError::InvalidSecret);
    }
    Ok(v)
}

/// Headers that carry a credential: a caller may never send them upstream.
pub const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "api-key",
    "x-auth-token",
    "x-goog-api-key",
    "x-passport-token",
];

/// Framing and routing headers the egress client sets from the [`crate::Target`]:
/// a caller may not send them either.
pub const FRAMING_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Removes every header in [`CREDENTIAL_HEADERS`] and [`FRAMING_HEADERS`]
/// and the one `scheme`
/// writes, by case-insensitive name. Returns the removed names (for audit).
pub fn strip_caller_auth(
    headers: &mut BTreeMap<String, String>,
    scheme: &AuthScheme,
) -> Vec<String> {
    let own = scheme.header_name();
    let mut removed = Vec::new();
    headers.retain(|name, _| {
        let lower = name.to_ascii_lowercase();
        let strip = CREDENTIAL_HEADERS.contains(&lower.as_str())
            || FRAMING_HEADERS.contains(&lower.as_str())
            || own.as_deref() == Some(&lower);
        if strip {
            removed.push(name.clone());
        }
        !strip
    });
    removed
}

/// Removes the query parameter a `query` scheme writes (case-insensitive).
/// Returns how many were removed.
pub fn strip_caller_query(query: &mut Vec<(String, String)>, scheme: &AuthScheme) -> usize {
    let AuthScheme::Query { param, .. } = scheme else {
        return 0;
    };
    let before = query.len();
    query.retain(|(k, _)| !k.eq_ignore_ascii_case(param));
    before - query.len()
}

/// Whether a header name can hold a credential: [`CREDENTIAL_HEADERS`], and any
/// name mentioning auth, token, key, secret, session, password, signature or
/// cookie.
pub fn is_sensitive_header(name: &str) -> bool {
    const WORDS: &[&str] = &[
        "auth",
        "token",
        "key",
        "secret",
        "session",
        "password",
        "signature",
        "cookie",
        "credential",
    ];
    let lower = name.to_ascii_lowercase();
    CREDENTIAL_HEADERS.contains(&lower.as_str()) || WORDS.iter().any(|w| lower.contains(w))
}

/// A copy of `headers` safe for logs and audit: sensitive values become
/// `[redacted]`.
pub fn redact_headers(headers: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    headers
        .iter()
        .map(|(k, v)| {
            let v = if is_sensitive_header(k) {
                "[redacted]".to_owned()
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}

/// Whether a caller header may be forwarded at all: an RFC 9110 token name
/// and a value without CR, LF or NUL (no header injection).
pub fn is_valid_header(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        && !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_with_token_only_for_username_schemes() {
        let token = Credential::Token(Secret::new("sk_test_1".into()));
        let stripe = AuthScheme::Basic {
            username_field: "secret_key".into(),
            password_field: None,
        };
        let edits = attach(&stripe, &token).unwrap();
        assert_eq!(
            edits.headers[0].1.expose(),
            &format!("Basic {}", STANDARD.encode("sk_test_1:"))
        );
        let jira = AuthScheme::Basic {
            username_field: "email".into(),
            password_field: Some("api_token".into()),
        };
        assert_eq!(
            attach(&jira, &token),
            Err(AttachError::MissingField("email".into()))
        );
    }
}
