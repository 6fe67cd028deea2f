//! Content scanning, detector configuration and security events (issue 6).
//!
//! * `scan`: runs the operator's [`stack_scan::Scanner`] on retrieved
//!   content, counts the scan against the operator's monthly allowance and
//!   records `scan.run` in the audit chain in one transaction (the entry holds
//!   the SHA-256 of the scanned text, the detector ids and spans, never the
//!   text). A critical verdict raises a `prompt_injection` security event in
//!   the same transaction.
//! * Detector configuration: one stored row per `(operator, detector_key)`;
//!   every row of an operator compiles into one [`stack_scan::ScanConfig`]
//!   ([`compile`]). A write is validated by building a `Scanner` from it.
//!   The compiled scanner is cached per operator ([`ScanRuntime`]): replaced
//!   on a write on this node, re-checked against the stored rows after
//!   [`ScanSettings::cache_ttl_ms`] (how stale another node's write can be).
//! * Security events: list (unresolved), get and resolve, operator-only.
//!
//! `detector_key` is `prompt_injection` (the whole scanner), a category name
//! (`exfiltration`, …: every built-in detector of that category) or one
//! built-in detector id (`override.ignore_previous`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use stack_audit::{Layer, Outcome};
use stack_core::{Error, ErrorCode, Permission, Principal, Result, Timestamp};
use stack_scan::{
    BUILTIN_DETECTORS, Category, CustomPattern, INPUT_TRUNCATED_ID, ScanConfig, ScanConfigError,
    Scanner, Severity, Suppression, Verdict, VerdictLevel,
};

use crate::audit::{bounded, int_param};
use crate::passports::SecurityEvent;
use crate::{App, NewAudit, require};

/// The `detector_key` that configures the scanner as a whole.
pub const PROMPT_INJECTION: &str = "prompt_injection";
/// Security-event kind raised by a critical scan.
pub const PROMPT_INJECTION_EVENT: &str = "prompt_injection";
/// Longest `source` kept (characters).
const MAX_SOURCE_CHARS: usize = 512;
/// Most matches recorded in the audit entry and the security event.
const MAX_AUDITED_MATCHES: usize = 16;
/// The `context` values `POST /v1/scan` accepts.
pub const CONTEXTS: &[&str] = &[
    "email",
    "document",
    "webpage",
    "chat_log",
    "api_response",
    "calendar",
    "other",
];

/// Monthly scan allowance per tier (calendar month, UTC).
pub type ScanQuotas = crate::TierQuotas;

/// Scan settings of the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanSettings {
    pub quotas: ScanQuotas,
    /// How long a cached per-operator scanner is used before the stored
    /// configuration is checked again (bounds cross-node staleness).
    pub cache_ttl_ms: i64,
}

impl Default for ScanSettings {
    fn default() -> Self {
        Self {
            quotas: crate::TierQuotas::SCAN,
            cache_ttl_ms: 30_000,
        }
    }
}

/// One operator's customization of one detector key, as stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectorConfig {
    /// Extra detectors (reported as `custom.<id>`).
    #[serde(default)]
    pub custom_patterns: Vec<CustomPattern>,
    /// Suppressions: a hit is dropped when its excerpt contains `text`
    /// (case-insensitive) and, if set, its detector is `detector`.
    #[serde(default)]
    pub whitelist_patterns: Vec<Suppression>,
    /// Detector id or category name → severity.
    #[serde(default)]
    pub severity_overrides: BTreeMap<String, Severity>,
    /// Master switch of this key.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            custom_patterns: Vec::new(),
            whitelist_patterns: Vec::new(),
            severity_overrides: BTreeMap::new(),
            enabled: true,
        }
    }
}

/// A stored detector configuration row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectorConfigRecord {
    pub operator_id: String,
    pub detector_key: String,
    pub config: DetectorConfig,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub updated_by: String,
}

impl DetectorConfigRecord {
    fn view(&self) -> Value {
        json!({
            "detector_key": self.detector_key,
            "custom_patterns": self.config.custom_patterns,
            "whitelist_patterns": self.config.whitelist_patterns,
            "severity_overrides": self.config.severity_overrides,
            "enabled": self.config.enabled,
            "created_at": self.created_at.to_rfc3339(),
            "updated_at": self.updated_at.to_rfc3339(),
            "updated_by": self.updated_by,
        })
    }
}

/// Storage for scan usage, detector configurations and security-event
/// reads and resolution.
#[async_trait]
pub trait ScanStore: Send + Sync + 'static {
    /// Scans counted for `operator_id` in `period` (`YYYY-MM`).
    async fn scan_usage(&self, operator_id: &str, period: &str) -> Result<u64>;
    /// Counts one scan and appends `audit` (and stores `event` with its own
    /// entry) in one transaction, unless the count already reached `limit`:
    /// then nothing is written and the answer is `Ok(None)`. Returns the new
    /// count.
    async fn record_scan(
        &self,
        operator_id: &str,
        period: &str,
        limit: u64,
        audit: NewAudit,
        event: Option<(SecurityEvent, NewAudit)>,
    ) -> Result<Option<u64>>;

    /// Every row of the operator, ordered by key.
    async fn list_detector_configs(&self, operator_id: &str) -> Result<Vec<DetectorConfigRecord>>;
    async fn get_detector_config(
        &self,
        operator_id: &str,
        detector_key: &str,
    ) -> Result<Option<DetectorConfigRecord>>;
    /// Inserts or replaces the row.
    async fn put_detector_config(
        &self,
        record: &DetectorConfigRecord,
        audit: NewAudit,
    ) -> Result<()>;
    /// Deletes the row; `Ok(false)` (and no audit entry) when there was none.
    async fn delete_detector_config(
        &self,
        operator_id: &str,
        detector_key: &str,
        audit: NewAudit,
    ) -> Result<bool>;

    /// Newest first, with the total matching count.
    async fn security_events_page(
        &self,
        operator_id: &str,
        agent_id: Option<&str>,
        unresolved_only: bool,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<SecurityEvent>, u64)>;
    async fn get_security_event(
        &self,
        operator_id: &str,
        event_id: &str,
    ) -> Result<Option<SecurityEvent>>;
    /// Marks the event resolved at `now` with `audit`, once. Returns the
    /// event and whether this call resolved it (`false`: it already was, and
    /// nothing was written). `Ok(None)` when it does not exist.
    async fn resolve_security_event(
        &self,
        operator_id: &str,
        event_id: &str,
        now: Timestamp,
        audit: NewAudit,
    ) -> Result<Option<(SecurityEvent, bool)>>;
}

