//! The proxy pipeline (issue 4): verify the passport, find the grant it
//! carries for the service, check scope and constraints, inject the
//! credential server-side, forward through the egress port, audit the
//! decision whether allowed or denied, answer `{status, headers, body}`.
//!
//! Non-GET calls with an authority request id are delivered upstream at most
//! once: an unchanged retry gets the recorded response, a changed request
//! under the same id is refused.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use stack_audit::{Layer, Outcome};
use stack_core::{Error, ErrorCode, Permission, Principal, Result, Secret, Timestamp};
use stack_proxy::{ConstraintSet, Credential, Target};

use crate::services::ResponseScan;
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
    /// The intent approval this call redeems (`X-Intent-Approval-Id` on
    /// REST, `approval_id` on MCP); required for enforced-mode passports.
    #[serde(default)]
    pub approval_id: Option<String>,
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
    /// `dispatching`, `response_received`, `response_blocked` or `failed`.
    pub state: String,
    pub response: Option<Value>,
    pub error: Option<Value>,
    pub created_at: Timestamp,
    /// The catalog service and method of the call.
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub method: String,
    /// The agent whose passport made the call.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// When the upstream answered or the call failed.
    #[serde(default)]
    pub finished_at: Option<Timestamp>,
}

/// The usage meter proxied calls count against.
const PROXY_METER: &str = "proxy";

/// Proxied calls between their quota check and the transaction that records
/// them (and moves the meter), per (operator, period), on this node.
///
/// A call is admitted when the recorded count plus the calls in flight here
/// stay under the tier's limit. On one node the quota is therefore exact;
/// with several nodes, calls in flight on the others at the moment the
/// limit is reached may overshoot it by at most their number.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    calls: std::sync::Mutex<HashMap<(String, String), u64>>,
}

/// One admitted call; dropping it (once the call is recorded, or when it
/// stops early) releases its place.
#[derive(Debug)]
pub(crate) struct Reservation {
    in_flight: Arc<InFlight>,
    key: (String, String),
}

impl InFlight {
    /// Admits one call unless `used` plus the calls in flight reach `limit`.
    pub(crate) fn reserve(
        self: &Arc<Self>,
        operator_id: &str,
        period: &str,
        used: u64,
        limit: u64,
    ) -> Option<Reservation> {
        let key = (operator_id.to_owned(), period.to_owned());
        let mut calls = self
            .calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = calls.entry(key.clone()).or_insert(0);
        if used.saturating_add(*n) >= limit {
            if *n == 0 {
                calls.remove(&key);
            }
            return None;
        }
        *n += 1;
        Some(Reservation {
            in_flight: Arc::clone(self),
            key,
        })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut calls = self
            .in_flight
            .calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = calls.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                calls.remove(&self.key);
            }
        }
    }
}

/// Most entries a node keeps in each of the proxy's per-passport caches.
const PER_PASSPORT_CAPACITY: usize = 10_000;

/// Values keyed by passport, each kept until a deadline (the passport's
/// expiry): what never changes after a passport is issued. Bounded: when
/// full, expired entries go, and if none had expired, all of them.
pub(crate) struct UntilCache<V> {
    entries: std::sync::RwLock<HashMap<String, (Arc<V>, i64)>>,
}

impl<V> Default for UntilCache<V> {
    fn default() -> Self {
        Self {
            entries: std::sync::RwLock::default(),
        }
    }
}

impl<V> std::fmt::Debug for UntilCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UntilCache").finish_non_exhaustive()
    }
}

impl<V> UntilCache<V> {
    fn get(&self, key: &str, now_ms: i64) -> Option<Arc<V>> {
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .filter(|(_, until)| *until > now_ms)
            .map(|(v, _)| Arc::clone(v))
    }

    fn put(&self, key: &str, value: Arc<V>, until_ms: i64, now_ms: i64) {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= PER_PASSPORT_CAPACITY && !entries.contains_key(key) {
            entries.retain(|_, (_, until)| *until > now_ms);
            if entries.len() >= PER_PASSPORT_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key.to_owned(), (value, until_ms));
    }
}

