//! The one error type of the application, with stable machine codes.
//!
//! Adapters map [`ErrorCode`] to transport details (HTTP status, MCP tool
//! error) in exactly one place each. `Display` never carries a secret: messages
//! are written by STACK, not echoed from credentials.

use serde_json::Value;

/// Stable machine-readable error codes. The string forms are part of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Unauthorized,
    InvalidApiKey,
    Forbidden,
    NotFound,
    ValidationError,
    InvalidRequest,
    PayloadTooLarge,
    Conflict,
    MethodNotAllowed,
    UnsupportedMediaType,
    PassportBlocked,
    PassportExpired,
    PassportRevoked,
    GovernanceApprovalRequired,
    AccountabilityRequired,
    DelegationDepthExceeded,
    ScopeEscalation,
    DelegationAccountabilityViolation,
    MissionEnded,
    MissionNotFound,
    CheckpointNotAvailable,
    /// The operator's monthly allowance for this meter (e.g. scans) is used up.
    QuotaExceeded,
    ScopeDenied,
    ConstraintViolation,
    /// An enforced-mode passport called the proxy without an intent approval.
    IntentApprovalRequired,
    /// The intent approval is unknown, not this operator's, or not approved
    /// (still pending, or rejected).
    IntentApprovalInvalid,
    /// The intent approval expired before it was used.
    IntentApprovalExpired,
    /// The intent approval was already used (approvals are single use).
    IntentApprovalConsumed,
    /// The intent approval belongs to another passport or approves a
    /// different request.
    IntentApprovalMismatch,
    /// A detector configuration that does not compile: one variant per
    /// `stack_scan::ScanConfigError::code()`, same wire form.
    ScanTooManyPatterns,
    ScanTooManySuppressions,
    ScanInvalidDetectorId,
    ScanDuplicateDetectorId,
    ScanPatternTooLong,
    ScanPatternInvalid,
    ScanPatternTooComplex,
    ScanPatternMatchesEmpty,
    ScanUnknownDetector,
    ScanEmptySuppression,
    ScanInvalidBudget,
    NotImplemented,
    Unavailable,
    /// The proxy could not get a valid answer from the upstream (DNS,
    /// connect, TLS, malformed or oversized response).
    UpstreamUnavailable,
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// The upstream answered, and the grant's response scanning withheld the
    /// answer (a critical prompt-injection verdict, `block` mode).
    ResponseBlocked,
    Internal,
}

