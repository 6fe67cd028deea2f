//! Base vocabulary shared by every STACK crate.
//!
//! What it does: prefixed identifiers, the stable error codes and the one
//! [`Error`] type that carries them, time as a value ([`Timestamp`]), the
//! principal model (who is calling, on behalf of which operator), and the
//! redacting [`Secret`] wrapper.
//!
//! What it does not do: no I/O, no clock reads, no randomness. Callers pass
//! time and random bytes in, which keeps everything above it deterministic
//! under test.
#![forbid(unsafe_code)]

pub mod error;
pub mod id;
pub mod principal;
pub mod secret;
pub mod time;

pub use error::{Error, ErrorCode, Result};
pub use id::IdKind;
pub use principal::{Permission, Principal, Role};
pub use secret::Secret;
pub use time::Timestamp;
