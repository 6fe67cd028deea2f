//! Latency the credential proxy adds: a direct call to a local upstream,
//! the same call through nginx as a plain reverse proxy (injecting a static
//! `Authorization` header), and through STACK's `POST /v1/proxy` (passport
//! verification, grant and constraint checks, credential injection and a
//! durable audit append), all on loopback, in one run, at fixed request
//! rates. Three more paths give the floor of the design: a minimal Rust
//! reverse proxy on hyper that only forwards with the credential header,
//! the same with a 300-byte `fdatasync`ed append per call overlapped with
//! the upstream call, and the same with the append flushed after the
//! upstream has answered, as a record of the answer must be
//! (`STACK_BENCH_FLOOR=0` leaves them out).
//!
//! ```text
//! cargo xtask bench proxy [SECONDS_PER_RATE] [RATES] [ROUNDS]
//! # or, by hand:
//! cargo build --release -p stack-server
//! cargo run --release -p stack-server --example proxy_bench -- 10 100,500,1000 5
//! ```
//!
//! Open loop: request `i` of a rate `R` is issued at `start + i/R` in a task
//! of its own, whatever happened to earlier requests (a slow response does
//! not delay the next request, so queueing shows up in the figures instead
//! of being hidden); its latency runs from the moment it is issued to the
//! last byte of the answer (not from the due time: tokio's timer fires up
//! to 1 ms late, jitter of the generator that is not any path's latency). One shared keep-alive connection pool per path. Each rate's
//! seconds are cut into ROUNDS slices that alternate between the paths
//! (direct, nginx, STACK, STACK, nginx, direct, …), so background load on a
//! shared machine falls on all of them alike. Added latency
//! = the path's percentile minus the direct call's percentile at the same
//! rate. The `steal` column is the share of the machine's CPU time the
//! hypervisor gave to other guests during the path's slices: on a VM, a
//! slice with steal shows stalls that are not the path's. For nginx and
//! STACK (processes of their own) the table also gives the server's CPU
//! time and context switches (all threads, voluntary and involuntary) per
//! answered call, read from `/proc` around their slices; for the plain
//! floor, those of its one thread. STACK runs on
//! SQLite (`synchronous=FULL`, so every audit append is fsynced) unless
//! `STACK_BENCH_DATABASE_URL` names a PostgreSQL server (a database on it
//! to connect to; each run creates and drops a scratch database of its
//! own there); `TMPDIR` on a
//! tmpfs (`/dev/shm`) takes the disk's flush out of STACK and the durable
//! floor alike.
//!
//! Env: `STACK_SERVER_BIN` (default `target/release/stack-server`),
//! `STACK_BENCH_FLOOR` (`0`: no floor paths), `STACK_BENCH_STEPS` (`1`: also
//! print where STACK's time went, from its `stack::proxy::timing` log),
//! `STACK_BENCH_NGINX` (default `nginx` on `PATH`; without it the nginx row
//! is skipped), `STACK_BENCH_DATABASE_URL`, `STACK_BENCH_SLOW_MS` (print each
//! call slower than that, with where in its slice it was issued),
//! `STACK_BENCH_STEPS_FILE` (with `STACK_BENCH_STEPS=1`: append every call's
//! timing line to that file), `STACK_BENCH_SERVER_WORKERS` (the server's
//! `STACK_WORKER_THREADS`).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // a measurement tool: it reports on stdout and stops loudly

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Proc, context_switches, cpu_ticks, start_stack_keeping, steal_ticks, switches_in_status,
    ticks_per_second,
};
use serde_json::{Value, json};

/// The smallest added latency a ratio divides by, µs.
const FLOOR_US: u64 = 50;

const SECRET: &str = "bench_upstream_secret_0123456789abcdef";

/// Serves `app` on a loopback port of its own, on a thread of its own with a
/// current-thread runtime (as nginx runs one worker); returns the port and
/// the thread's id (Linux; 0 where `/proc/thread-self` cannot be read).
fn serve_on_own_thread(app: axum::Router) -> (u16, u32) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let tid = std::fs::read_link("/proc/thread-self")
            .ok()
            .and_then(|p| p.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0);
        tid_tx.send(tid).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (port, tid_rx.recv().unwrap())
}

