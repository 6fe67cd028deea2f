//! Integration tests for stack-audit: committed test vectors and tamper detection.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

use serde_json::{Value, json};
use stack_audit::{
    AuditDraft, AuditEntry, BreakReason, ChainHead, GENESIS_HASH, Layer, Outcome, canonical_bytes,
    seal, verify_chain,
};
use stack_core::Timestamp;

const OP: &str = "op_vectors";

/// A fixed three-entry chain. Changing anything here changes the vectors.
fn fixed_chain() -> Vec<AuditEntry> {
    let drafts = vec![
        AuditDraft::new("operator:op_vectors", Layer::System, "agent.register")
            .agent("agt_one")
            .target("agent", "agt_one")
            .details(json!({"name": "one", "accountability_mode": "enforced"})),
        {
            let mut d = AuditDraft::new("operator:op_vectors", Layer::Proxy, "credential.proxy")
                .agent("agt_one")
                .payload(
                    &json!({"method": "POST", "url": "https://slack.com/api/chat.postMessage"}),
                );
            d.passport_jti = Some("pp_abc".into());
            d.outcome = Outcome::Blocked;
            d.error_code = Some("CONSTRAINT_VIOLATION".into());
            d.error_message = Some("channel not allowed".into());
            d.duration_ms = Some(12);
            d.trace_id = Some("req_1".into());
            d
        },
        AuditDraft::new("operator:op_vectors", Layer::System, "agent.delete")
            .agent("agt_one")
            .target("agent", "agt_one"),
    ];
    let mut head = ChainHead::genesis();
    let mut out = Vec::new();
    for (i, d) in drafts.into_iter().enumerate() {
        let e = seal(
            OP,
            &head,
            format!("aud_vector{i}"),
            Timestamp::from_millis(1_776_955_632_000 + i as i64),
            d,
        );
        head = e.as_head();
        out.push(e);
    }
    out
}

#[test]
fn committed_vectors_match() {
    let chain = fixed_chain();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors.json");
    let actual: Vec<Value> = chain
        .iter()
        .map(|e| {
            json!({
                "canonical": String::from_utf8(canonical_bytes(e)).unwrap(),
                "entry_hash": e.entry_hash,
                "entry": e,
            })
        })
        .collect();
    if std::env::var_os("STACK_UPDATE_VECTORS").is_some() {
        std::fs::write(path, serde_json::to_string_pretty(&actual).unwrap() + "\n").unwrap();
    }
    let expected: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(
        actual, expected,
        "audit encoding changed: this breaks every stored chain"
    );
    // The vectors themselves are self-consistent for an outside verifier:
    // sha256(canonical) == entry_hash, and entries deserialize and verify.
    for v in &expected {
        let canonical = v["canonical"].as_str().unwrap();
        assert_eq!(
            stack_crypto::sha256_hex(canonical.as_bytes()),
            v["entry_hash"].as_str().unwrap()
        );
    }
    let parsed: Vec<AuditEntry> = expected
        .iter()
        .map(|v| serde_json::from_value(v["entry"].clone()).unwrap())
        .collect();
    assert!(verify_chain(OP, &parsed, None).ok);
}

#[test]
fn genesis_and_links() {
    let chain = fixed_chain();
    assert_eq!(chain[0].prev_entry_hash, GENESIS_HASH);
    assert_eq!(chain[0].seq, 1);
    for w in chain.windows(2) {
        assert_eq!(w[1].prev_entry_hash, w[0].entry_hash);
        assert_eq!(w[1].seq, w[0].seq + 1);
    }
    let v = verify_chain(OP, &chain, Some(&chain[2].as_head()));
    assert!(v.ok);
    assert_eq!(v.entries_checked, 3);
}

