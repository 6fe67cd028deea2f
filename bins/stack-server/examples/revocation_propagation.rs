//! End-to-end revocation propagation between two `stack-server` processes.
//!
//! ```text
//! cargo build --release -p stack-server
//! cargo run --release -p stack-server --example revocation_propagation -- [PASSPORTS]
//! ```
//!
//! For each bus (`STACK_BUS=postgres`, then `redis` when reachable): starts
//! node A and node B (release binary, one fresh PostgreSQL database, one
//! master key), issues PASSPORTS (default 1000) passports on A, then for each
//! one: checks B says `valid:true`, revokes it on A, and polls B's
//! `POST /v1/passports/verify` in a tight loop (loopback, one keep-alive
//! connection, bounded at 5 s) until it says `valid:false`. Prints p50, p99
//! and max of (a) the time from A's revoke response to B's first refusal and
//! (b) from sending the revoke to B's first refusal.
//!
//! Env: `STACK_SERVER_BIN` (default: `stack-server` beside this example's
//! directory, i.e. `target/release/stack-server`), `STACK_TEST_POSTGRES_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`), `STACK_TEST_REDIS_URL`
//! (default `redis://127.0.0.1:6379`).
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
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

const BOUND: Duration = Duration::from_secs(5);

struct Node {
    child: Child,
    base: String,
    key: Option<String>,
}

impl Node {
    fn start(bin: &PathBuf, env: &[(String, String)]) -> Self {
        let mut child = Command::new(bin)
            .envs(env.iter().cloned())
            .env("STACK_LISTEN", "127.0.0.1:0")
            .env("STACK_LOG", "info")
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
                if line.contains("ERROR") || line.contains("WARN") {
                    eprintln!("[server] {line}");
                }
                let _ = tx.send((false, line));
            }
        });
        let mut key = None;
        let mut expect_key = false;
        let mut base = None;
        while base.is_none() || (expect_key && key.is_none()) {
            let (is_stdout, line) = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("server did not start");
            if is_stdout {
                if let Some(k) = line
                    .split_whitespace()
                    .find(|w| w.starts_with("sk_live_op_"))
                {
                    key = Some(k.to_owned());
                }
            } else if line.contains("created the first operator") {
                expect_key = true;
            } else if let Some(rest) = line.split("listening on http://").nth(1) {
                base = Some(format!(
                    "http://{}",
                    rest.split_whitespace().next().unwrap()
                ));
            }
        }
        std::thread::spawn(move || while rx.recv().is_ok() {});
        Self {
            child,
            base: base.unwrap(),
            key,
        }
    }

    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn post(client: &reqwest::Client, url: String, key: &str, body: Value) -> (u16, Value) {
    let res = client
        .post(url)
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
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

fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}_{nanos}", std::process::id())
}

