//! Process helpers shared by the benchmark examples (examples cannot use
//! `tests/support`): find the release binary, start it on a temporary data
//! directory and read its first operator key and bound address.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `STACK_SERVER_BIN`, else the `stack-server` beside this example's
/// directory (`target/<profile>/examples/<this>` → `target/<profile>/stack-server`).
pub fn server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("STACK_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("stack-server"))
        .unwrap()
}

/// Starts `stack-server` on SQLite in `data` with extra environment; returns
/// the process, base URL and the first operator's key.
#[allow(dead_code)] // not every example uses it
pub fn start_stack(data: &Path, env: &[(&str, String)]) -> (Proc, String, String) {
    let (proc, base, key, _) = start_stack_keeping(data, env, None);
    (proc, base, key)
}

/// A name suffix no other run shares: this process's id and the time.
#[allow(dead_code)] // not every example uses it
pub fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{}_{nanos}", std::process::id())
}

/// Lines of a server's log kept for the caller.
pub type Kept = Arc<Mutex<Vec<String>>>;

/// [`start_stack`], also keeping every later line of the server's log that
/// contains `marker` (none when `None`).
pub fn start_stack_keeping(
    data: &Path,
    env: &[(&str, String)],
    marker: Option<&'static str>,
) -> (Proc, String, String, Kept) {
    let bin = server_bin();
    let mut cmd = Command::new(&bin);
    cmd.env("STACK_DATA_DIR", data)
        .env("STACK_LISTEN", "127.0.0.1:0")
        // rmcp logs three INFO lines per request; a deployment would quiet it too.
        .env("STACK_LOG", "info,rmcp=warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
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
    let kept = Kept::default();
    let into = Arc::clone(&kept);
    std::thread::spawn(move || {
        while let Ok((_, line)) = rx.recv() {
            if marker.is_some_and(|m| line.contains(m)) {
                into.lock().unwrap().push(line);
            }
        }
    });
    (Proc(child), base.unwrap(), key.unwrap(), kept)
}

/// `utime + stime` of a process in clock ticks (Linux), 0 elsewhere.
pub fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime
            // are fields 14 and 15 of the whole line.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// Context switches of a process so far, voluntary and involuntary, summed
/// over its live threads (`/proc/PID/task/*/status`, Linux), 0 elsewhere.
/// A thread that exits takes its count with it, so a process that starts
/// and ends threads under load is undercounted.
#[allow(dead_code)] // not every example reads it
pub fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
        .map(|status| switches_in_status(&status))
        .sum()
}

/// The context switches, voluntary and involuntary, that one thread's
/// `/proc/…/status` text counts.
#[allow(dead_code)] // not every example reads it
pub fn switches_in_status(status: &str) -> u64 {
    status
        .lines()
        .filter(|l| l.contains("ctxt_switches:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// Clock ticks the hypervisor took from this machine's CPUs (`steal`, the
/// eighth figure of `/proc/stat`'s `cpu` line), all CPUs together; 0 where
/// it cannot be read. A noisy neighbour on a VM shows here.
#[allow(dead_code)] // not every example reads it
pub fn steal_ticks() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("cpu "))?;
            line.split_whitespace().nth(8)?.parse::<u64>().ok()
        })
        .unwrap_or(0)
}

pub fn ticks_per_second() -> u64 {
    // USER_HZ is 100 on every Linux the project targets.
    if cfg!(target_os = "linux") { 100 } else { 0 }
}