// ---------------------------------------------------------------- keys

/// What a `detector_key` selects.
#[derive(Debug, Clone, PartialEq)]
enum Scope {
    All,
    Category(Category, Vec<&'static str>),
    Detector(&'static str),
}

fn category_named(name: &str) -> Option<Category> {
    BUILTIN_DETECTORS
        .iter()
        .map(|d| d.category)
        .find(|c| c.as_str() == name)
}

fn scope_of(key: &str) -> Option<Scope> {
    if key == PROMPT_INJECTION {
        return Some(Scope::All);
    }
    if key == INPUT_TRUNCATED_ID {
        return Some(Scope::Detector(INPUT_TRUNCATED_ID));
    }
    if let Some(d) = BUILTIN_DETECTORS.iter().find(|d| d.id == key) {
        return Some(Scope::Detector(d.id));
    }
    category_named(key).map(|c| {
        let ids = BUILTIN_DETECTORS
            .iter()
            .filter(|d| d.category == c)
            .map(|d| d.id)
            .collect();
        Scope::Category(c, ids)
    })
}

fn unknown_key(key: &str) -> Error {
    let shown: String = key.chars().take(80).collect();
    Error::new(
        ErrorCode::ScanUnknownDetector,
        format!(
            "unknown detector key {shown:?}: use prompt_injection, a category name or a detector id"
        ),
    )
    .with_details(json!({ "field": "detector_key" }))
}

/// The severity a key names when no override is set (for telling whether a
/// change lowers it).
fn baseline(key: &str, customs: &[&CustomPattern]) -> Severity {
    if let Some(d) = BUILTIN_DETECTORS.iter().find(|d| d.id == key) {
        return d.severity;
    }
    if let Some(id) = key.strip_prefix("custom.")
        && let Some(c) = customs.iter().find(|c| c.id == id)
    {
        return c.severity;
    }
    if let Some(c) = category_named(key) {
        return BUILTIN_DETECTORS
            .iter()
            .filter(|d| d.category == c)
            .map(|d| d.severity)
            .max()
            .unwrap_or(Severity::High);
    }
    if key == INPUT_TRUNCATED_ID {
        return Severity::Medium;
    }
    Severity::High
}

fn parse_severity(v: &Value, field: &str) -> Result<Severity> {
    match v.as_str().map(str::trim) {
        Some("low" | "info") => Ok(Severity::Low),
        Some("medium" | "warning") => Ok(Severity::Medium),
        Some("high" | "critical") => Ok(Severity::High),
        _ => Err(Error::invalid_field(
            field,
            format!("{field}: a severity is low, medium or high (or info, warning, critical)"),
        )),
    }
}

// ---------------------------------------------------------------- config input

/// Applies a PUT body onto `base` (absent field: kept; `null`: default).
fn apply_input(
    key: &str,
    scope: &Scope,
    base: DetectorConfig,
    body: &Value,
) -> Result<DetectorConfig> {
    let Some(obj) = body.as_object() else {
        return Err(Error::validation("the request body must be a JSON object"));
    };
    let mut cfg = base;
    if let Some(v) = obj.get("enabled") {
        cfg.enabled = match v {
            Value::Null => true,
            Value::Bool(b) => *b,
            _ => return Err(Error::invalid_field("enabled", "enabled must be a boolean")),
        };
    }
    if let Some(v) = obj.get("custom_patterns") {
        cfg.custom_patterns = custom_patterns(key, scope, v)?;
    }
    if let Some(v) = obj.get("whitelist_patterns") {
        cfg.whitelist_patterns = whitelist(v)?;
    }
    if let Some(v) = obj.get("severity_overrides") {
        let mut out = BTreeMap::new();
        match v {
            Value::Null => {}
            Value::Object(m) => {
                for (k, s) in m {
                    out.insert(k.clone(), parse_severity(s, "severity_overrides")?);
                }
            }
            _ => {
                return Err(Error::invalid_field(
                    "severity_overrides",
                    "severity_overrides must be an object of detector id → severity",
                ));
            }
        }
        cfg.severity_overrides = out;
    }
    Ok(cfg)
}

fn custom_patterns(key: &str, scope: &Scope, v: &Value) -> Result<Vec<CustomPattern>> {
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(a) => a,
        _ => {
            return Err(Error::invalid_field(
                "custom_patterns",
                "custom_patterns must be an array of regular expressions or pattern objects",
            ));
        }
    };
    let default_category = match scope {
        Scope::Category(c, _) => *c,
        Scope::Detector(id) => BUILTIN_DETECTORS
            .iter()
            .find(|d| d.id == *id)
            .map_or(Category::Custom, |d| d.category),
        Scope::All => Category::Custom,
    };
    let auto_id = |i: usize| {
        if key == PROMPT_INJECTION {
            format!("p{}", i + 1)
        } else {
            format!("{key}.p{}", i + 1)
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let pattern = match item {
            Value::String(s) => CustomPattern {
                id: auto_id(i),
                pattern: s.clone(),
                category: default_category,
                severity: Severity::Medium,
                description: String::new(),
                case_insensitive: true,
            },
            Value::Object(m) => {
                let mut m: Map<String, Value> = m.clone();
                if !m.contains_key("id") {
                    m.insert("id".into(), Value::String(auto_id(i)));
                }
                if !m.contains_key("category") {
                    m.insert(
                        "category".into(),
                        Value::String(default_category.as_str().to_owned()),
                    );
                }
                if let Some(s) = m.get("severity") {
                    let sev = parse_severity(s, "custom_patterns")?;
                    m.insert(
                        "severity".into(),
                        serde_json::to_value(sev).unwrap_or(Value::Null),
                    );
                }
                serde_json::from_value(Value::Object(m)).map_err(|e| {
                    Error::invalid_field(
                        "custom_patterns",
                        format!(
                            "custom_patterns[{i}]: {}",
                            crate::input::redact_strings(&e.to_string())
                        ),
                    )
                })?
            }
            _ => {
                return Err(Error::invalid_field(
                    "custom_patterns",
                    format!("custom_patterns[{i}] must be a string or an object"),
                ));
            }
        };
        out.push(pattern);
    }
    Ok(out)
}

fn whitelist(v: &Value) -> Result<Vec<Suppression>> {
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(a) => a,
        _ => {
            return Err(Error::invalid_field(
                "whitelist_patterns",
                "whitelist_patterns must be an array of strings or {detector, text} objects",
            ));
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(Suppression {
                detector: None,
                text: Some(s.clone()),
            }),
            Value::Object(_) => serde_json::from_value(item.clone()).map_err(|e| {
                Error::invalid_field(
                    "whitelist_patterns",
                    format!(
                        "whitelist_patterns[{i}]: {}",
                        crate::input::redact_strings(&e.to_string())
                    ),
                )
            }),
            _ => Err(Error::invalid_field(
                "whitelist_patterns",
                format!("whitelist_patterns[{i}] must be a string or an object"),
            )),
        })
        .collect()
}

/// Whether going from `old` (None: defaults) to `new` weakens detection:
/// switching off, adding a whitelist entry, lowering an effective severity,
/// or removing or editing a custom pattern.
fn loosens(old: Option<&DetectorConfig>, new: &DetectorConfig) -> bool {
    let default = DetectorConfig::default();
    let old = old.unwrap_or(&default);
    if old.enabled && !new.enabled {
        return true;
    }
    if new
        .whitelist_patterns
        .iter()
        .any(|w| !old.whitelist_patterns.contains(w))
    {
        return true;
    }
    for o in &old.custom_patterns {
        match new.custom_patterns.iter().find(|n| n.id == o.id) {
            None => return true,
            Some(n)
                if n.pattern != o.pattern
                    || n.severity < o.severity
                    || n.case_insensitive != o.case_insensitive && o.case_insensitive =>
            {
                return true;
            }
            Some(_) => {}
        }
    }
    let customs: Vec<&CustomPattern> = old
        .custom_patterns
        .iter()
        .chain(new.custom_patterns.iter())
        .collect();
    old.severity_overrides
        .keys()
        .chain(new.severity_overrides.keys())
        .any(|k| {
            let base = baseline(k, &customs);
            let before = old.severity_overrides.get(k).copied().unwrap_or(base);
            let after = new.severity_overrides.get(k).copied().unwrap_or(base);
            after < before
        })
}

/// Compiles an operator's rows into one scanner configuration. Later keys
/// (in key order) win on conflicting severity overrides.
pub fn compile(rows: &[(String, DetectorConfig)]) -> Result<ScanConfig> {
    let mut out = ScanConfig::default();
    let mut sorted: Vec<&(String, DetectorConfig)> = rows.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, cfg) in sorted {
        let scope = scope_of(key).ok_or_else(|| unknown_key(key))?;
        if !cfg.enabled {
            match &scope {
                Scope::All => out.enabled = false,
                Scope::Category(_, ids) => out
                    .disabled_detectors
                    .extend(ids.iter().map(|s| (*s).to_owned())),
                Scope::Detector(id) => out.disabled_detectors.push((*id).to_owned()),
            }
            continue;
        }
        out.custom_patterns
            .extend(cfg.custom_patterns.iter().cloned());
        for w in &cfg.whitelist_patterns {
            match (&w.detector, &scope) {
                (Some(_), _) | (None, Scope::All) => out.suppressions.push(w.clone()),
                (None, Scope::Detector(id)) => out.suppressions.push(Suppression {
                    detector: Some((*id).to_owned()),
                    text: w.text.clone(),
                }),
                (None, Scope::Category(_, ids)) => {
                    out.suppressions.extend(ids.iter().map(|id| Suppression {
                        detector: Some((*id).to_owned()),
                        text: w.text.clone(),
                    }));
                }
            }
        }
        for (k, sev) in &cfg.severity_overrides {
            match category_named(k) {
                Some(c) => {
                    for d in BUILTIN_DETECTORS.iter().filter(|d| d.category == c) {
                        out.severity_overrides.insert(d.id.to_owned(), *sev);
                    }
                }
                None => {
                    out.severity_overrides.insert(k.clone(), *sev);
                }
            }
        }
    }
    out.disabled_detectors.sort();
    out.disabled_detectors.dedup();
    Ok(out)
}