/// Passport records the proxy has read, by jti, each kept until its token
/// expires. Only the fields fixed at issue are used from a cached record;
/// revocation is decided by the revocation index on every call.
pub(crate) type PassportRecords = UntilCache<crate::passports::PassportRecord>;

/// Compiled constraint sets of passport grants, by (jti, service,
/// connection), each kept until its passport expires: a passport's grants
/// never change after issue, and compiling a `matches` rule builds a regex.
pub(crate) type CompiledConstraints = UntilCache<ConstraintSet>;

impl CompiledConstraints {
    /// The compiled set of `grant` in the passport `jti` (valid until
    /// `until_ms`), compiled now if this node has not yet.
    fn get_or_compile(
        &self,
        jti: &str,
        grant: &stack_passport::ServiceGrant,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<Arc<ConstraintSet>> {
        let key = format!(
            "{jti}\u{0}{}\u{0}{}",
            grant.service_name, grant.connection_id
        );
        if let Some(set) = self.get(&key, now_ms) {
            return Ok(set);
        }
        let set = Arc::new(
            ConstraintSet::compile(&grant.constraints)
                .map_err(|e| Error::internal(format!("stored constraints do not compile: {e}")))?,
        );
        self.put(&key, Arc::clone(&set), until_ms, now_ms);
        Ok(set)
    }
}

/// Storage for proxy operations and usage meters.
#[async_trait]
pub trait ProxyStore: Send + Sync + 'static {
    /// Inserts `op` unless one exists for its (operator, request id);
    /// returns the stored one when it already existed.
    async fn claim_operation(&self, op: &ProxyOperation) -> Result<Option<ProxyOperation>>;
    async fn get_operation(
        &self,
        operator_id: &str,
        request_id: &str,
    ) -> Result<Option<ProxyOperation>>;
    /// Records a call that went out, in one transaction: appends its audit
    /// entry, adds one to `meter` (`(meter, period)`) and, for a call that
    /// carried a request id, stores its outcome `done`.
    async fn record_call(
        &self,
        operator_id: &str,
        audit: NewAudit,
        meter: Option<(&str, &str)>,
        done: Option<&ProxyOperation>,
    ) -> Result<()>;
    async fn usage(&self, operator_id: &str, meter: &str, period: &str) -> Result<u64>;
    /// Everything a proxied call reads before it goes out, in one round
    /// trip to the database: the operator's tier, `meter`'s count in
    /// `period`, the agent's live grants on the connection and the
    /// connection with its sealed secret.
    async fn proxy_reads(&self, q: ProxyReadsQuery<'_>) -> Result<ProxyReads>;
}

/// The keys of [`ProxyStore::proxy_reads`].
#[derive(Debug, Clone, Copy)]
pub struct ProxyReadsQuery<'a> {
    pub operator_id: &'a str,
    pub agent_id: &'a str,
    pub connection_id: &'a str,
    pub meter: &'a str,
    pub period: &'a str,
}

/// What [`ProxyStore::proxy_reads`] found.
#[derive(Debug, Clone, Default)]
pub struct ProxyReads {
    /// The operator's tier; `None` when the operator is unknown.
    pub tier: Option<String>,
    /// Calls recorded on the meter in the period.
    pub used: u64,
    /// The agent's grants on the connection that are not revoked.
    pub live_grants: Vec<crate::services::Grant>,
    /// The connection (of this operator) and its sealed secret.
    pub connection: Option<(crate::services::Connection, Option<String>)>,
}

/// Proxy allowances and limits of the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxySettings {
    /// Monthly proxied calls per tier.
    pub quotas: crate::TierQuotas,
    /// Largest request body sent upstream, in bytes (the egress client
    /// enforces the same limit on responses).
    pub max_body_bytes: usize,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            quotas: crate::TierQuotas::PROXY,
            max_body_bytes: 10 * 1024 * 1024,
        }
    }
}

