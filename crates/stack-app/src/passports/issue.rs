//! Issuing, verifying, refreshing and delegating passports; passports as
//! bearer credentials.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use stack_audit::Layer;
use stack_core::principal::PrincipalKind;
use stack_core::{Error, ErrorCode, IdKind, Permission, Principal, Result, Timestamp};
use stack_passport::delegation::{self, NarrowError, ScopeRequest};
use stack_passport::{PassportClaims, ServiceGrant, VerifyError};

use super::missions::OpenMission;
use super::{
    DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_TTL, DeclaredIntent, MAX_TTL, MIN_CHECKPOINT_INTERVAL,
    MIN_TTL, Mission, PassportRecord, REFRESH_WINDOW,
};
use crate::agents::{AccountabilityMode, Agent};
use crate::{App, require};

/// `POST /v1/passports/issue`, in either dialect the SDK sends, and the MCP tool.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct IssuePassport {
    pub agent_id: String,
    #[serde(default)]
    pub mission_ids: Option<Vec<String>>,
    /// Dialect (a): `scopes: [{service_connection_id, scopes, constraints?}]`.
    #[serde(default)]
    pub scopes: Option<Vec<ScopeRequest>>,
    /// Dialect (b): `services: [{…}]` (same objects).
    #[serde(default)]
    pub services: Option<Vec<ScopeRequest>>,
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
    #[serde(default)]
    pub intent: Option<IntentInput>,
    #[serde(default)]
    pub checkpoint_interval_seconds: Option<i64>,
    #[serde(default)]
    pub accountability_mode: Option<String>,
}

/// An intent: an object, or (MCP convenience) a plain summary string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum IntentInput {
    Summary(String),
    Declared(DeclaredIntent),
}

