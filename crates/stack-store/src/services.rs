//! Operator data keys, connections and grants (issue 4), and the upstream
//! OAuth apps and pending authorizations of OAuth connections.

use async_trait::async_trait;
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait, Statement,
};
use stack_app::NewAudit;
use stack_app::services::oauth::{OAuthApp, PendingConnect};
use stack_app::services::{Connection, ConnectionChange, Grant, ServiceStore};
use stack_audit::{AuditEntry, ChainHead};
use stack_core::{Error, Result, Timestamp};

use stack_app::proxy::{ProxyOperation, ProxyReads, ProxyReadsQuery};

use crate::entity::{connection, grant, operator_key, proxy_operation, usage_meter};
use crate::passports::{from_doc, to_doc};
use crate::{Db, append_after, append_in, append_writes, commit, db_err, execute_batch, owned};

#[async_trait]
impl ServiceStore for Db {
    async fn operator_key(&self, operator_id: &str) -> Result<Option<String>> {
        Ok(operator_key::Entity::find_by_id(operator_id.to_owned())
            .one(&self.conn)
            .await
            .map_err(db_err)?
            .map(|m| m.wrapped))
    }

    async fn put_operator_key(&self, operator_id: &str, wrapped: &str) -> Result<String> {
        let txn = self.write_txn().await?;
        operator_key::Entity::insert(operator_key::ActiveModel {
            operator_id: Set(operator_id.to_owned()),
            wrapped: Set(wrapped.to_owned()),
        })
        .on_conflict(
            OnConflict::column(operator_key::Column::OperatorId)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&*txn)
        .await
        .map_err(db_err)?;
        // Whoever won a race, everyone uses the stored key.
        let stored = operator_key::Entity::find_by_id(operator_id.to_owned())
            .one(&*txn)
            .await
            .map_err(db_err)?
            .map(|m| m.wrapped)
            .ok_or_else(|| Error::internal("operator key vanished inside its transaction"))?;
        commit(txn).await?;
        Ok(stored)
    }

    async fn insert_connection(&self, c: &Connection, sealed: &str, audit: NewAudit) -> Result<()> {
        let txn = self.write_txn().await?;
        connection::Entity::insert(connection::ActiveModel {
            id: Set(c.id.clone()),
            operator_id: Set(c.operator_id.clone()),
            service: Set(c.service.clone()),
            status: Set(c.status.clone()),
            created_at: Set(c.created_at.as_millis()),
            sealed: Set(Some(sealed.to_owned())),
            doc: Set(to_doc(c)?),
        })
        .exec_without_returning(&*txn)
        .await
        .map_err(db_err)?;
        append_in(&txn, &c.operator_id, audit).await?;
        commit(txn).await
    }

    async fn list_connections(&self, operator_id: &str) -> Result<Vec<Connection>> {
        connection::Entity::find()
            .filter(connection::Column::OperatorId.eq(operator_id))
            .order_by_asc(connection::Column::CreatedAt)
            .all(&self.conn)
            .await
            .map_err(db_err)?
            .iter()
            .map(|m| from_doc("connection", &m.doc))
            .collect()
    }

    async fn get_connection(
        &self,
        operator_id: &str,
        id: &str,
    ) -> Result<Option<(Connection, Option<String>)>> {
        connection::Entity::find_by_id(id.to_owned())
            .filter(connection::Column::OperatorId.eq(operator_id))
            .one(&self.conn)
            .await
            .map_err(db_err)?
            .map(|m| Ok((from_doc("connection", &m.doc)?, m.sealed)))
            .transpose()
    }