/// The upstream: one small JSON answer.
fn start_upstream() -> u16 {
    serve_on_own_thread(
        axum::Router::new()
            .fallback(|| async { axum::Json(json!({"ok": true, "items": [1, 2, 3]})) }),
    )
    .0
}

/// The floor of any proxy built the way STACK is (Rust, hyper on Tokio):
/// a reverse proxy that does nothing but forward to the upstream with the
/// credential header. With `log`, every call also appends 300 bytes to
/// that file and waits for `fdatasync` before it answers, the flush running
/// on a blocking thread: with [`Durable::During`] *while* the upstream call
/// is in flight, the cheapest way to make a record of each call durable
/// before its answer leaves; with [`Durable::After`] once the upstream has
/// answered, as a record that holds the answer (STACK's audit entry holds
/// its status, duration and scan) must. Measures what the target leaves for
/// everything else.
fn start_floor(upstream: u16, durable: Durable, dir: &Path) -> (u16, u32) {
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    let log = durable.log_name().map(|name| {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(name))
            .unwrap();
        Arc::new(Mutex::new(f))
    });
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()
        .unwrap();
    serve_on_own_thread(axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let client = client.clone();
        let log = log.clone();
        async move {
            let pq = uri.path_and_query().map_or("/", |p| p.as_str());
            let url = format!("http://127.0.0.1:{upstream}{pq}");
            let forward = async {
                let r = client.get(url).bearer_auth(SECRET).send().await?;
                r.bytes().await
            };
            let flush = move |log: Arc<Mutex<std::fs::File>>| {
                tokio::task::spawn_blocking(move || {
                    let mut f = log.lock().unwrap();
                    f.write_all(&[b'x'; 300])?;
                    f.sync_data()
                })
            };
            let answer = match (log, durable) {
                (None, _) => forward.await,
                (Some(log), Durable::During) => {
                    let (answer, flushed) = tokio::join!(forward, flush(log));
                    flushed.unwrap().unwrap();
                    answer
                }
                (Some(log), _) => {
                    let answer = forward.await;
                    flush(log).await.unwrap().unwrap();
                    answer
                }
            };
            match answer {
                Ok(body) => axum::response::IntoResponse::into_response((
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )),
                Err(e) => axum::response::IntoResponse::into_response((
                    axum::http::StatusCode::BAD_GATEWAY,
                    e.to_string(),
                )),
            }
        }
    }))
}

