//! Per-operator detector configuration: a plain serde value the server stores as JSON,
//! validated and compiled into a [`crate::Scanner`] by [`crate::Scanner::new`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalog::{Category, Severity};

/// Most custom patterns one configuration may hold.
pub const MAX_CUSTOM_PATTERNS: usize = 64;
/// Longest custom pattern source, in bytes.
pub const MAX_PATTERN_LEN: usize = 1024;
/// Compiled-program size cap for one custom pattern (regex `size_limit`), in bytes.
pub const MAX_PATTERN_PROGRAM_BYTES: usize = 512 * 1024;
/// Most suppressions one configuration may hold.
pub const MAX_SUPPRESSIONS: usize = 256;
/// Longest detector id.
pub const MAX_ID_LEN: usize = 64;

/// Operator configuration of the scanner. Every field has a default, so `{}` is valid
/// JSON for "built-in catalog, default budget".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScanConfig {
    /// Master switch. When false, [`crate::scan`] returns a clean verdict without looking.
    pub enabled: bool,
    /// Built-in or custom detector ids to turn off.
    pub disabled_detectors: Vec<String>,
    /// Severity per detector id (built-in or custom), replacing the catalog severity.
    pub severity_overrides: BTreeMap<String, Severity>,
    /// Operator-defined detectors, compiled with the linear-time `regex` engine.
    pub custom_patterns: Vec<CustomPattern>,
    /// Whitelist: matches these describe are dropped before the verdict is computed.
    pub suppressions: Vec<Suppression>,
    /// Work limits for one scan.
    pub budget: ScanBudget,
}

impl Default for ScanConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            disabled_detectors: Vec::new(),
            severity_overrides: BTreeMap::new(),
            custom_patterns: Vec::new(),
            suppressions: Vec::new(),
            budget: ScanBudget::default(),
        }
    }
}

/// One operator-defined detector. Its reported id is `custom.<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomPattern {
    /// `[a-z0-9_.-]{1,64}`, unique within the configuration.
    pub id: String,
    /// Regular expression in `regex` crate syntax (no look-around, no backreferences).
    pub pattern: String,
    /// Category reported for hits; defaults to `custom`.
    #[serde(default = "default_custom_category")]
    pub category: Category,
    /// Severity of a hit; defaults to `medium`.
    #[serde(default = "default_custom_severity")]
    pub severity: Severity,
    /// Human description.
    #[serde(default)]
    pub description: String,
    /// Match case-insensitively (default true).
    #[serde(default = "default_true")]
    pub case_insensitive: bool,
}

fn default_custom_category() -> Category {
    Category::Custom
}
fn default_custom_severity() -> Severity {
    Severity::Medium
}
fn default_true() -> bool {
    true
}

/// A whitelist entry. A match is suppressed when every field that is set agrees with it.
/// At least one field must be set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suppression {
    /// Detector id (`override.ignore_previous`, `custom.foo`) this entry applies to.
    #[serde(default)]
    pub detector: Option<String>,
    /// Case-insensitive literal that the match excerpt must contain.
    #[serde(default)]
    pub text: Option<String>,
}

/// Limits on the work one scan may do. Passed in, never measured with a clock, so a
/// scan is deterministic; every limit bounds time linearly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScanBudget {
    /// Bytes of input examined; a longer input is cut at a character boundary, the
    /// verdict says `truncated` and gets an `input_truncated` match (medium).
    pub max_input_bytes: usize,
    /// Deepest nesting of decoding layers (raw text is depth 0).
    pub max_depth: u8,
    /// Most decoded views per scan, including the raw text.
    pub max_views: usize,
    /// Total bytes of decoded views per scan, on top of the input itself.
    pub max_decoded_bytes: usize,
    /// Most matches reported.
    pub max_matches: usize,
}

impl Default for ScanBudget {
    fn default() -> Self {
        Self {
            max_input_bytes: 16 * 1024 * 1024,
            max_depth: 4,
            max_views: 256,
            max_decoded_bytes: 32 * 1024 * 1024,
            max_matches: 64,
        }
    }
}

/// Why a [`ScanConfig`] was rejected. [`ScanConfigError::code`] is stable for API clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanConfigError {
    /// More than [`MAX_CUSTOM_PATTERNS`] custom patterns.
    #[error("too many custom patterns: {count} (limit {limit})")]
    TooManyPatterns { count: usize, limit: usize },
    /// More than [`MAX_SUPPRESSIONS`] suppressions.
    #[error("too many suppressions: {count} (limit {limit})")]
    TooManySuppressions { count: usize, limit: usize },
    /// Custom pattern id empty, too long or outside `[a-z0-9_.-]`.
    #[error("invalid detector id {id:?}: use 1-64 of [a-z0-9_.-]")]
    InvalidId { id: String },
    /// Two custom patterns share an id.
    #[error("duplicate custom pattern id {id:?}")]
    DuplicateId { id: String },
    /// Pattern source longer than [`MAX_PATTERN_LEN`].
    #[error("pattern {id:?} is {len} bytes long (limit {limit})")]
    PatternTooLong {
        id: String,
        len: usize,
        limit: usize,
    },
    /// Pattern does not parse (look-around and backreferences are not supported).
    #[error("pattern {id:?} is not a valid linear-time regular expression: {reason}")]
    PatternInvalid { id: String, reason: String },
    /// Pattern compiles to a program larger than [`MAX_PATTERN_PROGRAM_BYTES`].
    #[error("pattern {id:?} is too complex (compiled size limit {limit} bytes)")]
    PatternTooComplex { id: String, limit: usize },
    /// Pattern matches the empty string, so it would fire on every input.
    #[error("pattern {id:?} matches the empty string")]
    PatternMatchesEmpty { id: String },
    /// A detector id in `disabled_detectors`, `severity_overrides` or `suppressions`
    /// names no built-in or custom detector.
    #[error("unknown detector id {id:?}")]
    UnknownDetector { id: String },
    /// A suppression with neither `detector` nor `text`, or an empty `text`.
    #[error("suppression #{index} must name a detector or a non-empty text")]
    EmptySuppression { index: usize },
    /// A budget value of zero where at least one is needed.
    #[error("budget field {field} must be at least 1")]
    InvalidBudget { field: &'static str },
}

impl ScanConfigError {
    /// Stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooManyPatterns { .. } => "SCAN_TOO_MANY_PATTERNS",
            Self::TooManySuppressions { .. } => "SCAN_TOO_MANY_SUPPRESSIONS",
            Self::InvalidId { .. } => "SCAN_INVALID_DETECTOR_ID",
            Self::DuplicateId { .. } => "SCAN_DUPLICATE_DETECTOR_ID",
            Self::PatternTooLong { .. } => "SCAN_PATTERN_TOO_LONG",
            Self::PatternInvalid { .. } => "SCAN_PATTERN_INVALID",
            Self::PatternTooComplex { .. } => "SCAN_PATTERN_TOO_COMPLEX",
            Self::PatternMatchesEmpty { .. } => "SCAN_PATTERN_MATCHES_EMPTY",
            Self::UnknownDetector { .. } => "SCAN_UNKNOWN_DETECTOR",
            Self::EmptySuppression { .. } => "SCAN_EMPTY_SUPPRESSION",
            Self::InvalidBudget { .. } => "SCAN_INVALID_BUDGET",
        }
    }
}

pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}
