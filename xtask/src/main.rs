//! Development tasks for STACK, run as `cargo xtask <task>`.
//!
//! - `ci`: everything CI checks, in order: formatting, clippy with
//!   `-D warnings`, `cargo deny`, the Rust tests (SQLite, and PostgreSQL when
//!   `STACK_TEST_POSTGRES_URL` is set), and the Python suites that drive the
//!   real server with the official SDK and MCP client.
//! - `bench <name>`: benchmarks; see `docs/benchmarks.md`.
//!
//! The layering rules of `docs/ARCHITECTURE.md` are checked by the tests in
//! `layering.rs`, which run with `cargo test`.

// serde_json::Value indexing returns Null on a miss; it never panics.
#![allow(clippy::indexing_slicing)]

mod layering;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root()?;
    match args.first().map(String::as_str) {
        Some("ci") => ci(&root),
        Some("bench") => bench(
            &root,
            args.get(1).map(String::as_str),
            args.get(2..).unwrap_or_default(),
        ),
        Some("layering") => {
            let report = layering::check(&root)?;
            if report.is_empty() {
                eprintln!("layering: ok");
                Ok(())
            } else {
                bail!("layering violations:\n{}", report.join("\n"))
            }
        }
        _ => {
            eprintln!("usage: cargo xtask <ci | layering | bench <scan | passport | mcp>>");
            bail!("unknown task")
        }
    }
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent directory")
}