/// nginx as a plain reverse proxy to the upstream, one worker, keep-alive
/// to the upstream, a static credential header. `None` when nginx is absent.
fn start_nginx(dir: &Path, upstream: u16) -> Option<(Proc, u16)> {
    let bin = std::env::var("STACK_BENCH_NGINX").unwrap_or_else(|_| "nginx".into());
    if Command::new(&bin)
        .arg("-v")
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("nginx not found ({bin}); its row is skipped (apt-get install nginx-light)");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\nmaster_process off;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         upstream up {{ server 127.0.0.1:{upstream}; keepalive 64; }}\n\
         server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://up;\n\
         proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
         proxy_set_header Authorization \"Bearer {SECRET}\";\n    }}\n  }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new(&bin)
        .args(["-p", &d.to_string(), "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    let proc = Proc(child);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nginx did not start; see {d}/error.log"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((proc, port))
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    key: Option<&str>,
    passport: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client.request(method, url);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(p) = passport {
        req = req.header("x-passport-token", p);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Connection, agent, grant with constraints and a passport; returns the token.
async fn set_up_stack(base: &str, key: &str, origin: &str) -> String {
    let c = reqwest::Client::new();
    let post = reqwest::Method::POST;
    let (st, conn) = call(
        &c,
        post.clone(),
        &format!("{base}/v1/services/custom"),
        Some(key),
        None,
        Some(json!({"name": "bench", "credential": SECRET, "base_url": origin})),
    )
    .await;
    assert_eq!(st, 201, "{conn}");
    let (st, agent) = call(
        &c,
        post.clone(),
        &format!("{base}/v1/agents/register"),
        Some(key),
        None,
        Some(json!({"name": "bench-agent", "accountability_mode": "standard"})),
    )
    .await;
    assert_eq!(st, 201, "{agent}");
    let (st, grant) = call(
        &c,
        post.clone(),
        &format!("{base}/v1/services/grant"),
        Some(key),
        None,
        Some(json!({
            "agent_id": agent["id"], "service_connection_id": conn["id"], "scopes": ["read"],
            "constraints": [
                {"path": "method", "op": "in", "value": ["GET"]},
                {"path": "path", "op": "starts_with", "value": "/v1/"},
                {"path": "query.limit", "op": "matches", "value": "^[0-9]{1,3}$"}
            ]
        })),
    )
    .await;
    assert_eq!(st, 201, "{grant}");
    let (st, pp) = call(
        &c,
        post,
        &format!("{base}/v1/passports/issue"),
        Some(key),
        None,
        Some(json!({"agent_id": agent["id"], "ttl_seconds": 3600})),
    )
    .await;
    assert_eq!(st, 201, "{pp}");
    pp["token"].as_str().unwrap().to_owned()
}

/// Whether and when a floor path makes its record durable.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Durable {
    No,
    /// Flushed while the upstream call is in flight.
    During,
    /// Flushed once the upstream has answered.
    After,
}

impl Durable {
    /// The file the floor appends its records to, in the data directory.
    fn log_name(self) -> Option<&'static str> {
        match self {
            Self::No => None,
            Self::During => Some("floor-during.bin"),
            Self::After => Some("floor-after.bin"),
        }
    }
}

#[derive(Clone)]
enum Route {
    Direct(String),
    Nginx(String),
    /// [`start_floor`], without or with the durable append.
    Floor(String, Durable),
    Stack {
        url: String,
        key: String,
        passport: String,
        body: String,
    },
}

impl Route {
    fn label(&self) -> &'static str {
        match self {
            Self::Direct(_) => "direct",
            Self::Nginx(_) => "nginx",
            Self::Floor(_, Durable::No) => "floor: hyper proxy",
            Self::Floor(_, Durable::During) => "floor: hyper proxy + fdatasync",
            Self::Floor(_, Durable::After) => "floor: hyper proxy + fdatasync after",
            Self::Stack { .. } => "STACK",
        }
    }

    async fn once(&self, client: &reqwest::Client) -> Result<(), String> {
        let res = match self {
            Self::Direct(url) => client.get(url).bearer_auth(SECRET).send().await,
            Self::Nginx(url) | Self::Floor(url, _) => client.get(url).send().await,
            Self::Stack {
                url,
                key,
                passport,
                body,
            } => {
                client
                    .post(url)
                    .bearer_auth(key)
                    .header("x-passport-token", passport)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
            }
        }
        .map_err(|e| e.to_string())?;
        let status = res.status();
        let body = res.bytes().await.map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
        }
        if matches!(self, Self::Stack { .. }) && !body.starts_with(b"{") {
            return Err("not a proxy envelope".into());
        }
        Ok(())
    }
}

struct Run {
    p50: u64,
    p99: u64,
    /// The slowest call: one stall shows here even when it is too short
    /// or too rare to move the p99.
    max: u64,
    errors: usize,
    first_error: Option<String>,
    /// The serving process's CPU time per answered call, µs (`None` when
    /// the path has no process of its own to read).
    cpu_us: Option<f64>,
    /// The serving process's context switches per answered call (all its
    /// threads, voluntary and involuntary).
    switches: Option<f64>,
    /// CPU time the hypervisor took from the machine during the path's
    /// slices, as a share of their CPU time (all CPUs).
    steal: f64,
}

/// Latencies (µs) and errors of one or more slices of a path.
#[derive(Default)]
struct Samples {
    lat: Vec<u64>,
    errors: usize,
    first_error: Option<String>,
    /// CPU time of the serving process (or thread) during the slices, µs.
    cpu_us: Option<u64>,
    /// Context switches of the serving process (or thread) during the slices.
    switches: Option<u64>,
    /// Machine-wide steal ticks during the slices, and the slices' length.
    steal_ticks: u64,
    elapsed: Duration,
}