/// A scanner-configuration error as an application error with the same code.
pub fn config_error(e: &ScanConfigError) -> Error {
    let code = match e {
        ScanConfigError::TooManyPatterns { .. } => ErrorCode::ScanTooManyPatterns,
        ScanConfigError::TooManySuppressions { .. } => ErrorCode::ScanTooManySuppressions,
        ScanConfigError::InvalidId { .. } => ErrorCode::ScanInvalidDetectorId,
        ScanConfigError::DuplicateId { .. } => ErrorCode::ScanDuplicateDetectorId,
        ScanConfigError::PatternTooLong { .. } => ErrorCode::ScanPatternTooLong,
        ScanConfigError::PatternInvalid { .. } => ErrorCode::ScanPatternInvalid,
        ScanConfigError::PatternTooComplex { .. } => ErrorCode::ScanPatternTooComplex,
        ScanConfigError::PatternMatchesEmpty { .. } => ErrorCode::ScanPatternMatchesEmpty,
        ScanConfigError::UnknownDetector { .. } => ErrorCode::ScanUnknownDetector,
        ScanConfigError::EmptySuppression { .. } => ErrorCode::ScanEmptySuppression,
        ScanConfigError::InvalidBudget { .. } => ErrorCode::ScanInvalidBudget,
    };
    Error::new(code, e.to_string())
}

