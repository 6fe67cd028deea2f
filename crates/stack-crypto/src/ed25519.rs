//! Ed25519 signing keys (RFC 8032) for passports, and their JWK thumbprints.
//!
//! Private keys travel as PKCS#8 v2 documents (seed and public key), the form
//! ring reads back with a consistency check; they are handed out only inside a
//! [`Secret`] so that they are sealed ([`crate::aead`]) before they are stored.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, KeyPair as _};
use stack_core::{Error, Secret};

use crate::{RandomSource, sha256};

/// DER prefix of a PKCS#8 v2 `OneAsymmetricKey` for Ed25519 (RFC 8410), up to
/// the 32-byte seed; [`PKCS8_V2_MIDDLE`] then introduces the public key. The
/// same template ring uses in `Ed25519KeyPair::generate_pkcs8`.
const PKCS8_V2_PREFIX: [u8; 16] = [
    0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
const PKCS8_V2_MIDDLE: [u8; 3] = [0x81, 0x21, 0x00];

/// An Ed25519 key pair. `Debug` prints `[redacted]`.
pub struct Ed25519KeyPair {
    inner: signature::Ed25519KeyPair,
    public_key: [u8; 32],
}

impl fmt::Debug for Ed25519KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Ed25519KeyPair {
    /// A fresh key from 32 random bytes of `rng`, with its PKCS#8 v2 document
    /// for sealed storage.
    pub fn generate(rng: &dyn RandomSource) -> Result<(Self, Secret<Vec<u8>>), Error> {
        let mut seed = [0u8; 32];
        rng.fill(&mut seed)?;
        let seeded = signature::Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|_| Error::internal("could not derive an Ed25519 key from the seed"))?;
        let mut pkcs8 = Vec::with_capacity(83);
        pkcs8.extend_from_slice(&PKCS8_V2_PREFIX);
        pkcs8.extend_from_slice(&seed);
        pkcs8.extend_from_slice(&PKCS8_V2_MIDDLE);
        pkcs8.extend_from_slice(seeded.public_key().as_ref());
        seed.fill(0);
        // Read the document back, so a key is only ever returned with a
        // document that loads to the same key.
        let key = Self::from_pkcs8(&pkcs8)?;
        Ok((key, Secret::new(pkcs8)))
    }

    /// Loads a PKCS#8 document: v2 (with the public key, which is checked
    /// against the seed) or v1 (seed only).
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, Error> {
        let inner = signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
            .map_err(|_| Error::internal("the Ed25519 PKCS#8 document is invalid"))?;
        let mut public_key = [0u8; 32];
        let pk = inner.public_key().as_ref();
        if pk.len() != 32 {
            return Err(Error::internal("the Ed25519 public key is not 32 bytes"));
        }
        public_key.copy_from_slice(pk);
        Ok(Self { inner, public_key })
    }

    /// The 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    /// The 64-byte signature of `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        let sig = self.inner.sign(msg);
        let mut out = [0u8; 64];
        // An Ed25519 signature is always 64 bytes; zip keeps this panic-free.
        for (o, s) in out.iter_mut().zip(sig.as_ref()) {
            *o = *s;
        }
        out
    }
}

/// Whether `signature` is a valid Ed25519 signature of `msg` by `public_key`.
/// Any malformed input (wrong length, non-canonical encoding) is `false`.
pub fn verify(public_key: &[u8; 32], msg: &[u8], signature: &[u8]) -> bool {
    signature::UnparsedPublicKey::new(&signature::ED25519, public_key)
        .verify(msg, signature)
        .is_ok()
}

/// RFC 7638 JWK thumbprint (SHA-256, base64url) of the OKP/Ed25519 key: used as `kid`.
pub fn jwk_thumbprint(public_key: &[u8; 32]) -> String {
    // RFC 7638 §3.2 / RFC 8037 §2: the required members in lexicographic
    // order, no whitespace. `x` is base64url, so it needs no JSON escaping.
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(public_key)
    );
    URL_SAFE_NO_PAD.encode(sha256(canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(u8);
    impl RandomSource for Fixed {
        fn fill(&self, dest: &mut [u8]) -> Result<(), Error> {
            dest.fill(self.0);
            Ok(())
        }
    }

    #[test]
    fn rfc8032_test_1_signs_and_verifies() {
        // RFC 8032 §7.1, TEST 1 (empty message).
        let seed = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .unwrap();
        let mut pkcs8 = PKCS8_V2_PREFIX.to_vec();
        pkcs8.extend_from_slice(&seed);
        pkcs8.extend_from_slice(&PKCS8_V2_MIDDLE);
        pkcs8.extend_from_slice(
            &hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
                .unwrap(),
        );
        let key = Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
        let sig = key.sign(b"");
        assert_eq!(
            hex::encode(sig),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
             5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
        assert!(verify(&key.public_key(), b"", &sig));
        assert!(!verify(&key.public_key(), b"x", &sig));
        assert!(!verify(&key.public_key(), b"", &sig[..63]));
    }

    #[test]
    fn v2_document_with_a_mismatched_public_key_is_refused() {
        let (_, doc) = Ed25519KeyPair::generate(&Fixed(7)).unwrap();
        let mut bad = doc.expose().clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(Ed25519KeyPair::from_pkcs8(&bad).is_err());
        assert!(Ed25519KeyPair::from_pkcs8(b"not der").is_err());
    }

    #[test]
    fn generated_documents_load_to_the_same_key_and_match_ring_layout() {
        let (key, doc) = Ed25519KeyPair::generate(&Fixed(1)).unwrap();
        assert_eq!(doc.expose().len(), 83);
        let again = Ed25519KeyPair::from_pkcs8(doc.expose()).unwrap();
        assert_eq!(key.public_key(), again.public_key());
        let ring_doc =
            signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        assert_eq!(ring_doc.as_ref().len(), doc.expose().len());
        assert_eq!(ring_doc.as_ref()[..16], doc.expose()[..16]);
        assert_eq!(ring_doc.as_ref()[48..51], doc.expose()[48..51]);
        assert_eq!(format!("{key:?}"), "[redacted]");
    }

    #[test]
    fn thumbprint_matches_rfc8037_appendix_a3() {
        let x = URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .unwrap();
        let mut pk = [0u8; 32];
        pk.copy_from_slice(&x);
        assert_eq!(
            jwk_thumbprint(&pk),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }
}
