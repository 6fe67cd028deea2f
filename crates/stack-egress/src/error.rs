//! The crate's one error type.

use stack_core::{Error, ErrorCode};
use stack_proxy::IpClass;

/// Why an outbound call was refused or failed. `Display` never carries a
/// header value, a query string or a resolved address (the address stays in
/// the server's log: telling an agent which internal address a name maps to
/// is itself a leak).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    /// The target host resolved to an address the SSRF guard refuses.
    #[error(
        "the upstream host resolves to a non-public address ({class}), which the proxy may not reach"
    )]
    Forbidden { class: IpClass },
    /// A plain `http` target while `allow_http` is off.
    #[error("plain http upstreams are not allowed; use https")]
    InsecureScheme,
    /// A header the caller may not set (framing, `Host`) or one that is not
    /// a valid HTTP header. Holds the (clipped) name, never the value.
    #[error("header {name:?} cannot be sent upstream")]
    InvalidHeader { name: String },
    /// The request cannot be expressed (for example the `CONNECT` method).
    #[error("invalid outbound request: {reason}")]
    InvalidRequest { reason: &'static str },
    /// The request body is over `max_request_bytes`; nothing was sent.
    #[error("the request body is larger than {limit} bytes")]
    RequestTooLarge { limit: usize },
    /// The configuration cannot be used (bad extra root certificate, …).
    #[error("invalid egress configuration: {reason}")]
    Config { reason: String },
    /// The host name did not resolve.
    #[error("the upstream host name could not be resolved")]
    Dns,
    /// No checked address accepted a TCP connection.
    #[error("could not connect to the upstream")]
    Connect,
    /// Resolving, connecting and the TLS handshake took longer than
    /// `connect_timeout`.
    #[error("connecting to the upstream took longer than {seconds} s")]
    ConnectTimeout { seconds: u64 },
    /// The TLS handshake failed (untrusted certificate, wrong name, …).
    #[error("TLS handshake with the upstream failed: {reason}")]
    Tls { reason: String },
    /// The whole exchange took longer than `timeout`.
    #[error("the upstream did not answer within {seconds} s")]
    Timeout { seconds: u64 },
    /// The response (declared or streamed) is over `max_response_bytes`;
    /// reading stopped there and the connection was dropped.
    #[error("the upstream response is larger than {limit} bytes")]
    ResponseTooLarge { limit: usize },
    /// The upstream broke HTTP/1.1 (malformed response, closed mid-message).
    #[error("the upstream sent an invalid or incomplete HTTP response")]
    Protocol,
}

impl EgressError {
    /// A stable, upper-case machine code (`details.reason` on the wire).
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Forbidden { .. } => "EGRESS_FORBIDDEN_ADDRESS",
            Self::InsecureScheme => "EGRESS_INSECURE_SCHEME",
            Self::InvalidHeader { .. } => "EGRESS_INVALID_HEADER",
            Self::InvalidRequest { .. } => "EGRESS_INVALID_REQUEST",
            Self::RequestTooLarge { .. } => "EGRESS_REQUEST_TOO_LARGE",
            Self::Config { .. } => "EGRESS_CONFIG_INVALID",
            Self::Dns => "UPSTREAM_DNS_FAILED",
            Self::Connect => "UPSTREAM_CONNECT_FAILED",
            Self::ConnectTimeout { .. } => "UPSTREAM_CONNECT_TIMEOUT",
            Self::Tls { .. } => "UPSTREAM_TLS_FAILED",
            Self::Timeout { .. } => "UPSTREAM_TIMEOUT",
            Self::ResponseTooLarge { .. } => "UPSTREAM_RESPONSE_TOO_LARGE",
            Self::Protocol => "UPSTREAM_PROTOCOL_ERROR",
        }
    }

    /// The application error code (and so the HTTP status) it maps to:
    /// refusals are the caller's (403/400/413), upstream failures are 502,
    /// timeouts 504.
    pub const fn error_code(&self) -> ErrorCode {
        match self {
            Self::Forbidden { .. } => ErrorCode::Forbidden,
            Self::InsecureScheme | Self::InvalidHeader { .. } | Self::InvalidRequest { .. } => {
                ErrorCode::ValidationError
            }
            Self::RequestTooLarge { .. } => ErrorCode::PayloadTooLarge,
            Self::Config { .. } => ErrorCode::Internal,
            Self::Dns
            | Self::Connect
            | Self::Tls { .. }
            | Self::ResponseTooLarge { .. }
            | Self::Protocol => ErrorCode::UpstreamUnavailable,
            Self::ConnectTimeout { .. } | Self::Timeout { .. } => ErrorCode::UpstreamTimeout,
        }
    }
}

impl From<EgressError> for Error {
    fn from(e: EgressError) -> Self {
        Self::new(e.error_code(), e.to_string())
            .with_details(serde_json::json!({ "reason": e.code() }))
    }
}

/// At most 64 characters of a name taken from the request, for messages.
pub(crate) fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses() {
        let cases = [
            (
                EgressError::Forbidden {
                    class: IpClass::Private,
                },
                "EGRESS_FORBIDDEN_ADDRESS",
                403,
            ),
            (EgressError::InsecureScheme, "EGRESS_INSECURE_SCHEME", 400),
            (
                EgressError::RequestTooLarge { limit: 1 },
                "EGRESS_REQUEST_TOO_LARGE",
                413,
            ),
            (EgressError::Dns, "UPSTREAM_DNS_FAILED", 502),
            (EgressError::Timeout { seconds: 1 }, "UPSTREAM_TIMEOUT", 504),
            (
                EgressError::ResponseTooLarge { limit: 1 },
                "UPSTREAM_RESPONSE_TOO_LARGE",
                502,
            ),
        ];
        for (e, code, status) in cases {
            assert_eq!(e.code(), code);
            assert_eq!(e.error_code().http_status(), status);
            let app: Error = e.into();
            assert_eq!(app.details, Some(serde_json::json!({ "reason": code })));
        }
    }

    #[test]
    fn forbidden_message_names_the_class_not_the_address() {
        let e = EgressError::Forbidden {
            class: IpClass::CloudMetadata,
        };
        let msg = e.to_string();
        assert!(!msg.contains("169.254"), "{msg}");
    }
}