    async fn disconnect(
        &self,
        operator_id: &str,
        id: &str,
        now: Timestamp,
        audit: NewAudit,
    ) -> Result<bool> {
        let txn = self.write_txn().await?;
        let Some(row) = connection::Entity::find_by_id(id.to_owned())
            .filter(connection::Column::OperatorId.eq(operator_id))
            .lock_exclusive()
            .one(&*txn)
            .await
            .map_err(db_err)?
        else {
            return Ok(false);
        };
        let mut c: Connection = from_doc("connection", &row.doc)?;
        c.status = "disconnected".into();
        c.updated_at = now;
        connection::ActiveModel {
            id: sea_orm::Unchanged(c.id.clone()),
            operator_id: Set(c.operator_id.clone()),
            service: Set(c.service.clone()),
            status: Set(c.status.clone()),
            created_at: Set(c.created_at.as_millis()),
            sealed: Set(None),
            doc: Set(to_doc(&c)?),
        }
        .update(&*txn)
        .await
        .map_err(db_err)?;
        let live = grant::Entity::find()
            .filter(grant::Column::ConnectionId.eq(id))
            .filter(grant::Column::RevokedAt.is_null())
            .all(&*txn)
            .await
            .map_err(db_err)?;
        for row in live {
            revoke_grant_row(&txn, row, now).await?;
        }
        append_in(&txn, operator_id, audit).await?;
        commit(txn).await?;
        Ok(true)
    }

    async fn insert_grant(&self, g: &Grant, audit: NewAudit) -> Result<()> {
        let txn = self.write_txn().await?;
        grant::Entity::insert(grant::ActiveModel {
            id: Set(g.id.clone()),
            operator_id: Set(g.operator_id.clone()),
            agent_id: Set(g.agent_id.clone()),
            connection_id: Set(g.connection_id.clone()),
            revoked_at: Set(None),
            created_at: Set(g.created_at.as_millis()),
            doc: Set(to_doc(g)?),
        })
        .exec_without_returning(&*txn)
        .await
        .map_err(db_err)?;
        append_in(&txn, &g.operator_id, audit).await?;
        commit(txn).await
    }

    async fn list_grants(&self, operator_id: &str, agent_id: &str) -> Result<Vec<Grant>> {
        grant::Entity::find()
            .filter(grant::Column::OperatorId.eq(operator_id))
            .filter(grant::Column::AgentId.eq(agent_id))
            .order_by_asc(grant::Column::CreatedAt)
            .limit(1_000)
            .all(&self.conn)
            .await
            .map_err(db_err)?
            .iter()
            .map(|m| from_doc("grant", &m.doc))
            .collect()
    }

    async fn update_connection(
        &self,
        operator_id: &str,
        id: &str,
        change: ConnectionChange,
    ) -> Result<Option<(Connection, bool)>> {
        let txn = self.write_txn().await?;
        let Some(row) = connection::Entity::find_by_id(id.to_owned())
            .filter(connection::Column::OperatorId.eq(operator_id))
            .lock_exclusive()
            .one(&*txn)
            .await
            .map_err(db_err)?
        else {
            return Ok(None);
        };
        let current: Connection = from_doc("connection", &row.doc)?;
        let Some(update) = change(&current)? else {
            return Ok(Some((current, false)));
        };
        let c = update.connection;
        if c.id != current.id || c.operator_id != current.operator_id {
            return Err(Error::internal("a connection update changed its identity"));
        }
        connection::ActiveModel {
            id: sea_orm::Unchanged(c.id.clone()),
            operator_id: Set(c.operator_id.clone()),
            service: Set(c.service.clone()),
            status: Set(c.status.clone()),
            created_at: Set(c.created_at.as_millis()),
            sealed: match update.sealed {
                Some(sealed) => Set(Some(sealed)),
                None => sea_orm::Unchanged(row.sealed.clone()),
            },
            doc: Set(to_doc(&c)?),
        }
        .update(&*txn)
        .await
        .map_err(db_err)?;
        if let Some(audit) = update.audit {
            append_in(&txn, operator_id, audit).await?;
        }
        commit(txn).await?;
        Ok(Some((c, true)))
    }

