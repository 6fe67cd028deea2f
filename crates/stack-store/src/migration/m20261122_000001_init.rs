//! The first schema: operators, API keys, agents, the audit chain.

use super::col;
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000001_init"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Alias::new("operators"))
                .col(col("id").string().not_null().primary_key())
                .col(col("name").string().not_null())
                .col(col("tier").string().not_null())
                .col(col("created_at").big_integer().not_null())
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Alias::new("api_keys"))
                .col(col("id").string().not_null().primary_key())
                .col(col("operator_id").string().not_null())
                .col(col("kind").string().not_null())
                .col(col("member_id").string().null())
                .col(col("role").string().null())
                .col(col("digest").string().not_null())
                .col(col("hint").string().not_null())
                .col(col("created_at").big_integer().not_null())
                .col(col("revoked_at").big_integer().null())
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("api_keys_digest")
                .table(Alias::new("api_keys"))
                .col(Alias::new("digest"))
                .unique()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Alias::new("agents"))
                .col(col("id").string().not_null().primary_key())
                .col(col("operator_id").string().not_null())
                .col(col("name").string().not_null())
                .col(col("description").text().null())
                .col(col("status").string().not_null())
                .col(col("accountability_mode").string().not_null())
                .col(col("credential_access").string().not_null())
                .col(col("key_mode").string().not_null())
                .col(col("on_warning").string().not_null())
                .col(col("on_critical").string().not_null())
                .col(col("passport_blocked").boolean().not_null())
                .col(col("passport_blocked_reason").text().null())
                .col(col("passport_blocked_at").big_integer().null())
                .col(col("skill_access_mode").string().not_null())
                .col(col("allowed_skills").text().not_null())
                .col(col("icon_url").text().null())
                .col(col("llm_inject_system_prompt").boolean().not_null())
                .col(col("llm_redact_pii").boolean().not_null())
                .col(col("created_at").big_integer().not_null())
                .col(col("updated_at").big_integer().not_null())
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("agents_operator_name")
                .table(Alias::new("agents"))
                .col(Alias::new("operator_id"))
                .col(Alias::new("name"))
                .unique()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Alias::new("audit_entries"))
                .col(col("entry_id").string().not_null().primary_key())
                .col(col("operator_id").string().not_null())
                .col(col("seq").big_integer().not_null())
                .col(col("timestamp").big_integer().not_null())
                .col(col("agent_id").string().null())
                .col(col("passport_jti").string().null())
                .col(col("actor").string().not_null())
                .col(col("layer").string().not_null())
                .col(col("action").string().not_null())
                .col(col("outcome").string().not_null())
                .col(col("target_type").string().null())
                .col(col("target_id").string().null())
                .col(col("trace_id").string().null())
                .col(col("duration_ms").big_integer().null())
                .col(col("payload_hash").string().null())
                .col(col("error_code").string().null())
                .col(col("error_message").text().null())
                .col(col("details").text().not_null())
                .col(col("prev_entry_hash").string().not_null())
                .col(col("entry_hash").string().not_null())
                .to_owned(),
        )
        .await?;
        // One position per operator chain: a second writer that somehow
        // computed the same next entry fails here instead of forking.
        m.create_index(
            Index::create()
                .name("audit_entries_operator_seq")
                .table(Alias::new("audit_entries"))
                .col(Alias::new("operator_id"))
                .col(Alias::new("seq"))
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("audit_entries_operator_time")
                .table(Alias::new("audit_entries"))
                .col(Alias::new("operator_id"))
                .col(Alias::new("timestamp"))
                .to_owned(),
        )
        .await?;

        // Where each operator's chain ends; the row is locked while an
        // entry is appended, which serializes writers per operator.
        m.create_table(
            Table::create()
                .table(Alias::new("audit_heads"))
                .col(col("operator_id").string().not_null().primary_key())
                .col(col("seq").big_integer().not_null())
                .col(col("hash").string().not_null())
                .col(col("timestamp").big_integer().not_null())
                .col(col("last_entry_id").string().not_null())
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}
