//! The audit chain: one append-only, hash-chained log per operator.
//!
//! What it does: defines [`AuditEntry`], its canonical encoding
//! ([`canonical_bytes`]), the entry hash ([`entry_hash`]), how a draft becomes
//! the next entry of a chain ([`seal`]), and how a chain is checked
//! ([`ChainVerifier`], [`verify_chain`]).
//!
//! What it does not do: no storage, no clock, no randomness. The store calls
//! [`seal`] inside the same database transaction as the change it records, and
//! passes the entry id and time in. Another Rust service can depend on this
//! crate alone to verify an exported chain.
//!
//! # The hash covers every field
//!
//! The original product hashed eight fields, which left payload digests, error
//! fields and trace ids unprotected. Here the hash is SHA-256 over the
//! canonical JSON of **every** field of the entry except `entry_hash` itself,
//! including a format version `v`. See `docs/audit-chain.md` and the committed
//! vectors in `tests/vectors.json`.
#![forbid(unsafe_code)]

mod canonical;
mod verify;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use stack_core::Timestamp;

pub use canonical::canonical_json;
pub use verify::{BreakReason, ChainBreak, ChainVerifier, Verification, verify_chain};

/// The encoding version written into every entry's hash input.
pub const FORMAT_VERSION: u32 = 1;

/// The previous-hash of the first entry of every chain: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Which part of STACK recorded the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// Credential storage and proxied use of credentials.
    Vault,
    Proxy,
    Passport,
    Dropoff,
    Skills,
    Scan,
    /// Operators, agents, configuration.
    System,
}

impl Layer {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Vault => "vault",
            Self::Proxy => "proxy",
            Self::Passport => "passport",
            Self::Dropoff => "dropoff",
            Self::Skills => "skills",
            Self::Scan => "scan",
            Self::System => "system",
        }
    }
}

/// How the recorded operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
    Pending,
    Blocked,
}

impl Outcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Pending => "pending",
            Self::Blocked => "blocked",
        }
    }
}

/// What a caller wants recorded; [`seal`] turns it into the next [`AuditEntry`].
#[derive(Debug, Clone, PartialEq)]
pub struct AuditDraft {
    pub agent_id: Option<String>,
    pub passport_jti: Option<String>,
    /// Who did it, e.g. `operator:op_…` (never a credential).
    pub actor: String,
    pub layer: Layer,
    /// Dotted action name, e.g. `agent.register`.
    pub action: String,
    pub outcome: Outcome,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub trace_id: Option<String>,
    pub duration_ms: Option<i64>,
    /// Lower-case hex SHA-256 of the operation payload, when there is one.
    pub payload_hash: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// Structured, non-secret details (a JSON object).
    pub details: Value,
}

impl AuditDraft {
    /// A successful action by `actor` with no target or details yet.
    pub fn new(actor: impl Into<String>, layer: Layer, action: impl Into<String>) -> Self {
        Self {
            agent_id: None,
            passport_jti: None,
            actor: actor.into(),
            layer,
            action: action.into(),
            outcome: Outcome::Success,
            target_type: None,
            target_id: None,
            trace_id: None,
            duration_ms: None,
            payload_hash: None,
            error_code: None,
            error_message: None,
            details: Value::Object(serde_json::Map::new()),
        }
    }

    #[must_use]
    pub fn target(mut self, kind: &str, id: &str) -> Self {
        self.target_type = Some(kind.to_owned());
        self.target_id = Some(id.to_owned());
        self
    }

    #[must_use]
    pub fn agent(mut self, agent_id: &str) -> Self {
        self.agent_id = Some(agent_id.to_owned());
        self
    }

    #[must_use]
    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// Records the SHA-256 of the canonical form of `payload`.
    #[must_use]
    pub fn payload(mut self, payload: &Value) -> Self {
        self.payload_hash = Some(stack_crypto::sha256_hex(canonical_json(payload).as_bytes()));
        self
    }
}

/// One entry of an operator's chain. This is also the export format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub entry_id: String,
    pub operator_id: String,
    /// Position in the operator's chain, starting at 1, without gaps.
    pub seq: i64,
    /// Unix milliseconds; never less than the previous entry's.
    pub timestamp: i64,
    pub agent_id: Option<String>,
    pub passport_jti: Option<String>,
    pub actor: String,
    pub layer: Layer,
    pub action: String,
    pub outcome: Outcome,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub trace_id: Option<String>,
    pub duration_ms: Option<i64>,
    pub payload_hash: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub details: Value,
    pub prev_entry_hash: String,
    pub entry_hash: String,
}