    async fn put_oauth_app(
        &self,
        app: &OAuthApp,
        sealed_secret: &str,
        audit: NewAudit,
    ) -> Result<()> {
        let txn = self.write_txn().await?;
        oauth_app::Entity::insert(oauth_app::ActiveModel {
            operator_id: Set(app.operator_id.clone()),
            service: Set(app.service.clone()),
            created_at: Set(app.created_at.as_millis()),
            sealed: Set(sealed_secret.to_owned()),
            doc: Set(to_doc(app)?),
        })
        .on_conflict(
            OnConflict::columns([oauth_app::Column::OperatorId, oauth_app::Column::Service])
                .update_columns([oauth_app::Column::Sealed, oauth_app::Column::Doc])
                .to_owned(),
        )
        .exec_without_returning(&*txn)
        .await
        .map_err(db_err)?;
        append_in(&txn, &app.operator_id, audit).await?;
        commit(txn).await
    }

    async fn get_oauth_app(
        &self,
        operator_id: &str,
        service: &str,
    ) -> Result<Option<(OAuthApp, String)>> {
        oauth_app::Entity::find_by_id((operator_id.to_owned(), service.to_owned()))
            .one(&self.conn)
            .await
            .map_err(db_err)?
            .map(|m| Ok((from_doc("oauth app", &m.doc)?, m.sealed)))
            .transpose()
    }

    async fn list_oauth_apps(&self, operator_id: &str) -> Result<Vec<OAuthApp>> {
        oauth_app::Entity::find()
            .filter(oauth_app::Column::OperatorId.eq(operator_id))
            .order_by_asc(oauth_app::Column::Service)
            .all(&self.conn)
            .await
            .map_err(db_err)?
            .iter()
            .map(|m| from_doc("oauth app", &m.doc))
            .collect()
    }

    async fn delete_oauth_app(
        &self,
        operator_id: &str,
        service: &str,
        audit: NewAudit,
    ) -> Result<bool> {
        let txn = self.write_txn().await?;
        let res = oauth_app::Entity::delete_many()
            .filter(oauth_app::Column::OperatorId.eq(operator_id))
            .filter(oauth_app::Column::Service.eq(service))
            .exec(&*txn)
            .await
            .map_err(db_err)?;
        if res.rows_affected == 0 {
            return Ok(false);
        }
        append_in(&txn, operator_id, audit).await?;
        commit(txn).await?;
        Ok(true)
    }

    async fn insert_connect_state(&self, pending: &PendingConnect, audit: NewAudit) -> Result<()> {
        let txn = self.write_txn().await?;
        oauth_state::Entity::delete_many()
            .filter(oauth_state::Column::ExpiresAt.lt(pending.created_at.as_millis()))
            .exec(&*txn)
            .await
            .map_err(db_err)?;
        oauth_state::Entity::insert(oauth_state::ActiveModel {
            digest: Set(pending.digest.clone()),
            operator_id: Set(pending.operator_id.clone()),
            expires_at: Set(pending.expires_at.as_millis()),
            doc: Set(to_doc(pending)?),
        })
        .exec_without_returning(&*txn)
        .await
        .map_err(db_err)?;
        append_in(&txn, &pending.operator_id, audit).await?;
        commit(txn).await
    }

    async fn take_connect_state(&self, digest: &str) -> Result<Option<PendingConnect>> {
        let txn = self.write_txn().await?;
        let Some(row) = oauth_state::Entity::find_by_id(digest.to_owned())
            .lock_exclusive()
            .one(&*txn)
            .await
            .map_err(db_err)?
        else {
            return Ok(None);
        };
        // Whoever deletes the row uses the state; a concurrent callback
        // with the same state deletes nothing and gets nothing.
        let res = oauth_state::Entity::delete_many()
            .filter(oauth_state::Column::Digest.eq(digest))
            .exec(&*txn)
            .await
            .map_err(db_err)?;
        if res.rows_affected != 1 {
            return Ok(None);
        }
        let pending: PendingConnect = from_doc("oauth state", &row.doc)?;
        commit(txn).await?;
        Ok(Some(pending))
    }