fn denied(code: ErrorCode, message: impl Into<String>) -> Error {
    Error::new(code, message)
}

/// The answer to a retry under a known `X-STACK-Authority-Request-Id`.
fn replay(existing: ProxyOperation, digest: &str) -> Result<Value> {
    if existing.digest != digest {
        return Err(Error::conflict(
            "this X-STACK-Authority-Request-Id was used for a different request",
        ));
    }
    match (existing.state.as_str(), existing.response) {
        ("response_received", Some(r)) => Ok(r),
        // The retry of a withheld answer is withheld again.
        ("response_blocked", _) => {
            let error = existing.error.as_ref();
            Err(response_withheld(
                error
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or(WITHHELD_INJECTION),
                error
                    .and_then(|e| e.get("details"))
                    .and_then(|d| d.get("scan"))
                    .unwrap_or(&Value::Null),
            ))
        }
        _ => Err(Error::conflict(
            "this request's outcome is unknown (it was dispatched and did not complete); it is not sent twice",
        )
        .with_details(json!({ "delivery_state": existing.state }))),
    }
}

/// Why an answer is withheld: the scan found an injection.
const WITHHELD_INJECTION: &str = "the upstream answered, and its response was withheld: the content scan found a prompt injection";
/// Why an answer is withheld: block mode and no verdict (fail closed).
const WITHHELD_UNSCANNED: &str = "the upstream answered, and its response was withheld: the grant blocks on the content scan, which could not run";

/// The error for an upstream answer withheld by response scanning; the
/// body never reaches the caller, the scan summary does.
fn response_withheld(message: &str, summary: &Value) -> Error {
    Error::new(ErrorCode::ResponseBlocked, message).with_details(json!({ "scan": summary }))
}

/// What `decide` allows: the connection, the checked target, how the
/// credential attaches, and what to do with the response.
struct Decision {
    connection: String,
    target: Target,
    scheme: stack_proxy::AuthScheme,
    edits: stack_proxy::AuthEdits,
    response_scan: ResponseScan,
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
        let used = self
            .store
            .usage(&p.operator_id, PROXY_METER, &period)
            .await?;
        let limit = self.config.proxy.quotas.for_tier(&op.tier);
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
        let record = self.proxy_passport(caller, passport_token).await?;
        let passport_checked = started.elapsed();
        let digest = request_digest(&req, &method);
        let mut draft = Self::draft(caller, Layer::Proxy, "credential.proxy")
            .agent(&record.agent_id)
            .details(json!({ "service": req.service, "method": method, "request_digest": digest }));
        draft.passport_jti = Some(record.jti.clone());
        draft.payload_hash = Some(digest.clone());

