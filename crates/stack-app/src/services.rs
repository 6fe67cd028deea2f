//! Services, connections, sealed credentials and grants (issue 4).
//!
//! A **connection** is an operator's credential for one service (a catalog
//! service such as Slack, or a custom HTTP API). Its secret fields are sealed
//! with AES-256-GCM under the operator's data key, which is itself sealed
//! under the master key (see `docs/design/keys.md`); they are opened only to
//! hand a credential to an authorised caller or, later, to the proxy. A
//! **grant** gives one agent some of a connection's scopes, optionally
//! narrowed by constraints and named intents; passports carry an agent's
//! grants as `stk.services`.
//!
//! [`oauth`] connects catalog services by the OAuth authorization-code flow
//! and keeps their tokens fresh; [`verify`] health-checks a connection.

pub mod oauth;
pub mod verify;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use stack_audit::Layer;
use stack_core::principal::PrincipalKind;
use stack_core::{Error, ErrorCode, Permission, Principal, Result, Role, Secret, Timestamp};
use stack_crypto::aead::{self, DataKey};
use stack_passport::ServiceGrant;
use stack_proxy::{AuthScheme, Catalog, ConstraintSet};

use crate::agents::CredentialAccess;
use crate::{App, NewAudit, require};

/// A stored connection (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    pub id: String,
    pub operator_id: String,
    /// Catalog slug (`slack`, …) or `custom`.
    pub service: String,
    pub name: String,
    pub description: Option<String>,
    /// The only hosts the credential may be sent to.
    pub hosts: Vec<String>,
    /// For custom connections: the only origin (`https://api.example.com`).
    pub base_url: Option<String>,
    pub auth: AuthScheme,
    pub scopes: Vec<String>,
    /// Non-secret template fields (e.g. an Atlassian site).
    pub fields: BTreeMap<String, String>,
    /// Names of the sealed secret fields (values are never here).
    pub secret_fields: Vec<String>,
    /// `active`, `invalid_credential` (the last verification was refused),
    /// `needs_reauth` (an OAuth refresh failed) or `disconnected`.
    pub status: String,
    /// `custom`, `token` or `oauth`.
    pub connected_via: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Token state of a connection made by OAuth (never a token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<oauth::ConnectionOAuth>,
    /// The last verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<verify::Verification>,
}

/// A change to a stored connection, decided under its row lock.
#[derive(Debug)]
pub struct ConnectionUpdate {
    pub connection: Connection,
    /// A new sealed secret; `None` keeps the stored one.
    pub sealed: Option<String>,
    pub audit: Option<NewAudit>,
}

/// Sees the stored connection (locked) and returns the change to store, or
/// `None` to leave it as it is.
pub type ConnectionChange = Box<dyn FnOnce(&Connection) -> Result<Option<ConnectionUpdate>> + Send>;

/// A grant of some of a connection's scopes to one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    pub id: String,
    pub operator_id: String,
    pub agent_id: String,
    pub connection_id: String,
    pub service: String,
    pub scopes: Vec<String>,
    /// Compiled-and-validated constraints (intents already expanded).
    pub constraints: Vec<Value>,
    /// The named intents as requested, for display.
    pub intents: Vec<Value>,
    pub allow_data_from: Vec<String>,
    /// What the proxy does with upstream responses under this grant.
    #[serde(default)]
    pub response_scan: ResponseScan,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// Content scanning of upstream responses, per grant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseScan {
    /// Responses pass unscanned.
    #[default]
    Off,
    /// Responses are scanned and the verdict is added as `scan`.
    Annotate,
    /// As `annotate`, and a critical verdict withholds the response
    /// (`RESPONSE_BLOCKED`).
    Block,
}

impl ResponseScan {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Annotate => "annotate",
            Self::Block => "block",
        }
    }
}