impl Samples {
    fn run(mut self) -> Run {
        self.lat.sort_unstable();
        let cpu_us = self
            .cpu_us
            .filter(|_| !self.lat.is_empty())
            .map(|us| us as f64 / self.lat.len() as f64);
        let switches = self
            .switches
            .filter(|_| !self.lat.is_empty())
            .map(|n| n as f64 / self.lat.len() as f64);
        let lat = &self.lat;
        let pct = |p: f64| {
            if lat.is_empty() {
                return 0;
            }
            let rank = ((p / 100.0) * lat.len() as f64).ceil() as usize;
            lat[rank.clamp(1, lat.len()) - 1]
        };
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let available = self.elapsed.as_secs_f64() * ticks_per_second() as f64 * cpus as f64;
        let steal = if available > 0.0 {
            self.steal_ticks as f64 / available
        } else {
            0.0
        };
        Run {
            steal,
            p50: pct(50.0),
            p99: pct(99.0),
            max: lat.last().copied().unwrap_or(0),
            errors: self.errors,
            first_error: self.first_error,
            cpu_us,
            switches,
        }
    }
}

/// `rate` requests per second for `secs`, open loop, added to `into`;
/// latencies in µs from the moment each request is issued.
async fn run_slice(
    path: &Route,
    client: &reqwest::Client,
    rate: u32,
    secs: f64,
    into: &mut Samples,
    report_slow: bool,
) {
    let total = (f64::from(rate) * secs).round() as u64;
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::with_capacity(usize::try_from(total).unwrap());
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / f64::from(rate));
        tokio::time::sleep_until(due).await;
        let path = path.clone();
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            // From the moment the request is issued: tokio's timer fires up
            // to a millisecond after `due`, which is the generator's jitter,
            // not the path's latency. The schedule itself stays open loop.
            let sent = std::time::Instant::now();
            let r = path.once(&client).await;
            (sent.elapsed().as_micros() as u64, r)
        }));
    }
    // STACK_BENCH_SLOW_MS: print each call slower than that (where in the
    // slice it was issued), to tell a stall from a spread.
    let slow_us = std::env::var("STACK_BENCH_SLOW_MS")
        .ok()
        .filter(|_| report_slow)
        .and_then(|v| v.parse::<u64>().ok())
        .map(|ms| ms * 1000);
    for (i, t) in tasks.into_iter().enumerate() {
        let (us, r) = t.await.unwrap();
        if slow_us.is_some_and(|limit| us > limit) {
            eprintln!(
                "slow: {} at {rate}/s, call {i} (issued +{:.0} ms into the slice): {}",
                path.label(),
                i as f64 * 1000.0 / f64::from(rate),
                ms(us)
            );
        }
        match r {
            Ok(()) => into.lat.push(us),
            Err(e) => {
                into.errors += 1;
                into.first_error.get_or_insert(e);
            }
        }
    }
}

/// `rate` requests per second for `secs` on one path.
async fn run_rate(path: &Route, client: &reqwest::Client, rate: u32, secs: f64) -> Run {
    let mut s = Samples::default();
    run_slice(path, client, rate, secs, &mut s, false).await;
    s.run()
}

/// Whose CPU time and context switches a path's row shows.
#[derive(Debug, Clone, Copy)]
enum Meter {
    /// A process, all its threads.
    Process(u32),
    /// A thread of this process.
    Thread(u32),
}

impl Meter {
    /// CPU time so far, µs: a process's from its clock ticks, a thread's
    /// from the scheduler's nanoseconds (`schedstat`), finer than ticks
    /// for a path that spends tens of µs per call.
    fn cpu_us(self) -> u64 {
        match self {
            Self::Process(pid) => cpu_ticks(pid) * 1_000_000 / ticks_per_second().max(1),
            Self::Thread(tid) => {
                std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
                    .ok()
                    .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                    .map_or(0, |ns| ns / 1_000)
            }
        }
    }

    /// Context switches so far, voluntary and involuntary.
    fn switches(self) -> u64 {
        match self {
            Self::Process(pid) => context_switches(pid),
            Self::Thread(tid) => std::fs::read_to_string(format!("/proc/self/task/{tid}/status"))
                .map_or(0, |status| switches_in_status(&status)),
        }
    }
}

