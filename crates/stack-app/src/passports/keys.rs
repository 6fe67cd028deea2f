//! The passport signing key ring: sealed keys loaded from the store, the
//! active signer, and the verifier over every key still inside its retention
//! window. See `docs/design/keys.md`.

use std::sync::{Arc, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use stack_core::{Error, ErrorCode, Principal, Result, Timestamp};
use stack_crypto::aead::{self, DataKey};
use stack_crypto::ed25519::{self, Ed25519KeyPair};
use stack_passport::{PassportSigner, PassportVerifier, VerificationKeys, VerifyOptions};

use super::{MAX_TTL, REFRESH_WINDOW};
use crate::{App, require};

/// A signing key as stored: public half in clear, private half sealed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SigningKeyRecord {
    pub kid: String,
    /// base64url Ed25519 public key.
    pub public_key: String,
    /// base64url of the AES-256-GCM sealed PKCS#8 document.
    pub sealed_private: String,
    /// `active` or `retired`.
    pub status: String,
    /// Epoch ms.
    pub created_at: i64,
    pub retired_at: Option<i64>,
    /// Epoch seconds after which the key no longer verifies.
    pub verify_until: Option<i64>,
}

fn aad(kid: &str) -> Vec<u8> {
    format!("stack/signing-key/v1:{kid}").into_bytes()
}

struct State {
    master: Option<DataKey>,
    signer: Option<Arc<PassportSigner>>,
    verifier: Arc<PassportVerifier>,
    /// Epoch ms of the last reload, to rate-limit reloads on unknown kids.
    last_reload_ms: i64,
}

/// The keys this node signs and verifies with.
pub struct KeyRing {
    options: VerifyOptions,
    state: RwLock<State>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing").finish_non_exhaustive()
    }
}

/// Verified passports remembered per key set (by digest), so a token
/// presented again skips the parse and the Ed25519 check; expiry and the
/// revocation index are still checked on every presentation.
const VERIFIED_TOKEN_MEMO: usize = 8_192;

/// Reloads of the key table triggered by unknown kids happen at most this often.
const RELOAD_INTERVAL_MS: i64 = 5_000;

fn poisoned() -> Error {
    Error::internal("key ring lock poisoned")
}

impl KeyRing {
    pub fn new(options: VerifyOptions) -> Self {
        let verifier = Arc::new(PassportVerifier::new(
            VerificationKeys::new(),
            options.clone(),
        ));
        Self {
            options,
            state: RwLock::new(State {
                master: None,
                signer: None,
                verifier,
                last_reload_ms: 0,
            }),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.options.issuer
    }

    pub fn signer(&self) -> Result<Arc<PassportSigner>> {
        let s = self.state.read().map_err(|_| poisoned())?;
        s.signer.clone().ok_or_else(|| {
            Error::new(
                ErrorCode::Unavailable,
                "passport signing keys are not loaded",
            )
        })
    }

    pub fn verifier(&self) -> Result<Arc<PassportVerifier>> {
        Ok(self.state.read().map_err(|_| poisoned())?.verifier.clone())
    }

    /// Rebuilds signer and verifier from stored records.
    fn install(&self, records: &[SigningKeyRecord], now: Timestamp) -> Result<()> {
        let mut s = self.state.write().map_err(|_| poisoned())?;
        let master = s
            .master
            .as_ref()
            .ok_or_else(|| Error::internal("master key not set"))?;
        let now_secs = now.as_secs();
        let mut keys = VerificationKeys::new();
        let mut newest_active: Option<&SigningKeyRecord> = None;
        for r in records {
            let live = r.status == "active" || r.verify_until.is_some_and(|t| t > now_secs);
            if !live {
                continue;
            }
            let public = decode_public(&r.public_key)?;
            keys.insert(r.kid.clone(), public);
            if r.status == "active" && newest_active.is_none_or(|n| r.created_at > n.created_at) {
                newest_active = Some(r);
            }
        }
        let signer = match newest_active {
            Some(r) => {
                let sealed = URL_SAFE_NO_PAD
                    .decode(&r.sealed_private)
                    .map_err(|_| Error::internal("stored signing key is not base64url"))?;
                let pkcs8 = aead::open(master, &sealed, &aad(&r.kid)).map_err(|_| {
                    Error::internal(
                        "cannot open the stored passport signing key: is STACK_MASTER_KEY the one this database was created with?",
                    )
                })?;
                let pair = Ed25519KeyPair::from_pkcs8(pkcs8.expose())?;
                Some(Arc::new(PassportSigner::new(r.kid.clone(), pair)))
            }
            None => None,
        };
        s.signer = signer;
        // A new key set starts with an empty memo of verified tokens.
        s.verifier = Arc::new(
            PassportVerifier::new(keys, self.options.clone()).with_memo(VERIFIED_TOKEN_MEMO),
        );
        s.last_reload_ms = now.as_millis();
        Ok(())
    }

    /// The master key, for wrapping other keys (operator data keys).
    pub(crate) fn master(&self) -> Result<DataKey> {
        self.state
            .read()
            .map_err(|_| poisoned())?
            .master
            .clone()
            .ok_or_else(|| Error::new(ErrorCode::Unavailable, "the master key is not loaded"))
    }

    fn set_master(&self, master: DataKey) -> Result<()> {
        self.state.write().map_err(|_| poisoned())?.master = Some(master);
        Ok(())
    }

    fn reload_due(&self, now: Timestamp) -> bool {
        self.state
            .read()
            .is_ok_and(|s| now.as_millis() - s.last_reload_ms >= RELOAD_INTERVAL_MS)
    }

    fn seal_new(&self, app: &App, now: Timestamp) -> Result<SigningKeyRecord> {
        let s = self.state.read().map_err(|_| poisoned())?;
        let master = s
            .master
            .as_ref()
            .ok_or_else(|| Error::internal("master key not set"))?;
        let (pair, pkcs8) = Ed25519KeyPair::generate(app.rng.as_ref())?;
        let public = pair.public_key();
        let kid = ed25519::jwk_thumbprint(&public);
        let sealed = aead::seal(master, app.rng.as_ref(), pkcs8.expose(), &aad(&kid))?;
        Ok(SigningKeyRecord {
            kid,
            public_key: URL_SAFE_NO_PAD.encode(public),
            sealed_private: URL_SAFE_NO_PAD.encode(sealed),
            status: "active".into(),
            created_at: now.as_millis(),
            retired_at: None,
            verify_until: None,
        })
    }
}

fn decode_public(b64: &str) -> Result<[u8; 32]> {
    let bytes = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| Error::internal("stored public key is not base64url"))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| Error::internal("stored public key is not 32 bytes"))
}

