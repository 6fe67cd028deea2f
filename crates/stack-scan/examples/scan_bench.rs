//! Measures the scanner on a labelled corpus (JSONL with `id`, `text`, `label`,
//! `encoding`, `category`) and prints TPR per encoding family, FPR on benign text,
//! throughput, and a 1 KB / 1 MB / 10 MB linear-cost timing.
//!
//! ```sh
//! cargo run --release -p stack-scan --example scan_bench -- /work/shared/scan-corpus/dev.jsonl
//! # tuning aids (dev split only): --misses FILE --false-positives FILE
//! # a stored operator configuration (JSON): --config FILE;  skip the size timing: --no-linear
//! ```
//!
//! Rows are split deterministically by a hash of their id: 70% "dev" (the part the
//! catalog may be tuned on) and 30% "holdout" (never looked at while tuning).
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Instant;

use stack_scan::{ScanConfig, Scanner};

/// CPU time of this thread in seconds (Linux `schedstat`), so that throughput is per
/// core even when other processes share the machine; `None` elsewhere.
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

#[derive(serde::Deserialize)]
struct Row {
    id: String,
    text: String,
    label: u8,
    #[serde(default)]
    encoding: String,
    #[serde(default)]
    category: String,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Split {
    Dev,
    Holdout,
}

/// FNV-1a over the id: stable across runs and platforms.
fn split_of(id: &str) -> Split {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    if h % 100 < 70 {
        Split::Dev
    } else {
        Split::Holdout
    }
}

fn family(encoding: &str) -> String {
    if encoding.starts_with("other:") {
        "other".to_string()
    } else {
        encoding.to_string()
    }
}

#[derive(Default, Clone, Copy)]
struct Count {
    hit: usize,
    total: usize,
}

impl Count {
    fn add(&mut self, flagged: bool) {
        self.total += 1;
        if flagged {
            self.hit += 1;
        }
    }
    fn rate(&self) -> String {
        if self.total == 0 {
            "    -".to_string()
        } else {
            format!("{:.3}", self.hit as f64 / self.total as f64)
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut path = None;
    let mut misses_path = None;
    let mut fps_path = None;
    let mut skip_linear = false;
    let mut config_path = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--misses" => misses_path = args.next(),
            "--false-positives" => fps_path = args.next(),
            "--no-linear" => skip_linear = true,
            "--config" => config_path = args.next(),
            _ => path = Some(a),
        }
    }
    let path = path.unwrap_or_else(|| "/work/shared/scan-corpus/dev.jsonl".to_string());
    let data = std::fs::read_to_string(&path).expect("read corpus");
    let rows: Vec<Row> = data
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("corpus row"))
        .collect();
    let config: ScanConfig = match &config_path {
        Some(p) => serde_json::from_str(&std::fs::read_to_string(p).expect("read config"))
            .expect("config JSON"),
        None => ScanConfig::default(),
    };
    let scanner = Scanner::new(&config).expect("scanner");
    println!(
        "corpus: {path} ({} rows, {:.2} MB); detectors: {}",
        rows.len(),
        data.len() as f64 / 1e6,
        scanner.detector_count()
    );

    // Quality.
    let flagged: Vec<bool> = rows
        .iter()
        .map(|r| scanner.scan(&r.text).is_flagged())
        .collect();
    let mut tpr: BTreeMap<(String, Split), Count> = BTreeMap::new();
    let mut fpr: BTreeMap<(String, Split), Count> = BTreeMap::new();
    let mut misses = Vec::new();
    let mut fps = Vec::new();
    for (row, &f) in rows.iter().zip(&flagged) {
        let split = split_of(&row.id);
        if row.label == 1 {
            for key in ["ALL".to_string(), family(&row.encoding)] {
                tpr.entry((key, split)).or_default().add(f);
            }
            if row.encoding.starts_with("other:") {
                tpr.entry((row.encoding.clone(), split)).or_default().add(f);
            }
            if !f && split == Split::Dev {
                misses.push(row);
            }
        } else {
            if row.category == "security_discussion" {
                fpr.entry(("security_discussion (not core)".into(), split))
                    .or_default()
                    .add(f);
                continue;
            }
            fpr.entry(("ALL core benign".into(), split))
                .or_default()
                .add(f);
            let slice = if row.category.starts_with("hard:") {
                if row.category.starts_with("hard:benign_") {
                    "hard:bastion_traps".to_string()
                } else {
                    row.category.clone()
                }
            } else {
                "easy:".to_string() + &row.category
            };
            fpr.entry((slice, split)).or_default().add(f);
            if f && split == Split::Dev {
                fps.push(row);
            }
        }
    }
    println!("\nTPR by encoding family (flagged = suspicious or critical)");
    println!(
        "{:<26} {:>13} {:>13} {:>13}",
        "family", "dev (70%)", "holdout (30%)", "all"
    );
    let fams: Vec<String> = {
        let mut v: Vec<String> = tpr.keys().map(|(k, _)| k.clone()).collect();
        v.dedup();
        v
    };
    for fam in fams {
        let d = tpr
            .get(&(fam.clone(), Split::Dev))
            .copied()
            .unwrap_or_default();
        let h = tpr
            .get(&(fam.clone(), Split::Holdout))
            .copied()
            .unwrap_or_default();
        let a = Count {
            hit: d.hit + h.hit,
            total: d.total + h.total,
        };
        println!(
            "{:<26} {:>6} ({:>4}) {:>6} ({:>4}) {:>6} ({:>4})",
            fam,
            d.rate(),
            d.total,
            h.rate(),
            h.total,
            a.rate(),
            a.total
        );
    }
    println!("\nFPR on benign text");
    println!(
        "{:<32} {:>13} {:>13} {:>13}",
        "slice", "dev (70%)", "holdout (30%)", "all"
    );
    let slices: Vec<String> = {
        let mut v: Vec<String> = fpr.keys().map(|(k, _)| k.clone()).collect();
        v.dedup();
        v
    };
    for s in slices {
        let d = fpr
            .get(&(s.clone(), Split::Dev))
            .copied()
            .unwrap_or_default();
        let h = fpr
            .get(&(s.clone(), Split::Holdout))
            .copied()
            .unwrap_or_default();
        let a = Count {
            hit: d.hit + h.hit,
            total: d.total + h.total,
        };
        println!(
            "{:<32} {:>6} ({:>4}) {:>6} ({:>4}) {:>6} ({:>4})",
            s,
            d.rate(),
            d.total,
            h.rate(),
            h.total,
            a.rate(),
            a.total
        );
    }