/// Every path for `secs` at `rate`, cut into `rounds` slices that alternate
/// between the paths (direct, nginx, STACK, STACK, nginx, direct, …), so
/// that all of them meet the same background load. `pids[i]`: the process
/// serving path `i`, whose CPU time is read around its slices.
async fn run_interleaved(
    paths: &[Route],
    pids: &[Option<Meter>],
    clients: &[reqwest::Client],
    rate: u32,
    secs: f64,
    rounds: u32,
) -> Vec<Run> {
    let slice = secs / f64::from(rounds.max(1));
    let mut samples: Vec<Samples> = paths.iter().map(|_| Samples::default()).collect();
    for round in 0..rounds.max(1) {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..paths.len()).collect()
        } else {
            (0..paths.len()).rev().collect()
        };
        for i in order {
            let pid = pids.get(i).copied().flatten();
            let before = pid.map(|p| (p.cpu_us(), p.switches()));
            let (stolen, began) = (steal_ticks(), Instant::now());
            run_slice(&paths[i], &clients[i], rate, slice, &mut samples[i], true).await;
            samples[i].steal_ticks += steal_ticks().saturating_sub(stolen);
            samples[i].elapsed += began.elapsed();
            if let (Some(pid), Some((ticks, switches))) = (pid, before) {
                let spent = pid.cpu_us().saturating_sub(ticks);
                *samples[i].cpu_us.get_or_insert(0) += spent;
                let switched = pid.switches().saturating_sub(switches);
                *samples[i].switches.get_or_insert(0) += switched;
            }
        }
    }
    samples.into_iter().map(Samples::run).collect()
}

fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

