//! Chain verification: recompute every hash and check every link.

use serde::Serialize;

use crate::{AuditEntry, ChainHead, entry_hash};

/// Why a chain is broken at an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum BreakReason {
    /// The entry's content no longer matches its hash (a field was changed).
    HashMismatch { stored: String, computed: String },
    /// The entry does not point at the previous entry's hash (an entry was
    /// inserted, removed or moved).
    PrevHashMismatch { expected: String, found: String },
    /// `seq` is not the next number (an entry was removed or reordered).
    SeqGap { expected: i64, found: i64 },
    /// The entry claims another operator's chain.
    WrongOperator { found: String },
    /// Time went backwards relative to the previous entry.
    TimestampRegression { previous: i64, found: i64 },
    /// The recorded head says the chain is longer or different than its entries.
    HeadMismatch {
        head_seq: i64,
        head_hash: String,
        last_seq: i64,
        last_hash: String,
    },
}

impl BreakReason {
    pub fn describe(&self) -> String {
        match self {
            Self::HashMismatch { .. } => "entry content does not match its hash (modified)".into(),
            Self::PrevHashMismatch { .. } => {
                "entry does not link to the previous entry (inserted, removed or reordered)".into()
            }
            Self::SeqGap { expected, found } => {
                format!("expected sequence number {expected}, found {found} (removed or reordered)")
            }
            Self::WrongOperator { found } => format!("entry belongs to operator {found}"),
            Self::TimestampRegression { previous, found } => {
                format!("timestamp {found} is before the previous entry's {previous}")
            }
            Self::HeadMismatch {
                head_seq, last_seq, ..
            } => format!(
                "recorded chain head is at entry {head_seq} but the entries end at {last_seq} (truncated)"
            ),
        }
    }
}

/// The first break found in a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    /// The entry at which the chain breaks (`None` when the entries are
    /// intact but end before the recorded head).
    pub entry_id: Option<String>,
    pub seq: i64,
    pub reason: BreakReason,
}

/// The result of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub ok: bool,
    pub entries_checked: i64,
    pub head: ChainHead,
    pub first_break: Option<ChainBreak>,
}

/// Verifies a chain one entry at a time, so a store can stream it in pages.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    operator_id: String,
    expected_seq: i64,
    prev_hash: String,
    prev_timestamp: i64,
    checked: i64,
    first_break: Option<ChainBreak>,
}

impl ChainVerifier {
    /// Starts at the genesis of `operator_id`'s chain.
    pub fn new(operator_id: &str) -> Self {
        Self::starting_after(operator_id, &ChainHead::genesis())
    }

    /// Starts after a trusted point (for verifying a later range).
    pub fn starting_after(operator_id: &str, after: &ChainHead) -> Self {
        Self {
            operator_id: operator_id.to_owned(),
            expected_seq: after.seq.saturating_add(1),
            prev_hash: after.hash.clone(),
            prev_timestamp: after.timestamp,
            checked: 0,
            first_break: None,
        }
    }

    /// Whether a break has been found (later entries are then not checked).
    pub fn is_broken(&self) -> bool {
        self.first_break.is_some()
    }

    /// Checks the next entry. Returns `false` once the chain is broken.
    pub fn push(&mut self, e: &AuditEntry) -> bool {
        if self.first_break.is_some() {
            return false;
        }
        let reason = if e.operator_id != self.operator_id {
            Some(BreakReason::WrongOperator {
                found: e.operator_id.clone(),
            })
        } else if e.seq != self.expected_seq {
            Some(BreakReason::SeqGap {
                expected: self.expected_seq,
                found: e.seq,
            })
        } else if e.prev_entry_hash != self.prev_hash {
            Some(BreakReason::PrevHashMismatch {
                expected: self.prev_hash.clone(),
                found: e.prev_entry_hash.clone(),
            })
        } else if e.timestamp < self.prev_timestamp {
            Some(BreakReason::TimestampRegression {
                previous: self.prev_timestamp,
                found: e.timestamp,
            })
        } else {
            let computed = entry_hash(e);
            let same = stack_crypto::constant_time_eq(computed.as_bytes(), e.entry_hash.as_bytes());
            (!same).then(|| BreakReason::HashMismatch {
                stored: e.entry_hash.clone(),
                computed,
            })
        };
        if let Some(reason) = reason {
            self.first_break = Some(ChainBreak {
                entry_id: Some(e.entry_id.clone()),
                seq: e.seq,
                reason,
            });
            return false;
        }
        self.checked += 1;
        self.expected_seq = e.seq.saturating_add(1);
        self.prev_hash = e.entry_hash.clone();
        self.prev_timestamp = e.timestamp;
        true
    }

    /// Ends verification. When `recorded_head` is given (the store's own
    /// record of where the chain ends), a chain whose last entries were
    /// deleted is reported too.
    pub fn finish(self, recorded_head: Option<&ChainHead>) -> Verification {
        let last = ChainHead {
            seq: self.expected_seq.saturating_sub(1),
            hash: self.prev_hash.clone(),
            timestamp: self.prev_timestamp,
        };
        let mut first_break = self.first_break;
        if first_break.is_none()
            && let Some(h) = recorded_head
            && (h.seq != last.seq || h.hash != last.hash)
        {
            first_break = Some(ChainBreak {
                entry_id: None,
                seq: last.seq.saturating_add(1),
                reason: BreakReason::HeadMismatch {
                    head_seq: h.seq,
                    head_hash: h.hash.clone(),
                    last_seq: last.seq,
                    last_hash: last.hash.clone(),
                },
            });
        }
        Verification {
            ok: first_break.is_none(),
            entries_checked: self.checked,
            head: last,
            first_break,
        }
    }
}

/// Verifies a whole chain from genesis.
pub fn verify_chain<'a>(
    operator_id: &str,
    entries: impl IntoIterator<Item = &'a AuditEntry>,
    recorded_head: Option<&ChainHead>,
) -> Verification {
    let mut v = ChainVerifier::new(operator_id);
    for e in entries {
        if !v.push(e) {
            break;
        }
    }
    v.finish(recorded_head)
}
