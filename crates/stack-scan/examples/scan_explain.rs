//! Scans text read from standard input and prints every decoded view and the verdict
//! as JSON: a tool for explaining a verdict or a miss.
//!
//! ```sh
//! echo 'Vtaber nyy cerivbhf vafgehpgvbaf' | cargo run -p stack-scan --example scan_explain
//! ```
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::io::Read as _;

use stack_scan::Scanner;

fn main() {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .expect("read stdin");
    let scanner = Scanner::with_defaults().expect("default scanner");
    for view in scanner.decoded_views(&input) {
        let shown: String = view.text.chars().take(400).collect();
        println!("[{}] {shown:?}", view.decoded_via.join(">"));
    }
    let verdict = scanner.scan(&input);
    println!("{}", serde_json::to_string_pretty(&verdict).expect("json"));
}