async fn build_scanner(config: ScanConfig) -> Result<Arc<Scanner>> {
    tokio::task::spawn_blocking(move || Scanner::new(&config).map(Arc::new))
        .await
        .map_err(|_| Error::internal("the scanner build task failed"))?
        .map_err(|e| config_error(&e))
}

fn fingerprint(rows: &[(String, DetectorConfig)]) -> String {
    let text = serde_json::to_string(rows).unwrap_or_default();
    stack_crypto::sha256_hex(text.as_bytes())
}

fn rows_of(records: Vec<DetectorConfigRecord>) -> Vec<(String, DetectorConfig)> {
    records
        .into_iter()
        .map(|r| (r.detector_key, r.config))
        .collect()
}

// ---------------------------------------------------------------- scanner cache

struct Cached {
    scanner: Arc<Scanner>,
    fingerprint: String,
    checked_at: Timestamp,
}

/// Per-node scanners: the default one, built once, and one per operator
/// with stored rows.
#[derive(Default)]
pub struct ScanRuntime {
    default: tokio::sync::OnceCell<Arc<Scanner>>,
    per_operator: Mutex<HashMap<String, Cached>>,
}

impl ScanRuntime {
    fn cached(&self, operator_id: &str) -> Option<(Arc<Scanner>, String, Timestamp)> {
        self.per_operator.lock().ok().and_then(|m| {
            m.get(operator_id)
                .map(|c| (c.scanner.clone(), c.fingerprint.clone(), c.checked_at))
        })
    }

    fn put(&self, operator_id: &str, scanner: Arc<Scanner>, fingerprint: String, now: Timestamp) {
        if let Ok(mut m) = self.per_operator.lock() {
            m.insert(
                operator_id.to_owned(),
                Cached {
                    scanner,
                    fingerprint,
                    checked_at: now,
                },
            );
        }
    }
}

// ---------------------------------------------------------------- commands

/// `POST /v1/scan` body.
#[derive(Debug, Clone, Deserialize)]
pub struct ScanRequest {
    #[serde(default)]
    pub content: Value,
    #[serde(default)]
    pub context: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    /// MCP only: the passport the scan is attributed to (REST uses the
    /// `X-Passport-Token` header).
    #[serde(default)]
    pub passport_token: Option<String>,
}

/// `GET /v1/security-events` query.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SecurityEventQuery {
    #[serde(default)]
    pub page: Option<Value>,
    #[serde(default)]
    pub limit: Option<Value>,
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Also resolved events (MCP `include_resolved`; REST lists unresolved).
    #[serde(default)]
    pub include_resolved: Option<Value>,
}

/// The text to scan: a string as is; an object (or array) walked one level
/// deep, one `key: value` line per member, nested values as compact JSON.
pub fn content_text(v: &Value) -> Result<String> {
    fn scalar(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Object(m) => Ok(m
            .iter()
            .map(|(k, v)| format!("{k}: {}", scalar(v)))
            .collect::<Vec<_>>()
            .join("\n")),
        Value::Array(a) => Ok(a.iter().map(scalar).collect::<Vec<_>>().join("\n")),
        Value::Null => Err(Error::invalid_field("content", "content is required")),
        _ => Err(Error::invalid_field(
            "content",
            "content must be a string or an object",
        )),
    }
}

/// `YYYY-MM` of `now` (UTC), and the RFC 3339 bounds of that month.
pub(crate) fn period_of(now: Timestamp) -> (String, String, String) {
    let iso = now.to_rfc3339();
    let period: String = iso.chars().take(7).collect();
    let year: i64 = period.get(..4).and_then(|y| y.parse().ok()).unwrap_or(1970);
    let month: i64 = period.get(5..7).and_then(|m| m.parse().ok()).unwrap_or(1);
    let (ny, nm) = if month >= 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    (
        period.clone(),
        format!("{year:04}-{month:02}-01T00:00:00.000Z"),
        format!("{ny:04}-{nm:02}-01T00:00:00.000Z"),
    )
}

fn event_view(e: &SecurityEvent) -> Value {
    json!({
        "id": e.id,
        "operator_id": e.operator_id,
        "agent_id": e.agent_id,
        "passport_jti": e.passport_jti,
        "signal_type": e.kind,
        "severity": e.severity,
        "message": e.message,
        "metadata": e.details,
        "resolved": e.resolved_at.is_some(),
        "resolved_at": e.resolved_at.map(Timestamp::to_rfc3339),
        "created_at": e.created_at.to_rfc3339(),
    })
}

fn check_key_shape(key: &str) -> Result<()> {
    if key.is_empty()
        || key.len() > 128
        || !key.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
    {
        return Err(unknown_key(key));
    }
    Ok(())
}

fn approval(
    governance_approval: Option<&str>,
    action: &str,
    key: &str,
    why: &str,
) -> Result<String> {
    match governance_approval.map(str::trim) {
        Some(a) if stack_core::id::is_url_safe_body(a) => Ok(a.to_owned()),
        Some(_) => Err(Error::invalid_field(
            "X-Governance-Approval",
            "the governance approval id must be 1-128 characters of [A-Za-z0-9_-]",
        )),
        None => Err(Error::new(
            ErrorCode::GovernanceApprovalRequired,
            format!("{why} from an API-key session needs a human approval: retry with the X-Governance-Approval header"),
        )
        .with_details(json!({ "action": action, "detector_key": key }))),
    }
}

/// Detector-config reads: not for agent-confined callers (a whitelist is a
/// map of blind spots).
fn require_config_read(p: &Principal) -> Result<()> {
    require(p, Permission::AuditRead)?;
    if p.confined_agent().is_some() {
        return Err(Error::forbidden(
            "agents may not read detector configuration",
        ));
    }
    Ok(())
}

