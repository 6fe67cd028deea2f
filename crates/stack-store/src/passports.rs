//! Signing keys, missions, passports, checkpoints, checkouts, reviews and
//! security events (issue 3).

use std::collections::{HashSet, VecDeque};

use async_trait::async_trait;
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, DatabaseTransaction, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use stack_app::NewAudit;
use stack_app::agents::Agent;
use stack_app::passports::{
    AuditFor, Checkout, Checkpoint, Mission, MissionStatus, PassportRecord, PassportStore, Review,
    RevokeSelector, Revoked, SecurityEvent, SigningKeyRecord,
};
use stack_core::{Error, Result, Timestamp};

use crate::entity::{
    agent, checkout, checkpoint, mission, passport, review, security_event, signing_key,
};
use crate::{Db, append_in, commit, convert, db_err, is_unique_violation};

pub(crate) fn to_doc<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|_| Error::internal("record did not serialize"))
}

pub(crate) fn from_doc<T: DeserializeOwned>(table: &str, doc: &str) -> Result<T> {
    serde_json::from_str(doc)
        .map_err(|e| Error::internal(format!("stored {table} record does not parse: {e}")))
}

fn passport_row(r: &PassportRecord) -> Result<passport::ActiveModel> {
    Ok(passport::ActiveModel {
        jti: Set(r.jti.clone()),
        operator_id: Set(r.operator_id.clone()),
        agent_id: Set(r.agent_id.clone()),
        session_id: Set(r.session_id.clone()),
        parent_jti: Set(r.parent_jti.clone()),
        refreshed_from: Set(r.refreshed_from.clone()),
        mission_id: Set(r.mission_id.clone()),
        issued_at: Set(r.issued_at),
        expires_at: Set(r.expires_at),
        revoked_at: Set(r.revoked_at),
        doc: Set(to_doc(r)?),
    })
}

async fn save_passport(txn: &DatabaseTransaction, r: &PassportRecord) -> Result<()> {
    let mut am = passport_row(r)?;
    am.jti = sea_orm::Unchanged(r.jti.clone());
    am.update(txn).await.map_err(db_err)?;
    Ok(())
}

fn mission_row(m: &Mission) -> Result<mission::ActiveModel> {
    Ok(mission::ActiveModel {
        id: Set(m.id.clone()),
        operator_id: Set(m.operator_id.clone()),
        idempotency_key: Set(m.idempotency_key.clone()),
        created_at: Set(m.created_at.as_millis()),
        doc: Set(to_doc(m)?),
    })
}

/// Revokes what `selector` names, breadth-first through delegations
/// (`parent_jti`) and refresh lineage (`refreshed_from`, both ways), inside
/// `txn`. Only live passports are marked; traversal passes through dead ones
/// so a live descendant is never missed.
async fn revoke_in(
    txn: &DatabaseTransaction,
    operator_id: &str,
    selector: &RevokeSelector,
    reason: &str,
    now_secs: i64,
    per_passport: &mut AuditFor,
) -> Result<Vec<Revoked>> {
    let base = passport::Entity::find().filter(passport::Column::OperatorId.eq(operator_id));
    let roots: Vec<passport::Model> = match selector {
        RevokeSelector::Passport(jti) => {
            base.filter(passport::Column::Jti.eq(jti.as_str()))
                .all(txn)
                .await
        }
        RevokeSelector::Agent(a) => {
            base.filter(passport::Column::AgentId.eq(a.as_str()))
                .all(txn)
                .await
        }
        RevokeSelector::Session(s) => {
            base.filter(passport::Column::SessionId.eq(s.as_str()))
                .all(txn)
                .await
        }
        RevokeSelector::Mission(m) => {
            base.filter(passport::Column::MissionId.eq(m.as_str()))
                .all(txn)
                .await
        }
        RevokeSelector::All => {
            base.filter(passport::Column::RevokedAt.is_null())
                .filter(passport::Column::ExpiresAt.gt(now_secs))
                .all(txn)
                .await
        }
    }
    .map_err(db_err)?;
    let single_root = match selector {
        RevokeSelector::Passport(j) => Some(j.clone()),
        _ => None,
    };
    let mut seen: HashSet<String> = HashSet::new();
    let mut queue: VecDeque<(passport::Model, Option<String>)> = VecDeque::new();
    for r in roots {
        if seen.insert(r.jti.clone()) {
            queue.push_back((r, None));
        }
    }
    let mut revoked = Vec::new();
    while let Some((row, via)) = queue.pop_front() {
        let mut rec: PassportRecord = from_doc("passport", &row.doc)?;
        let root = via.clone().unwrap_or_else(|| rec.jti.clone());
        // Neighbours: delegated children, refreshed successors, the predecessor.
        let neighbours = passport::Entity::find()
            .filter(passport::Column::OperatorId.eq(operator_id))
            .filter(
                Condition::any()
                    .add(passport::Column::ParentJti.eq(rec.jti.as_str()))
                    .add(passport::Column::RefreshedFrom.eq(rec.jti.as_str()))
                    .add(passport::Column::Jti.eq(rec.refreshed_from.clone().unwrap_or_default())),
            )
            .all(txn)
            .await
            .map_err(db_err)?;
        for n in neighbours {
            if seen.insert(n.jti.clone()) {
                queue.push_back((n, Some(root.clone())));
            }
        }
        if rec.revoked_at.is_some() || rec.expires_at <= now_secs {
            continue;
        }
        rec.revoked_at = Some(now_secs);
        rec.revoke_reason = Some(reason.to_owned());
        save_passport(txn, &rec).await?;
        let item = Revoked {
            jti: rec.jti.clone(),
            agent_id: rec.agent_id.clone(),
            expires_at: rec.expires_at,
            cascaded_from: via,
        };
        let is_the_named_passport = single_root.as_deref() == Some(item.jti.as_str());
        if !is_the_named_passport {
            let audit = per_passport(item.clone())?;
            append_in(txn, operator_id, audit).await?;
        }
        revoked.push(item);
    }
    Ok(revoked)
}

