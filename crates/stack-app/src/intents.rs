//! Intents (issue 4): simulate a request against a passport, submit it for
//! an operator's approval, decide, and redeem the approval in the proxy.
//!
//! An *intent* (the SDK's `IntentClaim`) describes one proxied call: `target`
//! `{service, url, query?}`, `action` (the HTTP method) and `parameters`
//! (the request body). Simulation is a dry run of the proxy's checks (grant,
//! URL policy, constraints, named intent, quota) that answers with every
//! reason the call would be refused and a statement signed with the
//! passport key. Submission creates an approval row bound to the passport
//! and to a digest of the exact request; the proxy refuses an enforced-mode
//! passport that does not present an approved, unexpired, unused approval
//! for exactly that request, and marks it consumed with a conditional
//! update so two concurrent calls cannot both use it.
//!
//! What it does not do: no HTTP and no SQL; the approval rows live behind
//! [`IntentStore`].

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use stack_audit::Layer;
use stack_core::principal::PrincipalKind;
use stack_core::{Error, ErrorCode, Permission, Principal, Result, Timestamp};

use crate::agents::{AccountabilityMode, Agent};
use crate::passports::{PassportRecord, RevokeSelector};
use crate::proxy::ProxyRequest;
use crate::{App, NewAudit, require};

/// Default lifetime of an approval (seconds), and the bounds.
pub const DEFAULT_APPROVAL_TTL: i64 = 900;
pub const MAX_APPROVAL_TTL: i64 = 24 * 3600;
/// Largest intent accepted, as compact JSON.
pub const MAX_INTENT_BYTES: usize = 64 * 1024;
/// `typ` of the signed simulation statement.
pub const SIMULATION_TYP: &str = "intent-simulation+jwt";
const MAX_NOTES: usize = 2_000;

/// An approval's state as stored. `expired` is never stored: a pending or
/// approved row past its deadline reads as expired ([`IntentApproval::status_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntentStatus {
    Pending,
    Approved,
    Rejected,
    Expired,
    Consumed,
}

impl IntentStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
            Self::Consumed => "consumed",
        }
    }
}

/// The request an approval is bound to (the body is bound by digest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundRequest {
    pub service: String,
    /// Upper case.
    pub method: String,
    /// The URL with the intent's `query` appended, as the proxy builds it.
    pub url: String,
    pub has_body: bool,
}

/// One approval row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntentApproval {
    /// `ia_…`, sent back as `X-Intent-Approval-Id`.
    pub id: String,
    pub operator_id: String,
    pub agent_id: String,
    pub passport_jti: String,
    /// `pc_…`: the intent claim this row approves.
    pub intent_claim_id: String,
    pub simulated_claim_id: Option<String>,
    /// The intent as submitted.
    pub intent: Value,
    pub request: BoundRequest,
    /// SHA-256 of the canonical `{service, method, url, body}`.
    pub request_digest: String,
    /// The stored state (never `expired`; see [`Self::status_at`]).
    pub status: IntentStatus,
    pub simulation: Option<Value>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub decided_at: Option<Timestamp>,
    pub decided_by: Option<String>,
    pub notes: Option<String>,
    pub block_future: bool,
    pub consumed_at: Option<Timestamp>,
    /// The `X-STACK-Authority-Request-Id` of the call that used it, so an
    /// unchanged retry of that call reaches the proxy's replay.
    pub consumed_request_id: Option<String>,
}

impl IntentApproval {
    /// The state as of `now`: pending or approved past the deadline is expired.
    pub fn status_at(&self, now: Timestamp) -> IntentStatus {
        match self.status {
            IntentStatus::Pending | IntentStatus::Approved if now >= self.expires_at => {
                IntentStatus::Expired
            }
            s => s,
        }
    }
}

/// Storage for approval rows.
#[async_trait]
pub trait IntentStore: Send + Sync + 'static {
    async fn insert_intent_approval(
        &self,
        approval: &IntentApproval,
        audit: NewAudit,
    ) -> Result<()>;
    async fn get_intent_approval(
        &self,
        operator_id: &str,
        id: &str,
    ) -> Result<Option<IntentApproval>>;
    /// Pending rows not expired at `now` (optionally of one agent), oldest
    /// first, with their total.
    async fn list_pending_intent_approvals(
        &self,
        operator_id: &str,
        agent_id: Option<&str>,
        now: Timestamp,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<IntentApproval>, u64)>;
    /// Stores `next` only while the row is still in `expected` state and
    /// unexpired at `now` (one conditional UPDATE), appending `audit` in the
    /// same transaction. `Ok(false)` when the condition no longer held;
    /// nothing is written then.
    async fn transition_intent_approval(
        &self,
        next: &IntentApproval,
        expected: IntentStatus,
        now: Timestamp,
        audit: NewAudit,
    ) -> Result<bool>;
}

/// `POST /v1/intents/simulate` and `stack_simulate_intent`.
#[derive(Debug, Clone, Deserialize)]
pub struct SimulateIntent {
    pub intent: Value,
    #[serde(default)]
    pub intent_claim_ref: Option<String>,
    /// Default true: keep the signed claim (in the audit chain) and return its id.
    #[serde(default)]
    pub persist: Option<bool>,
}

/// `POST /v1/intents/submit` and `stack_submit_intent`.
#[derive(Debug, Clone, Deserialize)]
pub struct SubmitIntent {
    pub intent: Value,
    #[serde(default)]
    pub expires_in_seconds: Option<Value>,
    #[serde(default)]
    pub skip_simulation: Option<bool>,
}

/// `POST /v1/intents/{id}/approve` and `…/reject`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct IntentDecision {
    #[serde(default)]
    pub notes: Option<String>,
    /// Reject only: also block the agent from new passports.
    #[serde(default)]
    pub block_future: Option<bool>,
}

