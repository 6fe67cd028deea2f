//! What the proxy reads before every call, kept in memory per node.
//!
//! A proxied call needs the operator's tier, the agent's live grants on the
//! connection, the connection with its sealed secret, and the calls already
//! recorded on the period's meter. Reading them is one database round trip,
//! and on SQLite also a hand-off to the connection's worker thread and back:
//! a large part of what a call costs. This node keeps them:
//!
//! - **Access** (tier, live grants, connection), by (operator, agent,
//!   connection). Every change to grants or connections is followed by
//!   [`App::access_changed`], which drops the operator's entries on this
//!   node before the change is answered and publishes the change on the
//!   revocation bus, where every other node drops its copy as the message
//!   arrives (as it applies passport revocations). A read that raced a change is not kept
//!   (the generation moved). While the bus may be missing messages (this
//!   node's revocation index is stale) nothing is served from here or
//!   stored here, and a node that resyncs starts empty. An entry is also
//!   never older than [`MAX_AGE_MS`]: if a publication is lost, another node
//!   stops using what it kept after that long.
//! - **Meters**: calls recorded per (operator, period), read from the
//!   database, then counted up by one for each call this node records;
//!   read again once [`MAX_AGE_MS`] old, which is when the calls other nodes
//!   recorded meanwhile are counted. On one node the count is exact: a read
//!   that raced one of this node's records is not kept.
//!
//! Both maps are bounded ([`CAPACITY`] entries each; when full, old entries
//! go, and if none is old, all of them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use stack_core::{Result, Timestamp};

use crate::proxy::ProxyReads;
use crate::services::{Connection, ConnectionChange, Grant};
use crate::{App, NewAudit};

/// The longest an entry is used, in milliseconds.
pub(crate) const MAX_AGE_MS: i64 = 5_000;

/// Most entries in each map.
const CAPACITY: usize = 10_000;

/// (operator, agent, connection).
type AccessKey = (String, String, String);

/// (operator, period).
type MeterKey = (String, String);

#[derive(Debug)]
struct Meter {
    /// Calls recorded, when known.
    used: Option<u64>,
    /// When `used` was read from the database (epoch ms).
    read_ms: i64,
    /// Calls this node recorded since the entry was made: a read that
    /// began before one of them is not kept.
    adds: u64,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct AccessCache {
    generation: AtomicU64,
    access: RwLock<HashMap<AccessKey, (Arc<ProxyReads>, i64)>>,
    meters: Mutex<HashMap<MeterKey, Meter>>,
}

/// Taken before a database read; the read is kept only if nothing changed
/// meanwhile.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    generation: u64,
    adds: u64,
}

fn access_key(operator_id: &str, agent_id: &str, connection_id: &str) -> AccessKey {
    (
        operator_id.to_owned(),
        agent_id.to_owned(),
        connection_id.to_owned(),
    )
}

impl AccessCache {
    /// What is kept for (operator, agent, connection), if not too old.
    pub(crate) fn access(
        &self,
        operator_id: &str,
        agent_id: &str,
        connection_id: &str,
        now_ms: i64,
    ) -> Option<Arc<ProxyReads>> {
        self.access
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&access_key(operator_id, agent_id, connection_id))
            .filter(|(_, read_ms)| fresh(*read_ms, now_ms))
            .map(|(reads, _)| Arc::clone(reads))
    }

    /// The calls recorded on (operator, period), if known and not too old.
    pub(crate) fn used(&self, operator_id: &str, period: &str, now_ms: i64) -> Option<u64> {
        self.meters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(operator_id.to_owned(), period.to_owned()))
            .filter(|m| fresh(m.read_ms, now_ms))
            .and_then(|m| m.used)
    }

    /// Taken before reading what [`Self::keep`] may store.
    pub(crate) fn ticket(&self, operator_id: &str, period: &str) -> Ticket {
        let adds = self
            .meters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(operator_id.to_owned(), period.to_owned()))
            .map_or(0, |m| m.adds);
        Ticket {
            generation: self.generation.load(Ordering::Acquire),
            adds,
        }
    }

    /// Keeps what was read after `ticket` was taken: the access part unless
    /// grants or connections changed meanwhile (or `access` is `None`), the
    /// meter unless this node recorded a call on it meanwhile.
    pub(crate) fn keep(
        &self,
        ticket: Ticket,
        key: (&str, &str, &str),
        period: &str,
        access: Option<&Arc<ProxyReads>>,
        used: u64,
        now_ms: i64,
    ) {
        let (operator_id, agent_id, connection_id) = key;
        if let Some(reads) = access {
            let mut map = self.access.write().unwrap_or_else(PoisonError::into_inner);
            // Checked under the lock that `forget_access` takes to move it.
            if self.generation.load(Ordering::Acquire) == ticket.generation {
                make_room(&mut map, now_ms, |(_, read_ms)| *read_ms);
                map.insert(
                    access_key(operator_id, agent_id, connection_id),
                    (Arc::clone(reads), now_ms),
                );
            }
        }
        let mut meters = self.meters.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (operator_id.to_owned(), period.to_owned());
        let adds = meters.get(&key).map_or(0, |m| m.adds);
        if adds == ticket.adds {
            make_room(&mut meters, now_ms, |m| m.read_ms);
            meters.insert(
                key,
                Meter {
                    used: Some(used),
                    read_ms: now_ms,
                    adds,
                },
            );
        }
    }

    /// This node recorded one more call on (operator, period).
    pub(crate) fn count_call(&self, operator_id: &str, period: &str, now_ms: i64) {
        let mut meters = self.meters.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (operator_id.to_owned(), period.to_owned());
        if !meters.contains_key(&key) {
            make_room(&mut meters, now_ms, |m| m.read_ms);
        }
        let m = meters.entry(key).or_insert(Meter {
            used: None,
            read_ms: i64::MIN,
            adds: 0,
        });
        m.adds = m.adds.wrapping_add(1);
        m.used = m.used.map(|u| u.saturating_add(1));
    }

    /// Drops the access entries of `operator_id` (all of them for `None`);
    /// reads under way are not kept.
    pub(crate) fn forget_access(&self, operator_id: Option<&str>) {
        let mut map = self.access.write().unwrap_or_else(PoisonError::into_inner);
        self.generation.fetch_add(1, Ordering::AcqRel);
        match operator_id {
            Some(op) => map.retain(|(o, _, _), _| o != op),
            None => map.clear(),
        }
    }
}

