//! Upstream OAuth connections: the authorization-code flow that connects a
//! catalog service, and the refresh that keeps its token usable.
//!
//! 1. The operator stores an **OAuth app** per service (client id, client
//!    secret sealed under its data key; optional endpoint overrides for
//!    self-hosted providers and tests).
//! 2. `connect` without a token answers an `authorization_url`: a random
//!    single-use `state` (10 minutes; only its SHA-256 is stored), PKCE S256
//!    where the provider supports it (the verifier sealed server-side), and
//!    `redirect_uri = {public_url}/v1/services/oauth/callback`.
//! 3. The callback consumes the state, exchanges the code (with the
//!    verifier) at the token endpoint through the egress port (the same SSRF
//!    guard as the proxy), seals access and refresh tokens, and creates (or
//!    re-authorizes) the connection.
//! 4. Before use, a token expiring within a minute is refreshed; an upstream
//!    401 refreshes once and retries. Refreshes of one connection are
//!    serialised: per node by a lock, across nodes by a lease stored on the
//!    connection row (claimed and released by conditional updates), so a
//!    rotated refresh token is never lost. A refused refresh marks the
//!    connection `needs_reauth` and raises an `oauth_refresh_failed`
//!    security event.
//!
//! Tokens, secrets, codes, states and verifiers never reach a log line, a
//! response, an error message or an audit entry.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};
use stack_audit::{AuditDraft, Layer, Outcome};
use stack_core::{Error, ErrorCode, Permission, Principal, Result, Secret, Timestamp};
use stack_crypto::aead;
use stack_proxy::catalog::{TokenAuth, TokenBody};
use stack_proxy::{AuthScheme, OAuthSpec, Service, Target};

use super::{ConnectService, Connection, ConnectionUpdate, catalog, connection_view};
use crate::proxy::{EgressPort, Inbound, Outbound};
use crate::{App, require};

/// How long an authorization may take, from `connect` to the callback.
pub const STATE_TTL_MS: i64 = 10 * 60 * 1000;
/// A token expiring within this margin is refreshed before use.
pub const REFRESH_MARGIN_MS: i64 = 60 * 1000;
/// How long one node may hold a connection's refresh (longer than the
/// egress client's 30 s exchange limit).
pub const REFRESH_LEASE_MS: i64 = 45 * 1000;
/// The callback path under the public URL.
pub const CALLBACK_PATH: &str = "/v1/services/oauth/callback";

const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// An operator's OAuth client for one catalog service (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthApp {
    pub operator_id: String,
    /// Catalog slug.
    pub service: String,
    pub client_id: String,
    /// Whether a client secret is stored (public clients have none).
    pub has_secret: bool,
    /// Overrides of the catalog's endpoints (self-hosted providers, tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorize_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    /// RFC 7009 revocation endpoint, called when a connection is
    /// disconnected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_url: Option<String>,
    /// The API origin the connection's calls go to instead of the catalog's
    /// hosts (`https://github.example.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base_url: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A pending authorization, keyed by the SHA-256 of its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingConnect {
    pub digest: String,
    pub operator_id: String,
    pub service: String,
    pub scopes: Vec<String>,
    pub name: Option<String>,
    pub fields: BTreeMap<String, String>,
    /// The connection being re-authorized, if any.
    pub connection_id: Option<String>,
    /// Who started it (the audit actor of the callback).
    pub actor: String,
    pub redirect_uri: String,
    /// The PKCE verifier, sealed under the operator's data key.
    pub sealed_verifier: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// The token state of an OAuth connection (the tokens are in the sealed
/// secret: `token` and `refresh_token`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionOAuth {
    pub client_id: String,
    pub expires_at: Option<Timestamp>,
    pub refreshed_at: Option<Timestamp>,
    pub has_refresh_token: bool,
    /// Scope the provider reported, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_scope: Option<String>,
    /// Bumped on every token write; a refresh claims the version it read.
    pub token_version: u64,
    /// The node refreshing right now, until when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<RefreshLease>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshLease {
    pub id: String,
    pub until: Timestamp,
}

impl ConnectionOAuth {
    pub fn view(&self) -> Value {
        json!({
            "client_id": self.client_id,
            "expires_at": self.expires_at.map(Timestamp::to_rfc3339),
            "refreshed_at": self.refreshed_at.map(Timestamp::to_rfc3339),
            "refreshable": self.has_refresh_token,
            "granted_scope": self.granted_scope,
        })
    }

    fn expiring(&self, now: Timestamp) -> bool {
        self.expires_at
            .is_some_and(|e| e.as_millis().saturating_sub(now.as_millis()) <= REFRESH_MARGIN_MS)
    }

    fn leased(&self, now: Timestamp) -> bool {
        self.lease.as_ref().is_some_and(|l| l.until > now)
    }
}

/// `POST /v1/services/oauth-apps`.
#[derive(Clone, Deserialize)]
pub struct ConfigureOAuthApp {
    pub service_id: String,
    pub client_id: String,
    #[serde(default, deserialize_with = "optional_secret")]
    pub client_secret: Option<Secret<String>>,
    #[serde(default)]
    pub authorize_url: Option<String>,
    #[serde(default)]
    pub token_url: Option<String>,
    #[serde(default)]
    pub revoke_url: Option<String>,
    #[serde(default)]
    pub api_base_url: Option<String>,
}

impl std::fmt::Debug for ConfigureOAuthApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigureOAuthApp")
            .field("service_id", &self.service_id)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

fn optional_secret<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Secret<String>>, D::Error> {
    Ok(Option::<String>::deserialize(d)?
        .filter(|s| !s.is_empty())
        .map(Secret::new))
}

/// The query of `GET /v1/services/oauth/callback`.
#[derive(Clone, Default, Deserialize)]
pub struct OAuthCallback {
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

impl std::fmt::Debug for OAuthCallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OAuthCallback([redacted])")
    }
}

/// What a token endpoint gave.
struct TokenSet {
    access: Secret<String>,
    refresh: Option<Secret<String>>,
    expires_in: Option<i64>,
    scope: Option<String>,
}

/// Why a token call failed.
enum TokenFailure {
    /// The provider refused the grant (an OAuth error such as
    /// `invalid_grant`): only a new authorization helps.
    Refused(String),
    /// Anything else (network, 5xx, malformed answer): may be retried.
    Other(Error),
}

/// What a refresh is for.
pub(crate) enum Need<'a> {
    /// The stored token (of this token version) expires within the margin.
    Expiring(u64),
    /// The upstream refused this token.
    Rejected(&'a Secret<String>),
}

/// The error of a connection that needs a new authorization.
pub fn needs_reauth_error(c: &Connection) -> Error {
    Error::new(
        ErrorCode::Conflict,
        format!(
            "the {} connection {} needs re-authorization: its OAuth refresh was refused; reconnect it with POST /v1/services/connect {{service_id, scopes, connection_id}}",
            c.service, c.id
        ),
    )
    .with_details(json!({ "reason": "connection_needs_reauth", "connection_id": c.id, "service": c.service }))
}

