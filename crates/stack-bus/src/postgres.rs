//! PostgreSQL `LISTEN`/`NOTIFY` on [`PG_CHANNEL`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use stack_app::revocation::{RevocationBus, RevocationEvent, RevocationSink};
use stack_core::Secret;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span, warn};

use crate::listener::{self, CONNECT_TIMEOUT, Connector, Received, Subscription};
use crate::{BusError, PG_CHANNEL, PG_NOTIFY_MAX_PAYLOAD, split_event};

const BACKEND: &str = "postgresql";

/// Connections the publisher may hold (publishing is one short statement).
const PUBLISH_CONNECTIONS: u32 = 2;

/// Bounds waiting for a publishing connection (sqlx retries a refused
/// connection until then).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) fn start(
    url: &Secret<String>,
    node_id: String,
    sink: Arc<dyn RevocationSink>,
    cancel: CancellationToken,
) -> Result<Arc<dyn RevocationBus>, BusError> {
    let options: PgConnectOptions = url
        .expose()
        .parse()
        .map_err(|_| BusError::InvalidUrl { backend: BACKEND })?;
    let connector = PgConnector {
        options: options
            .clone()
            .application_name(&format!("stack-bus:{node_id}")),
    };
    let pool = PgPoolOptions::new()
        .max_connections(PUBLISH_CONNECTIONS)
        .acquire_timeout(PUBLISH_TIMEOUT)
        .connect_lazy_with(options.application_name(&format!("stack-bus-pub:{node_id}")));
    tokio::spawn(
        listener::run(connector, sink, cancel)
            .instrument(info_span!("revocation_listener", node_id = %node_id)),
    );
    Ok(Arc::new(PgBus { pool }))
}

/// Publishes with `pg_notify`, one statement per part of a split event.
struct PgBus {
    pool: PgPool,
}

impl PgBus {
    async fn notify(&self, event: &RevocationEvent) -> Result<(), BusError> {
        for payload in split_event(event, PG_NOTIFY_MAX_PAYLOAD)? {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(PG_CHANNEL)
                .bind(payload)
                .execute(&self.pool)
                .await
                .map_err(|err| BusError::Publish {
                    backend: BACKEND,
                    source: err.into(),
                })?;
        }
        Ok(())
    }
}

#[async_trait]
impl RevocationBus for PgBus {
    async fn publish(&self, event: &RevocationEvent) -> stack_core::Result<()> {
        Ok(self.notify(event).await?)
    }
}

struct PgConnector {
    options: PgConnectOptions,
}

#[async_trait]
impl Connector for PgConnector {
    type Subscription = PgSubscription;
    const BACKEND: &'static str = BACKEND;

    async fn subscribe(&self) -> Result<PgSubscription, BusError> {
        let connect = |err: sqlx::Error| BusError::Connect {
            backend: BACKEND,
            source: err.into(),
        };
        // A pool of one connection per attempt, owned by the subscription:
        // dropping it after a loss closes everything, and the loop (not
        // sqlx) decides when and how to reconnect, so it can resync in
        // between.
        // sqlx retries a refused connection until the acquire timeout, so
        // this also bounds one attempt of the loop.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(CONNECT_TIMEOUT)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with(self.options.clone());
        let mut listener = PgListener::connect_with(&pool).await.map_err(connect)?;
        listener.ignore_pool_close_event(true);
        listener.eager_reconnect(false);
        tokio::time::timeout(CONNECT_TIMEOUT, listener.listen(PG_CHANNEL))
            .await
            .map_err(|_| BusError::Timeout {
                backend: BACKEND,
                operation: "LISTEN",
            })?
            .map_err(connect)?;
        Ok(PgSubscription {
            listener,
            _pool: pool,
        })
    }
}

struct PgSubscription {
    listener: PgListener,
    _pool: PgPool,
}

#[async_trait]
impl Subscription for PgSubscription {
    async fn next(&mut self) -> Option<Received> {
        loop {
            match self.listener.try_recv().await {
                Ok(Some(notification)) if notification.channel() == PG_CHANNEL => {
                    return Some(Received::Json(notification.payload().as_bytes().to_vec()));
                }
                Ok(Some(_)) => {}
                // The connection closed.
                Ok(None) => return None,
                // E.g. the server's "terminating connection" error.
                Err(err) => {
                    warn!(backend = BACKEND, error = %err, "revocation listener connection failed");
                    return None;
                }
            }
        }
    }
}
