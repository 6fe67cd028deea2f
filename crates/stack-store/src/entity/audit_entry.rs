use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_entries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub entry_id: String,
    pub operator_id: String,
    pub seq: i64,
    pub timestamp: i64,
    pub agent_id: Option<String>,
    pub passport_jti: Option<String>,
    pub actor: String,
    pub layer: String,
    pub action: String,
    pub outcome: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub trace_id: Option<String>,
    pub duration_ms: Option<i64>,
    pub payload_hash: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// Canonical JSON text of the details object.
    pub details: String,
    pub prev_entry_hash: String,
    pub entry_hash: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
