//! Content scanning (issue 6): per-operator detector configuration and the
//! monthly scan counter.
//!
//! `detector_configs` keeps one row per `(operator_id, detector_key)` with
//! the configuration as JSON in `doc`; `scan_usage` counts scans per
//! operator and calendar month (`period` = `YYYY-MM`, UTC), incremented in
//! the transaction that appends the `scan.run` audit entry.

use sea_orm_migration::prelude::*;

use super::col;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000004_scan"
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
                .table(Alias::new("detector_configs"))
                .col(col("operator_id").string().not_null())
                .col(col("detector_key").string().not_null())
                .col(col("updated_at").big_integer().not_null())
                .col(col("doc").text().not_null())
                .primary_key(
                    Index::create()
                        .col(Alias::new("operator_id"))
                        .col(Alias::new("detector_key")),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Alias::new("scan_usage"))
                .col(col("operator_id").string().not_null())
                .col(col("period").string().not_null())
                .col(col("count").big_integer().not_null())
                .primary_key(
                    Index::create()
                        .col(Alias::new("operator_id"))
                        .col(Alias::new("period")),
                )
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}
