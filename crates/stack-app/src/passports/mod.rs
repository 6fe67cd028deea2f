//! Passports, missions, revocation and accountability (issue 3).
//!
//! A passport is a short-lived EdDSA JWT (signed by `stack-passport`) bound
//! to one agent, one mission and one declared intent. This module holds the
//! stored records and the store port; the operations live in the submodules:
//! [`keys`] (signing key ring), [`missions`], [`issue`] (issue, verify,
//! refresh, delegate, list), [`revoke`] (revocation with cascade and the
//! in-memory revocation index) and [`accountability`] (checkpoints,
//! checkout, the review engine, reviews, reports).

pub mod accountability;
pub mod issue;
pub mod keys;
pub mod missions;
pub mod revoke;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use stack_core::{Result, Timestamp};
use stack_passport::ServiceGrant;

use crate::NewAudit;
use crate::agents::{AccountabilityMode, Agent};

pub use keys::{KeyRing, SigningKeyRecord};
pub use revoke::{RevocationIndex, RevokeTarget};

/// Shortest and longest passport lifetime, and the default (seconds).
pub const MIN_TTL: i64 = 60;
pub const MAX_TTL: i64 = 3600;
pub const DEFAULT_TTL: i64 = 900;
/// How long after expiry a passport may still be refreshed (seconds).
pub const REFRESH_WINDOW: i64 = 24 * 3600;
/// Default mission lifetime and the longest (seconds).
pub const DEFAULT_MISSION_TTL: i64 = 15 * 60;
pub const MAX_MISSION_TTL: i64 = 24 * 3600;
/// Default checkpoint interval for enforced passports (seconds).
pub const DEFAULT_CHECKPOINT_INTERVAL: i64 = 300;
pub const MIN_CHECKPOINT_INTERVAL: i64 = 30;

/// A mission's state. Terminal states never change again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MissionStatus {
    Active,
    Completed,
    Revoked,
    Expired,
}

impl MissionStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Completed => "completed",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }
}

/// A mission: the unit of work a passport is bound to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mission {
    pub id: String,
    pub operator_id: String,
    pub agent_id: String,
    pub intent_summary: String,
    pub intent_services: Vec<String>,
    pub status: MissionStatus,
    pub idempotency_key: Option<String>,
    pub claim_id: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub end_reason: Option<String>,
    pub notes: Option<String>,
}

impl Mission {
    /// The state as of `now`: an active mission past its deadline is expired.
    pub fn status_at(&self, now: Timestamp) -> MissionStatus {
        if self.status == MissionStatus::Active && now >= self.expires_at {
            MissionStatus::Expired
        } else {
            self.status
        }
    }
}

/// The intent a passport was issued for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeclaredIntent {
    pub summary: String,
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default)]
    pub will_delegate: bool,
    #[serde(default)]
    pub estimated_duration_seconds: Option<i64>,
    #[serde(default)]
    pub estimated_actions: Option<i64>,
}

/// A passport as stored (never the token itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassportRecord {
    pub jti: String,
    pub operator_id: String,
    pub agent_id: String,
    pub agent_name: String,
    pub session_id: String,
    pub parent_jti: Option<String>,
    pub delegation_depth: u8,
    pub mission_id: Option<String>,
    pub accountability: AccountabilityMode,
    pub intent: Option<DeclaredIntent>,
    pub services: Vec<ServiceGrant>,
    pub kid: String,
    /// Epoch seconds.
    pub issued_at: i64,
    /// The JWT `exp` of the latest token for this passport (epoch seconds).
    pub token_expires_at: i64,
    /// Server-side expiry (epoch seconds); checkpoints move it.
    pub expires_at: i64,
    pub ttl_seconds: i64,
    pub checkpoint_interval: Option<i64>,
    pub last_checkpoint_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub revoke_reason: Option<String>,
    pub checked_out_at: Option<i64>,
    /// The passport this one was refreshed from, if any.
    pub refreshed_from: Option<String>,
    /// Whether a missed checkpoint has been reported for it.
    #[serde(default)]
    pub silence_reported: bool,
}

impl PassportRecord {
    pub fn is_active(&self, now_secs: i64) -> bool {
        self.revoked_at.is_none() && now_secs < self.expires_at
    }
}

/// A checkpoint or checkout report from the agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActivityReport {
    #[serde(default)]
    pub services_used: Vec<String>,
    #[serde(default)]
    pub actions_count: i64,
    #[serde(default)]
    pub tool_calls: Vec<Value>,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub delegated_to: Vec<String>,
}

/// A stored checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub id: String,
    pub operator_id: String,
    pub passport_jti: String,
    pub created_at: Timestamp,
    pub report: ActivityReport,
    pub flags: Vec<String>,
    pub new_expires_at: Option<i64>,
}

/// One finding of the review engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewFlag {
    #[serde(rename = "type")]
    pub kind: String,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    pub message: String,
}

/// A stored checkout with its review outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkout {
    pub id: String,
    pub operator_id: String,
    pub passport_jti: String,
    pub agent_id: String,
    pub agent_name: String,
    pub intent_summary: String,
    pub created_at: Timestamp,
    pub report: ActivityReport,
    /// `clean`, `flagged` or `blocked`.
    pub review_status: String,
    pub flags: Vec<ReviewFlag>,
}

/// An operator's decision on a checkout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Review {
    pub id: String,
    pub operator_id: String,
    pub checkout_id: String,
    pub agent_id: String,
    /// `approved` or `blocked`.
    pub decision: String,
    pub notes: Option<String>,
    pub block_future: bool,
    pub decided_by: String,
    pub decided_at: Timestamp,
}

