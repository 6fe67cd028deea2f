//! Revocation: single (with breadth-first cascade), per agent, per session,
//! per mission, all; and the node's in-memory revocation index fed by the bus.

use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};
use stack_audit::Layer;
use stack_core::{Error, IdKind, Permission, Principal, Result};
use stack_passport::RevocationSet;

use super::{RevokeSelector, Revoked};
use crate::ports::Clock;
use crate::revocation::{RevocationEvent, RevocationSink};
use crate::{App, NewAudit, Store, require};

/// This node's view of which passports are revoked.
///
/// Starts *stale*: until the first [`RevocationSink::resync`], and again
/// whenever the bus reports a lost connection, lookups say "unknown" and
/// callers fall back to the database.
pub struct RevocationIndex {
    set: RwLock<RevocationSet>,
    stale: AtomicBool,
    /// What the proxy keeps of grants and connections: dropped on the
    /// bus's word, and whenever the index is stale or resyncs.
    access: Arc<crate::access::AccessCache>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for RevocationIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationIndex")
            .field("stale", &self.stale.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl RevocationIndex {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self {
            set: RwLock::new(RevocationSet::default()),
            stale: AtomicBool::new(true),
            access: Arc::default(),
            store,
            clock,
        }
    }

    /// `Some(revoked?)` when the index is in sync, `None` when it must not be trusted.
    pub fn lookup(&self, jti: &str) -> Option<bool> {
        if self.stale.load(Ordering::Acquire) {
            return None;
        }
        self.set.read().ok().map(|s| s.contains(jti))
    }

    /// What the proxy keeps of grants and connections on this node.
    pub(crate) fn access(&self) -> &Arc<crate::access::AccessCache> {
        &self.access
    }

    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Acquire)
    }

    pub fn len(&self) -> usize {
        self.set.read().map_or(0, |s| s.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert_all(&self, items: impl IntoIterator<Item = (String, i64)>) {
        if let Ok(mut s) = self.set.write() {
            for (jti, exp) in items {
                s.insert(jti, exp);
            }
        }
    }
}

#[async_trait]
impl RevocationSink for RevocationIndex {
    fn apply(&self, event: &RevocationEvent) {
        self.insert_all(event.jtis.iter().map(|j| (j.clone(), event.expires_at)));
        if event.access_changed {
            self.access.forget_access(Some(&event.operator_id));
        }
    }

    fn mark_stale(&self) {
        self.stale.store(true, Ordering::Release);
        // Changes may be missed from now on.
        self.access.forget_access(None);
    }

    async fn resync(&self) -> Result<()> {
        let now = self.clock.now().as_secs();
        let live = self.store.live_revocations(now).await?;
        if let Ok(mut s) = self.set.write() {
            // Add to what is there rather than replace it: an id applied from
            // the bus while we were reading is never lost.
            for (jti, exp) in live {
                s.insert(jti, exp);
            }
            s.prune(now);
        }
        self.stale.store(false, Ordering::Release);
        // Nothing read before this point is kept: changes may have been
        // missed until now.
        self.access.forget_access(None);
        Ok(())
    }
}

/// `reason` in revoke bodies (may be null).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RevokeBody {
    #[serde(default)]
    pub jti: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    /// MCP's `stack_revoke_all_passports` requires `confirm: true`.
    #[serde(default)]
    pub confirm: Option<bool>,
}

/// What to revoke, as the adapters name it.
#[derive(Debug, Clone)]
pub enum RevokeTarget {
    Passport(String),
    Agent(String),
    Session(String),
    All,
}

pub const MAX_REASON_LEN: usize = 1_000;

fn reason_or(reason: Option<String>, default: &str) -> Result<String> {
    let r = reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| default.to_owned());
    if r.chars().count() > MAX_REASON_LEN {
        return Err(Error::invalid_field(
            "reason",
            format!("reason is at most {MAX_REASON_LEN} characters"),
        ));
    }
    Ok(r)
}

