//! The compiled, validated form of a [`ScanConfig`] and the scan itself.

use std::collections::{BTreeMap, HashSet};

use crate::catalog::{
    BUILTIN_DETECTORS, Category, CompiledDetector, DetectorCatalog, RawHit, Severity, build_regex,
    expand_pattern, floor_char_boundary,
};
use crate::config::{
    MAX_CUSTOM_PATTERNS, MAX_PATTERN_LEN, MAX_PATTERN_PROGRAM_BYTES, MAX_SUPPRESSIONS, ScanBudget,
    ScanConfig, ScanConfigError, valid_id,
};
use crate::normalize::Normalizer;
use crate::verdict::{Match, Span, Verdict};

/// Id of the match added when the input was cut to `max_input_bytes`.
pub const INPUT_TRUNCATED_ID: &str = "budget.input_truncated";

/// Longest excerpt, in characters.
const EXCERPT_CHARS: usize = 160;
/// Most hits per detector per view.
const HITS_PER_DETECTOR: usize = 4;

/// One view of a scanned text, as returned by [`Scanner::decoded_views`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedView {
    /// Decoding layers applied, outermost first (empty for the raw text).
    pub decoded_via: Vec<&'static str>,
    /// The decoded text.
    pub text: String,
}

#[derive(Debug, Clone)]
struct CompiledSuppression {
    detector: Option<String>,
    text_lower: Option<String>,
}

/// A validated configuration with its detectors compiled. Build once per configuration
/// (compiling takes milliseconds) and share: scanning takes `&self`.
#[derive(Debug, Clone)]
pub struct Scanner {
    enabled: bool,
    catalog: DetectorCatalog,
    normalizer: Normalizer,
    suppressions: Vec<CompiledSuppression>,
    truncated_severity: Option<Severity>,
    budget: ScanBudget,
}

impl Scanner {
    /// Validates and compiles `config`.
    pub fn new(config: &ScanConfig) -> Result<Self, ScanConfigError> {
        validate_budget(&config.budget)?;
        if config.custom_patterns.len() > MAX_CUSTOM_PATTERNS {
            return Err(ScanConfigError::TooManyPatterns {
                count: config.custom_patterns.len(),
                limit: MAX_CUSTOM_PATTERNS,
            });
        }
        if config.suppressions.len() > MAX_SUPPRESSIONS {
            return Err(ScanConfigError::TooManySuppressions {
                count: config.suppressions.len(),
                limit: MAX_SUPPRESSIONS,
            });
        }

        let mut detectors: Vec<CompiledDetector> = Vec::new();
        for spec in BUILTIN_DETECTORS {
            detectors.push(CompiledDetector {
                id: spec.id.to_string(),
                category: spec.category,
                severity: spec.severity,
                regex: build_regex(&expand_pattern(spec.pattern), true).map_err(|e| {
                    ScanConfigError::PatternInvalid {
                        id: spec.id.to_string(),
                        reason: e.to_string(),
                    }
                })?,
                veto_after: match spec.veto_after {
                    Some(v) => Some(build_regex(&expand_pattern(v), true).map_err(|e| {
                        ScanConfigError::PatternInvalid {
                            id: spec.id.to_string(),
                            reason: e.to_string(),
                        }
                    })?),
                    None => None,
                },
                min_hits: spec.min_hits,
                raw_text_only: spec.raw_text_only,
            });
        }
        let mut custom_ids = HashSet::new();
        for custom in &config.custom_patterns {
            if !valid_id(&custom.id) {
                return Err(ScanConfigError::InvalidId {
                    id: custom.id.clone(),
                });
            }
            if !custom_ids.insert(custom.id.clone()) {
                return Err(ScanConfigError::DuplicateId {
                    id: custom.id.clone(),
                });
            }
            detectors.push(compile_custom(custom)?);
        }

        let known: HashSet<&str> = detectors
            .iter()
            .map(|d| d.id.as_str())
            .chain(std::iter::once(INPUT_TRUNCATED_ID))
            .collect();
        let check_known = |id: &str| {
            if known.contains(id) {
                Ok(())
            } else {
                Err(ScanConfigError::UnknownDetector { id: id.to_string() })
            }
        };
        for id in &config.disabled_detectors {
            check_known(id)?;
        }
        for id in config.severity_overrides.keys() {
            check_known(id)?;
        }
        let mut suppressions = Vec::with_capacity(config.suppressions.len());
        for (index, s) in config.suppressions.iter().enumerate() {
            let text_lower = match &s.text {
                Some(t) if t.trim().is_empty() => {
                    return Err(ScanConfigError::EmptySuppression { index });
                }
                Some(t) => Some(t.to_lowercase()),
                None => None,
            };
            if let Some(d) = &s.detector {
                check_known(d)?;
            } else if text_lower.is_none() {
                return Err(ScanConfigError::EmptySuppression { index });
            }
            suppressions.push(CompiledSuppression {
                detector: s.detector.clone(),
                text_lower,
            });
        }

        let disabled: HashSet<&str> = config
            .disabled_detectors
            .iter()
            .map(String::as_str)
            .collect();
        detectors.retain(|d| !disabled.contains(d.id.as_str()));
        apply_overrides(&mut detectors, &config.severity_overrides);
        let truncated_severity = if disabled.contains(INPUT_TRUNCATED_ID) {
            None
        } else {
            Some(
                config
                    .severity_overrides
                    .get(INPUT_TRUNCATED_ID)
                    .copied()
                    .unwrap_or(Severity::Medium),
            )
        };

        let catalog = DetectorCatalog::from_detectors(detectors).map_err(|e| {
            ScanConfigError::PatternTooComplex {
                id: format!("catalog: {e}"),
                limit: MAX_PATTERN_PROGRAM_BYTES,
            }
        })?;
        let normalizer = Normalizer::new().map_err(|e| ScanConfigError::PatternInvalid {
            id: "normalizer".to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            enabled: config.enabled,
            catalog,
            normalizer,
            suppressions,
            truncated_severity,
            budget: config.budget,
        })
    }

