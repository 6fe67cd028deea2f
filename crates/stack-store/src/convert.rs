//! Conversions between rows and application types. Values read back from the
//! database are validated; a row that does not parse is reported as an
//! internal error naming the column, never a panic.

use sea_orm::ActiveValue::Set;
use stack_app::agents::{
    AccountabilityMode, Agent, AgentStatus, CredentialAccess, Escalation, KeyMode, SkillAccessMode,
};
use stack_app::operators::{ApiKeyRecord, Operator};
use stack_audit::{AuditEntry, Layer, Outcome};
use stack_core::{Error, Result, Role, Timestamp};

use crate::entity::{agent, api_key, audit_entry, operator};

fn bad(column: &str) -> Error {
    Error::internal(format!("stored value in column {column} is not valid"))
}

fn parse<T>(column: &str, v: &str, f: fn(&str) -> Option<T>) -> Result<T> {
    f(v).ok_or_else(|| bad(column))
}

pub fn operator_from_row(m: operator::Model) -> Operator {
    Operator {
        id: m.id,
        name: m.name,
        tier: m.tier,
        created_at: Timestamp::from_millis(m.created_at),
    }
}

pub fn operator_to_row(o: &Operator) -> operator::ActiveModel {
    operator::ActiveModel {
        id: Set(o.id.clone()),
        name: Set(o.name.clone()),
        tier: Set(o.tier.clone()),
        created_at: Set(o.created_at.as_millis()),
    }
}

pub fn key_from_row(m: api_key::Model) -> Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        role: m
            .role
            .as_deref()
            .map(|r| parse("role", r, Role::parse))
            .transpose()?,
        id: m.id,
        operator_id: m.operator_id,
        kind: m.kind,
        member_id: m.member_id,
        digest: m.digest,
        hint: m.hint,
        created_at: Timestamp::from_millis(m.created_at),
        revoked_at: m.revoked_at.map(Timestamp::from_millis),
    })
}

pub fn key_to_row(k: &ApiKeyRecord) -> api_key::ActiveModel {
    let role = k.role.map(|r| match r {
        Role::Readonly => "readonly".to_owned(),
        Role::Standard => "standard".to_owned(),
        Role::Admin => "admin".to_owned(),
    });
    api_key::ActiveModel {
        id: Set(k.id.clone()),
        operator_id: Set(k.operator_id.clone()),
        kind: Set(k.kind.clone()),
        member_id: Set(k.member_id.clone()),
        role: Set(role),
        digest: Set(k.digest.clone()),
        hint: Set(k.hint.clone()),
        created_at: Set(k.created_at.as_millis()),
        revoked_at: Set(k.revoked_at.map(Timestamp::as_millis)),
    }
}

pub fn agent_from_row(m: agent::Model) -> Result<Agent> {
    let allowed_skills: Vec<String> =
        serde_json::from_str(&m.allowed_skills).map_err(|_| bad("allowed_skills"))?;
    Ok(Agent {
        status: parse("status", &m.status, AgentStatus::parse)?,
        accountability_mode: parse(
            "accountability_mode",
            &m.accountability_mode,
            AccountabilityMode::parse,
        )?,
        credential_access: parse(
            "credential_access",
            &m.credential_access,
            CredentialAccess::parse,
        )?,
        key_mode: parse("key_mode", &m.key_mode, KeyMode::parse)?,
        on_warning: parse("on_warning", &m.on_warning, Escalation::parse)?,
        on_critical: parse("on_critical", &m.on_critical, Escalation::parse)?,
        skill_access_mode: parse(
            "skill_access_mode",
            &m.skill_access_mode,
            SkillAccessMode::parse,
        )?,
        id: m.id,
        operator_id: m.operator_id,
        name: m.name,
        description: m.description,
        passport_blocked: m.passport_blocked,
        passport_blocked_reason: m.passport_blocked_reason,
        passport_blocked_at: m.passport_blocked_at.map(Timestamp::from_millis),
        allowed_skills,
        icon_url: m.icon_url,
        llm_inject_system_prompt: m.llm_inject_system_prompt,
        llm_redact_pii: m.llm_redact_pii,
        created_at: Timestamp::from_millis(m.created_at),
        updated_at: Timestamp::from_millis(m.updated_at),
    })
}

