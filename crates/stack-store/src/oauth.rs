//! OAuth clients, authorization requests, grants, codes and tokens (issue 5).
//!
//! Only digests of secrets reach these tables. The single-use rules (a code
//! is redeemed once, a refresh token rotated once, a form accepted once) are
//! conditional updates inside a write transaction, so two concurrent
//! attempts cannot both succeed: the loser sees zero affected rows.

use async_trait::async_trait;
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter};
use stack_app::NewAudit;
use stack_app::oauth::{
    AuthCode, AuthRequest, GrantSubject, OAuthClient, OAuthGrant, OAuthStore, OAuthToken, TokenKind,
};
use stack_core::{Error, Result, Role, Timestamp};

use crate::entity::{api_key, oauth_client, oauth_code, oauth_grant, oauth_request, oauth_token};
use crate::{Db, append_in, commit, db_err};

/// Used codes are kept this long after expiry so a late replay is still
/// recognised (and revokes its tokens).
const CODE_RETENTION_MS: i64 = 3600 * 1000;
/// Expired tokens are kept a day for diagnostics, then deleted.
const TOKEN_RETENTION_MS: i64 = 24 * 3600 * 1000;

fn bad(column: &str) -> Error {
    Error::internal(format!("stored value in column {column} is not valid"))
}

fn role_to_str(r: Role) -> String {
    match r {
        Role::Readonly => "readonly",
        Role::Standard => "standard",
        Role::Admin => "admin",
    }
    .to_owned()
}

fn role_from(v: Option<&str>) -> Result<Option<Role>> {
    v.map(|r| Role::parse(r).ok_or_else(|| bad("role")))
        .transpose()
}

fn json_list(column: &str, v: &str) -> Result<Vec<String>> {
    serde_json::from_str(v).map_err(|_| bad(column))
}

