//! The OAuth authorization server (issue 5): registered clients, pending
//! authorization requests, grants, codes and tokens. Secrets (codes, tokens,
//! CSRF tokens, browser bindings) are stored as digests only.

use super::{col, index};
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000003_oauth"
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
                .table(Alias::new("oauth_clients"))
                .col(col("client_id").string().not_null().primary_key())
                .col(col("client_name").text().null())
                .col(col("redirect_uris").text().not_null())
                .col(col("grant_types").text().not_null())
                .col(col("software_id").text().null())
                .col(col("software_version").text().null())
                .col(col("registered_from").string().not_null())
                .col(col("created_at").big_integer().not_null())
                .col(col("last_used_at").big_integer().null())
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "oauth_clients_source_time",
            "oauth_clients",
            &["registered_from", "created_at"],
            false,
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(Alias::new("oauth_requests"))
                .col(col("id").string().not_null().primary_key())
                .col(col("client_id").string().not_null())
                .col(col("redirect_uri").text().not_null())
                .col(col("scope").text().not_null())
                .col(col("state").text().null())
                .col(col("code_challenge").string().not_null())
                .col(col("resource").text().not_null())
                .col(col("browser_digest").string().not_null())
                .col(col("csrf_digest").string().not_null())
                .col(col("operator_id").string().null())
                .col(col("member_id").string().null())
                .col(col("role").string().null())
                .col(col("key_id").string().null())
                .col(col("created_at").big_integer().not_null())
                .col(col("expires_at").big_integer().not_null())
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Alias::new("oauth_grants"))
                .col(col("id").string().not_null().primary_key())
                .col(col("client_id").string().not_null())
                .col(col("operator_id").string().not_null())
                .col(col("member_id").string().null())
                .col(col("role").string().null())
                .col(col("key_id").string().not_null())
                .col(col("scope").text().not_null())
                .col(col("resource").text().not_null())
                .col(col("created_at").big_integer().not_null())
                .col(col("revoked_at").big_integer().null())
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Alias::new("oauth_codes"))
                .col(col("digest").string().not_null().primary_key())
                .col(col("grant_id").string().not_null())
                .col(col("client_id").string().not_null())
                .col(col("redirect_uri").text().not_null())
                .col(col("code_challenge").string().not_null())
                .col(col("created_at").big_integer().not_null())
                .col(col("expires_at").big_integer().not_null())
                .col(col("used_at").big_integer().null())
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Alias::new("oauth_tokens"))
                .col(col("digest").string().not_null().primary_key())
                .col(col("grant_id").string().not_null())
                .col(col("kind").string().not_null())
                .col(col("scope").text().not_null())
                .col(col("created_at").big_integer().not_null())
                .col(col("expires_at").big_integer().not_null())
                .col(col("revoked_at").big_integer().null())
                .col(col("replaced_at").big_integer().null())
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "oauth_tokens_grant",
            "oauth_tokens",
            &["grant_id"],
            false,
        ))
        .await?;
        m.create_index(index(
            "oauth_tokens_expiry",
            "oauth_tokens",
            &["expires_at"],
            false,
        ))
        .await?;
        Ok(())
    }
}
