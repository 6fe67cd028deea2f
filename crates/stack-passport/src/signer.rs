//! Signing passports.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use stack_crypto::ed25519::{Ed25519KeyPair, jwk_thumbprint};

use crate::{MAX_DELEGATION_DEPTH, MAX_TOKEN_BYTES, PassportClaims, PassportError};

/// The protected header, in the order of rest-contract §3.
#[derive(Serialize)]
struct JwsHeader<'a> {
    alg: &'static str,
    typ: &'static str,
    kid: &'a str,
}

/// Signs passports with one Ed25519 key under one `kid`.
///
/// The header is exactly `{"alg":"EdDSA","typ":"JWT","kid":<kid>}`.
pub struct PassportSigner {
    kid: String,
    key: Ed25519KeyPair,
    /// base64url of the header, computed once.
    encoded_header: String,
}

impl std::fmt::Debug for PassportSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassportSigner")
            .field("kid", &self.kid)
            .field("key", &self.key)
            .finish()
    }
}

impl PassportSigner {
    pub fn new(kid: String, key: Ed25519KeyPair) -> Self {
        stack_crypto::jwt::install_ring_provider();
        let header = JwsHeader {
            alg: "EdDSA",
            typ: "JWT",
            kid: &kid,
        };
        // Serializing three string fields cannot fail; an empty header would
        // only produce tokens every verifier refuses.
        let encoded_header = serde_json::to_vec(&header)
            .map(|h| URL_SAFE_NO_PAD.encode(h))
            .unwrap_or_default();
        Self {
            kid,
            key,
            encoded_header,
        }
    }

    /// A signer whose kid is the key's RFC 7638 thumbprint.
    pub fn with_thumbprint_kid(key: Ed25519KeyPair) -> Self {
        let kid = jwk_thumbprint(&key.public_key());
        Self::new(kid, key)
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.public_key()
    }

    /// The compact JWS of `claims`. Refuses claims the verifier would refuse
    /// whatever the time: `sub` ≠ `stk.agent_id`, empty `jti`/`sub`/`iss`/
    /// `aud`/`stk.operator_id`, a depth over [`MAX_DELEGATION_DEPTH`], or
    /// `exp` not after `iat`.
    pub fn sign(&self, claims: &PassportClaims) -> Result<String, PassportError> {
        check_claims(claims)?;
        let payload = serde_json::to_vec(claims).map_err(|_| PassportError::Encoding)?;
        let mut token = String::with_capacity(
            self.encoded_header.len() + payload.len().saturating_mul(4) / 3 + 90,
        );
        token.push_str(&self.encoded_header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let signature = self.key.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        if token.len() > MAX_TOKEN_BYTES {
            return Err(PassportError::TooLarge);
        }
        Ok(token)
    }

    /// The compact JWS of another statement this deployment vouches for
    /// (e.g. an intent simulation), signed with the same key so anyone with
    /// the JWKS can check it. The header is `{"alg":"EdDSA","typ":typ,"kid"}`;
    /// `typ` may not be `JWT` (nor empty), so a passport verifier, which
    /// accepts only `JWT`, never takes such a statement for a passport.
    pub fn sign_statement<T: Serialize>(
        &self,
        typ: &str,
        claims: &T,
    ) -> Result<String, PassportError> {
        if typ.is_empty() || typ.eq_ignore_ascii_case("JWT") {
            return Err(PassportError::InvalidClaims(
                "a statement's typ must be set and must not be JWT".to_owned(),
            ));
        }
        let header = serde_json::to_vec(&StatementHeader {
            alg: "EdDSA",
            typ,
            kid: &self.kid,
        })
        .map_err(|_| PassportError::Encoding)?;
        let payload = serde_json::to_vec(claims).map_err(|_| PassportError::Encoding)?;
        let mut token = URL_SAFE_NO_PAD.encode(header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let signature = self.key.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        if token.len() > MAX_TOKEN_BYTES {
            return Err(PassportError::TooLarge);
        }
        Ok(token)
    }
}

/// The protected header of a signed statement other than a passport.
#[derive(Serialize)]
struct StatementHeader<'a> {
    alg: &'static str,
    typ: &'a str,
    kid: &'a str,
}

fn check_claims(c: &PassportClaims) -> Result<(), PassportError> {
    let invalid = |m: &str| Err(PassportError::InvalidClaims(m.to_owned()));
    for (name, value) in [
        ("jti", &c.jti),
        ("sub", &c.sub),
        ("iss", &c.iss),
        ("aud", &c.aud),
        ("stk.operator_id", &c.stk.operator_id),
        ("stk.agent_id", &c.stk.agent_id),
    ] {
        if value.is_empty() {
            return invalid(&format!("{name} must not be empty"));
        }
    }
    if c.sub != c.stk.agent_id {
        return invalid("sub must equal stk.agent_id");
    }
    if c.stk.delegation_depth > MAX_DELEGATION_DEPTH {
        return invalid("stk.delegation_depth exceeds the maximum");
    }
    if c.exp <= c.iat {
        return invalid("exp must be after iat");
    }
    Ok(())
}
