//! OAuth 2.1 authorization server for MCP clients (issue 5): dynamic client
//! registration (RFC 7591), authorization codes with PKCE S256 (RFC 7636),
//! resource indicators (RFC 8707), rotating refresh tokens, revocation
//! (RFC 7009) and the scope ceiling an access token puts on its holder.
//!
//! What it does: decides every step of the flow and hands the store what to
//! keep. Codes, access tokens, refresh tokens, the browser binding and the
//! CSRF tokens of the login and consent forms are random 256-bit values that
//! exist in clear only in the response that carries them; the store keeps
//! domain-separated SHA-256 digests, looked up by index and compared in
//! constant time. An access token resolves to the [`Principal`] of the
//! operator or member who approved it, narrowed to the granted scopes
//! (`Principal::scopes`), and is accepted only by the resource it was issued
//! for.
//!
//! How the user signs in: STACK has no passwords and no dashboard session in
//! this server, so the login page asks for an operator or team-member API key
//! (`sk_live_…`). Possessing the key is exactly the right the token will be
//! capped by; the key travels only in the form body and is never stored or
//! logged.
//!
//! Clients identify themselves either by dynamic registration or, when the
//! `client_id` is an `https` URL, by the Client ID Metadata Document found
//! there ([`cimd`]): fetched through the proxy's SSRF-guarded egress client,
//! validated, cached per node, never stored.
//!
//! What it does not do: no HTML and no HTTP (that is `stack-http::oauth`),
//! no client secrets (every client is public).

mod cimd;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::json;
use stack_audit::{AuditDraft, Layer};
use stack_core::principal::PrincipalKind;
use stack_core::{Error, ErrorCode, Permission, Principal, Result, Role, Timestamp};
use stack_crypto::{constant_time_eq, random_token, sha256, sha256_hex};

use crate::{App, NewAudit};

pub use cimd::{
    CACHE_CAPACITY as CLIENT_METADATA_CACHE_CAPACITY,
    FETCH_TIMEOUT_SECONDS as CLIENT_METADATA_FETCH_TIMEOUT_SECONDS,
    MAX_DOCUMENT_BYTES as CLIENT_METADATA_MAX_BYTES, OAuthRuntime, client_id_host,
    is_metadata_client_id,
};

/// Prefix of STACK-issued OAuth access tokens.
pub const ACCESS_TOKEN_PREFIX: &str = "sat_";
/// Prefix of refresh tokens.
pub const REFRESH_TOKEN_PREFIX: &str = "srt_";
/// Prefix of authorization codes.
pub const CODE_PREFIX: &str = "sac_";
/// Prefix of client ids issued by dynamic registration.
pub const CLIENT_ID_PREFIX: &str = "mcpc_";

/// Access tokens live one hour.
pub const ACCESS_TOKEN_TTL_SECONDS: i64 = 3600;
/// Refresh tokens live 30 days; each use replaces the token.
pub const REFRESH_TOKEN_TTL_SECONDS: i64 = 30 * 24 * 3600;
/// Authorization codes live 60 seconds and are single-use.
pub const CODE_TTL_SECONDS: i64 = 60;
/// An authorization request (login, then consent) must finish in 10 minutes.
pub const REQUEST_TTL_SECONDS: i64 = 600;
/// A registered client that never completed a token exchange is forgotten
/// after 24 hours.
pub const UNUSED_CLIENT_TTL_SECONDS: i64 = 24 * 3600;

const MAX_REDIRECT_URIS: usize = 10;
const MAX_URI_LEN: usize = 2000;
const MAX_STATE_LEN: usize = 1024;
const MAX_CLIENT_NAME: usize = 200;
/// Longer than any credential we issue; longer input is not hashed.
const MAX_TOKEN_LEN: usize = 256;

/// What the authorization server needs to know about where it runs.
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    /// The public base URL (`public_url`), without a trailing slash: the
    /// issuer, and the prefix of every endpoint and resource.
    pub issuer: String,
    /// Dynamic registrations accepted per source address per hour.
    pub registrations_per_hour: u64,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        Self {
            issuer: "http://127.0.0.1:8080".to_owned(),
            registrations_per_hour: 20,
        }
    }
}

/// The protected resources this server hosts. A token is bound to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// The REST API (`<public_url>`, routes under `/v1`).
    Rest,
    /// The MCP endpoint (`<public_url>/mcp`).
    Mcp,
}

/// One OAuth scope and what it grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScopeInfo {
    pub name: &'static str,
    pub description: &'static str,
    pub permissions: &'static [Permission],
}

/// Every scope, in display order. A token's scopes are a ceiling over the
/// approving operator's or member's own rights, never an extension of them.
pub const SCOPES: &[ScopeInfo] = &[
    ScopeInfo {
        name: "agents:read",
        description: "Read agents and their permissions",
        permissions: &[Permission::AgentsRead],
    },
    ScopeInfo {
        name: "agents:write",
        description: "Register, update and delete agents, manage their allowed skills",
        permissions: &[Permission::AgentsWrite],
    },
    ScopeInfo {
        name: "passports:read",
        description: "Read and verify passports, reports and reviews",
        permissions: &[Permission::PassportsRead],
    },
    ScopeInfo {
        name: "passports:write",
        description: "Issue, refresh and revoke passports; checkpoints, check-outs and review decisions",
        permissions: &[Permission::PassportsWrite, Permission::ReportActivity],
    },
    ScopeInfo {
        name: "services:read",
        description: "List services, connections and grants",
        permissions: &[Permission::ServicesRead],
    },
    ScopeInfo {
        name: "services:write",
        description: "Grant and revoke agents' access to services, configure connections",
        permissions: &[Permission::ServicesWrite],
    },
    ScopeInfo {
        name: "services:connect",
        description: "Connect new services",
        permissions: &[Permission::ServicesConnect],
    },
    ScopeInfo {
        name: "credentials:read",
        description: "Retrieve decrypted credentials of connected services",
        permissions: &[Permission::CredentialsRead],
    },
    ScopeInfo {
        name: "proxy:read",
        description: "Read proxy and scan usage",
        permissions: &[Permission::ProxyRead],
    },
    ScopeInfo {
        name: "proxy:write",
        description: "Call services through the credential proxy and scan content",
        permissions: &[Permission::Proxy, Permission::ScanUse],
    },
    ScopeInfo {
        name: "audit:read",
        description: "Read, export and verify the audit chain",
        permissions: &[Permission::AuditRead],
    },
    ScopeInfo {
        name: "identity:read",
        description: "Read identity settings and trust levels",
        permissions: &[Permission::IdentityRead],
    },
    ScopeInfo {
        name: "identity:write",
        description: "Change identity settings",
        permissions: &[Permission::IdentityWrite],
    },
    ScopeInfo {
        name: "admin",
        description: "Manage team members and security events (operator and admin members only)",
        permissions: &[Permission::TeamAdmin, Permission::SecurityEvents],
    },
];