    async fn revoke_agent_grants(
        &self,
        operator_id: &str,
        agent_id: &str,
        now: Timestamp,
        audit: NewAudit,
    ) -> Result<u64> {
        let txn = self.write_txn().await?;
        let live = grant::Entity::find()
            .filter(grant::Column::OperatorId.eq(operator_id))
            .filter(grant::Column::AgentId.eq(agent_id))
            .filter(grant::Column::RevokedAt.is_null())
            .all(&*txn)
            .await
            .map_err(db_err)?;
        let n = live.len() as u64;
        for row in live {
            revoke_grant_row(&txn, row, now).await?;
        }
        append_in(&txn, operator_id, audit).await?;
        commit(txn).await?;
        Ok(n)
    }
}

async fn revoke_grant_row(
    txn: &sea_orm::DatabaseTransaction,
    row: grant::Model,
    now: Timestamp,
) -> Result<()> {
    let mut g: Grant = from_doc("grant", &row.doc)?;
    g.revoked_at = Some(now);
    grant::Entity::update_many()
        .col_expr(grant::Column::RevokedAt, Expr::value(now.as_millis()))
        .col_expr(grant::Column::Doc, Expr::value(to_doc(&g)?))
        .filter(grant::Column::Id.eq(row.id.as_str()))
        .exec(txn)
        .await
        .map_err(db_err)?;
    Ok(())
}

#[async_trait]
impl stack_app::proxy::ProxyStore for Db {
    async fn claim_operation(&self, op: &ProxyOperation) -> Result<Option<ProxyOperation>> {
        let txn = self.write_txn().await?;
        let existing =
            proxy_operation::Entity::find_by_id((op.operator_id.clone(), op.request_id.clone()))
                .lock_exclusive()
                .one(&*txn)
                .await
                .map_err(db_err)?;
        if let Some(row) = existing {
            return Ok(Some(from_doc("proxy operation", &row.doc)?));
        }
        proxy_operation::Entity::insert(proxy_operation::ActiveModel {
            operator_id: Set(op.operator_id.clone()),
            request_id: Set(op.request_id.clone()),
            state: Set(op.state.clone()),
            created_at: Set(op.created_at.as_millis()),
            doc: Set(to_doc(op)?),
        })
        .exec_without_returning(&*txn)
        .await
        .map_err(db_err)?;
        commit(txn).await?;
        Ok(None)
    }

    async fn get_operation(
        &self,
        operator_id: &str,
        request_id: &str,
    ) -> Result<Option<ProxyOperation>> {
        proxy_operation::Entity::find_by_id((operator_id.to_owned(), request_id.to_owned()))
            .one(&self.conn)
            .await
            .map_err(db_err)?
            .map(|row| from_doc("proxy operation", &row.doc))
            .transpose()
    }

    async fn record_call(
        &self,
        operator_id: &str,
        audit: NewAudit,
        meter: Option<(&str, &str)>,
        done: Option<&ProxyOperation>,
    ) -> Result<()> {
        self.record(operator_id, audit, meter, done)
            .await
            .map(|_| ())
    }

