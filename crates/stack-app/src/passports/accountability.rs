//! Accountability: checkpoints, checkout, the review engine, reviews and the
//! passport report. The review rules are documented in `docs/reviews.md`.

use serde::Deserialize;
use serde_json::{Value, json};
use stack_audit::{AuditEntry, Layer, Outcome};
use stack_core::principal::PrincipalKind;
use stack_core::{Error, ErrorCode, IdKind, Permission, Principal, Result, Timestamp};

use super::issue::passport_view;
use super::{
    ActivityReport, Checkout, Checkpoint, PassportRecord, Review, ReviewFlag, RevokeSelector,
    SecurityEvent,
};
use crate::agents::{AccountabilityMode, Agent};
use crate::audit::AuditFilter;
use crate::{App, require};

/// `POST /v1/passports/reviews/{checkout_id}/decide`.
#[derive(Debug, Clone, Deserialize)]
pub struct Decision {
    pub decision: String,
    #[serde(default)]
    pub notes: Option<String>,
    #[serde(default)]
    pub block_future: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ReviewQuery {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub page: Option<Value>,
    #[serde(default)]
    pub limit: Option<Value>,
}

pub const MAX_TOOL_CALLS: usize = 1_000;
pub const MAX_SUMMARY: usize = 4_000;

fn flag(kind: &str, severity: &str, message: String) -> ReviewFlag {
    ReviewFlag {
        kind: kind.into(),
        severity: severity.into(),
        message,
    }
}

fn validate_report(r: &ActivityReport) -> Result<()> {
    if r.actions_count < 0 {
        return Err(Error::invalid_field(
            "actions_count",
            "actions_count must not be negative",
        ));
    }
    if r.tool_calls.len() > MAX_TOOL_CALLS
        || r.services_used.len() > 256
        || r.delegated_to.len() > 256
    {
        return Err(Error::validation(
            "report too large: at most 1000 tool calls and 256 services or delegations",
        ));
    }
    if r.summary
        .as_deref()
        .is_some_and(|s| s.chars().count() > MAX_SUMMARY)
    {
        return Err(Error::invalid_field(
            "summary",
            format!("summary is at most {MAX_SUMMARY} characters"),
        ));
    }
    Ok(())
}

/// Services named in the report that the declared intent did not list.
fn undeclared_services(record: &PassportRecord, report: &ActivityReport) -> Vec<String> {
    let Some(intent) = &record.intent else {
        return Vec::new();
    };
    if intent.services.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<String> = report
        .services_used
        .iter()
        .filter(|s| !intent.services.iter().any(|d| d.eq_ignore_ascii_case(s)))
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The review engine: pure rules over the passport, the final report, the
/// checkpoints and the passport's audit entries.
pub fn review(
    record: &PassportRecord,
    report: &ActivityReport,
    checkpoints: &[Checkpoint],
    audit: &[AuditEntry],
    now_secs: i64,
) -> (String, Vec<ReviewFlag>) {
    let mut flags = Vec::new();
    let outside = undeclared_services(record, report);
    if !outside.is_empty() {
        flags.push(flag(
            "services_outside_intent",
            "warning",
            format!(
                "used services the intent did not declare: {}",
                outside.join(", ")
            ),
        ));
    }
    let will_delegate = record.intent.as_ref().is_some_and(|i| i.will_delegate);
    if !report.delegated_to.is_empty() && !will_delegate {
        flags.push(flag(
            "undeclared_delegation",
            "warning",
            format!(
                "delegated to {} agent(s) although the intent said it would not",
                report.delegated_to.len()
            ),
        ));
    }
    if let Some(estimate) = record
        .intent
        .as_ref()
        .and_then(|i| i.estimated_actions)
        .filter(|e| *e > 0)
    {
        if report.actions_count > estimate * 10 {
            flags.push(flag(
                "actions_far_over_estimate",
                "critical",
                format!(
                    "{} actions against an estimate of {estimate}",
                    report.actions_count
                ),
            ));
        } else if report.actions_count > estimate * 3 {
            flags.push(flag(
                "actions_over_estimate",
                "warning",
                format!(
                    "{} actions against an estimate of {estimate}",
                    report.actions_count
                ),
            ));
        }
    }
    if let Some(estimate) = record
        .intent
        .as_ref()
        .and_then(|i| i.estimated_duration_seconds)
        .filter(|e| *e > 0)
    {
        let took = now_secs - record.issued_at;
        if took > estimate * 2 {
            flags.push(flag(
                "duration_over_estimate",
                "warning",
                format!("took {took} s against an estimate of {estimate} s"),
            ));
        }
    }
    if record.accountability == AccountabilityMode::Enforced
        && let Some(interval) = record.checkpoint_interval
    {
        let mut last = record.issued_at;
        let mut missed = false;
        for c in checkpoints {
            let at = c.created_at.as_secs();
            if at - last > interval {
                missed = true;
            }
            last = at;
        }
        if now_secs - last > interval {
            missed = true;
        }
        if missed {
            flags.push(flag(
                "checkpoint_silence",
                "critical",
                format!("a checkpoint interval of {interval} s passed without a checkpoint"),
            ));
        }
    }
    let denied = audit
        .iter()
        .filter(|e| {
            matches!(e.outcome, Outcome::Blocked | Outcome::Failure) && e.layer != Layer::System
        })
        .count();
    if denied >= 5 {
        flags.push(flag(
            "denied_calls",
            "critical",
            format!("{denied} calls were denied during the mission"),
        ));
    } else if denied > 0 {
        flags.push(flag(
            "denied_calls",
            "warning",
            format!("{denied} call(s) were denied during the mission"),
        ));
    }
    if report
        .summary
        .as_deref()
        .is_some_and(|s| s.starts_with("Mission failed"))
    {
        flags.push(flag(
            "mission_failed",
            "warning",
            "the agent reported that the mission failed".into(),
        ));
    }
    let status = if flags.iter().any(|f| f.severity == "critical") {
        "blocked"
    } else if flags.iter().any(|f| f.severity == "warning") {
        "flagged"
    } else {
        "clean"
    };
    (status.to_owned(), flags)
}

fn iso(secs: i64) -> String {
    Timestamp::from_millis(secs.saturating_mul(1000)).to_rfc3339()
}

impl App {
    /// Loads a passport of the caller's operator by jti (404 otherwise), and
    /// checks a passport-bearer acts only on itself.
    async fn own_passport(&self, p: &Principal, jti: &str) -> Result<PassportRecord> {
        if !IdKind::Passport.is_valid(jti) {
            return Err(Error::not_found("passport", jti));
        }
        let r = self
            .store
            .get_passport(jti)
            .await?
            .filter(|r| r.operator_id == p.operator_id)
            .ok_or_else(|| Error::not_found("passport", jti))?;
        match &p.kind {
            PrincipalKind::Passport { jti: own, .. } if *own != r.jti => {
                Err(Error::not_found("passport", jti))
            }
            PrincipalKind::Agent { agent_id } if *agent_id != r.agent_id => {
                Err(Error::not_found("passport", jti))
            }
            _ => Ok(r),
        }
    }

    fn check_live(&self, r: &PassportRecord, now_secs: i64) -> Result<()> {
        if r.revoked_at.is_some() {
            return Err(Error::new(
                ErrorCode::PassportRevoked,
                "passport has been revoked",
            ));
        }
        if now_secs >= r.expires_at {
            return Err(Error::new(
                ErrorCode::PassportExpired,
                "passport has expired",
            ));
        }
        Ok(())
    }

    /// Records a checkpoint. In enforced mode it moves the passport's expiry
    /// to now + interval (never past the mission) and returns a fresh token
    /// carrying that expiry.
    pub async fn checkpoint(
        &self,
        p: &Principal,
        jti: &str,
        report: ActivityReport,
    ) -> Result<Value> {
        validate_report(&report)?;
        let mut record = self.own_passport(p, jti).await?;
        require(p, Permission::ReportActivity)?;
        if record.accountability == AccountabilityMode::Standard {
            return Err(Error::new(
                ErrorCode::CheckpointNotAvailable,
                "checkpoints are not available for standard-mode passports",
            ));
        }
        let now = self.now();
        let now_s = now.as_secs();
        self.check_live(&record, now_s)?;
        if record.checked_out_at.is_some() {
            return Err(Error::conflict("passport has already checked out"));
        }
        let mut flags = Vec::new();
        let outside = undeclared_services(&record, &report);
        if !outside.is_empty() {
            flags.push("services_outside_intent".to_owned());
        }
        let mut new_exp = None;
        let mut token = None;
        if let (AccountabilityMode::Enforced, Some(interval)) =
            (record.accountability, record.checkpoint_interval)
        {
            let deadline = match record.mission_id.as_deref() {
                Some(m) => self
                    .store
                    .get_mission(&p.operator_id, m)
                    .await?
                    .map(|m| m.expires_at.as_secs()),
                None => None,
            };
            let exp = deadline.map_or(now_s + interval, |d| (now_s + interval).min(d));
            if exp > record.expires_at {
                new_exp = Some(exp);
            }
        }
        record.last_checkpoint_at = Some(now_s);
        if let Some(exp) = new_exp {
            record.expires_at = exp;
            record.token_expires_at = exp;
            let signer = self.passports.keys.signer()?;
            let mut claims = self.claims_for_record(&record);
            claims.exp = exp;
            token = Some(
                signer
                    .sign(&claims)
                    .map_err(|e| Error::internal(format!("passport signing failed: {e}")))?,
            );
        }
        let checkpoint = Checkpoint {
            id: format!("cp_{}", stack_crypto::random_token(self.rng.as_ref(), 16)?),
            operator_id: p.operator_id.clone(),
            passport_jti: record.jti.clone(),
            created_at: now,
            report,
            flags: flags.clone(),
            new_expires_at: new_exp,
        };
        let mut draft = Self::draft(p, Layer::Passport, "passport.checkpoint")
            .agent(&record.agent_id)
            .target("checkpoint", &checkpoint.id)
            .details(json!({
                "actions_count": checkpoint.report.actions_count,
                "services_used": checkpoint.report.services_used,
                "flags": flags,
                "new_expires_at": new_exp,
            }));
        draft.passport_jti = Some(record.jti.clone());
        let audit = self.audit(draft)?;
        self.store
            .record_checkpoint(&checkpoint, &record, audit)
            .await?;
        Ok(json!({
            "checkpoint_id": checkpoint.id,
            "passport_jti": record.jti,
            "new_expires_at": new_exp.map(iso),
            "token": token,
            "flags": flags,
        }))
    }

    pub(crate) fn claims_for_record(&self, r: &PassportRecord) -> stack_passport::PassportClaims {
        let mut c = stack_passport::PassportClaims {
            iss: self.passports.keys.issuer().to_owned(),
            sub: r.agent_id.clone(),
            aud: stack_passport::AUDIENCE.to_owned(),
            exp: r.token_expires_at,
            iat: self.now().as_secs(),
            nbf: None,
            jti: r.jti.clone(),
            stk: stack_passport::StkClaims {
                operator_id: r.operator_id.clone(),
                agent_id: r.agent_id.clone(),
                agent_name: r.agent_name.clone(),
                services: r.services.clone(),
                identity_claims: Vec::new(),
                delegation_depth: r.delegation_depth,
                parent_passport_id: r.parent_jti.clone(),
                session_id: r.session_id.clone(),
                accountability: Some(r.accountability.as_str().to_owned()),
                intent_summary: r.intent.as_ref().map(|i| i.summary.clone()),
                intent_services: r
                    .intent
                    .as_ref()
                    .map(|i| i.services.clone())
                    .unwrap_or_default(),
                checkpoint_interval: r.checkpoint_interval,
                mission_id: r.mission_id.clone(),
                mission_ids: r.mission_id.iter().cloned().collect(),
            },
        };
        c.iat = c.iat.min(c.exp);
        c
    }

    /// Checks a passport out (once): runs the review engine and revokes the
    /// passport (and anything delegated from it).
    pub async fn checkout(
        &self,
        p: &Principal,
        jti: &str,
        report: ActivityReport,
    ) -> Result<Value> {
        validate_report(&report)?;
        let record = self.own_passport(p, jti).await?;
        require(p, Permission::ReportActivity)?;
        if record.checked_out_at.is_some()
            || self
                .store
                .checkout_for(&p.operator_id, jti)
                .await?
                .is_some()
        {
            return Err(Error::conflict("passport has already checked out"));
        }
        if record.revoked_at.is_some() {
            return Err(Error::new(
                ErrorCode::PassportRevoked,
                "passport has been revoked",
            ));
        }
        let now = self.now();
        let checkpoints = self.store.list_checkpoints(&p.operator_id, jti).await?;
        let filter = AuditFilter {
            limit: 100,
            since: None,
            agent_id: None,
            passport_jti: Some(jti.to_owned()),
        };
        let entries = self.store.list_audit(&p.operator_id, &filter).await?;
        let (status, flags) = review(&record, &report, &checkpoints, &entries, now.as_secs());
        let checkout = Checkout {
            id: format!("co_{}", stack_crypto::random_token(self.rng.as_ref(), 16)?),
            operator_id: p.operator_id.clone(),
            passport_jti: jti.to_owned(),
            agent_id: record.agent_id.clone(),
            agent_name: record.agent_name.clone(),
            intent_summary: record
                .intent
                .as_ref()
                .map(|i| i.summary.clone())
                .unwrap_or_default(),
            created_at: now,
            report,
            review_status: status.clone(),
            flags: flags.clone(),
        };
        let mut draft = Self::draft(p, Layer::Passport, "passport.checkout")
            .agent(&record.agent_id)
            .target("checkout", &checkout.id)
            .details(json!({ "review_status": status, "flags": flags, "actions_count": checkout.report.actions_count }));
        draft.passport_jti = Some(jti.to_owned());
        if status == "blocked" {
            draft.outcome = stack_audit::Outcome::Blocked;
        }
        let audit = self.audit(draft)?;
        self.store.record_checkout(&checkout, audit).await?;
        for f in flags.iter().filter(|f| f.kind == "checkpoint_silence") {
            self.raise_security_event(
                &p.operator_id,
                Some(&record.agent_id),
                Some(jti),
                "checkpoint_silence",
                "critical",
                &f.message,
                json!({}),
            )
            .await?;
        }
        // The mission is over for this passport: revoke it and its delegations.
        let system = Principal {
            operator_id: p.operator_id.clone(),
            kind: p.kind.clone(),
            scopes: None,
        };
        self.revoke_selected(
            &system,
            &RevokeSelector::Passport(jti.to_owned()),
            "checked out",
            "passport.revoke",
        )
        .await?;
        Ok(json!({
            "checkout_id": checkout.id,
            "passport_jti": jti,
            "review_status": status,
            "flags": flags,
        }))
    }

    pub async fn list_reviews(&self, p: &Principal, q: ReviewQuery) -> Result<Value> {
        require(p, Permission::PassportsRead)?;
        let status = q.status.unwrap_or_else(|| "flagged".into());
        if !["clean", "flagged", "blocked"].contains(&status.as_str()) {
            return Err(Error::invalid_field(
                "status",
                "status must be clean, flagged or blocked",
            ));
        }
        let page = int(&q.page)?.unwrap_or(1).max(1);
        let limit = int(&q.limit)?.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(Error::invalid_field(
                "limit",
                "limit must be between 1 and 100",
            ));
        }
        let offset = (page - 1).saturating_mul(limit);
        let (items, total) = self
            .store
            .list_checkouts(
                &p.operator_id,
                &status,
                offset.unsigned_abs(),
                limit.unsigned_abs(),
            )
            .await?;
        Ok(json!({
            "items": items.iter().map(|c| json!({
                "checkout_id": c.id,
                "passport_jti": c.passport_jti,
                "agent_id": c.agent_id,
                "agent_name": c.agent_name,
                "intent_summary": c.intent_summary,
                "review_status": c.review_status,
                "flags": c.flags,
                "submitted_at": c.created_at.to_rfc3339(),
            })).collect::<Vec<_>>(),
            "total": total,
            "page": page,
            "limit": limit,
        }))
    }

    /// Decides a reviewed checkout. `approved` from an API-key session needs
    /// a governance approval id; `blocked` with `block_future` blocks the
    /// agent from new passports.
    pub async fn decide_review(
        &self,
        p: &Principal,
        checkout_id: &str,
        d: Decision,
        governance_approval: Option<&str>,
    ) -> Result<Value> {
        require(p, Permission::PassportsWrite)?;
        if !matches!(d.decision.as_str(), "approved" | "blocked") {
            return Err(Error::invalid_field(
                "decision",
                "decision must be approved or blocked",
            ));
        }
        if d.decision == "approved"
            && governance_approval.is_none_or(|g| !stack_core::id::is_url_safe_body(g.trim()))
        {
            return Err(Error::new(
                ErrorCode::GovernanceApprovalRequired,
                "approving a flagged checkout from an API-key session needs a human approval: retry with the X-Governance-Approval header",
            ));
        }
        let checkout = self
            .store
            .get_checkout(&p.operator_id, checkout_id)
            .await?
            .ok_or_else(|| Error::not_found("checkout", checkout_id))?;
        if self
            .store
            .review_for(&p.operator_id, checkout_id)
            .await?
            .is_some()
        {
            return Err(Error::conflict("this checkout has already been decided"));
        }
        let block = d.decision == "blocked" && d.block_future.unwrap_or(false);
        let now = self.now();
        let blocked_agent: Option<Agent> = if block {
            let mut a = self.load_agent(p, &checkout.agent_id).await?;
            a.passport_blocked = true;
            a.passport_blocked_reason = Some(
                d.notes
                    .clone()
                    .unwrap_or_else(|| format!("blocked by review of {checkout_id}")),
            );
            a.passport_blocked_at = Some(now);
            a.updated_at = now.max(a.updated_at);
            Some(a)
        } else {
            None
        };
        let review = Review {
            id: format!("rv_{}", stack_crypto::random_token(self.rng.as_ref(), 16)?),
            operator_id: p.operator_id.clone(),
            checkout_id: checkout_id.to_owned(),
            agent_id: checkout.agent_id.clone(),
            decision: d.decision.clone(),
            notes: d.notes.map(|n| n.chars().take(2_000).collect()),
            block_future: block,
            decided_by: p.actor_label(),
            decided_at: now,
        };
        let mut draft = Self::draft(p, Layer::Passport, "review.decide")
            .agent(&checkout.agent_id)
            .target("checkout", checkout_id)
            .details(json!({ "decision": review.decision, "block_future": block, "governance_approval": governance_approval }));
        draft.passport_jti = Some(checkout.passport_jti.clone());
        let audit = self.audit(draft)?;
        self.store
            .decide_review(&review, blocked_agent.as_ref(), audit)
            .await?;
        Ok(json!({
            "review_id": review.id,
            "checkout_id": checkout_id,
            "agent_id": review.agent_id,
            "decision": review.decision,
            "passport_blocked": block,
        }))
    }

    /// The report, exactly `{passport, intent, checkpoints, checkout, review}`.
    pub async fn passport_report(&self, p: &Principal, jti: &str) -> Result<Value> {
        require(p, Permission::PassportsRead)?;
        let record = self.own_passport(p, jti).await?;
        let checkpoints = self.store.list_checkpoints(&p.operator_id, jti).await?;
        let checkout = self.store.checkout_for(&p.operator_id, jti).await?;
        let review = match &checkout {
            Some(c) => self.store.review_for(&p.operator_id, &c.id).await?,
            None => None,
        };
        Ok(json!({
            "passport": passport_view(&record),
            "intent": record.intent,
            "checkpoints": checkpoints.iter().map(|c| json!({
                "checkpoint_id": c.id,
                "created_at": c.created_at.to_rfc3339(),
                "services_used": c.report.services_used,
                "actions_count": c.report.actions_count,
                "tool_calls": c.report.tool_calls,
                "summary": c.report.summary,
                "delegated_to": c.report.delegated_to,
                "flags": c.flags,
                "new_expires_at": c.new_expires_at.map(iso),
            })).collect::<Vec<_>>(),
            "checkout": checkout.as_ref().map(|c| json!({
                "checkout_id": c.id,
                "created_at": c.created_at.to_rfc3339(),
                "services_used": c.report.services_used,
                "actions_count": c.report.actions_count,
                "tool_calls": c.report.tool_calls,
                "summary": c.report.summary,
                "delegated_to": c.report.delegated_to,
                "review_status": c.review_status,
                "flags": c.flags,
            })),
            "review": review.as_ref().map(|r| json!({
                "review_id": r.id,
                "decision": r.decision,
                "notes": r.notes,
                "block_future": r.block_future,
                "decided_by": r.decided_by,
                "decided_at": r.decided_at.to_rfc3339(),
            })),
        }))
    }

    /// Stores a security event (with its audit entry).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn raise_security_event(
        &self,
        operator_id: &str,
        agent_id: Option<&str>,
        jti: Option<&str>,
        kind: &str,
        severity: &str,
        message: &str,
        details: Value,
    ) -> Result<SecurityEvent> {
        let event = SecurityEvent {
            id: format!("sev_{}", stack_crypto::random_token(self.rng.as_ref(), 16)?),
            operator_id: operator_id.to_owned(),
            agent_id: agent_id.map(str::to_owned),
            passport_jti: jti.map(str::to_owned),
            kind: kind.to_owned(),
            severity: severity.to_owned(),
            message: message.to_owned(),
            details,
            created_at: self.now(),
            resolved_at: None,
        };
        let mut draft =
            stack_audit::AuditDraft::new("system", Layer::System, "security_event.raise")
                .target("security_event", &event.id)
                .details(json!({ "kind": kind, "severity": severity, "message": message }));
        draft.agent_id = event.agent_id.clone();
        draft.passport_jti = event.passport_jti.clone();
        let audit = self.audit(draft)?;
        self.store.insert_security_event(&event, audit).await?;
        Ok(event)
    }
}