    if let Some(p) = misses_path {
        let mut f = std::fs::File::create(p).expect("misses file");
        for r in &misses {
            writeln!(f, "{}", serde_json::json!({"id": r.id, "encoding": r.encoding, "category": r.category, "text": r.text})).expect("write");
        }
    }
    if let Some(p) = fps_path {
        let mut f = std::fs::File::create(p).expect("fps file");
        for r in &fps {
            let v = scanner.scan(&r.text);
            writeln!(f, "{}", serde_json::json!({"id": r.id, "category": r.category, "matches": v.matches, "text": r.text})).expect("write");
        }
    }

    // Throughput (single thread).
    println!(
        "\nThroughput (single thread, release build; MB/s per CPU-second, wall-clock in brackets)"
    );
    type Pick = Box<dyn Fn(&Row) -> bool>;
    let slices: [(&str, Pick); 4] = [
        ("all rows", Box::new(|_| true)),
        (
            "benign web + email",
            Box::new(|r: &Row| {
                r.label == 0
                    && matches!(r.category.as_str(), "web" | "email" | "hard:keyword-email")
            }),
        ),
        (
            "benign docs",
            Box::new(|r: &Row| r.label == 0 && r.category == "doc"),
        ),
        ("all benign", Box::new(|r: &Row| r.label == 0)),
    ];
    for (name, pick) in &slices {
        let texts: Vec<&str> = rows
            .iter()
            .filter(|r| pick(r))
            .map(|r| r.text.as_str())
            .collect();
        let bytes: usize = texts.iter().map(|t| t.len()).sum();
        let reps = (20_000_000 / bytes.max(1)).clamp(1, 50);
        let start = Instant::now();
        let cpu_start = thread_cpu_seconds();
        let mut flagged_count = 0usize;
        for _ in 0..reps {
            for t in &texts {
                flagged_count += usize::from(scanner.scan(t).is_flagged());
            }
        }
        let wall = start.elapsed().as_secs_f64();
        let cpu = match (cpu_start, thread_cpu_seconds()) {
            (Some(a), Some(b)) if b > a => b - a,
            _ => wall,
        };
        println!(
            "{:<20} {:>6} docs {:>7.2} MB  {:>8.1} MB/s  {:>9.0} docs/s  [{:>6.1} MB/s wall]  (x{reps}, flagged {})",
            name,
            texts.len(),
            bytes as f64 / 1e6,
            (bytes * reps) as f64 / 1e6 / cpu,
            (texts.len() * reps) as f64 / cpu,
            (bytes * reps) as f64 / 1e6 / wall,
            flagged_count / reps
        );
    }

    if skip_linear {
        return;
    }
    // Linear cost: benign text repeated to 1 KB, 1 MB, 10 MB.
    println!("\nLinear cost (benign web/email/doc text concatenated; CPU time per scan)");
    let seed: String = rows
        .iter()
        .filter(|r| r.label == 0 && matches!(r.category.as_str(), "web" | "email" | "doc"))
        .map(|r| r.text.as_str())
        .collect::<Vec<_>>()
        .join("\n\n");
    for size in [1_000usize, 1_000_000, 10_000_000] {
        let mut text = String::with_capacity(size + 4096);
        while text.len() < size {
            text.push_str(&seed);
        }
        let cut = (0..=size)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text.truncate(cut);
        let reps = (20_000_000 / size).clamp(1, 2000);
        let start = Instant::now();
        let cpu_start = thread_cpu_seconds();
        let mut verdict = None;
        for _ in 0..reps {
            verdict = Some(scanner.scan(&text));
        }
        let wall = start.elapsed().as_secs_f64();
        let total = match (cpu_start, thread_cpu_seconds()) {
            (Some(a), Some(b)) if b > a => b - a,
            _ => wall,
        };
        let secs = total / reps as f64;
        let v = verdict.expect("ran");
        println!(
            "{:>10} bytes: {:>10.3} ms/scan  {:>8.1} MB/s  verdict {} ({} matches)",
            size,
            secs * 1e3,
            size as f64 / 1e6 / secs,
            v.verdict.as_str(),
            v.matches.len()
        );
    }
}