/// The scopes granted when a client asks for none: the set the `getstack`
/// SDK requests.
pub const DEFAULT_SCOPES: &[&str] = &[
    "passports:read",
    "passports:write",
    "agents:read",
    "agents:write",
    "services:read",
    "services:connect",
    "credentials:read",
    "proxy:read",
    "proxy:write",
    "audit:read",
];

/// The scope that covers `permission`, for `WWW-Authenticate` and docs.
pub fn scope_for(permission: Permission) -> Option<&'static str> {
    SCOPES
        .iter()
        .find(|s| s.permissions.contains(&permission))
        .map(|s| s.name)
}

/// Parses a space-separated scope string: every name must be known;
/// duplicates are dropped; order follows [`SCOPES`].
pub fn parse_scopes(raw: &str) -> std::result::Result<Vec<&'static ScopeInfo>, String> {
    let mut out: Vec<&'static ScopeInfo> = Vec::new();
    for name in raw.split(' ').filter(|s| !s.is_empty()) {
        let info = SCOPES
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| format!("unknown scope {}", shorten(name, 40)))?;
        if !out.iter().any(|s| s.name == info.name) {
            out.push(info);
        }
    }
    out.sort_by_key(|s| SCOPES.iter().position(|x| x.name == s.name));
    Ok(out)
}

fn scope_string(scopes: &[&ScopeInfo]) -> String {
    scopes.iter().map(|s| s.name).collect::<Vec<_>>().join(" ")
}

fn permissions_of(scope: &str) -> Vec<Permission> {
    parse_scopes(scope)
        .unwrap_or_default()
        .iter()
        .flat_map(|s| s.permissions.iter().copied())
        .collect()
}

fn shorten(s: &str, n: usize) -> String {
    let cut: String = s.chars().take(n).collect();
    if cut.len() < s.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

// ------------------------------------------------------------------ errors

/// The error codes of RFC 6749 §4.1.2.1/§5.2, RFC 7591 §3.2.2, RFC 8707 and
/// RFC 6750, plus rate limiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedResponseType,
    InvalidScope,
    InvalidTarget,
    AccessDenied,
    InvalidRedirectUri,
    InvalidClientMetadata,
    TooManyRequests,
    TemporarilyUnavailable,
    ServerError,
}

impl OAuthErrorCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidTarget => "invalid_target",
            Self::AccessDenied => "access_denied",
            Self::InvalidRedirectUri => "invalid_redirect_uri",
            Self::InvalidClientMetadata => "invalid_client_metadata",
            Self::TooManyRequests => "too_many_requests",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::ServerError => "server_error",
        }
    }
}

/// An OAuth protocol error: a code from the RFCs and a description for
/// humans. Never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub code: OAuthErrorCode,
    pub description: String,
}

impl OAuthError {
    pub fn new(code: OAuthErrorCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
        }
    }

    fn request(description: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::InvalidRequest, description)
    }

    fn grant(description: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::InvalidGrant, description)
    }
}

impl From<Error> for OAuthError {
    fn from(e: Error) -> Self {
        match e.code {
            ErrorCode::Internal => {
                tracing::error!(message = %e.message, "internal error in the OAuth server");
                Self::new(OAuthErrorCode::ServerError, "internal error")
            }
            ErrorCode::Unavailable => Self::new(OAuthErrorCode::TemporarilyUnavailable, e.message),
            _ => Self::request(e.message),
        }
    }
}

pub type OAuthResult<T> = std::result::Result<T, OAuthError>;

/// How a step of the browser flow fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeFailure {
    /// The client or its redirect URI cannot be trusted (or the form is
    /// stale or forged): show the error to the user, never redirect.
    Show(OAuthError),
    /// Send the user agent back to the client with this URL (the error,
    /// `state` and `iss` in its query).
    Redirect(String),
    /// The API key was not accepted: show the login form again.
    LoginAgain(Box<LoginStep>, String),
}

impl From<Error> for AuthorizeFailure {
    fn from(e: Error) -> Self {
        Self::Show(e.into())
    }
}

// ------------------------------------------------------------------ records

/// A registered (public) client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthClient {
    pub client_id: String,
    pub client_name: Option<String>,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub software_id: Option<String>,
    pub software_version: Option<String>,
    /// Digest of the address it registered from (rate limiting).
    pub registered_from: String,
    pub created_at: Timestamp,
    /// The first successful token exchange; unused clients expire.
    pub last_used_at: Option<Timestamp>,
}

/// Who approved a grant: the operator or member and the API key they signed
/// in with (the grant dies with the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantSubject {
    pub operator_id: String,
    pub member_id: Option<String>,
    pub role: Option<Role>,
    pub key_id: String,
}

impl GrantSubject {
    fn principal(&self, scopes: Vec<Permission>) -> Result<Principal> {
        let kind = match (&self.member_id, self.role) {
            (None, _) => PrincipalKind::Operator,
            (Some(member_id), Some(role)) => PrincipalKind::Member {
                member_id: member_id.clone(),
                role,
            },
            (Some(_), None) => return Err(Error::internal("OAuth grant of a member has no role")),
        };
        Ok(Principal {
            operator_id: self.operator_id.clone(),
            kind,
            scopes: Some(scopes),
        })
    }
}

/// An authorization request between `GET /oauth/authorize` and the consent
/// decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest {
    pub id: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub state: Option<String>,
    pub code_challenge: String,
    pub resource: String,
    /// Digest of the secret in the browser's cookie for this request.
    pub browser_digest: String,
    /// Digest of the CSRF token of the form currently shown.
    pub csrf_digest: String,
    /// Set once the user has signed in.
    pub subject: Option<GrantSubject>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// An approved authorization: the family every code and token descends from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthGrant {
    pub id: String,
    pub client_id: String,
    pub subject: GrantSubject,
    pub scope: String,
    pub resource: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// An authorization code (its digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthCode {
    pub digest: String,
    pub grant_id: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub used_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Refresh,
}

impl TokenKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Access => "access",
            Self::Refresh => "refresh",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "access" => Some(Self::Access),
            "refresh" => Some(Self::Refresh),
            _ => None,
        }
    }
}

/// An access or refresh token (its digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthToken {
    pub digest: String,
    pub grant_id: String,
    pub kind: TokenKind,
    pub scope: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    /// Refresh tokens: when it was exchanged for a new pair.
    pub replaced_at: Option<Timestamp>,
}