impl App {
    /// The scanner for `operator_id`: cached, re-checked against the stored
    /// rows once the cache entry is older than the TTL.
    async fn scanner_for(&self, operator_id: &str) -> Result<Arc<Scanner>> {
        let now = self.now();
        let cached = self.scan.cached(operator_id);
        if let Some((s, _, at)) = &cached
            && now.as_millis().saturating_sub(at.as_millis()) < self.config.scan.cache_ttl_ms
        {
            return Ok(s.clone());
        }
        let rows = rows_of(self.store.list_detector_configs(operator_id).await?);
        let fp = fingerprint(&rows);
        if let Some((s, cached_fp, _)) = cached
            && cached_fp == fp
        {
            self.scan.put(operator_id, s.clone(), fp, now);
            return Ok(s);
        }
        let scanner = if rows.is_empty() {
            self.default_scanner().await?
        } else {
            match build_scanner(compile(&rows)?).await {
                Ok(s) => s,
                Err(e) => {
                    // A stored row that no longer compiles (e.g. a detector
                    // removed from the catalog) must not stop scanning.
                    tracing::warn!(
                        operator_id,
                        code = e.code.as_str(),
                        "stored detector configuration does not compile; scanning with the defaults"
                    );
                    self.default_scanner().await?
                }
            }
        };
        self.scan.put(operator_id, scanner.clone(), fp, now);
        Ok(scanner)
    }

    async fn default_scanner(&self) -> Result<Arc<Scanner>> {
        self.scan
            .default
            .get_or_try_init(|| build_scanner(ScanConfig::default()))
            .await
            .cloned()
    }

    /// Builds the default scanner now (so the first scan does not pay for it).
    pub async fn warm_scanner(&self) -> Result<()> {
        self.default_scanner().await.map(|_| ())
    }

    /// `POST /v1/scan`.
    pub async fn scan(
        &self,
        p: &Principal,
        req: ScanRequest,
        passport_token: Option<&str>,
    ) -> Result<Value> {
        require(p, Permission::ScanUse)?;
        let text = content_text(&req.content)?;
        let context = match req.context.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(c) if CONTEXTS.contains(&c) => Some(c.to_owned()),
            Some(_) => {
                return Err(Error::invalid_field(
                    "context",
                    format!("context must be one of {}", CONTEXTS.join(", ")),
                ));
            }
        };
        let source: Option<String> = req
            .source
            .as_deref()
            .map(|s| s.chars().take(MAX_SOURCE_CHARS).collect());
        let token = passport_token
            .or(req.passport_token.as_deref())
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let (agent_id, jti) = match token {
            Some(t) => {
                let (claims, record) = self.live_passport(t).await?;
                if record.operator_id != p.operator_id {
                    return Err(Error::unauthorized(
                        "passport is not known to this deployment",
                    ));
                }
                if p.confined_agent().is_some_and(|a| a != record.agent_id) {
                    return Err(Error::forbidden(
                        "the passport belongs to another agent than the caller",
                    ));
                }
                (Some(record.agent_id), Some(claims.jti))
            }
            None => (
                p.confined_agent().map(str::to_owned),
                match &p.kind {
                    stack_core::principal::PrincipalKind::Passport { jti, .. } => Some(jti.clone()),
                    _ => None,
                },
            ),
        };

        let operator = self
            .store
            .get_operator(&p.operator_id)
            .await?
            .ok_or_else(|| Error::unauthorized("unknown operator"))?;
        let limit = self.config.scan.quotas.for_tier(&operator.tier);
        let (period, _, _) = period_of(self.now());
        let used = self.store.scan_usage(&p.operator_id, &period).await?;
        if used >= limit {
            return Err(quota_exceeded(&operator.tier, limit, &period));
        }

        let scanner = self.scanner_for(&p.operator_id).await?;
        let started = std::time::Instant::now();
        let (verdict, text) = tokio::task::spawn_blocking(move || (scanner.scan(&text), text))
            .await
            .map_err(|_| Error::internal("the scan task failed"))?;
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let payload_hash = stack_crypto::sha256_hex(text.as_bytes());
        drop(text);

        let scan_id = format!("scn_{}", stack_crypto::random_token(self.rng.as_ref(), 16)?);
        let critical = verdict.verdict == VerdictLevel::Critical;
        let audited: Vec<Value> = audited_matches(&verdict);
        let mut draft = Self::draft(p, Layer::Scan, "scan.run").target("scan", &scan_id);
        draft.agent_id.clone_from(&agent_id);
        draft.passport_jti.clone_from(&jti);
        draft.outcome = if critical {
            Outcome::Blocked
        } else {
            Outcome::Success
        };
        draft.duration_ms = Some(duration_ms);
        draft.payload_hash = Some(payload_hash.clone());
        draft.details = json!({
            "verdict": verdict.verdict.as_str(),
            "score": verdict.score,
            "context": context,
            "source": source,
            "matches": audited,
            "truncated": verdict.truncated,
            "budget_exhausted": verdict.budget_exhausted,
        });
        let audit = self.audit(draft)?;