        // Decide; every denial is audited before it is returned. What the
        // decision and the quota read comes in one round trip.
        let (period, _, _) = crate::scan::period_of(self.now());
        let (decided, quota) = match pick_grant(&record, &req) {
            Ok(grant) => {
                let (reads, used) = self
                    .proxy_reads(ProxyReadsQuery {
                        operator_id: &record.operator_id,
                        agent_id: &record.agent_id,
                        connection_id: &grant.connection_id,
                        meter: PROXY_METER,
                        period: &period,
                    })
                    .await?;
                // `None`: the operator is unknown.
                let quota = reads.tier.clone().map(|tier| (tier, used));
                (
                    self.decide(&record, grant, &reads, &method, &req).await,
                    quota,
                )
            }
            Err(e) => (Err(e), None),
        };
        // Enforced mode: an approved intent for exactly this call, used once.
        let decided = match decided {
            Ok(d) => self
                .redeem_intent_approval(caller, &record, &method, &req, request_id)
                .await
                .map(|()| d),
            Err(e) => Err(e),
        };
        let Decision {
            connection,
            target,
            scheme,
            edits,
            response_scan,
        } = match decided {
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
        let decided_at = started.elapsed();

        // At most once for non-GET calls that carry an id: a known id is
        // answered from its record before anything is metered or sent.
        let dedupe = request_id.filter(|_| method != "GET" && method != "HEAD");
        if let Some(id) = dedupe
            && let Some(existing) = self.store.get_operation(&caller.operator_id, id).await?
        {
            return replay(existing, &digest);
        }

        // Quota: calls recorded this period plus this node's calls in flight.
        // The meter itself moves in the transaction that records the call.
        let (tier, used) = quota.ok_or_else(|| Error::unauthorized("unknown operator"))?;
        let limit = self.config.proxy.quotas.for_tier(&tier);
        let Some(reservation) =
            self.proxy_in_flight
                .reserve(&caller.operator_id, &period, used, limit)
        else {
            let e = Error::new(
                ErrorCode::QuotaExceeded,
                format!("the {tier} tier's monthly proxy quota is used up"),
            );
            self.audit_denial(caller, draft, &e, started).await?;
            return Err(e);
        };

        let mut claimed: Option<ProxyOperation> = None;
        if let Some(id) = dedupe {
            let op = ProxyOperation {
                operator_id: caller.operator_id.clone(),
                request_id: id.to_owned(),
                digest: digest.clone(),
                state: "dispatching".into(),
                response: None,
                error: None,
                created_at: self.now(),
                service: req.service.clone(),
                method: method.clone(),
                agent_id: Some(record.agent_id.clone()),
                finished_at: None,
            };
            // A concurrent call with the same id may have claimed it since.
            if let Some(existing) = self.store.claim_operation(&op).await? {
                return replay(existing, &digest);
            }
            claimed = Some(op);
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
        let limit = self.config.proxy.max_body_bytes;
        if body.as_ref().is_some_and(|b| b.len() > limit) {
            return Err(Error::new(
                ErrorCode::PayloadTooLarge,
                format!("the proxied body is larger than {limit} bytes"),
            )
            .with_details(json!({ "limit_bytes": limit })));
        }
        let mut caller_headers: BTreeMap<String, String> = req
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
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
        // From here the call goes out. Sending it and recording what came
        // back run in a task of their own: a client that disconnects can
        // cancel neither a request the upstream may already be acting on
        // nor the audit entry and meter unit of a call that went out.
        let call = SentCall {
            operator_id: caller.operator_id.clone(),
            record: Arc::clone(&record),
            connection,
            outbound: Outbound {
                target,
                method: method.clone(),
                headers,
                body,
            },
            draft,
            period,
            claimed,
            response_scan,
            started,
            steps: (passport_checked, decided_at),
            _reservation: reservation,
        };
        let app = self.clone();
        tokio::spawn(async move { app.send_and_record(egress, call).await })
            .await
            .map_err(|_| Error::internal("the proxied call's task failed"))?
    }

    /// The live passport a proxy call acts under: `X-Passport-Token`, or the
    /// bearer itself when the caller authenticated with a passport. It must
    /// belong to the caller's operator.
    async fn proxy_passport(
        &self,
        caller: &Principal,
        passport_token: Option<&str>,
    ) -> Result<Arc<crate::passports::PassportRecord>> {
        let record = match (passport_token, &caller.kind) {
            (Some(token), _) => self.proxy_passport_record(token).await?,
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
                Arc::new(r)
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
        Ok(record)
    }

    /// The record behind `X-Passport-Token`. The token is verified on every
    /// call (signature, expiry, this node's revocation index, which the bus
    /// keeps current and which consults the database whenever it may have
    /// missed a message); the stored record is read once per passport and
    /// node and then served from [`PassportRecords`], because what the proxy
    /// takes from it (agent, operator, services, accountability mode) never
    /// changes after issue.
    async fn proxy_passport_record(
        &self,
        token: &str,
    ) -> Result<Arc<crate::passports::PassportRecord>> {
        let claims = self.live_claims(token).await?;
        let now_ms = self.now().as_millis();
        if let Some(hit) = self.passport_records.get(&claims.jti, now_ms) {
            return Ok(hit);
        }
        let record = self
            .store
            .get_passport(&claims.jti)
            .await?
            .filter(|r| r.operator_id == claims.stk.operator_id)
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::Unauthorized,
                    "passport is not known to this deployment",
                )
            })?;
        if record.revoked_at.is_some() {
            return Err(crate::passports::issue::verify_error(
                &stack_passport::VerifyError::Revoked,
            ));
        }
        let record = Arc::new(record);
        self.passport_records.put(
            &claims.jti,
            Arc::clone(&record),
            claims.exp.saturating_mul(1000),
            now_ms,
        );
        Ok(record)
    }

    /// A claimed operation with its outcome.
    fn finished(
        &self,
        op: &ProxyOperation,
        state: &str,
        response: Option<Value>,
        error: Option<Value>,
    ) -> ProxyOperation {
        let mut done = op.clone();
        done.state = state.to_owned();
        done.response = response;
        done.error = error;
        done.finished_at = Some(self.now());
        done
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

    /// What a call reads before it goes out (the operator's tier, the
    /// agent's live grants on the connection, the connection and its sealed
    /// secret) and the calls recorded on the meter: from what this node
    /// keeps when it may (see `access.rs`), otherwise in one round trip to
    /// the database, which is then kept.
    async fn proxy_reads(&self, q: ProxyReadsQuery<'_>) -> Result<(Arc<ProxyReads>, u64)> {
        let now_ms = self.now().as_millis();
        // While the bus may be missing changes, nothing kept is trusted.
        let in_sync = !self.passports.revocations.is_stale();
        let kept = in_sync
            .then(|| {
                self.access
                    .access(q.operator_id, q.agent_id, q.connection_id, now_ms)
            })
            .flatten();
        let used = self.access.used(q.operator_id, q.period, now_ms);
        let ticket = self.access.ticket(q.operator_id, q.period);
        let key = (q.operator_id, q.agent_id, q.connection_id);
        match (kept, used) {
            (Some(reads), Some(used)) => Ok((reads, used)),
            (Some(reads), None) => {
                let used = self.store.usage(q.operator_id, q.meter, q.period).await?;
                self.access
                    .keep(ticket, key, q.period, None, used, self.now().as_millis());
                Ok((reads, used))
            }
            (None, _) => {
                let reads = Arc::new(self.store.proxy_reads(q).await?);
                let used = reads.used;
                let keep = (in_sync && !self.passports.revocations.is_stale()).then_some(&reads);
                self.access
                    .keep(ticket, key, q.period, keep, used, self.now().as_millis());
                Ok((reads, used))
            }
        }
    }

    /// The pure part: which connection, which target, may this call go out,
    /// and the credential edits to apply.
    async fn decide(
        &self,
        record: &crate::passports::PassportRecord,
        grant: &stack_passport::ServiceGrant,
        reads: &ProxyReads,
        method: &str,
        req: &ProxyRequest,
    ) -> Result<Decision> {
        // The grant must still be live (revoked grants end access at once).
        let live = &reads.live_grants;
        if live.is_empty() {
            return Err(denied(
                ErrorCode::ScopeDenied,
                "the grant behind this passport has been revoked",
            ));
        }
        let (connection, sealed) = reads
            .connection
            .as_ref()
            .ok_or_else(|| Error::not_found("connection", &grant.connection_id))?;
        // Disconnected: SCOPE_DENIED; an OAuth connection whose refresh was refused: 409.
        crate::services::oauth::check_usable(connection)?;
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
        let set = self.compiled_constraints.get_or_compile(
            &record.jti,
            grant,
            record.expires_at.saturating_mul(1000),
            self.now().as_millis(),
        )?;
        let body = req.body.as_ref().filter(|b| !b.is_null());
        stack_proxy::check_target(set.as_ref(), method, &target, body).map_err(|v| {
            denied(ErrorCode::ConstraintViolation, v.message.clone())
                .with_details(json!({ "constraint": v.index, "path": v.path }))
        })?;
        let sealed = sealed
            .as_deref()
            .ok_or_else(|| denied(ErrorCode::ScopeDenied, "the connection has no credential"))?;
        // OAuth: the access token only, refreshed first when it is about to expire.
        let secret = self.usable_secret(connection, sealed).await?;
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
        let response_scan = live
            .iter()
            .map(|g| g.response_scan)
            .max()
            .unwrap_or_default();
        Ok(Decision {
            connection: connection.id.clone(),
            target,
            scheme: connection.auth.clone(),
            edits,
            response_scan,
        })
    }
}

