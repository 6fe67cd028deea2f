//! The set of public keys passports are verified against, and its JWKS form
//! (rest-contract §3: `GET /v1/.well-known/jwks.json`).

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::PassportError;

/// Ed25519 public keys by `kid`. Retiring a key is [`VerificationKeys::remove`]:
/// tokens signed with it then fail with `UnknownKey`.
#[derive(Clone, Default)]
pub struct VerificationKeys {
    keys: BTreeMap<String, [u8; 32]>,
}

impl std::fmt::Debug for VerificationKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationKeys")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl VerificationKeys {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the key for `kid`.
    pub fn insert(&mut self, kid: String, public_key: [u8; 32]) {
        self.keys.insert(kid, public_key);
    }

    pub fn remove(&mut self, kid: &str) {
        self.keys.remove(kid);
    }

    pub fn get(&self, kid: &str) -> Option<&[u8; 32]> {
        self.keys.get(kid)
    }

    /// The kids, sorted.
    pub fn kids(&self) -> Vec<String> {
        self.keys.keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Reads a JWKS `{"keys":[…]}`. Entries without a non-empty `kid`, with a
    /// `use` other than `sig`, an `alg` other than `EdDSA`, a key type other
    /// than OKP/Ed25519, or an `x` that is not 32 bytes of base64url are
    /// ignored (as PyJWKClient does); if two entries share a kid, the first
    /// wins. Fails when the document has no `keys` array or no key is left.
    pub fn from_jwks(doc: &Value) -> Result<Self, PassportError> {
        let entries =
            doc.get("keys")
                .and_then(Value::as_array)
                .ok_or(PassportError::InvalidJwks(
                    "expected an object with a keys array",
                ))?;
        let mut out = Self::new();
        for entry in entries {
            if let Some((kid, key)) = usable_entry(entry) {
                out.keys.entry(kid.to_owned()).or_insert(key);
            }
        }
        if out.is_empty() {
            return Err(PassportError::NoUsableKeys);
        }
        Ok(out)
    }

    /// The JWKS document, keys sorted by kid:
    /// `{"keys":[{"kty":"OKP","crv":"Ed25519","x":…,"kid":…,"use":"sig","alg":"EdDSA"}]}`.
    pub fn to_jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .keys
            .iter()
            .map(|(kid, pk)| {
                json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(pk),
                    "kid": kid,
                    "use": "sig",
                    "alg": "EdDSA",
                })
            })
            .collect();
        json!({ "keys": keys })
    }
}

fn usable_entry(entry: &Value) -> Option<(&str, [u8; 32])> {
    let str_field = |name: &str| entry.get(name).and_then(Value::as_str);
    let kid = str_field("kid").filter(|k| !k.is_empty())?;
    let optional_is = |name: &str, want: &str| match entry.get(name) {
        None | Some(Value::Null) => true,
        Some(v) => v.as_str() == Some(want),
    };
    if !optional_is("use", "sig") || !optional_is("alg", "EdDSA") {
        return None;
    }
    if str_field("kty") != Some("OKP") || str_field("crv") != Some("Ed25519") {
        return None;
    }
    let x = URL_SAFE_NO_PAD.decode(str_field("x")?).ok()?;
    let key: [u8; 32] = x.try_into().ok()?;
    Some((kid, key))
}