        let event = if critical {
            let detectors: Vec<&str> = verdict
                .matches
                .iter()
                .map(|m| m.detector.as_str())
                .take(MAX_AUDITED_MATCHES)
                .collect();
            let top = detectors.first().copied().unwrap_or("unknown");
            let event = SecurityEvent {
                id: format!("sev_{}", stack_crypto::random_token(self.rng.as_ref(), 16)?),
                operator_id: p.operator_id.clone(),
                agent_id: agent_id.clone(),
                passport_jti: jti.clone(),
                kind: PROMPT_INJECTION_EVENT.to_owned(),
                severity: "critical".to_owned(),
                message: format!("content scan {scan_id} found a prompt injection ({top})"),
                details: json!({
                    "scan_id": scan_id,
                    "detectors": detectors,
                    "matches": audited,
                    "context": context,
                    "source": source,
                    "payload_hash": payload_hash,
                    "score": verdict.score,
                }),
                created_at: self.now(),
                resolved_at: None,
            };
            let mut d = stack_audit::AuditDraft::new(
                "system",
                Layer::Scan,
                "security_event.raise",
            )
            .target("security_event", &event.id)
            .details(json!({ "kind": event.kind, "severity": event.severity, "message": event.message, "scan_id": scan_id }));
            d.agent_id.clone_from(&agent_id);
            d.passport_jti.clone_from(&jti);
            let ev_audit = self.audit(d)?;
            Some((event, ev_audit))
        } else {
            None
        };
        let event_id = event.as_ref().map(|(e, _)| e.id.clone());
        let used = self
            .store
            .record_scan(&p.operator_id, &period, limit, audit, event)
            .await?
            .ok_or_else(|| quota_exceeded(&operator.tier, limit, &period))?;

