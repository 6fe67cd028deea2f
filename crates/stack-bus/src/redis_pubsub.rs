//! Redis pub/sub on [`REDIS_CHANNEL`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream};
use redis::{AsyncCommands, Client};
use stack_app::revocation::{RevocationBus, RevocationEvent, RevocationSink};
use stack_core::Secret;
use tokio::sync::OnceCell;
use tokio::time::{Interval, MissedTickBehavior, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span, warn};

use crate::listener::{self, CONNECT_TIMEOUT, Connector, Received, Subscription};
use crate::{BusError, REDIS_CHANNEL};

const BACKEND: &str = "redis";

/// How often the listener pings the server. A subscribed connection is
/// otherwise silent, and a peer that vanished without closing the socket
/// would not be noticed for as long as TCP takes.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bounds one publish (and each connection attempt behind it).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// Connection attempts per (re)connect of the publishing connection: a
/// publish to a server that is down fails fast rather than retrying for
/// seconds (the caller logs it and the other nodes catch up at resync).
const PUBLISH_RETRIES: usize = 2;

pub(crate) fn start(
    url: &Secret<String>,
    node_id: String,
    sink: Arc<dyn RevocationSink>,
    cancel: CancellationToken,
) -> Result<Arc<dyn RevocationBus>, BusError> {
    let client = Client::open(url.expose().as_str())
        .map_err(|_| BusError::InvalidUrl { backend: BACKEND })?;
    let connector = RedisConnector {
        client: client.clone(),
    };
    tokio::spawn(
        listener::run(connector, sink, cancel)
            .instrument(info_span!("revocation_listener", node_id = %node_id)),
    );
    Ok(Arc::new(RedisBus {
        client,
        connection: OnceCell::new(),
    }))
}

/// Publishes over a [`ConnectionManager`], which reconnects by itself. It is
/// opened at the first publish, so a node starts even while Redis is down.
struct RedisBus {
    client: Client,
    connection: OnceCell<ConnectionManager>,
}

impl RedisBus {
    async fn send(&self, payload: String) -> Result<(), BusError> {
        let publish_error = |err: redis::RedisError| BusError::Publish {
            backend: BACKEND,
            source: err.into(),
        };
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(PUBLISH_RETRIES)
            .set_connection_timeout(Some(PUBLISH_TIMEOUT))
            .set_response_timeout(Some(PUBLISH_TIMEOUT));
        let mut connection = self
            .connection
            .get_or_try_init(|| ConnectionManager::new_with_config(self.client.clone(), config))
            .await
            .map_err(publish_error)?
            .clone();
        let _receivers: i64 = connection
            .publish(REDIS_CHANNEL, payload)
            .await
            .map_err(publish_error)?;
        Ok(())
    }
}

#[async_trait]
impl RevocationBus for RedisBus {
    async fn publish(&self, event: &RevocationEvent) -> stack_core::Result<()> {
        // Redis has no practical size limit: the event goes whole.
        let payload = serde_json::to_string(event).map_err(BusError::from)?;
        Ok(self.send(payload).await?)
    }
}

struct RedisConnector {
    client: Client,
}

#[async_trait]
impl Connector for RedisConnector {
    type Subscription = RedisSubscription;
    const BACKEND: &'static str = BACKEND;

    async fn subscribe(&self) -> Result<RedisSubscription, BusError> {
        let connect = |err: redis::RedisError| BusError::Connect {
            backend: BACKEND,
            source: err.into(),
        };
        let timed_out = |_| BusError::Timeout {
            backend: BACKEND,
            operation: "SUBSCRIBE",
        };
        let pubsub = timeout(CONNECT_TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(timed_out)?
            .map_err(connect)?;
        let (mut sink, stream) = pubsub.split();
        // Returns once the server has confirmed the subscription.
        timeout(CONNECT_TIMEOUT, sink.subscribe(REDIS_CHANNEL))
            .await
            .map_err(timed_out)?
            .map_err(connect)?;
        let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(RedisSubscription {
            sink,
            stream,
            heartbeat,
        })
    }
}

struct RedisSubscription {
    sink: PubSubSink,
    stream: PubSubStream,
    heartbeat: Interval,
}

#[async_trait]
impl Subscription for RedisSubscription {
    async fn next(&mut self) -> Option<Received> {
        loop {
            tokio::select! {
                message = self.stream.next() => match message {
                    Some(message) if message.get_channel_name() == REDIS_CHANNEL => {
                        return Some(Received::Json(message.get_payload_bytes().to_vec()));
                    }
                    Some(_) => {}
                    // The connection closed.
                    None => return None,
                },
                _ = self.heartbeat.tick() => {
                    match timeout(HEARTBEAT_TIMEOUT, self.sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(err)) => {
                            warn!(backend = BACKEND, error = %err, "revocation listener heartbeat failed");
                            return None;
                        }
                        Err(_) => {
                            warn!(backend = BACKEND, "revocation listener heartbeat timed out");
                            return None;
                        }
                    }
                }
            }
        }
    }
}