/// A call past every check, on its way out.
struct SentCall {
    operator_id: String,
    record: Arc<crate::passports::PassportRecord>,
    connection: String,
    outbound: Outbound,
    draft: stack_audit::AuditDraft,
    period: String,
    claimed: Option<ProxyOperation>,
    response_scan: ResponseScan,
    started: std::time::Instant,
    /// Time from `started` to the passport checked and to the call decided
    /// (reads, grant, constraints, intent), for the timing event.
    steps: (std::time::Duration, std::time::Duration),
    /// Keeps the call's place in the quota until it is recorded.
    _reservation: Reservation,
}

impl App {
    /// Sends a call that passed every check and records what came back:
    /// one audit entry (upstream status, duration, response scan), the
    /// meter unit and the at-most-once outcome, committed together before
    /// the answer is returned.
    async fn send_and_record(self, egress: Arc<dyn EgressPort>, call: SentCall) -> Result<Value> {
        let SentCall {
            operator_id,
            record,
            connection,
            outbound,
            draft,
            period,
            claimed,
            response_scan,
            started,
            steps: (passport_checked, decided_at),
            _reservation,
        } = call;
        let sending = std::time::Instant::now();
        // An OAuth connection's token refused with 401 is refreshed once and the call retried.
        let sent = self
            .send_with_oauth_retry(egress.as_ref(), &operator_id, &connection, outbound)
            .await;
        let upstream = sending.elapsed();
        let elapsed = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let (audit, done, answer) = match sent {
            Ok(inbound) => {
                let body: Value = serde_json::from_slice(&inbound.body).unwrap_or_else(|_| {
                    Value::String(String::from_utf8_lossy(&inbound.body).into_owned())
                });
                let mut response =
                    json!({ "status": inbound.status, "headers": inbound.headers, "body": body });
                let mut d = draft;
                d.duration_ms = Some(elapsed);
                if let Value::Object(m) = &mut d.details {
                    m.insert("upstream_status".into(), json!(inbound.status));
                }
                // Response scanning per grant: annotate, or withhold a
                // critical answer in block mode.
                let mut withheld = None;
                if response_scan != ResponseScan::Off {
                    let scanned = self
                        .scan_response(
                            &operator_id,
                            &record.agent_id,
                            &record.jti,
                            &connection,
                            &inbound.body,
                        )
                        .await;
                    // The call went out, so it is recorded whatever became
                    // of the scan. Without a verdict, block mode fails
                    // closed (the unscanned answer is withheld) and
                    // annotate mode passes the answer with the error.
                    let (summary, withhold) = match scanned {
                        Ok((summary, critical)) => {
                            let withhold = (critical && response_scan == ResponseScan::Block)
                                .then(|| response_withheld(WITHHELD_INJECTION, &summary));
                            (summary, withhold)
                        }
                        Err(e) => {
                            tracing::warn!(
                                operator_id,
                                connection_id = connection.as_str(),
                                code = e.code.as_str(),
                                error = %e.message,
                                "could not scan an upstream response"
                            );
                            let summary = json!({
                                "verdict": null,
                                // The code only: an internal error's text is not the caller's.
                                "error": { "code": e.code.as_str(), "message": "the response could not be scanned" },
                            });
                            let withhold = (response_scan == ResponseScan::Block)
                                .then(|| response_withheld(WITHHELD_UNSCANNED, &summary));
                            (summary, withhold)
                        }
                    };
                    if let Value::Object(m) = &mut d.details {
                        m.insert("response_scan".into(), summary.clone());
                    }
                    if let Some(e) = withhold {
                        d.outcome = Outcome::Blocked;
                        d.error_code = Some(e.code.as_str().into());
                        d.error_message = Some(e.message.clone());
                        withheld = Some(e);
                    } else if let Value::Object(m) = &mut response {
                        m.insert("scan".into(), summary);
                    }
                }
                let audit = self.audit(d)?;
                let done = claimed.as_ref().map(|op| {
                    let (state, stored, error) = match &withheld {
                        Some(e) => (
                            "response_blocked",
                            None,
                            Some(
                                json!({ "code": e.code.as_str(), "message": e.message, "details": e.details }),
                            ),
                        ),
                        None => ("response_received", Some(response.clone()), None),
                    };
                    self.finished(op, state, stored, error)
                });
                (audit, done, withheld.map_or(Ok(response), Err))
            }
            Err(e) => {
                let done = claimed.as_ref().map(|op| {
                    self.finished(
                        op,
                        "failed",
                        None,
                        Some(json!({ "code": e.code.as_str(), "message": e.message })),
                    )
                });
                let mut d = draft;
                d.duration_ms = Some(elapsed);
                d.outcome = Outcome::Failure;
                d.error_code = Some(e.code.as_str().into());
                d.error_message = Some(e.message.clone());
                (self.audit(d)?, done, Err(e))
            }
        };
        let recording = std::time::Instant::now();
        self.store
            .record_call(
                &operator_id,
                audit,
                Some((PROXY_METER, &period)),
                done.as_ref(),
            )
            .await?;
        // Where the call's time went, in µs (`STACK_LOG=…,stack::proxy::timing=debug`);
        // `audit` is the durable commit of the entry, meter and outcome.
        tracing::debug!(
            target: "stack::proxy::timing",
            passport_us = passport_checked.as_micros(),
            decide_us = decided_at.saturating_sub(passport_checked).as_micros(),
            upstream_us = upstream.as_micros(),
            audit_us = recording.elapsed().as_micros(),
            total_us = started.elapsed().as_micros(),
            "proxied call"
        );
        // Counted before the reservation is released (at the end of this
        // function), so the call is never missing from both.
        self.access
            .count_call(&operator_id, &period, self.now().as_millis());
        answer
    }
}