fn added(path: u64, direct: u64) -> String {
    ms(path.saturating_sub(direct))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let secs: f64 = args.first().map_or(10.0, |s| s.parse().expect("SECONDS"));
    let rates: Vec<u32> = args.get(1).map_or(vec![100, 500, 1000], |s| {
        s.split(',').map(|n| n.parse().expect("RATES")).collect()
    });
    let rounds: u32 = args.get(2).map_or(5, |s| s.parse().expect("ROUNDS"));

    let upstream = start_upstream();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("stack.toml");
    // The bench makes more calls than the free tier's monthly allowance.
    std::fs::write(&cfg, "proxy_quota_free = 100000000\n").unwrap();
    // STACK_BENCH_STEPS=1: the server logs where each call's time went.
    let steps = std::env::var("STACK_BENCH_STEPS").is_ok_and(|v| v == "1");
    let log = if steps {
        "warn,stack_server=info,stack::proxy::timing=debug"
    } else {
        "warn,stack_server=info"
    };
    let mut env = vec![
        ("STACK_PROXY_ALLOW_PRIVATE", "127.0.0.0/8".to_owned()),
        ("STACK_PROXY_ALLOW_HTTP", "1".to_owned()),
        ("STACK_PROXY_RESOLVE", "upstream.bench=127.0.0.1".to_owned()),
        ("STACK_CONFIG", cfg.display().to_string()),
        ("STACK_LOG", log.to_owned()),
    ];
    // The server's Tokio worker count, to compare runtime settings.
    if let Ok(n) = std::env::var("STACK_BENCH_SERVER_WORKERS") {
        env.push(("STACK_WORKER_THREADS", n));
    }
    // PostgreSQL: a scratch database of this run's own on that server,
    // dropped at the end (a database a server has used holds signing keys
    // sealed under that server's master key, which the next run's fresh
    // data directory would not have).
    let (backend, scratch) = match std::env::var("STACK_BENCH_DATABASE_URL") {
        Ok(admin) if !admin.is_empty() => {
            let name = format!("stack_proxy_bench_{}", common::unique());
            let url = stack_store::scratch::create(&admin, &name)
                .await
                .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
            env.push(("STACK_DATABASE_URL", url));
            ("PostgreSQL", Some((admin, name)))
        }
        _ => ("SQLite", None),
    };
    let data = dir.path().join("data");
    let (stack, base, key, kept) = start_stack_keeping(&data, &env, Some("proxied call"));
    let origin = format!("http://upstream.bench:{upstream}");
    let passport = set_up_stack(&base, &key, &origin).await;
    let nginx_dir = dir.path().join("nginx");
    std::fs::create_dir_all(&nginx_dir).unwrap();
    let nginx = start_nginx(&nginx_dir, upstream);

    let resource = "/v1/items?limit=25";
    let mut paths = vec![Route::Direct(format!(
        "http://127.0.0.1:{upstream}{resource}"
    ))];
    if let Some((_, port)) = &nginx {
        paths.push(Route::Nginx(format!("http://127.0.0.1:{port}{resource}")));
    }
    // The plain floor's thread: all of its work runs there.
    let mut floor_thread = None;
    // STACK_BENCH_FLOOR=0 leaves the floor paths out.
    if std::env::var("STACK_BENCH_FLOOR").map_or(true, |v| v != "0") {
        for durable in [Durable::No, Durable::During, Durable::After] {
            let (port, tid) = start_floor(upstream, durable, &data);
            if durable == Durable::No && tid != 0 {
                floor_thread = Some(tid);
            }
            paths.push(Route::Floor(
                format!("http://127.0.0.1:{port}{resource}"),
                durable,
            ));
        }
    }
    paths.push(Route::Stack {
        url: format!("{base}/v1/proxy"),
        key: key.clone(),
        passport,
        body: json!({"service": "custom", "method": "GET", "url": format!("{origin}{resource}")})
            .to_string(),
    });
    // Whose CPU time and context switches are read: STACK's and nginx's
    // processes (nginx is one: `master_process off`), and the plain floor's
    // thread, where all of its work runs. The other floors run part of
    // each call on blocking threads this process shares with the load
    // generator, so theirs cannot be told apart.
    let pids: Vec<Option<Meter>> = paths
        .iter()
        .map(|p| match p {
            Route::Stack { .. } => Some(Meter::Process(stack.0.id())),
            Route::Nginx(_) => nginx.as_ref().map(|(proc, _)| Meter::Process(proc.0.id())),
            Route::Floor(_, Durable::No) => floor_thread.map(Meter::Thread),
            _ => None,
        })
        .collect();
    let clients: Vec<reqwest::Client> = paths
        .iter()
        .map(|_| {
            reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .tcp_nodelay(true)
                .build()
                .unwrap()
        })
        .collect();
    // Warm up every path (connections, caches); not recorded.
    for (p, c) in paths.iter().zip(&clients) {
        let r = run_rate(p, c, 200, 1.0).await;
        if let Some(e) = r.first_error {
            panic!("{} fails: {e}", p.label());
        }
    }

    kept.lock().unwrap().clear();
    let mut step_rows = Vec::new();
    println!(
        "{secs} s per rate and path in {rounds} alternating slices, open loop, loopback; STACK on {backend} (durable audit append per call)"
    );
    println!();
    println!(
        "| rate (req/s) | path | p50 | p99 | max | added p50 | added p99 | errors | server CPU per call | server switches per call | steal |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for &rate in &rates {
        let runs = run_interleaved(&paths, &pids, &clients, rate, secs, rounds).await;
        if steps {
            // Give the log reader a moment to catch up with the last slice.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let lines = std::mem::take(&mut *kept.lock().unwrap());
            // STACK_BENCH_STEPS_FILE=PATH: every call's timing line too.
            if let Ok(path) = std::env::var("STACK_BENCH_STEPS_FILE") {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap();
                for l in &lines {
                    writeln!(f, "rate={rate} {l}").unwrap();
                }
            }
            step_rows.push((rate, step_percentiles(&lines)));
        }
        let direct = &runs[0];
        for (p, r) in paths.iter().zip(&runs) {
            let (a50, a99) = if matches!(p, Route::Direct(_)) {
                ("—".to_owned(), "—".to_owned())
            } else {
                (added(r.p50, direct.p50), added(r.p99, direct.p99))
            };
            let cpu = r
                .cpu_us
                .map_or_else(|| "—".to_owned(), |us| format!("{us:.0} µs"));
            let switches = r
                .switches
                .map_or_else(|| "—".to_owned(), |n| format!("{n:.1}"));
            println!(
                "| {rate} | {} | {} | {} | {} | {a50} | {a99} | {} | {cpu} | {switches} | {:.1} % |",
                p.label(),
                ms(r.p50),
                ms(r.p99),
                ms(r.max),
                r.errors,
                r.steal * 100.0
            );
            if let Some(e) = &r.first_error {
                eprintln!("{} at {rate}/s: first error: {e}", p.label());
            }
        }
        if nginx.is_some() {
            // Differences of percentiles are noisy even with interleaved
            // slices; a floor of 50 µs keeps a near-zero nginx figure from
            // turning the ratio into noise.
            let ng = runs[1].p99.saturating_sub(direct.p99).max(FLOOR_US);
            for (p, r) in paths.iter().zip(&runs) {
                if matches!(
                    p,
                    Route::Stack { .. } | Route::Floor(_, Durable::During | Durable::After)
                ) {
                    let added = r.p99.saturating_sub(direct.p99);
                    ratios.push((rate, p.label(), added as f64 / ng as f64));
                }
            }
        }
    }
    println!();
    for (rate, label, r) in ratios {
        println!(
            "added p99, {label} / max(nginx, {FLOOR_US} µs) at {rate} req/s: {r:.1}× (target for STACK ≤ 2×)"
        );
    }
    if !step_rows.is_empty() {
        println!();
        println!("inside STACK, per proxied call (server's timing log), p50 / p99:");
        println!();
        let heads: Vec<&str> = STEPS.iter().map(|(_, label)| *label).collect();
        println!("| rate (req/s) | calls | {} |", heads.join(" | "));
        println!("|---|---|{}", "---|".repeat(STEPS.len()));
        for (rate, (n, cells)) in step_rows {
            println!("| {rate} | {n} | {} |", cells.join(" | "));
        }
    }
    if let Some((admin, name)) = scratch {
        drop(stack);
        if let Err(e) = stack_store::scratch::drop(&admin, &name).await {
            eprintln!("cannot drop the scratch database {name}: {e}");
        }
    }
    if backend == "SQLite" {
        let (p50, p99) = fdatasync_floor(&data, 2000, Duration::ZERO);
        println!(
            "floor of the durable append alone: fdatasync of a 300-byte append in the data directory, p50 {}, p99 {} (2000 appends, back to back)",
            ms(p50),
            ms(p99)
        );
        // Paced as the calls are: a disk that idles between flushes can
        // flush much more slowly than one kept busy (Round 10).
        let (p50, p99) = fdatasync_floor(&data, 1000, Duration::from_millis(3));
        println!(
            "the same, one append every 3 ms: p50 {}, p99 {} (1000 appends)",
            ms(p50),
            ms(p99)
        );
    }
}

