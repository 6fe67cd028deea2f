//! Reading and verifying the audit chain.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use stack_audit::{AuditEntry, ChainVerifier};
use stack_core::{Error, Permission, Principal, Result, Timestamp};

use crate::{App, require};

/// Entries read per page when walking a whole chain.
const VERIFY_PAGE: u64 = 1_000;
/// Most rows one export response carries.
pub const MAX_EXPORT_ROWS: u64 = 50_000;

/// Filters for `GET /v1/audit`.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub limit: u64,
    /// Only entries strictly newer than this (epoch ms).
    pub since: Option<i64>,
    pub agent_id: Option<String>,
    pub passport_jti: Option<String>,
}

/// A time window: `from` inclusive, `to` exclusive, epoch ms.
#[derive(Debug, Clone, Default)]
pub struct AuditRange {
    pub from: Option<i64>,
    pub to: Option<i64>,
}

/// Query strings arrive as strings (the SDK sends numbers as decimal text).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuditListQuery {
    pub limit: Option<Value>,
    pub since: Option<Value>,
    pub agent_id: Option<String>,
    pub passport_jti: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub max_timestamp: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChainHeadView {
    pub operator_id: String,
    pub entry_count: i64,
    pub head_hash: String,
    pub last_entry_id: Option<String>,
    pub last_timestamp: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct VerifyQuery {
    pub from: Option<Value>,
    pub to: Option<Value>,
    pub limit: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ExportQuery {
    pub format: Option<String>,
    pub from: Option<Value>,
    pub to: Option<Value>,
    pub after_seq: Option<Value>,
    pub limit: Option<Value>,
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Json,
    Ndjson,
    Csv,
}

/// One page of an export, already in its format.
#[derive(Debug, Clone)]
pub struct ExportPage {
    pub format: ExportFormat,
    pub entries: Vec<AuditEntry>,
    /// Pass as `after_seq` to get the next page; `None` at the end.
    pub next_after_seq: Option<i64>,
}

/// Reads an integer from a query value given as a number or decimal string.
pub(crate) fn int_param(name: &str, v: &Option<Value>) -> Result<Option<i64>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| Error::invalid_field(name, format!("{name} must be an integer"))),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| Error::invalid_field(name, format!("{name} must be an integer"))),
        Some(_) => Err(Error::invalid_field(
            name,
            format!("{name} must be an integer"),
        )),
    }
}

/// Reads a time given as epoch ms or ISO-8601.
fn time_param(name: &str, v: &Option<Value>) -> Result<Option<i64>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(_)) => int_param(name, v),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => {
            Timestamp::parse(s)
                .map(|t| Some(t.as_millis()))
                .ok_or_else(|| {
                    Error::invalid_field(
                        name,
                        format!("{name} must be ISO-8601 or epoch milliseconds"),
                    )
                })
        }
        Some(_) => Err(Error::invalid_field(
            name,
            format!("{name} must be ISO-8601 or epoch milliseconds"),
        )),
    }
}

pub(crate) fn bounded(name: &str, v: Option<i64>, default: u64, max: u64) -> Result<u64> {
    match v {
        None => Ok(default),
        Some(n) if n >= 1 && u64::try_from(n).is_ok_and(|n| n <= max) => Ok(n.unsigned_abs()),
        Some(_) => Err(Error::invalid_field(
            name,
            format!("{name} must be between 1 and {max}"),
        )),
    }
}

impl App {
    pub async fn list_audit(&self, p: &Principal, q: AuditListQuery) -> Result<AuditPage> {
        require(p, Permission::AuditRead)?;
        let filter = AuditFilter {
            limit: bounded("limit", int_param("limit", &q.limit)?, 20, 100)?,
            since: int_param("since", &q.since)?,
            agent_id: q.agent_id.filter(|s| !s.is_empty()),
            passport_jti: q.passport_jti.filter(|s| !s.is_empty()),
        };
        let entries = self.store.list_audit(&p.operator_id, &filter).await?;
        let max_timestamp = entries.iter().map(|e| e.timestamp).max();
        Ok(AuditPage {
            entries,
            max_timestamp,
        })
    }

