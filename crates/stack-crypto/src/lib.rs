//! Cryptographic primitives for STACK, behind one small API.
//!
//! This is the only crate that depends on `ring` (checked by `deny.toml` and the
//! layering test). It offers SHA-256, random identifiers and API keys drawn
//! from an injected [`RandomSource`], API-key hashing and constant-time
//! comparison, Ed25519 signing keys and their JWK thumbprints
//! ([`ed25519`]), AES-256-GCM sealing of data at rest ([`aead`]), and the
//! ring-backed `jsonwebtoken` crypto provider ([`jwt`]).
//!
//! What it does not do: it never opens a file or a socket, never reads the
//! clock, and never draws randomness except through the [`RandomSource`] it is
//! given. It knows nothing of passports or JWT claims (that is
//! `stack-passport`) nor of where keys are stored.
#![forbid(unsafe_code)]

pub mod aead;
pub mod ed25519;
pub mod jwt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest;
use stack_core::{Error, IdKind, Secret};

/// A source of cryptographically secure random bytes, passed in so that
/// callers can be tested deterministically.
pub trait RandomSource: Send + Sync {
    fn fill(&self, dest: &mut [u8]) -> Result<(), Error>;
}

/// The operating system's CSPRNG.
#[derive(Debug, Clone)]
pub struct SystemRandom(ring::rand::SystemRandom);

impl SystemRandom {
    pub fn new() -> Self {
        Self(ring::rand::SystemRandom::new())
    }
}

impl Default for SystemRandom {
    fn default() -> Self {
        Self::new()
    }
}

impl RandomSource for SystemRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), Error> {
        ring::rand::SecureRandom::fill(&self.0, dest)
            .map_err(|_| Error::internal("the system random number generator failed"))
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha256(data))
}

/// Constant-time equality for secrets and their digests.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    #[allow(deprecated)]
    ring::constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// `n` random bytes encoded as unpadded base64url.
pub fn random_token(rng: &dyn RandomSource, n: usize) -> Result<String, Error> {
    let mut buf = vec![0u8; n];
    rng.fill(&mut buf)?;
    Ok(URL_SAFE_NO_PAD.encode(&buf))
}

/// A new id of `kind`: its prefix then 16 random bytes in base64url (22 chars, 128 bits).
pub fn new_id(rng: &dyn RandomSource, kind: IdKind) -> Result<String, Error> {
    Ok(format!("{}{}", kind.prefix(), random_token(rng, 16)?))
}

/// The kinds of API key STACK issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKeyKind {
    Operator,
    Member,
}

impl ApiKeyKind {
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::Operator => "sk_live_op_",
            Self::Member => "sk_live_mem_",
        }
    }
}

/// A fresh API key: the kind's prefix and 32 random bytes (256 bits) in base64url.
pub fn new_api_key(rng: &dyn RandomSource, kind: ApiKeyKind) -> Result<Secret<String>, Error> {
    Ok(Secret::new(format!(
        "{}{}",
        kind.prefix(),
        random_token(rng, 32)?
    )))
}

/// The digest stored for an API key. Keys carry 256 bits of entropy, so an
/// unsalted, domain-separated SHA-256 is enough: it cannot be brute-forced and
/// it lets the key be found by an indexed lookup.
pub fn api_key_digest(key: &str) -> String {
    let mut input = Vec::with_capacity(key.len() + 16);
    input.extend_from_slice(b"stack-api-key-v1\0");
    input.extend_from_slice(key.as_bytes());
    sha256_hex(&input)
}

/// A short, non-secret prefix of a key for display (`sk_live_op_AbCd…`).
pub fn api_key_hint(key: &str) -> String {
    let visible: String = key.chars().take(15).collect();
    format!("{visible}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter(std::sync::atomic::AtomicU8);
    impl RandomSource for Counter {
        fn fill(&self, dest: &mut [u8]) -> Result<(), Error> {
            for b in dest {
                *b = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(())
        }
    }

    #[test]
    fn sha256_matches_the_standard_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn ids_are_prefixed_and_url_safe() {
        let rng = Counter(0.into());
        let id = new_id(&rng, IdKind::Agent).unwrap();
        assert!(IdKind::Agent.is_valid(&id), "{id}");
        assert_eq!(id.len(), 4 + 22);
    }

    #[test]
    fn api_keys_have_prefix_and_stable_digest() {
        let rng = SystemRandom::new();
        let key = new_api_key(&rng, ApiKeyKind::Operator).unwrap();
        assert!(key.expose().starts_with("sk_live_op_"));
        assert_eq!(key.expose().len(), "sk_live_op_".len() + 43);
        assert_eq!(api_key_digest(key.expose()), api_key_digest(key.expose()));
        assert_ne!(api_key_digest("a"), api_key_digest("b"));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