        let mut out = serde_json::to_value(&verdict)
            .map_err(|_| Error::internal("verdict did not serialize"))?;
        if let Value::Object(m) = &mut out {
            m.insert("scan_id".into(), json!(scan_id));
            m.insert("duration_ms".into(), json!(duration_ms));
            m.insert("context".into(), json!(context));
            m.insert("agent_id".into(), json!(agent_id));
            m.insert("security_event_id".into(), json!(event_id));
            m.insert(
                "usage".into(),
                json!({ "used": used, "limit": limit, "remaining": limit.saturating_sub(used), "period": period }),
            );
        }
        Ok(out)
    }

    /// Scans an upstream response for the proxy (a grant with response
    /// scanning). Not metered against the scan allowance. Returns the
    /// summary added to the proxy's answer (no excerpts: the caller gets the
    /// body itself unless it is withheld) and whether it is critical; a
    /// critical verdict raises a `prompt_injection` security event (when
    /// that event cannot be stored, the summary says so in
    /// `security_event_error` and the verdict is still returned). Fails only
    /// when there is no verdict (the operator's scanner could not be loaded).
    pub(crate) async fn scan_response(
        &self,
        operator_id: &str,
        agent_id: &str,
        jti: &str,
        connection_id: &str,
        body: &[u8],
    ) -> Result<(Value, bool)> {
        let text = String::from_utf8_lossy(body).into_owned();
        let scanner = self.scanner_for(operator_id).await?;
        let verdict = tokio::task::spawn_blocking(move || scanner.scan(&text))
            .await
            .map_err(|_| Error::internal("the scan task failed"))?;
        let critical = verdict.verdict == VerdictLevel::Critical;
        let matches = audited_matches(&verdict);
        let mut summary = json!({
            "verdict": verdict.verdict.as_str(),
            "score": verdict.score,
            "matches": matches,
            "truncated": verdict.truncated,
        });
        if critical {
            let top = verdict
                .matches
                .first()
                .map_or("unknown", |m| m.detector.as_str());
            let event = self
                .raise_security_event(
                    operator_id,
                    Some(agent_id),
                    Some(jti),
                    PROMPT_INJECTION_EVENT,
                    "critical",
                    &format!("an upstream response through connection {connection_id} holds a prompt injection ({top})"),
                    json!({
                        "source": "proxy_response",
                        "connection_id": connection_id,
                        "matches": summary.get("matches"),
                        "score": verdict.score,
                        "payload_hash": stack_crypto::sha256_hex(body),
                    }),
                )
                .await;
            // The verdict stands even when its event cannot be stored: the
            // caller still blocks or annotates on it, and the proxy's audit
            // entry carries the summary with the failure.
            let (key, value) = match event {
                Ok(event) => ("security_event_id", json!(event.id)),
                Err(e) => {
                    tracing::warn!(
                        operator_id,
                        connection_id,
                        code = e.code.as_str(),
                        error = %e.message,
                        "could not store the security event of a critical response scan"
                    );
                    ("security_event_error", json!(e.code.as_str()))
                }
            };
            if let Value::Object(m) = &mut summary {
                m.insert(key.into(), value);
            }
        }
        Ok((summary, critical))
    }

    /// `GET /v1/scan/usage`.
    pub async fn scan_usage(&self, p: &Principal) -> Result<Value> {
        require(p, Permission::ScanUse)?;
        let operator = self
            .store
            .get_operator(&p.operator_id)
            .await?
            .ok_or_else(|| Error::unauthorized("unknown operator"))?;
        let limit = self.config.scan.quotas.for_tier(&operator.tier);
        let (period, start, end) = period_of(self.now());
        let used = self.store.scan_usage(&p.operator_id, &period).await?;
        Ok(json!({
            "tier": operator.tier,
            "limit": limit,
            "used": used,
            "remaining": limit.saturating_sub(used),
            "period": period,
            "period_start": start,
            "period_end": end,
            "pooled": false,
        }))
    }

    // ---- detector configuration

    /// `GET /v1/detectors/config`: every row the operator set, by key.
    pub async fn list_detector_configs(&self, p: &Principal) -> Result<Value> {
        require_config_read(p)?;
        let rows = self.store.list_detector_configs(&p.operator_id).await?;
        let mut out = Map::new();
        for r in &rows {
            out.insert(r.detector_key.clone(), r.view());
        }
        Ok(Value::Object(out))
    }

    /// `GET /v1/detectors/{key}/config`: 404 when the key runs on defaults.
    pub async fn get_detector_config(&self, p: &Principal, key: &str) -> Result<Value> {
        require_config_read(p)?;
        let not_found = || Error::not_found("detector config", key);
        if check_key_shape(key).is_err() {
            return Err(not_found());
        }
        self.store
            .get_detector_config(&p.operator_id, key)
            .await?
            .map(|r| r.view())
            .ok_or_else(not_found)
    }

    /// `PUT /v1/detectors/{key}/config`: partial upsert, validated by
    /// compiling every row of the operator with the new one. Loosening
    /// needs a governance approval id.
    pub async fn upsert_detector_config(
        &self,
        p: &Principal,
        key: &str,
        body: Value,
        governance_approval: Option<&str>,
    ) -> Result<Value> {
        require(p, Permission::SecurityEvents)?;
        check_key_shape(key)?;
        let scope = scope_of(key).ok_or_else(|| unknown_key(key))?;
        let body = if body.is_null() { json!({}) } else { body };
        let existing = self.store.get_detector_config(&p.operator_id, key).await?;
        let base = existing
            .as_ref()
            .map(|r| r.config.clone())
            .unwrap_or_default();
        let config = apply_input(key, &scope, base, &body)?;
        let loosening = loosens(existing.as_ref().map(|r| &r.config), &config);
        let approval_id = if loosening {
            Some(approval(
                governance_approval,
                "detector_config.upsert",
                key,
                "loosening a detector (disabling, whitelisting, lowering a severity, removing or editing a pattern)",
            )?)
        } else {
            governance_approval
                .map(str::trim)
                .filter(|a| stack_core::id::is_url_safe_body(a))
                .map(str::to_owned)
        };

        let mut rows: Vec<(String, DetectorConfig)> =
            rows_of(self.store.list_detector_configs(&p.operator_id).await?)
                .into_iter()
                .filter(|(k, _)| k != key)
                .collect();
        rows.push((key.to_owned(), config.clone()));
        let scanner = build_scanner(compile(&rows)?).await?;

        let now = self.now();
        let record = DetectorConfigRecord {
            operator_id: p.operator_id.clone(),
            detector_key: key.to_owned(),
            config,
            created_at: existing.as_ref().map_or(now, |r| r.created_at),
            updated_at: now,
            updated_by: p.actor_label(),
        };
        let mut draft = Self::draft(p, Layer::Scan, "detector_config.upsert")
            .target("detector_config", key)
            .details(json!({
                "detector_key": key,
                "created": existing.is_none(),
                "loosening": loosening,
                "governance_approval": approval_id,
                "enabled": record.config.enabled,
                "custom_pattern_ids": record.config.custom_patterns.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
                "whitelist_count": record.config.whitelist_patterns.len(),
                "severity_overrides": record.config.severity_overrides,
            }));
        draft = draft.payload(&serde_json::to_value(&record.config).unwrap_or(Value::Null));
        let audit = self.audit(draft)?;
        self.store.put_detector_config(&record, audit).await?;
        self.scan.put(
            &p.operator_id,
            scanner,
            fingerprint(&rows_sorted(rows)),
            now,
        );
        Ok(record.view())
    }

    /// `DELETE /v1/detectors/{key}/config`: back to defaults. Always needs a
    /// governance approval id. Idempotent: no row, nothing written.
    pub async fn reset_detector_config(
        &self,
        p: &Principal,
        key: &str,
        governance_approval: Option<&str>,
    ) -> Result<Value> {
        require(p, Permission::SecurityEvents)?;
        check_key_shape(key)?;
        scope_of(key).ok_or_else(|| unknown_key(key))?;
        let approval_id = approval(
            governance_approval,
            "detector_config.reset",
            key,
            "resetting a detector to its defaults",
        )?;
        let draft = Self::draft(p, Layer::Scan, "detector_config.reset")
            .target("detector_config", key)
            .details(json!({ "detector_key": key, "governance_approval": approval_id }));
        let audit = self.audit(draft)?;
        let existed = self
            .store
            .delete_detector_config(&p.operator_id, key, audit)
            .await?;
        if existed {
            self.invalidate_scanner(&p.operator_id);
        }
        Ok(json!({ "detector_key": key, "reset": true, "existed": existed }))
    }

    fn invalidate_scanner(&self, operator_id: &str) {
        if let Ok(mut m) = self.scan.per_operator.lock() {
            m.remove(operator_id);
        }
    }

    // ---- security events

    /// `GET /v1/security-events`: unresolved events, newest first.
    pub async fn list_security_events(
        &self,
        p: &Principal,
        q: SecurityEventQuery,
    ) -> Result<Value> {
        require(p, Permission::SecurityEvents)?;
        let page = bounded("page", int_param("page", &q.page)?, 1, u64::from(u32::MAX))?;
        let limit = bounded(
            "limit",
            int_param("limit", &q.limit)?,
            50,
            self.config.max_page,
        )?;
        let agent = q
            .agent_id
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty());
        let unresolved_only = !matches!(&q.include_resolved, Some(Value::Bool(true)))
            && !matches!(&q.include_resolved, Some(Value::String(s)) if s == "true");
        let (events, total) = self
            .store
            .security_events_page(
                &p.operator_id,
                agent,
                unresolved_only,
                (page - 1).saturating_mul(limit),
                limit,
            )
            .await?;
        let items: Vec<Value> = events.iter().map(event_view).collect();
        Ok(json!({
            "items": items,
            "events": items,
            "total": total,
            "unresolved_count": if unresolved_only { Some(total) } else { None },
            "page": page,
            "limit": limit,
        }))
    }

    /// `GET /v1/security-events/{id}`.
    pub async fn get_security_event(&self, p: &Principal, event_id: &str) -> Result<Value> {
        require(p, Permission::SecurityEvents)?;
        if !valid_event_id(event_id) {
            return Err(Error::not_found("security event", event_id));
        }
        self.store
            .get_security_event(&p.operator_id, event_id)
            .await?
            .map(|e| event_view(&e))
            .ok_or_else(|| Error::not_found("security event", event_id))
    }

    /// `POST /v1/security-events/{id}/resolve`: idempotent; the first
    /// resolution is audited.
    pub async fn resolve_security_event(&self, p: &Principal, event_id: &str) -> Result<Value> {
        require(p, Permission::SecurityEvents)?;
        if !valid_event_id(event_id) {
            return Err(Error::not_found("security event", event_id));
        }
        let draft = Self::draft(p, Layer::System, "security_event.resolve")
            .target("security_event", event_id);
        let audit = self.audit(draft)?;
        let (event, changed) = self
            .store
            .resolve_security_event(&p.operator_id, event_id, self.now(), audit)
            .await?
            .ok_or_else(|| Error::not_found("security event", event_id))?;
        let mut v = event_view(&event);
        if let Value::Object(m) = &mut v {
            m.insert("already_resolved".into(), json!(!changed));
        }
        Ok(v)
    }
}