/// Storage for OAuth clients, requests, grants, codes and tokens. Secrets
/// arrive as digests only.
#[async_trait]
pub trait OAuthStore: Send + Sync + 'static {
    async fn insert_oauth_client(&self, client: &OAuthClient) -> Result<()>;
    async fn get_oauth_client(&self, client_id: &str) -> Result<Option<OAuthClient>>;
    /// Registrations from the address digest `source` at or after `since`.
    async fn count_oauth_registrations(&self, source: &str, since: Timestamp) -> Result<u64>;
    /// Forgets clients never used and registered before `before`.
    async fn purge_unused_oauth_clients(&self, before: Timestamp) -> Result<u64>;
    async fn mark_oauth_client_used(&self, client_id: &str, now: Timestamp) -> Result<()>;

    async fn insert_auth_request(&self, request: &AuthRequest) -> Result<()>;
    async fn get_auth_request(&self, id: &str) -> Result<Option<AuthRequest>>;
    /// Replaces the request if its CSRF digest is still `expected_csrf`, so
    /// each form is accepted once. `Ok(false)` when it was not.
    async fn advance_auth_request(
        &self,
        request: &AuthRequest,
        expected_csrf: &str,
    ) -> Result<bool>;
    /// In one transaction: deletes the request (if its CSRF digest is still
    /// `expected_csrf`), stores the grant and its code, records `audit` in
    /// the operator's chain. `Ok(false)` when the request was already used.
    async fn complete_auth_request(
        &self,
        request_id: &str,
        expected_csrf: &str,
        grant: &OAuthGrant,
        code: &AuthCode,
        audit: NewAudit,
    ) -> Result<bool>;
    async fn delete_auth_request(&self, id: &str) -> Result<()>;
    /// Deletes requests, codes and tokens that expired before `before`.
    async fn purge_expired_oauth(&self, before: Timestamp) -> Result<()>;

    async fn get_auth_code(&self, digest: &str) -> Result<Option<AuthCode>>;
    /// Marks the code used and stores `tokens`, if the code was unused, in
    /// one transaction. `Ok(false)`: it had been used (a replay).
    async fn redeem_auth_code(
        &self,
        digest: &str,
        now: Timestamp,
        tokens: &[OAuthToken],
    ) -> Result<bool>;

    async fn get_oauth_grant(&self, grant_id: &str) -> Result<Option<OAuthGrant>>;
    async fn get_oauth_token(&self, digest: &str) -> Result<Option<OAuthToken>>;
    /// Marks the refresh token replaced and stores `tokens`, if it was
    /// neither replaced nor revoked, in one transaction. `Ok(false)`
    /// otherwise (a reuse).
    async fn rotate_refresh_token(
        &self,
        digest: &str,
        now: Timestamp,
        tokens: &[OAuthToken],
    ) -> Result<bool>;
    async fn revoke_oauth_token(&self, digest: &str, now: Timestamp) -> Result<()>;
    /// Revokes the grant and every token of it, recording `audit` in the
    /// operator's chain. `Ok(false)` when it was already revoked.
    async fn revoke_oauth_grant(
        &self,
        operator_id: &str,
        grant_id: &str,
        now: Timestamp,
        audit: NewAudit,
    ) -> Result<bool>;
    /// Whether the API key `key_id` exists and is not revoked.
    async fn api_key_is_live(&self, key_id: &str) -> Result<bool>;
}

// ------------------------------------------------------------------ wire types

/// `POST /oauth/register` (RFC 7591), the fields STACK reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ClientMetadata {
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    pub client_name: Option<String>,
    pub grant_types: Option<Vec<String>>,
    pub response_types: Option<Vec<String>>,
    pub token_endpoint_auth_method: Option<String>,
    pub scope: Option<String>,
    pub software_id: Option<String>,
    pub software_version: Option<String>,
}

/// The registration response (RFC 7591 §3.2.1).
#[derive(Debug, Clone, Serialize)]
pub struct RegisteredClient {
    pub client_id: String,
    pub client_id_issued_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    pub token_endpoint_auth_method: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub software_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub software_version: Option<String>,
}

/// The query of `GET /oauth/authorize`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuthorizeParams {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub resource: Option<String>,
}

/// What the login page shows and carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginStep {
    pub request_id: String,
    pub csrf: String,
    /// Set as a cookie for this request only at the first step; `None` when
    /// the form is shown again.
    pub browser_secret: Option<String>,
    pub client_name: String,
    pub client_id: String,
    /// The host of a metadata-document `client_id` (the part of the
    /// client's identity the user can trust); `None` for registered clients.
    pub client_host: Option<String>,
    pub redirect_uri: String,
    pub scopes: Vec<&'static ScopeInfo>,
}

/// What the consent page shows and carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentStep {
    pub request_id: String,
    pub csrf: String,
    pub client_name: String,
    pub client_id: String,
    /// See [`LoginStep::client_host`].
    pub client_host: Option<String>,
    pub redirect_uri: String,
    pub scopes: Vec<&'static ScopeInfo>,
    /// Who is signed in (`operator:op_…` or `member:mem_…`).
    pub signed_in_as: String,
    /// Requested scopes the signed-in role cannot exercise anyway.
    pub beyond_role: Vec<&'static str>,
}

/// The login form.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    pub request_id: String,
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub api_key: String,
}

/// The consent form.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConsentForm {
    #[serde(default)]
    pub request_id: String,
    #[serde(default)]
    pub csrf: String,
    /// `approve` or `deny`.
    #[serde(default)]
    pub decision: String,
}

/// `POST /oauth/token` (form-urlencoded).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub client_id: Option<String>,
    pub code_verifier: Option<String>,
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
    pub resource: Option<String>,
}

/// The token response (RFC 6749 §5.1).
#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub refresh_token: String,
    pub scope: String,
}

/// `POST /oauth/revoke` (RFC 7009).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RevokeRequest {
    pub token: Option<String>,
    pub token_type_hint: Option<String>,
    pub client_id: Option<String>,
}

// ------------------------------------------------------------------ helpers

/// The stored digest of an OAuth secret (code, token, CSRF token, browser
/// binding). All carry 256 bits of entropy, so an unsalted, domain-separated
/// SHA-256 suffices and allows an indexed lookup.
pub fn secret_digest(secret: &str) -> String {
    let mut input = Vec::with_capacity(secret.len() + 24);
    input.extend_from_slice(b"stack-oauth-secret-v1\0");
    input.extend_from_slice(secret.as_bytes());
    sha256_hex(&input)
}

fn address_digest(address: &str) -> String {
    let mut input = Vec::with_capacity(address.len() + 24);
    input.extend_from_slice(b"stack-oauth-source-v1\0");
    input.extend_from_slice(address.as_bytes());
    sha256_hex(&input)
}

fn digests_match(a: &str, b: &str) -> bool {
    constant_time_eq(a.as_bytes(), b.as_bytes())
}

