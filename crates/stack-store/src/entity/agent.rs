use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "agents")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub operator_id: String,
    pub name: String,
    pub description: Option<String>,
    pub status: String,
    pub accountability_mode: String,
    pub credential_access: String,
    pub key_mode: String,
    pub on_warning: String,
    pub on_critical: String,
    pub passport_blocked: bool,
    pub passport_blocked_reason: Option<String>,
    pub passport_blocked_at: Option<i64>,
    pub skill_access_mode: String,
    /// JSON array of skill ids.
    pub allowed_skills: String,
    pub icon_url: Option<String>,
    pub llm_inject_system_prompt: bool,
    pub llm_redact_pii: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
