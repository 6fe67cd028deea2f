//! Operators (tenants) and their API keys.

use serde::Serialize;
use serde_json::json;
use stack_audit::{AuditDraft, Layer};
use stack_core::{Error, IdKind, Result, Role, Secret, Timestamp};
use stack_crypto::{ApiKeyKind, api_key_digest, api_key_hint, new_api_key};

use crate::App;

/// A tenant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Operator {
    pub id: String,
    pub name: String,
    pub tier: String,
    pub created_at: Timestamp,
}

/// A stored API key: only its digest, never the key.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub operator_id: String,
    /// `operator` or `member`.
    pub kind: String,
    pub member_id: Option<String>,
    pub role: Option<Role>,
    pub digest: String,
    pub hint: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// A newly created operator and its key, which is shown once and never stored.
#[derive(Debug)]
pub struct CreatedOperator {
    pub operator: Operator,
    pub api_key: Secret<String>,
}

pub const MAX_OPERATOR_NAME: usize = 128;

impl App {
    /// Creates an operator with a fresh master key. Used by the first start
    /// and by `stack-server operators create`; not reachable over the network.
    pub async fn create_operator(&self, name: &str) -> Result<CreatedOperator> {
        let name = name.trim();
        if name.is_empty()
            || name.chars().count() > MAX_OPERATOR_NAME
            || name.chars().any(char::is_control)
        {
            return Err(Error::invalid_field(
                "name",
                format!("operator name must be 1-{MAX_OPERATOR_NAME} printable characters"),
            ));
        }
        let now = self.now();
        let operator = Operator {
            id: self.new_id(IdKind::Operator)?,
            name: name.to_owned(),
            tier: "free".to_owned(),
            created_at: now,
        };
        let api_key = new_api_key(self.rng.as_ref(), ApiKeyKind::Operator)?;
        let record = ApiKeyRecord {
            id: self.new_id(IdKind::ApiKey)?,
            operator_id: operator.id.clone(),
            kind: "operator".to_owned(),
            member_id: None,
            role: None,
            digest: api_key_digest(api_key.expose()),
            hint: api_key_hint(api_key.expose()),
            created_at: now,
            revoked_at: None,
        };
        let audit = self.audit(
            AuditDraft::new("system", Layer::System, "operator.create")
                .target("operator", &operator.id)
                .details(
                    json!({ "name": operator.name, "key_id": record.id, "key_hint": record.hint }),
                ),
        )?;
        self.store
            .create_operator(&operator, &record, audit)
            .await?;
        Ok(CreatedOperator { operator, api_key })
    }

    /// Creates the first operator when the database has none. `Ok(None)`
    /// when operators already exist.
    pub async fn bootstrap_first_operator(&self) -> Result<Option<CreatedOperator>> {
        if self.store.operator_count().await? > 0 {
            return Ok(None);
        }
        self.create_operator("default").await.map(Some)
    }
}