/// Storage for operator data keys, connections and grants.
#[async_trait]
pub trait ServiceStore: Send + Sync + 'static {
    async fn operator_key(&self, operator_id: &str) -> Result<Option<String>>;
    /// Stores the wrapped key unless one exists; returns the stored one.
    async fn put_operator_key(&self, operator_id: &str, wrapped: &str) -> Result<String>;
    async fn insert_connection(&self, c: &Connection, sealed: &str, audit: NewAudit) -> Result<()>;
    async fn list_connections(&self, operator_id: &str) -> Result<Vec<Connection>>;
    async fn get_connection(
        &self,
        operator_id: &str,
        id: &str,
    ) -> Result<Option<(Connection, Option<String>)>>;
    /// Marks it disconnected, erases the sealed secret and revokes its grants.
    async fn disconnect(
        &self,
        operator_id: &str,
        id: &str,
        now: Timestamp,
        audit: NewAudit,
    ) -> Result<bool>;
    async fn insert_grant(&self, g: &Grant, audit: NewAudit) -> Result<()>;
    async fn list_grants(&self, operator_id: &str, agent_id: &str) -> Result<Vec<Grant>>;
    /// Revokes every live grant of the agent; returns how many.
    async fn revoke_agent_grants(
        &self,
        operator_id: &str,
        agent_id: &str,
        now: Timestamp,
        audit: NewAudit,
    ) -> Result<u64>;
    /// Loads and locks the connection, applies `change`, stores the result
    /// (and its audit entry) in one transaction. `Ok(None)` when there is
    /// no such connection; otherwise the stored connection and whether it
    /// changed.
    async fn update_connection(
        &self,
        operator_id: &str,
        id: &str,
        change: ConnectionChange,
    ) -> Result<Option<(Connection, bool)>>;

    // ---- upstream OAuth (see [`oauth`])
    /// Stores (inserts or replaces) the operator's OAuth client for a service.
    async fn put_oauth_app(
        &self,
        app: &oauth::OAuthApp,
        sealed_secret: &str,
        audit: NewAudit,
    ) -> Result<()>;
    async fn get_oauth_app(
        &self,
        operator_id: &str,
        service: &str,
    ) -> Result<Option<(oauth::OAuthApp, String)>>;
    async fn list_oauth_apps(&self, operator_id: &str) -> Result<Vec<oauth::OAuthApp>>;
    async fn delete_oauth_app(
        &self,
        operator_id: &str,
        service: &str,
        audit: NewAudit,
    ) -> Result<bool>;
    /// Records a pending authorization (and its audit entry); also drops
    /// expired ones.
    async fn insert_connect_state(
        &self,
        pending: &oauth::PendingConnect,
        audit: NewAudit,
    ) -> Result<()>;
    /// Removes and returns the pending authorization with this state
    /// digest: a state is usable once.
    async fn take_connect_state(&self, digest: &str) -> Result<Option<oauth::PendingConnect>>;
}

/// Per-node service state: the cache of unwrapped operator data keys, and
/// one lock per connection so this node refreshes an OAuth token once at a
/// time (across nodes, the stored refresh lease serialises).
#[derive(Default)]
pub struct OperatorKeys(
    RwLock<HashMap<String, DataKey>>,
    Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
);

impl std::fmt::Debug for OperatorKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OperatorKeys([redacted])")
    }
}

fn catalog() -> Result<&'static Catalog> {
    Catalog::builtin().map_err(|e| Error::internal(format!("service catalog: {e}")))
}

fn key_aad(operator_id: &str) -> Vec<u8> {
    format!("stack/operator-key/v1:{operator_id}").into_bytes()
}

fn secret_aad(connection_id: &str) -> Vec<u8> {
    format!("stack/connection/v1:{connection_id}").into_bytes()
}

/// The connection as REST and MCP show it: never a secret.
pub fn connection_view(c: &Connection) -> Value {
    json!({
        "id": c.id,
        "connection_id": c.id,
        "operator_id": c.operator_id,
        "provider": c.service,
        "service": c.service,
        "service_id": format!("svc_{}", c.service),
        "name": c.name,
        "description": c.description,
        "hosts": c.hosts,
        "base_url": c.base_url,
        "auth": c.auth,
        "scopes": c.scopes,
        "fields": c.fields,
        "secret_fields": c.secret_fields,
        "status": c.status,
        "connected_via": c.connected_via,
        "connected_at": c.created_at.to_rfc3339(),
        "created_at": c.created_at.to_rfc3339(),
        "updated_at": c.updated_at.to_rfc3339(),
        "oauth": c.oauth.as_ref().map(oauth::ConnectionOAuth::view),
        "verification": c.verification.as_ref().map(verify::Verification::view),
        "verified_at": c.verification.as_ref().map(|v| v.checked_at.to_rfc3339()),
    })
}