/// The passport's grant for the requested service (and connection, when
/// the call names one).
fn pick_grant<'a>(
    record: &'a crate::passports::PassportRecord,
    req: &ProxyRequest,
) -> Result<&'a stack_passport::ServiceGrant> {
    record
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
        })
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

/// `POST /v1/proxy/operations/get`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetOperation {
    pub operation_id: String,
    #[serde(default)]
    pub include_response: bool,
}

impl App {
    /// Delivery, replay and accounting state of one recorded proxy write
    /// (the SDK's `ProxyOperation`). Only the agent whose passport made the
    /// call sees it; anything else is `404`, like an unknown id.
    pub async fn proxy_operation(
        &self,
        caller: &Principal,
        passport_token: Option<&str>,
        cmd: GetOperation,
    ) -> Result<Value> {
        require(caller, Permission::Proxy)?;
        if passport_token.is_none()
            && !matches!(
                caller.kind,
                stack_core::principal::PrincipalKind::Passport { .. }
            )
        {
            return Err(Error::unauthorized(
                "reading a proxy operation needs the passport: send X-Passport-Token",
            ));
        }
        let record = self.proxy_passport(caller, passport_token).await?;
        let unknown = || Error::not_found("proxy operation", &cmd.operation_id);
        let op = self
            .store
            .get_operation(&caller.operator_id, &cmd.operation_id)
            .await?
            .ok_or_else(unknown)?;
        if op.agent_id.as_deref() != Some(record.agent_id.as_str()) {
            return Err(unknown());
        }
        Ok(operation_view(&op, cmd.include_response))
    }
}

