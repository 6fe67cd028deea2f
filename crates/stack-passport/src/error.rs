//! The errors of this crate, each with a stable machine code.

use stack_core::ErrorCode;

/// Longest attacker-supplied text (a `kid`, an `alg`, a serde message) kept in an error.
const MAX_ECHO: usize = 64;

/// Cuts attacker-controlled text so an error can never be made large.
pub(crate) fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(MAX_ECHO).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// Why a passport was refused. `Display` never holds the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("malformed passport: {0}")]
    Malformed(&'static str),
    #[error("the passport is larger than 16 KiB")]
    TooLarge,
    #[error("unsupported passport algorithm {0:?}: only EdDSA is accepted")]
    UnsupportedAlgorithm(String),
    #[error("the passport header has no kid")]
    MissingKid,
    #[error("no verification key with kid {0:?}")]
    UnknownKey(String),
    #[error("the passport signature is invalid")]
    BadSignature,
    #[error("the passport expired at {exp}")]
    Expired { exp: i64 },
    #[error("the passport is not valid before {nbf}")]
    NotYetValid { nbf: i64 },
    #[error("the passport was issued in the future")]
    IssuedInFuture,
    #[error("the passport has the wrong issuer")]
    WrongIssuer,
    #[error("the passport has the wrong audience")]
    WrongAudience,
    #[error("invalid passport claims: {0}")]
    InvalidClaims(String),
    #[error("the passport has been revoked")]
    Revoked,
}

impl VerifyError {
    /// A stable, lower-case machine code for logs, metrics and verify reports.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::TooLarge => "too_large",
            Self::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            Self::MissingKid => "missing_kid",
            Self::UnknownKey(_) => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Expired { .. } => "expired",
            Self::NotYetValid { .. } => "not_yet_valid",
            Self::IssuedInFuture => "issued_in_future",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::InvalidClaims(_) => "invalid_claims",
            Self::Revoked => "revoked",
        }
    }

    /// A human sentence (the `Display` form).
    pub fn describe(&self) -> String {
        self.to_string()
    }

    /// The API error code: `PASSPORT_EXPIRED`, `PASSPORT_REVOKED`, otherwise `UNAUTHORIZED`.
    pub const fn error_code(&self) -> ErrorCode {
        match self {
            Self::Expired { .. } => ErrorCode::PassportExpired,
            Self::Revoked => ErrorCode::PassportRevoked,
            _ => ErrorCode::Unauthorized,
        }
    }
}

impl From<VerifyError> for stack_core::Error {
    fn from(e: VerifyError) -> Self {
        Self::new(e.error_code(), e.describe()).with_details(serde_json::json!({
            "reason": e.code()
        }))
    }
}

/// Errors of signing and of reading a JWKS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PassportError {
    /// The claims break an invariant the verifier enforces (so they would
    /// produce a token nobody accepts).
    #[error("invalid passport claims: {0}")]
    InvalidClaims(String),
    /// The signed token would exceed [`crate::MAX_TOKEN_BYTES`].
    #[error("the passport would be larger than 16 KiB")]
    TooLarge,
    #[error("the passport claims could not be encoded")]
    Encoding,
    #[error("invalid JWKS document: {0}")]
    InvalidJwks(&'static str),
    #[error("the JWKS has no usable Ed25519 signing key")]
    NoUsableKeys,
}

impl PassportError {
    /// A stable, lower-case machine code.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::InvalidClaims(_) => "invalid_claims",
            Self::TooLarge => "too_large",
            Self::Encoding => "encoding",
            Self::InvalidJwks(_) => "invalid_jwks",
            Self::NoUsableKeys => "no_usable_keys",
        }
    }
}

impl From<PassportError> for stack_core::Error {
    fn from(e: PassportError) -> Self {
        match e {
            PassportError::InvalidClaims(_) | PassportError::TooLarge => {
                Self::validation(e.to_string())
            }
            _ => Self::internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_bounds_echoed_text() {
        assert_eq!(clip("abc"), "abc");
        let long = "x".repeat(1000);
        assert_eq!(clip(&long).chars().count(), MAX_ECHO + 1);
        assert_eq!(clip(&"é".repeat(100)).chars().count(), MAX_ECHO + 1);
    }
}