    /// The built-in catalog with the default budget.
    pub fn with_defaults() -> Result<Self, ScanConfigError> {
        Self::new(&ScanConfig::default())
    }

    /// Number of active detectors.
    pub fn detector_count(&self) -> usize {
        self.catalog.len()
    }

    /// The views (raw text first) that L2 derives from `text` under this scanner's
    /// budget, with the decoding path of each. For explaining verdicts, diagnostics and
    /// benchmarks; [`Scanner::scan`] does this and more.
    pub fn decoded_views(&self, text: &str) -> Vec<DecodedView> {
        let cut = floor_char_boundary(text, self.budget.max_input_bytes);
        self.normalizer
            .views(text.get(..cut).unwrap_or(""), &self.budget)
            .views
            .into_iter()
            .map(|v| DecodedView {
                decoded_via: v.layers,
                text: v.text,
            })
            .collect()
    }

    /// Scans `text`. Never panics; time and memory are linear in `text.len()` and
    /// bounded by the budget.
    pub fn scan(&self, text: &str) -> Verdict {
        if !self.enabled {
            return Verdict::clean();
        }
        let cut = floor_char_boundary(text, self.budget.max_input_bytes);
        let truncated = cut < text.len();
        let input = text.get(..cut).unwrap_or("");
        let tree = self.normalizer.views(input, &self.budget);

        let mut matches: Vec<Match> = Vec::new();
        let mut seen: HashSet<(usize, Vec<&'static str>)> = HashSet::new();
        let mut hits: Vec<RawHit> = Vec::new();
        let detectors = self.catalog.detectors();
        'views: for (view_index, view) in tree.views.iter().enumerate() {
            hits.clear();
            self.catalog.find(&view.text, HITS_PER_DETECTOR, &mut hits);
            for hit in &hits {
                let Some(det) = detectors.get(hit.detector) else {
                    continue;
                };
                if det.raw_text_only && view_index > 0 {
                    continue;
                }
                if det.min_hits > 1
                    && hits.iter().filter(|h| h.detector == hit.detector).count()
                        < usize::from(det.min_hits)
                {
                    continue;
                }
                let excerpt = excerpt(&view.text, hit.start, hit.end);
                if self.suppressed(&det.id, &excerpt) {
                    continue;
                }
                if !seen.insert((hit.detector, view.layers.clone())) {
                    continue;
                }
                let (start, end) = tree.input_span(view_index, hit.start, hit.end);
                matches.push(Match {
                    detector: det.id.clone(),
                    pattern_id: det.id.clone(),
                    category: det.category,
                    severity: det.severity,
                    span: Span { start, end },
                    decoded_via: view.layers.iter().map(|l| (*l).to_string()).collect(),
                    excerpt,
                });
                if matches.len() >= self.budget.max_matches {
                    break 'views;
                }
            }
        }
        if truncated
            && let Some(severity) = self.truncated_severity
            && !self.suppressed(INPUT_TRUNCATED_ID, "")
        {
            matches.push(Match {
                detector: INPUT_TRUNCATED_ID.to_string(),
                pattern_id: INPUT_TRUNCATED_ID.to_string(),
                category: Category::Budget,
                severity,
                span: Span {
                    start: cut,
                    end: text.len(),
                },
                decoded_via: Vec::new(),
                excerpt: String::new(),
            });
        }
        Verdict::from_matches(matches, truncated, tree.budget_exhausted)
    }