fn fresh(read_ms: i64, now_ms: i64) -> bool {
    now_ms.saturating_sub(read_ms) < MAX_AGE_MS && read_ms <= now_ms
}

/// Makes room for one more entry: drops old ones when full, and everything
/// if none was old.
fn make_room<K, V>(map: &mut HashMap<K, V>, now_ms: i64, read_ms: impl Fn(&V) -> i64) {
    if map.len() >= CAPACITY {
        map.retain(|_, v| fresh(read_ms(v), now_ms));
        if map.len() >= CAPACITY {
            map.clear();
        }
    }
}

/// Every write to grants or connections goes through these, so that what
/// the proxy keeps of them is dropped (here and, over the bus, on every
/// node) as soon as it is committed. `write_paths_go_through_app` checks
/// that nothing calls the store's methods directly.
impl App {
    pub(crate) async fn insert_connection(
        &self,
        c: &Connection,
        sealed: &str,
        audit: NewAudit,
    ) -> Result<()> {
        let out = self.store.insert_connection(c, sealed, audit).await;
        self.access_changed(&c.operator_id).await;
        out
    }

    pub(crate) async fn update_connection(
        &self,
        operator_id: &str,
        id: &str,
        change: ConnectionChange,
    ) -> Result<Option<(Connection, bool)>> {
        let out = self.store.update_connection(operator_id, id, change).await;
        // Also after an error: a write whose answer was lost may have committed.
        self.access_changed(operator_id).await;
        out
    }

    pub(crate) async fn disconnect(
        &self,
        operator_id: &str,
        id: &str,
        now: Timestamp,
        audit: NewAudit,
    ) -> Result<bool> {
        let out = self.store.disconnect(operator_id, id, now, audit).await;
        self.access_changed(operator_id).await;
        out
    }

    pub(crate) async fn insert_grant(&self, g: &Grant, audit: NewAudit) -> Result<()> {
        let out = self.store.insert_grant(g, audit).await;
        self.access_changed(&g.operator_id).await;
        out
    }

    pub(crate) async fn revoke_agent_grants(
        &self,
        operator_id: &str,
        agent_id: &str,
        now: Timestamp,
        audit: NewAudit,
    ) -> Result<u64> {
        let out = self
            .store
            .revoke_agent_grants(operator_id, agent_id, now, audit)
            .await;
        self.access_changed(operator_id).await;
        out
    }

