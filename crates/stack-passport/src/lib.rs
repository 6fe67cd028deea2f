//! STACK passports: the EdDSA JWTs an agent presents (rest-contract §3,
//! product §7 and §10).
//!
//! What it does:
//! * the claims ([`PassportClaims`], [`StkClaims`], [`ServiceGrant`]), whose
//!   wire form is pinned by `tests/vectors.json`;
//! * signing ([`PassportSigner`]): header exactly
//!   `{"alg":"EdDSA","typ":"JWT","kid":<kid>}`;
//! * offline verification ([`PassportVerifier`]) against a key set read from
//!   the public JWKS ([`VerificationKeys::from_jwks`]), refusing every
//!   hostile form with a specific [`VerifyError`] and never panicking;
//! * revocation as data ([`RevocationSet`], [`CachingVerifier`]) and
//!   delegation narrowing ([`delegation::narrow`]).
//!
//! What it does not do: no I/O, no clock, no randomness. `now` is an argument,
//! keys arrive as values (the server unseals them, an embedder fetches the
//! JWKS), and revoked ids are fed in by the caller. It does not decide who
//! may hold a passport: that is the application layer.
//!
//! ## Embedding: verifying passports in your own service
//!
//! ```no_run
//! use stack_passport::{CachingVerifier, PassportVerifier, VerificationKeys, VerifyOptions};
//! # fn run(jwks_json: &str, token: &str, now_ms: i64) -> Result<(), Box<dyn std::error::Error>> {
//! let jwks: serde_json::Value = serde_json::from_str(jwks_json)?; // GET /v1/.well-known/jwks.json
//! let keys = VerificationKeys::from_jwks(&jwks)?;
//! let mut verifier = CachingVerifier::new(PassportVerifier::new(keys, VerifyOptions::default()));
//! verifier.revoke("pp_revoked".into(), 1_900_000_000); // from the revocation feed
//! match verifier.verify(token, stack_core::Timestamp::from_millis(now_ms)) {
//!     Ok(claims) => println!("agent {} may act", claims.sub),
//!     Err(e) => println!("refused: {} ({})", e.code(), e.describe()),
//! }
//! # Ok(()) }
//! ```
//!
//! The runnable version is `examples/offline_verify.rs`:
//! `cargo run -p stack-passport --example offline_verify -- jwks.json token.txt [revoked.txt]`
//! (token `-` reads stdin; one revoked `jti` per line; `PASSPORT_NOW=<unix
//! seconds>` replays a verdict at a fixed instant). It prints `valid` with the
//! agent, operator, expiry and services, or `refused: <code> (<reason>)`, and
//! exits 0, 1, or 2 on bad input.
//!
//! Throughput: `cargo run --release -p stack-passport --example passport_bench`
//! (figures in `docs/benchmarks.md`, "passport").
//!
//! JWT plumbing: tokens are assembled and parsed here rather than through
//! `jsonwebtoken::{encode, decode}` because its validation reads the system
//! clock, accepts a float `exp` and keeps the last of duplicated keys, and
//! because verifying through its process-wide provider could hit a panicking
//! placeholder if some other code used it before a provider was installed.
//! The constructors still install `stack_crypto::jwt`'s ring provider, and the
//! tests check both directions of interoperability with `jsonwebtoken`.
#![forbid(unsafe_code)]

mod claims;
pub mod delegation;
mod error;
mod keys;
mod revocation;
mod signer;
mod strict_json;
mod verify;

pub use claims::{PassportClaims, ServiceGrant, StkClaims};
pub use error::{PassportError, VerifyError};
pub use keys::VerificationKeys;
pub use revocation::{CachingVerifier, RevocationSet};
pub use signer::PassportSigner;
pub use verify::{PassportVerifier, UnverifiedPassport, VerifyOptions, decode_unverified};

/// The issuer the SDK verifies against by default.
pub const DEFAULT_ISSUER: &str = "getstack.run";
/// The audience of every passport.
pub const AUDIENCE: &str = "stack:passport";
/// The most hops a delegation chain may have (`stk.delegation_depth` ≤ 4).
pub const MAX_DELEGATION_DEPTH: u8 = 4;
/// The largest token accepted or produced, in bytes.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
