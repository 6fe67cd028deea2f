//! AES-256-GCM sealing of small secrets at rest (signing keys, credentials).
//!
//! The sealed form is `version (1) || nonce (12) || ciphertext || tag (16)`.
//! Nonces are 96 random bits per message, which is safe for far more messages
//! than one data key ever seals. `aad` binds the context (for example
//! `signing-key:<kid>`), so a sealed value cannot be moved to another row.

use std::fmt;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use stack_core::{Error, Secret};

use crate::RandomSource;

/// The format version written as the first byte.
const VERSION: u8 = 1;
const TAG_LEN: usize = 16;

/// A 256-bit AES-GCM data key. `Debug` prints `[redacted]`.
#[derive(Clone)]
pub struct DataKey(Secret<[u8; 32]>);

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([redacted])")
    }
}

impl DataKey {
    /// A fresh random key.
    pub fn generate(rng: &dyn RandomSource) -> Result<Self, Error> {
        let mut b = [0u8; 32];
        rng.fill(&mut b)?;
        Ok(Self(Secret::new(b)))
    }

    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self(Secret::new(b))
    }

    /// The raw key, for wrapping it under a key-encryption key. Call sites should be few.
    pub fn expose_bytes(&self) -> &[u8; 32] {
        self.0.expose()
    }

    fn less_safe_key(&self) -> Result<LessSafeKey, Error> {
        UnboundKey::new(&AES_256_GCM, self.0.expose())
            .map(LessSafeKey::new)
            .map_err(|_| Error::internal("invalid AES-256-GCM key"))
    }
}

/// Output: version byte 1 || 12-byte random nonce || ciphertext || 16-byte tag.
/// `aad` binds the context (e.g. `"signing-key:<kid>"`).
pub fn seal(
    key: &DataKey,
    rng: &dyn RandomSource,
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, Error> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce)?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + TAG_LEN);
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    let mut in_out = plaintext.to_vec();
    let tag = key
        .less_safe_key()?
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut in_out,
        )
        .map_err(|_| Error::internal("AES-256-GCM sealing failed"))?;
    out.extend_from_slice(&in_out);
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Opens what [`seal`] produced with the same key and `aad`. Any mismatch
/// (key, context, truncation, tampering, unknown version) is one error that
/// says nothing about which.
pub fn open(key: &DataKey, sealed: &[u8], aad: &[u8]) -> Result<Secret<Vec<u8>>, Error> {
    let fail = || Error::internal("sealed data could not be opened");
    let (&version, rest) = sealed.split_first().ok_or_else(fail)?;
    if version != VERSION || rest.len() < NONCE_LEN + TAG_LEN {
        return Err(fail());
    }
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
    let mut in_out = ciphertext.to_vec();
    let plain_len = key
        .less_safe_key()?
        .open_in_place(nonce, Aad::from(aad), &mut in_out)
        .map_err(|_| fail())?
        .len();
    in_out.truncate(plain_len);
    Ok(Secret::new(in_out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SystemRandom;

    #[test]
    fn round_trip_and_layout() {
        let rng = SystemRandom::new();
        let key = DataKey::generate(&rng).unwrap();
        let sealed = seal(&key, &rng, b"pkcs8 bytes", b"signing-key:k1").unwrap();
        assert_eq!(sealed[0], 1);
        assert_eq!(sealed.len(), 1 + 12 + 11 + 16);
        let opened = open(&key, &sealed, b"signing-key:k1").unwrap();
        assert_eq!(opened.expose(), b"pkcs8 bytes");
        assert_eq!(format!("{key:?}"), "DataKey([redacted])");
        // Fresh nonce each time.
        assert_ne!(
            sealed,
            seal(&key, &rng, b"pkcs8 bytes", b"signing-key:k1").unwrap()
        );
    }

    #[test]
    fn wrong_key_context_or_tampering_fails() {
        let rng = SystemRandom::new();
        let key = DataKey::from_bytes([7; 32]);
        let sealed = seal(&key, &rng, b"secret", b"ctx").unwrap();
        assert!(open(&key, &sealed, b"other").is_err());
        assert!(open(&DataKey::from_bytes([8; 32]), &sealed, b"ctx").is_err());
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            assert!(open(&key, &t, b"ctx").is_err(), "byte {i}");
        }
        for n in 0..sealed.len() {
            assert!(open(&key, &sealed[..n], b"ctx").is_err(), "len {n}");
        }
        let empty = seal(&key, &rng, b"", b"ctx").unwrap();
        assert!(open(&key, &empty, b"ctx").unwrap().expose().is_empty());
    }
}