/// `GET /v1/intents/pending`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PendingQuery {
    #[serde(default)]
    pub page: Option<Value>,
    #[serde(default)]
    pub limit: Option<Value>,
}

/// The request an intent describes.
#[derive(Debug, Clone, PartialEq)]
struct Binding {
    service: String,
    method: String,
    url: String,
    body: Option<Value>,
    connection_id: Option<String>,
}

impl Binding {
    fn digest(&self) -> String {
        request_digest(&self.service, &self.method, &self.url, self.body.as_ref())
    }

    fn bound(&self) -> BoundRequest {
        BoundRequest {
            service: self.service.clone(),
            method: self.method.clone(),
            url: self.url.clone(),
            has_body: self.body.is_some(),
        }
    }
}

/// The digest an approval binds: service, method, the full URL and the
/// canonical body (absent and `null` are the same). Headers are not bound:
/// the caller's auth headers are replaced anyway.
fn request_digest(service: &str, method: &str, url: &str, body: Option<&Value>) -> String {
    let canonical = stack_audit::canonical_json(&json!({
        "v": 1,
        "service": service,
        "method": method,
        "url": url,
        "body": body.filter(|b| !b.is_null()),
    }));
    stack_crypto::sha256_hex(canonical.as_bytes())
}

/// `url` with `query` appended the way the proxy appends it.
fn full_url(url: &str, query: &BTreeMap<String, String>) -> String {
    let mut out = url.to_owned();
    if !query.is_empty() {
        let extra: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect();
        out.push(if out.contains('?') { '&' } else { '?' });
        out.push_str(&extra.join("&"));
    }
    out
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Reads the request an intent describes: `target` `{service, url, query?,
/// connection_id?}`, `action` (the HTTP method; `target.method` also works)
/// and `parameters` (the body).
fn binding_of(intent: &Map<String, Value>) -> Result<Binding> {
    let target = match intent.get("target") {
        Some(Value::Object(t)) => t,
        _ => {
            return Err(Error::invalid_field(
                "intent.target",
                "intent.target must be an object {service, url, query?}: the proxied call this intent is for",
            ));
        }
    };
    let text = |v: Option<&Value>, field: &str| -> Result<String> {
        match v {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
            _ => Err(Error::invalid_field(
                field,
                format!("{field} must be a non-empty string"),
            )),
        }
    };
    let service = text(target.get("service"), "intent.target.service")?;
    let url = text(target.get("url"), "intent.target.url")?;
    let method = match (intent.get("action"), target.get("method")) {
        (Some(Value::String(a)), _) if !a.trim().is_empty() => a.trim().to_ascii_uppercase(),
        (_, Some(Value::String(m))) => m.trim().to_ascii_uppercase(),
        _ => {
            return Err(Error::invalid_field(
                "intent.action",
                "intent.action must be the HTTP method of the call (GET, POST, …)",
            ));
        }
    };
    if !METHODS.contains(&method.as_str()) {
        return Err(Error::invalid_field(
            "intent.action",
            "intent.action must be GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS",
        ));
    }
    let query: BTreeMap<String, String> = match target.get("query") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(q)) => q
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(Error::invalid_field(
                    "intent.target.query",
                    "intent.target.query values must be strings",
                )),
            })
            .collect::<Result<_>>()?,
        Some(_) => {
            return Err(Error::invalid_field(
                "intent.target.query",
                "intent.target.query must be an object of strings",
            ));
        }
    };
    let connection_id = match target.get("connection_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(Error::invalid_field(
                "intent.target.connection_id",
                "intent.target.connection_id must be a string",
            ));
        }
    };
    Ok(Binding {
        service,
        method,
        url: full_url(&url, &query),
        body: intent.get("parameters").filter(|b| !b.is_null()).cloned(),
        connection_id,
    })
}

fn intent_object(intent: &Value) -> Result<&Map<String, Value>> {
    let map = intent
        .as_object()
        .ok_or_else(|| Error::invalid_field("intent", "intent must be an object"))?;
    if serde_json::to_vec(intent).map_or(usize::MAX, |v| v.len()) > MAX_INTENT_BYTES {
        return Err(Error::new(
            ErrorCode::PayloadTooLarge,
            format!("the intent is larger than {MAX_INTENT_BYTES} bytes"),
        ));
    }
    Ok(map)
}

fn reason(code: ErrorCode, message: impl Into<String>) -> Value {
    json!({ "code": code.as_str(), "message": message.into() })
}

