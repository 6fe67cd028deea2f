//! Offline verification of passports.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use stack_core::Timestamp;
use stack_crypto::ed25519;

use crate::error::clip;
use crate::strict_json::{StrictError, check_no_duplicates, parse_object};
use crate::{
    AUDIENCE, DEFAULT_ISSUER, MAX_DELEGATION_DEPTH, MAX_TOKEN_BYTES, PassportClaims, StkClaims,
    VerificationKeys, VerifyError,
};

/// The payload as it arrives: registered claims loosely typed so each gets a
/// precise error (a float `exp` is refused, not rounded), `stk` fully typed.
/// Unknown members are ignored.
#[derive(serde::Deserialize)]
struct WireClaims {
    #[serde(default)]
    iss: Option<Value>,
    #[serde(default)]
    sub: Option<Value>,
    #[serde(default)]
    aud: Option<Value>,
    #[serde(default)]
    exp: Option<Value>,
    #[serde(default)]
    iat: Option<Value>,
    #[serde(default)]
    nbf: Option<Value>,
    #[serde(default)]
    jti: Option<Value>,
    #[serde(default)]
    stk: Option<StkClaims>,
}

/// What a passport is checked against.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub issuer: String,
    pub audience: String,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: i64,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            issuer: DEFAULT_ISSUER.to_owned(),
            audience: AUDIENCE.to_owned(),
            leeway_secs: 30,
        }
    }
}

/// Verifies passports against a key set, with `now` passed in.
#[derive(Debug, Clone)]
pub struct PassportVerifier {
    keys: VerificationKeys,
    options: VerifyOptions,
    /// Tokens already verified against `keys`, when enabled
    /// ([`PassportVerifier::with_memo`]).
    memo: Option<Arc<Memo>>,
}

/// The claims of tokens that passed every check but the clock, by the
/// SHA-256 of the whole token (the token itself is not kept). A token's
/// signature and claims cannot change, so a later presentation of the same
/// bytes needs only the time checks again; the memo belongs to one key set
/// and is emptied with it. Bounded: when full, entries past their `exp`
/// are dropped first, then everything.
#[derive(Debug)]
struct Memo {
    capacity: usize,
    tokens: Mutex<HashMap<[u8; 32], Arc<PassportClaims>>>,
}

impl Memo {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, digest: &[u8; 32]) -> Option<Arc<PassportClaims>> {
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(digest)
            .cloned()
    }

    fn put(&self, digest: [u8; 32], claims: Arc<PassportClaims>, now_secs: i64) {
        if self.capacity == 0 {
            return;
        }
        let mut tokens = self
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if tokens.len() >= self.capacity {
            tokens.retain(|_, c| c.exp > now_secs);
            if tokens.len() >= self.capacity {
                tokens.clear();
            }
        }
        tokens.insert(digest, claims);
    }

    fn len(&self) -> usize {
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

/// The parts of a token, decoded but not verified.
struct Parts<'a> {
    signing_input: &'a str,
    header: Map<String, Value>,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

fn split(token: &str) -> Result<Parts<'_>, VerifyError> {
    use VerifyError::Malformed;
    if token.len() > MAX_TOKEN_BYTES {
        return Err(VerifyError::TooLarge);
    }
    let mut it = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(Malformed("a passport has three dot-separated parts"));
    };
    let signing_input = token
        .get(..h.len() + 1 + p.len())
        .ok_or(Malformed("a passport has three dot-separated parts"))?;
    let header = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| Malformed("the header is not base64url"))?;
    let payload = URL_SAFE_NO_PAD
        .decode(p)
        .map_err(|_| Malformed("the payload is not base64url"))?;
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| Malformed("the signature is not base64url"))?;
    let header = parse_object(&header).map_err(|e| match e {
        StrictError::DuplicateKey => Malformed("duplicate key in the header"),
        StrictError::NotJson | StrictError::NotObject => {
            Malformed("the header is not a JSON object")
        }
    })?;
    Ok(Parts {
        signing_input,
        header,
        payload,
        signature,
    })
}

impl PassportVerifier {
    pub fn new(keys: VerificationKeys, options: VerifyOptions) -> Self {
        stack_crypto::jwt::install_ring_provider();
        Self {
            keys,
            options,
            memo: None,
        }
    }

    /// Remembers up to `capacity` verified tokens (by digest) so that the
    /// same token presented again is not parsed and signature-checked
    /// again: only its time claims are (`exp`, `nbf`, `iat` against the
    /// `now` of that call). Revocation is not the verifier's business and
    /// stays the caller's check on every presentation. Clones share the
    /// memo; [`PassportVerifier::replace_keys`] empties it.
    #[must_use]
    pub fn with_memo(mut self, capacity: usize) -> Self {
        self.memo = Some(Arc::new(Memo::new(capacity)));
        self
    }

