//! Turning a bearer credential into a [`Principal`].
//!
//! API keys and OAuth access tokens are looked up by digest in the database.
//! A verified credential is then remembered for a few seconds in a small
//! per-node [`CredentialCache`] (digest → principal), so that a client
//! sending many requests costs one lookup per [`CREDENTIAL_CACHE_TTL_MS`]
//! instead of one (or three, for OAuth) per request.
//!
//! Why this stays correct across nodes: an entry lives at most
//! [`CREDENTIAL_CACHE_TTL_MS`] (and never past the token's own expiry), and
//! only credentials that were verified against the database enter it; a
//! failure is never cached. On the node that revokes something the entry is
//! dropped at once ([`App::forget_api_key`], and the OAuth revocation paths);
//! every other node stops accepting the revoked credential within the TTL.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use stack_core::principal::PrincipalKind;
use stack_core::{Error, ErrorCode, Principal, Result};
use stack_crypto::{api_key_digest, constant_time_eq};

use crate::App;
use crate::oauth::Audience;
use crate::operators::ApiKeyRecord;

/// How long a verified credential is trusted without asking the database
/// again: the longest a key or token revoked on another node keeps working
/// here.
pub const CREDENTIAL_CACHE_TTL_MS: i64 = 5_000;

/// Most credentials remembered per node. Only verified credentials enter, so
/// filling it takes that many valid keys or tokens; when full, expired
/// entries go first, then everything.
pub const CREDENTIAL_CACHE_CAPACITY: usize = 10_000;

/// A verified credential.
#[derive(Debug, Clone)]
struct CachedCredential {
    /// The digest the entry is filed under (compared again in constant time).
    digest: String,
    principal: Principal,
    /// The API key behind it: the key itself, or the key that approved an
    /// OAuth grant (the grant dies with the key).
    key_id: String,
    /// The OAuth grant of an access token.
    grant_id: Option<String>,
    /// The resource an OAuth access token is bound to; `None` for API keys,
    /// which are valid on every resource.
    audience: Option<Audience>,
    /// Epoch ms after which the database is asked again.
    valid_until: i64,
}

/// Digest → verified credential, bounded in size and age. See the module
/// documentation.
#[derive(Debug, Default)]
pub struct CredentialCache {
    entries: RwLock<HashMap<String, CachedCredential>>,
}

impl CredentialCache {
    #[cfg(test)]
    fn get(&self, digest: &str, now: i64) -> Option<CachedCredential> {
        self.with(digest, now, Clone::clone)
    }