pub fn grant_view(g: &Grant) -> Value {
    json!({
        "id": g.id,
        "grant_id": g.id,
        "agent_id": g.agent_id,
        "service_connection_id": g.connection_id,
        "service": g.service,
        "scopes": g.scopes,
        "constraints": g.constraints,
        "intents": g.intents,
        "allow_data_from": g.allow_data_from,
        "response_scan": g.response_scan.as_str(),
        "created_at": g.created_at.to_rfc3339(),
        "revoked_at": g.revoked_at.map(Timestamp::to_rfc3339),
    })
}

/// `POST /v1/services/custom`.
#[derive(Debug, Clone, Deserialize)]
pub struct ConnectCustom {
    pub name: String,
    pub credential: Value,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub auth: Option<CustomAuth>,
    /// The path `verify` calls (default `/`).
    #[serde(default)]
    pub verify_path: Option<String>,
}

/// How a custom credential is attached: `{type: bearer|header|query|basic, name}`.
#[derive(Debug, Clone, Deserialize)]
pub struct CustomAuth {
    #[serde(rename = "type", default = "bearer")]
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
}

fn bearer() -> String {
    "bearer".into()
}

/// `POST /v1/services/connect`: a token or credential for a catalog
/// service, or neither to start the OAuth authorization-code flow.
#[derive(Debug, Clone, Deserialize)]
pub struct ConnectService {
    pub service_id: String,
    /// Re-authorize this existing connection (OAuth flow only) instead of
    /// creating a new one; its grants stay.
    #[serde(default)]
    pub connection_id: Option<String>,
    #[serde(default)]
    pub oauth_token: Option<String>,
    #[serde(default)]
    pub credential: Option<Value>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

/// `POST /v1/services/grant`.
#[derive(Debug, Clone, Deserialize)]
pub struct GrantAccess {
    pub agent_id: String,
    pub service_connection_id: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub constraints: Vec<Value>,
    #[serde(default, alias = "named_intents")]
    pub intents: Vec<Value>,
    #[serde(default)]
    pub allow_data_from: Vec<String>,
    /// `off` (default), `annotate` or `block`.
    #[serde(default, alias = "scan_responses")]
    pub response_scan: ResponseScan,
}

const MAX_SECRET_BYTES: usize = 64 * 1024;

fn secret_map(credential: Value) -> Result<BTreeMap<String, String>> {
    let map = match credential {
        Value::String(s) if !s.is_empty() => BTreeMap::from([("token".to_owned(), s)]),
        Value::Object(m) if !m.is_empty() => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                match v {
                    Value::String(s) => {
                        out.insert(k, s);
                    }
                    _ => {
                        return Err(Error::invalid_field(
                            "credential",
                            "credential values must be strings",
                        ));
                    }
                }
            }
            out
        }
        _ => {
            return Err(Error::invalid_field(
                "credential",
                "credential must be a non-empty string or object",
            ));
        }
    };
    if map.values().map(String::len).sum::<usize>() > MAX_SECRET_BYTES {
        return Err(Error::invalid_field(
            "credential",
            "credential is too large",
        ));
    }
    Ok(map)
}

fn custom_scheme(auth: Option<&CustomAuth>, secret_fields: &[String]) -> Result<AuthScheme> {
    let field = match secret_fields {
        [one] => one.clone(),
        _ => "token".to_owned(),
    };
    let kind = auth.map_or("bearer", |a| a.kind.as_str());
    let name = auth.and_then(|a| a.name.clone());
    let need_name = |what: &str| {
        name.clone()
            .filter(|n| stack_proxy::is_valid_header(n, "x"))
            .ok_or_else(|| {
                Error::invalid_field("auth.name", format!("auth type {what} needs a valid name"))
            })
    };
    Ok(match kind {
        "bearer" => AuthScheme::Bearer { field },
        "header" => AuthScheme::Header {
            name: need_name("header")?,
            prefix: String::new(),
            field,
        },
        "query" => AuthScheme::Query {
            param: need_name("query")?,
            field,
        },
        "basic" => AuthScheme::Basic {
            username_field: secret_fields
                .first()
                .cloned()
                .unwrap_or_else(|| "username".into()),
            password_field: secret_fields.get(1).cloned(),
        },
        _ => {
            return Err(Error::invalid_field(
                "auth.type",
                "auth type must be bearer, header, query or basic",
            ));
        }
    })
}

