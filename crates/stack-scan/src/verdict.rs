//! The result of a scan: a verdict level, a score and the matches that explain it.
//!
//! The serde shape is a wire contract read by the REST layer, the MCP tool and the SDK
//! (which reads `match.pattern_id`). Change it only additively.

use serde::{Deserialize, Serialize};

use crate::catalog::{Category, Severity};

/// Overall classification of a scanned text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictLevel {
    /// No medium or high severity detector fired.
    Clean,
    /// At least one medium severity detector fired (or several low ones).
    Suspicious,
    /// At least one high severity detector fired (or several medium ones).
    Critical,
}

impl VerdictLevel {
    /// Stable lower-case name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clean => "clean",
            Self::Suspicious => "suspicious",
            Self::Critical => "critical",
        }
    }
}

/// Byte range in the scanned input (after lossy UTF-8 decoding and truncation to the
/// input budget). For matches found in a decoded layer it is the range of the encoded
/// text the layer was decoded from, or for character-level folds the mapped range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// Inclusive start byte offset.
    pub start: usize,
    /// Exclusive end byte offset.
    pub end: usize,
}

/// One detector hit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Match {
    /// Detector id, e.g. `override.ignore_previous` or `custom.<id>`.
    pub detector: String,
    /// Same as `detector`; kept for clients that read `match.pattern_id`.
    pub pattern_id: String,
    /// Detector category.
    pub category: Category,
    /// Effective severity (after operator overrides).
    pub severity: Severity,
    /// Where in the input the hit (or the encoded text that decoded to it) lies.
    pub span: Span,
    /// Decoding layers, outermost first, that had to be undone before the detector
    /// matched; empty for a hit in the raw text. E.g. `["url", "base64"]`.
    pub decoded_via: Vec<String>,
    /// The matched text as seen by the detector (decoded), at most 160 characters.
    pub excerpt: String,
}

/// Result of [`crate::scan`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// `clean`, `suspicious` or `critical`.
    pub verdict: VerdictLevel,
    /// 0.0 (nothing found) to 1.0; a noisy-OR of the severity weights of distinct detectors.
    pub score: f64,
    /// All hits, strongest first, at most one per (detector, decoding path).
    pub matches: Vec<Match>,
    /// Convenience copy of `matches[0]` (`null` when clean of matches).
    #[serde(rename = "match")]
    pub first_match: Option<Match>,
    /// True when the input was longer than the budget and only a prefix was scanned.
    #[serde(default)]
    pub truncated: bool,
    /// True when the decoding budget (depth, views or decoded bytes) ran out, so some
    /// encoded content may not have been examined.
    #[serde(default)]
    pub budget_exhausted: bool,
}

impl Verdict {
    /// A clean verdict with no matches.
    pub fn clean() -> Self {
        Self {
            verdict: VerdictLevel::Clean,
            score: 0.0,
            matches: Vec::new(),
            first_match: None,
            truncated: false,
            budget_exhausted: false,
        }
    }

    /// True unless the verdict is `clean`.
    pub fn is_flagged(&self) -> bool {
        self.verdict != VerdictLevel::Clean
    }

    /// Builds a verdict from matches using the documented rule (see `docs/scanner.md`):
    /// critical if any high match or ≥3 distinct medium detectors; suspicious if any
    /// medium match or ≥2 distinct low detectors; clean otherwise.
    pub fn from_matches(mut matches: Vec<Match>, truncated: bool, budget_exhausted: bool) -> Self {
        matches.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(a.decoded_via.len().cmp(&b.decoded_via.len()))
                .then(a.span.start.cmp(&b.span.start))
        });
        let mut distinct: Vec<(&str, Severity)> = Vec::new();
        for m in &matches {
            if !distinct.iter().any(|(d, _)| *d == m.detector) {
                distinct.push((m.detector.as_str(), m.severity));
            }
        }
        let count = |s: Severity| distinct.iter().filter(|(_, sev)| *sev == s).count();
        let (high, medium, low) = (
            count(Severity::High),
            count(Severity::Medium),
            count(Severity::Low),
        );
        let verdict = if high > 0 || medium >= 3 {
            VerdictLevel::Critical
        } else if medium > 0 || low >= 2 {
            VerdictLevel::Suspicious
        } else {
            VerdictLevel::Clean
        };
        let clean_prob: f64 = distinct
            .iter()
            .map(|(_, s)| 1.0 - s.weight())
            .product::<f64>();
        let score = ((1.0 - clean_prob) * 1000.0).round() / 1000.0;
        let first_match = matches.first().cloned();
        Self {
            verdict,
            score,
            matches,
            first_match,
            truncated,
            budget_exhausted,
        }
    }
}
