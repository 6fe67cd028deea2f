//! MCP `tools/call` throughput and latency: STACK's `/mcp` against the
//! official Python SDK's FastMCP server on the same machine, in one run.
//!
//! ```text
//! cargo xtask bench mcp [SECONDS_PER_LEVEL]
//! # or, by hand:
//! cargo build --release -p stack-server
//! STACK_BENCH_PYTHON=target/pyenv/bin/python \
//!   cargo run --release -p stack-server --example mcp_bench -- [SECONDS_PER_LEVEL] [LEVELS]
//! ```
//!
//! Starts the release `stack-server` (SQLite in a temporary directory, first
//! operator key as the Bearer) and `examples/mcp_bench_fastmcp.py` (stateless
//! Streamable HTTP with JSON responses, the SDK's `TokenVerifier` checking a
//! static Bearer key). For each concurrency level (default 1, 16 and 64
//! clients) and each server: every client has its own keep-alive HTTP
//! connection, sends `initialize` once, then `tools/call` of a read-only tool
//! (`stack_audit_chain_head` on STACK, `chain_head` on FastMCP) serially
//! until the level's time is up (default 10 s). Prints requests/s and p50/p99
//! latency per level and server, and the STACK/FastMCP throughput ratio.
//! Errors (non-200, JSON-RPC error or `isError`) are counted, not timed.
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

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const PROTOCOL: &str = "2025-11-25";

/// A server under test: where to post and what to call.
struct Target {
    label: &'static str,
    url: String,
    key: String,
    tool: &'static str,
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("STACK_SERVER_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/examples/<this> -> target/<profile>/stack-server
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("stack-server"))
        .unwrap()
}

/// Starts `stack-server` on SQLite; returns the process, base URL and the
/// first operator's key.
fn start_stack(data: &std::path::Path) -> (Proc, String, String) {
    let bin = server_bin();
    let mut child = Command::new(&bin)
        .env("STACK_DATA_DIR", data)
        .env("STACK_LISTEN", "127.0.0.1:0")
        // rmcp logs three INFO lines per request; a deployment would quiet it too.
        .env("STACK_LOG", "info,rmcp=warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let (tx, rx) = mpsc::channel::<(bool, String)>();
    let stdout = child.stdout.take().unwrap();
    let tx_out = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx_out.send((true, line));
        }
    });
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send((false, line));
        }
    });
    let (mut key, mut base) = (None, None);
    while key.is_none() || base.is_none() {
        let (is_stdout, line) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("stack-server did not start");
        if is_stdout {
            if let Some(k) = line
                .split_whitespace()
                .find(|w| w.starts_with("sk_live_op_"))
            {
                key = Some(k.to_owned());
            }
        } else if let Some(rest) = line.split("listening on http://").nth(1) {
            base = Some(format!(
                "http://{}",
                rest.split_whitespace().next().unwrap()
            ));
        }
    }
    std::thread::spawn(move || while rx.recv().is_ok() {});
    (Proc(child), base.unwrap(), key.unwrap())
}

/// Starts the FastMCP server; returns the process and base URL.
fn start_fastmcp(key: &str) -> (Proc, String) {
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
    (proc, format!("http://127.0.0.1:{port}"))
}

async fn post(client: &reqwest::Client, t: &Target, body: &Value) -> Result<Value, String> {
    let res = client
        .post(&t.url)
        .bearer_auth(&t.key)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", PROTOCOL)
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = res.status();
    let text = res.text().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{status}: {text}"));
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    if v.get("error").is_some() || v["result"]["isError"] == true {
        return Err(v.to_string());
    }
    Ok(v)
}

/// One client: `initialize`, then `tools/call` until `deadline`. Returns the
/// latencies of the successful calls (µs) and the number of failed ones.
async fn client_loop(t: &Target, deadline: Instant) -> (Vec<u32>, usize, Option<String>) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
        "protocolVersion": PROTOCOL, "capabilities": {},
        "clientInfo": {"name": "mcp_bench", "version": "0"}}});
    if let Err(e) = post(&client, t, &init).await {
        panic!("{}: initialize failed: {e}", t.label);
    }
    let (mut lat, mut errors, mut first_error) = (Vec::new(), 0, None);
    let mut id = 1u64;
    while Instant::now() < deadline {
        let body = json!({"jsonrpc":"2.0","id":id,"method":"tools/call",
            "params":{"name": t.tool, "arguments": {}}});
        id += 1;
        let sent = Instant::now();
        match post(&client, t, &body).await {
            Ok(_) => lat.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX)),
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    (lat, errors, first_error)
}

struct Level {
    rps: f64,
    p50: u32,
    p99: u32,
    errors: usize,
}

async fn run_level(t: &std::sync::Arc<Target>, clients: usize, secs: f64) -> Level {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let t = t.clone();
            tokio::spawn(async move { client_loop(&t, deadline).await })
        })
        .collect();
    let (mut all, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (lat, e, first) = task.await.unwrap();
        all.extend(lat);
        errors += e;
        if let Some(first) = first {
            eprintln!("{} ({clients} clients): first error: {first}", t.label);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        if all.is_empty() {
            return 0;
        }
        let rank = ((p / 100.0) * all.len() as f64).ceil() as usize;
        all[rank.clamp(1, all.len()) - 1]
    };
    Level {
        rps: all.len() as f64 / elapsed,
        p50: pct(50.0),
        p99: pct(99.0),
        errors,
    }
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

    let data = tempfile::tempdir().unwrap();
    let (_stack, stack_base, key) = start_stack(data.path());
    let (_fastmcp, fastmcp_base) = start_fastmcp(&key);
    let targets = [
        std::sync::Arc::new(Target {
            label: "STACK",
            url: format!("{stack_base}/mcp"),
            key: key.clone(),
            tool: "stack_audit_chain_head",
        }),
        std::sync::Arc::new(Target {
            label: "FastMCP",
            url: format!("{fastmcp_base}/mcp"),
            key,
            tool: "chain_head",
        }),
    ];
    // Warm up both (connections, caches, lazy initialisation); not recorded.
    for t in &targets {
        run_level(t, 4, 1.0).await;
    }

    println!("{secs} s per level; tools/call, protocol {PROTOCOL}, Bearer auth on both");
    println!();
    println!("| clients | server | requests/s | p50 | p99 | errors | STACK/FastMCP |");
    println!("|---|---|---|---|---|---|---|");
    for &clients in &levels {
        let stack = run_level(&targets[0], clients, secs).await;
        let fast = run_level(&targets[1], clients, secs).await;
        let ratio = if fast.rps > 0.0 {
            format!("{:.1}×", stack.rps / fast.rps)
        } else {
            "—".into()
        };
        for (t, l, r) in [
            (&targets[0], &stack, ratio.as_str()),
            (&targets[1], &fast, ""),
        ] {
            println!(
                "| {clients} | {} | {:.0} | {} | {} | {} | {r} |",
                t.label,
                l.rps,
                ms(l.p50),
                ms(l.p99),
                l.errors
            );
        }
    }
}
