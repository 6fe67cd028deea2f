//! Revoked passport ids, and a verifier that consults them.

use std::collections::HashMap;

use stack_core::Timestamp;

use crate::{PassportClaims, PassportVerifier, VerifyError};

/// Revoked `jti`s, each kept until its passport's own expiry (after which the
/// token fails on `exp` anyway and the entry can be pruned).
#[derive(Debug, Default, Clone)]
pub struct RevocationSet {
    /// jti → the passport's `exp`, Unix seconds.
    entries: HashMap<String, i64>,
}

impl RevocationSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `jti` as revoked until `expires_at` (its `exp`). Inserting an
    /// id again keeps the later expiry.
    pub fn insert(&mut self, jti: String, expires_at: i64) {
        let slot = self.entries.entry(jti).or_insert(expires_at);
        *slot = (*slot).max(expires_at);
    }

    pub fn contains(&self, jti: &str) -> bool {
        self.entries.contains_key(jti)
    }

    /// Forgets ids whose passport expired before `now_secs`.
    pub fn prune(&mut self, now_secs: i64) {
        self.entries.retain(|_, exp| *exp >= now_secs);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// For embedders: offline verification plus a revocation set the embedder
/// feeds (e.g. from the server's bus or a periodic pull of revoked ids).
#[derive(Debug, Clone)]
pub struct CachingVerifier {
    verifier: PassportVerifier,
    revoked: RevocationSet,
}

impl CachingVerifier {
    pub fn new(verifier: PassportVerifier) -> Self {
        Self {
            verifier,
            revoked: RevocationSet::new(),
        }
    }

    /// Marks `jti` revoked until `expires_at` (the passport's `exp`, Unix seconds).
    pub fn revoke(&mut self, jti: String, expires_at: i64) {
        self.revoked.insert(jti, expires_at);
    }

    /// [`PassportVerifier::verify`], then [`VerifyError::Revoked`] if the
    /// verified `jti` is in the set.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<PassportClaims, VerifyError> {
        let claims = self.verifier.verify(token, now)?;
        if self.revoked.contains(&claims.jti) {
            return Err(VerifyError::Revoked);
        }
        Ok(claims)
    }

    /// Forgets revocations that can no longer matter: passports past `exp`
    /// plus the verifier's leeway.
    pub fn prune(&mut self, now: Timestamp) {
        let leeway = self.verifier.options().leeway_secs.max(0);
        self.revoked.prune(now.as_secs().saturating_sub(leeway));
    }

    pub fn verifier(&self) -> &PassportVerifier {
        &self.verifier
    }

    pub fn verifier_mut(&mut self) -> &mut PassportVerifier {
        &mut self.verifier
    }

    pub fn revocations(&self) -> &RevocationSet {
        &self.revoked
    }

    pub fn revocations_mut(&mut self) -> &mut RevocationSet {
        &mut self.revoked
    }
}
