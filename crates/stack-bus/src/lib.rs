//! Revocation fan-out between STACK server nodes: the adapters behind
//! [`stack_app::revocation::RevocationBus`].
//!
//! What it does: [`start`] builds a bus for one node from a [`BusConfig`] and
//! spawns the task that listens for revocations and hands them to the node's
//! [`RevocationSink`]. Three backends:
//!
//! - [`BusConfig::InProcess`]: one node; a publish goes straight to the
//!   sink(s) attached to the same [`InProcessBus`].
//! - [`BusConfig::Postgres`]: `LISTEN`/`NOTIFY` on channel
//!   [`PG_CHANNEL`]. An event whose JSON would not fit PostgreSQL's
//!   8000-byte `NOTIFY` limit is split into several events, each carrying a
//!   part of the passport ids (see [`split_event`]).
//! - [`BusConfig::Redis`]: pub/sub on channel [`REDIS_CHANNEL`].
//!
//! The payload is always the JSON of [`RevocationEvent`]. The same events
//! carry changes of an operator's grants and connections
//! (`access_changed: true`, usually with no passport ids), on which each
//! node drops what its proxy keeps of them.
//!
//! How a node stays correct: on every (re)connect the listener subscribes
//! *first*, then calls [`RevocationSink::resync`] (which reloads from the
//! database), then delivers what arrived. A revocation committed before the
//! resync is in the reload; one committed after it was published while the
//! node was already subscribed, so it is delivered (possibly twice: applying
//! is idempotent). When the connection drops, the listener calls
//! [`RevocationSink::mark_stale`] at once (the node then checks passports
//! against the database) and reconnects with capped exponential backoff
//! (100 ms doubling to 5 s) until cancelled. A node receives its own
//! publications too. Malformed messages are logged and skipped.
//!
//! The trade-off on publishing: the caller commits the revocation to the
//! database *before* it publishes, and [`RevocationBus::publish`] returns an
//! error when the message could not be sent. The caller logs it and goes on;
//! the revocation is not lost, but the other nodes only learn it at their
//! next resync (their next reconnect), not within milliseconds. A node's own
//! in-memory set is not the source of truth either: the database is.
//!
//! What it does not do: it does not decide what is revoked, touch the
//! database tables or keep the revoked set (that is the sink's job, in
//! `stack-app`); it does not authenticate messages: anyone who can publish on
//! the channel can inject revocations (which only fails closed until the next
//! resync) but cannot undo one, because the database stays authoritative.
//! Connection URLs may carry passwords: they are held as [`Secret`]s and
//! never logged.
#![forbid(unsafe_code)]

mod error;
mod event;
mod in_process;
mod listener;
mod postgres;
mod redis_pubsub;

use std::sync::Arc;

use stack_app::revocation::{RevocationBus, RevocationSink};
use stack_core::Secret;
use tokio_util::sync::CancellationToken;

pub use error::BusError;
pub use event::{PG_NOTIFY_MAX_PAYLOAD, split_event};
pub use in_process::InProcessBus;
pub use stack_app::revocation::RevocationEvent;

/// The PostgreSQL `NOTIFY` channel.
pub const PG_CHANNEL: &str = "stack_revoked";

/// The Redis pub/sub channel.
pub const REDIS_CHANNEL: &str = "stack:revoked";

/// Which backend carries revocations between nodes.
#[derive(Debug, Clone)]
pub enum BusConfig {
    /// A single node: no network, delivery inside the process.
    InProcess,
    /// PostgreSQL `LISTEN`/`NOTIFY` (`postgres://…`; `sslmode` is honoured).
    Postgres { url: Secret<String> },
    /// Redis pub/sub (`redis://…`).
    Redis { url: Secret<String> },
}

/// Builds the bus for one node and spawns its listener task, which runs
/// until `cancel` is cancelled.
///
/// `node_id` names the node in logs and in the connection names seen by the
/// server (PostgreSQL `application_name` `stack-bus:<node_id>` for the
/// listener, `stack-bus-pub:<node_id>` for publishing). The listener calls
/// `sink.resync()` once it is subscribed, before it delivers anything.
///
/// Fails only on a configuration error (a URL that does not parse); an
/// unreachable server is retried in the background, the node staying stale
/// meanwhile. Must be called inside a Tokio runtime.
pub async fn start(
    config: BusConfig,
    node_id: String,
    sink: Arc<dyn RevocationSink>,
    cancel: CancellationToken,
) -> Result<Arc<dyn RevocationBus>, BusError> {
    match config {
        BusConfig::InProcess => {
            let bus = InProcessBus::new();
            bus.attach(node_id, sink, cancel);
            Ok(Arc::new(bus))
        }
        BusConfig::Postgres { url } => postgres::start(&url, node_id, sink, cancel),
        BusConfig::Redis { url } => redis_pubsub::start(&url, node_id, sink, cancel),
    }
}