/// Where a chain currently ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// Number of entries (equal to the last `seq`).
    pub seq: i64,
    pub hash: String,
    /// Timestamp of the last entry, or 0 for an empty chain.
    pub timestamp: i64,
}

impl ChainHead {
    pub fn genesis() -> Self {
        Self {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
            timestamp: 0,
        }
    }
}

/// The exact bytes the entry hash is computed over: canonical JSON (keys
/// sorted, no insignificant whitespace) of every field but `entry_hash`, plus
/// `"v": 1`.
pub fn canonical_bytes(e: &AuditEntry) -> Vec<u8> {
    let opt = |v: &Option<String>| v.as_ref().map_or(Value::Null, |s| Value::String(s.clone()));
    let mut m = serde_json::Map::new();
    m.insert("action".into(), Value::String(e.action.clone()));
    m.insert("actor".into(), Value::String(e.actor.clone()));
    m.insert("agent_id".into(), opt(&e.agent_id));
    m.insert("details".into(), e.details.clone());
    m.insert(
        "duration_ms".into(),
        e.duration_ms.map_or(Value::Null, Value::from),
    );
    m.insert("entry_id".into(), Value::String(e.entry_id.clone()));
    m.insert("error_code".into(), opt(&e.error_code));
    m.insert("error_message".into(), opt(&e.error_message));
    m.insert("layer".into(), Value::String(e.layer.as_str().into()));
    m.insert("operator_id".into(), Value::String(e.operator_id.clone()));
    m.insert("outcome".into(), Value::String(e.outcome.as_str().into()));
    m.insert("passport_jti".into(), opt(&e.passport_jti));
    m.insert("payload_hash".into(), opt(&e.payload_hash));
    m.insert(
        "prev_entry_hash".into(),
        Value::String(e.prev_entry_hash.clone()),
    );
    m.insert("seq".into(), Value::from(e.seq));
    m.insert("target_id".into(), opt(&e.target_id));
    m.insert("target_type".into(), opt(&e.target_type));
    m.insert("timestamp".into(), Value::from(e.timestamp));
    m.insert("trace_id".into(), opt(&e.trace_id));
    m.insert("v".into(), Value::from(FORMAT_VERSION));
    canonical_json(&Value::Object(m)).into_bytes()
}

/// Lower-case hex SHA-256 of [`canonical_bytes`].
pub fn entry_hash(e: &AuditEntry) -> String {
    stack_crypto::sha256_hex(&canonical_bytes(e))
}

/// Turns `draft` into the entry that follows `head` in `operator_id`'s chain.
///
/// The timestamp is `max(now, head.timestamp)`, so a clock stepping backwards
/// never makes the chain's time order disagree with its `seq` order.
pub fn seal(
    operator_id: &str,
    head: &ChainHead,
    entry_id: String,
    now: Timestamp,
    draft: AuditDraft,
) -> AuditEntry {
    let mut e = AuditEntry {
        entry_id,
        operator_id: operator_id.to_owned(),
        seq: head.seq.saturating_add(1),
        timestamp: now.as_millis().max(head.timestamp),
        agent_id: draft.agent_id,
        passport_jti: draft.passport_jti,
        actor: draft.actor,
        layer: draft.layer,
        action: draft.action,
        outcome: draft.outcome,
        target_type: draft.target_type,
        target_id: draft.target_id,
        trace_id: draft.trace_id,
        duration_ms: draft.duration_ms,
        payload_hash: draft.payload_hash,
        error_code: draft.error_code,
        error_message: draft.error_message,
        details: draft.details,
        prev_entry_hash: head.hash.clone(),
        entry_hash: String::new(),
    };
    e.entry_hash = entry_hash(&e);
    e
}

impl AuditEntry {
    /// The head of the chain if this entry is its last.
    pub fn as_head(&self) -> ChainHead {
        ChainHead {
            seq: self.seq,
            hash: self.entry_hash.clone(),
            timestamp: self.timestamp,
        }
    }
}
