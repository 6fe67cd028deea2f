//! The proxy pipeline (issue 4): verify the passport, find the grant it
//! carries for the service, check scope and constraints, inject the
//! credential server-side, forward through the egress port, audit the
//! decision whether allowed or denied, answer `{status, headers, body}`.
//!
//! Non-GET calls with an authority request id are delivered upstream at most
//! once: an unchanged retry gets the recorded response, a changed request
//! under the same id is refused.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use stack_audit::{Layer, Outcome};
use stack_core::{Error, ErrorCode, Permission, Principal, Result, Secret, Timestamp};
use stack_proxy::{ConstraintSet, Credential, Target};

use crate::{App, NewAudit, require};

/// A request as the egress adapter sends it: the checked target, never the
/// caller's URL string.
#[derive(Debug)]
pub struct Outbound {
    pub target: Target,
    pub method: String,
    /// Header values; injected credentials stay `Secret`.
    pub headers: Vec<(String, Secret<String>)>,
    pub body: Option<Vec<u8>>,
}

/// What came back from upstream.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

/// The egress port: resolves, applies the SSRF guard, connects, sends.
#[async_trait]
pub trait EgressPort: Send + Sync + 'static {
    async fn send(&self, request: Outbound) -> Result<Inbound>;
}

/// `POST /v1/proxy` and `stack_proxy_request`.
#[derive(Debug, Clone, Deserialize)]
pub struct ProxyRequest {
    pub service: String,
    pub url: String,
    #[serde(default = "get")]
    pub method: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `None` when the caller sent no body (`false`, `0`, `""` are bodies).
    #[serde(default, deserialize_with = "present")]
    pub body: Option<Value>,
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Which connection, when the passport holds several of the service.
    #[serde(default)]
    pub connection_id: Option<String>,
}

fn get() -> String {
    "GET".into()
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// A recorded proxy operation (for at-most-once delivery).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyOperation {
    pub operator_id: String,
    pub request_id: String,
    pub digest: String,
    /// `dispatching`, `response_received` or `failed`.
    pub state: String,
    pub response: Option<Value>,
    pub error: Option<Value>,
    pub created_at: Timestamp,
}

/// Storage for proxy operations and usage meters.
#[async_trait]
pub trait ProxyStore: Send + Sync + 'static {
    /// Inserts `op` unless one exists for its (operator, request id);
    /// returns the stored one when it already existed.
    async fn claim_operation(&self, op: &ProxyOperation) -> Result<Option<ProxyOperation>>;
    async fn finish_operation(&self, op: &ProxyOperation) -> Result<()>;
    /// Adds one to the meter for the period if it stays within `limit`;
    /// `Ok(None)` when the limit is reached.
    async fn take_usage(
        &self,
        operator_id: &str,
        meter: &str,
        period: &str,
        limit: u64,
    ) -> Result<Option<u64>>;
    async fn usage(&self, operator_id: &str, meter: &str, period: &str) -> Result<u64>;
}

/// Monthly proxy calls per tier.
pub fn proxy_quota(tier: &str) -> u64 {
    match tier {
        "developer" => 50_000,
        "studio" => 500_000,
        "enterprise" => 5_000_000,
        _ => 5_000,
    }
}

pub const MAX_PROXY_BODY: usize = 10 * 1024 * 1024;

fn denied(code: ErrorCode, message: impl Into<String>) -> Error {
    Error::new(code, message)
}

fn request_digest(req: &ProxyRequest, method: &str) -> String {
    let canonical = stack_audit::canonical_json(&json!({
        "service": req.service, "url": req.url, "method": method,
        "headers": req.headers, "query": req.query, "body": req.body,
        "connection_id": req.connection_id,
    }));
    stack_crypto::sha256_hex(canonical.as_bytes())
}

impl App {
    /// Sets the egress adapter the proxy sends through.
    pub fn set_egress(&self, egress: Arc<dyn EgressPort>) {
        if let Ok(mut e) = self.egress.write() {
            *e = Some(egress);
        }
    }

    pub async fn proxy_usage(&self, p: &Principal) -> Result<Value> {
        require(p, Permission::ProxyRead).or_else(|_| require(p, Permission::Proxy))?;
        let op = self
            .store
            .get_operator(&p.operator_id)
            .await?
            .ok_or_else(|| Error::unauthorized("unknown operator"))?;
        let (period, _, _) = crate::scan::period_of(self.now());
        let used = self.store.usage(&p.operator_id, "proxy", &period).await?;
        let limit = proxy_quota(&op.tier);
        Ok(
            json!({ "tier": op.tier, "limit": limit, "used": used, "remaining": limit.saturating_sub(used), "period": period }),
        )
    }