    /// Runs `f` on the live entry filed under `digest`, under the read lock.
    fn with<T>(&self, digest: &str, now: i64, f: impl FnOnce(&CachedCredential) -> T) -> Option<T> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(digest)
            .filter(|c| c.valid_until > now)
            .filter(|c| constant_time_eq(c.digest.as_bytes(), digest.as_bytes()))
            .map(f)
    }

    fn put(&self, entry: CachedCredential, now: i64) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= CREDENTIAL_CACHE_CAPACITY && !entries.contains_key(&entry.digest) {
            entries.retain(|_, c| c.valid_until > now);
            if entries.len() >= CREDENTIAL_CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(entry.digest.clone(), entry);
    }

    fn forget(&self, keep: impl Fn(&CachedCredential) -> bool) {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, c| keep(c));
    }

    /// Number of remembered credentials (tests, metrics).
    pub fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl App {
    /// Authenticates an `Authorization: Bearer` value. API keys (`sk_live_…`)
    /// are looked up by digest and compared in constant time. Other token
    /// kinds (passports, OAuth access tokens) arrive with their issues.
    pub async fn authenticate_bearer(&self, token: &str) -> Result<Principal> {
        self.authenticate_bearer_for(token, Audience::Rest).await
    }

    /// [`App::authenticate_bearer`] for a given protected resource: OAuth
    /// access tokens are accepted only by the resource they were issued for
    /// (RFC 8707); other credentials are valid on every resource.
    pub async fn authenticate_bearer_for(
        &self,
        token: &str,
        audience: Audience,
    ) -> Result<Principal> {
        let token = token.trim();
        if token.is_empty() {
            return Err(Error::unauthorized("missing bearer token"));
        }
        if token.starts_with("sk_live_") {
            return self.authenticate_api_key(token).await;
        }
        if token.starts_with(crate::oauth::ACCESS_TOKEN_PREFIX) {
            return self.authenticate_oauth_token(token, audience).await;
        }
        if token.starts_with("eyJ") {
            return self.authenticate_passport(token).await;
        }
        Err(Error::new(
            ErrorCode::Unauthorized,
            "unrecognised bearer token",
        ))
    }

    /// Drops every remembered credential that rests on the API key `key_id`
    /// (the key itself and OAuth tokens it approved). Whoever revokes or
    /// rotates a key calls this after the change is committed; other nodes
    /// follow within [`CREDENTIAL_CACHE_TTL_MS`].
    pub fn forget_api_key(&self, key_id: &str) {
        self.credentials.forget(|c| c.key_id != key_id);
    }

    /// Drops the remembered access tokens of an OAuth grant.
    pub(crate) fn forget_oauth_grant(&self, grant_id: &str) {
        self.credentials
            .forget(|c| c.grant_id.as_deref() != Some(grant_id));
    }

    /// Drops one remembered credential by its digest.
    pub(crate) fn forget_credential(&self, digest: &str) {
        self.credentials.forget(|c| c.digest != digest);
    }

    /// The per-node cache of verified credentials.
    pub fn credential_cache(&self) -> &CredentialCache {
        &self.credentials
    }

    /// A principal remembered for `digest`, valid on `audience`.
    pub(crate) fn cached_principal(
        &self,
        digest: &str,
        audience: Audience,
    ) -> Option<Result<Principal>> {
        self.credentials
            .with(digest, self.now().as_millis(), |hit| match hit.audience {
                Some(bound) if bound != audience => Err(Error::unauthorized(
                    "this OAuth access token was issued for another resource",
                )),
                _ => Ok(hit.principal.clone()),
            })
    }

    /// Remembers a credential just verified against the database, until
    /// `expires_at` (epoch ms) at the latest.
    pub(crate) fn remember_credential(
        &self,
        digest: String,
        principal: &Principal,
        key_id: &str,
        oauth: Option<(&str, Audience)>,
        expires_at: Option<i64>,
    ) {
        let now = self.now().as_millis();
        let valid_until = expires_at.map_or(now + CREDENTIAL_CACHE_TTL_MS, |e| {
            e.min(now + CREDENTIAL_CACHE_TTL_MS)
        });
        self.credentials.put(
            CachedCredential {
                digest,
                principal: principal.clone(),
                key_id: key_id.to_owned(),
                grant_id: oauth.map(|(g, _)| g.to_owned()),
                audience: oauth.map(|(_, a)| a),
                valid_until,
            },
            now,
        );
    }

    async fn authenticate_api_key(&self, key: &str) -> Result<Principal> {
        if key.len() > 128 {
            return Err(Error::new(ErrorCode::InvalidApiKey, "invalid API key"));
        }
        let digest = api_key_digest(key);
        if let Some(hit) = self.cached_principal(&digest, Audience::Rest) {
            return hit;
        }
        let record = self.api_key_record(key).await?;
        let kind = match (record.kind.as_str(), record.member_id, record.role) {
            ("operator", _, _) => PrincipalKind::Operator,
            ("member", Some(member_id), Some(role)) => PrincipalKind::Member { member_id, role },
            _ => return Err(Error::internal("API key record has an unknown kind")),
        };
        let principal = Principal {
            operator_id: record.operator_id,
            kind,
            scopes: None,
        };
        self.remember_credential(digest, &principal, &record.id, None, None);
        Ok(principal)
    }

    /// The live record of an API key (operator or member), from the
    /// database (never from the cache: signing in to the OAuth consent page
    /// checks the key afresh).
    pub(crate) async fn api_key_record(&self, key: &str) -> Result<ApiKeyRecord> {
        // Keys are 43 base64url characters after the prefix; anything far
        // longer is not ours and is not hashed.
        if key.len() > 128 {
            return Err(Error::new(ErrorCode::InvalidApiKey, "invalid API key"));
        }
        let digest = api_key_digest(key);
        let record = self
            .store
            .find_api_key(&digest)
            .await?
            .filter(|r| r.revoked_at.is_none())
            .filter(|r| constant_time_eq(r.digest.as_bytes(), digest.as_bytes()))
            .ok_or_else(|| Error::new(ErrorCode::InvalidApiKey, "invalid API key"))?;
        if record.kind == "member" && (record.member_id.is_none() || record.role.is_none()) {
            return Err(Error::internal("API key record has an unknown kind"));
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(digest: &str, key: &str, grant: Option<&str>, valid_until: i64) -> CachedCredential {
        CachedCredential {
            digest: digest.into(),
            principal: Principal::operator("op_1"),
            key_id: key.into(),
            grant_id: grant.map(Into::into),
            audience: grant.map(|_| Audience::Mcp),
            valid_until,
        }
    }

    #[test]
    fn entries_expire_and_are_forgotten_by_key_and_grant() {
        let cache = CredentialCache::default();
        cache.put(entry("d1", "key_a", None, 1_000), 0);
        cache.put(entry("d2", "key_a", Some("g1"), 1_000), 0);
        cache.put(entry("d3", "key_b", Some("g2"), 1_000), 0);
        assert!(cache.get("d1", 999).is_some());
        assert!(cache.get("d1", 1_000).is_none(), "valid_until is exclusive");
        assert!(cache.get("nope", 0).is_none());
        cache.forget(|c| c.grant_id.as_deref() != Some("g2"));
        assert!(cache.get("d3", 0).is_none());
        cache.forget(|c| c.key_id != "key_a");
        assert!(cache.is_empty());
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = CredentialCache::default();
        for i in 0..CREDENTIAL_CACHE_CAPACITY {
            cache.put(entry(&format!("d{i}"), "k", None, 10), 0);
        }
        assert_eq!(cache.len(), CREDENTIAL_CACHE_CAPACITY);
        // Full of live entries: the newcomer still gets in, the size holds.
        cache.put(entry("fresh", "k", None, 100), 5);
        assert_eq!(cache.len(), 1);
        assert!(cache.get("fresh", 5).is_some());
        // Full again, mostly of expired entries: only those go.
        for i in 1..CREDENTIAL_CACHE_CAPACITY {
            cache.put(entry(&format!("e{i}"), "k", None, 10), 5);
        }
        assert_eq!(cache.len(), CREDENTIAL_CACHE_CAPACITY);
        cache.put(entry("later", "k", None, 1_000), 50);
        assert_eq!(cache.len(), 2);
        assert!(cache.get("fresh", 50).is_some() && cache.get("later", 50).is_some());
    }
}