/// Whether the connection may lend its credential now: `active` and
/// `invalid_credential` may (the upstream judges), `needs_reauth` and
/// `disconnected` may not.
pub fn check_usable(c: &Connection) -> Result<()> {
    match c.status.as_str() {
        "active" | "invalid_credential" => Ok(()),
        "needs_reauth" => Err(needs_reauth_error(c)),
        _ => Err(Error::new(
            ErrorCode::ScopeDenied,
            "the connection is disconnected",
        )),
    }
}

/// An OAuth error code as the provider sent it, if it looks like one.
fn oauth_error_code(v: &str) -> Option<String> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    ok.then(|| v.to_owned())
}

fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(stack_crypto::sha256(verifier.as_bytes()))
}

fn state_aad(digest: &str) -> Vec<u8> {
    format!("stack/oauth-state/v1:{digest}").into_bytes()
}

fn app_aad(operator_id: &str, service: &str) -> Vec<u8> {
    format!("stack/oauth-app/v1:{operator_id}:{service}").into_bytes()
}

/// An absolute http(s) URL with a DNS host, no userinfo or fragment;
/// returns the lower-case host.
fn endpoint_host(field: &str, url: &str) -> Result<String> {
    let bad = || {
        Error::invalid_field(
            field,
            format!("{field} must be an absolute http(s) URL on a DNS host"),
        )
    };
    let parsed = url::Url::parse(url).map_err(|_| bad())?;
    if !matches!(parsed.scheme(), "http" | "https")
        || !parsed.username().is_empty()
        || parsed.password().is_some()
        || parsed.fragment().is_some()
    {
        return Err(bad());
    }
    match parsed.host() {
        Some(url::Host::Domain(d)) => Ok(d.to_ascii_lowercase()),
        _ => Err(bad()),
    }
}

/// An origin `scheme://host[:port]` (no path).
fn api_origin(url: &str) -> Result<(String, String)> {
    let host = endpoint_host("api_base_url", url)?;
    let parsed =
        url::Url::parse(url).map_err(|_| Error::invalid_field("api_base_url", "not a URL"))?;
    if parsed.path() != "/" || parsed.query().is_some() {
        return Err(Error::invalid_field(
            "api_base_url",
            "api_base_url is an origin such as https://api.example.com (no path)",
        ));
    }
    let origin = parsed.origin().ascii_serialization();
    Ok((origin, host))
}

/// The checked target of an endpoint URL (the SSRF guard's URL half).
fn endpoint_target(url: &str) -> Result<Target> {
    let host = endpoint_host("token_url", url)?;
    stack_proxy::parse_target(url, &[host]).map_err(|e| {
        Error::new(
            ErrorCode::ValidationError,
            format!("the OAuth endpoint URL is refused: {e}"),
        )
        .with_details(json!({ "reason": e.code() }))
    })
}

fn oauth_spec(service: &Service) -> Result<&OAuthSpec> {
    service.oauth.as_ref().ok_or_else(|| {
        Error::invalid_field(
            "service_id",
            format!("{} does not connect by OAuth", service.slug),
        )
    })
}

fn catalog_service(service_id: &str) -> Result<&'static Service> {
    let slug = service_id.strip_prefix("svc_").unwrap_or(service_id);
    catalog()?
        .service(slug)
        .filter(|s| s.slug != "custom")
        .ok_or_else(|| Error::not_found("service", service_id))
}

/// The JSON (or, from providers that ignore `Accept`, form-encoded) answer
/// of a token endpoint.
fn token_answer(body: &[u8]) -> Map<String, Value> {
    if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) {
        return m;
    }
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect()
}

fn parse_tokens(status: u16, body: &[u8]) -> std::result::Result<TokenSet, TokenFailure> {
    let m = token_answer(body);
    let error = m
        .get("error")
        .and_then(Value::as_str)
        .map(|e| oauth_error_code(e).unwrap_or_else(|| "invalid_response".into()));
    let access = m
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty());
    let refused_in_body = m.get("ok").and_then(Value::as_bool) == Some(false);
    match (access, error) {
        (Some(token), None) if (200..300).contains(&status) && !refused_in_body => {
            let clean = |t: &str| {
                t.len() <= MAX_TOKEN_BYTES && t.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
            };
            if !clean(token) {
                return Err(TokenFailure::Other(Error::new(
                    ErrorCode::UpstreamUnavailable,
                    "the provider's token endpoint answered a malformed token",
                )));
            }
            let refresh = m
                .get("refresh_token")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty() && clean(t))
                .map(|t| Secret::new(t.to_owned()));
            let expires_in = match m.get("expires_in") {
                Some(Value::Number(n)) => n.as_i64(),
                Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
                _ => None,
            }
            .map(|s| s.clamp(0, 10 * 365 * 24 * 3600));
            let scope = m
                .get("scope")
                .and_then(Value::as_str)
                .filter(|s| s.len() <= 4096)
                .map(str::to_owned);
            Ok(TokenSet {
                access: Secret::new(token.to_owned()),
                refresh,
                expires_in,
                scope,
            })
        }
        (_, Some(code)) if status < 500 => Err(TokenFailure::Refused(code)),
        _ if (400..500).contains(&status) || refused_in_body => {
            Err(TokenFailure::Refused(format!("http_{status}")))
        }
        _ => Err(TokenFailure::Other(
            Error::new(
                ErrorCode::UpstreamUnavailable,
                format!("the provider's token endpoint answered HTTP {status} without a token"),
            )
            .with_details(json!({ "reason": "oauth_token_endpoint", "upstream_status": status })),
        )),
    }
}

impl App {
    /// `{public_url}/v1/services/oauth/callback`: the redirect URI every
    /// provider is given (register it with the provider's OAuth app).
    pub fn oauth_redirect_uri(&self) -> String {
        format!("{}{CALLBACK_PATH}", self.oauth_issuer())
    }

    fn egress_port(&self) -> Result<Arc<dyn EgressPort>> {
        self.egress
            .read()
            .ok()
            .and_then(|e| e.clone())
            .ok_or_else(|| Error::not_implemented("the egress client"))
    }