    async fn proxy_reads(&self, q: ProxyReadsQuery<'_>) -> Result<ProxyReads> {
        // One statement, so one round trip (on SQLite one hand-off to the
        // connection's worker thread) instead of four. `$n` parameters are
        // understood by both backends.
        const SQL: &str = "\
            SELECT 'operator' AS kind, tier AS a, CAST(NULL AS TEXT) AS b \
              FROM operators WHERE id = $1 \
            UNION ALL SELECT 'usage', CAST(count AS TEXT), CAST(NULL AS TEXT) \
              FROM usage_meters WHERE operator_id = $1 AND meter = $4 AND period = $5 \
            UNION ALL SELECT 'connection', doc, sealed \
              FROM connections WHERE id = $3 AND operator_id = $1 \
            UNION ALL SELECT 'grant', doc, CAST(NULL AS TEXT) \
              FROM grants WHERE operator_id = $1 AND agent_id = $2 AND connection_id = $3 \
              AND revoked_at IS NULL";
        let stmt = Statement::from_sql_and_values(
            self.conn.get_database_backend(),
            SQL,
            [
                q.operator_id.into(),
                q.agent_id.into(),
                q.connection_id.into(),
                q.meter.into(),
                q.period.into(),
            ],
        );
        let rows = self.conn.query_all_raw(stmt).await.map_err(db_err)?;
        let mut out = ProxyReads::default();
        for row in rows {
            let kind: String = row.try_get_by_index(0).map_err(db_err)?;
            let a: String = row.try_get_by_index(1).map_err(db_err)?;
            match kind.as_str() {
                "operator" => out.tier = Some(a),
                "usage" => {
                    out.used = a
                        .parse::<i64>()
                        .map_err(|_| Error::internal("a usage meter holds a non-number"))?
                        .max(0)
                        .unsigned_abs();
                }
                "connection" => {
                    let sealed: Option<String> = row.try_get_by_index(2).map_err(db_err)?;
                    out.connection = Some((from_doc("connection", &a)?, sealed));
                }
                "grant" => out.live_grants.push(from_doc("grant", &a)?),
                _ => return Err(Error::internal("unexpected row in the proxy's reads")),
            }
        }
        Ok(out)
    }

    async fn usage(&self, operator_id: &str, meter: &str, period: &str) -> Result<u64> {
        Ok(usage_meter::Entity::find_by_id((
            operator_id.to_owned(),
            meter.to_owned(),
            period.to_owned(),
        ))
        .one(&self.conn)
        .await
        .map_err(db_err)?
        .map_or(0, |m| m.count.max(0).unsigned_abs()))
    }
}

impl Db {
    /// Appends `audit` and, in the same transaction (one commit, one fsync
    /// on SQLite), moves `meter` by one and stores `done`'s outcome: a
    /// proxied call's record, or (with neither) a lone audit entry. On
    /// SQLite the head this process last committed is used (no read before
    /// the writes); if something else moved the head since, the attempt is
    /// rolled back and made again after reading it.
    pub(crate) async fn record(
        &self,
        operator_id: &str,
        audit: NewAudit,
        meter: Option<(&str, &str)>,
        done: Option<&ProxyOperation>,
    ) -> Result<AuditEntry> {
        if self.backend == DatabaseBackend::Sqlite
            && let Some(entry) = self
                .record_after_remembered(operator_id, audit.clone(), meter, done)
                .await?
        {
            return Ok(entry);
        }
        self.record_locked(operator_id, audit, meter, done).await
    }

    /// SQLite: [`Self::record`] after the head this process last wrote,
    /// in one hand-off to the owned writer, the head read on its thread in
    /// the write turn, after the records before it in the same batch (see
    /// [`crate::owned`]). `Ok(None)`: nothing was written, because no head
    /// is remembered or it moved since (an entry written in another
    /// operation's own transaction, or another process on the same file);
    /// the caller then reads it.
    async fn record_after_remembered(
        &self,
        operator_id: &str,
        audit: NewAudit,
        meter: Option<(&str, &str)>,
        done: Option<&ProxyOperation>,
    ) -> Result<Option<AuditEntry>> {
        let Some(owned) = &self.owned else {
            return Ok(None);
        };
        let backend = self.backend;
        let heads = std::sync::Arc::clone(&self.heads);
        let operator = operator_id.to_owned();
        let others = call_writes(backend, operator_id, meter, done)?;
        let remembered = std::sync::Arc::clone(&heads);
        let forget = operator.clone();
        let built = owned
            .run(move || {
                let head = heads.get(&operator)?;
                let (entry, insert, moved) = append_after(backend, &operator, &head, audit, true);
                // The next record of the batch builds on this one.
                heads.put(&operator, head_of(&entry));
                // Stale unless the head move changed its row (or if the
                // entry's `seq` is taken).
                let writes = [owned::Write::plain(insert), owned::Write::guarded(moved)]
                    .into_iter()
                    .chain(others.into_iter().map(owned::Write::plain))
                    .collect();
                let finish = move |committed: bool| {
                    if !committed {
                        heads.forget(&operator);
                    }
                    entry
                };
                Some((writes, finish))
            })
            .await;
        match built {
            Ok(written) => Ok(written),
            Err(owned::BatchError::Stale) => {
                self.stale_heads
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(None)
            }
            Err(owned::BatchError::Failed(e)) => {
                // A job that panicked after moving the head never said so.
                remembered.forget(&forget);
                tracing::error!(error = %e, "database error");
                Err(Error::internal("database error"))
            }
        }
    }

