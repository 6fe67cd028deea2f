//! The listener loop every backend shares: subscribe, resync, deliver; on a
//! lost connection mark stale and reconnect with backoff.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use stack_app::revocation::{RevocationEvent, RevocationSink};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::BusError;
use crate::event::deliver;

/// First delay before reconnecting.
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// The delay doubles up to this cap.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Bounds connecting and subscribing, so a black-holed server is retried
/// rather than waited on for the TCP timeout.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One message as received.
pub(crate) enum Received {
    /// JSON from the wire, decoded by the loop.
    Json(Vec<u8>),
    /// An event handed over inside the process.
    Event(RevocationEvent),
}

/// Opens a subscription on the backend's channel.
#[async_trait]
pub(crate) trait Connector: Send + Sync + 'static {
    type Subscription: Subscription;
    /// For logs.
    const BACKEND: &'static str;
    /// Connects and subscribes. When this returns, every message published
    /// from now on will be received.
    async fn subscribe(&self) -> Result<Self::Subscription, BusError>;
}

/// A live subscription.
#[async_trait]
pub(crate) trait Subscription: Send {
    /// The next message, or `None` once the connection is lost (after which
    /// messages may have been missed).
    async fn next(&mut self) -> Option<Received>;
}

/// Runs until `cancel` is cancelled.
pub(crate) async fn run<C: Connector>(
    connector: C,
    sink: Arc<dyn RevocationSink>,
    cancel: CancellationToken,
) {
    let backend = C::BACKEND;
    let mut backoff = Backoff::default();
    loop {
        let attempt = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            attempt = connector.subscribe() => attempt,
        };
        let mut subscription = match attempt {
            Ok(subscription) => subscription,
            Err(err) => {
                sink.mark_stale();
                let delay = backoff.next_delay();
                warn!(backend, error = %err, retry_in_ms = delay.as_millis(), "revocation listener cannot subscribe; node is stale");
                if !pause(&cancel, delay).await {
                    return;
                }
                continue;
            }
        };
        // Subscribed first, so whatever is committed after the reload below
        // is already on its way to us.
        let resynced = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            resynced = sink.resync() => resynced,
        };
        if let Err(err) = resynced {
            sink.mark_stale();
            let delay = backoff.next_delay();
            warn!(backend, error = %err, retry_in_ms = delay.as_millis(), "revocation resync failed; node is stale");
            drop(subscription);
            if !pause(&cancel, delay).await {
                return;
            }
            continue;
        }
        backoff.reset();
        info!(backend, "revocation listener subscribed and resynced");
        loop {
            let received = tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                received = subscription.next() => received,
            };
            match received {
                Some(Received::Json(payload)) => deliver(&payload, sink.as_ref(), backend),
                Some(Received::Event(event)) => sink.apply(&event),
                None => break,
            }
        }
        // Mark first: from here on messages may be missed.
        sink.mark_stale();
        drop(subscription);
        let delay = backoff.next_delay();
        warn!(
            backend,
            retry_in_ms = delay.as_millis(),
            "revocation listener lost its connection; node is stale until it resyncs"
        );
        if !pause(&cancel, delay).await {
            return;
        }
    }
}

/// Sleeps for `delay`; `false` if cancelled first.
async fn pause(cancel: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        biased;
        () = cancel.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

/// Capped exponential backoff.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: BACKOFF_INITIAL,
        }
    }
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }

    fn reset(&mut self) {
        self.next = BACKOFF_INITIAL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<u128> = (0..9).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), BACKOFF_INITIAL);
    }
}
