//! A `jsonwebtoken` [`CryptoProvider`] backed by ring, for EdDSA only.
//!
//! `jsonwebtoken` 11 is built without a crypto backend here (no `aws_lc_rs`,
//! no `rust_crypto`), so ring stays the only implementation in the tree.
//! Every other algorithm (`HS*`, `RS*`, `PS*`, `ES*`) is refused by the
//! factories, which is what keeps an `HS256` token signed with a public key
//! from ever verifying. Unlike `KeyUtils::new_unimplemented`, none of the
//! functions here panics.

use std::sync::Once;

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};
use ring::digest;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};

/// The ring-backed provider: EdDSA (Ed25519) signing from a PKCS#8 document,
/// verification from a raw 32-byte public key.
pub static RING_PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: |_| Err(ErrorKind::UnsupportedAlgorithm.into()),
        rsa_pub_components_from_public_key: |_| Err(ErrorKind::UnsupportedAlgorithm.into()),
        ec_pub_components_from_private_key: |_, _| Err(ErrorKind::UnsupportedAlgorithm.into()),
        ed_pub_components_from_private_key,
        compute_digest,
    },
};

/// Installs the ring-backed jsonwebtoken CryptoProvider (EdDSA only) once per
/// process; idempotent; never panics if another provider was installed first
/// (that provider then stays in force).
pub fn install_ring_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider won the race; jsonwebtoken keeps it.
        let _ = RING_PROVIDER.install_default();
    });
}

struct RingEdSigner(Ed25519KeyPair);

impl Signer<Vec<u8>> for RingEdSigner {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        Ok(self.0.sign(msg).as_ref().to_vec())
    }
}

impl JwtSigner for RingEdSigner {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

struct RingEdVerifier([u8; 32]);

impl Verifier<Vec<u8>> for RingEdVerifier {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(msg, sig)
            .map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingEdVerifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

fn new_signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    if *algorithm != Algorithm::EdDSA {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    if key.family() != AlgorithmFamily::Ed {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(key.as_bytes())
        .map_err(|_| ErrorKind::InvalidEddsaKey)?;
    Ok(Box::new(RingEdSigner(pair)))
}

fn new_verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    if *algorithm != Algorithm::EdDSA {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    if key.family() != AlgorithmFamily::Ed {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    let raw: [u8; 32] = key
        .try_get_as_bytes()?
        .try_into()
        .map_err(|_| ErrorKind::InvalidEddsaKey)?;
    Ok(Box::new(RingEdVerifier(raw)))
}

fn ed_pub_components_from_private_key(pkcs8: &[u8], curve: &EllipticCurve) -> Result<Vec<u8>> {
    match curve {
        EllipticCurve::Ed25519 => Ok(Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
            .map_err(|_| ErrorKind::InvalidEddsaKey)?
            .public_key()
            .as_ref()
            .to_vec()),
        _ => Err(ErrorKind::UnsupportedAlgorithm.into()),
    }
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>> {
    let algorithm = match hash {
        ThumbprintHash::SHA256 => &digest::SHA256,
        ThumbprintHash::SHA384 => &digest::SHA384,
        ThumbprintHash::SHA512 => &digest::SHA512,
        _ => return Err(ErrorKind::UnsupportedAlgorithm.into()),
    };
    Ok(digest::digest(algorithm, data).as_ref().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SystemRandom;
    use crate::ed25519::Ed25519KeyPair as StackKey;

    #[test]
    fn jsonwebtoken_round_trips_eddsa_through_ring_and_refuses_hmac() {
        install_ring_provider();
        install_ring_provider(); // idempotent
        let (key, doc) = StackKey::generate(&SystemRandom::new()).unwrap();
        let enc = EncodingKey::from_ed_der(doc.expose());
        let dec = DecodingKey::from_ed_der(&key.public_key());
        let claims = serde_json_value();
        let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
        header.kid = Some("k1".into());
        let token = jsonwebtoken::encode(&header, &claims, &enc).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        validation.validate_aud = false;
        let back: Claims = jsonwebtoken::decode(&token, &dec, &validation)
            .unwrap()
            .claims;
        assert_eq!(back.get("sub").map(String::as_str), Some("agt_1"));

        // HS256 with the public key as the HMAC secret: no factory for it.
        let hs = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&key.public_key()),
        );
        assert!(hs.is_err());
        let mut hs_validation = jsonwebtoken::Validation::new(Algorithm::HS256);
        hs_validation.validate_exp = false;
        hs_validation.required_spec_claims.clear();
        assert!(
            jsonwebtoken::decode::<Claims>(
                &token,
                &DecodingKey::from_secret(&key.public_key()),
                &hs_validation
            )
            .is_err()
        );
        assert!(
            compute_digest(b"abc", ThumbprintHash::SHA256)
                .unwrap()
                .len()
                == 32
        );
        assert!(ed_pub_components_from_private_key(doc.expose(), &EllipticCurve::P256).is_err());
        assert_eq!(
            ed_pub_components_from_private_key(doc.expose(), &EllipticCurve::Ed25519).unwrap(),
            key.public_key().to_vec()
        );
    }

    type Claims = std::collections::BTreeMap<String, String>;

    fn serde_json_value() -> Claims {
        [("sub".to_string(), "agt_1".to_string())].into()
    }
}