fn int(v: Option<&Value>, field: &str) -> Result<Option<i64>> {
    let bad = || Error::invalid_field(field, format!("{field} must be an integer"));
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(bad),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

fn clip_notes(notes: Option<String>) -> Option<String> {
    notes
        .map(|n| n.trim().chars().take(MAX_NOTES).collect::<String>())
        .filter(|n| !n.is_empty())
}

fn is_approval_id(id: &str) -> bool {
    id.strip_prefix("ia_")
        .is_some_and(stack_core::id::is_url_safe_body)
}

/// The outcome of a dry run.
struct Evaluation {
    allowed: bool,
    denial_reasons: Vec<Value>,
    predicted: Vec<Value>,
    cost: Value,
    diagnostics: Value,
}

/// The row as REST and MCP return it.
pub fn approval_view(a: &IntentApproval, now: Timestamp) -> Value {
    json!({
        "id": a.id,
        "approval_id": a.id,
        "operator_id": a.operator_id,
        "agent_id": a.agent_id,
        "passport_jti": a.passport_jti,
        "intent_claim_id": a.intent_claim_id,
        "simulated_claim_id": a.simulated_claim_id,
        "status": a.status_at(now).as_str(),
        "intent": a.intent,
        "request": a.request,
        "request_digest": a.request_digest,
        "simulation": a.simulation,
        "created_at": a.created_at.to_rfc3339(),
        "expires_at": a.expires_at.to_rfc3339(),
        "decided_at": a.decided_at.map(Timestamp::to_rfc3339),
        "decided_by": a.decided_by,
        "notes": a.notes,
        "block_future": a.block_future,
        "consumed_at": a.consumed_at.map(Timestamp::to_rfc3339),
    })
}

impl App {
    /// The passport an intent call acts for: `X-Passport-Token`, or the
    /// bearer when the caller authenticated with a passport. It must be live,
    /// the caller's operator's, and (for agent-confined callers) their own.
    async fn intent_passport(
        &self,
        caller: &Principal,
        token: Option<&str>,
    ) -> Result<PassportRecord> {
        let token = token.map(str::trim).filter(|t| !t.is_empty());
        let record = match (token, &caller.kind) {
            (Some(t), _) => self.live_passport(t).await?.1,
            (None, PrincipalKind::Passport { jti, .. }) => {
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
                r
            }
            (None, _) => {
                return Err(Error::unauthorized(
                    "intents are simulated and submitted for a passport: send X-Passport-Token",
                ));
            }
        };
        if record.operator_id != caller.operator_id {
            return Err(Error::unauthorized(
                "passport is not known to this deployment",
            ));
        }
        if caller
            .confined_agent()
            .is_some_and(|a| a != record.agent_id)
        {
            return Err(Error::forbidden(
                "the passport belongs to another agent than the caller",
            ));
        }
        if self.now().as_secs() >= record.expires_at {
            return Err(Error::new(
                ErrorCode::PassportExpired,
                "passport has expired",
            ));
        }
        Ok(record)
    }

    /// The proxy's checks, run without sending anything or opening the
    /// credential, collecting every reason the call would be refused.
    async fn evaluate(
        &self,
        record: &PassportRecord,
        intent: &Map<String, Value>,
        b: &Binding,
    ) -> Result<Evaluation> {
        let mut reasons: Vec<Value> = Vec::new();
        let mut diagnostics = Map::new();
        if let Some(agent) = intent.get("agent_id").and_then(Value::as_str)
            && agent != record.agent_id
        {
            reasons.push(reason(
                ErrorCode::Forbidden,
                "intent.agent_id is not the passport's agent",
            ));
        }
        let grant = record.services.iter().find(|s| {
            s.service_name == b.service
                && b.connection_id
                    .as_ref()
                    .is_none_or(|c| *c == s.connection_id)
        });
        let mut target = None;
        let mut response_scan = crate::services::ResponseScan::Off;
        match grant {
            None => reasons.push(reason(
                ErrorCode::ScopeDenied,
                format!("the passport holds no grant for service {}", b.service),
            )),
            Some(grant) => {
                diagnostics.insert(
                    "grant".into(),
                    json!({ "connection_id": grant.connection_id, "scopes": grant.scopes, "constraints": grant.constraints.len() }),
                );
                let live = self
                    .grants_of(&record.operator_id, &record.agent_id)
                    .await?;
                if !live.iter().any(|g| g.connection_id == grant.connection_id) {
                    reasons.push(reason(
                        ErrorCode::ScopeDenied,
                        "the grant behind this passport has been revoked",
                    ));
                }
                // As the proxy decides it: the strictest live grant's mode.
                response_scan = live
                    .iter()
                    .filter(|g| g.connection_id == grant.connection_id)
                    .map(|g| g.response_scan)
                    .max()
                    .unwrap_or_default();
                let owner = Principal::operator(record.operator_id.clone());
                match self.load_connection(&owner, &grant.connection_id).await {
                    Err(e) if e.code == ErrorCode::NotFound => reasons.push(reason(
                        ErrorCode::ScopeDenied,
                        "the connection behind this grant no longer exists",
                    )),
                    Err(e) => return Err(e),
                    Ok((connection, _)) => {
                        if connection.status != "active" {
                            reasons.push(reason(
                                ErrorCode::ScopeDenied,
                                "the connection is disconnected",
                            ));
                        }
                        let needed = if matches!(b.method.as_str(), "GET" | "HEAD" | "OPTIONS") {
                            "read"
                        } else {
                            "write"
                        };
                        if grant.scopes.is_empty()
                            || (connection.service == "custom"
                                && !grant.scopes.iter().any(|s| s == needed))
                        {
                            reasons.push(reason(
                                ErrorCode::ScopeDenied,
                                format!("this call needs the {needed} scope"),
                            ));
                        }
                        let allow_http = connection
                            .base_url
                            .as_deref()
                            .is_some_and(|u| u.starts_with("http://"));
                        let parsed = if allow_http && b.url.starts_with("http://") {
                            stack_proxy::parse_target(
                                &b.url.replacen("http://", "https://", 1),
                                &connection.hosts,
                            )
                            .map(|mut t| {
                                t.scheme = stack_proxy::Scheme::Http;
                                t
                            })
                        } else {
                            stack_proxy::parse_target(&b.url, &connection.hosts)
                        };
                        match parsed {
                            Err(e) => reasons.push(
                                json!({ "code": ErrorCode::ScopeDenied.as_str(), "message": format!("the URL is refused: {e}"), "reason": e.code() }),
                            ),
                            Ok(t) => {
                                let port = connection.base_url.as_deref().and_then(|base| {
                                    let rest = base.split_once("://").map_or(base, |(_, r)| r);
                                    rest.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok())
                                });
                                if port.is_some_and(|p| p != t.port) {
                                    reasons.push(reason(
                                        ErrorCode::ScopeDenied,
                                        "the URL's port is not the connection's",
                                    ));
                                }
                                diagnostics.insert(
                                    "target".into(),
                                    json!({ "host": t.host, "path": t.path, "port": t.port }),
                                );
                                let set = stack_proxy::ConstraintSet::compile(&grant.constraints)
                                    .map_err(|e| {
                                        Error::internal(format!(
                                            "stored constraints do not compile: {e}"
                                        ))
                                    })?;
                                if let Err(v) = stack_proxy::check_target(
                                    &set,
                                    &b.method,
                                    &t,
                                    b.body.as_ref(),
                                ) {
                                    reasons.push(json!({
                                        "code": ErrorCode::ConstraintViolation.as_str(),
                                        "message": v.message,
                                        "constraint": v.index,
                                        "path": v.path,
                                    }));
                                }
                                target = Some(t);
                            }
                        }
                    }
                }
            }
        }
        if let Some(named) = intent.get("named_intent").filter(|v| !v.is_null()) {
            check_named_intent(named, b, target.as_ref(), &mut reasons)?;
        }
        // One proxied call against the monthly allowance.
        let owner = Principal::operator(record.operator_id.clone());
        let usage = self.proxy_usage(&owner).await?;
        let remaining = usage.get("remaining").and_then(Value::as_u64).unwrap_or(0);
        if remaining == 0 {
            reasons.push(reason(
                ErrorCode::QuotaExceeded,
                "the monthly proxy allowance is used up",
            ));
        }
        let outside_scope = reasons.iter().any(|r| {
            matches!(
                r.get("code").and_then(Value::as_str),
                Some("SCOPE_DENIED" | "CONSTRAINT_VIOLATION")
            )
        });
        let mut predicted = if outside_scope {
            vec![json!({
                "detector": "credential_outside_scope",
                "severity": "warning",
                "effect": "security_event",
            })]
        } else {
            Vec::new()
        };
        // The response scanner runs on the upstream's answer, which a dry
        // run does not have: what it would do, not what it would find.
        if reasons.is_empty() && response_scan != crate::services::ResponseScan::Off {
            predicted.push(json!({
                "detector": "response_scan",
                "mode": response_scan.as_str(),
                "effect": if response_scan == crate::services::ResponseScan::Block {
                    "the upstream answer is scanned; a critical verdict withholds it (502 RESPONSE_BLOCKED) and raises a prompt_injection security event"
                } else {
                    "the upstream answer is scanned and the verdict added as `scan`; a critical verdict raises a prompt_injection security event"
                },
            }));
        }
        let enforced = record.accountability == AccountabilityMode::Enforced;
        diagnostics.insert(
            "passport".into(),
            json!({
                "jti": record.jti,
                "agent_id": record.agent_id,
                "accountability": record.accountability.as_str(),
                "expires_at": iso(record.expires_at),
            }),
        );
        diagnostics.insert("requires_approval".into(), json!(enforced));
        diagnostics.insert("request".into(), json!(b.bound()));
        diagnostics.insert("request_digest".into(), json!(b.digest()));
        Ok(Evaluation {
            allowed: reasons.is_empty(),
            denial_reasons: reasons,
            predicted,
            cost: json!({
                "proxy_calls": 1,
                "estimated_cost": intent.get("estimated_cost").cloned().unwrap_or(Value::Null),
                "quota": usage,
            }),
            diagnostics: Value::Object(diagnostics),
        })
    }

    /// Runs the simulation and builds its result (and signed claim).
    async fn simulation(
        &self,
        record: &PassportRecord,
        intent: &Value,
        map: &Map<String, Value>,
        b: &Binding,
        intent_claim_ref: Option<&str>,
        persist: bool,
    ) -> Result<(Value, String)> {
        let ev = self.evaluate(record, map, b).await?;
        let now = self.now();
        let claim_id = format!("sim_{}", stack_crypto::random_token(self.rng.as_ref(), 16)?);
        let intent_digest =
            stack_crypto::sha256_hex(stack_audit::canonical_json(intent).as_bytes());
        // The statement, signed with the passport key (verifiable with the JWKS).
        let statement = json!({
            "iss": self.passports.keys.issuer(),
            "iat": now.as_secs(),
            "jti": claim_id,
            "type": "intent_simulation",
            "sub": record.agent_id,
            "operator_id": record.operator_id,
            "passport_jti": record.jti,
            "intent_digest": intent_digest,
            "intent_claim_ref": intent_claim_ref,
            "request": b.bound(),
            "request_digest": b.digest(),
            "allowed": ev.allowed,
            "denial_reasons": ev.denial_reasons,
            "predicted_detector_fires": ev.predicted,
            "simulated_at": now.to_rfc3339(),
        });
        let claim = self
            .passports
            .keys
            .signer()?
            .sign_statement(SIMULATION_TYP, &statement)
            .map_err(|e| Error::internal(format!("cannot sign the simulation: {e}")))?;
        let result = json!({
            "allowed": ev.allowed,
            "denial_reasons": ev.denial_reasons,
            "simulated_cost": ev.cost,
            "predicted_detector_fires": ev.predicted,
            "simulated_at": now.to_rfc3339(),
            "claim_id": persist.then(|| claim_id.clone()),
            "intent_claim_ref": intent_claim_ref,
            "diagnostics": ev.diagnostics,
            "claim": claim,
            "claim_typ": SIMULATION_TYP,
        });
        Ok((result, claim_id))
    }

    /// `POST /v1/intents/simulate`: the dry run. Writes one `intent.simulate`
    /// audit entry; with `persist` (the default) the entry keeps the signed
    /// claim and the answer carries its `claim_id`.
    pub async fn simulate_intent(
        &self,
        caller: &Principal,
        passport_token: Option<&str>,
        cmd: SimulateIntent,
    ) -> Result<Value> {
        require(caller, Permission::PassportsRead)?;
        let record = self.intent_passport(caller, passport_token).await?;
        let map = intent_object(&cmd.intent)?;
        let b = binding_of(map)?;
        let claim_ref = cmd
            .intent_claim_ref
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty());
        if let Some(r) = claim_ref
            && !r
                .strip_prefix("pc_")
                .is_some_and(stack_core::id::is_url_safe_body)
        {
            return Err(Error::invalid_field(
                "intent_claim_ref",
                "intent_claim_ref must be an intent claim id (pc_…)",
            ));
        }
        let persist = cmd.persist.unwrap_or(true);
        let (result, claim_id) = self
            .simulation(&record, &cmd.intent, map, &b, claim_ref, persist)
            .await?;
        let mut draft = Self::draft(caller, Layer::Proxy, "intent.simulate")
            .agent(&record.agent_id)
            .payload(&cmd.intent);
        draft.passport_jti = Some(record.jti.clone());
        let mut details = json!({
            "allowed": result.get("allowed"),
            "denial_codes": result.get("denial_reasons").and_then(Value::as_array).map(|a| a.iter().filter_map(|r| r.get("code").cloned()).collect::<Vec<_>>()),
            "request": b.bound(),
            "request_digest": b.digest(),
            "intent_claim_ref": claim_ref,
            "persisted": persist,
        });
        if persist {
            draft = draft.target("intent_simulation", &claim_id);
            if let Value::Object(m) = &mut details {
                m.insert("claim_id".into(), json!(claim_id));
                m.insert(
                    "claim".into(),
                    result.get("claim").cloned().unwrap_or_default(),
                );
            }
        }
        let audit = self.audit(draft.details(details))?;
        self.store.append_audit(&caller.operator_id, audit).await?;
        Ok(result)
    }

    /// `POST /v1/intents/submit`: a pending approval bound to the passport
    /// and to the exact request, simulated first unless asked not to.
    pub async fn submit_intent(
        &self,
        caller: &Principal,
        passport_token: Option<&str>,
        cmd: SubmitIntent,
    ) -> Result<Value> {
        require(caller, Permission::Proxy)?;
        let record = self.intent_passport(caller, passport_token).await?;
        let map = intent_object(&cmd.intent)?;
        let b = binding_of(map)?;
        let ttl = int(cmd.expires_in_seconds.as_ref(), "expires_in_seconds")?
            .unwrap_or(DEFAULT_APPROVAL_TTL);
        if !(1..=MAX_APPROVAL_TTL).contains(&ttl) {
            return Err(Error::invalid_field(
                "expires_in_seconds",
                format!("expires_in_seconds must be between 1 and {MAX_APPROVAL_TTL}"),
            ));
        }
        let (simulation, simulated_claim_id) = if cmd.skip_simulation.unwrap_or(false) {
            (None, None)
        } else {
            let (sim, id) = self
                .simulation(&record, &cmd.intent, map, &b, None, true)
                .await?;
            (Some(sim), Some(id))
        };
        let now = self.now();
        let approval = IntentApproval {
            id: format!("ia_{}", stack_crypto::random_token(self.rng.as_ref(), 16)?),
            operator_id: record.operator_id.clone(),
            agent_id: record.agent_id.clone(),
            passport_jti: record.jti.clone(),
            intent_claim_id: format!("pc_{}", stack_crypto::random_token(self.rng.as_ref(), 16)?),
            simulated_claim_id: simulated_claim_id.clone(),
            intent: cmd.intent.clone(),
            request: b.bound(),
            request_digest: b.digest(),
            status: IntentStatus::Pending,
            simulation: simulation.clone(),
            created_at: now,
            expires_at: now.plus_millis(ttl.saturating_mul(1000)),
            decided_at: None,
            decided_by: None,
            notes: None,
            block_future: false,
            consumed_at: None,
            consumed_request_id: None,
        };
        let mut draft = Self::draft(caller, Layer::Proxy, "intent.submit")
            .agent(&record.agent_id)
            .target("intent_approval", &approval.id)
            .payload(&cmd.intent)
            .details(json!({
                "intent_claim_id": approval.intent_claim_id,
                "request": approval.request,
                "request_digest": approval.request_digest,
                "expires_at": approval.expires_at.to_rfc3339(),
                "simulated_claim_id": simulated_claim_id,
                "simulation_allowed": simulation.as_ref().and_then(|s| s.get("allowed")),
                "simulation_claim": simulation.as_ref().and_then(|s| s.get("claim")),
            }));
        draft.passport_jti = Some(record.jti.clone());
        let audit = self.audit(draft)?;
        self.store.insert_intent_approval(&approval, audit).await?;
        Ok(json!({
            "approval_id": approval.id,
            "id": approval.id,
            "intent_claim_id": approval.intent_claim_id,
            "simulated_claim_id": approval.simulated_claim_id,
            "status": IntentStatus::Pending.as_str(),
            "expires_at": approval.expires_at.to_rfc3339(),
            "passport_jti": approval.passport_jti,
            "request": approval.request,
            "request_digest": approval.request_digest,
            "simulation": simulation,
        }))
    }

    /// An approval of the caller's operator (and, for agent-confined
    /// callers, of their own agent); anything else is NOT_FOUND.
    async fn load_approval(&self, p: &Principal, id: &str) -> Result<IntentApproval> {
        if !is_approval_id(id) {
            return Err(Error::not_found("intent approval", id));
        }
        let a = self
            .store
            .get_intent_approval(&p.operator_id, id)
            .await?
            .filter(|a| a.operator_id == p.operator_id)
            .ok_or_else(|| Error::not_found("intent approval", id))?;
        if p.confined_agent().is_some_and(|agent| agent != a.agent_id) {
            return Err(Error::not_found("intent approval", id));
        }
        Ok(a)
    }

    /// `GET /v1/intents/{id}`.
    pub async fn get_intent_approval(&self, p: &Principal, id: &str) -> Result<Value> {
        require(p, Permission::PassportsRead)?;
        let a = self.load_approval(p, id).await?;
        Ok(approval_view(&a, self.now()))
    }

    /// `GET /v1/intents/pending`: the operator's queue, oldest first.
    pub async fn list_pending_intents(&self, p: &Principal, q: PendingQuery) -> Result<Value> {
        require(p, Permission::PassportsRead)?;
        let page = int(q.page.as_ref(), "page")?.unwrap_or(1).max(1);
        let limit = int(q.limit.as_ref(), "limit")?.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(Error::invalid_field(
                "limit",
                "limit must be between 1 and 100",
            ));
        }
        let offset = (page - 1).saturating_mul(limit);
        let now = self.now();
        let (items, total) = self
            .store
            .list_pending_intent_approvals(
                &p.operator_id,
                p.confined_agent(),
                now,
                offset.unsigned_abs(),
                limit.unsigned_abs(),
            )
            .await?;
        Ok(json!({
            "items": items.iter().map(|a| approval_view(a, now)).collect::<Vec<_>>(),
            "total": total,
            "page": page,
            "limit": limit,
        }))
    }

    /// Moves a pending approval to `to`, refusing anything not pending,
    /// except that rejecting an already rejected row answers with that row
    /// (the first decision, unchanged): the reject's revocation and block
    /// are separate writes, and a reject that failed after its decision was
    /// stored must be retryable.
    async fn decide_intent(
        &self,
        p: &Principal,
        id: &str,
        to: IntentStatus,
        d: IntentDecision,
    ) -> Result<IntentApproval> {
        require(p, Permission::PassportsWrite)?;
        let current = self.load_approval(p, id).await?;
        let now = self.now();
        let status = current.status_at(now);
        if to == IntentStatus::Rejected && status == IntentStatus::Rejected {
            return Ok(current);
        }
        if status != IntentStatus::Pending {
            return Err(Error::conflict(format!(
                "intent approval {id} is {}; only a pending approval can be decided",
                status.as_str()
            ))
            .with_details(json!({ "status": status.as_str() })));
        }
        let block = to == IntentStatus::Rejected && d.block_future.unwrap_or(false);
        let mut next = current.clone();
        next.status = to;
        next.decided_at = Some(now);
        next.decided_by = Some(p.actor_label());
        next.notes = clip_notes(d.notes);
        next.block_future = block;
        let action = if to == IntentStatus::Approved {
            "intent.approve"
        } else {
            "intent.reject"
        };
        let mut draft = Self::draft(p, Layer::Proxy, action)
            .agent(&current.agent_id)
            .target("intent_approval", id)
            .details(json!({
                "intent_claim_id": current.intent_claim_id,
                "request_digest": current.request_digest,
                "notes": next.notes,
                "block_future": block,
            }));
        draft.passport_jti = Some(current.passport_jti.clone());
        let audit = self.audit(draft)?;
        if !self
            .store
            .transition_intent_approval(&next, IntentStatus::Pending, now, audit)
            .await?
        {
            let latest = self.store.get_intent_approval(&p.operator_id, id).await?;
            let status = latest
                .as_ref()
                .map_or(IntentStatus::Expired, |a| a.status_at(self.now()));
            // A concurrent reject won: the same answer as a repeat.
            if let Some(a) = latest
                && to == IntentStatus::Rejected
                && status == IntentStatus::Rejected
            {
                return Ok(a);
            }
            return Err(Error::conflict(format!(
                "intent approval {id} is {}; only a pending approval can be decided",
                status.as_str()
            ))
            .with_details(json!({ "status": status.as_str() })));
        }
        Ok(next)
    }

    /// `POST /v1/intents/{id}/approve`.
    pub async fn approve_intent(
        &self,
        p: &Principal,
        id: &str,
        d: IntentDecision,
    ) -> Result<Value> {
        let a = self.decide_intent(p, id, IntentStatus::Approved, d).await?;
        Ok(approval_view(&a, self.now()))
    }

    /// `POST /v1/intents/{id}/reject`: rejects, revokes the passport (with
    /// its cascade) and, with `block_future`, blocks the agent from new
    /// passports until it is unblocked.
    ///
    /// The decision, the revocation and the block are three transactions.
    /// Rejecting a row that is already rejected is therefore not a conflict:
    /// it re-applies the stored decision's revocation and block where they
    /// are not in place (both are idempotent) and answers as the first
    /// reject did, so a reject that failed part way is retried safely.
    /// `revoked_jtis` lists the passports this call revoked.
    pub async fn reject_intent(&self, p: &Principal, id: &str, d: IntentDecision) -> Result<Value> {
        let a = self.decide_intent(p, id, IntentStatus::Rejected, d).await?;
        let reason = format!("intent approval {id} rejected");
        // A revoked passport's cascade was revoked in the same transaction.
        let already_revoked = self
            .store
            .get_passport(&a.passport_jti)
            .await?
            .is_some_and(|r| r.revoked_at.is_some());
        let revoked = if already_revoked {
            Vec::new()
        } else {
            self.revoke_selected(
                p,
                &RevokeSelector::Passport(a.passport_jti.clone()),
                &reason,
                "passport.revoke",
            )
            .await?
        };
        let agent_blocked = if a.block_future {
            self.block_agent_for_intent(p, &a).await?
        } else {
            false
        };
        let mut view = approval_view(&a, self.now());
        if let Value::Object(m) = &mut view {
            m.insert("passport_revoked".into(), json!(true));
            m.insert(
                "revoked_jtis".into(),
                json!(revoked.iter().map(|r| r.jti.clone()).collect::<Vec<_>>()),
            );
            m.insert("agent_blocked".into(), json!(agent_blocked));
        }
        Ok(view)
    }

    /// Sets `passport_blocked` on the approval's agent (as a blocking review
    /// decision does), recorded as `agent.block`; an agent already blocked
    /// is left as it is, with nothing written. `false` when the agent is gone.
    async fn block_agent_for_intent(&self, p: &Principal, a: &IntentApproval) -> Result<bool> {
        let entry_id = self.new_id(stack_core::IdKind::AuditEntry)?;
        let now = self.now();
        let reason = a
            .notes
            .clone()
            .unwrap_or_else(|| format!("blocked by rejecting intent approval {}", a.id));
        let draft = Self::draft(p, Layer::System, "agent.block")
            .agent(&a.agent_id)
            .target("agent", &a.agent_id)
            .details(json!({ "reason": reason, "intent_approval_id": a.id }));
        let updated = self
            .store
            .update_agent(
                &p.operator_id,
                &a.agent_id,
                Box::new(move |mut agent: Agent| {
                    if agent.passport_blocked {
                        return Ok((agent, None));
                    }
                    agent.passport_blocked = true;
                    agent.passport_blocked_reason = Some(reason);
                    agent.passport_blocked_at = Some(now);
                    agent.updated_at = now.max(agent.updated_at);
                    Ok((
                        agent,
                        Some(NewAudit {
                            entry_id,
                            now,
                            draft,
                        }),
                    ))
                }),
            )
            .await?;
        Ok(updated.is_some())
    }

    /// The proxy's gate: an enforced-mode passport must present an approved,
    /// unexpired, unused approval of its own for exactly this request
    /// (`X-Intent-Approval-Id` / `approval_id`); one presented by any other
    /// passport is checked the same way. Using it marks it consumed, with an
    /// `intent.consume` audit entry, in one conditional update. An unchanged
    /// retry under the same authority request id passes, so the proxy can
    /// replay the recorded response.
    pub(crate) async fn redeem_intent_approval(
        &self,
        caller: &Principal,
        record: &PassportRecord,
        method: &str,
        req: &ProxyRequest,
        request_id: Option<&str>,
    ) -> Result<()> {
        let id = req
            .approval_id
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let Some(id) = id else {
            if record.accountability == AccountabilityMode::Enforced {
                return Err(Error::new(
                    ErrorCode::IntentApprovalRequired,
                    "this passport is in enforced accountability mode: submit the intent (POST /v1/intents/submit), have it approved, and send its id as X-Intent-Approval-Id",
                ));
            }
            return Ok(());
        };
        let invalid = |message: String| Error::new(ErrorCode::IntentApprovalInvalid, message);
        if !is_approval_id(id) {
            return Err(invalid(
                "X-Intent-Approval-Id is not an intent approval id".into(),
            ));
        }
        let Some(a) = self
            .store
            .get_intent_approval(&caller.operator_id, id)
            .await?
            .filter(|a| a.operator_id == record.operator_id)
        else {
            return Err(invalid(format!("no intent approval {id}")));
        };
        if a.passport_jti != record.jti {
            return Err(Error::new(
                ErrorCode::IntentApprovalMismatch,
                format!("intent approval {id} was granted to another passport"),
            ));
        }
        let digest = request_digest(
            &req.service,
            method,
            &full_url(&req.url, &req.query),
            req.body.as_ref(),
        );
        if a.request_digest != digest {
            return Err(Error::new(
                ErrorCode::IntentApprovalMismatch,
                format!("intent approval {id} approves a different request (service, method, URL or body differ)"),
            )
            .with_details(json!({ "approved_request": a.request })));
        }
        let now = self.now();
        match a.status_at(now) {
            IntentStatus::Approved => {}
            // An unchanged retry of the call that used it: the proxy replays.
            IntentStatus::Consumed
                if !matches!(method, "GET" | "HEAD")
                    && request_id.is_some()
                    && a.consumed_request_id.as_deref() == request_id =>
            {
                return Ok(());
            }
            status => return Err(unusable(id, status)),
        }
        let mut next = a.clone();
        next.status = IntentStatus::Consumed;
        next.consumed_at = Some(now);
        next.consumed_request_id = request_id.map(str::to_owned);
        let mut draft = Self::draft(caller, Layer::Proxy, "intent.consume")
            .agent(&a.agent_id)
            .target("intent_approval", id)
            .details(json!({
                "intent_claim_id": a.intent_claim_id,
                "request_digest": digest,
                "authority_request_id": request_id,
            }));
        draft.passport_jti = Some(record.jti.clone());
        let audit = self.audit(draft)?;
        if self
            .store
            .transition_intent_approval(&next, IntentStatus::Approved, now, audit)
            .await?
        {
            return Ok(());
        }
        // Another call used it (or it expired) since we read it.
        let status = self
            .store
            .get_intent_approval(&caller.operator_id, id)
            .await?
            .map_or(IntentStatus::Consumed, |a| a.status_at(self.now()));
        Err(unusable(id, status))
    }
}