impl App {
    /// The operator's data key, created and sealed under the master key on
    /// first use, cached per node.
    pub(crate) async fn operator_data_key(&self, operator_id: &str) -> Result<DataKey> {
        if let Some(k) = self
            .operator_keys
            .0
            .read()
            .ok()
            .and_then(|m| m.get(operator_id).cloned())
        {
            return Ok(k);
        }
        let master = self.passports.keys.master()?;
        let wrapped = match self.store.operator_key(operator_id).await? {
            Some(w) => w,
            None => {
                let key = DataKey::generate(self.rng.as_ref())?;
                let sealed = aead::seal(
                    &master,
                    self.rng.as_ref(),
                    key.expose_bytes(),
                    &key_aad(operator_id),
                )?;
                self.store
                    .put_operator_key(operator_id, &URL_SAFE_NO_PAD.encode(sealed))
                    .await?
            }
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(wrapped)
            .map_err(|_| Error::internal("stored operator key is not base64url"))?;
        let opened = aead::open(&master, &bytes, &key_aad(operator_id)).map_err(|_| {
            Error::internal("cannot open the operator data key (wrong master key?)")
        })?;
        let arr: [u8; 32] = opened
            .expose()
            .as_slice()
            .try_into()
            .map_err(|_| Error::internal("operator data key has the wrong length"))?;
        let key = DataKey::from_bytes(arr);
        if let Ok(mut m) = self.operator_keys.0.write() {
            m.insert(operator_id.to_owned(), key.clone());
        }
        Ok(key)
    }

    async fn seal_secret(
        &self,
        operator_id: &str,
        connection_id: &str,
        secret: &BTreeMap<String, String>,
    ) -> Result<String> {
        let key = self.operator_data_key(operator_id).await?;
        let plain = Secret::new(
            serde_json::to_vec(secret).map_err(|_| Error::internal("secret did not serialize"))?,
        );
        let sealed = aead::seal(
            &key,
            self.rng.as_ref(),
            plain.expose(),
            &secret_aad(connection_id),
        )?;
        Ok(URL_SAFE_NO_PAD.encode(sealed))
    }

    /// Opens a connection's sealed secret.
    pub(crate) async fn open_secret(
        &self,
        c: &Connection,
        sealed: &str,
    ) -> Result<BTreeMap<String, Secret<String>>> {
        let key = self.operator_data_key(&c.operator_id).await?;
        let bytes = URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| Error::internal("stored credential is not base64url"))?;
        let plain = aead::open(&key, &bytes, &secret_aad(&c.id))
            .map_err(|_| Error::internal("cannot open the stored credential"))?;
        let map: BTreeMap<String, String> = serde_json::from_slice(plain.expose())
            .map_err(|_| Error::internal("stored credential does not parse"))?;
        Ok(map.into_iter().map(|(k, v)| (k, Secret::new(v))).collect())
    }

    /// The catalog (`GET /v1/services`, `stack_list_services`).
    pub fn list_services(&self, p: &Principal) -> Result<Vec<Value>> {
        require(p, Permission::ServicesRead)?;
        Ok(catalog()?
            .services()
            .iter()
            .map(|s| {
                json!({
                    "id": format!("svc_{}", s.slug),
                    "provider": s.slug,
                    "name": s.name,
                    "description": s.description,
                    "available": true,
                    "hosts": s.hosts,
                    "auth": s.auth,
                    "scopes": s.scopes,
                    "connect_methods": s.connect_methods(),
                    "intents": s.intents.iter().map(|i| i.name.clone()).collect::<Vec<_>>(),
                })
            })
            .collect())
    }

