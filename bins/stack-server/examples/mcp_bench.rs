//! MCP `tools/call` throughput and latency: STACK's `/mcp` against the
//! official Python SDK's FastMCP server on the same machine, in one run.
//!
//! ```text
//! cargo xtask bench mcp [SECONDS_PER_LEVEL] [LEVELS] [ROUNDS]
//! # or, by hand:
//! cargo build --release -p stack-server
//! STACK_BENCH_PYTHON=target/pyenv/bin/python \
//!   cargo run --release -p stack-server --example mcp_bench -- [SECONDS_PER_LEVEL] [LEVELS] [ROUNDS]
//! ```
//!
//! Starts the release `stack-server` (SQLite in a temporary directory, first
//! operator key as the Bearer) and `examples/mcp_bench_fastmcp.py` (stateless
//! Streamable HTTP with JSON responses, the SDK's `TokenVerifier` checking a
//! static Bearer key). For each concurrency level (default 1, 16 and 64
//! clients) each server gets SECONDS_PER_LEVEL (default 10) of load, cut into
//! ROUNDS (default 5) slices that alternate between the two servers (STACK,
//! FastMCP, then FastMCP, STACK, …), so that both see the same background
//! load of the machine. In a slice every client opens its own keep-alive
//! HTTP/1.1 connection (`TCP_NODELAY`), sends `initialize` once, then
//! `tools/call` of a read-only tool (`stack_audit_chain_head` on STACK,
//! `chain_head` on FastMCP) serially until the slice is over.
//!
//! The load generator is deliberately lean (hyper's connection API, a body
//! from a template, the response read into a two-field struct) because it
//! shares the machine with the server it measures: its CPU time per request
//! is printed too, beside each server's (from `/proc/<pid>/stat`, Linux).
//! Prints requests/s, p50/p99 latency, errors and CPU per request per level
//! and server, the STACK/FastMCP throughput ratio, and the load average
//! before and after. Errors (non-200, JSON-RPC error or `isError`) are
//! counted, not timed.
//!
//! Env: `STACK_SERVER_BIN` (default `target/release/stack-server`, beside
//! this example's directory), `STACK_BENCH_PYTHON` (default `python3`; needs
//! the `mcp` package).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // a measurement tool: it reports on stdout and stops loudly

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Proc, cpu_ticks, start_stack, ticks_per_second};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

const PROTOCOL: &str = "2025-11-25";

/// A server under test: where to post and what to call.
struct Target {
    label: &'static str,
    addr: std::net::SocketAddr,
    authorization: http::HeaderValue,
    tool: &'static str,
    pid: u32,
}

/// Starts the FastMCP server; returns the process and its address.
fn start_fastmcp(key: &str) -> (Proc, std::net::SocketAddr) {
    let python = std::env::var("STACK_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/mcp_bench_fastmcp.py");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&python)
        .arg(&script)
        .arg(port.to_string())
        .arg(key)
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let proc = Proc(child);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "FastMCP server did not start (is `mcp` installed for {python}?)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (proc, addr)
}

/// The parts of a JSON-RPC answer the bench looks at.
#[derive(serde::Deserialize)]
struct Answer {
    result: Option<AnswerResult>,
    error: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct AnswerResult {
    #[serde(rename = "isError", default)]
    is_error: bool,
}

/// One client's connection.
struct Client {
    send: SendRequest<Full<Bytes>>,
}

impl Client {
    async fn connect(t: &Target) -> Result<Self, String> {
        let tcp = tokio::net::TcpStream::connect(t.addr)
            .await
            .map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { send })
    }

    async fn post(&mut self, t: &Target, body: String) -> Result<(), String> {
        let req = http::Request::post("/mcp")
            .header(http::header::HOST, t.addr.to_string())
            .header(http::header::AUTHORIZATION, t.authorization.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json, text/event-stream")
            .header("mcp-protocol-version", PROTOCOL)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        self.send.ready().await.map_err(|e| e.to_string())?;
        let res = self
            .send
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?;
        let status = res.status();
        let bytes = res
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if status != http::StatusCode::OK {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
        }
        match serde_json::from_slice::<Answer>(&bytes) {
            Ok(a) if a.error.is_none() && a.result.as_ref().is_some_and(|r| !r.is_error) => Ok(()),
            _ => Err(String::from_utf8_lossy(&bytes).into_owned()),
        }
    }
}

/// One client: connect, `initialize`, then `tools/call` until `deadline`.
/// Returns the latencies of the successful calls (µs), the number of failed
/// ones and the first error.
async fn client_loop(t: &Target, deadline: Instant) -> (Vec<u32>, usize, Option<String>) {
    let mut client = match Client::connect(t).await {
        Ok(c) => c,
        Err(e) => panic!("{}: cannot connect: {e}", t.label),
    };
    let init = format!(
        r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"{PROTOCOL}","capabilities":{{}},"clientInfo":{{"name":"mcp_bench","version":"0"}}}}}}"#
    );
    if let Err(e) = client.post(t, init).await {
        panic!("{}: initialize failed: {e}", t.label);
    }
    let (mut lat, mut errors, mut first_error) = (Vec::new(), 0, None);
    let mut id = 1u64;
    while Instant::now() < deadline {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{}","arguments":{{}}}}}}"#,
            t.tool
        );
        id += 1;
        let sent = Instant::now();
        match client.post(t, body).await {
            Ok(()) => lat.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX)),
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
                // A broken connection is replaced, as a real client would.
                if client.send.is_closed() {
                    match Client::connect(t).await {
                        Ok(c) => client = c,
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            }
        }
    }
    (lat, errors, first_error)
}

