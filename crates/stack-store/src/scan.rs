//! Scan usage counters, detector configurations and security-event reads
//! and resolution (issue 6).

use async_trait::async_trait;
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use stack_app::NewAudit;
use stack_app::passports::SecurityEvent;
use stack_app::scan::{DetectorConfigRecord, ScanStore};
use stack_core::{Result, Timestamp};

use crate::entity::{detector_config, scan_usage, security_event};
use crate::passports::{from_doc, to_doc};
use crate::{Db, append_in, commit, db_err};

fn event_row(e: &SecurityEvent) -> Result<security_event::ActiveModel> {
    Ok(security_event::ActiveModel {
        id: Set(e.id.clone()),
        operator_id: Set(e.operator_id.clone()),
        agent_id: Set(e.agent_id.clone()),
        resolved: Set(e.resolved_at.is_some()),
        created_at: Set(e.created_at.as_millis()),
        doc: Set(to_doc(e)?),
    })
}

#[async_trait]
impl ScanStore for Db {
    async fn scan_usage(&self, operator_id: &str, period: &str) -> Result<u64> {
        let row = scan_usage::Entity::find_by_id((operator_id.to_owned(), period.to_owned()))
            .one(&self.conn)
            .await
            .map_err(db_err)?;
        Ok(row.map_or(0, |r| u64::try_from(r.count).unwrap_or(0)))
    }

    async fn record_scan(
        &self,
        operator_id: &str,
        period: &str,
        limit: u64,
        audit: NewAudit,
        event: Option<(SecurityEvent, NewAudit)>,
    ) -> Result<Option<u64>> {
        let txn = self.write_txn().await?;
        // Make sure the counter row exists, then lock it (as the audit head).
        scan_usage::Entity::insert(scan_usage::ActiveModel {
            operator_id: Set(operator_id.to_owned()),
            period: Set(period.to_owned()),
            count: Set(0),
        })
        .on_conflict(
            OnConflict::columns([scan_usage::Column::OperatorId, scan_usage::Column::Period])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&*txn)
        .await
        .map_err(db_err)?;
        let row = scan_usage::Entity::find_by_id((operator_id.to_owned(), period.to_owned()))
            .lock_exclusive()
            .one(&*txn)
            .await
            .map_err(db_err)?
            .ok_or_else(|| stack_core::Error::internal("scan usage row vanished"))?;
        let used = u64::try_from(row.count).unwrap_or(0);
        if used >= limit {
            // Nothing to keep: dropping the transaction rolls it back.
            return Ok(None);
        }
        let next = used.saturating_add(1);
        scan_usage::ActiveModel {
            operator_id: sea_orm::Unchanged(operator_id.to_owned()),
            period: sea_orm::Unchanged(period.to_owned()),
            count: Set(i64::try_from(next).unwrap_or(i64::MAX)),
        }
        .update(&*txn)
        .await
        .map_err(db_err)?;
        append_in(&txn, operator_id, audit).await?;
        if let Some((e, ev_audit)) = event {
            security_event::Entity::insert(event_row(&e)?)
                .exec_without_returning(&*txn)
                .await
                .map_err(db_err)?;
            append_in(&txn, operator_id, ev_audit).await?;
        }
        commit(txn).await?;
        Ok(Some(next))
    }

    async fn list_detector_configs(&self, operator_id: &str) -> Result<Vec<DetectorConfigRecord>> {
        detector_config::Entity::find()
            .filter(detector_config::Column::OperatorId.eq(operator_id))
            .order_by_asc(detector_config::Column::DetectorKey)
            .all(&self.conn)
            .await
            .map_err(db_err)?
            .iter()
            .map(|m| from_doc("detector config", &m.doc))
            .collect()
    }

