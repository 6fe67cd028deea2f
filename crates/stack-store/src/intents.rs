//! Intent approvals (issue 4). A decision or a redemption is one
//! conditional UPDATE (`… WHERE status = <expected> AND expires_at > now`)
//! in the same transaction as its audit entry, so of two concurrent uses of
//! one approval exactly one changes the row.

use async_trait::async_trait;
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect};
use stack_app::NewAudit;
use stack_app::intents::{IntentApproval, IntentStatus, IntentStore};
use stack_core::{Result, Timestamp};

use crate::entity::intent_approval;
use crate::passports::{from_doc, to_doc};
use crate::{Db, append_in, commit, db_err};

#[async_trait]
impl IntentStore for Db {
    async fn insert_intent_approval(&self, a: &IntentApproval, audit: NewAudit) -> Result<()> {
        let txn = self.write_txn().await?;
        intent_approval::Entity::insert(intent_approval::ActiveModel {
            id: Set(a.id.clone()),
            operator_id: Set(a.operator_id.clone()),
            agent_id: Set(a.agent_id.clone()),
            passport_jti: Set(a.passport_jti.clone()),
            status: Set(a.status.as_str().to_owned()),
            created_at: Set(a.created_at.as_millis()),
            expires_at: Set(a.expires_at.as_millis()),
            doc: Set(to_doc(a)?),
        })
        .exec_without_returning(&*txn)
        .await
        .map_err(db_err)?;
        append_in(&txn, &a.operator_id, audit).await?;
        commit(txn).await
    }

    async fn get_intent_approval(
        &self,
        operator_id: &str,
        id: &str,
    ) -> Result<Option<IntentApproval>> {
        intent_approval::Entity::find_by_id(id.to_owned())
            .filter(intent_approval::Column::OperatorId.eq(operator_id))
            .one(&self.conn)
            .await
            .map_err(db_err)?
            .map(|m| from_doc("intent approval", &m.doc))
            .transpose()
    }

    async fn list_pending_intent_approvals(
        &self,
        operator_id: &str,
        agent_id: Option<&str>,
        now: Timestamp,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<IntentApproval>, u64)> {
        let mut q = intent_approval::Entity::find()
            .filter(intent_approval::Column::OperatorId.eq(operator_id))
            .filter(intent_approval::Column::Status.eq(IntentStatus::Pending.as_str()))
            .filter(intent_approval::Column::ExpiresAt.gt(now.as_millis()));
        if let Some(agent) = agent_id {
            q = q.filter(intent_approval::Column::AgentId.eq(agent));
        }
        let total = q.clone().count(&self.conn).await.map_err(db_err)?;
        let items = q
            .order_by_asc(intent_approval::Column::CreatedAt)
            .order_by_asc(intent_approval::Column::Id)
            .offset(offset)
            .limit(limit)
            .all(&self.conn)
            .await
            .map_err(db_err)?
            .iter()
            .map(|m| from_doc("intent approval", &m.doc))
            .collect::<Result<Vec<_>>>()?;
        Ok((items, total))
    }

    async fn transition_intent_approval(
        &self,
        next: &IntentApproval,
        expected: IntentStatus,
        now: Timestamp,
        audit: NewAudit,
    ) -> Result<bool> {
        let txn = self.write_txn().await?;
        let changed = intent_approval::Entity::update_many()
            .col_expr(
                intent_approval::Column::Status,
                Expr::value(next.status.as_str()),
            )
            .col_expr(intent_approval::Column::Doc, Expr::value(to_doc(next)?))
            .filter(intent_approval::Column::Id.eq(next.id.as_str()))
            .filter(intent_approval::Column::OperatorId.eq(next.operator_id.as_str()))
            .filter(intent_approval::Column::Status.eq(expected.as_str()))
            .filter(intent_approval::Column::ExpiresAt.gt(now.as_millis()))
            .exec(&*txn)
            .await
            .map_err(db_err)?
            .rows_affected;
        if changed != 1 {
            // Dropping the transaction rolls it back; nothing was written.
            return Ok(false);
        }
        append_in(&txn, &next.operator_id, audit).await?;
        commit(txn).await?;
        Ok(true)
    }
}
