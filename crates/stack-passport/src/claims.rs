//! The passport claims: registered JWT claims plus STACK's `stk` namespace
//! (rest-contract §3, product §7.2). The field order here is the wire order;
//! `tests/vectors.json` pins it.

use serde::{Deserialize, Serialize};

/// The claims of a passport JWT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassportClaims {
    /// Issuer, [`crate::DEFAULT_ISSUER`] for the hosted deployment.
    pub iss: String,
    /// The agent id; always equal to `stk.agent_id`.
    pub sub: String,
    /// [`crate::AUDIENCE`]. On input an array containing the expected audience
    /// is accepted and normalised to that one string.
    pub aud: String,
    /// Expiry, Unix seconds (a JSON integer).
    pub exp: i64,
    /// Issued at, Unix seconds (a JSON integer).
    pub iat: i64,
    /// Not before, Unix seconds; omitted when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// The passport id (`pp_…`), the key of revocation.
    pub jti: String,
    pub stk: StkClaims,
}

/// STACK's own claims, under `stk`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StkClaims {
    pub operator_id: String,
    pub agent_id: String,
    pub agent_name: String,
    pub services: Vec<ServiceGrant>,
    /// Pointers to identity claims (`{claim_id, provider, layer, …}`), never PII.
    pub identity_claims: Vec<serde_json::Value>,
    /// 0 at the root, at most [`crate::MAX_DELEGATION_DEPTH`].
    pub delegation_depth: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_passport_id: Option<String>,
    /// Shared by a root passport and everything delegated from it.
    pub session_id: String,
    /// `enforced` | `logged` | `standard`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accountability: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent_summary: Option<String>,
    #[serde(default)]
    pub intent_services: Vec<String>,
    /// Seconds between checkpoints (enforced mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_interval: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mission_id: Option<String>,
    #[serde(default)]
    pub mission_ids: Vec<String>,
}

/// One service the passport may act on, through one connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceGrant {
    pub service_name: String,
    pub service_id: String,
    pub connection_id: String,
    pub credential_ref: String,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub constraints: Vec<serde_json::Value>,
    #[serde(default)]
    pub allow_data_from: Vec<String>,
}