    async fn get_detector_config(
        &self,
        operator_id: &str,
        detector_key: &str,
    ) -> Result<Option<DetectorConfigRecord>> {
        detector_config::Entity::find_by_id((operator_id.to_owned(), detector_key.to_owned()))
            .one(&self.conn)
            .await
            .map_err(db_err)?
            .map(|m| from_doc("detector config", &m.doc))
            .transpose()
    }

    async fn put_detector_config(&self, r: &DetectorConfigRecord, audit: NewAudit) -> Result<()> {
        let txn = self.write_txn().await?;
        detector_config::Entity::insert(detector_config::ActiveModel {
            operator_id: Set(r.operator_id.clone()),
            detector_key: Set(r.detector_key.clone()),
            updated_at: Set(r.updated_at.as_millis()),
            doc: Set(to_doc(r)?),
        })
        .on_conflict(
            OnConflict::columns([
                detector_config::Column::OperatorId,
                detector_config::Column::DetectorKey,
            ])
            .update_columns([
                detector_config::Column::UpdatedAt,
                detector_config::Column::Doc,
            ])
            .to_owned(),
        )
        .exec_without_returning(&*txn)
        .await
        .map_err(db_err)?;
        append_in(&txn, &r.operator_id, audit).await?;
        commit(txn).await
    }

    async fn delete_detector_config(
        &self,
        operator_id: &str,
        detector_key: &str,
        audit: NewAudit,
    ) -> Result<bool> {
        let txn = self.write_txn().await?;
        let res = detector_config::Entity::delete_by_id((
            operator_id.to_owned(),
            detector_key.to_owned(),
        ))
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

    async fn security_events_page(
        &self,
        operator_id: &str,
        agent_id: Option<&str>,
        unresolved_only: bool,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<SecurityEvent>, u64)> {
        let mut q = security_event::Entity::find()
            .filter(security_event::Column::OperatorId.eq(operator_id));
        if unresolved_only {
            q = q.filter(security_event::Column::Resolved.eq(false));
        }
        if let Some(a) = agent_id {
            q = q.filter(security_event::Column::AgentId.eq(a));
        }
        let total = q.clone().count(&self.conn).await.map_err(db_err)?;
        let events = q
            .order_by_desc(security_event::Column::CreatedAt)
            .order_by_desc(security_event::Column::Id)
            .offset(offset)
            .limit(limit)
            .all(&self.conn)
            .await
            .map_err(db_err)?
            .iter()
            .map(|m| from_doc("security event", &m.doc))
            .collect::<Result<Vec<_>>>()?;
        Ok((events, total))
    }

    async fn get_security_event(
        &self,
        operator_id: &str,
        event_id: &str,
    ) -> Result<Option<SecurityEvent>> {
        security_event::Entity::find_by_id(event_id.to_owned())
            .filter(security_event::Column::OperatorId.eq(operator_id))
            .one(&self.conn)
            .await
            .map_err(db_err)?
            .map(|m| from_doc("security event", &m.doc))
            .transpose()
    }

    async fn resolve_security_event(
        &self,
        operator_id: &str,
        event_id: &str,
        now: Timestamp,
        audit: NewAudit,
    ) -> Result<Option<(SecurityEvent, bool)>> {
        let txn = self.write_txn().await?;
        let Some(row) = security_event::Entity::find_by_id(event_id.to_owned())
            .filter(security_event::Column::OperatorId.eq(operator_id))
            .lock_exclusive()
            .one(&*txn)
            .await
            .map_err(db_err)?
        else {
            return Ok(None);
        };
        let mut event: SecurityEvent = from_doc("security event", &row.doc)?;
        if event.resolved_at.is_some() {
            return Ok(Some((event, false)));
        }
        event.resolved_at = Some(now.max(event.created_at));
        let mut am = event_row(&event)?;
        am.id = sea_orm::Unchanged(event.id.clone());
        am.update(&*txn).await.map_err(db_err)?;
        append_in(&txn, operator_id, audit).await?;
        commit(txn).await?;
        Ok(Some((event, true)))
    }
}