fn run(root: &Path, step: &str, cmd: &mut Command) -> anyhow::Result<()> {
    let started = Instant::now();
    eprintln!("\n==> {step}: {cmd:?}");
    let status = cmd
        .current_dir(root)
        .status()
        .with_context(|| format!("starting {step}"))?;
    eprintln!(
        "<== {step}: {:?} in {:.1}s",
        status.code(),
        started.elapsed().as_secs_f64()
    );
    if !status.success() {
        bail!("{step} failed");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn ci(root: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    run(root, "fmt", cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(
        root,
        "clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    ensure_cargo_deny(root)?;
    run(
        root,
        "deny",
        cargo().args(["deny", "--locked", "check", "bans", "licenses", "sources"]),
    )?;
    run(
        root,
        "build",
        cargo().args(["build", "--workspace", "--locked", "--bins"]),
    )?;
    run(
        root,
        "test",
        cargo().args(["test", "--workspace", "--locked"]),
    )?;
    fuzz_smoke(root)?;
    run(
        root,
        "python suites",
        Command::new("bash").arg("tests/run-python.sh"),
    )?;
    // Real MCP clients (MCP Inspector, Claude Code) against the built server;
    // about 2 s once installed, npm registry access only for the install.
    run(
        root,
        "real MCP clients",
        Command::new("bash").arg("tests/clients/run.sh"),
    )?;
    // The official MCP conformance suite (last: it builds the fixtures
    // binary, then restores the normal one).
    run(
        root,
        "MCP conformance",
        Command::new("bash").arg("tests/conformance/run.sh"),
    )?;
    eprintln!(
        "\nci: all steps passed in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Every fuzz target for a few seconds when a nightly toolchain and
/// cargo-fuzz are installed (libFuzzer needs nightly); the stable stand-in
/// (`fuzz/tests`, which replays the seed corpora and random inputs through the
/// same checks) always runs. Longer runs by hand: `cargo +nightly fuzz run <target>`.
fn fuzz_smoke(root: &Path) -> anyhow::Result<()> {
    let fuzz = root.join("fuzz");
    run(
        root,
        "fuzz stand-in (stable)",
        cargo().args(["test", "--manifest-path", "fuzz/Cargo.toml", "--tests"]),
    )?;
    let nightly = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .current_dir(&fuzz)
        .output()
        .is_ok_and(|o| o.status.success());
    if !nightly {
        eprintln!("fuzz: no nightly toolchain with cargo-fuzz here; ran the stable stand-in only");
        return Ok(());
    }
    for target in ["scan", "passport_verify", "constraints"] {
        // New inputs go to the ignored corpus/<target>; committed seeds are read too.
        let corpus = fuzz.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        let mut cmd = Command::new("cargo");
        cmd.args(["+nightly", "fuzz", "run", target]).arg(&corpus);
        let seeds = fuzz.join("seeds").join(target);
        if seeds.is_dir() {
            cmd.arg(&seeds);
        }
        cmd.args(["--", "-max_total_time=20", "-rss_limit_mb=2048"]);
        run(
            root,
            &format!("fuzz {target} (20 s)"),
            cmd.current_dir(&fuzz),
        )?;
    }
    Ok(())
}

fn ensure_cargo_deny(root: &Path) -> anyhow::Result<()> {
    let have = cargo()
        .args(["deny", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if have {
        return Ok(());
    }
    run(
        root,
        "install cargo-deny",
        cargo().args(["install", "cargo-deny", "--locked", "--version", "^0.20"]),
    )
}

fn bench(root: &Path, name: Option<&str>, rest: &[String]) -> anyhow::Result<()> {
    match name {
        Some("scan") => {
            // The corpus is not part of the repository: an argument, else
            // `STACK_SCAN_CORPUS`, else the shared checkout beside the repo.
            let corpus = rest
                .first()
                .cloned()
                .or_else(|| std::env::var("STACK_SCAN_CORPUS").ok())
                .unwrap_or_else(|| {
                    root.join("../shared/scan-corpus/dev.jsonl")
                        .display()
                        .to_string()
                });
            if !Path::new(&corpus).is_file() {
                bail!(
                    "scan corpus not found at {corpus}: pass a path (cargo xtask bench scan <corpus.jsonl>) or set STACK_SCAN_CORPUS"
                );
            }
            run(
                root,
                "bench scan",
                cargo().args([
                    "run",
                    "--release",
                    "--locked",
                    "-p",
                    "stack-scan",
                    "--example",
                    "scan_bench",
                    "--",
                    &corpus,
                ]),
            )
        }
        Some("passport") => {
            let mut bench = cargo();
            bench.args([
                "run",
                "--release",
                "--locked",
                "-p",
                "stack-passport",
                "--example",
                "passport_bench",
            ]);
            if let Some(iterations) = rest.first() {
                bench.args(["--", iterations]);
            }
            run(
                root,
                "bench passport (signing and verification)",
                &mut bench,
            )?;
            // Two server processes: the example runs the release binary.
            run(
                root,
                "build the release server",
                cargo().args(["build", "--release", "--locked", "-p", "stack-server"]),
            )?;
            let mut propagation = cargo();
            propagation.args([
                "run",
                "--release",
                "--locked",
                "-p",
                "stack-server",
                "--example",
                "revocation_propagation",
            ]);
            if let Some(passports) = rest.get(1) {
                propagation.args(["--", passports]);
            }
            run(
                root,
                "bench passport (revocation propagation, two processes)",
                &mut propagation,
            )
        }
        Some("mcp") => bench_mcp(root, rest),
        Some("proxy") => bench_proxy(root, rest),
        Some(other) => bail!("unknown benchmark {other}; known: scan, passport, mcp, proxy"),
        None => {
            bail!(
                "usage: cargo xtask bench <scan [corpus] | passport [iterations] [passports] | mcp [seconds] [levels] [rounds] | proxy [seconds] [rates] [rounds]>"
            )
        }
    }
}

/// `bench proxy`: latency added by STACK's proxy next to nginx as a plain
/// reverse proxy (installed with apt-get when missing and possible) and
/// the three floor paths of `proxy_bench` (a bare hyper proxy; the same
/// with a durable append per call flushed during the upstream call; and
/// with it flushed after the upstream has answered).
fn bench_proxy(root: &Path, rest: &[String]) -> anyhow::Result<()> {
    let has_nginx = || {
        Command::new("nginx")
            .arg("-v")
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has_nginx() {
        let installed = Command::new("apt-get")
            .args(["install", "-y", "-q", "nginx-light"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            eprintln!(
                "bench proxy: nginx is missing and could not be installed; its row is skipped"
            );
        }
    }
    run(
        root,
        "build the release server",
        cargo().args(["build", "--release", "--locked", "-p", "stack-server"]),
    )?;
    let mut bench = cargo();
    bench
        .args([
            "run",
            "--release",
            "--locked",
            "-p",
            "stack-server",
            "--example",
            "proxy_bench",
            "--",
        ])
        .args(rest);
    run(
        root,
        "bench proxy (direct, nginx, floors, STACK)",
        &mut bench,
    )
}

/// `bench mcp`: STACK's /mcp against the Python SDK's FastMCP server, in
/// alternating slices (`[seconds] [levels] [rounds]`, see the example). The
/// Python side needs the `mcp` package: `target/pyenv` (the CI suites'
/// environment) when it has it, else `target/pyenv-bench`, created here.
fn bench_mcp(root: &Path, rest: &[String]) -> anyhow::Result<()> {
    let has_mcp = |venv: &Path| {
        Command::new(venv.join("bin/python"))
            .args(["-c", "import mcp.server"])
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut venv = root.join("target/pyenv");
    if !has_mcp(&venv) {
        venv = root.join("target/pyenv-bench");
        if !has_mcp(&venv) {
            run(
                root,
                "create target/pyenv-bench",
                Command::new("python3").args(["-m", "venv"]).arg(&venv),
            )?;
            run(
                root,
                "install mcp into target/pyenv-bench",
                Command::new(venv.join("bin/pip")).args(["install", "--quiet", "mcp"]),
            )?;
        }
    }
    run(
        root,
        "build the release server",
        cargo().args(["build", "--release", "--locked", "-p", "stack-server"]),
    )?;
    let mut bench = cargo();
    bench
        .args([
            "run",
            "--release",
            "--locked",
            "-p",
            "stack-server",
            "--example",
            "mcp_bench",
            "--",
        ])
        .args(rest)
        .env("STACK_BENCH_PYTHON", venv.join("bin/python"));
    run(root, "bench mcp (STACK vs FastMCP, tools/call)", &mut bench)
}
