//! libFuzzer target: any bytes, scanned with the default configuration and with a
//! tight budget, must not panic, hang or report spans outside the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stack_scan::{ScanBudget, ScanConfig, Scanner};

fn scanners() -> &'static [Scanner; 2] {
    static SCANNERS: std::sync::OnceLock<[Scanner; 2]> = std::sync::OnceLock::new();
    SCANNERS.get_or_init(|| {
        let tight = ScanConfig {
            budget: ScanBudget {
                max_input_bytes: 4096,
                max_depth: 2,
                max_views: 8,
                max_decoded_bytes: 8192,
                max_matches: 4,
            },
            ..ScanConfig::default()
        };
        [
            Scanner::with_defaults().expect("default scanner"),
            Scanner::new(&tight).expect("tight scanner"),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for scanner in scanners() {
        let verdict = stack_scan::scan(&text, scanner);
        for m in &verdict.matches {
            assert!(m.span.start <= m.span.end && m.span.end <= text.len());
        }
        assert!((0.0..=1.0).contains(&verdict.score));
    }
});