impl ErrorCode {
    /// The wire form of the code.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "UNAUTHORIZED",
            Self::InvalidApiKey => "INVALID_API_KEY",
            Self::Forbidden => "FORBIDDEN",
            Self::NotFound => "NOT_FOUND",
            Self::ValidationError => "VALIDATION_ERROR",
            Self::InvalidRequest => "INVALID_REQUEST",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::Conflict => "CONFLICT",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::PassportBlocked => "PASSPORT_BLOCKED",
            Self::PassportExpired => "PASSPORT_EXPIRED",
            Self::PassportRevoked => "PASSPORT_REVOKED",
            Self::GovernanceApprovalRequired => "GOVERNANCE_APPROVAL_REQUIRED",
            Self::AccountabilityRequired => "ACCOUNTABILITY_REQUIRED",
            Self::DelegationDepthExceeded => "DELEGATION_DEPTH_EXCEEDED",
            Self::ScopeEscalation => "SCOPE_ESCALATION",
            Self::DelegationAccountabilityViolation => "DELEGATION_ACCOUNTABILITY_VIOLATION",
            Self::MissionEnded => "MISSION_ENDED",
            Self::MissionNotFound => "MISSION_NOT_FOUND",
            Self::CheckpointNotAvailable => "CHECKPOINT_NOT_AVAILABLE",
            Self::QuotaExceeded => "QUOTA_EXCEEDED",
            Self::ScopeDenied => "SCOPE_DENIED",
            Self::ConstraintViolation => "CONSTRAINT_VIOLATION",
            Self::IntentApprovalRequired => "INTENT_APPROVAL_REQUIRED",
            Self::IntentApprovalInvalid => "INTENT_APPROVAL_INVALID",
            Self::IntentApprovalExpired => "INTENT_APPROVAL_EXPIRED",
            Self::IntentApprovalConsumed => "INTENT_APPROVAL_CONSUMED",
            Self::IntentApprovalMismatch => "INTENT_APPROVAL_MISMATCH",
            Self::ScanTooManyPatterns => "SCAN_TOO_MANY_PATTERNS",
            Self::ScanTooManySuppressions => "SCAN_TOO_MANY_SUPPRESSIONS",
            Self::ScanInvalidDetectorId => "SCAN_INVALID_DETECTOR_ID",
            Self::ScanDuplicateDetectorId => "SCAN_DUPLICATE_DETECTOR_ID",
            Self::ScanPatternTooLong => "SCAN_PATTERN_TOO_LONG",
            Self::ScanPatternInvalid => "SCAN_PATTERN_INVALID",
            Self::ScanPatternTooComplex => "SCAN_PATTERN_TOO_COMPLEX",
            Self::ScanPatternMatchesEmpty => "SCAN_PATTERN_MATCHES_EMPTY",
            Self::ScanUnknownDetector => "SCAN_UNKNOWN_DETECTOR",
            Self::ScanEmptySuppression => "SCAN_EMPTY_SUPPRESSION",
            Self::ScanInvalidBudget => "SCAN_INVALID_BUDGET",
            Self::NotImplemented => "NOT_IMPLEMENTED",
            Self::Unavailable => "SERVICE_UNAVAILABLE",
            Self::UpstreamUnavailable => "UPSTREAM_UNAVAILABLE",
            Self::UpstreamTimeout => "UPSTREAM_TIMEOUT",
            Self::ResponseBlocked => "RESPONSE_BLOCKED",
            Self::Internal => "INTERNAL_ERROR",
        }
    }

    /// The HTTP status this code maps to. Kept here, beside the codes, so the
    /// HTTP adapter and the docs read one table.
    pub const fn http_status(self) -> u16 {
        match self {
            Self::Unauthorized
            | Self::InvalidApiKey
            | Self::PassportExpired
            | Self::PassportRevoked => 401,
            Self::Forbidden
            | Self::PassportBlocked
            | Self::GovernanceApprovalRequired
            | Self::MissionEnded => 403,
            Self::NotFound | Self::MissionNotFound | Self::CheckpointNotAvailable => 404,
            Self::ValidationError
            | Self::InvalidRequest
            | Self::AccountabilityRequired
            | Self::DelegationDepthExceeded
            | Self::ScopeEscalation
            | Self::DelegationAccountabilityViolation
            | Self::ScanTooManyPatterns
            | Self::ScanTooManySuppressions
            | Self::ScanInvalidDetectorId
            | Self::ScanDuplicateDetectorId
            | Self::ScanPatternTooLong
            | Self::ScanPatternInvalid
            | Self::ScanPatternTooComplex
            | Self::ScanPatternMatchesEmpty
            | Self::ScanUnknownDetector
            | Self::ScanEmptySuppression
            | Self::ScanInvalidBudget => 400,
            Self::QuotaExceeded => 402,
            Self::ScopeDenied
            | Self::ConstraintViolation
            | Self::IntentApprovalRequired
            | Self::IntentApprovalInvalid
            | Self::IntentApprovalExpired
            | Self::IntentApprovalConsumed
            | Self::IntentApprovalMismatch => 403,
            Self::MethodNotAllowed => 405,
            Self::Conflict => 409,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::NotImplemented => 501,
            Self::UpstreamUnavailable | Self::ResponseBlocked => 502,
            Self::Unavailable => 503,
            Self::UpstreamTimeout => 504,
            Self::Internal => 500,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An application error: a code, a human message, and optional structured details.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<Value>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
        }
    }

    #[must_use]
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationError, message)
    }

    /// A validation error about one field, with the field named in `details`.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationError, message)
            .with_details(serde_json::json!({ "field": field }))
    }

    /// `kind not found: id`, with the id cut to 80 characters so a hostile
    /// path cannot make the error body arbitrarily large.
    pub fn not_found(kind: &str, id: &str) -> Self {
        let shown: String = id.chars().take(80).collect();
        let ellipsis = if shown.len() < id.len() { "…" } else { "" };
        Self::new(
            ErrorCode::NotFound,
            format!("{kind} not found: {shown}{ellipsis}"),
        )
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// An internal failure. The message is for logs; adapters show a generic one.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// A capability whose issue has not landed yet.
    pub fn not_implemented(what: &str) -> Self {
        Self::new(
            ErrorCode::NotImplemented,
            format!("{what} is not implemented yet in this STACK build"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_stable_wire_forms_and_statuses() {
        let table = [
            (ErrorCode::Unauthorized, "UNAUTHORIZED", 401),
            (ErrorCode::NotFound, "NOT_FOUND", 404),
            (ErrorCode::ValidationError, "VALIDATION_ERROR", 400),
            (ErrorCode::PassportBlocked, "PASSPORT_BLOCKED", 403),
            (ErrorCode::NotImplemented, "NOT_IMPLEMENTED", 501),
            (ErrorCode::PayloadTooLarge, "PAYLOAD_TOO_LARGE", 413),
            (ErrorCode::QuotaExceeded, "QUOTA_EXCEEDED", 402),
            (ErrorCode::ScanPatternInvalid, "SCAN_PATTERN_INVALID", 400),
            (ErrorCode::UpstreamUnavailable, "UPSTREAM_UNAVAILABLE", 502),
            (ErrorCode::UpstreamTimeout, "UPSTREAM_TIMEOUT", 504),
            (ErrorCode::ResponseBlocked, "RESPONSE_BLOCKED", 502),
            (
                ErrorCode::IntentApprovalRequired,
                "INTENT_APPROVAL_REQUIRED",
                403,
            ),
            (
                ErrorCode::IntentApprovalConsumed,
                "INTENT_APPROVAL_CONSUMED",
                403,
            ),
        ];
        for (code, s, status) in table {
            assert_eq!(code.as_str(), s);
            assert_eq!(code.http_status(), status);
        }
    }
}