    fn oauth_app_view(&self, app: &OAuthApp) -> Value {
        let spec = catalog()
            .ok()
            .and_then(|c| c.service(&app.service))
            .and_then(|s| s.oauth.as_ref());
        json!({
            "service": app.service,
            "service_id": format!("svc_{}", app.service),
            "client_id": app.client_id,
            "client_secret_set": app.has_secret,
            "authorize_url": app.authorize_url.clone().or_else(|| spec.map(|s| s.authorize_url.clone())),
            "token_url": app.token_url.clone().or_else(|| spec.map(|s| s.token_url.clone())),
            "revoke_url": app.revoke_url.clone().or_else(|| spec.and_then(|s| s.revoke_url.clone())),
            "api_base_url": app.api_base_url,
            "pkce": spec.is_some_and(|s| s.pkce),
            "redirect_uri": self.oauth_redirect_uri(),
            "created_at": app.created_at.to_rfc3339(),
            "updated_at": app.updated_at.to_rfc3339(),
        })
    }

    /// Stores the operator's OAuth client for a catalog service
    /// (`POST /v1/services/oauth-apps`, `stack_configure_oauth_app`).
    pub async fn configure_oauth_app(
        &self,
        p: &Principal,
        cmd: ConfigureOAuthApp,
    ) -> Result<Value> {
        require(p, Permission::ServicesWrite)?;
        let service = catalog_service(&cmd.service_id)?;
        oauth_spec(service)?;
        let client_id = cmd.client_id.trim().to_owned();
        if client_id.is_empty()
            || client_id.len() > 512
            || !client_id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(Error::invalid_field(
                "client_id",
                "client_id is 1-512 printable characters",
            ));
        }
        if let Some(secret) = &cmd.client_secret
            && (secret.expose().len() > 4096
                || !secret.expose().bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(Error::invalid_field(
                "client_secret",
                "client_secret is at most 4096 printable characters",
            ));
        }
        for (field, url) in [
            ("authorize_url", &cmd.authorize_url),
            ("token_url", &cmd.token_url),
            ("revoke_url", &cmd.revoke_url),
        ] {
            if let Some(u) = url {
                endpoint_host(field, u)?;
            }
        }
        let api_base_url = match cmd.api_base_url.as_deref().filter(|u| !u.is_empty()) {
            Some(u) => Some(api_origin(u)?.0),
            None => None,
        };
        let now = self.now();
        let created_at = match self
            .store
            .get_oauth_app(&p.operator_id, &service.slug)
            .await?
        {
            Some((existing, _)) => existing.created_at,
            None => now,
        };
        let app = OAuthApp {
            operator_id: p.operator_id.clone(),
            service: service.slug.clone(),
            client_id,
            has_secret: cmd.client_secret.is_some(),
            authorize_url: cmd.authorize_url.filter(|u| !u.is_empty()),
            token_url: cmd.token_url.filter(|u| !u.is_empty()),
            revoke_url: cmd.revoke_url.filter(|u| !u.is_empty()),
            api_base_url,
            created_at,
            updated_at: now,
        };
        let key = self.operator_data_key(&p.operator_id).await?;
        let plain = Secret::new(
            cmd.client_secret
                .as_ref()
                .map(|s| s.expose().as_bytes().to_vec())
                .unwrap_or_default(),
        );
        let sealed = URL_SAFE_NO_PAD.encode(aead::seal(
            &key,
            self.rng.as_ref(),
            plain.expose(),
            &app_aad(&p.operator_id, &service.slug),
        )?);
        let audit = self.audit(
            Self::draft(p, Layer::Vault, "service.oauth_app.configure")
                .target("oauth_app", &format!("svc_{}", service.slug))
                .details(json!({
                    "service": service.slug,
                    "client_id": app.client_id,
                    "endpoints_overridden": app.authorize_url.is_some() || app.token_url.is_some(),
                    "api_base_url": app.api_base_url,
                })),
        )?;
        self.store.put_oauth_app(&app, &sealed, audit).await?;
        Ok(self.oauth_app_view(&app))
    }

    /// `GET /v1/services/oauth-apps`.
    pub async fn list_oauth_apps(&self, p: &Principal) -> Result<Vec<Value>> {
        require(p, Permission::ServicesRead)?;
        Ok(self
            .store
            .list_oauth_apps(&p.operator_id)
            .await?
            .iter()
            .map(|a| self.oauth_app_view(a))
            .collect())
    }

    /// `DELETE /v1/services/oauth-apps/{service_id}`. Existing connections
    /// keep working until their token needs a refresh.
    pub async fn delete_oauth_app(&self, p: &Principal, service_id: &str) -> Result<Value> {
        require(p, Permission::ServicesWrite)?;
        let service = catalog_service(service_id)?;
        let audit = self.audit(
            Self::draft(p, Layer::Vault, "service.oauth_app.delete")
                .target("oauth_app", &format!("svc_{}", service.slug))
                .details(json!({ "service": service.slug })),
        )?;
        if !self
            .store
            .delete_oauth_app(&p.operator_id, &service.slug, audit)
            .await?
        {
            return Err(Error::not_found("oauth app", service_id));
        }
        Ok(json!({ "service": service.slug, "deleted": true }))
    }

    async fn open_app(
        &self,
        operator_id: &str,
        service: &str,
    ) -> Result<Option<(OAuthApp, Option<Secret<String>>)>> {
        let Some((app, sealed)) = self.store.get_oauth_app(operator_id, service).await? else {
            return Ok(None);
        };
        let key = self.operator_data_key(operator_id).await?;
        let bytes = URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| Error::internal("stored client secret is not base64url"))?;
        let plain = aead::open(&key, &bytes, &app_aad(operator_id, service))
            .map_err(|_| Error::internal("cannot open the stored client secret"))?;
        let secret = String::from_utf8(plain.expose().clone())
            .map_err(|_| Error::internal("stored client secret is not UTF-8"))?;
        let secret = (!secret.is_empty()).then(|| Secret::new(secret));
        Ok(Some((app, secret)))
    }

    /// Starts the authorization-code flow: answers the URL to open.
    pub(crate) async fn start_oauth_connect(
        &self,
        p: &Principal,
        service: &'static Service,
        cmd: ConnectService,
    ) -> Result<Value> {
        let spec = oauth_spec(service)?;
        let (app, _) = self
            .store
            .get_oauth_app(&p.operator_id, &service.slug)
            .await?
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::Conflict,
                    format!(
                        "no OAuth app is configured for {}: POST /v1/services/oauth-apps with its client_id and client_secret first (or send oauth_token)",
                        service.slug
                    ),
                )
                .with_details(json!({ "reason": "oauth_app_missing", "service": service.slug }))
            })?;
        if app.api_base_url.is_none() {
            service
                .resolve_hosts(&cmd.fields)
                .map_err(|e| Error::invalid_field("fields", e.to_string()))?;
        }
        if let Some(id) = &cmd.connection_id {
            let (c, _) = self.load_connection(p, id).await?;
            if c.service != service.slug || c.status == "disconnected" {
                return Err(Error::invalid_field(
                    "connection_id",
                    format!("connection_id must be a live {} connection", service.slug),
                ));
            }
        }
        let now = self.now();
        let state = stack_crypto::random_token(self.rng.as_ref(), 32)?;
        let digest = stack_crypto::sha256_hex(state.as_bytes());
        let verifier = if spec.pkce {
            Some(Secret::new(stack_crypto::random_token(
                self.rng.as_ref(),
                32,
            )?))
        } else {
            None
        };
        let sealed_verifier = match &verifier {
            Some(v) => {
                let key = self.operator_data_key(&p.operator_id).await?;
                Some(URL_SAFE_NO_PAD.encode(aead::seal(
                    &key,
                    self.rng.as_ref(),
                    v.expose().as_bytes(),
                    &state_aad(&digest),
                )?))
            }
            None => None,
        };
        let redirect_uri = self.oauth_redirect_uri();
        let authorize = app.authorize_url.as_deref().unwrap_or(&spec.authorize_url);
        endpoint_host("authorize_url", authorize)?;
        let mut url = url::Url::parse(authorize)
            .map_err(|_| Error::internal("the authorize URL does not parse"))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &app.client_id)
                .append_pair("redirect_uri", &redirect_uri)
                .append_pair("scope", &cmd.scopes.join(&spec.scope_separator))
                .append_pair("state", &state);
            if let Some(v) = &verifier {
                q.append_pair("code_challenge", &pkce_challenge(v.expose()))
                    .append_pair("code_challenge_method", "S256");
            }
            for (k, v) in &spec.authorize_params {
                q.append_pair(k, v);
            }
        }
        let expires_at = now.plus_millis(STATE_TTL_MS);
        let pending = PendingConnect {
            digest,
            operator_id: p.operator_id.clone(),
            service: service.slug.clone(),
            scopes: cmd.scopes.clone(),
            name: cmd.name.clone(),
            fields: cmd.fields.clone(),
            connection_id: cmd.connection_id.clone(),
            actor: p.actor_label(),
            redirect_uri: redirect_uri.clone(),
            sealed_verifier,
            created_at: now,
            expires_at,
        };
        let audit = self.audit(
            Self::draft(p, Layer::Vault, "service.oauth_start")
                .target("service", &format!("svc_{}", service.slug))
                .details(json!({
                    "service": service.slug,
                    "scopes": cmd.scopes,
                    "connection_id": cmd.connection_id,
                    "pkce": verifier.is_some(),
                    "expires_at": expires_at.to_rfc3339(),
                })),
        )?;
        self.store.insert_connect_state(&pending, audit).await?;
        Ok(json!({
            "status": "pending",
            "service": service.slug,
            "service_id": format!("svc_{}", service.slug),
            "authorization_url": url.to_string(),
            "redirect_uri": redirect_uri,
            "expires_at": expires_at.to_rfc3339(),
            "scopes": cmd.scopes,
            "connection_id": cmd.connection_id,
        }))
    }

    /// `GET /v1/services/oauth/callback`: the provider sent the browser back.
    /// Unauthenticated; the single-use state is the capability.
    pub async fn complete_oauth_connect(&self, cb: OAuthCallback) -> Result<Value> {
        let unknown = || {
            Error::invalid_field(
                "state",
                "unknown, expired or already used state: start again with POST /v1/services/connect",
            )
        };
        let state = cb
            .state
            .filter(|s| !s.is_empty() && s.len() <= 512)
            .ok_or_else(unknown)?;
        let digest = stack_crypto::sha256_hex(state.as_bytes());
        let pending = self
            .store
            .take_connect_state(&digest)
            .await?
            .ok_or_else(unknown)?;
        if pending.expires_at <= self.now() {
            return Err(unknown());
        }
        let outcome = self.finish_oauth_connect(&pending, cb.code, cb.error).await;
        if let Err(e) = &outcome {
            let mut d = AuditDraft::new(pending.actor.clone(), Layer::Vault, "service.connect")
                .target("service", &format!("svc_{}", pending.service))
                .details(json!({ "service": pending.service, "connected_via": "oauth", "connection_id": pending.connection_id }));
            d.outcome = Outcome::Failure;
            d.error_code = Some(e.code.as_str().to_owned());
            d.error_message = Some(e.message.clone());
            let audit = self.audit(d)?;
            self.store.append_audit(&pending.operator_id, audit).await?;
        }
        outcome
    }

    async fn finish_oauth_connect(
        &self,
        pending: &PendingConnect,
        code: Option<String>,
        error: Option<String>,
    ) -> Result<Value> {
        if let Some(e) = error {
            let code = oauth_error_code(&e).unwrap_or_else(|| "error".into());
            return Err(Error::new(
                ErrorCode::ValidationError,
                format!("the provider did not authorize the connection ({code})"),
            )
            .with_details(json!({ "reason": "oauth_denied", "error": code })));
        }
        let code = code
            .filter(|c| !c.is_empty() && c.len() <= 4096)
            .ok_or_else(|| Error::invalid_field("code", "the callback carries no code"))?;
        let service = catalog_service(&pending.service)?;
        let spec = oauth_spec(service)?;
        let (app, client_secret) = self
            .open_app(&pending.operator_id, &service.slug)
            .await?
            .ok_or_else(|| Error::conflict("the service's OAuth app was removed meanwhile"))?;
        let verifier = match &pending.sealed_verifier {
            Some(sealed) => {
                let key = self.operator_data_key(&pending.operator_id).await?;
                let bytes = URL_SAFE_NO_PAD
                    .decode(sealed)
                    .map_err(|_| Error::internal("stored verifier is not base64url"))?;
                let plain = aead::open(&key, &bytes, &state_aad(&pending.digest))
                    .map_err(|_| Error::internal("cannot open the stored verifier"))?;
                Some(Secret::new(
                    String::from_utf8(plain.expose().clone())
                        .map_err(|_| Error::internal("stored verifier is not UTF-8"))?,
                ))
            }
            None => None,
        };
        let mut params: Vec<(&str, Secret<String>)> = vec![
            ("grant_type", Secret::new("authorization_code".into())),
            ("code", Secret::new(code)),
            ("redirect_uri", Secret::new(pending.redirect_uri.clone())),
        ];
        if let Some(v) = verifier {
            params.push(("code_verifier", v));
        }
        let endpoint = app
            .token_url
            .clone()
            .unwrap_or_else(|| spec.token_url.clone());
        let tokens = match self
            .token_call(
                &endpoint,
                spec,
                &app.client_id,
                client_secret.as_ref(),
                params,
            )
            .await
        {
            Ok(t) => t,
            Err(TokenFailure::Refused(code)) => {
                return Err(Error::new(
                    ErrorCode::ValidationError,
                    format!("the provider refused the authorization code ({code})"),
                )
                .with_details(json!({ "reason": "oauth_code_refused", "error": code })));
            }
            Err(TokenFailure::Other(e)) => return Err(e),
        };
        let now = self.now();
        let (hosts, base_url) = match &app.api_base_url {
            Some(origin) => {
                let (origin, host) = api_origin(origin)?;
                (vec![host], Some(origin))
            }
            None => (
                service
                    .resolve_hosts(&pending.fields)
                    .map_err(|e| Error::invalid_field("fields", e.to_string()))?,
                None,
            ),
        };
        let mut secret = BTreeMap::from([("token".to_owned(), tokens.access.into_inner())]);
        if let Some(r) = &tokens.refresh {
            secret.insert("refresh_token".to_owned(), r.expose().clone());
        }
        let state = ConnectionOAuth {
            client_id: app.client_id.clone(),
            expires_at: tokens
                .expires_in
                .map(|s| now.plus_millis(s.saturating_mul(1000))),
            refreshed_at: None,
            has_refresh_token: tokens.refresh.is_some(),
            granted_scope: tokens.scope.clone(),
            token_version: 1,
            lease: None,
        };
        let actor_draft = |action: &str, id: &str| {
            AuditDraft::new(pending.actor.clone(), Layer::Vault, action).target("connection", id)
        };

        // Re-authorization of an existing connection: same id, grants stay.
        if let Some(id) = &pending.connection_id {
            let sealed = self.seal_secret(&pending.operator_id, id, &secret).await?;
            drop(secret);
            let audit = self.audit(actor_draft("service.reconnect", id).details(json!({
                "service": service.slug, "scopes": pending.scopes, "connected_via": "oauth",
                "refreshable": state.has_refresh_token,
            })))?;
            let scopes = pending.scopes.clone();
            let slug = service.slug.clone();
            let changed = self
                .update_connection(
                    &pending.operator_id,
                    id,
                    Box::new(move |cur: &Connection| {
                        if cur.status == "disconnected" || cur.service != slug {
                            return Ok(None);
                        }
                        let mut next = cur.clone();
                        let version = cur.oauth.as_ref().map_or(0, |o| o.token_version);
                        next.status = "active".into();
                        next.connected_via = "oauth".into();
                        next.auth = AuthScheme::oauth();
                        next.scopes = scopes;
                        next.hosts = hosts;
                        next.base_url = base_url;
                        next.secret_fields = if state.has_refresh_token {
                            vec!["refresh_token".into(), "token".into()]
                        } else {
                            vec!["token".into()]
                        };
                        next.oauth = Some(ConnectionOAuth {
                            token_version: version + 1,
                            ..state
                        });
                        next.updated_at = now;
                        Ok(Some(ConnectionUpdate {
                            connection: next,
                            sealed: Some(sealed),
                            audit: Some(audit),
                        }))
                    }),
                )
                .await?;
            return match changed {
                Some((c, true)) => Ok(json!({
                    "connected": true, "reauthorized": true, "connection_id": c.id,
                    "service": c.service, "status": c.status, "connection": connection_view(&c),
                })),
                _ => Err(Error::conflict(
                    "the connection was disconnected during the authorization",
                )),
            };
        }

        let id = format!(
            "scon_{}",
            stack_crypto::random_token(self.rng.as_ref(), 16)?
        );
        let c = Connection {
            id: id.clone(),
            operator_id: pending.operator_id.clone(),
            service: service.slug.clone(),
            name: pending.name.clone().unwrap_or_else(|| service.name.clone()),
            description: None,
            hosts,
            base_url,
            auth: AuthScheme::oauth(),
            scopes: pending.scopes.clone(),
            fields: pending.fields.clone(),
            secret_fields: secret.keys().cloned().collect(),
            status: "active".into(),
            connected_via: "oauth".into(),
            created_at: now,
            updated_at: now,
            oauth: Some(state),
            verification: None,
        };
        let sealed = self.seal_secret(&pending.operator_id, &id, &secret).await?;
        drop(secret);
        let audit = self.audit(actor_draft("service.connect", &id).details(json!({
            "service": c.service, "hosts": c.hosts, "scopes": c.scopes, "connected_via": "oauth",
            "refreshable": c.oauth.as_ref().is_some_and(|o| o.has_refresh_token),
        })))?;
        self.insert_connection(&c, &sealed, audit).await?;
        Ok(json!({
            "connected": true, "connection_id": c.id, "service": c.service,
            "status": c.status, "connection": connection_view(&c),
        }))
    }

    /// One call to a token endpoint through the egress port.
    async fn token_call(
        &self,
        endpoint: &str,
        spec: &OAuthSpec,
        client_id: &str,
        client_secret: Option<&Secret<String>>,
        params: Vec<(&str, Secret<String>)>,
    ) -> std::result::Result<TokenSet, TokenFailure> {
        let answer = self
            .provider_call(endpoint, spec, client_id, client_secret, params)
            .await
            .map_err(TokenFailure::Other)?;
        parse_tokens(answer.status, &answer.body)
    }

    /// A POST to one of the provider's OAuth endpoints (token, revocation),
    /// with the client authenticated as the catalog says, through the
    /// SSRF-guarded egress port.
    async fn provider_call(
        &self,
        endpoint: &str,
        spec: &OAuthSpec,
        client_id: &str,
        client_secret: Option<&Secret<String>>,
        mut params: Vec<(&str, Secret<String>)>,
    ) -> Result<crate::proxy::Inbound> {
        let target = endpoint_target(endpoint)?;
        let egress = self.egress_port()?;
        let mut headers: Vec<(String, Secret<String>)> = vec![
            ("accept".into(), Secret::new("application/json".into())),
            ("user-agent".into(), Secret::new("stack-oauth".into())),
        ];
        match (spec.token_auth, client_secret) {
            (TokenAuth::ClientSecretBasic, Some(secret)) => {
                let pair = format!("{client_id}:{}", secret.expose());
                headers.push((
                    "authorization".into(),
                    Secret::new(format!("Basic {}", STANDARD.encode(pair.as_bytes()))),
                ));
            }
            (_, secret) => {
                params.push(("client_id", Secret::new(client_id.to_owned())));
                if let Some(s) = secret {
                    params.push(("client_secret", s.clone()));
                }
            }
        }
        let body = match spec.token_body {
            TokenBody::Form => {
                headers.push((
                    "content-type".into(),
                    Secret::new("application/x-www-form-urlencoded".into()),
                ));
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in &params {
                    form.append_pair(k, v.expose());
                }
                form.finish().into_bytes()
            }
            TokenBody::Json => {
                headers.push((
                    "content-type".into(),
                    Secret::new("application/json".into()),
                ));
                let m: Map<String, Value> = params
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), Value::String(v.expose().clone())))
                    .collect();
                serde_json::to_vec(&m)
                    .map_err(|_| Error::internal("token request did not serialize"))?
            }
        };
        drop(params);
        egress
            .send(Outbound {
                target,
                method: "POST".into(),
                headers,
                body: Some(body),
            })
            .await
    }

    /// Best effort, before a disconnect: asks the provider to revoke the
    /// connection's tokens (RFC 7009: the refresh token, which takes its
    /// access tokens with it, else the access token) at the catalog's
    /// `revoke_url` or the OAuth app's override. Returns what happened, for
    /// the audit entry and the answer: `revoked`, `not_supported` (no
    /// revocation endpoint, or not an OAuth connection), `failed` (the
    /// provider refused or could not be reached; the local disconnect goes
    /// ahead all the same, and the tokens stay sealed and unused).
    pub(crate) async fn revoke_at_provider(
        &self,
        c: &Connection,
        sealed: Option<&str>,
    ) -> &'static str {
        if c.connected_via != "oauth" {
            return "not_supported";
        }
        let Some(sealed) = sealed else {
            return "not_supported";
        };
        let Ok(service) = catalog_service(&c.service) else {
            return "not_supported";
        };
        let Ok(spec) = oauth_spec(service) else {
            return "not_supported";
        };
        let app = match self.open_app(&c.operator_id, &c.service).await {
            Ok(Some(app)) => app,
            _ => return "not_supported",
        };
        let (app, client_secret) = app;
        let Some(endpoint) = app.revoke_url.clone().or_else(|| spec.revoke_url.clone()) else {
            return "not_supported";
        };
        let Ok(secret) = self.open_secret(c, sealed).await else {
            return "failed";
        };
        let (token, hint) = match (secret.get("refresh_token"), secret.get("token")) {
            (Some(r), _) => (r.clone(), "refresh_token"),
            (None, Some(a)) => (a.clone(), "access_token"),
            (None, None) => return "not_supported",
        };
        drop(secret);
        let params = vec![
            ("token", token),
            ("token_type_hint", Secret::new(hint.to_owned())),
        ];
        match self
            .provider_call(
                &endpoint,
                spec,
                &app.client_id,
                client_secret.as_ref(),
                params,
            )
            .await
        {
            Ok(answer) if (200..300).contains(&answer.status) => "revoked",
            Ok(answer) => {
                tracing::warn!(
                    service = %c.service,
                    status = answer.status,
                    "the provider refused to revoke a disconnected connection's token"
                );
                "failed"
            }
            Err(e) => {
                tracing::warn!(service = %c.service, error = %e.message, "token revocation at the provider failed");
                "failed"
            }
        }
    }

    fn refresh_lock(&self, connection_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        match self.operator_keys.1.lock() {
            Ok(mut m) => m.entry(connection_id.to_owned()).or_default().clone(),
            Err(_) => Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The secret to attach now: for OAuth connections only the access
    /// token, refreshed first when it expires within the margin.
    pub(crate) async fn usable_secret(
        &self,
        c: &Connection,
        sealed: &str,
    ) -> Result<BTreeMap<String, Secret<String>>> {
        let Some(state) = c.oauth.as_ref().filter(|_| c.connected_via == "oauth") else {
            return self.open_secret(c, sealed).await;
        };
        check_usable(c)?;
        if state.has_refresh_token
            && state.expiring(self.now())
            && let Some(token) = self
                .refresh_oauth(&c.operator_id, &c.id, Need::Expiring(state.token_version))
                .await?
        {
            return Ok(BTreeMap::from([("token".to_owned(), token)]));
        }
        let mut secret = self.open_secret(c, sealed).await?;
        let token = secret
            .remove("token")
            .ok_or_else(|| Error::internal("the OAuth connection holds no access token"))?;
        Ok(BTreeMap::from([("token".to_owned(), token)]))
    }

    /// Sends `out`; when the upstream answers 401 to an OAuth connection's
    /// bearer token, sends again with the stored token if that is a newer
    /// one, else (or if that is refused too) refreshes the token once and
    /// sends again. (An upstream refuses an unauthenticated request before
    /// acting on it, so a retry does not repeat an effect.)
    pub(crate) async fn send_with_oauth_retry(
        &self,
        egress: &dyn EgressPort,
        operator_id: &str,
        connection_id: &str,
        out: Outbound,
    ) -> Result<Inbound> {
        let bearer = out
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .and_then(|(_, v)| {
                let v = v.expose();
                v.get(..7)
                    .filter(|p| p.eq_ignore_ascii_case("bearer "))
                    .and_then(|_| v.get(7..))
                    .map(|t| Secret::new(t.to_owned()))
            });
        let Some(bearer) = bearer else {
            return egress.send(out).await;
        };
        // For sending again with another token (`out` itself is sent first).
        let template = with_bearer(&out, &bearer);
        let first = egress.send(out).await?;
        if first.status != 401 {
            return Ok(first);
        }
        let Some((c, sealed)) = self
            .store
            .get_connection(operator_id, connection_id)
            .await?
        else {
            return Ok(first);
        };
        if c.connected_via != "oauth" || !c.oauth.as_ref().is_some_and(|o| o.has_refresh_token) {
            return Ok(first);
        }
        let mut rejected = bearer;
        let mut last = first;
        // The token sent may be older than the stored one: another node
        // refreshed it and this node has not yet heard (see `access.rs`).
        // Then the stored token is tried before any refresh, and this node
        // reads the operator's connections again from now on.
        let stored = match &sealed {
            Some(sealed) => self.open_secret(&c, sealed).await?.remove("token"),
            None => None,
        };
        if let Some(stored) = stored
            && !stack_crypto::constant_time_eq(
                stored.expose().as_bytes(),
                rejected.expose().as_bytes(),
            )
        {
            self.access.forget_access(Some(operator_id));
            last = egress.send(with_bearer(&template, &stored)).await?;
            if last.status != 401 {
                return Ok(last);
            }
            rejected = stored;
        }
        let Some(token) = self
            .refresh_oauth(operator_id, connection_id, Need::Rejected(&rejected))
            .await?
        else {
            return Ok(last);
        };
        egress.send(with_bearer(&template, &token)).await
    }

    /// Refreshes the connection's token if it is still needed once this
    /// node holds the connection's lock and the stored lease. Returns the
    /// access token to use, or `None` when there is no refresh token and
    /// the rejected token is still the stored one.
    pub(crate) async fn refresh_oauth(
        &self,
        operator_id: &str,
        id: &str,
        need: Need<'_>,
    ) -> Result<Option<Secret<String>>> {
        let lock = self.refresh_lock(id);
        let _held = lock.lock().await;
        let deadline = std::time::Instant::now()
            + Duration::from_millis(REFRESH_LEASE_MS.unsigned_abs() + 5_000);
        loop {
            let (c, sealed) = self
                .store
                .get_connection(operator_id, id)
                .await?
                .ok_or_else(|| Error::not_found("connection", id))?;
            check_usable(&c)?;
            let sealed = sealed.ok_or_else(|| Error::not_found("credential", id))?;
            let mut secret = self.open_secret(&c, &sealed).await?;
            let access = secret
                .remove("token")
                .ok_or_else(|| Error::internal("the OAuth connection holds no access token"))?;
            let Some(state) = c.oauth.clone() else {
                return Ok(Some(access));
            };
            let now = self.now();
            let needed = match need {
                // A newer token (refreshed meanwhile) is used as it is.
                Need::Expiring(seen) => state.token_version == seen && state.expiring(now),
                Need::Rejected(t) => stack_crypto::constant_time_eq(
                    access.expose().as_bytes(),
                    t.expose().as_bytes(),
                ),
            };
            if !needed {
                // Someone refreshed meanwhile.
                return Ok(Some(access));
            }
            let Some(refresh) = secret.remove("refresh_token") else {
                return Ok(match need {
                    Need::Expiring(_) => Some(access),
                    Need::Rejected(_) => None,
                });
            };
            if std::time::Instant::now() > deadline {
                return Err(Error::new(
                    ErrorCode::UpstreamTimeout,
                    "another node has been refreshing this connection's OAuth token for too long",
                ));
            }
            if state.leased(now) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let lease_id = stack_crypto::random_token(self.rng.as_ref(), 16)?;
            let seen = state.token_version;
            let lease = RefreshLease {
                id: lease_id.clone(),
                until: now.plus_millis(REFRESH_LEASE_MS),
            };
            let claimed = self
                .update_connection(
                    operator_id,
                    id,
                    Box::new(move |cur: &Connection| {
                        let free = cur
                            .oauth
                            .as_ref()
                            .is_some_and(|o| o.token_version == seen && !o.leased(now));
                        if !free || check_usable(cur).is_err() {
                            return Ok(None);
                        }
                        let mut next = cur.clone();
                        if let Some(o) = &mut next.oauth {
                            o.lease = Some(lease);
                        }
                        Ok(Some(ConnectionUpdate {
                            connection: next,
                            sealed: None,
                            audit: None,
                        }))
                    }),
                )
                .await?;
            match claimed {
                Some((_, true)) => {}
                Some((_, false)) => continue,
                None => return Err(Error::not_found("connection", id)),
            }
            return self
                .refresh_under_lease(&c, &lease_id, refresh)
                .await
                .map(Some);
        }
    }

    async fn refresh_under_lease(
        &self,
        c: &Connection,
        lease_id: &str,
        refresh: Secret<String>,
    ) -> Result<Secret<String>> {
        let release = |lease_id: String| -> super::ConnectionChange {
            Box::new(move |cur: &Connection| {
                let mine = cur
                    .oauth
                    .as_ref()
                    .and_then(|o| o.lease.as_ref())
                    .is_some_and(|l| l.id == lease_id);
                if !mine {
                    return Ok(None);
                }
                let mut next = cur.clone();
                if let Some(o) = &mut next.oauth {
                    o.lease = None;
                }
                Ok(Some(ConnectionUpdate {
                    connection: next,
                    sealed: None,
                    audit: None,
                }))
            })
        };
        let service = catalog_service(&c.service)?;
        let spec = oauth_spec(service)?;
        let app = match self.open_app(&c.operator_id, &c.service).await {
            Ok(Some(app)) => app,
            other => {
                self.update_connection(&c.operator_id, &c.id, release(lease_id.to_owned()))
                    .await?;
                other?;
                return Err(Error::new(
                    ErrorCode::Conflict,
                    format!(
                        "the {} OAuth app was removed: configure it again (POST /v1/services/oauth-apps) to refresh this connection",
                        c.service
                    ),
                )
                .with_details(json!({ "reason": "oauth_app_missing", "service": c.service })));
            }
        };
        let (app, client_secret) = app;
        let endpoint = app
            .token_url
            .clone()
            .unwrap_or_else(|| spec.token_url.clone());
        let params = vec![
            ("grant_type", Secret::new("refresh_token".to_owned())),
            ("refresh_token", refresh.clone()),
        ];
        let answer = self
            .token_call(
                &endpoint,
                spec,
                &app.client_id,
                client_secret.as_ref(),
                params,
            )
            .await;
        let now = self.now();
        match answer {
            Ok(tokens) => {
                let rotated = tokens.refresh.is_some();
                let access = tokens.access;
                let mut secret = BTreeMap::from([("token".to_owned(), access.expose().clone())]);
                secret.insert(
                    "refresh_token".to_owned(),
                    tokens.refresh.unwrap_or(refresh).into_inner(),
                );
                let sealed = self.seal_secret(&c.operator_id, &c.id, &secret).await?;
                drop(secret);
                let expires_at = tokens
                    .expires_in
                    .map(|s| now.plus_millis(s.saturating_mul(1000)));
                let audit = self.audit(
                    AuditDraft::new("system", Layer::Vault, "service.oauth_refresh")
                        .target("connection", &c.id)
                        .details(json!({
                            "service": c.service,
                            "rotated": rotated,
                            "expires_at": expires_at.map(Timestamp::to_rfc3339),
                        })),
                )?;
                let lease_id = lease_id.to_owned();
                let scope = tokens.scope;
                let stored = self
                    .update_connection(
                        &c.operator_id,
                        &c.id,
                        Box::new(move |cur: &Connection| {
                            let mine = cur
                                .oauth
                                .as_ref()
                                .and_then(|o| o.lease.as_ref())
                                .is_some_and(|l| l.id == lease_id);
                            if !mine || cur.status == "disconnected" {
                                return Ok(None);
                            }
                            let mut next = cur.clone();
                            if let Some(o) = &mut next.oauth {
                                o.lease = None;
                                o.token_version += 1;
                                o.expires_at = expires_at;
                                o.refreshed_at = Some(now);
                                o.has_refresh_token = true;
                                if scope.is_some() {
                                    o.granted_scope = scope;
                                }
                            }
                            next.updated_at = now;
                            Ok(Some(ConnectionUpdate {
                                connection: next,
                                sealed: Some(sealed),
                                audit: Some(audit),
                            }))
                        }),
                    )
                    .await?;
                if !stored.is_some_and(|(_, changed)| changed) {
                    tracing::warn!(
                        connection_id = %c.id,
                        "the refreshed OAuth token was not stored: the connection's refresh lease was lost or it was disconnected"
                    );
                }
                Ok(access)
            }
            Err(TokenFailure::Refused(code)) => {
                let mut d = AuditDraft::new("system", Layer::Vault, "service.oauth_refresh")
                    .target("connection", &c.id)
                    .details(json!({ "service": c.service, "error": code, "connection_status": "needs_reauth" }));
                d.outcome = Outcome::Failure;
                d.error_code = Some("OAUTH_REFRESH_REFUSED".into());
                d.error_message = Some(format!("the provider refused the refresh ({code})"));
                let audit = self.audit(d)?;
                let lease_id = lease_id.to_owned();
                self.update_connection(
                    &c.operator_id,
                    &c.id,
                    Box::new(move |cur: &Connection| {
                        let lease = cur.oauth.as_ref().and_then(|o| o.lease.as_ref());
                        if lease.is_some_and(|l| l.id != lease_id) || cur.status == "disconnected" {
                            return Ok(None);
                        }
                        let mut next = cur.clone();
                        next.status = "needs_reauth".into();
                        next.updated_at = now;
                        if let Some(o) = &mut next.oauth {
                            o.lease = None;
                        }
                        Ok(Some(ConnectionUpdate {
                            connection: next,
                            sealed: None,
                            audit: Some(audit),
                        }))
                    }),
                )
                .await?;
                if let Err(e) = self
                    .raise_security_event(
                        &c.operator_id,
                        None,
                        None,
                        "oauth_refresh_failed",
                        "warning",
                        &format!(
                            "the provider refused to refresh the OAuth token of the {} connection {} ({code}); it needs re-authorization",
                            c.service, c.id
                        ),
                        json!({ "connection_id": c.id, "service": c.service, "error": code }),
                    )
                    .await
                {
                    tracing::warn!(code = e.code.as_str(), "could not record the refresh failure as a security event");
                }
                let mut marked = c.clone();
                marked.status = "needs_reauth".into();
                Err(needs_reauth_error(&marked)
                    .with_details(json!({ "reason": "connection_needs_reauth", "connection_id": c.id, "service": c.service, "error": code })))
            }
            Err(TokenFailure::Other(e)) => {
                self.update_connection(&c.operator_id, &c.id, release(lease_id.to_owned()))
                    .await?;
                Err(e)
            }
        }
    }
}

/// A copy of `out` whose `Authorization` header carries `token`.
fn with_bearer(out: &Outbound, token: &Secret<String>) -> Outbound {
    Outbound {
        target: out.target.clone(),
        method: out.method.clone(),
        headers: out
            .headers
            .iter()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case("authorization") {
                    Secret::new(format!("Bearer {}", token.expose()))
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect(),
        body: out.body.clone(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    fn ok(status: u16, body: &str) -> TokenSet {
        match parse_tokens(status, body.as_bytes()) {
            Ok(t) => t,
            Err(TokenFailure::Refused(c)) => panic!("refused: {c}"),
            Err(TokenFailure::Other(e)) => panic!("other: {e}"),
        }
    }

    fn refused(status: u16, body: &str) -> String {
        match parse_tokens(status, body.as_bytes()) {
            Err(TokenFailure::Refused(c)) => c,
            _ => panic!("expected a refusal for {status} {body}"),
        }
    }

    fn transient(status: u16, body: &str) -> bool {
        matches!(
            parse_tokens(status, body.as_bytes()),
            Err(TokenFailure::Other(_))
        )
    }

    #[test]
    fn pkce_matches_rfc7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn token_answers_are_read_in_every_dialect() {
        let t = ok(
            200,
            r#"{"access_token":"at","refresh_token":"rt","expires_in":3600,"scope":"a b"}"#,
        );
        assert_eq!(t.access.expose(), "at");
        assert_eq!(t.refresh.as_ref().map(|r| r.expose().as_str()), Some("rt"));
        assert_eq!(
            (t.expires_in, t.scope.as_deref()),
            (Some(3600), Some("a b"))
        );
        // GitHub without Accept: form-encoded; expires_in as a string.
        let t = ok(200, "access_token=gho_x&expires_in=28800&token_type=bearer");
        assert_eq!(
            (t.access.expose().as_str(), t.expires_in),
            ("gho_x", Some(28800))
        );
        assert!(t.refresh.is_none());
        // No expiry is no expiry; a negative one is now.
        assert_eq!(ok(200, r#"{"access_token":"x"}"#).expires_in, None);
        assert_eq!(
            ok(200, r#"{"access_token":"x","expires_in":-5}"#).expires_in,
            Some(0)
        );
    }

    #[test]
    fn refusals_and_transient_failures_are_told_apart() {
        assert_eq!(
            refused(400, r#"{"error":"invalid_grant"}"#),
            "invalid_grant"
        );
        assert_eq!(
            refused(401, r#"{"error":"invalid_client"}"#),
            "invalid_client"
        );
        // Slack and GitHub refuse inside a 200.
        assert_eq!(
            refused(200, r#"{"ok":false,"error":"invalid_refresh_token"}"#),
            "invalid_refresh_token"
        );
        assert_eq!(
            refused(200, "error=bad_verification_code&error_description=x"),
            "bad_verification_code"
        );
        assert_eq!(refused(400, "not json"), "http_400");
        // An error code that is not a plain token is not echoed.
        assert_eq!(
            refused(400, r#"{"error":"<script>alert(1)</script>"}"#),
            "invalid_response"
        );
        // Server trouble is not a refusal: the connection stays as it is.
        assert!(transient(503, r#"{"error":"temporarily_unavailable"}"#));
        assert!(transient(502, "bad gateway"));
        assert!(transient(200, "{}"));
        // A token with a line break is never stored.
        assert!(transient(200, "{\"access_token\":\"a\\r\\nX-Evil: 1\"}"));
    }

    #[test]
    fn endpoint_urls_must_be_plain_http_urls_on_dns_names() {
        assert_eq!(
            endpoint_host("token_url", "https://Auth.Example.com/token").unwrap(),
            "auth.example.com"
        );
        for bad in [
            "file:///etc/passwd",
            "https://user:pw@auth.example.com/token",
            "https://127.0.0.1/token",
            "https://[::1]/token",
            "https://auth.example.com/token#x",
            "auth.example.com/token",
        ] {
            assert!(endpoint_host("token_url", bad).is_err(), "{bad}");
        }
        assert_eq!(
            api_origin("https://github.example.com").unwrap(),
            (
                "https://github.example.com".to_owned(),
                "github.example.com".to_owned()
            )
        );
        assert!(api_origin("https://github.example.com/api/v3").is_err());
    }

    #[test]
    fn expiry_margin_and_leases() {
        let now = Timestamp::from_millis(1_000_000);
        let mut o = ConnectionOAuth {
            client_id: "c".into(),
            expires_at: Some(now.plus_millis(REFRESH_MARGIN_MS + 1)),
            refreshed_at: None,
            has_refresh_token: true,
            granted_scope: None,
            token_version: 1,
            lease: None,
        };
        assert!(!o.expiring(now));
        o.expires_at = Some(now.plus_millis(REFRESH_MARGIN_MS));
        assert!(o.expiring(now));
        o.expires_at = None;
        assert!(!o.expiring(now));
        o.lease = Some(RefreshLease {
            id: "l".into(),
            until: now.plus_millis(1),
        });
        assert!(o.leased(now));
        assert!(!o.leased(now.plus_millis(1)));
    }
}
