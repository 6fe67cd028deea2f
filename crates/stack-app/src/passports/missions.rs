//! Missions: the unit of work every passport is bound to. A passport never
//! outlives its mission; completing or revoking a mission revokes every
//! passport bound to it.

use serde::Deserialize;
use serde_json::{Value, json};
use stack_audit::Layer;
use stack_core::{Error, ErrorCode, IdKind, Permission, Principal, Result, Timestamp};

use super::{DEFAULT_MISSION_TTL, MAX_MISSION_TTL, Mission, MissionStatus, Revoked};
use crate::{App, NewAudit, require};

/// `POST /v1/missions` (open).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OpenMission {
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub intent_summary: Option<String>,
    #[serde(default)]
    pub intent_services: Option<Vec<String>>,
    #[serde(default)]
    pub expires_in_seconds: Option<i64>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// `POST /v1/missions/{id}/revoke`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EndMission {
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
}

pub const MAX_SUMMARY_LEN: usize = 2_000;
pub const MAX_SERVICES: usize = 64;

/// The refusal for a mission that is not live, worded as the SDK parses it.
pub fn mission_refusal(mission_id: &str, status: MissionStatus) -> Error {
    let message = match status {
        MissionStatus::Completed => format!("Mission {mission_id} is completed"),
        MissionStatus::Revoked => format!("Mission {mission_id} is revoked"),
        MissionStatus::Expired => format!("Mission {mission_id} has expired"),
        MissionStatus::Active => format!("Mission {mission_id} is active"),
    };
    Error::new(
        ErrorCode::MissionEnded,
        format!("{message}: a passport cannot outlive its Mission"),
    )
    .with_details(json!({ "mission_id": mission_id, "mission_state": status.as_str() }))
}

pub fn mission_not_found(mission_id: &str) -> Error {
    let shown: String = mission_id.chars().take(80).collect();
    Error::new(
        ErrorCode::MissionNotFound,
        format!("Mission not found: {shown}"),
    )
    .with_details(json!({ "mission_id": shown, "mission_state": "not_found" }))
}

pub fn mission_view(m: &Mission, now: Timestamp) -> Value {
    json!({
        "id": m.id,
        "mission_id": m.id,
        "operator_id": m.operator_id,
        "agent_id": m.agent_id_view(),
        "claim_id": m.claim_id,
        "intent_summary": m.intent_summary,
        "intent_services": m.intent_services,
        "status": m.status_at(now).as_str(),
        "created_at": m.created_at.to_rfc3339(),
        "expires_at": m.expires_at.to_rfc3339(),
        "ended_at": m.ended_at.map(Timestamp::to_rfc3339),
        "end_reason": m.end_reason,
    })
}

impl Mission {
    fn agent_id_view(&self) -> Option<&str> {
        (!self.agent_id.is_empty()).then_some(self.agent_id.as_str())
    }
}

fn validate_services(services: &[String]) -> Result<()> {
    if services.len() > MAX_SERVICES || services.iter().any(|s| s.is_empty() || s.len() > 128) {
        return Err(Error::invalid_field(
            "intent_services",
            format!("intent_services holds at most {MAX_SERVICES} names of 1-128 characters"),
        ));
    }
    Ok(())
}