    pub async fn audit_chain_head(&self, p: &Principal) -> Result<ChainHeadView> {
        require(p, Permission::AuditRead)?;
        let head = self.store.recorded_head(&p.operator_id).await?;
        Ok(match head {
            Some((h, last_id)) => ChainHeadView {
                operator_id: p.operator_id.clone(),
                entry_count: h.seq,
                head_hash: h.hash,
                last_entry_id: Some(last_id),
                last_timestamp: Some(h.timestamp),
            },
            None => ChainHeadView {
                operator_id: p.operator_id.clone(),
                entry_count: 0,
                head_hash: stack_audit::GENESIS_HASH.to_owned(),
                last_entry_id: None,
                last_timestamp: None,
            },
        })
    }

    /// Walks the operator's chain (or the part inside `from`/`to`) in pages,
    /// recomputing every hash and link, and reports the first break.
    pub async fn verify_audit_chain(&self, p: &Principal, q: VerifyQuery) -> Result<Value> {
        require(p, Permission::AuditRead)?;
        let range = AuditRange {
            from: time_param("from", &q.from)?,
            to: time_param("to", &q.to)?,
        };
        let limit = int_param("limit", &q.limit)?
            .map(|n| bounded("limit", Some(n), 1, i64::MAX.unsigned_abs()))
            .transpose()?;
        let whole_chain = range.from.is_none() && range.to.is_none() && limit.is_none();

        // A range starts after the last entry before it, whose stored hash is
        // taken as the anchor; the whole chain starts at genesis.
        let mut verifier = ChainVerifier::new(&p.operator_id);
        let mut after_seq = 0;
        let mut anchored_at = None;
        if let Some(from) = range.from {
            let before = AuditRange {
                from: None,
                to: Some(from),
            };
            if let Some(anchor) = self.last_entry_in(p, &before).await? {
                after_seq = anchor.seq;
                anchored_at = Some(anchor.entry_id.clone());
                verifier = ChainVerifier::starting_after(&p.operator_id, &anchor.as_head());
            }
        }
        let mut checked: u64 = 0;
        let mut complete = true;
        'pages: loop {
            let page = self
                .store
                .audit_in_order(&p.operator_id, after_seq, &range, VERIFY_PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            after_seq = last.seq;
            let full_page = page.len() as u64 == VERIFY_PAGE;
            for e in &page {
                if limit.is_some_and(|l| checked >= l) {
                    complete = false;
                    break 'pages;
                }
                checked += 1;
                if !verifier.push(e) {
                    break 'pages;
                }
            }
            if !full_page {
                break;
            }
        }
        let recorded = if whole_chain {
            self.store
                .recorded_head(&p.operator_id)
                .await?
                .map(|(h, _)| h)
        } else {
            None
        };
        let v = verifier.finish(recorded.as_ref());
        let first_break = v.first_break.as_ref().map(|b| {
            json!({
                "entry_id": b.entry_id,
                "seq": b.seq,
                "reason": b.reason.describe(),
                "kind": b.reason,
            })
        });
        Ok(json!({
            "ok": v.ok,
            "operator_id": p.operator_id,
            "entries_checked": v.entries_checked,
            "head_hash": v.head.hash,
            "head_seq": v.head.seq,
            "complete": complete,
            "range": { "from": range.from, "to": range.to, "anchored_after": anchored_at },
            "first_break": first_break,
        }))
    }

    async fn last_entry_in(&self, p: &Principal, range: &AuditRange) -> Result<Option<AuditEntry>> {
        // Chains are walked forward only; find the last entry before `to` by paging.
        let mut after = 0;
        let mut last = None;
        loop {
            let page = self
                .store
                .audit_in_order(&p.operator_id, after, range, VERIFY_PAGE)
                .await?;
            let full = page.len() as u64 == VERIFY_PAGE;
            if let Some(e) = page.into_iter().last() {
                after = e.seq;
                last = Some(e);
            }
            if !full {
                return Ok(last);
            }
        }
    }

