//! Turning a bearer credential into a [`Principal`].

use stack_core::principal::PrincipalKind;
use stack_core::{Error, ErrorCode, Principal, Result};
use stack_crypto::{api_key_digest, constant_time_eq};

use crate::App;
use crate::oauth::Audience;
use crate::operators::ApiKeyRecord;

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

    async fn authenticate_api_key(&self, key: &str) -> Result<Principal> {
        let record = self.api_key_record(key).await?;
        let kind = match (record.kind.as_str(), record.member_id, record.role) {
            ("operator", _, _) => PrincipalKind::Operator,
            ("member", Some(member_id), Some(role)) => PrincipalKind::Member { member_id, role },
            _ => return Err(Error::internal("API key record has an unknown kind")),
        };
        Ok(Principal {
            operator_id: record.operator_id,
            kind,
            scopes: None,
        })
    }

    /// The live record of an API key (operator or member).
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
