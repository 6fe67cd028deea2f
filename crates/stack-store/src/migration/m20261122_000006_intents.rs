//! Intent approvals (issue 4): one row per submitted intent, bound to a
//! passport and a request digest; the proxy consumes approved rows once.

use sea_orm_migration::prelude::*;

use super::{col, index};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000006_intents"
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
                .table(Alias::new("intent_approvals"))
                .col(col("id").string().not_null().primary_key())
                .col(col("operator_id").string().not_null())
                .col(col("agent_id").string().not_null())
                .col(col("passport_jti").string().not_null())
                .col(col("status").string().not_null())
                .col(col("created_at").big_integer().not_null())
                .col(col("expires_at").big_integer().not_null())
                .col(col("doc").text().not_null())
                .to_owned(),
        )
        .await?;
        // The operator's queue: pending rows, oldest first.
        m.create_index(index(
            "intent_approvals_queue",
            "intent_approvals",
            &["operator_id", "status", "created_at"],
            false,
        ))
        .await?;
        m.create_index(index(
            "intent_approvals_passport",
            "intent_approvals",
            &["passport_jti"],
            false,
        ))
        .await?;
        Ok(())
    }
}