    pub async fn export_audit(&self, p: &Principal, q: ExportQuery) -> Result<ExportPage> {
        require(p, Permission::AuditRead)?;
        let format = match q.format.as_deref().unwrap_or("json") {
            "json" => ExportFormat::Json,
            "ndjson" | "jsonl" => ExportFormat::Ndjson,
            "csv" => ExportFormat::Csv,
            _ => {
                return Err(Error::invalid_field(
                    "format",
                    "format must be json, ndjson or csv",
                ));
            }
        };
        let range = AuditRange {
            from: time_param("from", &q.from)?,
            to: time_param("to", &q.to)?,
        };
        let after_seq = int_param("after_seq", &q.after_seq)?.unwrap_or(0).max(0);
        let limit = bounded(
            "limit",
            int_param("limit", &q.limit)?,
            1_000,
            MAX_EXPORT_ROWS,
        )?;
        let entries = self
            .store
            .audit_in_order(&p.operator_id, after_seq, &range, limit)
            .await?;
        let next_after_seq = if entries.len() as u64 == limit {
            entries.last().map(|e| e.seq)
        } else {
            None
        };
        Ok(ExportPage {
            format,
            entries,
            next_after_seq,
        })
    }
}

/// CSV columns of an export, in order.
pub const CSV_COLUMNS: &[&str] = &[
    "seq",
    "entry_id",
    "timestamp",
    "operator_id",
    "agent_id",
    "passport_jti",
    "actor",
    "layer",
    "action",
    "outcome",
    "target_type",
    "target_id",
    "trace_id",
    "duration_ms",
    "payload_hash",
    "error_code",
    "error_message",
    "details",
    "prev_entry_hash",
    "entry_hash",
];

fn csv_field(s: &str) -> String {
    // Quote everything that needs it; neutralise spreadsheet formulas.
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

impl ExportPage {
    /// The page rendered in its format.
    pub fn render(&self) -> String {
        match self.format {
            ExportFormat::Json => json!({
                "entries": self.entries,
                "next_after_seq": self.next_after_seq,
            })
            .to_string(),
            ExportFormat::Ndjson => {
                let mut out = String::new();
                for e in &self.entries {
                    out.push_str(&serde_json::to_string(e).unwrap_or_default());
                    out.push('\n');
                }
                out
            }
            ExportFormat::Csv => {
                let mut out = CSV_COLUMNS.join(",");
                out.push_str("\r\n");
                for e in &self.entries {
                    let opt = |v: &Option<String>| v.as_deref().map(csv_field).unwrap_or_default();
                    let row = [
                        e.seq.to_string(),
                        csv_field(&e.entry_id),
                        e.timestamp.to_string(),
                        csv_field(&e.operator_id),
                        opt(&e.agent_id),
                        opt(&e.passport_jti),
                        csv_field(&e.actor),
                        e.layer.as_str().to_owned(),
                        csv_field(&e.action),
                        e.outcome.as_str().to_owned(),
                        opt(&e.target_type),
                        opt(&e.target_id),
                        opt(&e.trace_id),
                        e.duration_ms.map(|d| d.to_string()).unwrap_or_default(),
                        opt(&e.payload_hash),
                        opt(&e.error_code),
                        opt(&e.error_message),
                        csv_field(&stack_audit::canonical_json(&e.details)),
                        e.prev_entry_hash.clone(),
                        e.entry_hash.clone(),
                    ];
                    out.push_str(&row.join(","));
                    out.push_str("\r\n");
                }
                out
            }
        }
    }

    pub fn content_type(&self) -> &'static str {
        match self.format {
            ExportFormat::Json => "application/json",
            ExportFormat::Ndjson => "application/x-ndjson",
            ExportFormat::Csv => "text/csv; charset=utf-8",
        }
    }
}