impl App {
    /// Revokes what `target` names, within the caller's operator.
    pub async fn revoke(
        &self,
        p: &Principal,
        target: RevokeTarget,
        reason: Option<String>,
    ) -> Result<Value> {
        require(p, Permission::PassportsWrite)?;
        let (selector, action, default_reason) = match target {
            RevokeTarget::Passport(jti) => {
                if !IdKind::Passport.is_valid(&jti) {
                    return Err(Error::not_found("passport", &jti));
                }
                let rec = self.store.get_passport(&jti).await?;
                if rec.is_none_or(|r| r.operator_id != p.operator_id) {
                    return Err(Error::not_found("passport", &jti));
                }
                (
                    RevokeSelector::Passport(jti),
                    "passport.revoke",
                    "revoked by operator",
                )
            }
            RevokeTarget::Agent(agent_id) => {
                self.load_agent(p, &agent_id).await?;
                (
                    RevokeSelector::Agent(agent_id),
                    "passport.revoke_agent",
                    "agent passports revoked",
                )
            }
            RevokeTarget::Session(session_id) => {
                if !IdKind::Session.is_valid(&session_id) {
                    return Err(Error::not_found("session", &session_id));
                }
                (
                    RevokeSelector::Session(session_id),
                    "passport.revoke_session",
                    "session revoked",
                )
            }
            RevokeTarget::All => (
                RevokeSelector::All,
                "passport.revoke_all",
                "emergency revocation of all passports",
            ),
        };
        let reason = reason_or(reason, default_reason)?;
        let revoked = self.revoke_selected(p, &selector, &reason, action).await?;
        let root = match &selector {
            RevokeSelector::Passport(j) => Some(j.clone()),
            _ => None,
        };
        Ok(json!({
            "revoked": true,
            "jti": root,
            "reason": reason,
            "count": revoked.len(),
            "revoked_jtis": revoked.iter().map(|r| r.jti.clone()).collect::<Vec<_>>(),
            "cascaded": revoked.iter().filter(|r| r.cascaded_from.is_some()).map(|r| r.jti.clone()).collect::<Vec<_>>(),
        }))
    }

    /// Stores the revocation (with audit entries), applies it to this node's
    /// index and publishes it to the others.
    pub(crate) async fn revoke_selected(
        &self,
        p: &Principal,
        selector: &RevokeSelector,
        reason: &str,
        action: &str,
    ) -> Result<Vec<Revoked>> {
        let now = self.now();
        let mut draft =
            Self::draft(p, Layer::Passport, action).details(json!({ "reason": reason }));
        match selector {
            RevokeSelector::Passport(jti) => {
                draft.passport_jti = Some(jti.clone());
                draft = draft.target("passport", jti);
            }
            RevokeSelector::Agent(a) => draft = draft.agent(a).target("agent", a),
            RevokeSelector::Session(s) => draft = draft.target("session", s),
            RevokeSelector::Mission(m) => draft = draft.target("mission", m),
            RevokeSelector::All => draft = draft.target("operator", &p.operator_id),
        }
        let audit = self.audit(draft)?;
        let actor = p.clone();
        let reason_owned = reason.to_owned();
        let app = self.clone();
        let per_passport: super::AuditFor = Box::new(move |r: Revoked| -> Result<NewAudit> {
            let mut d = Self::draft(&actor, Layer::Passport, "passport.revoke_cascade")
                .agent(&r.agent_id)
                .target("passport", &r.jti)
                .details(json!({ "reason": reason_owned, "cascaded_from": r.cascaded_from }));
            d.passport_jti = Some(r.jti.clone());
            app.audit(d)
        });
        let revoked = self
            .store
            .revoke_passports(
                &p.operator_id,
                selector,
                reason,
                now.as_secs(),
                audit,
                per_passport,
            )
            .await?;
        self.announce_revocations(&p.operator_id, &revoked).await;
        Ok(revoked)
    }

    /// Applies committed revocations locally and publishes them. A publish
    /// failure is logged: the revocation is durable, and other nodes reload
    /// the set from the database when their bus reconnects.
    pub(crate) async fn announce_revocations(&self, operator_id: &str, revoked: &[Revoked]) {
        if revoked.is_empty() {
            return;
        }
        let event = RevocationEvent {
            operator_id: operator_id.to_owned(),
            jtis: revoked.iter().map(|r| r.jti.clone()).collect(),
            expires_at: revoked
                .iter()
                .map(|r| r.expires_at)
                .max()
                .unwrap_or_default(),
            origin: self.passports.node_id.clone(),
            at_ms: self.now().as_millis(),
            access_changed: false,
        };
        self.passports.revocations.apply(&event);
        let bus = self.passports.bus.read().ok().and_then(|b| b.clone());
        if let Some(bus) = bus
            && let Err(e) = bus.publish(&event).await
        {
            tracing::warn!(error = %e.message, count = event.jtis.len(), "could not publish revocations; other nodes will catch up at their next resync");
        }
    }

    /// Whether `jti` is revoked: from the in-memory index when it is in sync,
    /// otherwise from the database.
    pub(crate) async fn is_revoked(&self, jti: &str) -> Result<bool> {
        if let Some(known) = self.passports.revocations.lookup(jti) {
            return Ok(known);
        }
        Ok(self
            .store
            .get_passport(jti)
            .await?
            .is_some_and(|r| r.revoked_at.is_some()))
    }
}