fn operation_view(op: &ProxyOperation, include_response: bool) -> Value {
    let (delivery, replay) = match op.state.as_str() {
        "response_received" => ("response_received", "available"),
        // Answered, and withheld by response scanning: never replayed.
        "response_blocked" => ("response_received", "erased"),
        "dispatching" => ("dispatching", "none"),
        // Sent or not, no answer came back.
        _ => ("outcome_unknown", "none"),
    };
    let mut out = json!({
        "operation_id": op.request_id,
        "delivery_state": delivery,
        "replay_state": replay,
        // The unit is metered before the call is sent.
        "accounting_state": "committed",
        "provider": op.service,
        "method": op.method,
        "created_at": op.created_at.to_rfc3339(),
        "dispatched_at": op.created_at.to_rfc3339(),
        "response_received_at": (delivery == "response_received")
            .then(|| op.finished_at.map(Timestamp::to_rfc3339))
            .flatten(),
        "provider_outcome": "not_required",
        "provider_status": Value::Null,
    });
    if let Value::Object(m) = &mut out {
        if let Some(e) = &op.error {
            m.insert("error".into(), e.clone());
        }
        if include_response
            && replay == "available"
            && let Some(r) = &op.response
        {
            m.insert("response".into(), r.clone());
        }
    }
    out
}