/// A security event raised by a detector or a rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityEvent {
    pub id: String,
    pub operator_id: String,
    pub agent_id: Option<String>,
    pub passport_jti: Option<String>,
    pub kind: String,
    pub severity: String,
    pub message: String,
    pub details: Value,
    pub created_at: Timestamp,
    pub resolved_at: Option<Timestamp>,
}

/// What a revocation selects.
#[derive(Debug, Clone, PartialEq)]
pub enum RevokeSelector {
    /// One passport and, breadth-first, every live descendant.
    Passport(String),
    Agent(String),
    Session(String),
    Mission(String),
    All,
}

/// A revoked passport: its id, expiry and whether it was reached by cascade.
#[derive(Debug, Clone, PartialEq)]
pub struct Revoked {
    pub jti: String,
    pub agent_id: String,
    pub expires_at: i64,
    pub cascaded_from: Option<String>,
}

/// Builds the audit entry for one passport revoked as part of a larger
/// operation (a cascade, a bulk revoke, a mission ending).
pub type AuditFor = Box<dyn FnMut(Revoked) -> Result<NewAudit> + Send>;

/// Storage for signing keys, missions, passports, checkpoints, checkouts,
/// reviews and security events.
#[async_trait]
#[allow(clippy::too_many_arguments)] // ending a mission carries its whole context
pub trait PassportStore: Send + Sync + 'static {
    // ---- signing keys (deployment-wide)
    async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>>;
    /// Stores `key` as the active key and retires the others.
    async fn rotate_signing_key(
        &self,
        key: &SigningKeyRecord,
        retired_at: i64,
        verify_until: i64,
    ) -> Result<()>;

    // ---- missions
    async fn insert_mission(&self, mission: &Mission, audit: NewAudit) -> Result<()>;
    async fn get_mission(&self, operator_id: &str, mission_id: &str) -> Result<Option<Mission>>;
    async fn find_mission_by_key(
        &self,
        operator_id: &str,
        idempotency_key: &str,
    ) -> Result<Option<Mission>>;
    /// Ends an active mission and revokes every live passport bound to it, in
    /// one transaction. `Ok(None)` when it does not exist.
    async fn end_mission(
        &self,
        operator_id: &str,
        mission_id: &str,
        status: MissionStatus,
        reason: Option<String>,
        notes: Option<String>,
        now: Timestamp,
        audit: NewAudit,
        revoke_audits: AuditFor,
    ) -> Result<Option<(Mission, Vec<Revoked>)>>;

    // ---- passports
    async fn insert_passport(&self, record: &PassportRecord, audit: NewAudit) -> Result<()>;
    async fn get_passport(&self, jti: &str) -> Result<Option<PassportRecord>>;
    async fn list_passports(
        &self,
        operator_id: &str,
        agent_id: Option<&str>,
        session_id: Option<&str>,
        active_at: i64,
    ) -> Result<Vec<PassportRecord>>;
    /// Revokes what `selector` names within the operator (cascading for a
    /// single passport), writing `audit` for the operation and one entry per
    /// passport revoked by cascade, all in one transaction.
    async fn revoke_passports(
        &self,
        operator_id: &str,
        selector: &RevokeSelector,
        reason: &str,
        now_secs: i64,
        audit: NewAudit,
        cascade_audit: AuditFor,
    ) -> Result<Vec<Revoked>>;
    /// Every revoked passport, across operators, not yet expired: `(jti, expires_at)`.
    async fn live_revocations(&self, now_secs: i64) -> Result<Vec<(String, i64)>>;
    /// Stores a checkpoint and moves the passport's expiry.
    async fn record_checkpoint(
        &self,
        checkpoint: &Checkpoint,
        passport: &PassportRecord,
        audit: NewAudit,
    ) -> Result<()>;
    async fn list_checkpoints(&self, operator_id: &str, jti: &str) -> Result<Vec<Checkpoint>>;
    /// Stores the checkout (once per passport: a second one is CONFLICT).
    async fn record_checkout(&self, checkout: &Checkout, audit: NewAudit) -> Result<()>;
    async fn get_checkout(&self, operator_id: &str, checkout_id: &str) -> Result<Option<Checkout>>;
    async fn checkout_for(&self, operator_id: &str, jti: &str) -> Result<Option<Checkout>>;
    /// Checkouts by review status, newest first, with the total count.
    async fn list_checkouts(
        &self,
        operator_id: &str,
        review_status: &str,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<Checkout>, u64)>;
    /// Records a decision; when `block` is given, blocks the agent too.
    async fn decide_review(
        &self,
        review: &Review,
        block_agent: Option<&Agent>,
        audit: NewAudit,
    ) -> Result<()>;
    async fn review_for(&self, operator_id: &str, checkout_id: &str) -> Result<Option<Review>>;

    /// Enforced passports that expired without a checkpoint or checkout
    /// between `since` and `until` (epoch seconds) and are not yet reported.
    async fn silent_passports(&self, since: i64, until: i64) -> Result<Vec<PassportRecord>>;
    /// Marks the passport's silence as reported and stores the event, once:
    /// `Ok(false)` when another node reported it first.
    async fn report_silence(
        &self,
        jti: &str,
        event: &SecurityEvent,
        audit: NewAudit,
    ) -> Result<bool>;

    // ---- security events
    async fn insert_security_event(&self, event: &SecurityEvent, audit: NewAudit) -> Result<()>;
}