    /// Credential templates for manual connections.
    pub fn credential_templates(&self, p: &Principal) -> Result<Vec<Value>> {
        require(p, Permission::ServicesRead)?;
        Ok(catalog()?
            .services()
            .iter()
            .filter(|s| !s.credential_fields.is_empty())
            .map(|s| json!({ "service_id": format!("svc_{}", s.slug), "provider": s.slug, "name": s.name, "auth": s.auth, "fields": s.credential_fields }))
            .collect())
    }

    /// Named intents (`stack_list_intents`).
    pub fn list_named_intents(&self, p: &Principal) -> Result<Vec<Value>> {
        require(p, Permission::ServicesRead)?;
        Ok(catalog()?.intents().map(|i| i.describe()).collect())
    }

    pub async fn list_connections(&self, p: &Principal) -> Result<Vec<Value>> {
        require(p, Permission::ServicesRead)?;
        let all = self.store.list_connections(&p.operator_id).await?;
        Ok(all
            .iter()
            .filter(|c| self.member_may_use(p, &c.id))
            .map(connection_view)
            .collect())
    }

    /// A member limited to `allowed_connections` sees only those (team
    /// members arrive later; until then every member sees all).
    fn member_may_use(&self, _p: &Principal, _connection_id: &str) -> bool {
        true
    }

