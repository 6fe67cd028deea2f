//! Upstream OAuth connections (issue 4): the operator's OAuth client per
//! catalog service (the client secret sealed) and the pending
//! authorization-code flows (single-use states, the PKCE verifier sealed).

use sea_orm_migration::prelude::*;

use super::{col, index};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000007_oauth_connect"
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
                .table(Alias::new("service_oauth_apps"))
                .col(col("operator_id").string().not_null())
                .col(col("service").string().not_null())
                .col(col("created_at").big_integer().not_null())
                // The client secret, sealed under the operator's data key.
                .col(col("sealed").text().not_null())
                .col(col("doc").text().not_null())
                .primary_key(
                    Index::create()
                        .col(Alias::new("operator_id"))
                        .col(Alias::new("service")),
                )
                .to_owned(),
        )
        .await?;
        // Keyed by the SHA-256 of the state; a row is deleted when used.
        m.create_table(
            Table::create()
                .table(Alias::new("service_oauth_states"))
                .col(col("digest").string().not_null().primary_key())
                .col(col("operator_id").string().not_null())
                .col(col("expires_at").big_integer().not_null())
                .col(col("doc").text().not_null())
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "service_oauth_states_expiry",
            "service_oauth_states",
            &["expires_at"],
            false,
        ))
        .await?;
        Ok(())
    }
}