/// A named intent (`"slack.post_to_channel"` or `{name, params}`) must
/// be of the target's service and allow the request.
fn check_named_intent(
    named: &Value,
    b: &Binding,
    target: Option<&stack_proxy::Target>,
    reasons: &mut Vec<Value>,
) -> Result<()> {
    let (name, params) = match named {
        Value::String(n) => (n.clone(), Value::Null),
        Value::Object(m) => (
            m.get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            m.get("params").cloned().unwrap_or(Value::Null),
        ),
        _ => {
            return Err(Error::invalid_field(
                "intent.named_intent",
                "intent.named_intent must be a name or {name, params}",
            ));
        }
    };
    let catalog = stack_proxy::Catalog::builtin()
        .map_err(|e| Error::internal(format!("the service catalog is invalid: {e}")))?;
    let Some(spec) = catalog.intent(&name) else {
        reasons.push(reason(
            ErrorCode::ValidationError,
            "intent.named_intent is not a known named intent (see stack_list_intents)",
        ));
        return Ok(());
    };
    if spec.service != b.service {
        reasons.push(reason(
            ErrorCode::ScopeDenied,
            format!(
                "the named intent {name} is for service {}, not {}",
                spec.service, b.service
            ),
        ));
        return Ok(());
    }
    let constraints = match spec.expand(&params) {
        Ok(c) => c,
        Err(e) => {
            reasons.push(reason(
                ErrorCode::ValidationError,
                format!("intent.named_intent params: {e}"),
            ));
            return Ok(());
        }
    };
    if let Some(t) = target {
        let set = stack_proxy::ConstraintSet::from_constraints(constraints)
            .map_err(|e| Error::internal(format!("named intent does not compile: {e}")))?;
        if let Err(v) = stack_proxy::check_target(&set, &b.method, t, b.body.as_ref()) {
            reasons.push(json!({
                "code": ErrorCode::ConstraintViolation.as_str(),
                "message": format!("the request is outside the named intent {name}: {}", v.message),
                "path": v.path,
            }));
        }
    }
    Ok(())
}

