#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The bus against real servers: PostgreSQL when `STACK_TEST_POSTGRES_URL`
//! is set, Redis when `STACK_TEST_REDIS_URL` is set (a backend whose variable
//! is unset is skipped with a note), and the in-process bus always.
//!
//! Tests share the servers and channels and run in parallel: each uses its
//! own operator id and node ids, and its sinks ignore other tests' events.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sqlx::Connection;
use stack_app::revocation::{RevocationBus, RevocationEvent, RevocationSink};
use stack_bus::{BusConfig, PG_CHANNEL, PG_NOTIFY_MAX_PAYLOAD, REDIS_CHANNEL, start};
use stack_core::Secret;
use tokio::sync::{RwLock, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(15);

/// `CLIENT KILL TYPE pubsub` drops every subscriber on the server, other
/// tests' too: Redis tests hold this shared, the kill test exclusively.
static REDIS_KILL: RwLock<()> = RwLock::const_new(());

#[derive(Debug, Clone, PartialEq)]
enum Record {
    Stale,
    Resync,
    Apply(RevocationEvent),
}

/// Records what the bus does to it; events of other operators are ignored.
struct RecordingSink {
    operator_id: String,
    records: mpsc::UnboundedSender<Record>,
    /// If set, the next resync waits for it.
    gate: Mutex<Option<oneshot::Receiver<()>>>,
}

#[async_trait]
impl RevocationSink for RecordingSink {
    fn apply(&self, event: &RevocationEvent) {
        if event.operator_id == self.operator_id {
            let _ = self.records.send(Record::Apply(event.clone()));
        }
    }
    fn mark_stale(&self) {
        let _ = self.records.send(Record::Stale);
    }
    async fn resync(&self) -> stack_core::Result<()> {
        let _ = self.records.send(Record::Resync);
        let gate = self.gate.lock().unwrap().take();
        if let Some(gate) = gate {
            let _ = gate.await;
        }
        Ok(())
    }
}

/// One node: its bus and what its sink saw.
struct Node {
    bus: Arc<dyn RevocationBus>,
    records: mpsc::UnboundedReceiver<Record>,
}

impl Node {
    async fn next(&mut self) -> Record {
        tokio::time::timeout(WAIT, self.records.recv())
            .await
            .expect("timed out waiting for the sink")
            .expect("bus dropped the sink")
    }

    async fn expect(&mut self, want: Record) {
        assert_eq!(self.next().await, want);
    }

    /// Skips stale/resync records until an event arrives.
    async fn next_event(&mut self) -> RevocationEvent {
        loop {
            if let Record::Apply(event) = self.next().await {
                return event;
            }
        }
    }

    /// Nothing arrives within a short while.
    async fn expect_quiet(&mut self) {
        let got = tokio::time::timeout(Duration::from_millis(300), self.records.recv()).await;
        assert!(got.is_err(), "unexpected record: {got:?}");
    }
}

#[derive(Clone, Copy, Debug)]
enum Backend {
    Postgres,
    Redis,
}

impl Backend {
    fn url(self) -> Option<String> {
        let var = match self {
            Self::Postgres => "STACK_TEST_POSTGRES_URL",
            Self::Redis => "STACK_TEST_REDIS_URL",
        };
        match std::env::var(var) {
            Ok(url) if !url.is_empty() => Some(url),
            _ => {
                eprintln!("note: {var} is unset; skipping the {self:?} bus test");
                None
            }
        }
    }

    fn config(self, url: &str) -> BusConfig {
        let url = Secret::new(url.to_owned());
        match self {
            Self::Postgres => BusConfig::Postgres { url },
            Self::Redis => BusConfig::Redis { url },
        }
    }
}

/// A unique suffix per test and process.
fn unique(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{test}-{}-{nanos}", std::process::id())
}

async fn node(
    config: BusConfig,
    node_id: &str,
    operator_id: &str,
    gate: Option<oneshot::Receiver<()>>,
    cancel: &CancellationToken,
) -> Node {
    let (tx, records) = mpsc::unbounded_channel();
    let sink = Arc::new(RecordingSink {
        operator_id: operator_id.to_owned(),
        records: tx,
        gate: Mutex::new(gate),
    });
    let bus = start(config, node_id.to_owned(), sink, cancel.child_token())
        .await
        .unwrap();
    Node { bus, records }
}

/// Two started nodes, both resynced (so both subscribed).
async fn two_nodes(
    backend: Backend,
    url: &str,
    id: &str,
    cancel: &CancellationToken,
) -> (Node, Node) {
    let mut a = node(backend.config(url), &format!("{id}-a"), id, None, cancel).await;
    let mut b = node(backend.config(url), &format!("{id}-b"), id, None, cancel).await;
    a.expect(Record::Resync).await;
    b.expect(Record::Resync).await;
    (a, b)
}

fn event(operator_id: &str, origin: &str, jtis: &[&str]) -> RevocationEvent {
    RevocationEvent {
        operator_id: operator_id.to_owned(),
        jtis: jtis.iter().map(|j| (*j).to_owned()).collect(),
        expires_at: 1_900_000_000,
        origin: origin.to_owned(),
        at_ms: 1_700_000_000_000,
        access_changed: false,
    }
}

/// Cancels the bus tasks even when an assertion fails.
struct CancelOnDrop(CancellationToken);
impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

fn cancel_token() -> (CancellationToken, CancelOnDrop) {
    let cancel = CancellationToken::new();
    (cancel.clone(), CancelOnDrop(cancel))
}

// ---- the scenarios, written once for both network backends ----

async fn publish_reaches_the_other_node(backend: Backend) {
    let Some(url) = backend.url() else { return };
    let _shared = REDIS_KILL.read().await;
    let (cancel, _guard) = cancel_token();
    let id = unique("publish");
    let (mut a, mut b) = two_nodes(backend, &url, &id, &cancel).await;

    let sent = event(&id, "a", &["pp_1", "pp_2"]);
    a.bus.publish(&sent).await.unwrap();
    b.expect(Record::Apply(sent.clone())).await;
    // The publisher receives its own event too.
    a.expect(Record::Apply(sent.clone())).await;

    let second = event(&id, "b", &["pp_3"]);
    b.bus.publish(&second).await.unwrap();
    a.expect(Record::Apply(second.clone())).await;
    b.expect(Record::Apply(second)).await;
    b.expect_quiet().await;
}

async fn events_during_resync_are_delivered_after_it(backend: Backend) {
    let Some(url) = backend.url() else { return };
    let _shared = REDIS_KILL.read().await;
    let (cancel, _guard) = cancel_token();
    let id = unique("during-resync");
    let mut a = node(backend.config(&url), &format!("{id}-a"), &id, None, &cancel).await;
    a.expect(Record::Resync).await;
    let (open, gate) = oneshot::channel();
    let mut b = node(
        backend.config(&url),
        &format!("{id}-b"),
        &id,
        Some(gate),
        &cancel,
    )
    .await;
    // B is subscribed and inside its resync: publish now.
    b.expect(Record::Resync).await;
    let sent = event(&id, "a", &["pp_during"]);
    a.bus.publish(&sent).await.unwrap();
    // Once A has it, B's connection has it too, held until the resync ends.
    a.expect(Record::Apply(sent.clone())).await;
    b.expect_quiet().await;
    open.send(()).unwrap();
    b.expect(Record::Apply(sent)).await;
}

async fn lost_connection_marks_stale_then_resyncs(
    backend: Backend,
    kill: impl AsyncFnOnce(&str, &str),
) {
    let Some(url) = backend.url() else { return };
    let _exclusive = REDIS_KILL.write().await;
    let (cancel, _guard) = cancel_token();
    let id = unique("lost");
    let (a, mut b) = two_nodes(backend, &url, &id, &cancel).await;

    kill(&url, &format!("{id}-b")).await;
    b.expect(Record::Stale).await;
    b.expect(Record::Resync).await;

    let sent = event(&id, "a", &["pp_after_reconnect"]);
    a.bus.publish(&sent).await.unwrap();
    b.expect(Record::Apply(sent)).await;
}

async fn malformed_payload_is_skipped(backend: Backend, send_raw: impl AsyncFn(&str, &str)) {
    let Some(url) = backend.url() else { return };
    let _shared = REDIS_KILL.read().await;
    let (cancel, _guard) = cancel_token();
    let id = unique("malformed");
    let (a, mut b) = two_nodes(backend, &url, &id, &cancel).await;

    send_raw(&url, "not json").await;
    send_raw(&url, r#"{"operator_id":"x","jtis":"not a list"}"#).await;
    let sent = event(&id, "a", &["pp_after_garbage"]);
    a.bus.publish(&sent).await.unwrap();
    // Delivered in order after the garbage, with no reconnect in between.
    b.expect(Record::Apply(sent)).await;
}

async fn large_jti_list_arrives_whole(backend: Backend) -> Vec<RevocationEvent> {
    let Some(url) = backend.url() else {
        return Vec::new();
    };
    let _shared = REDIS_KILL.read().await;
    let (cancel, _guard) = cancel_token();
    let id = unique("large");
    let (a, mut b) = two_nodes(backend, &url, &id, &cancel).await;

    let jtis: Vec<String> = (0..1000).map(|i| format!("pp_{i:032}")).collect();
    let mut sent = event(&id, "a", &[]);
    sent.jtis = jtis.clone();
    a.bus.publish(&sent).await.unwrap();

    let mut parts = Vec::new();
    let mut received = Vec::new();
    while received.len() < jtis.len() {
        let part = b.next_event().await;
        assert_eq!(part.operator_id, sent.operator_id);
        assert_eq!(part.expires_at, sent.expires_at);
        received.extend(part.jtis.iter().cloned());
        parts.push(part);
    }
    assert_eq!(received, jtis);
    parts
}

// ---- PostgreSQL ----

async fn pg_execute(url: &str, sql: &str, bind: &str) {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(bind)
        .execute(&mut conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_publish_reaches_the_other_node() {
    publish_reaches_the_other_node(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_events_during_resync_are_delivered_after_it() {
    events_during_resync_are_delivered_after_it(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lost_connection_marks_stale_then_resyncs() {
    lost_connection_marks_stale_then_resyncs(Backend::Postgres, async |url, node_id| {
        // Only this node's listener, found by the application_name it sets.
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        )
        .bind(format!("stack-bus:{node_id}"))
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert_eq!(killed, [true], "expected exactly one listener backend");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_malformed_payload_is_skipped() {
    malformed_payload_is_skipped(Backend::Postgres, async |url, payload| {
        pg_execute(
            url,
            &format!("SELECT pg_notify('{PG_CHANNEL}', $1)"),
            payload,
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_large_jti_list_is_split_under_the_notify_limit() {
    let parts = large_jti_list_arrives_whole(Backend::Postgres).await;
    if parts.is_empty() {
        return;
    }
    assert!(parts.len() > 1, "a 1000-id event must be split");
    for part in &parts {
        assert!(serde_json::to_string(part).unwrap().len() <= PG_NOTIFY_MAX_PAYLOAD);
    }
}

// ---- Redis ----

async fn redis_command(url: &str, cmd: redis::Cmd) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: redis::Value = cmd.query_async(&mut conn).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_publish_reaches_the_other_node() {
    publish_reaches_the_other_node(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_events_during_resync_are_delivered_after_it() {
    events_during_resync_are_delivered_after_it(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lost_connection_marks_stale_then_resyncs() {
    lost_connection_marks_stale_then_resyncs(Backend::Redis, async |url, _node_id| {
        // Redis cannot name a RESP2 subscriber, so this drops every
        // subscriber on the server (A's too, hence the exclusive lock).
        let mut kill = redis::cmd("CLIENT");
        kill.arg("KILL").arg("TYPE").arg("pubsub");
        redis_command(url, kill).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_malformed_payload_is_skipped() {
    malformed_payload_is_skipped(Backend::Redis, async |url, payload| {
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(REDIS_CHANNEL).arg(payload);
        redis_command(url, publish).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_large_jti_list_arrives_whole() {
    let parts = large_jti_list_arrives_whole(Backend::Redis).await;
    assert!(parts.len() <= 1, "Redis carries the event whole");
}

// ---- unreachable servers (no server needed) ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_keeps_the_node_stale_and_publish_fails() {
    let (cancel, _guard) = cancel_token();
    let id = unique("unreachable");
    // Port 1 on localhost refuses connections.
    let check = async |config: BusConfig| {
        let mut n = node(config, &id, &id, None, &cancel).await;
        // Marked stale, never resynced.
        n.expect(Record::Stale).await;
        let err = n
            .bus
            .publish(&event(&id, "x", &["pp_1"]))
            .await
            .unwrap_err();
        assert_eq!(err.code, stack_core::ErrorCode::Unavailable);
        assert!(!err.to_string().contains("hunter2"), "{err}");
        n.expect(Record::Stale).await;
    };
    tokio::join!(
        check(BusConfig::Postgres {
            url: Secret::new("postgres://postgres:hunter2@127.0.0.1:1/test".into()),
        }),
        check(BusConfig::Redis {
            url: Secret::new("redis://:hunter2@127.0.0.1:1".into()),
        }),
    );
}

#[tokio::test]
async fn invalid_url_is_a_configuration_error_without_the_url() {
    let (cancel, _guard) = cancel_token();
    let (tx, _records) = mpsc::unbounded_channel();
    let sink = Arc::new(RecordingSink {
        operator_id: "op".into(),
        records: tx,
        gate: Mutex::new(None),
    });
    for config in [
        BusConfig::Postgres {
            url: Secret::new("mysql://hunter2@/".into()),
        },
        BusConfig::Redis {
            url: Secret::new("http://hunter2@/".into()),
        },
    ] {
        let Err(err) = start(config, "n".into(), sink.clone(), cancel.clone()).await else {
            panic!("accepted an invalid URL");
        };
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}

// ---- in-process ----

#[tokio::test]
async fn in_process_resyncs_then_delivers() {
    let (cancel, _guard) = cancel_token();
    let id = unique("in-process");
    let mut a = node(BusConfig::InProcess, "solo", &id, None, &cancel).await;
    a.expect(Record::Resync).await;
    let sent = event(&id, "solo", &["pp_1"]);
    a.bus.publish(&sent).await.unwrap();
    a.expect(Record::Apply(sent)).await;
    a.expect_quiet().await;
}

#[tokio::test]
async fn in_process_event_during_resync_is_applied_after_it() {
    let (cancel, _guard) = cancel_token();
    let id = unique("in-process-gate");
    let bus = stack_bus::InProcessBus::new();
    let (tx, records) = mpsc::unbounded_channel();
    let (open, gate) = oneshot::channel();
    bus.attach(
        "solo".into(),
        Arc::new(RecordingSink {
            operator_id: id.clone(),
            records: tx,
            gate: Mutex::new(Some(gate)),
        }),
        cancel.clone(),
    );
    let mut n = Node {
        bus: Arc::new(bus),
        records,
    };
    n.expect(Record::Resync).await;
    let sent = event(&id, "solo", &["pp_1"]);
    n.bus.publish(&sent).await.unwrap();
    n.expect_quiet().await;
    open.send(()).unwrap();
    n.expect(Record::Apply(sent)).await;
}
