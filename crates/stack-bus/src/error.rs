//! The crate's one error type.

use stack_core::{Error, ErrorCode};

type Source = Box<dyn std::error::Error + Send + Sync>;

/// What can go wrong on the bus. `Display` never carries a connection URL.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The configured URL does not parse. The URL itself is not repeated: it
    /// may carry a password.
    #[error("invalid {backend} URL")]
    InvalidUrl { backend: &'static str },
    /// Connecting or subscribing failed.
    #[error("{backend} connection failed: {source}")]
    Connect {
        backend: &'static str,
        #[source]
        source: Source,
    },
    /// Sending a message failed.
    #[error("{backend} publish failed: {source}")]
    Publish {
        backend: &'static str,
        #[source]
        source: Source,
    },
    /// An operation did not finish in time.
    #[error("{backend} {operation} timed out")]
    Timeout {
        backend: &'static str,
        operation: &'static str,
    },
    /// One passport id alone does not fit in a message.
    #[error("revocation event does not fit in one message: {needed} bytes needed, limit {limit}")]
    EventTooLarge { needed: usize, limit: usize },
    /// The event could not be encoded as JSON.
    #[error("encoding revocation event: {0}")]
    Encode(#[from] serde_json::Error),
}

impl BusError {
    /// The stable code this error maps to.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Connect { .. } | Self::Publish { .. } | Self::Timeout { .. } => {
                ErrorCode::Unavailable
            }
            Self::InvalidUrl { .. } | Self::EventTooLarge { .. } | Self::Encode(_) => {
                ErrorCode::Internal
            }
        }
    }
}

impl From<BusError> for Error {
    fn from(err: BusError) -> Self {
        Error::new(err.code(), err.to_string())
    }
}