fn int(v: &Option<Value>) -> Result<Option<i64>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| Error::validation("expected an integer")),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| Error::validation("expected an integer")),
        Some(_) => Err(Error::validation("expected an integer")),
    }
}

/// How far back the silence sweep looks (seconds).
const SILENCE_LOOKBACK: i64 = 24 * 3600;

impl App {
    /// Raises `checkpoint_silence` for enforced passports that died at their
    /// expiry without a checkpoint or a checkout. Safe to run on every node:
    /// each passport is reported once. Returns how many were reported.
    pub async fn sweep_checkpoint_silence(&self) -> Result<usize> {
        let now = self.now();
        let now_s = now.as_secs();
        let mut reported = 0;
        for r in self
            .store
            .silent_passports(now_s - SILENCE_LOOKBACK, now_s)
            .await?
        {
            let Some(interval) = r.checkpoint_interval else {
                continue;
            };
            let since = r.last_checkpoint_at.unwrap_or(r.issued_at);
            let message = format!(
                "passport {} expired without a checkpoint: the last sign of life was {} s before expiry (interval {interval} s)",
                r.jti,
                r.expires_at - since
            );
            let event = SecurityEvent {
                id: format!("sev_{}", stack_crypto::random_token(self.rng.as_ref(), 16)?),
                operator_id: r.operator_id.clone(),
                agent_id: Some(r.agent_id.clone()),
                passport_jti: Some(r.jti.clone()),
                kind: "checkpoint_silence".into(),
                severity: "critical".into(),
                message: message.clone(),
                details: json!({ "checkpoint_interval": interval, "expired_at": r.expires_at, "last_checkpoint_at": r.last_checkpoint_at }),
                created_at: now,
                resolved_at: None,
            };
            let mut draft = stack_audit::AuditDraft::new(
                "system",
                Layer::System,
                "security_event.raise",
            )
            .agent(&r.agent_id)
            .target("security_event", &event.id)
            .details(
                json!({ "kind": "checkpoint_silence", "severity": "critical", "message": message }),
            );
            draft.passport_jti = Some(r.jti.clone());
            let audit = self.audit(draft)?;
            if self.store.report_silence(&r.jti, &event, audit).await? {
                reported += 1;
            }
        }
        Ok(reported)
    }
}