    /// [`Self::record`] after the head read and locked in the transaction.
    async fn record_locked(
        &self,
        operator_id: &str,
        audit: NewAudit,
        meter: Option<(&str, &str)>,
        done: Option<&ProxyOperation>,
    ) -> Result<AuditEntry> {
        let backend = self.backend;
        let txn = self.write_txn().await?;
        let (entry, mut writes) = append_writes(&txn, operator_id, audit).await?;
        writes.extend(call_writes(backend, operator_id, meter, done)?);
        if let Err(e) = execute_batch(&txn, writes).await {
            self.heads.forget(operator_id);
            return Err(e);
        }
        if let Err(e) = commit(txn).await {
            self.heads.forget(operator_id);
            return Err(e);
        }
        if backend == DatabaseBackend::Sqlite {
            self.heads.put(operator_id, head_of(&entry));
        }
        Ok(entry)
    }
}

fn head_of(entry: &AuditEntry) -> ChainHead {
    ChainHead {
        seq: entry.seq,
        hash: entry.entry_hash.clone(),
        timestamp: entry.timestamp,
    }
}

/// A recorded call's writes besides its audit entry: the meter moves by
/// one, and a claimed at-most-once operation gets its outcome.
fn call_writes(
    backend: DatabaseBackend,
    operator_id: &str,
    meter: Option<(&str, &str)>,
    done: Option<&ProxyOperation>,
) -> Result<Vec<Statement>> {
    let mut writes = Vec::with_capacity(2);
    if let Some((meter, period)) = meter {
        writes.push(
            usage_meter::Entity::insert(usage_meter::ActiveModel {
                operator_id: Set(operator_id.to_owned()),
                meter: Set(meter.to_owned()),
                period: Set(period.to_owned()),
                count: Set(1),
            })
            .on_conflict(
                OnConflict::columns([
                    usage_meter::Column::OperatorId,
                    usage_meter::Column::Meter,
                    usage_meter::Column::Period,
                ])
                .value(
                    usage_meter::Column::Count,
                    sea_orm::sea_query::ExprTrait::add(
                        Expr::col((usage_meter::Entity, usage_meter::Column::Count)),
                        1,
                    ),
                )
                .to_owned(),
            )
            .build(backend),
        );
    }
    if let Some(op) = done {
        writes.push(
            proxy_operation::Entity::update_many()
                .col_expr(
                    proxy_operation::Column::State,
                    Expr::value(op.state.clone()),
                )
                .col_expr(proxy_operation::Column::Doc, Expr::value(to_doc(op)?))
                .filter(proxy_operation::Column::OperatorId.eq(op.operator_id.as_str()))
                .filter(proxy_operation::Column::RequestId.eq(op.request_id.as_str()))
                .build(backend),
        );
    }
    Ok(writes)
}

/// `service_oauth_apps`: an operator's OAuth client per catalog service.
mod oauth_app {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "service_oauth_apps")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub operator_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub service: String,
        pub created_at: i64,
        /// The client secret, sealed (base64url).
        pub sealed: String,
        pub doc: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `service_oauth_states`: pending authorizations by state digest.
mod oauth_state {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "service_oauth_states")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub digest: String,
        pub operator_id: String,
        pub expires_at: i64,
        pub doc: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