#[cfg(test)]
mod in_flight_tests {
    use super::*;

    #[test]
    fn reservations_count_against_the_limit_until_dropped() {
        let f = Arc::new(InFlight::default());
        let a = f.reserve("op", "2026-11", 3, 5);
        let b = f.reserve("op", "2026-11", 3, 5);
        assert!(a.is_some() && b.is_some());
        assert!(
            f.reserve("op", "2026-11", 3, 5).is_none(),
            "3 used + 2 in flight"
        );
        assert!(
            f.reserve("other", "2026-11", 3, 5).is_some(),
            "per operator"
        );
        drop(a);
        assert!(f.reserve("op", "2026-11", 3, 5).is_some());
        drop(b);
        assert!(f.reserve("op", "2026-11", 5, 5).is_none());
        assert!(
            f.calls.lock().map(|c| c.is_empty()).unwrap_or(false),
            "no entry is left behind"
        );
    }
}

#[cfg(test)]
mod compiled_constraints_tests {
    use super::*;

    fn grant(connection: &str, pattern: &str) -> stack_passport::ServiceGrant {
        stack_passport::ServiceGrant {
            service_name: "custom".into(),
            service_id: "svc_custom".into(),
            connection_id: connection.into(),
            credential_ref: String::new(),
            scopes: vec!["read".into()],
            constraints: vec![json!({"path": "query.limit", "op": "matches", "value": pattern})],
            allow_data_from: Vec::new(),
        }
    }

    #[test]
    fn compiled_once_per_passport_grant_until_the_passport_expires() {
        let c = CompiledConstraints::default();
        let g = grant("scon_a", "^[0-9]{1,3}$");
        let first = c.get_or_compile("jti_1", &g, 2_000, 1_000).unwrap();
        let again = c.get_or_compile("jti_1", &g, 2_000, 1_500).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "served from the cache");
        // Another passport, or another connection of the same passport: its own set.
        let other = c.get_or_compile("jti_2", &g, 2_000, 1_500).unwrap();
        assert!(!Arc::ptr_eq(&first, &other));
        let h = grant("scon_b", "^x$");
        let narrower = c.get_or_compile("jti_1", &h, 2_000, 1_500).unwrap();
        assert!(!Arc::ptr_eq(&first, &narrower));
        // Past the passport's expiry the entry is not used.
        let later = c.get_or_compile("jti_1", &g, 3_000, 2_500).unwrap();
        assert!(!Arc::ptr_eq(&first, &later));
    }

    #[test]
    fn a_set_that_does_not_compile_is_an_error_and_not_cached() {
        let c = CompiledConstraints::default();
        let g = grant("scon_a", "(unclosed");
        assert!(c.get_or_compile("jti_1", &g, 2_000, 1_000).is_err());
        assert!(c.get_or_compile("jti_1", &g, 2_000, 1_000).is_err());
    }
}