#[async_trait]
#[allow(clippy::too_many_arguments)]
impl PassportStore for Db {
    async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        signing_key::Entity::find()
            .order_by_asc(signing_key::Column::CreatedAt)
            .all(&self.conn)
            .await
            .map_err(db_err)?
            .iter()
            .map(|m| from_doc("signing key", &m.doc))
            .collect()
    }

    async fn rotate_signing_key(
        &self,
        key: &SigningKeyRecord,
        retired_at: i64,
        verify_until: i64,
    ) -> Result<()> {
        let txn = self.write_txn().await?;
        let active = signing_key::Entity::find()
            .filter(signing_key::Column::Status.eq("active"))
            .lock_exclusive()
            .all(&*txn)
            .await
            .map_err(db_err)?;
        for row in active {
            let mut rec: SigningKeyRecord = from_doc("signing key", &row.doc)?;
            rec.status = "retired".into();
            rec.retired_at = Some(retired_at);
            rec.verify_until = Some(verify_until);
            signing_key::ActiveModel {
                kid: sea_orm::Unchanged(rec.kid.clone()),
                status: Set(rec.status.clone()),
                created_at: Set(rec.created_at),
                doc: Set(to_doc(&rec)?),
            }
            .update(&*txn)
            .await
            .map_err(db_err)?;
        }
        signing_key::Entity::insert(signing_key::ActiveModel {
            kid: Set(key.kid.clone()),
            status: Set(key.status.clone()),
            created_at: Set(key.created_at),
            doc: Set(to_doc(key)?),
        })
        .exec_without_returning(&*txn)
        .await
        .map_err(db_err)?;
        commit(txn).await
    }

    async fn insert_mission(&self, m: &Mission, audit: NewAudit) -> Result<()> {
        let txn = self.write_txn().await?;
        match mission::Entity::insert(mission_row(m)?)
            .exec_without_returning(&*txn)
            .await
        {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(Error::conflict(
                    "a mission with this idempotency key exists",
                ));
            }
            Err(e) => return Err(db_err(e)),
        }
        append_in(&txn, &m.operator_id, audit).await?;
        commit(txn).await
    }

    async fn get_mission(&self, operator_id: &str, mission_id: &str) -> Result<Option<Mission>> {
        mission::Entity::find_by_id(mission_id.to_owned())
            .filter(mission::Column::OperatorId.eq(operator_id))
            .one(&self.conn)
            .await
            .map_err(db_err)?
            .map(|m| from_doc("mission", &m.doc))
            .transpose()
    }

    async fn find_mission_by_key(&self, operator_id: &str, key: &str) -> Result<Option<Mission>> {
        mission::Entity::find()
            .filter(mission::Column::OperatorId.eq(operator_id))
            .filter(mission::Column::IdempotencyKey.eq(key))
            .one(&self.conn)
            .await
            .map_err(db_err)?
            .map(|m| from_doc("mission", &m.doc))
            .transpose()
    }

    async fn end_mission(
        &self,
        operator_id: &str,
        mission_id: &str,
        status: MissionStatus,
        reason: Option<String>,
        notes: Option<String>,
        now: Timestamp,
        audit: NewAudit,
        mut revoke_audits: AuditFor,
    ) -> Result<Option<(Mission, Vec<Revoked>)>> {
        let txn = self.write_txn().await?;
        let Some(row) = mission::Entity::find_by_id(mission_id.to_owned())
            .filter(mission::Column::OperatorId.eq(operator_id))
            .lock_exclusive()
            .one(&*txn)
            .await
            .map_err(db_err)?
        else {
            return Ok(None);
        };
        let mut m: Mission = from_doc("mission", &row.doc)?;
        if m.status_at(now) != MissionStatus::Active {
            return Ok(Some((m, Vec::new())));
        }
        m.status = status;
        m.ended_at = Some(now);
        m.end_reason = reason.clone();
        m.notes = notes;
        let mut am = mission_row(&m)?;
        am.id = sea_orm::Unchanged(m.id.clone());
        am.update(&*txn).await.map_err(db_err)?;
        append_in(&txn, operator_id, audit).await?;
        let why = match status {
            MissionStatus::Completed => "mission completed",
            _ => "mission revoked",
        };
        let revoked = revoke_in(
            &txn,
            operator_id,
            &RevokeSelector::Mission(mission_id.to_owned()),
            why,
            now.as_secs(),
            &mut revoke_audits,
        )
        .await?;
        commit(txn).await?;
        Ok(Some((m, revoked)))
    }

    async fn insert_passport(&self, r: &PassportRecord, audit: NewAudit) -> Result<()> {
        let txn = self.write_txn().await?;
        passport::Entity::insert(passport_row(r)?)
            .exec_without_returning(&*txn)
            .await
            .map_err(db_err)?;
        append_in(&txn, &r.operator_id, audit).await?;
        commit(txn).await
    }

    async fn get_passport(&self, jti: &str) -> Result<Option<PassportRecord>> {
        passport::Entity::find_by_id(jti.to_owned())
            .one(&self.conn)
            .await
            .map_err(db_err)?
            .map(|m| from_doc("passport", &m.doc))
            .transpose()
    }

    async fn list_passports(
        &self,
        operator_id: &str,
        agent_id: Option<&str>,
        session_id: Option<&str>,
        active_at: i64,
    ) -> Result<Vec<PassportRecord>> {
        let mut q = passport::Entity::find()
            .filter(passport::Column::OperatorId.eq(operator_id))
            .filter(passport::Column::RevokedAt.is_null())
            .filter(passport::Column::ExpiresAt.gt(active_at));
        if let Some(a) = agent_id {
            q = q.filter(passport::Column::AgentId.eq(a));
        }
        if let Some(s) = session_id {
            q = q.filter(passport::Column::SessionId.eq(s));
        }
        q.order_by_desc(passport::Column::IssuedAt)
            .limit(1_000)
            .all(&self.conn)
            .await
            .map_err(db_err)?
            .iter()
            .map(|m| from_doc("passport", &m.doc))
            .collect()
    }

    async fn revoke_passports(
        &self,
        operator_id: &str,
        selector: &RevokeSelector,
        reason: &str,
        now_secs: i64,
        audit: NewAudit,
        mut cascade_audit: AuditFor,
    ) -> Result<Vec<Revoked>> {
        let txn = self.write_txn().await?;
        append_in(&txn, operator_id, audit).await?;
        let revoked = revoke_in(
            &txn,
            operator_id,
            selector,
            reason,
            now_secs,
            &mut cascade_audit,
        )
        .await?;
        commit(txn).await?;
        Ok(revoked)
    }

    async fn live_revocations(&self, now_secs: i64) -> Result<Vec<(String, i64)>> {
        Ok(passport::Entity::find()
            .filter(passport::Column::RevokedAt.is_not_null())
            .filter(passport::Column::ExpiresAt.gt(now_secs))
            .all(&self.conn)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(|m| (m.jti, m.expires_at))
            .collect())
    }

    async fn record_checkpoint(
        &self,
        c: &Checkpoint,
        p: &PassportRecord,
        audit: NewAudit,
    ) -> Result<()> {
        let txn = self.write_txn().await?;
        save_passport(&txn, p).await?;
        checkpoint::Entity::insert(checkpoint::ActiveModel {
            id: Set(c.id.clone()),
            operator_id: Set(c.operator_id.clone()),
            passport_jti: Set(c.passport_jti.clone()),
            created_at: Set(c.created_at.as_millis()),
            doc: Set(to_doc(c)?),
        })
        .exec_without_returning(&*txn)
        .await
        .map_err(db_err)?;
        append_in(&txn, &c.operator_id, audit).await?;
        commit(txn).await
    }

    async fn list_checkpoints(&self, operator_id: &str, jti: &str) -> Result<Vec<Checkpoint>> {
        checkpoint::Entity::find()
            .filter(checkpoint::Column::OperatorId.eq(operator_id))
            .filter(checkpoint::Column::PassportJti.eq(jti))
            .order_by_asc(checkpoint::Column::CreatedAt)
            .order_by_asc(checkpoint::Column::Id)
            .all(&self.conn)
            .await
            .map_err(db_err)?
            .iter()
            .map(|m| from_doc("checkpoint", &m.doc))
            .collect()
    }

    async fn record_checkout(&self, c: &Checkout, audit: NewAudit) -> Result<()> {
        let txn = self.write_txn().await?;
        let inserted = checkout::Entity::insert(checkout::ActiveModel {
            id: Set(c.id.clone()),
            operator_id: Set(c.operator_id.clone()),
            passport_jti: Set(c.passport_jti.clone()),
            review_status: Set(c.review_status.clone()),
            decided: Set(false),
            created_at: Set(c.created_at.as_millis()),
            doc: Set(to_doc(c)?),
        })
        .exec_without_returning(&*txn)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(Error::conflict("passport has already checked out"));
            }
            Err(e) => return Err(db_err(e)),
        }
        if let Some(row) = passport::Entity::find_by_id(c.passport_jti.clone())
            .one(&*txn)
            .await
            .map_err(db_err)?
        {
            let mut rec: PassportRecord = from_doc("passport", &row.doc)?;
            rec.checked_out_at = Some(c.created_at.as_secs());
            save_passport(&txn, &rec).await?;
        }
        append_in(&txn, &c.operator_id, audit).await?;
        commit(txn).await
    }

    async fn get_checkout(&self, operator_id: &str, checkout_id: &str) -> Result<Option<Checkout>> {
        checkout::Entity::find_by_id(checkout_id.to_owned())
            .filter(checkout::Column::OperatorId.eq(operator_id))
            .one(&self.conn)
            .await
            .map_err(db_err)?
            .map(|m| from_doc("checkout", &m.doc))
            .transpose()
    }

    async fn checkout_for(&self, operator_id: &str, jti: &str) -> Result<Option<Checkout>> {
        checkout::Entity::find()
            .filter(checkout::Column::OperatorId.eq(operator_id))
            .filter(checkout::Column::PassportJti.eq(jti))
            .one(&self.conn)
            .await
            .map_err(db_err)?
            .map(|m| from_doc("checkout", &m.doc))
            .transpose()
    }

    async fn list_checkouts(
        &self,
        operator_id: &str,
        status: &str,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<Checkout>, u64)> {
        let q = checkout::Entity::find()
            .filter(checkout::Column::OperatorId.eq(operator_id))
            .filter(checkout::Column::ReviewStatus.eq(status))
            .filter(checkout::Column::Decided.eq(false));
        let total = q.clone().count(&self.conn).await.map_err(db_err)?;
        let items = q
            .order_by_desc(checkout::Column::CreatedAt)
            .order_by_desc(checkout::Column::Id)
            .offset(offset)
            .limit(limit)
            .all(&self.conn)
            .await
            .map_err(db_err)?
            .iter()
            .map(|m| from_doc("checkout", &m.doc))
            .collect::<Result<Vec<_>>>()?;
        Ok((items, total))
    }

    async fn decide_review(
        &self,
        r: &Review,
        block_agent: Option<&Agent>,
        audit: NewAudit,
    ) -> Result<()> {
        let txn = self.write_txn().await?;
        let inserted = review::Entity::insert(review::ActiveModel {
            id: Set(r.id.clone()),
            operator_id: Set(r.operator_id.clone()),
            checkout_id: Set(r.checkout_id.clone()),
            doc: Set(to_doc(r)?),
        })
        .exec_without_returning(&*txn)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(Error::conflict("this checkout has already been decided"));
            }
            Err(e) => return Err(db_err(e)),
        }
        checkout::Entity::update_many()
            .col_expr(
                checkout::Column::Decided,
                sea_orm::sea_query::Expr::value(true),
            )
            .filter(checkout::Column::Id.eq(r.checkout_id.as_str()))
            .filter(checkout::Column::OperatorId.eq(r.operator_id.as_str()))
            .exec(&*txn)
            .await
            .map_err(db_err)?;
        if let Some(a) = block_agent {
            let mut am = convert::agent_to_row(a)?;
            am.id = sea_orm::Unchanged(a.id.clone());
            am.operator_id = sea_orm::Unchanged(a.operator_id.clone());
            let _: agent::Model = am.update(&*txn).await.map_err(db_err)?;
        }
        append_in(&txn, &r.operator_id, audit).await?;
        commit(txn).await
    }

    async fn review_for(&self, operator_id: &str, checkout_id: &str) -> Result<Option<Review>> {
        review::Entity::find()
            .filter(review::Column::OperatorId.eq(operator_id))
            .filter(review::Column::CheckoutId.eq(checkout_id))
            .one(&self.conn)
            .await
            .map_err(db_err)?
            .map(|m| from_doc("review", &m.doc))
            .transpose()
    }

    async fn silent_passports(&self, since: i64, until: i64) -> Result<Vec<PassportRecord>> {
        let rows = passport::Entity::find()
            .filter(passport::Column::RevokedAt.is_null())
            .filter(passport::Column::ExpiresAt.gt(since))
            .filter(passport::Column::ExpiresAt.lte(until))
            .limit(1_000)
            .all(&self.conn)
            .await
            .map_err(db_err)?;
        let mut out = Vec::new();
        for row in rows {
            let r: PassportRecord = from_doc("passport", &row.doc)?;
            let enforced = r.accountability == stack_app::agents::AccountabilityMode::Enforced;
            if enforced && r.checked_out_at.is_none() && !r.silence_reported {
                out.push(r);
            }
        }
        Ok(out)
    }

    async fn report_silence(
        &self,
        jti: &str,
        event: &SecurityEvent,
        audit: NewAudit,
    ) -> Result<bool> {
        let txn = self.write_txn().await?;
        let Some(row) = passport::Entity::find_by_id(jti.to_owned())
            .lock_exclusive()
            .one(&*txn)
            .await
            .map_err(db_err)?
        else {
            return Ok(false);
        };
        let mut rec: PassportRecord = from_doc("passport", &row.doc)?;
        if rec.silence_reported || rec.checked_out_at.is_some() || rec.revoked_at.is_some() {
            return Ok(false);
        }
        rec.silence_reported = true;
        save_passport(&txn, &rec).await?;
        security_event::Entity::insert(security_event::ActiveModel {
            id: Set(event.id.clone()),
            operator_id: Set(event.operator_id.clone()),
            agent_id: Set(event.agent_id.clone()),
            resolved: Set(false),
            created_at: Set(event.created_at.as_millis()),
            doc: Set(to_doc(event)?),
        })
        .exec_without_returning(&*txn)
        .await
        .map_err(db_err)?;
        append_in(&txn, &event.operator_id, audit).await?;
        commit(txn).await?;
        Ok(true)
    }

    async fn insert_security_event(&self, e: &SecurityEvent, audit: NewAudit) -> Result<()> {
        let txn = self.write_txn().await?;
        security_event::Entity::insert(security_event::ActiveModel {
            id: Set(e.id.clone()),
            operator_id: Set(e.operator_id.clone()),
            agent_id: Set(e.agent_id.clone()),
            resolved: Set(e.resolved_at.is_some()),
            created_at: Set(e.created_at.as_millis()),
            doc: Set(to_doc(e)?),
        })
        .exec_without_returning(&*txn)
        .await
        .map_err(db_err)?;
        append_in(&txn, &e.operator_id, audit).await?;
        commit(txn).await
    }
}