/// What one server did at one level, summed over its slices.
#[derive(Default)]
struct Tally {
    latencies: Vec<u32>,
    errors: usize,
    seconds: f64,
    cpu_ticks: u64,
    loadgen_ticks: u64,
}

impl Tally {
    fn rps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.latencies.len() as f64 / self.seconds
        } else {
            0.0
        }
    }

    fn pct(&mut self, p: f64) -> u32 {
        if self.latencies.is_empty() {
            return 0;
        }
        self.latencies.sort_unstable();
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }

    /// CPU microseconds per successful request.
    fn cpu_us(&self, ticks: u64) -> String {
        if self.latencies.is_empty() || ticks_per_second() == 0 {
            return "—".into();
        }
        let us = ticks as f64 * 1e6 / ticks_per_second() as f64 / self.latencies.len() as f64;
        format!("{us:.0} µs")
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| {
            let f: Vec<&str> = s.split_whitespace().take(3).collect();
            (f.len() == 3).then(|| f.join(" "))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Runs `clients` clients against `t` for `secs` and adds the outcome to `tally`.
async fn run_slice(t: &Arc<Target>, clients: usize, secs: f64, tally: &mut Tally) {
    let me = std::process::id();
    let (cpu0, gen0) = (cpu_ticks(t.pid), cpu_ticks(me));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let t = t.clone();
            tokio::spawn(async move { client_loop(&t, deadline).await })
        })
        .collect();
    for task in tasks {
        let (lat, e, first) = task.await.unwrap();
        tally.latencies.extend(lat);
        tally.errors += e;
        if let Some(first) = first {
            eprintln!("{} ({clients} clients): first error: {first}", t.label);
        }
    }
    tally.seconds += started.elapsed().as_secs_f64();
    tally.cpu_ticks += cpu_ticks(t.pid).saturating_sub(cpu0);
    tally.loadgen_ticks += cpu_ticks(me).saturating_sub(gen0);
}

fn ms(us: u32) -> String {
    format!("{:.2} ms", f64::from(us) / 1000.0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let secs: f64 = args.first().map_or(10.0, |s| s.parse().expect("SECONDS"));
    let levels: Vec<usize> = args.get(1).map_or(vec![1, 16, 64], |s| {
        s.split(',').map(|n| n.parse().expect("LEVELS")).collect()
    });
    let rounds: usize = args.get(2).map_or(5, |s| s.parse().expect("ROUNDS")).max(1);

    let data = tempfile::tempdir().unwrap();
    let (stack_proc, stack_base, key) = start_stack(data.path(), &[]);
    let (fastmcp_proc, fastmcp_addr) = start_fastmcp(&key);
    let authorization = http::HeaderValue::from_str(&format!("Bearer {key}")).unwrap();
    let stack_addr = stack_base
        .trim_start_matches("http://")
        .parse()
        .expect("STACK's address");
    let stack = Arc::new(Target {
        label: "STACK",
        addr: stack_addr,
        authorization: authorization.clone(),
        tool: "stack_audit_chain_head",
        pid: stack_proc.0.id(),
    });
    let fastmcp = Arc::new(Target {
        label: "FastMCP",
        addr: fastmcp_addr,
        authorization,
        tool: "chain_head",
        pid: fastmcp_proc.0.id(),
    });
    // Warm up both (connections, caches, lazy initialisation); not recorded.
    for t in [&stack, &fastmcp] {
        run_slice(t, 4, 1.0, &mut Tally::default()).await;
    }

    println!(
        "{secs} s per level and server in {rounds} alternating slices; tools/call, protocol {PROTOCOL}, Bearer auth on both"
    );
    println!("load average before: {}", loadavg());
    println!();
    println!(
        "| clients | server | requests/s | p50 | p99 | errors | server CPU/req | load generator CPU/req | STACK/FastMCP |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &clients in &levels {
        let (mut s, mut f) = (Tally::default(), Tally::default());
        let slice = secs / rounds as f64;
        for round in 0..rounds {
            if round % 2 == 0 {
                run_slice(&stack, clients, slice, &mut s).await;
                run_slice(&fastmcp, clients, slice, &mut f).await;
            } else {
                run_slice(&fastmcp, clients, slice, &mut f).await;
                run_slice(&stack, clients, slice, &mut s).await;
            }
        }
        let ratio = if f.rps() > 0.0 {
            format!("{:.1}×", s.rps() / f.rps())
        } else {
            "—".into()
        };
        for (label, tally, r) in [("STACK", &mut s, ratio.as_str()), ("FastMCP", &mut f, "")] {
            let (p50, p99) = (tally.pct(50.0), tally.pct(99.0));
            println!(
                "| {clients} | {label} | {:.0} | {} | {} | {} | {} | {} | {r} |",
                tally.rps(),
                ms(p50),
                ms(p99),
                tally.errors,
                tally.cpu_us(tally.cpu_ticks),
                tally.cpu_us(tally.loadgen_ticks),
            );
        }
    }
    println!();
    println!("load average after: {}", loadavg());
}
