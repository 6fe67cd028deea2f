//! Services (issue 4): operator data keys, connections with sealed
//! credentials, grants, proxy operations and usage meters.

use sea_orm_migration::prelude::*;

use super::{col, index};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000005_services"
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
                .table(Alias::new("operator_keys"))
                .col(col("operator_id").string().not_null().primary_key())
                .col(col("wrapped").text().not_null())
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Alias::new("connections"))
                .col(col("id").string().not_null().primary_key())
                .col(col("operator_id").string().not_null())
                .col(col("service").string().not_null())
                .col(col("status").string().not_null())
                .col(col("created_at").big_integer().not_null())
                // The sealed secret; NULL once disconnected (erased).
                .col(col("sealed").text().null())
                .col(col("doc").text().not_null())
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "connections_operator",
            "connections",
            &["operator_id", "service"],
            false,
        ))
        .await?;
        m.create_table(
            Table::create()
                .table(Alias::new("grants"))
                .col(col("id").string().not_null().primary_key())
                .col(col("operator_id").string().not_null())
                .col(col("agent_id").string().not_null())
                .col(col("connection_id").string().not_null())
                .col(col("revoked_at").big_integer().null())
                .col(col("created_at").big_integer().not_null())
                .col(col("doc").text().not_null())
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "grants_agent",
            "grants",
            &["operator_id", "agent_id"],
            false,
        ))
        .await?;
        m.create_index(index(
            "grants_connection",
            "grants",
            &["connection_id"],
            false,
        ))
        .await?;
        // Proxy operations by authority request id: at most one per id.
        m.create_table(
            Table::create()
                .table(Alias::new("proxy_operations"))
                .col(col("operator_id").string().not_null())
                .col(col("request_id").string().not_null())
                .col(col("state").string().not_null())
                .col(col("created_at").big_integer().not_null())
                .col(col("doc").text().not_null())
                .primary_key(
                    Index::create()
                        .col(Alias::new("operator_id"))
                        .col(Alias::new("request_id")),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Alias::new("usage_meters"))
                .col(col("operator_id").string().not_null())
                .col(col("meter").string().not_null())
                .col(col("period").string().not_null())
                .col(col("count").big_integer().not_null())
                .primary_key(
                    Index::create()
                        .col(Alias::new("operator_id"))
                        .col(Alias::new("meter"))
                        .col(Alias::new("period")),
                )
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}
