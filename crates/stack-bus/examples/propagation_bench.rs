//! Revocation propagation latency at the bus level: two nodes in one
//! process, node A publishes events one at a time, node B's sink records when
//! each arrives. Reports p50/p99/max of publish call → B's `apply`.
//!
//! ```text
//! cargo run --release -p stack-bus --example propagation_bench -- [events]
//! ```
//!
//! Servers come from `STACK_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) and `STACK_TEST_REDIS_URL`
//! (default `redis://127.0.0.1:6379`).
#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_trait::async_trait;
use stack_app::revocation::{RevocationEvent, RevocationSink};
use stack_bus::{BusConfig, start};
use stack_core::Secret;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WARMUP: usize = 50;
const WAIT: Duration = Duration::from_secs(10);

/// Node B's sink: reports when each event of this run arrives.
struct TimingSink {
    operator_id: String,
    arrived: mpsc::UnboundedSender<(String, Instant)>,
    resynced: mpsc::UnboundedSender<()>,
}

#[async_trait]
impl RevocationSink for TimingSink {
    fn apply(&self, event: &RevocationEvent) {
        let now = Instant::now();
        if event.operator_id == self.operator_id
            && let Some(jti) = event.jtis.first()
        {
            let _ = self.arrived.send((jti.clone(), now));
        }
    }
    fn mark_stale(&self) {}
    async fn resync(&self) -> stack_core::Result<()> {
        let _ = self.resynced.send(());
        Ok(())
    }
}

/// A sink for node A, which only publishes.
struct Ignore;

#[async_trait]
impl RevocationSink for Ignore {
    fn apply(&self, _: &RevocationEvent) {}
    fn mark_stale(&self) {}
    async fn resync(&self) -> stack_core::Result<()> {
        Ok(())
    }
}

async fn run(name: &str, config: BusConfig, events: usize) -> anyhow::Result<Vec<Duration>> {
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let operator_id = format!("op_bench_{}_{name}", std::process::id());
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let (resynced_tx, mut resynced) = mpsc::unbounded_channel();
    let sink_b = Arc::new(TimingSink {
        operator_id: operator_id.clone(),
        arrived: arrived_tx,
        resynced: resynced_tx,
    });
    let a = start(
        config.clone(),
        format!("bench-{name}-a"),
        Arc::new(Ignore),
        cancel.clone(),
    )
    .await?;
    let _b = start(config, format!("bench-{name}-b"), sink_b, cancel.clone()).await?;
    tokio::time::timeout(WAIT, resynced.recv())
        .await
        .context("node B did not subscribe")?;

    let mut latencies = Vec::with_capacity(events);
    for i in 0..WARMUP + events {
        let jti = format!("pp_bench_{i:08}");
        let event = RevocationEvent {
            operator_id: operator_id.clone(),
            jtis: vec![jti.clone()],
            expires_at: 1_900_000_000,
            origin: format!("bench-{name}-a"),
            at_ms: 1_700_000_000_000,
            access_changed: false,
        };
        let sent = Instant::now();
        a.publish(&event).await?;
        let (got, at) = tokio::time::timeout(WAIT, arrived.recv())
            .await
            .with_context(|| format!("event {i} did not arrive"))?
            .context("bus stopped")?;
        if got != jti {
            bail!("expected {jti}, got {got}");
        }
        if i >= WARMUP {
            latencies.push(at.duration_since(sent));
        }
    }
    latencies.sort();
    Ok(latencies)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events: usize = match std::env::args().nth(1) {
        Some(n) => n.parse().context("events must be a number")?,
        None => 1000,
    };
    let env = |var: &str, default: &str| std::env::var(var).unwrap_or_else(|_| default.to_owned());
    let backends = [
        (
            "postgres",
            BusConfig::Postgres {
                url: Secret::new(env(
                    "STACK_TEST_POSTGRES_URL",
                    "postgres://postgres@127.0.0.1:5432/test",
                )),
            },
        ),
        (
            "redis",
            BusConfig::Redis {
                url: Secret::new(env("STACK_TEST_REDIS_URL", "redis://127.0.0.1:6379")),
            },
        ),
    ];
    println!("{events} events per backend, one at a time, after {WARMUP} warm-up events");
    println!("| backend | p50 | p99 | max |");
    println!("|---|---|---|---|");
    for (name, config) in backends {
        let sorted = run(name, config, events).await?;
        println!(
            "| {name} | {} | {} | {} |",
            micros(percentile(&sorted, 50.0)),
            micros(percentile(&sorted, 99.0)),
            micros(sorted.last().copied().unwrap_or_default()),
        );
    }
    Ok(())
}
