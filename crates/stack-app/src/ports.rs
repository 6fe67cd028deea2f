//! Ports: what the application needs from the outside world.
//!
//! Implemented by adapters (`stack-store` for [`Store`]); the clock and the
//! random source are passed in so tests can fix them.

use async_trait::async_trait;
use stack_audit::{AuditDraft, AuditEntry, ChainHead};
use stack_core::{Result, Timestamp};

use crate::agents::Agent;
use crate::audit::{AuditFilter, AuditRange};
use crate::operators::{ApiKeyRecord, Operator};

/// The source of the current time.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Timestamp::from_millis(ms)
    }
}

/// An audit entry to append: the store seals it onto the operator's chain in
/// the same transaction as the change it records.
#[derive(Debug, Clone)]
pub struct NewAudit {
    pub entry_id: String,
    pub now: Timestamp,
    pub draft: AuditDraft,
}

/// The outcome of a read-modify-write on an agent: the new state, and the
/// audit entry to record (none when nothing changed).
pub type AgentChange = Box<dyn FnOnce(Agent) -> Result<(Agent, Option<NewAudit>)> + Send>;

/// Everything the application stores: one trait per domain, implemented
/// together by the store adapter.
pub trait Store:
    CoreStore
    + crate::oauth::OAuthStore
    + crate::passports::PassportStore
    + crate::scan::ScanStore
    + crate::services::ServiceStore
    + crate::proxy::ProxyStore
    + crate::intents::IntentStore
{
}

impl<T> Store for T where
    T: CoreStore
        + crate::oauth::OAuthStore
        + crate::passports::PassportStore
        + crate::services::ServiceStore
        + crate::proxy::ProxyStore
        + crate::scan::ScanStore
        + crate::intents::IntentStore
{
}

/// Operators, keys, agents and the audit chain. Every method that changes
/// state takes the audit entry that records it and commits both atomically,
/// or neither.
#[async_trait]
pub trait CoreStore: Send + Sync + 'static {
    /// Is the database reachable? (`/readyz`)
    async fn ping(&self) -> Result<()>;

    // ---- operators and keys
    async fn operator_count(&self) -> Result<u64>;
    async fn create_operator(
        &self,
        operator: &Operator,
        key: &ApiKeyRecord,
        audit: NewAudit,
    ) -> Result<()>;
    async fn get_operator(&self, operator_id: &str) -> Result<Option<Operator>>;
    /// The live (not revoked) key with this digest.
    async fn find_api_key(&self, digest: &str) -> Result<Option<ApiKeyRecord>>;

    // ---- agents
    async fn insert_agent(&self, agent: &Agent, audit: NewAudit) -> Result<()>;
    async fn get_agent(&self, operator_id: &str, agent_id: &str) -> Result<Option<Agent>>;
    async fn list_agents(&self, operator_id: &str) -> Result<Vec<Agent>>;
    /// Atomically loads the agent, applies `change`, stores the result and
    /// appends the audit entry. `Ok(None)` when the agent does not exist.
    async fn update_agent(
        &self,
        operator_id: &str,
        agent_id: &str,
        change: AgentChange,
    ) -> Result<Option<Agent>>;
    /// Deletes the agent and records it. `Ok(false)` when it did not exist.
    async fn delete_agent(
        &self,
        operator_id: &str,
        agent_id: &str,
        audit: NewAudit,
    ) -> Result<bool>;

    // ---- audit
    /// Appends an entry that records no other state change (e.g. a denial).
    async fn append_audit(&self, operator_id: &str, audit: NewAudit) -> Result<AuditEntry>;
    /// Newest first, filtered.
    async fn list_audit(&self, operator_id: &str, filter: &AuditFilter) -> Result<Vec<AuditEntry>>;
    /// In chain order (ascending `seq`), entries with `seq > after_seq` inside
    /// `range`, at most `limit`.
    async fn audit_in_order(
        &self,
        operator_id: &str,
        after_seq: i64,
        range: &AuditRange,
        limit: u64,
    ) -> Result<Vec<AuditEntry>>;
    /// The store's own record of where the chain ends, with the last entry id.
    async fn recorded_head(&self, operator_id: &str) -> Result<Option<(ChainHead, String)>>;
}

/// Convenience for adapters building an audit entry outside the app.
pub fn audit_now(entry_id: String, now: Timestamp, draft: AuditDraft) -> NewAudit {
    NewAudit {
        entry_id,
        now,
        draft,
    }
}