fn rows_sorted(mut rows: Vec<(String, DetectorConfig)>) -> Vec<(String, DetectorConfig)> {
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

fn valid_event_id(id: &str) -> bool {
    id.strip_prefix("sev_")
        .is_some_and(stack_core::id::is_url_safe_body)
}

fn quota_exceeded(tier: &str, limit: u64, period: &str) -> Error {
    Error::new(
        ErrorCode::QuotaExceeded,
        format!("the monthly scan allowance of the {tier} tier ({limit}) is used up for {period}"),
    )
    .with_details(json!({ "meter": "scan", "tier": tier, "limit": limit, "period": period }))
}

/// Detector ids, categories, severities, spans and layers of the matches:
/// what the audit entry and the security event may hold (no excerpts).
fn audited_matches(v: &Verdict) -> Vec<Value> {
    v.matches
        .iter()
        .take(MAX_AUDITED_MATCHES)
        .map(|m| {
            json!({
                "detector": m.detector,
                "category": m.category.as_str(),
                "severity": m.severity,
                "span": { "start": m.span.start, "end": m.span.end },
                "decoded_via": m.decoded_via,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn keys_resolve_to_scopes() {
        assert_eq!(scope_of("prompt_injection"), Some(Scope::All));
        assert!(
            matches!(scope_of("exfiltration"), Some(Scope::Category(Category::Exfiltration, ids)) if !ids.is_empty())
        );
        assert_eq!(
            scope_of("override.ignore_previous"),
            Some(Scope::Detector("override.ignore_previous"))
        );
        assert_eq!(scope_of("nope"), None);
    }

    #[test]
    fn fingerprint_is_key_order_independent_after_sorting() {
        let a = vec![
            ("b".to_owned(), DetectorConfig::default()),
            ("a".to_owned(), DetectorConfig::default()),
        ];
        let b = vec![
            ("a".to_owned(), DetectorConfig::default()),
            ("b".to_owned(), DetectorConfig::default()),
        ];
        assert_eq!(fingerprint(&rows_sorted(a)), fingerprint(&rows_sorted(b)));
    }

    #[test]
    fn compile_expands_keys() {
        let off = DetectorConfig {
            enabled: false,
            ..DetectorConfig::default()
        };
        let mut wl = DetectorConfig::default();
        wl.whitelist_patterns.push(Suppression {
            detector: None,
            text: Some("parking".into()),
        });
        wl.severity_overrides
            .insert("override.ignore_previous".into(), Severity::Low);
        let cfg = compile(&[
            ("exfiltration".into(), off),
            ("override.ignore_previous".into(), wl),
        ])
        .unwrap();
        assert!(cfg.enabled);
        assert!(
            cfg.disabled_detectors
                .iter()
                .any(|d| d == "exfil.send_secrets")
        );
        assert_eq!(
            cfg.suppressions[0].detector.as_deref(),
            Some("override.ignore_previous")
        );
        Scanner::new(&cfg).unwrap();
    }

    #[test]
    fn loosening_is_detected() {
        let base = DetectorConfig::default();
        let mut tighter = base.clone();
        tighter
            .severity_overrides
            .insert("agent.output_directive".into(), Severity::High);
        assert!(!loosens(None, &tighter));
        assert!(loosens(Some(&tighter), &base), "dropping a raise lowers it");
        let mut lower = base.clone();
        lower
            .severity_overrides
            .insert("override.ignore_previous".into(), Severity::Low);
        assert!(loosens(None, &lower));
        let off = DetectorConfig {
            enabled: false,
            ..DetectorConfig::default()
        };
        assert!(loosens(None, &off));
        let mut wl = base.clone();
        wl.whitelist_patterns.push(Suppression {
            detector: None,
            text: Some("x".into()),
        });
        assert!(loosens(None, &wl));
        assert!(!loosens(Some(&wl), &wl));
        let mut custom = base.clone();
        custom.custom_patterns =
            custom_patterns(PROMPT_INJECTION, &Scope::All, &json!(["secret handshake"])).unwrap();
        assert_eq!(custom.custom_patterns[0].id, "p1");
        assert!(!loosens(None, &custom));
        assert!(loosens(Some(&custom), &base));
    }

    #[test]
    fn config_errors_keep_the_scanner_code() {
        let cfg = compile(&[(
            PROMPT_INJECTION.into(),
            DetectorConfig {
                custom_patterns: custom_patterns(
                    PROMPT_INJECTION,
                    &Scope::All,
                    &json!(["(unclosed"]),
                )
                .unwrap(),
                ..DetectorConfig::default()
            },
        )])
        .unwrap();
        let err = Scanner::new(&cfg).unwrap_err();
        assert_eq!(config_error(&err).code.as_str(), err.code());
    }

    #[test]
    fn content_is_walked_one_level() {
        assert_eq!(content_text(&json!("hi")).unwrap(), "hi");
        let t = content_text(&json!({"subject": "a", "n": 1, "nested": {"x": "y"}})).unwrap();
        assert!(
            t.contains("subject: a") && t.contains("n: 1") && t.contains(r#"nested: {"x":"y"}"#)
        );
        assert!(content_text(&Value::Null).is_err());
        assert!(content_text(&json!(3)).is_err());
    }

    #[test]
    fn periods_roll_over_the_year() {
        // 2026-12-31T23:00:00Z
        let (p, start, end) = period_of(Timestamp::from_millis(1_798_758_000_000));
        assert_eq!(p, "2026-12");
        assert_eq!(start, "2026-12-01T00:00:00.000Z");
        assert_eq!(end, "2027-01-01T00:00:00.000Z");
    }
}