    fn suppressed(&self, detector: &str, excerpt: &str) -> bool {
        if self.suppressions.is_empty() {
            return false;
        }
        let lower = excerpt.to_lowercase();
        self.suppressions.iter().any(|s| {
            s.detector.as_deref().is_none_or(|d| d == detector)
                && s.text_lower.as_deref().is_none_or(|t| lower.contains(t))
        })
    }
}

fn validate_budget(budget: &ScanBudget) -> Result<(), ScanConfigError> {
    let checks: [(&'static str, bool); 4] = [
        ("max_input_bytes", budget.max_input_bytes == 0),
        ("max_views", budget.max_views == 0),
        ("max_matches", budget.max_matches == 0),
        ("max_decoded_bytes", budget.max_decoded_bytes == 0),
    ];
    match checks.iter().find(|(_, bad)| *bad) {
        Some((field, _)) => Err(ScanConfigError::InvalidBudget { field }),
        None => Ok(()),
    }
}

fn compile_custom(
    custom: &crate::config::CustomPattern,
) -> Result<CompiledDetector, ScanConfigError> {
    if custom.pattern.len() > MAX_PATTERN_LEN {
        return Err(ScanConfigError::PatternTooLong {
            id: custom.id.clone(),
            len: custom.pattern.len(),
            limit: MAX_PATTERN_LEN,
        });
    }
    let source = if custom.case_insensitive {
        format!("(?i){}", custom.pattern)
    } else {
        custom.pattern.clone()
    };
    let regex = regex::RegexBuilder::new(&source)
        .size_limit(MAX_PATTERN_PROGRAM_BYTES)
        .dfa_size_limit(MAX_PATTERN_PROGRAM_BYTES * 4)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => ScanConfigError::PatternTooComplex {
                id: custom.id.clone(),
                limit: MAX_PATTERN_PROGRAM_BYTES,
            },
            other => ScanConfigError::PatternInvalid {
                id: custom.id.clone(),
                reason: other.to_string(),
            },
        })?;
    if regex.is_match("") {
        return Err(ScanConfigError::PatternMatchesEmpty {
            id: custom.id.clone(),
        });
    }
    Ok(CompiledDetector {
        id: format!("custom.{}", custom.id),
        category: custom.category,
        severity: custom.severity,
        regex,
        veto_after: None,
        min_hits: 1,
        raw_text_only: false,
    })
}

fn apply_overrides(detectors: &mut [CompiledDetector], overrides: &BTreeMap<String, Severity>) {
    for d in detectors {
        if let Some(s) = overrides.get(&d.id) {
            d.severity = *s;
        }
    }
}

/// The matched text, whitespace-collapsed and cut to [`EXCERPT_CHARS`] characters.
fn excerpt(text: &str, start: usize, end: usize) -> String {
    let start = floor_char_boundary(text, start);
    let end = floor_char_boundary(text, end.max(start));
    let raw = text.get(start..end).unwrap_or("");
    let mut out = String::with_capacity(raw.len().min(EXCERPT_CHARS * 4));
    let mut last_space = false;
    for c in raw.chars() {
        if out.chars().count() >= EXCERPT_CHARS {
            break;
        }
        if c.is_whitespace() || c.is_control() {
            if !last_space {
                out.push(' ');
            }
            last_space = true;
        } else {
            out.push(c);
            last_space = false;
        }
    }
    out.trim().to_string()
}