fn master_key() -> String {
    let mut bytes = [0u8; 32];
    for (i, b) in unique().bytes().cycle().take(32).enumerate() {
        bytes[i] = b.wrapping_mul(131).wrapping_add(i as u8);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn redis_reachable(url: &str) -> bool {
    use std::net::ToSocketAddrs;
    let rest = url
        .trim_start_matches("redis://")
        .trim_start_matches("rediss://");
    let hostport = rest.rsplit('@').next().unwrap_or(rest);
    let hostport = hostport.split('/').next().unwrap_or(hostport);
    let hostport = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:6379")
    };
    hostport.to_socket_addrs().ok().is_some_and(|mut a| {
        a.any(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn show(d: Duration) -> String {
    format!("{} µs", d.as_micros())
}

struct Outcome {
    after_ack: Vec<Duration>,
    from_send: Vec<Duration>,
    polls: Vec<u32>,
    timeouts: usize,
}

async fn run_bus(bin: &PathBuf, admin: &str, bus: &str, redis: &str, n: usize) -> Outcome {
    let db_name = format!("stack_propagation_{bus}_{}", unique());
    let db_url = stack_store::scratch::create(admin, &db_name).await.unwrap();
    let mut env = vec![
        ("STACK_BUS".to_owned(), bus.to_owned()),
        ("STACK_MASTER_KEY".to_owned(), master_key()),
        ("STACK_DATABASE_URL".to_owned(), db_url),
    ];
    if bus == "redis" {
        env.push(("STACK_REDIS_URL".to_owned(), redis.to_owned()));
    }
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let with_dir = |d: &tempfile::TempDir| {
        let mut e = env.clone();
        e.push(("STACK_DATA_DIR".to_owned(), d.path().display().to_string()));
        e
    };
    let a = Node::start(bin, &with_dir(&dir_a));
    let key = a.key.clone().expect("node A printed no operator key");
    let b = Node::start(bin, &with_dir(&dir_b));
    // One keep-alive connection per node.
    let ca = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let cb = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();

    let (st, agent) = post(
        &ca,
        format!("{}/v1/agents/register", a.base),
        &key,
        json!({ "name": "propagation", "accountability_mode": "standard" }),
    )
    .await;
    assert_eq!(st, 201, "{agent}");
    let issue_started = Instant::now();
    let mut passports = Vec::with_capacity(n);
    for _ in 0..n {
        let (st, p) = post(
            &ca,
            format!("{}/v1/passports/issue", a.base),
            &key,
            json!({ "agent_id": agent["id"], "ttl_seconds": 3600 }),
        )
        .await;
        assert_eq!(st, 201, "{p}");
        passports.push((
            p["jti"].as_str().unwrap().to_owned(),
            p["token"].as_str().unwrap().to_owned(),
        ));
    }
    eprintln!(
        "[{bus}] issued {n} passports on A in {:?}",
        issue_started.elapsed()
    );

    let verify_b = format!("{}/v1/passports/verify", b.base);
    let revoke_a = format!("{}/v1/passports/revoke", a.base);
    let mut out = Outcome {
        after_ack: Vec::with_capacity(n),
        from_send: Vec::with_capacity(n),
        polls: Vec::with_capacity(n),
        timeouts: 0,
    };
    for (jti, token) in &passports {
        let body = json!({ "token": token });
        let (_, v) = post(&cb, verify_b.clone(), &key, body.clone()).await;
        assert_eq!(v["valid"], true, "B does not accept a fresh passport: {v}");
        let sent = Instant::now();
        let (st, r) = post(
            &ca,
            revoke_a.clone(),
            &key,
            json!({ "jti": jti, "reason": "propagation bench" }),
        )
        .await;
        let acked = Instant::now();
        assert_eq!(st, 200, "{r}");
        let mut polls = 0u32;
        loop {
            polls += 1;
            let (_, v) = post(&cb, verify_b.clone(), &key, body.clone()).await;
            if v["valid"] == false {
                assert_eq!(v["reason"], "revoked", "{v}");
                let now = Instant::now();
                out.after_ack.push(now - acked);
                out.from_send.push(now - sent);
                out.polls.push(polls);
                break;
            }
            if acked.elapsed() > BOUND {
                out.timeouts += 1;
                break;
            }
        }
    }
    b.stop();
    a.stop();
    stack_store::scratch::drop(admin, &db_name).await.unwrap();
    out
}

#[tokio::main]
async fn main() -> ExitCode {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("PASSPORTS must be a number"))
        .unwrap_or(1000);
    let bin = server_bin();
    if !bin.is_file() {
        eprintln!(
            "no server binary at {} (cargo build --release -p stack-server, or set STACK_SERVER_BIN)",
            bin.display()
        );
        return ExitCode::FAILURE;
    }
    let admin = std::env::var("STACK_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let redis =
        std::env::var("STACK_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    println!(
        "revocation propagation, two processes ({}), {n} passports per bus",
        bin.display()
    );
    println!(
        "| bus | n | timeouts | after A's ack p50 | p99 | max | from revoke sent p50 | p99 | max | polls p50/max |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut failed = false;
    for bus in ["postgres", "redis"] {
        if bus == "redis" && !redis_reachable(&redis) {
            println!("| redis | skipped: nothing answers at {redis} |");
            continue;
        }
        let mut o = run_bus(&bin, &admin, bus, &redis, n).await;
        o.after_ack.sort();
        o.from_send.sort();
        o.polls.sort_unstable();
        failed |= o.timeouts > 0;
        println!(
            "| {bus} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} |",
            o.after_ack.len(),
            o.timeouts,
            show(percentile(&o.after_ack, 50.0)),
            show(percentile(&o.after_ack, 99.0)),
            show(o.after_ack.last().copied().unwrap_or_default()),
            show(percentile(&o.from_send, 50.0)),
            show(percentile(&o.from_send, 99.0)),
            show(o.from_send.last().copied().unwrap_or_default()),
            o.polls.get(o.polls.len() / 2).copied().unwrap_or_default(),
            o.polls.last().copied().unwrap_or_default(),
        );
    }
    if failed {
        eprintln!("some revocations did not reach node B within {BOUND:?}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
