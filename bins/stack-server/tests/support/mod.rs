//! The shared harness of the end-to-end test binaries: start the real
//! `stack-server` binary against a fresh database, read its first key,
//! call it over HTTP, stop it with SIGTERM. Each test file says `mod support;`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    dead_code, // each test binary uses a different part
    unused_imports,
    unused_macros
)] // tests fail loudly

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

pub struct Server {
    pub child: Child,
    pub base: String,
    /// The first operator's key, when this start created it.
    pub key: Option<String>,
    #[allow(dead_code)] // kept for restarting with the same settings
    pub env: Vec<(String, String)>,
}

/// Where a server keeps its data; kept across restarts.
pub struct Data {
    _dir: tempfile::TempDir,
    #[allow(dead_code)] // kept for restarting with the same settings
    pub env: Vec<(String, String)>,
    pg: Option<(String, String)>,
}

impl Data {
    pub async fn new(backend: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mut env = vec![(
            "STACK_DATA_DIR".to_owned(),
            dir.path().display().to_string(),
        )];
        let mut pg = None;
        if backend == "postgres" {
            let admin = std::env::var("STACK_TEST_POSTGRES_URL").ok()?;
            let name = format!("stack_e2e_{}_{}", std::process::id(), rand_suffix());
            let url = stack_store::scratch::create(&admin, &name).await.unwrap();
            env.push(("STACK_DATABASE_URL".to_owned(), url));
            pg = Some((admin, name));
        }
        Some(Self { _dir: dir, env, pg })
    }

    pub async fn cleanup(self) {
        if let Some((admin, name)) = &self.pg {
            stack_store::scratch::drop(admin, name).await.unwrap();
        }
    }

    pub fn start(&self) -> Server {
        Server::start(self.env.clone())
    }

    /// Runs `stack-server operators create --name NAME` and returns the key.
    pub fn create_operator(&self, name: &str) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_stack-server"))
            .args(["operators", "create", "--name", name])
            .envs(self.env.clone())
            .env("STACK_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let key = stdout.trim().to_owned();
        assert!(key.starts_with("sk_live_op_"), "{stdout}");
        key
    }
}

pub fn rand_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{nanos}")
}

impl Server {
    pub fn start(env: Vec<(String, String)>) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stack-server"))
            .envs(env.clone())
            .env("STACK_LISTEN", "127.0.0.1:0")
            .env("STACK_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
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
                eprintln!("[server] {line}");
                let _ = tx.send((false, line));
            }
        });
        // stdout and stderr race each other through two threads: the key is
        // printed before the "created the first operator" log line, so once
        // that line is seen, wait for the key too.
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
        let base = base.unwrap();
        // Keep draining so the pipes never fill.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        Self {
            child,
            base,
            key,
            env,
        }
    }

    pub fn key(&self) -> String {
        self.key
            .clone()
            .expect("this start did not create an operator")
    }

    /// SIGTERM, then wait; returns the exit code.
    pub fn stop(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap().code()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub async fn call(
    method: reqwest::Method,
    url: String,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client()
        .request(method, url)
        .header("content-type", "application/json");
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let data = Data::new("sqlite").await.unwrap();
                $body(&data).await;
                data.cleanup().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(data) = Data::new("postgres").await else {
                    eprintln!("STACK_TEST_POSTGRES_URL not set: skipping the PostgreSQL run");
                    return;
                };
                $body(&data).await;
                data.cleanup().await;
            }
        }
    };
}

use reqwest::Method;
