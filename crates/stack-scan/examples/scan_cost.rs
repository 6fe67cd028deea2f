//! A fixed workload for instruction counting: scans the benign web + e-mail rows of a
//! corpus (the throughput target's slice) PASSES times and prints how many bytes one pass
//! scanned. Run it under `valgrind --tool=callgrind` with 1 and with 6 passes; the
//! steady-state cost per byte is (instructions(6) - instructions(1)) / 5 / bytes, which
//! removes start-up, corpus parsing and lazy-DFA warm-up.
//!
//! ```sh
//! cargo build --release -p stack-scan --example scan_cost
//! valgrind --tool=callgrind --callgrind-out-file=cg.1 target/release/examples/scan_cost CORPUS 1
//! valgrind --tool=callgrind --callgrind-out-file=cg.6 target/release/examples/scan_cost CORPUS 6
//! ```
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use stack_scan::{ScanConfig, Scanner};

#[derive(serde::Deserialize)]
struct Row {
    text: String,
    label: u8,
    #[serde(default)]
    category: String,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .unwrap_or_else(|| "/work/shared/scan-corpus/dev.jsonl".to_string());
    let passes: usize = args.next().and_then(|p| p.parse().ok()).unwrap_or(1);
    let data = std::fs::read_to_string(&path).expect("read corpus");
    let texts: Vec<String> = data
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Row>(l).expect("corpus row"))
        .filter(|r| {
            r.label == 0 && matches!(r.category.as_str(), "web" | "email" | "hard:keyword-email")
        })
        .map(|r| r.text)
        .collect();
    let scanner = Scanner::new(&ScanConfig::default()).expect("scanner");
    let bytes: usize = texts.iter().map(String::len).sum();
    let mut flagged = 0usize;
    for _ in 0..passes {
        for t in &texts {
            flagged += usize::from(scanner.scan(t).is_flagged());
        }
    }
    println!(
        "{} texts, {bytes} bytes per pass, {passes} passes, flagged {}",
        texts.len(),
        flagged / passes.max(1)
    );
}