pub fn agent_to_row(a: &Agent) -> Result<agent::ActiveModel> {
    Ok(agent::ActiveModel {
        id: Set(a.id.clone()),
        operator_id: Set(a.operator_id.clone()),
        name: Set(a.name.clone()),
        description: Set(a.description.clone()),
        status: Set(a.status.as_str().to_owned()),
        accountability_mode: Set(a.accountability_mode.as_str().to_owned()),
        credential_access: Set(a.credential_access.as_str().to_owned()),
        key_mode: Set(a.key_mode.as_str().to_owned()),
        on_warning: Set(a.on_warning.as_str().to_owned()),
        on_critical: Set(a.on_critical.as_str().to_owned()),
        passport_blocked: Set(a.passport_blocked),
        passport_blocked_reason: Set(a.passport_blocked_reason.clone()),
        passport_blocked_at: Set(a.passport_blocked_at.map(Timestamp::as_millis)),
        skill_access_mode: Set(a.skill_access_mode.as_str().to_owned()),
        allowed_skills: Set(serde_json::to_string(&a.allowed_skills)
            .map_err(|_| Error::internal("allowed_skills did not serialize"))?),
        icon_url: Set(a.icon_url.clone()),
        llm_inject_system_prompt: Set(a.llm_inject_system_prompt),
        llm_redact_pii: Set(a.llm_redact_pii),
        created_at: Set(a.created_at.as_millis()),
        updated_at: Set(a.updated_at.as_millis()),
    })
}

fn layer(s: &str) -> Option<Layer> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
}

fn outcome(s: &str) -> Option<Outcome> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
}

pub fn entry_from_row(m: audit_entry::Model) -> Result<AuditEntry> {
    Ok(AuditEntry {
        layer: parse("layer", &m.layer, layer)?,
        outcome: parse("outcome", &m.outcome, outcome)?,
        details: serde_json::from_str(&m.details).map_err(|_| bad("details"))?,
        entry_id: m.entry_id,
        operator_id: m.operator_id,
        seq: m.seq,
        timestamp: m.timestamp,
        agent_id: m.agent_id,
        passport_jti: m.passport_jti,
        actor: m.actor,
        action: m.action,
        target_type: m.target_type,
        target_id: m.target_id,
        trace_id: m.trace_id,
        duration_ms: m.duration_ms,
        payload_hash: m.payload_hash,
        error_code: m.error_code,
        error_message: m.error_message,
        prev_entry_hash: m.prev_entry_hash,
        entry_hash: m.entry_hash,
    })
}

pub fn entry_to_row(e: &AuditEntry) -> audit_entry::ActiveModel {
    audit_entry::ActiveModel {
        entry_id: Set(e.entry_id.clone()),
        operator_id: Set(e.operator_id.clone()),
        seq: Set(e.seq),
        timestamp: Set(e.timestamp),
        agent_id: Set(e.agent_id.clone()),
        passport_jti: Set(e.passport_jti.clone()),
        actor: Set(e.actor.clone()),
        layer: Set(e.layer.as_str().to_owned()),
        action: Set(e.action.clone()),
        outcome: Set(e.outcome.as_str().to_owned()),
        target_type: Set(e.target_type.clone()),
        target_id: Set(e.target_id.clone()),
        trace_id: Set(e.trace_id.clone()),
        duration_ms: Set(e.duration_ms),
        payload_hash: Set(e.payload_hash.clone()),
        error_code: Set(e.error_code.clone()),
        error_message: Set(e.error_message.clone()),
        details: Set(stack_audit::canonical_json(&e.details)),
        prev_entry_hash: Set(e.prev_entry_hash.clone()),
        entry_hash: Set(e.entry_hash.clone()),
    }
}