/// The refusal for an approval that exists but cannot be used.
fn unusable(id: &str, status: IntentStatus) -> Error {
    let (code, message) = match status {
        IntentStatus::Expired => (
            ErrorCode::IntentApprovalExpired,
            format!("intent approval {id} has expired; submit the intent again"),
        ),
        IntentStatus::Consumed => (
            ErrorCode::IntentApprovalConsumed,
            format!("intent approval {id} was already used; approvals are single use"),
        ),
        IntentStatus::Pending => (
            ErrorCode::IntentApprovalInvalid,
            format!("intent approval {id} is still pending an operator decision"),
        ),
        IntentStatus::Rejected => (
            ErrorCode::IntentApprovalInvalid,
            format!("intent approval {id} was rejected"),
        ),
        IntentStatus::Approved => (
            ErrorCode::IntentApprovalInvalid,
            format!("intent approval {id} could not be used"),
        ),
    };
    Error::new(code, message).with_details(json!({ "status": status.as_str() }))
}

fn iso(secs: i64) -> String {
    Timestamp::from_millis(secs.saturating_mul(1000)).to_rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn an_intent_binds_service_method_url_and_body() {
        let b = binding_of(&intent(json!({
            "target": {"service": "custom", "url": "https://api.example.com/v1/refunds", "query": {"b": "2", "a": "x y"}},
            "action": "post",
            "parameters": {"amount": 10, "currency": "eur"},
        })))
        .unwrap();
        assert_eq!(b.method, "POST");
        assert_eq!(b.url, "https://api.example.com/v1/refunds?a=x%20y&b=2");
        // The proxy computes the same digest for the same call, whatever the key order.
        let same = request_digest(
            "custom",
            "POST",
            &full_url(
                "https://api.example.com/v1/refunds",
                &BTreeMap::from([("a".into(), "x y".into()), ("b".into(), "2".into())]),
            ),
            Some(&json!({"currency": "eur", "amount": 10})),
        );
        assert_eq!(b.digest(), same);
        let other_body = request_digest(
            "custom",
            "POST",
            &b.url,
            Some(&json!({"currency": "eur", "amount": 11})),
        );
        assert_ne!(b.digest(), other_body);
        assert_ne!(
            b.digest(),
            request_digest("custom", "PUT", &b.url, b.body.as_ref())
        );
        // No body and a null body are the same request.
        assert_eq!(
            request_digest("s", "GET", "u", None),
            request_digest("s", "GET", "u", Some(&Value::Null))
        );
    }

    #[test]
    fn malformed_intents_are_validation_errors() {
        for bad in [
            json!({}),
            json!({"target": "https://x", "action": "GET"}),
            json!({"target": {"service": "s"}, "action": "GET"}),
            json!({"target": {"service": "s", "url": "https://x"}}),
            json!({"target": {"service": "s", "url": "https://x"}, "action": "FETCH"}),
            json!({"target": {"service": "s", "url": "https://x", "query": {"a": 1}}, "action": "GET"}),
        ] {
            let e = binding_of(&intent(bad.clone())).unwrap_err();
            assert_eq!(e.code, ErrorCode::ValidationError, "{bad}");
        }
    }

    #[test]
    fn pending_and_approved_rows_expire_on_read() {
        let now = Timestamp::from_millis(10_000);
        let mut a = IntentApproval {
            id: "ia_x".into(),
            operator_id: "op_a".into(),
            agent_id: "agt_a".into(),
            passport_jti: "pp_a".into(),
            intent_claim_id: "pc_a".into(),
            simulated_claim_id: None,
            intent: json!({}),
            request: BoundRequest {
                service: "s".into(),
                method: "GET".into(),
                url: "u".into(),
                has_body: false,
            },
            request_digest: String::new(),
            status: IntentStatus::Pending,
            simulation: None,
            created_at: now,
            expires_at: now.plus_millis(1_000),
            decided_at: None,
            decided_by: None,
            notes: None,
            block_future: false,
            consumed_at: None,
            consumed_request_id: None,
        };
        assert_eq!(a.status_at(now), IntentStatus::Pending);
        assert_eq!(a.status_at(now.plus_millis(1_000)), IntentStatus::Expired);
        a.status = IntentStatus::Approved;
        assert_eq!(a.status_at(now.plus_millis(5_000)), IntentStatus::Expired);
        a.status = IntentStatus::Consumed;
        assert_eq!(a.status_at(now.plus_millis(5_000)), IntentStatus::Consumed);
        assert_eq!(
            unusable("ia_x", IntentStatus::Consumed).code,
            ErrorCode::IntentApprovalConsumed
        );
    }
}
