//! libFuzzer target for the proxy policy: any bytes, split into a
//! constraint list (JSON), a request and a target URL, must never panic
//! `ConstraintSet::compile`, `ConstraintSet::check` or `parse_target`; a URL
//! that passes must re-parse to the same `Target`.
//!
//! Stable stand-in: the proptests at the end of
//! `crates/stack-proxy/tests/proxy.rs`.
//!
//!   cargo +nightly fuzz run constraints
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use stack_proxy::{ConstraintSet, RequestView, check_target, parse_target};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // constraints \n method \n url \n body
    let mut parts = text.splitn(4, '\n');
    let constraints = parts.next().unwrap_or_default();
    let method = parts.next().unwrap_or_default();
    let url = parts.next().unwrap_or_default();
    let body: Option<Value> = parts.next().and_then(|b| serde_json::from_str(b).ok());

    let hosts = vec!["api.example.com".to_owned(), url_host(url).to_owned()];
    let target = parse_target(url, &hosts);
    if let Ok(t) = &target {
        assert_eq!(parse_target(&t.url(), &hosts).as_ref(), Ok(t));
        assert!(!t.path.contains("/../") && !t.path.contains("//"));
    }

    let Ok(Value::Array(values)) = serde_json::from_str::<Value>(constraints) else {
        return;
    };
    let Ok(set) = ConstraintSet::compile(&values) else {
        return;
    };
    let view = RequestView::new(method, url)
        .with_host(url)
        .with_query("q", method);
    let view = match &body {
        Some(b) => view.with_body(b),
        None => view,
    };
    let _ = set.check(&view);
    if let Ok(t) = &target {
        let _ = check_target(&set, method, t, body.as_ref());
    }
    let _ = ConstraintSet::union(&set, &set);
});

/// The text between `://` and the next `/`, so some inputs reach the path
/// checks past the host allow-list.
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#']).next().unwrap_or_default()
}