    /// Runs one proxied call. `caller` is the authenticated principal;
    /// `passport_token` is the `X-Passport-Token` (or the bearer itself when
    /// the caller authenticated with a passport).
    pub async fn proxy(
        &self,
        caller: &Principal,
        passport_token: Option<&str>,
        request_id: Option<&str>,
        req: ProxyRequest,
    ) -> Result<Value> {
        require(caller, Permission::Proxy)?;
        let started = std::time::Instant::now();
        let method = req.method.trim().to_ascii_uppercase();
        if !matches!(
            method.as_str(),
            "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS"
        ) {
            return Err(Error::invalid_field(
                "method",
                "method must be GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS",
            ));
        }
        let record = match (passport_token, &caller.kind) {
            (Some(token), _) => self.live_passport(token).await?.1,
            // The caller authenticated with the passport itself.
            (None, stack_core::principal::PrincipalKind::Passport { jti, .. }) => {
                let r = self
                    .store
                    .get_passport(jti)
                    .await?
                    .ok_or_else(|| Error::unauthorized("unknown passport"))?;
                if r.revoked_at.is_some() || self.is_revoked(jti).await? {
                    return Err(Error::new(
                        ErrorCode::PassportRevoked,
                        "passport has been revoked",
                    ));
                }
                if self.now().as_secs() >= r.expires_at {
                    return Err(Error::new(
                        ErrorCode::PassportExpired,
                        "passport has expired",
                    ));
                }
                r
            }
            (None, _) => {
                return Err(Error::unauthorized(
                    "the proxy needs a passport: send X-Passport-Token",
                ));
            }
        };
        if record.operator_id != caller.operator_id {
            return Err(Error::unauthorized(
                "the passport belongs to another operator",
            ));
        }
        let digest = request_digest(&req, &method);
        let mut draft = Self::draft(caller, Layer::Proxy, "credential.proxy")
            .agent(&record.agent_id)
            .details(json!({ "service": req.service, "method": method, "request_digest": digest }));
        draft.passport_jti = Some(record.jti.clone());
        draft.payload_hash = Some(digest.clone());

        // Decide; every denial is audited before it is returned.
        let decided = self.decide(&record, &method, &req).await;
        let (connection, target, scheme_edits) = match decided {
            Ok(v) => v,
            Err(e) => {
                self.audit_denial(caller, draft, &e, started).await?;
                if matches!(
                    e.code,
                    ErrorCode::ScopeDenied | ErrorCode::ConstraintViolation
                ) {
                    let _ = self
                        .raise_security_event(
                            &caller.operator_id,
                            Some(&record.agent_id),
                            Some(&record.jti),
                            "credential_outside_scope",
                            "warning",
                            &e.message,
                            json!({ "service": req.service }),
                        )
                        .await;
                }
                return Err(e);
            }
        };
        draft = draft.target("connection", &connection);

        // At most once for non-GET calls that carry an id.
        let dedupe = request_id.filter(|_| method != "GET" && method != "HEAD");
        if let Some(id) = dedupe {
            let op = ProxyOperation {
                operator_id: caller.operator_id.clone(),
                request_id: id.to_owned(),
                digest: digest.clone(),
                state: "dispatching".into(),
                response: None,
                error: None,
                created_at: self.now(),
            };
            if let Some(existing) = self.store.claim_operation(&op).await? {
                if existing.digest != digest {
                    return Err(Error::conflict(
                        "this X-STACK-Authority-Request-Id was used for a different request",
                    ));
                }
                return match (existing.state.as_str(), existing.response) {
                    ("response_received", Some(r)) => Ok(r),
                    _ => Err(Error::conflict("this request's outcome is unknown (it was dispatched and did not complete); it is not sent twice")
                        .with_details(json!({ "delivery_state": existing.state }))),
                };
            }
        }

        // Quota.
        let operator = self
            .store
            .get_operator(&caller.operator_id)
            .await?
            .ok_or_else(|| Error::unauthorized("unknown operator"))?;
        let (period, _, _) = crate::scan::period_of(self.now());
        if self
            .store
            .take_usage(
                &caller.operator_id,
                "proxy",
                &period,
                proxy_quota(&operator.tier),
            )
            .await?
            .is_none()
        {
            let e = Error::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "the {} tier's monthly proxy quota is used up",
                    operator.tier
                ),
            );
            self.audit_denial(caller, draft, &e, started).await?;
            return Err(e);
        }

        let egress = self
            .egress
            .read()
            .ok()
            .and_then(|e| e.clone())
            .ok_or_else(|| Error::not_implemented("the proxy's egress client"))?;
        let body = match &req.body {
            None => None,
            Some(Value::String(s)) => Some(s.clone().into_bytes()),
            Some(v) => Some(
                serde_json::to_vec(v).map_err(|_| Error::validation("body does not serialize"))?,
            ),
        };
        if body.as_ref().is_some_and(|b| b.len() > MAX_PROXY_BODY) {
            return Err(Error::new(
                ErrorCode::PayloadTooLarge,
                "the proxied body is over 10 MB",
            ));
        }
        let mut caller_headers: BTreeMap<String, String> = req
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        let (scheme, edits) = scheme_edits;
        stack_proxy::strip_caller_auth(&mut caller_headers, &scheme);
        let mut headers: Vec<(String, Secret<String>)> = caller_headers
            .into_iter()
            .map(|(k, v)| (k, Secret::new(v)))
            .collect();
        if req.body.as_ref().is_some_and(|b| !b.is_string())
            && !headers.iter().any(|(k, _)| k == "content-type")
        {
            headers.push((
                "content-type".into(),
                Secret::new("application/json".into()),
            ));
        }
        for (name, value) in edits.headers {
            headers.retain(|(k, _)| *k != name);
            headers.push((name, value));
        }
        let mut target = target;
        if !edits.query.is_empty() {
            let mut pairs: Vec<(String, String)> = target.query_pairs();
            for (name, value) in &edits.query {
                pairs.retain(|(k, _)| k != name);
                pairs.push((name.clone(), value.expose().clone()));
            }
            target.query = Some(
                pairs
                    .iter()
                    .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
                    .collect::<Vec<_>>()
                    .join("&"),
            );
        }
        let sent = egress
            .send(Outbound {
                target,
                method: method.clone(),
                headers,
                body,
            })
            .await;
        let elapsed = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        match sent {
            Ok(inbound) => {
                let body: Value = serde_json::from_slice(&inbound.body).unwrap_or_else(|_| {
                    Value::String(String::from_utf8_lossy(&inbound.body).into_owned())
                });
                let response =
                    json!({ "status": inbound.status, "headers": inbound.headers, "body": body });
                let mut d = draft;
                d.duration_ms = Some(elapsed);
                if let Value::Object(m) = &mut d.details {
                    m.insert("upstream_status".into(), json!(inbound.status));
                }
                let audit = self.audit(d)?;
                self.store.append_audit(&caller.operator_id, audit).await?;
                if let Some(id) = dedupe {
                    self.finish(
                        caller,
                        id,
                        &digest,
                        "response_received",
                        Some(response.clone()),
                        None,
                    )
                    .await?;
                }
                Ok(response)
            }
            Err(e) => {
                if let Some(id) = dedupe {
                    self.finish(
                        caller,
                        id,
                        &digest,
                        "failed",
                        None,
                        Some(json!({ "code": e.code.as_str(), "message": e.message })),
                    )
                    .await?;
                }
                let mut d = draft;
                d.duration_ms = Some(elapsed);
                d.outcome = Outcome::Failure;
                d.error_code = Some(e.code.as_str().into());
                d.error_message = Some(e.message.clone());
                let audit = self.audit(d)?;
                self.store.append_audit(&caller.operator_id, audit).await?;
                Err(e)
            }
        }
    }

    async fn finish(
        &self,
        caller: &Principal,
        id: &str,
        digest: &str,
        state: &str,
        response: Option<Value>,
        error: Option<Value>,
    ) -> Result<()> {
        self.store
            .finish_operation(&ProxyOperation {
                operator_id: caller.operator_id.clone(),
                request_id: id.to_owned(),
                digest: digest.to_owned(),
                state: state.to_owned(),
                response,
                error,
                created_at: self.now(),
            })
            .await
    }

    async fn audit_denial(
        &self,
        caller: &Principal,
        mut d: stack_audit::AuditDraft,
        e: &Error,
        started: std::time::Instant,
    ) -> Result<()> {
        d.outcome = Outcome::Blocked;
        d.error_code = Some(e.code.as_str().into());
        d.error_message = Some(e.message.clone());
        d.duration_ms = Some(i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX));
        let audit: NewAudit = self.audit(d)?;
        self.store.append_audit(&caller.operator_id, audit).await?;
        Ok(())
    }

    /// The pure part: which connection, which target, may this call go out,
    /// and the credential edits to apply.
    async fn decide(
        &self,
        record: &crate::passports::PassportRecord,
        method: &str,
        req: &ProxyRequest,
    ) -> Result<(
        String,
        Target,
        (stack_proxy::AuthScheme, stack_proxy::AuthEdits),
    )> {
        let grant = record
            .services
            .iter()
            .find(|s| {
                s.service_name == req.service
                    && req
                        .connection_id
                        .as_ref()
                        .is_none_or(|c| *c == s.connection_id)
            })
            .ok_or_else(|| {
                denied(
                    ErrorCode::ScopeDenied,
                    format!("the passport holds no grant for service {}", req.service),
                )
            })?;
        // The grant must still be live (revoked grants end access at once).
        let live = self
            .grants_of(&record.operator_id, &record.agent_id)
            .await?;
        if !live.iter().any(|g| g.connection_id == grant.connection_id) {
            return Err(denied(
                ErrorCode::ScopeDenied,
                "the grant behind this passport has been revoked",
            ));
        }
        let owner = Principal::operator(record.operator_id.clone());
        let (connection, sealed) = self.load_connection(&owner, &grant.connection_id).await?;
        if connection.status != "active" {
            return Err(denied(
                ErrorCode::ScopeDenied,
                "the connection is disconnected",
            ));
        }
        let needed = if matches!(method, "GET" | "HEAD" | "OPTIONS") {
            "read"
        } else {
            "write"
        };
        if connection.service == "custom" && !grant.scopes.iter().any(|s| s == needed) {
            return Err(denied(
                ErrorCode::ScopeDenied,
                format!("this call needs the {needed} scope"),
            ));
        }
        if grant.scopes.is_empty() {
            return Err(denied(
                ErrorCode::ScopeDenied,
                "the passport holds no scope for this service",
            ));
        }
        // Target: only the connection's hosts; http only for an http custom base_url.
        let mut url = req.url.clone();
        if !req.query.is_empty() {
            let extra: Vec<String> = req
                .query
                .iter()
                .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
                .collect();
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&extra.join("&"));
        }
        let allow_http = connection
            .base_url
            .as_deref()
            .is_some_and(|b| b.starts_with("http://"));
        let target = if allow_http && url.starts_with("http://") {
            stack_proxy::parse_target(&url.replacen("http://", "https://", 1), &connection.hosts)
                .map(|mut t| {
                    t.scheme = stack_proxy::Scheme::Http;
                    t
                })
        } else {
            stack_proxy::parse_target(&url, &connection.hosts)
        }
        .map_err(|e| {
            denied(ErrorCode::ScopeDenied, format!("the URL is refused: {e}"))
                .with_details(json!({ "reason": e.code() }))
        })?;
        if let Some(base) = &connection.base_url {
            let after_scheme = base.split_once("://").map_or(base.as_str(), |(_, r)| r);
            let port = after_scheme
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok());
            if let Some(port) = port
                && target.port != port
            {
                return Err(denied(
                    ErrorCode::ScopeDenied,
                    "the URL's port is not the connection's",
                ));
            }
        }
        let set = ConstraintSet::compile(&grant.constraints)
            .map_err(|e| Error::internal(format!("stored constraints do not compile: {e}")))?;
        let body = req.body.as_ref().filter(|b| !b.is_null());
        stack_proxy::check_target(&set, method, &target, body).map_err(|v| {
            denied(ErrorCode::ConstraintViolation, v.message.clone())
                .with_details(json!({ "constraint": v.index, "path": v.path }))
        })?;
        let sealed = sealed
            .ok_or_else(|| denied(ErrorCode::ScopeDenied, "the connection has no credential"))?;
        let secret = self.open_secret(&connection, &sealed).await?;
        let credential = if secret.len() == 1 {
            match secret.into_values().next() {
                Some(v) => Credential::Token(v),
                None => return Err(Error::internal("empty credential")),
            }
        } else {
            Credential::Fields(secret)
        };
        let edits = stack_proxy::attach(&connection.auth, &credential)
            .map_err(|e| Error::internal(format!("credential does not attach: {e}")))?;
        Ok((
            connection.id.clone(),
            target,
            (connection.auth.clone(), edits),
        ))
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