/// PKCE S256: `BASE64URL(SHA256(verifier)) == challenge`, with the
/// verifier's syntax checked (RFC 7636 §4.1).
fn pkce_s256_matches(verifier: &str, challenge: &str) -> bool {
    let syntax_ok = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    let computed = URL_SAFE_NO_PAD.encode(sha256(verifier.as_bytes()));
    syntax_ok && constant_time_eq(computed.as_bytes(), challenge.as_bytes())
}

fn valid_challenge(challenge: &str) -> bool {
    (43..=128).contains(&challenge.len())
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

fn is_loopback_host(host: Option<url::Host<&str>>) -> bool {
    match host {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Checks a redirect URI offered at registration: absolute, no fragment;
/// `https`, or `http` on a loopback host (RFC 8252 §7.3), or a private-use
/// scheme for native apps (RFC 8252 §7.1) other than the dangerous ones.
fn check_redirect_uri(raw: &str) -> std::result::Result<(), String> {
    if raw.len() > MAX_URI_LEN {
        return Err("redirect URI is too long".into());
    }
    let uri = url::Url::parse(raw).map_err(|_| "redirect URI is not an absolute URI".to_owned())?;
    if uri.fragment().is_some() {
        return Err("redirect URI must not have a fragment".into());
    }
    match uri.scheme() {
        "https" => Ok(()),
        "http" if is_loopback_host(uri.host()) => Ok(()),
        "http" => {
            Err("http redirect URIs must use a loopback host (127.0.0.1, [::1], localhost)".into())
        }
        "javascript" | "data" | "file" | "vbscript" | "about" | "blob" | "ftp" | "ws" | "wss" => {
            Err(format!(
                "redirect URI scheme {} is not allowed",
                uri.scheme()
            ))
        }
        _ => Ok(()),
    }
}

/// Whether `offered` matches the registered URI `registered`: exactly, or —
/// for `http` loopback URIs — in everything but the port (RFC 8252 §7.3).
fn redirect_uri_matches(registered: &str, offered: &str) -> bool {
    if registered == offered {
        return true;
    }
    let (Ok(r), Ok(o)) = (url::Url::parse(registered), url::Url::parse(offered)) else {
        return false;
    };
    r.scheme() == "http"
        && o.scheme() == "http"
        && is_loopback_host(r.host())
        && r.host_str() == o.host_str()
        && r.path() == o.path()
        && r.query() == o.query()
        && o.fragment().is_none()
        && r.username() == o.username()
        && r.password().is_none()
        && o.password().is_none()
}

/// `uri` with `params` appended to its query.
fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    match url::Url::parse(uri) {
        Ok(mut u) => {
            {
                let mut q = u.query_pairs_mut();
                for (k, v) in params {
                    q.append_pair(k, v);
                }
            }
            u.to_string()
        }
        Err(_) => uri.to_owned(),
    }
}

fn trim_slash(s: &str) -> &str {
    s.strip_suffix('/').unwrap_or(s)
}

impl App {
    /// The issuer (`public_url`).
    pub fn oauth_issuer(&self) -> &str {
        trim_slash(&self.config.oauth.issuer)
    }

    /// The canonical URI of a protected resource (RFC 8707 / RFC 9728).
    pub fn resource_uri(&self, audience: Audience) -> String {
        match audience {
            Audience::Rest => self.oauth_issuer().to_owned(),
            Audience::Mcp => format!("{}/mcp", self.oauth_issuer()),
        }
    }

    fn new_secret(&self, prefix: &str) -> Result<String> {
        Ok(format!("{prefix}{}", random_token(self.rng.as_ref(), 32)?))
    }

    fn redirect_error(
        &self,
        redirect_uri: &str,
        state: Option<&str>,
        code: OAuthErrorCode,
        description: &str,
    ) -> AuthorizeFailure {
        let mut params = vec![("error", code.as_str()), ("error_description", description)];
        if let Some(s) = state {
            params.push(("state", s));
        }
        params.push(("iss", self.oauth_issuer()));
        AuthorizeFailure::Redirect(with_query(redirect_uri, &params))
    }

    /// A live client, or `None` when unknown or expired unused.
    async fn live_client(&self, client_id: &str) -> Result<Option<OAuthClient>> {
        if client_id.len() > 128 {
            return Ok(None);
        }
        let cutoff = self.now().as_millis() - UNUSED_CLIENT_TTL_SECONDS * 1000;
        Ok(self
            .store
            .get_oauth_client(client_id)
            .await?
            .filter(|c| c.last_used_at.is_some() || c.created_at.as_millis() >= cutoff))
    }

    /// The client of an authorization request: a metadata document for an
    /// `https` client_id, else a live registration.
    async fn authorization_client(&self, client_id: &str) -> OAuthResult<OAuthClient> {
        if is_metadata_client_id(client_id) {
            return self.metadata_client(client_id).await;
        }
        self.live_client(client_id).await?.ok_or_else(|| {
            OAuthError::new(
                OAuthErrorCode::InvalidClient,
                "unknown client_id (unused registrations expire after 24 hours; register again)",
            )
        })
    }

    // -------------------------------------------------------------- registration

    /// Dynamic client registration (RFC 7591). Every client is public (no
    /// secret; PKCE protects the code). `source` is the caller's address,
    /// kept only as a digest for the per-address hourly limit.
    pub async fn register_oauth_client(
        &self,
        meta: ClientMetadata,
        source: &str,
    ) -> OAuthResult<RegisteredClient> {
        let now = self.now();
        self.store
            .purge_unused_oauth_clients(Timestamp::from_millis(
                now.as_millis() - UNUSED_CLIENT_TTL_SECONDS * 1000,
            ))
            .await?;
        let registered_from = address_digest(source);
        let recent = self
            .store
            .count_oauth_registrations(
                &registered_from,
                Timestamp::from_millis(now.as_millis() - 3600 * 1000),
            )
            .await?;
        if recent >= self.config.oauth.registrations_per_hour {
            return Err(OAuthError::new(
                OAuthErrorCode::TooManyRequests,
                "too many client registrations from this address; try again later",
            ));
        }
        let invalid = |d: String| OAuthError::new(OAuthErrorCode::InvalidClientMetadata, d);
        if meta.redirect_uris.is_empty() {
            return Err(OAuthError::new(
                OAuthErrorCode::InvalidRedirectUri,
                "redirect_uris is required",
            ));
        }
        if meta.redirect_uris.len() > MAX_REDIRECT_URIS {
            return Err(OAuthError::new(
                OAuthErrorCode::InvalidRedirectUri,
                format!("at most {MAX_REDIRECT_URIS} redirect URIs"),
            ));
        }
        for uri in &meta.redirect_uris {
            check_redirect_uri(uri)
                .map_err(|d| OAuthError::new(OAuthErrorCode::InvalidRedirectUri, d))?;
        }
        let grant_types = meta
            .grant_types
            .unwrap_or_else(|| vec!["authorization_code".into(), "refresh_token".into()]);
        if grant_types.is_empty()
            || grant_types
                .iter()
                .any(|g| g != "authorization_code" && g != "refresh_token")
        {
            return Err(invalid(
                "grant_types may hold only authorization_code and refresh_token".into(),
            ));
        }
        let response_types = meta.response_types.unwrap_or_else(|| vec!["code".into()]);
        if response_types.iter().any(|r| r != "code") {
            return Err(invalid("response_types may hold only code".into()));
        }
        if let Some(scope) = &meta.scope {
            parse_scopes(scope)
                .map_err(|d| OAuthError::new(OAuthErrorCode::InvalidClientMetadata, d))?;
        }
        // Only public clients exist: a requested client_secret_* method is
        // replaced by "none" in the response (RFC 7591 §3.2.1 lets the
        // server substitute), and clients use what the response says.
        let _ = meta.token_endpoint_auth_method;
        let clean = |s: Option<String>, max: usize| {
            s.map(|v| {
                v.chars()
                    .filter(|c| !c.is_control())
                    .take(max)
                    .collect::<String>()
            })
            .filter(|v| !v.trim().is_empty())
        };
        let client = OAuthClient {
            client_id: format!("{CLIENT_ID_PREFIX}{}", random_token(self.rng.as_ref(), 16)?),
            client_name: clean(meta.client_name, MAX_CLIENT_NAME),
            redirect_uris: meta.redirect_uris,
            grant_types,
            software_id: clean(meta.software_id, MAX_CLIENT_NAME),
            software_version: clean(meta.software_version, 64),
            registered_from,
            created_at: now,
            last_used_at: None,
        };
        self.store.insert_oauth_client(&client).await?;
        Ok(RegisteredClient {
            client_id: client.client_id,
            client_id_issued_at: now.as_millis() / 1000,
            client_name: client.client_name,
            redirect_uris: client.redirect_uris,
            grant_types: client.grant_types,
            response_types,
            token_endpoint_auth_method: "none",
            scope: meta.scope,
            software_id: client.software_id,
            software_version: client.software_version,
        })
    }

    // -------------------------------------------------------------- authorize

    /// `GET /oauth/authorize`: validates the request and opens it; the
    /// caller shows the login form.
    pub async fn begin_authorization(
        &self,
        p: AuthorizeParams,
    ) -> std::result::Result<LoginStep, AuthorizeFailure> {
        let show = |d: &str| AuthorizeFailure::Show(OAuthError::request(d));
        let client_id = p.client_id.as_deref().unwrap_or_default();
        if client_id.is_empty() {
            return Err(show("client_id is required"));
        }
        let client = self
            .authorization_client(client_id)
            .await
            .map_err(AuthorizeFailure::Show)?;
        let redirect_uri = match p.redirect_uri.as_deref() {
            Some(offered) => {
                if !client
                    .redirect_uris
                    .iter()
                    .any(|r| redirect_uri_matches(r, offered))
                {
                    return Err(show(
                        "redirect_uri does not match any URI registered for this client",
                    ));
                }
                offered.to_owned()
            }
            None => match client.redirect_uris.as_slice() {
                [only] => only.clone(),
                _ => return Err(show("redirect_uri is required")),
            },
        };
        let state = p.state.as_deref();
        if state.is_some_and(|s| s.len() > MAX_STATE_LEN) {
            return Err(show("state is too long"));
        }
        let fail = |code, d: &str| self.redirect_error(&redirect_uri, state, code, d);
        if p.response_type.as_deref() != Some("code") {
            return Err(fail(
                OAuthErrorCode::UnsupportedResponseType,
                "response_type must be code",
            ));
        }
        let Some(challenge) = p.code_challenge.as_deref() else {
            return Err(fail(
                OAuthErrorCode::InvalidRequest,
                "PKCE is required: send code_challenge and code_challenge_method=S256",
            ));
        };
        if p.code_challenge_method.as_deref() != Some("S256") {
            return Err(fail(
                OAuthErrorCode::InvalidRequest,
                "code_challenge_method must be S256 (plain is not supported)",
            ));
        }
        if !valid_challenge(challenge) {
            return Err(fail(
                OAuthErrorCode::InvalidRequest,
                "code_challenge must be 43-128 base64url characters",
            ));
        }
        let scopes = match p.scope.as_deref().map(str::trim) {
            None | Some("") => DEFAULT_SCOPES
                .iter()
                .filter_map(|n| SCOPES.iter().find(|s| s.name == *n))
                .collect(),
            Some(raw) => parse_scopes(raw).map_err(|d| fail(OAuthErrorCode::InvalidScope, &d))?,
        };
        let resource = match p.resource.as_deref() {
            None => self.resource_uri(Audience::Mcp),
            Some(r) => {
                let r = trim_slash(r);
                let known = [Audience::Mcp, Audience::Rest]
                    .into_iter()
                    .map(|a| self.resource_uri(a))
                    .find(|u| u == r);
                known.ok_or_else(|| {
                    fail(
                        OAuthErrorCode::InvalidTarget,
                        "resource is not served by this authorization server",
                    )
                })?
            }
        };
        let now = self.now();
        self.store.purge_expired_oauth(now).await?;
        let browser_secret = random_token(self.rng.as_ref(), 32)?;
        let csrf = random_token(self.rng.as_ref(), 32)?;
        let request = AuthRequest {
            id: format!("oar_{}", random_token(self.rng.as_ref(), 16)?),
            client_id: client.client_id.clone(),
            redirect_uri: redirect_uri.clone(),
            scope: scope_string(&scopes),
            state: p.state,
            code_challenge: challenge.to_owned(),
            resource,
            browser_digest: secret_digest(&browser_secret),
            csrf_digest: secret_digest(&csrf),
            subject: None,
            created_at: now,
            expires_at: Timestamp::from_millis(now.as_millis() + REQUEST_TTL_SECONDS * 1000),
        };
        self.store.insert_auth_request(&request).await?;
        Ok(LoginStep {
            request_id: request.id,
            csrf,
            browser_secret: Some(browser_secret),
            client_name: client
                .client_name
                .clone()
                .unwrap_or_else(|| client.client_id.clone()),
            client_host: client_id_host(&client.client_id),
            client_id: client.client_id,
            redirect_uri,
            scopes,
        })
    }

    /// Loads a request for a form post and checks that the browser binding
    /// and the form's CSRF token belong to it.
    async fn checked_request(
        &self,
        request_id: &str,
        csrf: &str,
        browser_secret: Option<&str>,
    ) -> std::result::Result<(AuthRequest, OAuthClient), AuthorizeFailure> {
        let expired = || {
            AuthorizeFailure::Show(OAuthError::request(
                "this authorization request is unknown or has expired; start again from your application",
            ))
        };
        if request_id.len() > 64 || csrf.len() > MAX_TOKEN_LEN {
            return Err(expired());
        }
        let request = self
            .store
            .get_auth_request(request_id)
            .await?
            .filter(|r| r.expires_at.as_millis() > self.now().as_millis())
            .ok_or_else(expired)?;
        let forged = || {
            AuthorizeFailure::Show(OAuthError::new(
                OAuthErrorCode::AccessDenied,
                "this form was not issued to this browser for this request (CSRF check failed)",
            ))
        };
        let browser_ok = browser_secret.is_some_and(|b| {
            b.len() <= MAX_TOKEN_LEN && digests_match(&secret_digest(b), &request.browser_digest)
        });
        if !browser_ok || !digests_match(&secret_digest(csrf), &request.csrf_digest) {
            return Err(forged());
        }
        let client = if is_metadata_client_id(&request.client_id) {
            // Fetched again if it left the cache; it must still list the
            // redirect URI the request was opened with.
            self.metadata_client(&request.client_id)
                .await
                .map_err(AuthorizeFailure::Show)?
        } else {
            self.live_client(&request.client_id)
                .await?
                .ok_or_else(expired)?
        };
        if !client
            .redirect_uris
            .iter()
            .any(|r| redirect_uri_matches(r, &request.redirect_uri))
        {
            return Err(AuthorizeFailure::Show(OAuthError::request(
                "the client no longer lists this redirect_uri; start again from your application",
            )));
        }
        Ok((request, client))
    }

    /// The login form: an operator or member API key. On success the
    /// request moves to consent with a fresh CSRF token.
    pub async fn authorization_login(
        &self,
        form: LoginForm,
        browser_secret: Option<&str>,
    ) -> std::result::Result<ConsentStep, AuthorizeFailure> {
        let (mut request, client) = self
            .checked_request(&form.request_id, &form.csrf, browser_secret)
            .await?;
        let scopes = parse_scopes(&request.scope).unwrap_or_default();
        let client_name = client
            .client_name
            .clone()
            .unwrap_or_else(|| client.client_id.clone());
        let key = form.api_key.trim();
        let record = if key.starts_with("sk_live_") {
            self.api_key_record(key).await.ok()
        } else {
            None
        };
        let Some(record) = record else {
            let step = LoginStep {
                request_id: request.id,
                csrf: form.csrf,
                browser_secret: None,
                client_name,
                client_host: client_id_host(&client.client_id),
                client_id: client.client_id,
                redirect_uri: request.redirect_uri,
                scopes,
            };
            return Err(AuthorizeFailure::LoginAgain(
                Box::new(step),
                "That is not a valid operator or team-member API key (sk_live_…).".into(),
            ));
        };
        let subject = GrantSubject {
            operator_id: record.operator_id.clone(),
            member_id: record.member_id.clone(),
            role: record.role,
            key_id: record.id.clone(),
        };
        let principal = subject.principal(Vec::new())?;
        let unscoped = Principal {
            scopes: None,
            ..principal.clone()
        };
        let beyond_role = scopes
            .iter()
            .filter(|s| !s.permissions.iter().all(|p| unscoped.allows(*p)))
            .map(|s| s.name)
            .collect();
        let csrf = random_token(self.rng.as_ref(), 32)?;
        let old_csrf = request.csrf_digest.clone();
        request.subject = Some(subject);
        request.csrf_digest = secret_digest(&csrf);
        if !self.store.advance_auth_request(&request, &old_csrf).await? {
            return Err(AuthorizeFailure::Show(OAuthError::request(
                "this form was already submitted",
            )));
        }
        Ok(ConsentStep {
            request_id: request.id,
            csrf,
            client_name,
            client_host: client_id_host(&client.client_id),
            client_id: client.client_id,
            redirect_uri: request.redirect_uri,
            scopes,
            signed_in_as: principal.actor_label(),
            beyond_role,
        })
    }

    /// The consent form: on approval, a grant and a 60-second code, and the
    /// redirect back to the client (`code`, `state`, `iss`).
    pub async fn authorization_decision(
        &self,
        form: ConsentForm,
        browser_secret: Option<&str>,
    ) -> std::result::Result<String, AuthorizeFailure> {
        let (request, client) = self
            .checked_request(&form.request_id, &form.csrf, browser_secret)
            .await?;
        let Some(subject) = request.subject.clone() else {
            return Err(AuthorizeFailure::Show(OAuthError::request(
                "sign in before approving",
            )));
        };
        let state = request.state.as_deref();
        if form.decision != "approve" {
            self.store.delete_auth_request(&request.id).await?;
            return Err(self.redirect_error(
                &request.redirect_uri,
                state,
                OAuthErrorCode::AccessDenied,
                "the user denied the request",
            ));
        }
        let now = self.now();
        let grant = OAuthGrant {
            id: format!("oag_{}", random_token(self.rng.as_ref(), 16)?),
            client_id: client.client_id.clone(),
            subject: subject.clone(),
            scope: request.scope.clone(),
            resource: request.resource.clone(),
            created_at: now,
            revoked_at: None,
        };
        let code = self.new_secret(CODE_PREFIX)?;
        let stored_code = AuthCode {
            digest: secret_digest(&code),
            grant_id: grant.id.clone(),
            client_id: client.client_id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            code_challenge: request.code_challenge.clone(),
            created_at: now,
            expires_at: Timestamp::from_millis(now.as_millis() + CODE_TTL_SECONDS * 1000),
            used_at: None,
        };
        let principal = subject.principal(Vec::new())?;
        let audit = self.audit(
            AuditDraft::new(principal.actor_label(), Layer::System, "oauth.authorize")
                .target("oauth_client", &client.client_id)
                .details(json!({
                    "grant_id": grant.id,
                    "client_name": client.client_name,
                    "scope": grant.scope,
                    "resource": grant.resource,
                    "key_id": subject.key_id,
                })),
        )?;
        if !self
            .store
            .complete_auth_request(
                &request.id,
                &request.csrf_digest,
                &grant,
                &stored_code,
                audit,
            )
            .await?
        {
            return Err(AuthorizeFailure::Show(OAuthError::request(
                "this form was already submitted",
            )));
        }
        let mut params = vec![("code", code.as_str())];
        if let Some(s) = state {
            params.push(("state", s));
        }
        params.push(("iss", self.oauth_issuer()));
        Ok(with_query(&request.redirect_uri, &params))
    }

    // -------------------------------------------------------------- tokens

    /// `POST /oauth/token`.
    pub async fn oauth_token(&self, req: TokenRequest) -> OAuthResult<TokenResponse> {
        match req.grant_type.as_deref() {
            Some("authorization_code") => self.exchange_code(req).await,
            Some("refresh_token") => self.exchange_refresh(req).await,
            Some(_) => Err(OAuthError::new(
                OAuthErrorCode::UnsupportedGrantType,
                "grant_type must be authorization_code or refresh_token",
            )),
            None => Err(OAuthError::request("grant_type is required")),
        }
    }

    fn issue_pair(
        &self,
        grant: &OAuthGrant,
        scope: &str,
    ) -> Result<(TokenResponse, Vec<OAuthToken>)> {
        let now = self.now();
        let access = self.new_secret(ACCESS_TOKEN_PREFIX)?;
        let refresh = self.new_secret(REFRESH_TOKEN_PREFIX)?;
        let token = |secret: &str, kind, ttl: i64| OAuthToken {
            digest: secret_digest(secret),
            grant_id: grant.id.clone(),
            kind,
            scope: scope.to_owned(),
            created_at: now,
            expires_at: Timestamp::from_millis(now.as_millis() + ttl * 1000),
            revoked_at: None,
            replaced_at: None,
        };
        let stored = vec![
            token(&access, TokenKind::Access, ACCESS_TOKEN_TTL_SECONDS),
            token(&refresh, TokenKind::Refresh, REFRESH_TOKEN_TTL_SECONDS),
        ];
        Ok((
            TokenResponse {
                access_token: access,
                token_type: "Bearer",
                expires_in: ACCESS_TOKEN_TTL_SECONDS,
                refresh_token: refresh,
                scope: scope.to_owned(),
            },
            stored,
        ))
    }

    /// Revokes a whole grant (code replay, refresh-token reuse, revocation
    /// of a refresh token) and records why.
    async fn revoke_grant(&self, grant: &OAuthGrant, reason: &str) -> Result<()> {
        let audit = self.audit(
            AuditDraft::new("system", Layer::System, "oauth.revoke")
                .target("oauth_client", &grant.client_id)
                .details(json!({ "grant_id": grant.id, "reason": reason })),
        )?;
        self.store
            .revoke_oauth_grant(&grant.subject.operator_id, &grant.id, self.now(), audit)
            .await?;
        self.forget_oauth_grant(&grant.id);
        Ok(())
    }

    async fn live_grant(&self, grant_id: &str) -> OAuthResult<OAuthGrant> {
        let grant = self
            .store
            .get_oauth_grant(grant_id)
            .await?
            .filter(|g| g.revoked_at.is_none())
            .ok_or_else(|| OAuthError::grant("the authorization was revoked"))?;
        if !self.store.api_key_is_live(&grant.subject.key_id).await? {
            return Err(OAuthError::grant(
                "the API key that approved this authorization was revoked",
            ));
        }
        Ok(grant)
    }

    fn check_resource(&self, requested: Option<&str>, grant: &OAuthGrant) -> OAuthResult<()> {
        match requested {
            Some(r) if trim_slash(r) != grant.resource => Err(OAuthError::new(
                OAuthErrorCode::InvalidTarget,
                "resource differs from the one authorized",
            )),
            _ => Ok(()),
        }
    }

    async fn exchange_code(&self, req: TokenRequest) -> OAuthResult<TokenResponse> {
        let code = req
            .code
            .as_deref()
            .ok_or_else(|| OAuthError::request("code is required"))?;
        let verifier = req
            .code_verifier
            .as_deref()
            .ok_or_else(|| OAuthError::request("code_verifier is required (PKCE)"))?;
        let client_id = req
            .client_id
            .as_deref()
            .ok_or_else(|| OAuthError::request("client_id is required"))?;
        let redirect_uri = req
            .redirect_uri
            .as_deref()
            .ok_or_else(|| OAuthError::request("redirect_uri is required"))?;
        let unknown = || OAuthError::grant("the authorization code is invalid or expired");
        if code.len() > MAX_TOKEN_LEN || !code.starts_with(CODE_PREFIX) {
            return Err(unknown());
        }
        let digest = secret_digest(code);
        let stored = self
            .store
            .get_auth_code(&digest)
            .await?
            .filter(|c| digests_match(&c.digest, &digest))
            .ok_or_else(unknown)?;
        let grant = self.store.get_oauth_grant(&stored.grant_id).await?;
        if stored.used_at.is_some() {
            if let Some(g) = &grant {
                self.revoke_grant(g, "authorization code replayed").await?;
            }
            return Err(OAuthError::grant(
                "the authorization code was already used; every token issued from it is revoked",
            ));
        }
        if stored.expires_at.as_millis() <= self.now().as_millis() {
            return Err(unknown());
        }
        if stored.client_id != client_id {
            return Err(OAuthError::grant(
                "the authorization code was issued to another client",
            ));
        }
        if stored.redirect_uri != redirect_uri {
            return Err(OAuthError::grant(
                "redirect_uri differs from the authorization request",
            ));
        }
        if !pkce_s256_matches(verifier, &stored.code_challenge) {
            return Err(OAuthError::grant(
                "code_verifier does not match the code_challenge",
            ));
        }
        let grant = self.live_grant(&stored.grant_id).await?;
        self.check_resource(req.resource.as_deref(), &grant)?;
        let (response, tokens) = self.issue_pair(&grant, &grant.scope)?;
        if !self
            .store
            .redeem_auth_code(&digest, self.now(), &tokens)
            .await?
        {
            self.revoke_grant(&grant, "authorization code replayed")
                .await?;
            return Err(OAuthError::grant(
                "the authorization code was already used; every token issued from it is revoked",
            ));
        }
        if !is_metadata_client_id(&grant.client_id) {
            self.store
                .mark_oauth_client_used(&grant.client_id, self.now())
                .await?;
        }
        Ok(response)
    }

    async fn exchange_refresh(&self, req: TokenRequest) -> OAuthResult<TokenResponse> {
        let token = req
            .refresh_token
            .as_deref()
            .ok_or_else(|| OAuthError::request("refresh_token is required"))?;
        let unknown = || OAuthError::grant("the refresh token is invalid or expired");
        if token.len() > MAX_TOKEN_LEN || !token.starts_with(REFRESH_TOKEN_PREFIX) {
            return Err(unknown());
        }
        let digest = secret_digest(token);
        let stored = self
            .store
            .get_oauth_token(&digest)
            .await?
            .filter(|t| t.kind == TokenKind::Refresh && digests_match(&t.digest, &digest))
            .ok_or_else(unknown)?;
        let grant = self
            .store
            .get_oauth_grant(&stored.grant_id)
            .await?
            .ok_or_else(unknown)?;
        if let Some(client_id) = req.client_id.as_deref()
            && client_id != grant.client_id
        {
            return Err(OAuthError::grant(
                "the refresh token was issued to another client",
            ));
        }
        if stored.replaced_at.is_some() || stored.revoked_at.is_some() {
            if grant.revoked_at.is_none() {
                self.revoke_grant(&grant, "refresh token reused").await?;
            }
            return Err(OAuthError::grant(
                "the refresh token was already used; the whole authorization is revoked",
            ));
        }
        if stored.expires_at.as_millis() <= self.now().as_millis() {
            return Err(unknown());
        }
        let grant = self.live_grant(&grant.id).await?;
        self.check_resource(req.resource.as_deref(), &grant)?;
        let scope = match req.scope.as_deref().map(str::trim) {
            None | Some("") => stored.scope.clone(),
            Some(raw) => {
                let asked = parse_scopes(raw)
                    .map_err(|d| OAuthError::new(OAuthErrorCode::InvalidScope, d))?;
                let held = parse_scopes(&stored.scope).unwrap_or_default();
                if asked.iter().any(|a| !held.iter().any(|h| h.name == a.name)) {
                    return Err(OAuthError::new(
                        OAuthErrorCode::InvalidScope,
                        "a refresh may only narrow the granted scopes",
                    ));
                }
                scope_string(&asked)
            }
        };
        let (response, tokens) = self.issue_pair(&grant, &scope)?;
        if !self
            .store
            .rotate_refresh_token(&digest, self.now(), &tokens)
            .await?
        {
            self.revoke_grant(&grant, "refresh token reused").await?;
            return Err(OAuthError::grant(
                "the refresh token was already used; the whole authorization is revoked",
            ));
        }
        Ok(response)
    }

    /// `POST /oauth/revoke` (RFC 7009): revoking a refresh token revokes the
    /// whole authorization; revoking an access token revokes that token.
    /// Unknown tokens are not an error.
    pub async fn oauth_revoke(&self, req: RevokeRequest) -> OAuthResult<()> {
        let token = req
            .token
            .as_deref()
            .ok_or_else(|| OAuthError::request("token is required"))?;
        if token.len() > MAX_TOKEN_LEN {
            return Ok(());
        }
        let digest = secret_digest(token);
        let Some(stored) = self
            .store
            .get_oauth_token(&digest)
            .await?
            .filter(|t| digests_match(&t.digest, &digest))
        else {
            return Ok(());
        };
        let Some(grant) = self.store.get_oauth_grant(&stored.grant_id).await? else {
            return Ok(());
        };
        if req
            .client_id
            .as_deref()
            .is_some_and(|c| c != grant.client_id)
        {
            // Not this client's token: RFC 7009 §2.1 says do nothing.
            return Ok(());
        }
        match stored.kind {
            TokenKind::Refresh => {
                if grant.revoked_at.is_none() {
                    self.revoke_grant(&grant, "revoked by the client").await?;
                }
            }
            TokenKind::Access => {
                self.store.revoke_oauth_token(&digest, self.now()).await?;
                self.forget_credential(&digest);
            }
        }
        Ok(())
    }

    /// Authenticates an OAuth access token issued by STACK's authorization
    /// server, for `audience`.
    pub(crate) async fn authenticate_oauth_token(
        &self,
        token: &str,
        audience: Audience,
    ) -> Result<Principal> {
        let invalid = || Error::unauthorized("invalid or expired OAuth access token");
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid());
        }
        let digest = secret_digest(token);
        if let Some(hit) = self.cached_principal(&digest, audience) {
            return hit;
        }
        let stored = self
            .store
            .get_oauth_token(&digest)
            .await?
            .filter(|t| t.kind == TokenKind::Access && digests_match(&t.digest, &digest))
            .filter(|t| t.revoked_at.is_none())
            .filter(|t| t.expires_at.as_millis() > self.now().as_millis())
            .ok_or_else(invalid)?;
        let grant = self
            .store
            .get_oauth_grant(&stored.grant_id)
            .await?
            .filter(|g| g.revoked_at.is_none())
            .ok_or_else(invalid)?;
        if grant.resource != self.resource_uri(audience) {
            return Err(Error::unauthorized(
                "this OAuth access token was issued for another resource",
            ));
        }
        if !self.store.api_key_is_live(&grant.subject.key_id).await? {
            return Err(invalid());
        }
        let principal = grant.subject.principal(permissions_of(&stored.scope))?;
        self.remember_credential(
            digest,
            &principal,
            &grant.subject.key_id,
            Some((&grant.id, audience)),
            Some(stored.expires_at.as_millis()),
        );
        Ok(principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_s256_matches(verifier, challenge));
        assert!(!pkce_s256_matches(challenge, challenge));
        assert!(!pkce_s256_matches("short", challenge));
    }

    #[test]
    fn loopback_redirects_match_on_any_port_only() {
        let reg = "http://127.0.0.1:3000/callback";
        assert!(redirect_uri_matches(reg, "http://127.0.0.1:51234/callback"));
        assert!(redirect_uri_matches(reg, "http://127.0.0.1/callback"));
        assert!(!redirect_uri_matches(reg, "http://127.0.0.1:5/other"));
        assert!(!redirect_uri_matches(reg, "http://localhost:3000/callback"));
        assert!(!redirect_uri_matches(
            reg,
            "http://127.0.0.1:3000/callback?x=1"
        ));
        let https = "https://app.example/cb";
        assert!(redirect_uri_matches(https, https));
        assert!(!redirect_uri_matches(https, "https://app.example:444/cb"));
        assert!(!redirect_uri_matches(
            https,
            "https://app.example/cb/../evil"
        ));
    }

    #[test]
    fn registration_refuses_unsafe_redirects() {
        assert!(check_redirect_uri("http://127.0.0.1:8/cb").is_ok());
        assert!(check_redirect_uri("http://localhost/cb").is_ok());
        assert!(check_redirect_uri("https://x.example/cb").is_ok());
        assert!(check_redirect_uri("cursor://anysphere.cursor/oauth").is_ok());
        assert!(check_redirect_uri("http://evil.example/cb").is_err());
        assert!(check_redirect_uri("javascript:alert(1)").is_err());
        assert!(check_redirect_uri("https://x.example/cb#frag").is_err());
        assert!(check_redirect_uri("/relative").is_err());
    }

    #[test]
    fn scopes_parse_in_table_order_and_map_to_permissions() {
        let s = parse_scopes("audit:read agents:read audit:read").unwrap();
        assert_eq!(scope_string(&s), "agents:read audit:read");
        assert!(parse_scopes("agents:read nope").is_err());
        assert_eq!(
            permissions_of("agents:read proxy:write"),
            vec![
                Permission::AgentsRead,
                Permission::Proxy,
                Permission::ScanUse
            ]
        );
        for name in DEFAULT_SCOPES {
            assert!(SCOPES.iter().any(|s| s.name == *name), "{name}");
        }
        assert_eq!(scope_for(Permission::AuditRead), Some("audit:read"));
    }

    #[test]
    fn errors_use_rfc_codes_and_hide_internals() {
        let e: OAuthError = Error::internal("db exploded at row 7").into();
        assert_eq!(e.code.as_str(), "server_error");
        assert!(!e.description.contains("row 7"));
    }
}