fn list_json(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".to_owned())
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn client_from(m: oauth_client::Model) -> Result<OAuthClient> {
    Ok(OAuthClient {
        redirect_uris: json_list("redirect_uris", &m.redirect_uris)?,
        grant_types: json_list("grant_types", &m.grant_types)?,
        client_id: m.client_id,
        client_name: m.client_name,
        software_id: m.software_id,
        software_version: m.software_version,
        registered_from: m.registered_from,
        created_at: ts(m.created_at),
        last_used_at: m.last_used_at.map(ts),
    })
}

fn request_from(m: oauth_request::Model) -> Result<AuthRequest> {
    let subject = match (m.operator_id, m.key_id) {
        (Some(operator_id), Some(key_id)) => Some(GrantSubject {
            operator_id,
            member_id: m.member_id,
            role: role_from(m.role.as_deref())?,
            key_id,
        }),
        _ => None,
    };
    Ok(AuthRequest {
        id: m.id,
        client_id: m.client_id,
        redirect_uri: m.redirect_uri,
        scope: m.scope,
        state: m.state,
        code_challenge: m.code_challenge,
        resource: m.resource,
        browser_digest: m.browser_digest,
        csrf_digest: m.csrf_digest,
        subject,
        created_at: ts(m.created_at),
        expires_at: ts(m.expires_at),
    })
}

fn request_to(r: &AuthRequest) -> oauth_request::ActiveModel {
    let s = r.subject.as_ref();
    oauth_request::ActiveModel {
        id: Set(r.id.clone()),
        client_id: Set(r.client_id.clone()),
        redirect_uri: Set(r.redirect_uri.clone()),
        scope: Set(r.scope.clone()),
        state: Set(r.state.clone()),
        code_challenge: Set(r.code_challenge.clone()),
        resource: Set(r.resource.clone()),
        browser_digest: Set(r.browser_digest.clone()),
        csrf_digest: Set(r.csrf_digest.clone()),
        operator_id: Set(s.map(|s| s.operator_id.clone())),
        member_id: Set(s.and_then(|s| s.member_id.clone())),
        role: Set(s.and_then(|s| s.role).map(role_to_str)),
        key_id: Set(s.map(|s| s.key_id.clone())),
        created_at: Set(r.created_at.as_millis()),
        expires_at: Set(r.expires_at.as_millis()),
    }
}

fn grant_from(m: oauth_grant::Model) -> Result<OAuthGrant> {
    Ok(OAuthGrant {
        subject: GrantSubject {
            role: role_from(m.role.as_deref())?,
            operator_id: m.operator_id,
            member_id: m.member_id,
            key_id: m.key_id,
        },
        id: m.id,
        client_id: m.client_id,
        scope: m.scope,
        resource: m.resource,
        created_at: ts(m.created_at),
        revoked_at: m.revoked_at.map(ts),
    })
}

fn token_from(m: oauth_token::Model) -> Result<OAuthToken> {
    Ok(OAuthToken {
        kind: TokenKind::parse(&m.kind).ok_or_else(|| bad("kind"))?,
        digest: m.digest,
        grant_id: m.grant_id,
        scope: m.scope,
        created_at: ts(m.created_at),
        expires_at: ts(m.expires_at),
        revoked_at: m.revoked_at.map(ts),
        replaced_at: m.replaced_at.map(ts),
    })
}

fn token_to(t: &OAuthToken) -> oauth_token::ActiveModel {
    oauth_token::ActiveModel {
        digest: Set(t.digest.clone()),
        grant_id: Set(t.grant_id.clone()),
        kind: Set(t.kind.as_str().to_owned()),
        scope: Set(t.scope.clone()),
        created_at: Set(t.created_at.as_millis()),
        expires_at: Set(t.expires_at.as_millis()),
        revoked_at: Set(t.revoked_at.map(Timestamp::as_millis)),
        replaced_at: Set(t.replaced_at.map(Timestamp::as_millis)),
    }
}

async fn insert_tokens<C: ConnectionTrait>(conn: &C, tokens: &[OAuthToken]) -> Result<()> {
    if tokens.is_empty() {
        return Ok(());
    }
    oauth_token::Entity::insert_many(tokens.iter().map(token_to))
        .exec_without_returning(conn)
        .await
        .map_err(db_err)?;
    Ok(())
}

#[async_trait]
impl OAuthStore for Db {
    async fn insert_oauth_client(&self, c: &OAuthClient) -> Result<()> {
        oauth_client::Entity::insert(oauth_client::ActiveModel {
            client_id: Set(c.client_id.clone()),
            client_name: Set(c.client_name.clone()),
            redirect_uris: Set(list_json(&c.redirect_uris)),
            grant_types: Set(list_json(&c.grant_types)),
            software_id: Set(c.software_id.clone()),
            software_version: Set(c.software_version.clone()),
            registered_from: Set(c.registered_from.clone()),
            created_at: Set(c.created_at.as_millis()),
            last_used_at: Set(c.last_used_at.map(Timestamp::as_millis)),
        })
        .exec_without_returning(self.write_conn().await.get())
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn get_oauth_client(&self, client_id: &str) -> Result<Option<OAuthClient>> {
        oauth_client::Entity::find_by_id(client_id.to_owned())
            .one(&self.conn)
            .await
            .map_err(db_err)?
            .map(client_from)
            .transpose()
    }

    async fn count_oauth_registrations(&self, source: &str, since: Timestamp) -> Result<u64> {
        oauth_client::Entity::find()
            .filter(oauth_client::Column::RegisteredFrom.eq(source))
            .filter(oauth_client::Column::CreatedAt.gte(since.as_millis()))
            .count(&self.conn)
            .await
            .map_err(db_err)
    }

    async fn purge_unused_oauth_clients(&self, before: Timestamp) -> Result<u64> {
        let res = oauth_client::Entity::delete_many()
            .filter(oauth_client::Column::LastUsedAt.is_null())
            .filter(oauth_client::Column::CreatedAt.lt(before.as_millis()))
            .exec(self.write_conn().await.get())
            .await
            .map_err(db_err)?;
        Ok(res.rows_affected)
    }

    async fn mark_oauth_client_used(&self, client_id: &str, now: Timestamp) -> Result<()> {
        oauth_client::Entity::update_many()
            .col_expr(
                oauth_client::Column::LastUsedAt,
                Expr::value(now.as_millis()),
            )
            .filter(oauth_client::Column::ClientId.eq(client_id))
            .exec(self.write_conn().await.get())
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn insert_auth_request(&self, r: &AuthRequest) -> Result<()> {
        oauth_request::Entity::insert(request_to(r))
            .exec_without_returning(self.write_conn().await.get())
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn get_auth_request(&self, id: &str) -> Result<Option<AuthRequest>> {
        oauth_request::Entity::find_by_id(id.to_owned())
            .one(&self.conn)
            .await
            .map_err(db_err)?
            .map(request_from)
            .transpose()
    }

    async fn advance_auth_request(&self, r: &AuthRequest, expected_csrf: &str) -> Result<bool> {
        let s = r.subject.as_ref();
        let res = oauth_request::Entity::update_many()
            .col_expr(
                oauth_request::Column::CsrfDigest,
                Expr::value(r.csrf_digest.clone()),
            )
            .col_expr(
                oauth_request::Column::OperatorId,
                Expr::value(s.map(|s| s.operator_id.clone())),
            )
            .col_expr(
                oauth_request::Column::MemberId,
                Expr::value(s.and_then(|s| s.member_id.clone())),
            )
            .col_expr(
                oauth_request::Column::Role,
                Expr::value(s.and_then(|s| s.role).map(role_to_str)),
            )
            .col_expr(
                oauth_request::Column::KeyId,
                Expr::value(s.map(|s| s.key_id.clone())),
            )
            .filter(oauth_request::Column::Id.eq(r.id.as_str()))
            .filter(oauth_request::Column::CsrfDigest.eq(expected_csrf))
            .exec(self.write_conn().await.get())
            .await
            .map_err(db_err)?;
        Ok(res.rows_affected == 1)
    }

    async fn complete_auth_request(
        &self,
        request_id: &str,
        expected_csrf: &str,
        grant: &OAuthGrant,
        code: &AuthCode,
        audit: NewAudit,
    ) -> Result<bool> {
        let txn = self.write_txn().await?;
        let res = oauth_request::Entity::delete_many()
            .filter(oauth_request::Column::Id.eq(request_id))
            .filter(oauth_request::Column::CsrfDigest.eq(expected_csrf))
            .exec(&*txn)
            .await
            .map_err(db_err)?;
        if res.rows_affected != 1 {
            return Ok(false);
        }
        let s = &grant.subject;
        oauth_grant::Entity::insert(oauth_grant::ActiveModel {
            id: Set(grant.id.clone()),
            client_id: Set(grant.client_id.clone()),
            operator_id: Set(s.operator_id.clone()),
            member_id: Set(s.member_id.clone()),
            role: Set(s.role.map(role_to_str)),
            key_id: Set(s.key_id.clone()),
            scope: Set(grant.scope.clone()),
            resource: Set(grant.resource.clone()),
            created_at: Set(grant.created_at.as_millis()),
            revoked_at: Set(grant.revoked_at.map(Timestamp::as_millis)),
        })
        .exec_without_returning(&*txn)
        .await
        .map_err(db_err)?;
        oauth_code::Entity::insert(oauth_code::ActiveModel {
            digest: Set(code.digest.clone()),
            grant_id: Set(code.grant_id.clone()),
            client_id: Set(code.client_id.clone()),
            redirect_uri: Set(code.redirect_uri.clone()),
            code_challenge: Set(code.code_challenge.clone()),
            created_at: Set(code.created_at.as_millis()),
            expires_at: Set(code.expires_at.as_millis()),
            used_at: Set(code.used_at.map(Timestamp::as_millis)),
        })
        .exec_without_returning(&*txn)
        .await
        .map_err(db_err)?;
        append_in(&txn, &s.operator_id, audit).await?;
        commit(txn).await?;
        Ok(true)
    }

    async fn delete_auth_request(&self, id: &str) -> Result<()> {
        oauth_request::Entity::delete_by_id(id.to_owned())
            .exec(self.write_conn().await.get())
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn purge_expired_oauth(&self, before: Timestamp) -> Result<()> {
        let now = before.as_millis();
        oauth_request::Entity::delete_many()
            .filter(oauth_request::Column::ExpiresAt.lt(now))
            .exec(self.write_conn().await.get())
            .await
            .map_err(db_err)?;
        oauth_code::Entity::delete_many()
            .filter(oauth_code::Column::ExpiresAt.lt(now - CODE_RETENTION_MS))
            .exec(self.write_conn().await.get())
            .await
            .map_err(db_err)?;
        oauth_token::Entity::delete_many()
            .filter(oauth_token::Column::ExpiresAt.lt(now - TOKEN_RETENTION_MS))
            .exec(self.write_conn().await.get())
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn get_auth_code(&self, digest: &str) -> Result<Option<AuthCode>> {
        Ok(oauth_code::Entity::find_by_id(digest.to_owned())
            .one(&self.conn)
            .await
            .map_err(db_err)?
            .map(|m| AuthCode {
                digest: m.digest,
                grant_id: m.grant_id,
                client_id: m.client_id,
                redirect_uri: m.redirect_uri,
                code_challenge: m.code_challenge,
                created_at: ts(m.created_at),
                expires_at: ts(m.expires_at),
                used_at: m.used_at.map(ts),
            }))
    }

    async fn redeem_auth_code(
        &self,
        digest: &str,
        now: Timestamp,
        tokens: &[OAuthToken],
    ) -> Result<bool> {
        let txn = self.write_txn().await?;
        let res = oauth_code::Entity::update_many()
            .col_expr(oauth_code::Column::UsedAt, Expr::value(now.as_millis()))
            .filter(oauth_code::Column::Digest.eq(digest))
            .filter(oauth_code::Column::UsedAt.is_null())
            .exec(&*txn)
            .await
            .map_err(db_err)?;
        if res.rows_affected != 1 {
            return Ok(false);
        }
        insert_tokens(&*txn, tokens).await?;
        commit(txn).await?;
        Ok(true)
    }

    // Primary-key reads on the bearer path use `.all()`, not `.one()`:
    // `.one()` binds `LIMIT ?`, which makes SQLite re-prepare the statement
    // on every execution (see `recorded_head` in lib.rs).
    async fn get_oauth_grant(&self, grant_id: &str) -> Result<Option<OAuthGrant>> {
        oauth_grant::Entity::find_by_id(grant_id.to_owned())
            .all(&self.conn)
            .await
            .map_err(db_err)?
            .into_iter()
            .next()
            .map(grant_from)
            .transpose()
    }

    async fn get_oauth_token(&self, digest: &str) -> Result<Option<OAuthToken>> {
        oauth_token::Entity::find_by_id(digest.to_owned())
            .all(&self.conn)
            .await
            .map_err(db_err)?
            .into_iter()
            .next()
            .map(token_from)
            .transpose()
    }

    async fn rotate_refresh_token(
        &self,
        digest: &str,
        now: Timestamp,
        tokens: &[OAuthToken],
    ) -> Result<bool> {
        let txn = self.write_txn().await?;
        let res = oauth_token::Entity::update_many()
            .col_expr(
                oauth_token::Column::ReplacedAt,
                Expr::value(now.as_millis()),
            )
            .filter(oauth_token::Column::Digest.eq(digest))
            .filter(oauth_token::Column::Kind.eq(TokenKind::Refresh.as_str()))
            .filter(oauth_token::Column::ReplacedAt.is_null())
            .filter(oauth_token::Column::RevokedAt.is_null())
            .exec(&*txn)
            .await
            .map_err(db_err)?;
        if res.rows_affected != 1 {
            return Ok(false);
        }
        insert_tokens(&*txn, tokens).await?;
        commit(txn).await?;
        Ok(true)
    }

    async fn revoke_oauth_token(&self, digest: &str, now: Timestamp) -> Result<()> {
        oauth_token::Entity::update_many()
            .col_expr(oauth_token::Column::RevokedAt, Expr::value(now.as_millis()))
            .filter(oauth_token::Column::Digest.eq(digest))
            .filter(oauth_token::Column::RevokedAt.is_null())
            .exec(self.write_conn().await.get())
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn revoke_oauth_grant(
        &self,
        operator_id: &str,
        grant_id: &str,
        now: Timestamp,
        audit: NewAudit,
    ) -> Result<bool> {
        let txn = self.write_txn().await?;
        let res = oauth_grant::Entity::update_many()
            .col_expr(oauth_grant::Column::RevokedAt, Expr::value(now.as_millis()))
            .filter(oauth_grant::Column::Id.eq(grant_id))
            .filter(oauth_grant::Column::OperatorId.eq(operator_id))
            .filter(oauth_grant::Column::RevokedAt.is_null())
            .exec(&*txn)
            .await
            .map_err(db_err)?;
        if res.rows_affected != 1 {
            return Ok(false);
        }
        oauth_token::Entity::update_many()
            .col_expr(oauth_token::Column::RevokedAt, Expr::value(now.as_millis()))
            .filter(oauth_token::Column::GrantId.eq(grant_id))
            .filter(oauth_token::Column::RevokedAt.is_null())
            .exec(&*txn)
            .await
            .map_err(db_err)?;
        append_in(&txn, operator_id, audit).await?;
        commit(txn).await?;
        Ok(true)
    }

    async fn api_key_is_live(&self, key_id: &str) -> Result<bool> {
        let n = api_key::Entity::find_by_id(key_id.to_owned())
            .filter(api_key::Column::RevokedAt.is_null())
            .count(&self.conn)
            .await
            .map_err(db_err)?;
        Ok(n == 1)
    }
}