/// The fields of the server's `stack::proxy::timing` event (µs) and their
/// column labels.
const STEPS: [(&str, &str); 5] = [
    ("passport_us", "passport"),
    ("decide_us", "decide"),
    ("upstream_us", "upstream call"),
    ("audit_us", "audit commit"),
    ("total_us", "total in STACK"),
];

/// Number of timing lines and, per [`STEPS`] field, "p50 / p99" in ms.
fn step_percentiles(lines: &[String]) -> (usize, Vec<String>) {
    let cells = STEPS
        .iter()
        .map(|(field, _)| {
            let key = format!("{field}=");
            let mut v: Vec<u64> = lines
                .iter()
                .filter_map(|l| {
                    let rest = l.split(key.as_str()).nth(1)?;
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    digits.parse().ok()
                })
                .collect();
            if v.is_empty() {
                return "—".to_owned();
            }
            v.sort_unstable();
            let at = |p: usize| v[(v.len() * p / 100).min(v.len() - 1)];
            format!("{} / {}", ms(at(50)), ms(at(99)))
        })
        .collect();
    (lines.len(), cells)
}

/// Latency of appending 300 bytes to a file in `dir` and waiting for
/// `fdatasync`, what every durable commit of the SQLite WAL pays at least:
/// p50 and p99 in µs, with `gap` between one flush's end and the next append.
fn fdatasync_floor(dir: &Path, n: usize, gap: Duration) -> (u64, u64) {
    use std::io::Write;
    let path = dir.join("fsync-probe.bin");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let mut us: Vec<u64> = (0..n)
        .map(|_| {
            std::thread::sleep(gap);
            f.write_all(&[b'x'; 300]).unwrap();
            let t = Instant::now();
            f.sync_data().unwrap();
            u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX)
        })
        .collect();
    drop(f);
    let _ = std::fs::remove_file(&path);
    us.sort_unstable();
    (us[n / 2], us[n * 99 / 100])
}
