//! Revocation fan-out: the port between the application and the bus that
//! carries revocations to every node.
//!
//! Each node keeps an in-memory set of revoked passport ids so that checking
//! a passport never waits on the database. A revocation is committed to the
//! database first, then published; every node (including the publisher)
//! applies it to its set. A node that may have missed messages (start-up, a
//! dropped connection) is *stale* until it has reloaded the set from the
//! database; while stale, passport checks consult the database directly.
//!
//! The same messages carry changes of grants and connections
//! ([`RevocationEvent::access_changed`]), on which every node drops what it
//! keeps of them for the proxy (see `access.rs`).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use stack_core::Result;

/// One revocation, as carried on the bus (JSON; channel `stack:revoked` on
/// Redis, `stack_revoked` on PostgreSQL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationEvent {
    pub operator_id: String,
    /// The passport ids revoked by this operation (a cascade lists them all).
    pub jtis: Vec<String>,
    /// The latest expiry among them (epoch seconds): nodes may forget an id
    /// after it has expired.
    pub expires_at: i64,
    /// Id of the node that published it.
    pub origin: String,
    /// When it was committed (epoch ms).
    pub at_ms: i64,
    /// The operator's grants or connections changed: nodes drop what they
    /// keep of them for the proxy (`jtis` is then usually empty). Absent
    /// (false) in events of nodes that predate it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub access_changed: bool,
}

/// Publishes committed revocations to all nodes.
#[async_trait]
pub trait RevocationBus: Send + Sync + 'static {
    async fn publish(&self, event: &RevocationEvent) -> Result<()>;
}

/// Where a bus delivers what it receives. Implemented by the application's
/// revocation index.
#[async_trait]
pub trait RevocationSink: Send + Sync + 'static {
    /// Applies an event received from the bus.
    fn apply(&self, event: &RevocationEvent);
    /// The bus lost its connection: messages may be missed from now on.
    fn mark_stale(&self);
    /// Reloads every live revocation from the database and clears the stale
    /// mark. Called by the bus after (re)connecting, before it delivers new
    /// messages.
    async fn resync(&self) -> Result<()>;
}