impl App {
    /// Opens a mission (idempotent on `idempotency_key`).
    pub async fn open_mission(&self, p: &Principal, cmd: OpenMission) -> Result<(Mission, bool)> {
        require(p, Permission::PassportsWrite)?;
        if let Some(key) = cmd.idempotency_key.as_deref() {
            if key.is_empty() || key.len() > 256 {
                return Err(Error::invalid_field(
                    "idempotency_key",
                    "idempotency_key is 1-256 characters",
                ));
            }
            if let Some(existing) = self.store.find_mission_by_key(&p.operator_id, key).await? {
                return Ok((existing, false));
            }
        }
        let agent_id = match cmd.agent_id.as_deref() {
            Some(a) => self.load_agent(p, a).await?.id,
            None => p.confined_agent().map(str::to_owned).unwrap_or_default(),
        };
        let summary = cmd.intent_summary.unwrap_or_default();
        if summary.chars().count() > MAX_SUMMARY_LEN {
            return Err(Error::invalid_field(
                "intent_summary",
                format!("intent_summary is at most {MAX_SUMMARY_LEN} characters"),
            ));
        }
        let services = cmd.intent_services.unwrap_or_default();
        validate_services(&services)?;
        let ttl = cmd.expires_in_seconds.unwrap_or(DEFAULT_MISSION_TTL);
        if !(60..=MAX_MISSION_TTL).contains(&ttl) {
            return Err(Error::invalid_field(
                "expires_in_seconds",
                format!("expires_in_seconds must be between 60 and {MAX_MISSION_TTL}"),
            ));
        }
        let now = self.now();
        let mission = Mission {
            id: self.new_id(IdKind::Mission)?,
            operator_id: p.operator_id.clone(),
            agent_id,
            intent_summary: summary,
            intent_services: services,
            status: MissionStatus::Active,
            idempotency_key: cmd.idempotency_key,
            claim_id: format!("pc_{}", stack_crypto::random_token(self.rng.as_ref(), 16)?),
            created_at: now,
            expires_at: now.plus_millis(ttl * 1000),
            ended_at: None,
            end_reason: None,
            notes: None,
        };
        let mut draft = Self::draft(p, Layer::Passport, "mission.open")
            .target("mission", &mission.id)
            .details(json!({ "intent_summary": mission.intent_summary, "intent_services": mission.intent_services, "expires_at": mission.expires_at.as_millis() }));
        if !mission.agent_id.is_empty() {
            draft = draft.agent(&mission.agent_id);
        }
        let audit = self.audit(draft)?;
        match self.store.insert_mission(&mission, audit).await {
            Ok(()) => Ok((mission, true)),
            // A concurrent open with the same key won the race: return its mission.
            Err(e) if e.code == ErrorCode::Conflict => match mission.idempotency_key.as_deref() {
                Some(key) => self
                    .store
                    .find_mission_by_key(&p.operator_id, key)
                    .await?
                    .map(|m| (m, false))
                    .ok_or(e),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    pub async fn get_mission(&self, p: &Principal, mission_id: &str) -> Result<Mission> {
        require(p, Permission::PassportsRead)?;
        self.load_mission(p, mission_id).await
    }

    pub(crate) async fn load_mission(&self, p: &Principal, mission_id: &str) -> Result<Mission> {
        if !IdKind::Mission.is_valid(mission_id) {
            return Err(mission_not_found(mission_id));
        }
        let m = self
            .store
            .get_mission(&p.operator_id, mission_id)
            .await?
            .ok_or_else(|| mission_not_found(mission_id))?;
        if let Some(agent) = p.confined_agent()
            && m.agent_id != agent
        {
            return Err(mission_not_found(mission_id));
        }
        Ok(m)
    }

    /// Completes (`revoke = false`) or revokes a mission, revoking every
    /// passport bound to it. Idempotent: ending an ended mission returns its
    /// terminal state with `transitioned: false`.
    pub async fn end_mission(
        &self,
        p: &Principal,
        mission_id: &str,
        revoke: bool,
        cmd: EndMission,
    ) -> Result<Value> {
        require(p, Permission::PassportsWrite)?;
        let mission = self.load_mission(p, mission_id).await?;
        let now = self.now();
        let current = mission.status_at(now);
        if current != MissionStatus::Active {
            return Ok(end_view(&mission, current, false, &[]));
        }
        let (status, action) = if revoke {
            (MissionStatus::Revoked, "mission.revoke")
        } else {
            (MissionStatus::Completed, "mission.complete")
        };
        let reason = cmd.reason.filter(|r| !r.is_empty());
        let notes = cmd.notes.map(|n| n.chars().take(1_000).collect::<String>());
        let audit = self.audit(
            Self::draft(p, Layer::Passport, action)
                .target("mission", mission_id)
                .details(json!({ "reason": reason, "notes": notes })),
        )?;
        let actor = p.clone();
        let app = self.clone();
        let why = if revoke {
            "mission revoked"
        } else {
            "mission completed"
        };
        let per_passport: super::AuditFor = Box::new(move |r: Revoked| -> Result<NewAudit> {
            let mut d = Self::draft(&actor, Layer::Passport, "passport.revoke_cascade")
                .agent(&r.agent_id)
                .target("passport", &r.jti)
                .details(json!({ "reason": why }));
            d.passport_jti = Some(r.jti.clone());
            app.audit(d)
        });
        let ended = self
            .store
            .end_mission(
                &p.operator_id,
                mission_id,
                status,
                reason,
                notes,
                now,
                audit,
                per_passport,
            )
            .await?;
        let Some((mission, revoked)) = ended else {
            return Err(mission_not_found(mission_id));
        };
        self.announce_revocations(&p.operator_id, &revoked).await;
        let transitioned = mission.ended_at == Some(now);
        Ok(end_view(
            &mission,
            mission.status_at(now),
            transitioned,
            &revoked,
        ))
    }

    /// The mission a passport may be issued for, or the refusal the SDK expects.
    pub(crate) async fn live_mission(
        &self,
        p: &Principal,
        mission_id: &str,
        agent_id: &str,
    ) -> Result<Mission> {
        let m = self.load_mission(p, mission_id).await?;
        let status = m.status_at(self.now());
        if status != MissionStatus::Active {
            return Err(mission_refusal(mission_id, status));
        }
        if !m.agent_id.is_empty() && m.agent_id != agent_id {
            return Err(Error::new(
                ErrorCode::Forbidden,
                format!("Mission {mission_id} belongs to another agent"),
            ));
        }
        Ok(m)
    }
}

fn end_view(m: &Mission, status: MissionStatus, transitioned: bool, revoked: &[Revoked]) -> Value {
    json!({
        "mission_id": m.id,
        "claim_id": m.claim_id,
        "terminal_state": status.as_str(),
        "status": status.as_str(),
        "completed_at": m.ended_at.map(Timestamp::to_rfc3339),
        "transitioned": transitioned,
        "revoked_passports": revoked.iter().map(|r| r.jti.clone()).collect::<Vec<_>>(),
    })
}
