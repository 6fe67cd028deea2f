//! Passports (issue 3): signing keys, missions, passports, checkpoints,
//! checkouts, reviews, security events.
//!
//! Each table keeps the columns it is queried or locked by, and the full
//! record as canonical JSON in `doc` (the record types live in `stack-app`).

use sea_orm_migration::prelude::*;

use super::{col, index};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000002_passports"
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
                .table(Alias::new("signing_keys"))
                .col(col("kid").string().not_null().primary_key())
                .col(col("status").string().not_null())
                .col(col("created_at").big_integer().not_null())
                .col(col("doc").text().not_null())
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Alias::new("missions"))
                .col(col("id").string().not_null().primary_key())
                .col(col("operator_id").string().not_null())
                .col(col("idempotency_key").string().null())
                .col(col("created_at").big_integer().not_null())
                .col(col("doc").text().not_null())
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "missions_operator_key",
            "missions",
            &["operator_id", "idempotency_key"],
            true,
        ))
        .await?;
        m.create_table(
            Table::create()
                .table(Alias::new("passports"))
                .col(col("jti").string().not_null().primary_key())
                .col(col("operator_id").string().not_null())
                .col(col("agent_id").string().not_null())
                .col(col("session_id").string().not_null())
                .col(col("parent_jti").string().null())
                .col(col("refreshed_from").string().null())
                .col(col("mission_id").string().null())
                .col(col("issued_at").big_integer().not_null())
                .col(col("expires_at").big_integer().not_null())
                .col(col("revoked_at").big_integer().null())
                .col(col("doc").text().not_null())
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "passports_operator_agent",
            "passports",
            &["operator_id", "agent_id"],
            false,
        ))
        .await?;
        m.create_index(index(
            "passports_operator_session",
            "passports",
            &["operator_id", "session_id"],
            false,
        ))
        .await?;
        m.create_index(index(
            "passports_parent",
            "passports",
            &["parent_jti"],
            false,
        ))
        .await?;
        m.create_index(index(
            "passports_refreshed_from",
            "passports",
            &["refreshed_from"],
            false,
        ))
        .await?;
        m.create_index(index(
            "passports_mission",
            "passports",
            &["mission_id"],
            false,
        ))
        .await?;
        m.create_index(index(
            "passports_revoked",
            "passports",
            &["revoked_at", "expires_at"],
            false,
        ))
        .await?;
        m.create_table(
            Table::create()
                .table(Alias::new("checkpoints"))
                .col(col("id").string().not_null().primary_key())
                .col(col("operator_id").string().not_null())
                .col(col("passport_jti").string().not_null())
                .col(col("created_at").big_integer().not_null())
                .col(col("doc").text().not_null())
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "checkpoints_passport",
            "checkpoints",
            &["operator_id", "passport_jti"],
            false,
        ))
        .await?;
        m.create_table(
            Table::create()
                .table(Alias::new("checkouts"))
                .col(col("id").string().not_null().primary_key())
                .col(col("operator_id").string().not_null())
                .col(col("passport_jti").string().not_null())
                .col(col("review_status").string().not_null())
                .col(col("decided").boolean().not_null())
                .col(col("created_at").big_integer().not_null())
                .col(col("doc").text().not_null())
                .to_owned(),
        )
        .await?;
        // One checkout per passport, enforced by the database.
        m.create_index(index(
            "checkouts_passport",
            "checkouts",
            &["passport_jti"],
            true,
        ))
        .await?;
        m.create_index(index(
            "checkouts_queue",
            "checkouts",
            &["operator_id", "review_status", "decided"],
            false,
        ))
        .await?;
        m.create_table(
            Table::create()
                .table(Alias::new("reviews"))
                .col(col("id").string().not_null().primary_key())
                .col(col("operator_id").string().not_null())
                .col(col("checkout_id").string().not_null())
                .col(col("doc").text().not_null())
                .to_owned(),
        )
        .await?;
        m.create_index(index("reviews_checkout", "reviews", &["checkout_id"], true))
            .await?;
        m.create_table(
            Table::create()
                .table(Alias::new("security_events"))
                .col(col("id").string().not_null().primary_key())
                .col(col("operator_id").string().not_null())
                .col(col("agent_id").string().null())
                .col(col("resolved").boolean().not_null())
                .col(col("created_at").big_integer().not_null())
                .col(col("doc").text().not_null())
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "security_events_operator",
            "security_events",
            &["operator_id", "resolved", "created_at"],
            false,
        ))
        .await?;
        Ok(())
    }
}