impl IntentInput {
    fn into_declared(self) -> DeclaredIntent {
        match self {
            Self::Summary(summary) => DeclaredIntent {
                summary,
                ..DeclaredIntent::default()
            },
            Self::Declared(d) => d,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct TokenBody {
    pub token: String,
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DelegatePassport {
    pub parent_passport_token: String,
    pub child_agent_id: String,
    #[serde(default)]
    pub scopes: Vec<ScopeRequest>,
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ActiveQuery {
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub session_id: Option<String>,
}

fn accountability_rank(m: AccountabilityMode) -> u8 {
    match m {
        AccountabilityMode::Standard => 0,
        AccountabilityMode::Logged => 1,
        AccountabilityMode::Enforced => 2,
    }
}

fn narrow_error(e: NarrowError) -> Error {
    match e {
        NarrowError::DepthExceeded { depth } => Error::new(
            ErrorCode::DelegationDepthExceeded,
            format!(
                "delegation would reach depth {depth}; at most {} hops are allowed",
                stack_passport::MAX_DELEGATION_DEPTH
            ),
        ),
        NarrowError::ScopeEscalation {
            connection_id,
            scope,
        } => Error::new(
            ErrorCode::ScopeEscalation,
            match &scope {
                Some(s) => format!(
                    "scope {s} on connection {connection_id} is outside what the parent holds"
                ),
                None => format!("connection {connection_id} is outside what the parent holds"),
            },
        )
        .with_details(json!({ "connection_id": connection_id, "scope": scope })),
    }
}

/// Maps a verification failure to the error the API reports.
pub fn verify_error(e: &VerifyError) -> Error {
    match e {
        VerifyError::Expired { .. } => {
            Error::new(ErrorCode::PassportExpired, "passport has expired")
        }
        VerifyError::Revoked => Error::new(ErrorCode::PassportRevoked, "passport has been revoked"),
        other => Error::new(
            ErrorCode::Unauthorized,
            format!("invalid passport: {}", other.describe()),
        )
        .with_details(json!({ "reason": other.code() })),
    }
}

fn validate_ttl(ttl: Option<i64>) -> Result<i64> {
    let ttl = ttl.unwrap_or(DEFAULT_TTL);
    if (MIN_TTL..=MAX_TTL).contains(&ttl) {
        Ok(ttl)
    } else {
        Err(Error::invalid_field(
            "ttl_seconds",
            format!("ttl_seconds must be between {MIN_TTL} and {MAX_TTL}"),
        ))
    }
}

/// Everything needed to sign one passport.
pub(crate) struct Minted {
    pub token: String,
    pub record: PassportRecord,
}

impl App {
    /// The agent's grant ceiling: what a passport may carry at most.
    async fn agent_grants(&self, agent: &Agent) -> Result<Vec<ServiceGrant>> {
        self.grants_as_services(&agent.operator_id, &agent.id).await
    }

    pub async fn issue_passport(&self, p: &Principal, cmd: IssuePassport) -> Result<Value> {
        require(p, Permission::PassportsWrite)?;
        let agent = self.load_agent(p, &cmd.agent_id).await?;
        // Exactly one mission; none means an implicit mission for this passport.
        let mission = match cmd.mission_ids.as_deref() {
            Some([one]) if !one.is_empty() => self.live_mission(p, one, &agent.id).await?,
            Some(_) => {
                return Err(Error::new(
                    ErrorCode::Forbidden,
                    "a passport is bound to exactly one Mission: pass mission_ids with one id",
                ));
            }
            None => {
                let intent = cmd
                    .intent
                    .clone()
                    .map(IntentInput::into_declared)
                    .unwrap_or_default();
                let ttl = validate_ttl(cmd.ttl_seconds)?;
                let (m, _) = self
                    .open_mission(
                        p,
                        OpenMission {
                            agent_id: Some(agent.id.clone()),
                            intent_summary: Some(intent.summary),
                            intent_services: Some(intent.services),
                            expires_in_seconds: Some(ttl.max(60)),
                            idempotency_key: None,
                        },
                    )
                    .await?;
                m
            }
        };
        let requested = cmd
            .scopes
            .clone()
            .or(cmd.services.clone())
            .unwrap_or_default();
        let minted = self.mint(p, &agent, &mission, cmd, requested).await?;
        Ok(issue_view(&minted))
    }

    /// Validates the request against the agent, mission and grants, signs
    /// the passport and stores it.
    pub(crate) async fn mint(
        &self,
        p: &Principal,
        agent: &Agent,
        mission: &Mission,
        cmd: IssuePassport,
        requested: Vec<ScopeRequest>,
    ) -> Result<Minted> {
        if agent.passport_blocked {
            return Err(Error::new(
                ErrorCode::PassportBlocked,
                format!(
                    "agent {} is blocked from new passports: {}",
                    agent.id,
                    agent
                        .passport_blocked_reason
                        .as_deref()
                        .unwrap_or("blocked by review")
                ),
            ));
        }
        if agent.status != crate::agents::AgentStatus::Active {
            return Err(Error::forbidden(format!("agent {} is suspended", agent.id)));
        }
        let mut accountability = agent.accountability_mode;
        if let Some(m) = cmd.accountability_mode.as_deref() {
            let asked = AccountabilityMode::parse(m).ok_or_else(|| {
                Error::invalid_field(
                    "accountability_mode",
                    "accountability_mode must be enforced, logged or standard",
                )
            })?;
            // A caller may raise the mode for one passport, never lower it.
            if accountability_rank(asked) > accountability_rank(accountability) {
                accountability = asked;
            }
        }
        let intent = cmd.intent.map(IntentInput::into_declared);
        if accountability != AccountabilityMode::Standard {
            let declared = intent
                .as_ref()
                .is_some_and(|i| !i.summary.trim().is_empty() || !i.services.is_empty());
            if !declared {
                return Err(Error::new(
                    ErrorCode::AccountabilityRequired,
                    format!(
                        "agent {} is in {} mode: declare an intent (summary or services) to get a passport",
                        agent.id,
                        accountability.as_str()
                    ),
                ));
            }
        }
        if let Some(i) = &intent
            && (i.summary.chars().count() > super::missions::MAX_SUMMARY_LEN
                || i.services.len() > super::missions::MAX_SERVICES)
        {
            return Err(Error::invalid_field(
                "intent",
                "intent summary or services too long",
            ));
        }
        let ttl = validate_ttl(cmd.ttl_seconds)?;
        let interval = match (accountability, cmd.checkpoint_interval_seconds) {
            (AccountabilityMode::Standard, _) => None,
            (_, Some(i)) if !(MIN_CHECKPOINT_INTERVAL..=MAX_TTL).contains(&i) => {
                return Err(Error::invalid_field(
                    "checkpoint_interval_seconds",
                    format!(
                        "checkpoint_interval_seconds must be between {MIN_CHECKPOINT_INTERVAL} and {MAX_TTL}"
                    ),
                ));
            }
            (AccountabilityMode::Enforced, i) => Some(i.unwrap_or(DEFAULT_CHECKPOINT_INTERVAL)),
            (AccountabilityMode::Logged, i) => i,
        };
        let grants = self.agent_grants(agent).await?;
        let services = delegation::narrow(&grants, &requested).map_err(narrow_error)?;
        let now = self.now();
        let now_s = now.as_secs();
        let mut exp = (now_s + ttl).min(mission.expires_at.as_secs());
        if accountability == AccountabilityMode::Enforced
            && let Some(i) = interval
        {
            exp = exp.min(now_s + i);
        }
        if exp <= now_s {
            return Err(super::missions::mission_refusal(
                &mission.id,
                super::MissionStatus::Expired,
            ));
        }
        let record = PassportRecord {
            jti: self.new_id(IdKind::Passport)?,
            operator_id: p.operator_id.clone(),
            agent_id: agent.id.clone(),
            agent_name: agent.name.clone(),
            session_id: self.new_id(IdKind::Session)?,
            parent_jti: None,
            delegation_depth: 0,
            mission_id: Some(mission.id.clone()),
            accountability,
            intent,
            services,
            kid: String::new(),
            issued_at: now_s,
            token_expires_at: exp,
            expires_at: exp,
            ttl_seconds: ttl,
            checkpoint_interval: interval,
            last_checkpoint_at: None,
            revoked_at: None,
            revoke_reason: None,
            checked_out_at: None,
            refreshed_from: None,
            silence_reported: false,
        };
        self.sign_and_store(p, record, "passport.issue").await
    }

    /// Signs `record` (filling in its kid), stores it with its audit entry.
    pub(crate) async fn sign_and_store(
        &self,
        p: &Principal,
        mut record: PassportRecord,
        action: &str,
    ) -> Result<Minted> {
        let signer = self.passports.keys.signer()?;
        record.kid = signer.kid().to_owned();
        let claims = self.claims_for_record(&record);
        let token = signer
            .sign(&claims)
            .map_err(|e| Error::internal(format!("passport signing failed: {e}")))?;
        let mut draft = Self::draft(p, Layer::Passport, action)
            .agent(&record.agent_id)
            .target("passport", &record.jti)
            .details(json!({
                "session_id": record.session_id,
                "mission_id": record.mission_id,
                "parent_passport_id": record.parent_jti,
                "delegation_depth": record.delegation_depth,
                "accountability": record.accountability.as_str(),
                "services": record.services.iter().map(|s| s.service_name.clone()).collect::<Vec<_>>(),
                "expires_at": record.token_expires_at,
                "kid": record.kid,
                "refreshed_from": record.refreshed_from,
            }));
        draft.passport_jti = Some(record.jti.clone());
        let audit = self.audit(draft)?;
        self.store.insert_passport(&record, audit).await?;
        Ok(Minted { token, record })
    }

    /// Verifies a token's signature and claims, reloading keys once when it
    /// names a key this node has not seen (another node rotated).
    pub(crate) async fn verify_token(
        &self,
        token: &str,
        allow_expired_for: Option<i64>,
    ) -> std::result::Result<PassportClaims, VerifyError> {
        let now = self.now();
        let check = |app: &App| -> std::result::Result<PassportClaims, VerifyError> {
            let verifier = app
                .passports
                .keys
                .verifier()
                .map_err(|_| VerifyError::Malformed("verifier unavailable"))?;
            match allow_expired_for {
                Some(grace) => verifier.verify_allowing_expired(token, now, grace),
                None => verifier.verify(token, now),
            }
        };
        match check(self) {
            Err(VerifyError::UnknownKey(kid)) => {
                if self.reload_keys_for_unknown_kid().await.unwrap_or(false) {
                    check(self)
                } else {
                    Err(VerifyError::UnknownKey(kid))
                }
            }
            other => other,
        }
    }

    /// A token that is valid now: signature, claims (including `exp`) and not
    /// revoked. The revocation check reads this node's in-memory index, and
    /// the database only while the index is out of sync, so the hot path
    /// (passports as credentials, `/verify`) does no database read.
    pub(crate) async fn live_claims(&self, token: &str) -> Result<PassportClaims> {
        let claims = self
            .verify_token(token, None)
            .await
            .map_err(|e| verify_error(&e))?;
        if self.is_revoked(&claims.jti).await? {
            return Err(verify_error(&VerifyError::Revoked));
        }
        Ok(claims)
    }

    /// [`Self::live_claims`] plus the stored record, for operations that act
    /// on the passport (delegation, the proxy, scans attributed to it).
    pub(crate) async fn live_passport(
        &self,
        token: &str,
    ) -> Result<(PassportClaims, PassportRecord)> {
        let claims = self.live_claims(token).await?;
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
            return Err(verify_error(&VerifyError::Revoked));
        }
        Ok((claims, record))
    }

    /// Authenticates a passport presented as a bearer credential: the holder
    /// is confined to the passport's agent (and, through it, its scopes and
    /// mission).
    pub(crate) async fn authenticate_passport(&self, token: &str) -> Result<Principal> {
        let claims = self.live_claims(token).await?;
        Ok(Principal {
            operator_id: claims.stk.operator_id,
            kind: PrincipalKind::Passport {
                agent_id: claims.stk.agent_id,
                jti: claims.jti,
            },
            scopes: None,
        })
    }

    /// `POST /v1/passports/verify`: valid, or why not. Needs no credential;
    /// it says nothing a JWKS holder could not learn, except revocation.
    pub async fn verify_passport(&self, token: &str) -> Result<Value> {
        let token = token.trim();
        match self.live_claims(token).await {
            Ok(claims) => Ok(json!({
                "valid": true,
                "jti": claims.jti,
                "agent_id": claims.stk.agent_id,
                "operator_id": claims.stk.operator_id,
                "session_id": claims.stk.session_id,
                "mission_id": claims.stk.mission_id,
                "delegation_depth": claims.stk.delegation_depth,
                "accountability": claims.stk.accountability,
                "expires_at": Timestamp::from_millis(claims.exp * 1000).to_rfc3339(),
                "claims": claims,
            })),
            Err(e) if e.code == ErrorCode::Internal => Err(e),
            Err(e) => {
                let reason = match e.code {
                    ErrorCode::PassportExpired => "expired".to_owned(),
                    ErrorCode::PassportRevoked => "revoked".to_owned(),
                    _ => e
                        .details
                        .as_ref()
                        .and_then(|d| d.get("reason"))
                        .and_then(Value::as_str)
                        .unwrap_or("unknown_passport")
                        .to_owned(),
                };
                Ok(
                    json!({ "valid": false, "reason": reason, "code": e.code.as_str(), "message": e.message }),
                )
            }
        }
    }

    /// Refreshes a passport that is valid or expired less than 24 h ago:
    /// same session, delegation chain, mission and services; a new jti.
    pub async fn refresh_passport(&self, p: &Principal, body: TokenBody) -> Result<Value> {
        let claims = self
            .verify_token(body.token.trim(), Some(REFRESH_WINDOW))
            .await
            .map_err(|e| verify_error(&e))?;
        let old = self
            .store
            .get_passport(&claims.jti)
            .await?
            .filter(|r| r.operator_id == p.operator_id)
            .ok_or_else(|| Error::not_found("passport", &claims.jti))?;
        self.may_act_for(p, &old)?;
        // The mission first: ending a mission revokes its passports, and the
        // SDK turns only the mission-ended wording into MissionEndedError.
        let mission = match old.mission_id.as_deref() {
            Some(m) => {
                self.live_mission(&operator_view(p), m, &old.agent_id)
                    .await?
            }
            None => {
                return Err(Error::new(
                    ErrorCode::MissionEnded,
                    "the passport is not bound to exactly one Mission",
                ));
            }
        };
        if old.revoked_at.is_some() || self.is_revoked(&old.jti).await? {
            return Err(verify_error(&VerifyError::Revoked));
        }
        let agent = self.load_agent(&operator_view(p), &old.agent_id).await?;
        if agent.passport_blocked {
            return Err(Error::new(
                ErrorCode::PassportBlocked,
                format!("agent {} is blocked from new passports", agent.id),
            ));
        }
        let ttl = match body.ttl_seconds {
            Some(t) => validate_ttl(Some(t))?,
            None => old.ttl_seconds,
        };
        let now_s = self.now().as_secs();
        let mut exp = (now_s + ttl).min(mission.expires_at.as_secs());
        if let (AccountabilityMode::Enforced, Some(i)) =
            (old.accountability, old.checkpoint_interval)
        {
            exp = exp.min(now_s + i);
        }
        // A delegated passport never outlives its parent lineage.
        if let Some(parent) = old.parent_jti.as_deref()
            && let Some(pr) = self.store.get_passport(parent).await?
        {
            if pr.revoked_at.is_some() {
                return Err(verify_error(&VerifyError::Revoked));
            }
            exp = exp.min(pr.expires_at.max(now_s));
        }
        if exp <= now_s {
            return Err(verify_error(&VerifyError::Expired { exp }));
        }
        let record = PassportRecord {
            jti: self.new_id(IdKind::Passport)?,
            issued_at: now_s,
            token_expires_at: exp,
            expires_at: exp,
            ttl_seconds: ttl,
            last_checkpoint_at: None,
            revoked_at: None,
            revoke_reason: None,
            checked_out_at: None,
            refreshed_from: Some(old.jti.clone()),
            silence_reported: false,
            ..old
        };
        let minted = self.sign_and_store(p, record, "passport.refresh").await?;
        Ok(issue_view(&minted))
    }

    /// Delegates a narrower passport to another agent of the same operator.
    pub async fn delegate_passport(&self, p: &Principal, cmd: DelegatePassport) -> Result<Value> {
        let (claims, parent) = self.live_passport(cmd.parent_passport_token.trim()).await?;
        if parent.operator_id != p.operator_id {
            return Err(Error::not_found("passport", &claims.jti));
        }
        self.may_act_for(p, &parent)?;
        if !matches!(p.kind, PrincipalKind::Passport { .. }) {
            require(p, Permission::PassportsWrite)?;
        }
        let depth = delegation::child_depth(parent.delegation_depth).map_err(narrow_error)?;
        let child = self
            .load_agent(&operator_view(p), &cmd.child_agent_id)
            .await?;
        if child.passport_blocked {
            return Err(Error::new(
                ErrorCode::PassportBlocked,
                format!("agent {} is blocked from new passports", child.id),
            ));
        }
        if accountability_rank(child.accountability_mode)
            < accountability_rank(parent.accountability)
        {
            return Err(Error::new(
                ErrorCode::DelegationAccountabilityViolation,
                format!(
                    "agent {} is in {} mode, below the parent passport's {} mode: delegation never lowers accountability",
                    child.id,
                    child.accountability_mode.as_str(),
                    parent.accountability.as_str()
                ),
            ));
        }
        let services = delegation::narrow(&parent.services, &cmd.scopes).map_err(narrow_error)?;
        let now_s = self.now().as_secs();
        let remaining = parent.expires_at - now_s;
        let ttl = match cmd.ttl_seconds {
            Some(t) => validate_ttl(Some(t))?,
            None => remaining.min(DEFAULT_TTL),
        };
        let exp = (now_s + ttl).min(parent.expires_at);
        if exp <= now_s {
            return Err(verify_error(&VerifyError::Expired {
                exp: parent.expires_at,
            }));
        }
        let record = PassportRecord {
            jti: self.new_id(IdKind::Passport)?,
            operator_id: parent.operator_id.clone(),
            agent_id: child.id.clone(),
            agent_name: child.name.clone(),
            session_id: parent.session_id.clone(),
            parent_jti: Some(parent.jti.clone()),
            delegation_depth: depth,
            mission_id: parent.mission_id.clone(),
            accountability: parent.accountability,
            intent: parent.intent.clone(),
            services,
            kid: String::new(),
            issued_at: now_s,
            token_expires_at: exp,
            expires_at: exp,
            ttl_seconds: ttl.min(exp - now_s),
            checkpoint_interval: parent.checkpoint_interval,
            last_checkpoint_at: None,
            revoked_at: None,
            revoke_reason: None,
            checked_out_at: None,
            refreshed_from: None,
            silence_reported: false,
        };
        let minted = self.sign_and_store(p, record, "passport.delegate").await?;
        Ok(issue_view(&minted))
    }

    /// Active passports (not expired, not revoked), filtered.
    pub async fn list_active_passports(&self, p: &Principal, q: ActiveQuery) -> Result<Vec<Value>> {
        require(p, Permission::PassportsRead)?;
        let agent = q
            .agent_id
            .filter(|a| !a.is_empty())
            .or(p.confined_agent().map(str::to_owned));
        if let (Some(only), Some(asked)) = (p.confined_agent(), agent.as_deref())
            && only != asked
        {
            return Ok(Vec::new());
        }
        let now = self.now().as_secs();
        let list = self
            .store
            .list_passports(
                &p.operator_id,
                agent.as_deref(),
                q.session_id.as_deref().filter(|s| !s.is_empty()),
                now,
            )
            .await?;
        Ok(list
            .iter()
            .filter(|r| r.is_active(now))
            .map(passport_view)
            .collect())
    }

    /// A passport-bearer may act only on its own passport (and its lineage
    /// for delegation); operator and member keys on any of their operator's.
    fn may_act_for(&self, p: &Principal, record: &PassportRecord) -> Result<()> {
        match &p.kind {
            PrincipalKind::Passport { jti, .. } if *jti != record.jti => {
                Err(Error::forbidden("a passport may only act on itself"))
            }
            PrincipalKind::Agent { agent_id } if *agent_id != record.agent_id => Err(
                Error::forbidden("an agent may only act on its own passports"),
            ),
            _ => Ok(()),
        }
    }

    /// `POST /v1/missions/start`: opens a mission and issues its passport.
    /// If issuing fails, the new mission is revoked before the error returns.
    pub async fn start_mission(&self, p: &Principal, body: Value) -> Result<Value> {
        let body = match body {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            _ => return Err(Error::validation("the request body must be a JSON object")),
        };
        let agent_id = body
            .get("agent_id")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::invalid_field("agent_id", "agent_id is required"))?
            .to_owned();
        let mission_in = body.get("mission").cloned().unwrap_or(Value::Null);
        let mut open: OpenMission = crate::parse_input(mission_in)?;
        open.agent_id = Some(agent_id.clone());
        if open.idempotency_key.is_none() {
            open.idempotency_key = body
                .get("idempotency_key")
                .and_then(Value::as_str)
                .map(str::to_owned);
        }
        let mut passport_in = match body.get("passport") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        passport_in.insert("agent_id".into(), Value::String(agent_id.clone()));
        let agent = self.load_agent(p, &agent_id).await?;
        let (mission, created) = self.open_mission(p, open).await?;
        let mut issue: IssuePassport = crate::parse_input(Value::Object(passport_in))?;
        issue.agent_id = agent_id;
        issue.mission_ids = Some(vec![mission.id.clone()]);
        if issue.intent.is_none()
            && !(mission.intent_summary.is_empty() && mission.intent_services.is_empty())
        {
            issue.intent = Some(IntentInput::Declared(DeclaredIntent {
                summary: mission.intent_summary.clone(),
                services: mission.intent_services.clone(),
                ..DeclaredIntent::default()
            }));
        }
        let live = self.live_mission(p, &mission.id, &agent.id).await?;
        let requested = issue
            .scopes
            .clone()
            .or(issue.services.clone())
            .unwrap_or_default();
        match self.mint(p, &agent, &live, issue, requested).await {
            Ok(minted) => Ok(json!({
                "mission_id": mission.id,
                "claim_id": mission.claim_id,
                "expires_at": mission.expires_at.to_rfc3339(),
                "created": created,
                "passport": issue_view(&minted),
            })),
            Err(e) => {
                if created {
                    let _ = self
                        .end_mission(
                            p,
                            &mission.id,
                            true,
                            super::missions::EndMission {
                                reason: Some("issuance_failed".into()),
                                notes: Some(e.message.clone()),
                            },
                        )
                        .await;
                }
                Err(e)
            }
        }
    }
}

/// The operator the principal acts for, with the principal's own kind kept
/// only for permission purposes: used to load objects a passport-holder may
/// reference within its operator (e.g. a delegation's child agent).
fn operator_view(p: &Principal) -> Principal {
    Principal {
        operator_id: p.operator_id.clone(),
        kind: PrincipalKind::Operator,
        scopes: None,
    }
}

pub(crate) fn issue_view(m: &Minted) -> Value {
    json!({
        "token": m.token,
        "jti": m.record.jti,
        "expires_at": Timestamp::from_millis(m.record.token_expires_at * 1000).to_rfc3339(),
        "accountability": m.record.accountability.as_str(),
        "session_id": m.record.session_id,
        "mission_id": m.record.mission_id,
        "agent_id": m.record.agent_id,
        "delegation_depth": m.record.delegation_depth,
        "parent_passport_id": m.record.parent_jti,
        "checkpoint_interval": m.record.checkpoint_interval,
        "kid": m.record.kid,
    })
}

pub(crate) fn passport_view(r: &PassportRecord) -> Value {
    json!({
        "jti": r.jti,
        "agent_id": r.agent_id,
        "agent_name": r.agent_name,
        "session_id": r.session_id,
        "parent_passport_id": r.parent_jti,
        "delegation_depth": r.delegation_depth,
        "mission_id": r.mission_id,
        "accountability": r.accountability.as_str(),
        "intent": r.intent,
        "services": r.services,
        "issued_at": Timestamp::from_millis(r.issued_at * 1000).to_rfc3339(),
        "expires_at": Timestamp::from_millis(r.expires_at * 1000).to_rfc3339(),
        "checkpoint_interval": r.checkpoint_interval,
        "last_checkpoint_at": r.last_checkpoint_at.map(|t| Timestamp::from_millis(t * 1000).to_rfc3339()),
        "revoked_at": r.revoked_at.map(|t| Timestamp::from_millis(t * 1000).to_rfc3339()),
        "revoke_reason": r.revoke_reason,
        "checked_out_at": r.checked_out_at.map(|t| Timestamp::from_millis(t * 1000).to_rfc3339()),
        "refreshed_from": r.refreshed_from,
    })
}