/// Every field is covered by the hash: changing any one is caught at that entry.
#[test]
fn every_field_is_protected() {
    type Mutate = fn(&mut AuditEntry);
    let mutations: Vec<(&str, Mutate)> = vec![
        ("entry_id", |e| e.entry_id.push('x')),
        ("timestamp", |e| e.timestamp += 1),
        ("agent_id", |e| e.agent_id = None),
        ("passport_jti", |e| e.passport_jti = Some("pp_other".into())),
        ("actor", |e| e.actor = "operator:op_evil".into()),
        ("layer", |e| e.layer = Layer::System),
        ("action", |e| e.action = "credential.retrieve".into()),
        ("outcome", |e| e.outcome = Outcome::Success),
        ("target_type", |e| e.target_type = Some("x".into())),
        ("target_id", |e| e.target_id = Some("x".into())),
        ("trace_id", |e| e.trace_id = None),
        ("duration_ms", |e| e.duration_ms = Some(13)),
        ("payload_hash", |e| e.payload_hash = Some("00".into())),
        ("error_code", |e| e.error_code = None),
        ("error_message", |e| e.error_message = Some("fine".into())),
        ("details", |e| e.details = json!({"x": 1})),
    ];
    for (field, mutate) in mutations {
        let mut chain = fixed_chain();
        mutate(&mut chain[1]);
        let v = verify_chain(OP, &chain, None);
        let b = v
            .first_break
            .unwrap_or_else(|| panic!("{field} change not detected"));
        assert_eq!(b.seq, 2, "{field}");
        assert!(
            matches!(b.reason, BreakReason::HashMismatch { .. }),
            "{field}: {:?}",
            b.reason
        );
    }
}

#[test]
fn deletion_reorder_insertion_and_truncation_are_located() {
    let chain = fixed_chain();
    let head = chain[2].as_head();

    let deleted = vec![chain[0].clone(), chain[2].clone()];
    let b = verify_chain(OP, &deleted, Some(&head)).first_break.unwrap();
    assert_eq!(b.entry_id.as_deref(), Some("aud_vector2"));
    assert!(matches!(
        b.reason,
        BreakReason::SeqGap {
            expected: 2,
            found: 3
        }
    ));

    let reordered = vec![chain[0].clone(), chain[2].clone(), chain[1].clone()];
    let b = verify_chain(OP, &reordered, Some(&head))
        .first_break
        .unwrap();
    assert_eq!(b.entry_id.as_deref(), Some("aud_vector2"));

    // Renumbering the moved entries to hide the gap still breaks the hash.
    let mut renumbered = reordered.clone();
    renumbered[1].seq = 2;
    renumbered[2].seq = 3;
    let b = verify_chain(OP, &renumbered, Some(&head))
        .first_break
        .unwrap();
    assert_eq!(b.entry_id.as_deref(), Some("aud_vector2"));

    let truncated = vec![chain[0].clone(), chain[1].clone()];
    let v = verify_chain(OP, &truncated, Some(&head));
    assert!(!v.ok);
    assert!(matches!(
        v.first_break.unwrap().reason,
        BreakReason::HeadMismatch {
            head_seq: 3,
            last_seq: 2,
            ..
        }
    ));

    let mut foreign = chain.clone();
    foreign[1].operator_id = "op_other".into();
    let b = verify_chain(OP, &foreign, None).first_break.unwrap();
    assert!(matches!(b.reason, BreakReason::WrongOperator { .. }));
}

#[test]
fn clock_going_backwards_keeps_time_monotonic() {
    let first = seal(
        OP,
        &ChainHead::genesis(),
        "aud_a".into(),
        Timestamp::from_millis(2_000),
        AuditDraft::new("operator:op_vectors", Layer::System, "x"),
    );
    let second = seal(
        OP,
        &first.as_head(),
        "aud_b".into(),
        Timestamp::from_millis(1_000),
        AuditDraft::new("operator:op_vectors", Layer::System, "y"),
    );
    assert_eq!(second.timestamp, 2_000);
    assert!(verify_chain(OP, &[first, second], None).ok);
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any chain built by `seal` verifies; flipping one byte of any
        /// string field of any entry is detected at or before that entry.
        #[test]
        fn sealed_chains_verify_and_tamper_is_found(
            actions in proptest::collection::vec("[a-z.]{1,12}", 1..8),
            victim in 0usize..8,
            detail in "[ -~]{0,20}",
        ) {
            let mut head = ChainHead::genesis();
            let mut chain = Vec::new();
            for (i, a) in actions.iter().enumerate() {
                let e = seal(OP, &head, format!("aud_{i}"), Timestamp::from_millis(i as i64),
                    AuditDraft::new("operator:op_vectors", Layer::System, a.clone())
                        .details(json!({"d": detail})));
                head = e.as_head();
                chain.push(e);
            }
            prop_assert!(verify_chain(OP, &chain, Some(&head)).ok);
            let victim = victim % chain.len();
            chain[victim].action.push('!');
            let v = verify_chain(OP, &chain, Some(&head));
            prop_assert!(!v.ok);
            prop_assert_eq!(v.first_break.unwrap().seq, (victim + 1) as i64);
        }
    }
}
