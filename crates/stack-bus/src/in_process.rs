//! The single-node bus: delivery inside the process.

use std::sync::Arc;

use async_trait::async_trait;
use stack_app::revocation::{RevocationBus, RevocationEvent, RevocationSink};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span};

use crate::BusError;
use crate::listener::{self, Connector, Received, Subscription};

/// Events buffered per attached sink before it counts as lagging (and is
/// marked stale and resynced).
const CAPACITY: usize = 1024;

/// A bus for one node: [`publish`](RevocationBus::publish) hands the event to
/// every attached sink.
///
/// Each sink gets its own task that follows the same protocol as the network
/// backends (subscribe, resync, then deliver), so an event published while a
/// resync is reading the database is applied after it, never overwritten by
/// it. A sink that falls more than 1024 events behind is marked stale and
/// resynced.
#[derive(Clone)]
pub struct InProcessBus {
    sender: broadcast::Sender<RevocationEvent>,
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::new()
    }
}

impl InProcessBus {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(CAPACITY);
        Self { sender }
    }

    /// Attaches a sink: spawns its delivery task, which resyncs it and then
    /// applies every event published from now on, until `cancel`.
    pub fn attach(
        &self,
        node_id: String,
        sink: Arc<dyn RevocationSink>,
        cancel: CancellationToken,
    ) {
        let connector = InProcessConnector {
            sender: self.sender.clone(),
            // Subscribed before returning: nothing published after `attach`
            // is missed by the first resync.
            first: std::sync::Mutex::new(Some(self.sender.subscribe())),
        };
        tokio::spawn(
            listener::run(connector, sink, cancel)
                .instrument(info_span!("revocation_listener", node_id = %node_id)),
        );
    }
}

#[async_trait]
impl RevocationBus for InProcessBus {
    async fn publish(&self, event: &RevocationEvent) -> stack_core::Result<()> {
        if self.sender.send(event.clone()).is_err() {
            // No sink attached (or all stopped): nobody here to tell, and
            // there is no other node.
            debug!("in-process revocation bus has no live listener");
        }
        Ok(())
    }
}

struct InProcessConnector {
    sender: broadcast::Sender<RevocationEvent>,
    first: std::sync::Mutex<Option<broadcast::Receiver<RevocationEvent>>>,
}

#[async_trait]
impl Connector for InProcessConnector {
    type Subscription = InProcessSubscription;
    const BACKEND: &'static str = "in-process";

    async fn subscribe(&self) -> Result<InProcessSubscription, BusError> {
        let first = self
            .first
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        Ok(InProcessSubscription {
            receiver: first.unwrap_or_else(|| self.sender.subscribe()),
        })
    }
}

struct InProcessSubscription {
    receiver: broadcast::Receiver<RevocationEvent>,
}

#[async_trait]
impl Subscription for InProcessSubscription {
    async fn next(&mut self) -> Option<Received> {
        // Lagged (events dropped) and Closed both end the subscription: the
        // loop marks the sink stale, subscribes again and resyncs.
        self.receiver.recv().await.ok().map(Received::Event)
    }
}