impl App {
    /// Loads the signing keys (creating the first one on a fresh database)
    /// with `master` as the sealing key. Called once at start-up.
    pub async fn init_passport_keys(&self, master: DataKey) -> Result<()> {
        let ring = &self.passports.keys;
        ring.set_master(master)?;
        let now = self.now();
        let records = self.store.list_signing_keys().await?;
        if !records.iter().any(|r| r.status == "active") {
            let record = ring.seal_new(self, now)?;
            self.store
                .rotate_signing_key(
                    &record,
                    now.as_millis(),
                    now.as_secs() + MAX_TTL + REFRESH_WINDOW,
                )
                .await?;
            tracing::info!(kid = %record.kid, "created the first passport signing key");
        }
        let records = self.store.list_signing_keys().await?;
        ring.install(&records, now)
    }

    /// Rotates the signing key: a new key signs from now on; the old ones keep
    /// verifying until every passport they signed is past its refresh window.
    /// `principal` is `None` for the command-line tool.
    pub async fn rotate_passport_key(&self, principal: Option<&Principal>) -> Result<Value> {
        if let Some(p) = principal {
            require(p, stack_core::Permission::TeamAdmin)?;
            if !matches!(p.kind, stack_core::principal::PrincipalKind::Operator) {
                return Err(Error::forbidden(
                    "only an operator key may rotate signing keys",
                ));
            }
        }
        let ring = &self.passports.keys;
        let now = self.now();
        let record = ring.seal_new(self, now)?;
        let verify_until = now.as_secs() + MAX_TTL + REFRESH_WINDOW;
        self.store
            .rotate_signing_key(&record, now.as_millis(), verify_until)
            .await?;
        let records = self.store.list_signing_keys().await?;
        ring.install(&records, now)?;
        if let Some(p) = principal {
            let audit = self.audit(
                Self::draft(p, stack_audit::Layer::Passport, "signing_key.rotate")
                    .target("signing_key", &record.kid)
                    .details(
                        json!({ "kid": record.kid, "previous_keys_verify_until": verify_until }),
                    ),
            )?;
            self.store.append_audit(&p.operator_id, audit).await?;
        }
        tracing::info!(kid = %record.kid, "rotated the passport signing key");
        Ok(json!({ "kid": record.kid, "previous_keys_verify_until": verify_until }))
    }

    /// The JWKS document: every key that may still verify a passport.
    pub fn passport_jwks(&self) -> Result<Value> {
        Ok(self.passports.keys.verifier()?.keys().to_jwks())
    }

    /// Reloads keys from the store when a token names a kid this node does
    /// not know (another node rotated), at most every few seconds.
    pub(crate) async fn reload_keys_for_unknown_kid(&self) -> Result<bool> {
        let now = self.now();
        if !self.passports.keys.reload_due(now) {
            return Ok(false);
        }
        let records = self.store.list_signing_keys().await?;
        self.passports.keys.install(&records, now)?;
        Ok(true)
    }
}