    /// How many verified tokens the memo holds (0 without one).
    pub fn memo_len(&self) -> usize {
        self.memo.as_ref().map_or(0, |m| m.len())
    }

    pub fn keys(&self) -> &VerificationKeys {
        &self.keys
    }

    /// Swaps the key set (after a JWKS refresh or a rotation).
    pub fn replace_keys(&mut self, keys: VerificationKeys) {
        self.keys = keys;
        if let Some(memo) = &mut self.memo {
            *memo = Arc::new(Memo::new(memo.capacity));
        }
    }

    pub fn options(&self) -> &VerifyOptions {
        &self.options
    }

    /// Checks, in this order: size ≤ [`MAX_TOKEN_BYTES`]; three base64url
    /// parts; header a JSON object without duplicate keys; `alg` exactly
    /// `EdDSA` (`none`, `HS256` with the public key as secret etc. refused);
    /// no `crit`; `typ` absent or `JWT`; `kid` present and known; the Ed25519
    /// signature; payload a JSON object without duplicate keys; `exp`/`iat`
    /// JSON integers, `nbf` an integer if present; `jti`/`sub` non-empty
    /// strings; `iss`; `aud` (a string, or an array containing it); the typed
    /// claims; `stk.operator_id`/`stk.agent_id` non-empty, `sub` =
    /// `stk.agent_id`, depth ≤ [`MAX_DELEGATION_DEPTH`]; then time: expired
    /// when `now ≥ exp + leeway`, not yet valid when `now + leeway < nbf`,
    /// issued in the future when `iat > now + leeway`.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<PassportClaims, VerifyError> {
        self.verify_with(token, now, None)
    }

    /// Same but an expired token is accepted if `now ≤ exp + grace_secs` (for
    /// refresh within 24 h); everything else still checked.
    pub fn verify_allowing_expired(
        &self,
        token: &str,
        now: Timestamp,
        grace_secs: i64,
    ) -> Result<PassportClaims, VerifyError> {
        self.verify_with(token, now, Some(grace_secs))
    }

    fn verify_with(
        &self,
        token: &str,
        now: Timestamp,
        grace_secs: Option<i64>,
    ) -> Result<PassportClaims, VerifyError> {
        let Some(memo) = &self.memo else {
            return self.verify_fully(token, now, grace_secs);
        };
        if token.len() > MAX_TOKEN_BYTES {
            return Err(VerifyError::TooLarge);
        }
        let digest = stack_crypto::sha256(token.as_bytes());
        if let Some(claims) = memo.get(&digest) {
            self.check_time(&claims, now, grace_secs)?;
            return Ok(PassportClaims::clone(&claims));
        }
        let claims = self.verify_fully(token, now, grace_secs)?;
        memo.put(digest, Arc::new(claims.clone()), now.as_secs());
        Ok(claims)
    }

    /// Every check, from the token's bytes.
    fn verify_fully(
        &self,
        token: &str,
        now: Timestamp,
        grace_secs: Option<i64>,
    ) -> Result<PassportClaims, VerifyError> {
        let parts = split(token)?;
        let public_key = self.check_header(&parts.header)?;
        if !ed25519::verify(public_key, parts.signing_input.as_bytes(), &parts.signature) {
            return Err(VerifyError::BadSignature);
        }
        check_no_duplicates(&parts.payload).map_err(|e| match e {
            StrictError::DuplicateKey => VerifyError::Malformed("duplicate key in the payload"),
            StrictError::NotJson | StrictError::NotObject => {
                VerifyError::Malformed("the payload is not a JSON object")
            }
        })?;
        // Valid JSON (checked above) is an object iff it opens with `{`; the
        // derived struct parser would otherwise also take an array.
        if !parts.payload.trim_ascii_start().starts_with(b"{") {
            return Err(VerifyError::Malformed("the payload is not a JSON object"));
        }
        let payload: WireClaims = serde_json::from_slice(&parts.payload)
            .map_err(|e| VerifyError::InvalidClaims(clip(&e.to_string())))?;
        let claims = self.check_claims(payload)?;
        self.check_time(&claims, now, grace_secs)?;
        Ok(claims)
    }

    fn check_header(&self, header: &Map<String, Value>) -> Result<&[u8; 32], VerifyError> {
        use VerifyError::Malformed;
        let alg = match header.get("alg") {
            Some(Value::String(alg)) => alg,
            _ => return Err(Malformed("the header alg is missing or not a string")),
        };
        if alg != "EdDSA" {
            return Err(VerifyError::UnsupportedAlgorithm(clip(alg)));
        }
        if header.contains_key("crit") {
            return Err(Malformed("critical header parameters are not supported"));
        }
        match header.get("typ") {
            None => {}
            Some(Value::String(t)) if t.eq_ignore_ascii_case("JWT") => {}
            Some(_) => return Err(Malformed("the header typ is not JWT")),
        }
        let kid = match header.get("kid") {
            None | Some(Value::Null) => return Err(VerifyError::MissingKid),
            Some(Value::String(kid)) if kid.is_empty() => return Err(VerifyError::MissingKid),
            Some(Value::String(kid)) => kid,
            Some(_) => return Err(Malformed("the header kid is not a string")),
        };
        self.keys
            .get(kid)
            .ok_or_else(|| VerifyError::UnknownKey(clip(kid)))
    }

    fn check_claims(&self, payload: WireClaims) -> Result<PassportClaims, VerifyError> {
        let invalid = |m: &str| VerifyError::InvalidClaims(m.to_owned());
        let integer = |name: &str, v: Option<Value>| match v {
            Some(Value::Number(n)) => n
                .as_i64()
                .ok_or_else(|| invalid(&format!("{name} must be an integer"))),
            Some(_) => Err(invalid(&format!("{name} must be an integer"))),
            None => Err(invalid(&format!("{name} is required"))),
        };
        let non_empty = |name: &str, v: Option<Value>| match v {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            _ => Err(invalid(&format!("{name} must be a non-empty string"))),
        };
        let exp = integer("exp", payload.exp)?;
        let iat = integer("iat", payload.iat)?;
        let nbf = match payload.nbf {
            None => None,
            v => Some(integer("nbf", v)?),
        };
        let jti = non_empty("jti", payload.jti)?;
        let sub = non_empty("sub", payload.sub)?;
        let iss = non_empty("iss", payload.iss)?;
        if iss != self.options.issuer {
            return Err(VerifyError::WrongIssuer);
        }
        let audience_ok = match &payload.aud {
            Some(Value::String(aud)) => *aud == self.options.audience,
            Some(Value::Array(auds)) => auds
                .iter()
                .any(|a| a.as_str() == Some(self.options.audience.as_str())),
            _ => return Err(invalid("aud must be a string or an array of strings")),
        };
        if !audience_ok {
            return Err(VerifyError::WrongAudience);
        }
        let stk = payload.stk.ok_or_else(|| invalid("stk is required"))?;
        if stk.operator_id.is_empty() {
            return Err(invalid("stk.operator_id must not be empty"));
        }
        if stk.agent_id.is_empty() {
            return Err(invalid("stk.agent_id must not be empty"));
        }
        if sub != stk.agent_id {
            return Err(invalid("sub must equal stk.agent_id"));
        }
        if stk.delegation_depth > MAX_DELEGATION_DEPTH {
            return Err(invalid("stk.delegation_depth exceeds the maximum"));
        }
        Ok(PassportClaims {
            iss,
            sub,
            aud: self.options.audience.clone(),
            exp,
            iat,
            nbf,
            jti,
            stk,
        })
    }

    fn check_time(
        &self,
        claims: &PassportClaims,
        now: Timestamp,
        grace_secs: Option<i64>,
    ) -> Result<(), VerifyError> {
        let now = now.as_secs();
        let leeway = self.options.leeway_secs.max(0);
        let expired = match grace_secs {
            None => now >= claims.exp.saturating_add(leeway),
            Some(grace) => now > claims.exp.saturating_add(grace.max(leeway)),
        };
        if expired {
            return Err(VerifyError::Expired { exp: claims.exp });
        }
        if let Some(nbf) = claims.nbf
            && now.saturating_add(leeway) < nbf
        {
            return Err(VerifyError::NotYetValid { nbf });
        }
        if claims.iat > now.saturating_add(leeway) {
            return Err(VerifyError::IssuedInFuture);
        }
        Ok(())
    }
}

/// A token's header and claims, decoded **without any verification**.
#[derive(Debug, Clone, PartialEq)]
pub struct UnverifiedPassport {
    pub alg: Option<String>,
    pub kid: Option<String>,
    pub claims: Value,
}

/// Decodes a token's header and payload for diagnostics (logs, the verify
/// report of a token that failed). Never trust the result: nothing here is
/// checked but the shape.
pub fn decode_unverified(token: &str) -> Result<UnverifiedPassport, VerifyError> {
    let parts = split(token)?;
    let text = |name: &str| parts.header.get(name).and_then(Value::as_str).map(clip);
    let claims = parse_object(&parts.payload)
        .map_err(|_| VerifyError::Malformed("the payload is not a JSON object"))?;
    Ok(UnverifiedPassport {
        alg: text("alg"),
        kid: text("kid"),
        claims: Value::Object(claims),
    })
}