    /// Grants or connections of `operator_id` changed: drops what this node
    /// keeps of them and tells the other nodes to do the same. A publish
    /// failure is logged; other nodes then stop using what they kept within
    /// [`MAX_AGE_MS`].
    pub(crate) async fn access_changed(&self, operator_id: &str) {
        self.access.forget_access(Some(operator_id));
        let event = crate::revocation::RevocationEvent {
            operator_id: operator_id.to_owned(),
            jtis: Vec::new(),
            expires_at: 0,
            origin: self.passports.node_id.clone(),
            at_ms: self.now().as_millis(),
            access_changed: true,
        };
        let bus = self.passports.bus.read().ok().and_then(|b| b.clone());
        if let Some(bus) = bus
            && let Err(e) = bus.publish(&event).await
        {
            tracing::warn!(
                error = %e.message,
                max_age_ms = MAX_AGE_MS,
                "could not publish a change of grants or connections; other nodes stop using their copy when it is max_age_ms old"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    const OP: &str = "op_a";
    const KEY: (&str, &str, &str) = (OP, "agt_a", "con_a");
    const PERIOD: &str = "2026-11";

    fn reads(tier: &str) -> Arc<ProxyReads> {
        Arc::new(ProxyReads {
            tier: Some(tier.into()),
            ..ProxyReads::default()
        })
    }

    fn kept(c: &AccessCache, now: i64) -> Option<String> {
        c.access(KEY.0, KEY.1, KEY.2, now)
            .and_then(|r| r.tier.clone())
    }

    #[test]
    fn a_read_is_kept_until_it_is_too_old() {
        let c = AccessCache::default();
        let t = c.ticket(OP, PERIOD);
        c.keep(t, KEY, PERIOD, Some(&reads("free")), 7, 1_000);
        assert_eq!(kept(&c, 1_000).as_deref(), Some("free"));
        assert_eq!(c.used(OP, PERIOD, 1_000), Some(7));
        assert_eq!(kept(&c, 1_000 + MAX_AGE_MS - 1).as_deref(), Some("free"));
        assert_eq!(kept(&c, 1_000 + MAX_AGE_MS), None);
        assert_eq!(c.used(OP, PERIOD, 1_000 + MAX_AGE_MS), None);
        // A clock that went back does not make an entry young.
        assert_eq!(kept(&c, 999), None);
        // Other keys are not served from it.
        assert!(c.access(OP, "agt_b", "con_a", 1_000).is_none());
        assert!(c.used(OP, "2026-12", 1_000).is_none());
    }

    #[test]
    fn a_change_drops_the_operators_entries_and_a_read_that_raced_it() {
        let c = AccessCache::default();
        let other = ("op_b", "agt_a", "con_a");
        c.keep(
            c.ticket(OP, PERIOD),
            KEY,
            PERIOD,
            Some(&reads("free")),
            0,
            0,
        );
        c.keep(
            c.ticket("op_b", PERIOD),
            other,
            PERIOD,
            Some(&reads("studio")),
            0,
            0,
        );
        // A read begins, then the operator's grants change.
        let raced = c.ticket(OP, PERIOD);
        c.forget_access(Some(OP));
        assert_eq!(kept(&c, 1), None);
        assert!(c.access(other.0, other.1, other.2, 1).is_some());
        c.keep(raced, KEY, PERIOD, Some(&reads("developer")), 0, 2);
        assert_eq!(
            kept(&c, 3),
            None,
            "a read from before the change is not kept"
        );
        // The meter part of that read is unaffected by access changes.
        assert_eq!(c.used(OP, PERIOD, 3), Some(0));
        // A read after the change is.
        c.keep(
            c.ticket(OP, PERIOD),
            KEY,
            PERIOD,
            Some(&reads("developer")),
            0,
            4,
        );
        assert_eq!(kept(&c, 5).as_deref(), Some("developer"));
        // Everything goes on `None` (bus stale or resynced).
        c.forget_access(None);
        assert_eq!(kept(&c, 6), None);
        assert!(c.access(other.0, other.1, other.2, 6).is_none());
    }

    #[test]
    fn recorded_calls_count_up_and_a_meter_read_that_raced_one_is_not_kept() {
        let c = AccessCache::default();
        // A call recorded before anything was read: nothing to count up.
        c.count_call(OP, PERIOD, 0);
        assert_eq!(c.used(OP, PERIOD, 0), None);
        // A read that began before a call was recorded may not include it.
        let raced = c.ticket(OP, PERIOD);
        c.count_call(OP, PERIOD, 1);
        c.keep(raced, KEY, PERIOD, None, 10, 2);
        assert_eq!(c.used(OP, PERIOD, 2), None);
        // A read after it is kept and counts up with each recorded call.
        c.keep(c.ticket(OP, PERIOD), KEY, PERIOD, None, 11, 3);
        assert_eq!(c.used(OP, PERIOD, 3), Some(11));
        c.count_call(OP, PERIOD, 4);
        c.count_call(OP, PERIOD, 4);
        assert_eq!(c.used(OP, PERIOD, 5), Some(13));
        // `None` for access: only the meter is kept.
        assert_eq!(kept(&c, 5), None);
    }

    #[test]
    fn the_maps_stay_bounded() {
        let c = AccessCache::default();
        for i in 0..CAPACITY + 10 {
            let agent = format!("agt_{i}");
            let period = format!("p{i}");
            c.keep(
                c.ticket(OP, &period),
                (OP, &agent, "con_a"),
                &period,
                Some(&reads("free")),
                0,
                0,
            );
            c.count_call(OP, &format!("q{i}"), 0);
        }
        assert!(c.access.read().unwrap().len() <= CAPACITY);
        assert!(c.meters.lock().unwrap().len() <= CAPACITY);
    }

    /// Every write to grants or connections goes through the `App`
    /// methods above (which drop what the proxy keeps), never straight to
    /// the store.
    #[test]
    fn write_paths_go_through_app() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![src];
        let mut offenders = Vec::new();
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("access.rs") {
                continue;
            }
            let text: String = std::fs::read_to_string(&path)
                .unwrap()
                .split_whitespace()
                .collect();
            for write in [
                "insert_connection(",
                "update_connection(",
                "disconnect(",
                "insert_grant(",
                "revoke_agent_grants(",
            ] {
                if text.contains(&format!("store.{write}")) {
                    offenders.push(format!("{}: store.{write}", path.display()));
                }
            }
        }
        assert!(offenders.is_empty(), "{offenders:#?}");
    }
}