    pub async fn connect_custom(&self, p: &Principal, mut cmd: ConnectCustom) -> Result<Value> {
        require(p, Permission::ServicesConnect)?;
        let name = cmd.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 128 {
            return Err(Error::invalid_field("name", "name is 1-128 characters"));
        }
        // The SDK's connect_custom may put base_url and auth inside a dict credential.
        if let Value::Object(m) = &mut cmd.credential {
            if cmd.base_url.is_none() {
                cmd.base_url = m
                    .remove("base_url")
                    .and_then(|v| v.as_str().map(str::to_owned));
            } else {
                m.remove("base_url");
            }
            if let Some(a) = m.remove("auth")
                && cmd.auth.is_none()
            {
                cmd.auth = Some(
                    serde_json::from_value(a)
                        .map_err(|_| Error::invalid_field("auth", "auth must be {type, name}"))?,
                );
            }
        }
        let base_url = cmd.base_url.clone().ok_or_else(|| {
            Error::invalid_field(
                "base_url",
                "base_url (the only origin the credential may be sent to) is required",
            )
        })?;
        let (scheme_ok, rest) = match base_url.split_once("://") {
            Some((s, r)) if s == "https" || s == "http" => (true, r),
            _ => (false, ""),
        };
        let host = rest
            .split(['/', '?', '#'])
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !scheme_ok || host.is_empty() || host.contains('@') {
            return Err(Error::invalid_field(
                "base_url",
                "base_url must be an http(s) origin such as https://api.example.com",
            ));
        }
        let (host_only, port) = match host.rsplit_once(':') {
            Some((h, port)) if !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => {
                (h.to_owned(), Some(port))
            }
            _ => (host.clone(), None),
        };
        let host_ok = !host_only.is_empty()
            && host_only.len() <= 253
            && host_only
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if !host_ok || port.is_some_and(|p| p.parse::<u16>().is_err()) {
            return Err(Error::invalid_field(
                "base_url",
                "base_url must name a DNS host (no userinfo, no IP tricks)",
            ));
        }
        let secret = secret_map(cmd.credential.clone())?;
        let secret_fields: Vec<String> = secret.keys().cloned().collect();
        let auth = custom_scheme(cmd.auth.as_ref(), &secret_fields)?;
        let scopes = cmd
            .scopes
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| vec!["read".into(), "write".into()]);
        let origin = format!(
            "{}://{host}",
            if base_url.starts_with("https") {
                "https"
            } else {
                "http"
            }
        );
        let mut fields = BTreeMap::new();
        if let Some(path) = cmd.verify_path.filter(|v| !v.is_empty()) {
            let ok = path.len() <= 512
                && path.starts_with('/')
                && path
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/._~-?=&%".contains(&b));
            if !ok {
                return Err(Error::invalid_field(
                    "verify_path",
                    "verify_path must be a path such as /v1/me",
                ));
            }
            fields.insert("verify_path".to_owned(), path);
        }
        self.store_connection(
            p,
            "custom",
            name,
            cmd.description,
            vec![host_only],
            Some(origin),
            auth,
            scopes,
            fields,
            secret,
            "custom",
        )
        .await
    }

    pub async fn connect_service(&self, p: &Principal, cmd: ConnectService) -> Result<Value> {
        require(p, Permission::ServicesConnect)?;
        let slug = cmd
            .service_id
            .strip_prefix("svc_")
            .unwrap_or(&cmd.service_id)
            .to_owned();
        let service = catalog()?
            .service(&slug)
            .filter(|s| s.slug != "custom")
            .ok_or_else(|| Error::not_found("service", &cmd.service_id))?;
        if cmd.scopes.is_empty() {
            return Err(Error::invalid_field(
                "scopes",
                "scopes needs at least one scope",
            ));
        }
        if let Some(bad) = cmd.scopes.iter().find(|s| !service.has_scope(s)) {
            return Err(Error::invalid_field(
                "scopes",
                format!("{} has no scope {bad}", service.slug),
            ));
        }
        let (secret, auth, via) = match (&cmd.oauth_token, &cmd.credential) {
            (Some(t), _) if !t.is_empty() => (
                BTreeMap::from([("token".to_owned(), t.clone())]),
                AuthScheme::oauth(),
                "token",
            ),
            (_, Some(c)) => (secret_map(c.clone())?, service.auth.clone(), "custom"),
            _ if service.oauth.is_some() => {
                return self.start_oauth_connect(p, service, cmd).await;
            }
            _ => {
                return Err(Error::invalid_field(
                    "oauth_token",
                    "oauth_token (or credential) is required: this service does not connect by OAuth",
                ));
            }
        };
        if cmd.connection_id.is_some() {
            return Err(Error::invalid_field(
                "connection_id",
                "connection_id re-authorizes a connection through the OAuth flow: send no oauth_token or credential",
            ));
        }
        let hosts = service
            .resolve_hosts(&cmd.fields)
            .map_err(|e| Error::invalid_field("fields", e.to_string()))?;
        let name = cmd.name.clone().unwrap_or_else(|| service.name.clone());
        self.store_connection(
            p,
            &service.slug,
            name,
            None,
            hosts,
            None,
            auth,
            cmd.scopes,
            cmd.fields,
            secret,
            via,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn store_connection(
        &self,
        p: &Principal,
        service: &str,
        name: String,
        description: Option<String>,
        hosts: Vec<String>,
        base_url: Option<String>,
        auth: AuthScheme,
        scopes: Vec<String>,
        fields: BTreeMap<String, String>,
        secret: BTreeMap<String, String>,
        via: &str,
    ) -> Result<Value> {
        let now = self.now();
        let id = format!(
            "scon_{}",
            stack_crypto::random_token(self.rng.as_ref(), 16)?
        );
        let c = Connection {
            id: id.clone(),
            operator_id: p.operator_id.clone(),
            service: service.to_owned(),
            name,
            description,
            hosts,
            base_url,
            auth,
            scopes,
            fields,
            secret_fields: secret.keys().cloned().collect(),
            status: "active".into(),
            connected_via: via.to_owned(),
            created_at: now,
            updated_at: now,
            oauth: None,
            verification: None,
        };
        let sealed = self.seal_secret(&p.operator_id, &id, &secret).await?;
        drop(secret);
        let audit = self.audit(
            Self::draft(p, Layer::Vault, "service.connect")
                .target("connection", &id)
                .details(json!({ "service": c.service, "hosts": c.hosts, "scopes": c.scopes, "connected_via": via })),
        )?;
        self.insert_connection(&c, &sealed, audit).await?;
        Ok(connection_view(&c))
    }

    pub(crate) async fn load_connection(
        &self,
        p: &Principal,
        id: &str,
    ) -> Result<(Connection, Option<String>)> {
        if !id.starts_with("scon_") || !stack_core::id::is_url_safe_body(id) {
            return Err(Error::not_found("connection", id));
        }
        self.store
            .get_connection(&p.operator_id, id)
            .await?
            .ok_or_else(|| Error::not_found("connection", id))
    }

    pub async fn disconnect_service(&self, p: &Principal, id: &str) -> Result<Value> {
        require(p, Permission::ServicesWrite)?;
        let (c, sealed) = self.load_connection(p, id).await?;
        let provider_revocation = if c.status == "disconnected" {
            "not_supported"
        } else {
            self.revoke_at_provider(&c, sealed.as_deref()).await
        };
        let audit = self.audit(
            Self::draft(p, Layer::Vault, "service.disconnect")
                .target("connection", id)
                .details(
                    json!({ "service": c.service, "provider_revocation": provider_revocation }),
                ),
        )?;
        self.disconnect(&p.operator_id, id, self.now(), audit)
            .await?;
        Ok(json!({ "id": id, "disconnected": true, "provider_revocation": provider_revocation }))
    }

    pub async fn grant_access(&self, p: &Principal, cmd: GrantAccess) -> Result<Value> {
        require(p, Permission::ServicesWrite)?;
        let agent = self.load_agent(p, &cmd.agent_id).await?;
        let (c, _) = self.load_connection(p, &cmd.service_connection_id).await?;
        if c.status == "disconnected" || c.status == "needs_reauth" {
            return Err(Error::conflict(format!("the connection is {}", c.status)));
        }
        if cmd.scopes.is_empty() {
            return Err(Error::invalid_field(
                "scopes",
                "scopes needs at least one scope",
            ));
        }
        if let Some(bad) = cmd.scopes.iter().find(|s| !c.scopes.contains(s)) {
            return Err(Error::new(
                ErrorCode::ScopeEscalation,
                format!("the connection does not hold scope {bad}"),
            )
            .with_details(json!({ "scope": bad })));
        }
        let mut constraints = cmd.constraints.clone();
        if !cmd.intents.is_empty() {
            let expanded = catalog()?
                .expand_intents(&c.service, &cmd.scopes, &cmd.intents)
                .map_err(|e| Error::invalid_field("intents", e.to_string()))?;
            constraints.extend(expanded.iter().map(stack_proxy::Constraint::to_value));
        }
        let compiled = ConstraintSet::compile(&constraints)
            .map_err(|e| Error::invalid_field("constraints", e.to_string()))?;
        let now = self.now();
        let g = Grant {
            id: format!("grt_{}", stack_crypto::random_token(self.rng.as_ref(), 16)?),
            operator_id: p.operator_id.clone(),
            agent_id: agent.id.clone(),
            connection_id: c.id.clone(),
            service: c.service.clone(),
            scopes: cmd.scopes,
            constraints: compiled.to_values(),
            intents: cmd.intents,
            allow_data_from: cmd.allow_data_from,
            response_scan: cmd.response_scan,
            created_at: now,
            revoked_at: None,
        };
        let audit = self.audit(
            Self::draft(p, Layer::Vault, "grant.create")
                .agent(&agent.id)
                .target("grant", &g.id)
                .details(json!({ "connection_id": c.id, "scopes": g.scopes, "constraints": g.constraints.len(), "response_scan": g.response_scan.as_str() })),
        )?;
        self.insert_grant(&g, audit).await?;
        Ok(grant_view(&g))
    }

    /// Revokes every grant of the agent and its live passports.
    pub async fn revoke_agent_access(&self, p: &Principal, agent_id: &str) -> Result<Value> {
        require(p, Permission::ServicesWrite)?;
        self.load_agent(p, agent_id).await?;
        let audit = self.audit(
            Self::draft(p, Layer::Vault, "grant.revoke_all")
                .agent(agent_id)
                .target("agent", agent_id),
        )?;
        let grants = self
            .revoke_agent_grants(&p.operator_id, agent_id, self.now(), audit)
            .await?;
        let revoked = self
            .revoke_selected(
                p,
                &crate::passports::RevokeSelector::Agent(agent_id.to_owned()),
                "agent access revoked",
                "passport.revoke_agent",
            )
            .await?;
        Ok(
            json!({ "agent_id": agent_id, "grants_revoked": grants, "passports_revoked": revoked.len() }),
        )
    }

    /// The agent's live grants.
    pub(crate) async fn grants_of(&self, operator_id: &str, agent_id: &str) -> Result<Vec<Grant>> {
        Ok(self
            .store
            .list_grants(operator_id, agent_id)
            .await?
            .into_iter()
            .filter(|g| g.revoked_at.is_none())
            .collect())
    }

    /// The agent's grants as passport service entries.
    pub(crate) async fn grants_as_services(
        &self,
        operator_id: &str,
        agent_id: &str,
    ) -> Result<Vec<ServiceGrant>> {
        let grants = self.grants_of(operator_id, agent_id).await?;
        let mut out = Vec::new();
        for g in grants {
            out.push(ServiceGrant {
                service_name: g.service.clone(),
                service_id: format!("svc_{}", g.service),
                connection_id: g.connection_id.clone(),
                credential_ref: format!("cred_ref_{}", g.connection_id.trim_start_matches("scon_")),
                scopes: g.scopes,
                constraints: g.constraints,
                allow_data_from: g.allow_data_from,
            });
        }
        Ok(out)
    }

    /// Hands out a decrypted credential: to the operator or an admin member,
    /// or to a passport that holds the connection for an agent not limited
    /// to the proxy. Audited as `credential.retrieve` (never the value).
    pub async fn get_credential(
        &self,
        p: &Principal,
        provider_or_connection: &str,
        by_connection: bool,
    ) -> Result<Value> {
        let connections = self.store.list_connections(&p.operator_id).await?;
        let c = connections
            .into_iter()
            .filter(|c| c.status != "disconnected")
            .find(|c| {
                if by_connection {
                    c.id == provider_or_connection
                } else {
                    c.service == provider_or_connection || c.name == provider_or_connection
                }
            })
            .ok_or_else(|| Error::not_found("connection", provider_or_connection))?;
        match &p.kind {
            PrincipalKind::Operator => {}
            PrincipalKind::Member {
                role: Role::Admin, ..
            } => {}
            PrincipalKind::Passport { agent_id, jti } => {
                let record = self
                    .store
                    .get_passport(jti)
                    .await?
                    .ok_or_else(|| Error::forbidden("unknown passport"))?;
                if !record.services.iter().any(|s| s.connection_id == c.id) {
                    return Err(Error::forbidden(
                        "this passport does not hold that connection",
                    ));
                }
                let agent = self
                    .store
                    .get_agent(&p.operator_id, agent_id)
                    .await?
                    .ok_or_else(|| Error::forbidden("unknown agent"))?;
                if agent.credential_access == CredentialAccess::ProxyOnly {
                    return Err(Error::forbidden(
                        "this agent is proxy_only: it may use the credential only through the proxy",
                    ));
                }
            }
            _ => {
                return Err(Error::forbidden(
                    "credentials are handed to the operator, an admin member or a passport holding the connection",
                ));
            }
        }
        require(p, Permission::CredentialsRead).or_else(|e| {
            if matches!(p.kind, PrincipalKind::Passport { .. }) {
                Ok(())
            } else {
                Err(e)
            }
        })?;
        let (c, sealed) = self.load_connection(p, &c.id).await?;
        let sealed = sealed.ok_or_else(|| Error::not_found("credential", &c.id))?;
        // OAuth connections hand out the (fresh) access token only.
        let secret = self.usable_secret(&c, &sealed).await?;
        let audit = self.audit(
            Self::draft(p, Layer::Vault, "credential.retrieve")
                .target("connection", &c.id)
                .details(json!({ "service": c.service })),
        )?;
        self.store.append_audit(&p.operator_id, audit).await?;
        let mut out = Map::new();
        out.insert("provider".into(), Value::String(c.service.clone()));
        out.insert("connection_id".into(), Value::String(c.id.clone()));
        if secret.len() == 1 {
            if let Some(v) = secret.values().next() {
                out.insert("credential".into(), Value::String(v.expose().clone()));
            }
        } else {
            out.insert(
                "credentials".into(),
                Value::Object(
                    secret
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.expose().clone())))
                        .collect(),
                ),
            );
        }
        Ok(Value::Object(out))
    }

    /// `GET /v1/agents/{id}/permissions`: the agent's live grants.
    pub(crate) async fn grant_views(
        &self,
        operator_id: &str,
        agent_id: &str,
    ) -> Result<Vec<Value>> {
        Ok(self
            .grants_of(operator_id, agent_id)
            .await?
            .iter()
            .map(grant_view)
            .collect())
    }
}
