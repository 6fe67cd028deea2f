//! Content scan, detector customization and security-event tools.

use serde_json::{Map, Value, json};
use stack_app::parse_input;
use stack_app::scan::{CONTEXTS, ScanRequest, SecurityEventQuery};
use stack_core::{Error, Permission};

use super::{Args, ToolSpec, object};

fn str_arg(args: &Args, names: &[&str]) -> Result<String, Error> {
    names
        .iter()
        .find_map(|n| args.get(*n).and_then(Value::as_str))
        .map(str::to_owned)
        .ok_or_else(|| {
            let first = names.first().copied().unwrap_or("argument");
            Error::invalid_field(first, format!("{first} is required"))
        })
}

fn opt_str<'a>(args: &'a Args, name: &str) -> Option<&'a str> {
    args.get(name).and_then(Value::as_str)
}

/// The upsert body from the tool arguments: the REST fields, plus the
/// tool's shorthands `whitelist` (→ `whitelist_patterns`) and `severity`
/// (→ an override of the named detector itself).
fn upsert_body(key: &str, args: &Args) -> Value {
    let mut body = Map::new();
    for f in [
        "custom_patterns",
        "whitelist_patterns",
        "severity_overrides",
        "enabled",
    ] {
        if let Some(v) = args.get(f) {
            body.insert(f.to_owned(), v.clone());
        }
    }
    if !body.contains_key("whitelist_patterns")
        && let Some(v) = args.get("whitelist")
    {
        body.insert("whitelist_patterns".to_owned(), v.clone());
    }
    if let Some(sev) = args.get("severity").filter(|v| !v.is_null()) {
        let mut overrides = body
            .get("severity_overrides")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        overrides.insert(key.to_owned(), sev.clone());
        body.insert("severity_overrides".to_owned(), Value::Object(overrides));
    }
    Value::Object(body)
}

fn detector_property() -> Value {
    json!({ "type": "string", "description": "The detector key: prompt_injection (the whole scanner), a category (instruction_override, role_spoofing, fake_tool_call, exfiltration, credential_harvesting, jailbreak_persona, delimiter_injection, hidden_instruction, encoded_instruction) or a detector id (override.ignore_previous, …)." })
}

pub(super) fn tools() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "stack_scan",
            description: "Scan retrieved content (email/document/webpage/API response) for prompt-injection markers BEFORE feeding to the LLM. Two-layer detector: L1 regex catalog + L2 encoding-aware normalization (base64/URL/hex/leetspeak/homoglyphs/zero-width/ROT13/reverse). Returns verdict + match details.",
            input_schema: object(
                json!({
                    "content": { "description": "The text to scan, or an object walked one level deep.", "anyOf": [{ "type": "string" }, { "type": "object" }] },
                    "context": { "type": "string", "enum": CONTEXTS },
                    "source": { "type": "string", "description": "Sender, URL or filename." },
                    "passport_token": { "type": "string", "description": "A passport JWT attributing the scan to its agent." }
                }),
                &["content"],
            ),
            read_only: false,
            destructive: false,
            idempotent: false,
            permission: Permission::ScanUse,
            handler: |app, p, args| {
                Box::pin(async move {
                    let req: ScanRequest = parse_input(Value::Object(args))?;
                    app.scan(&p, req, None).await
                })
            },
        },
        ToolSpec {
            name: "stack_scan_usage",
            description: "Check monthly /v1/scan usage and remaining quota.",
            input_schema: object(json!({}), &[]),
            read_only: true,
            destructive: false,
            idempotent: true,
            permission: Permission::ScanUse,
            handler: |app, p, _args| Box::pin(async move { app.scan_usage(&p).await }),
        },
        ToolSpec {
            name: "stack_list_security_events",
            description: "List unresolved security events (credential misuse, delegation violations, etc.).",
            input_schema: object(
                json!({
                    "agent_id": { "type": "string", "description": "Only this agent." },
                    "include_resolved": { "type": "boolean", "description": "Also resolved events." },
                    "page": { "type": "integer", "minimum": 1, "default": 1 },
                    "limit": { "type": "integer", "minimum": 1, "maximum": 100, "default": 50 }
                }),
                &[],
            ),
            read_only: true,
            destructive: false,
            idempotent: true,
            permission: Permission::SecurityEvents,
            handler: |app, p, args| {
                Box::pin(async move {
                    let q: SecurityEventQuery = parse_input(Value::Object(args))?;
                    app.list_security_events(&p, q).await
                })
            },
        },
        ToolSpec {
            name: "stack_resolve_security_event",
            description: "Mark a security event as reviewed and resolved.",
            input_schema: object(
                json!({
                    "event_id": { "type": "string", "description": "The security event (sev_…)." },
                    "note": { "type": "string", "description": "Resolution note." }
                }),
                &["event_id"],
            ),
            read_only: false,
            destructive: false,
            idempotent: true,
            permission: Permission::SecurityEvents,
            handler: |app, p, args| {
                Box::pin(async move {
                    let id = str_arg(&args, &["event_id"])?;
                    app.resolve_security_event(&p, &id).await
                })
            },
        },
        ToolSpec {
            name: "stack_list_detector_configs",
            description: "List every per-detector customization this operator has set. Empty list means defaults.",
            input_schema: object(json!({}), &[]),
            read_only: true,
            destructive: false,
            idempotent: true,
            permission: Permission::AuditRead,
            handler: |app, p, _args| Box::pin(async move { app.list_detector_configs(&p).await }),
        },
        ToolSpec {
            name: "stack_get_detector_config",
            description: "Get a single detector's config. 404 means defaults.",
            input_schema: object(json!({ "detector": detector_property() }), &["detector"]),
            read_only: true,
            destructive: false,
            idempotent: true,
            permission: Permission::AuditRead,
            handler: |app, p, args| {
                Box::pin(async move {
                    let key = str_arg(&args, &["detector", "detector_key"])?;
                    app.get_detector_config(&p, &key).await
                })
            },
        },
        ToolSpec {
            name: "stack_upsert_detector_config",
            description: "Customize a detector for your traffic — custom regex, whitelist suppression, severity overrides, master switch. Studio+.",
            input_schema: object(
                json!({
                    "detector": detector_property(),
                    "enabled": { "type": "boolean", "description": "Master switch." },
                    "custom_patterns": { "type": "array", "description": "Extra regular expressions (linear-time regex syntax), as strings or {id, pattern, severity?, category?, description?, case_insensitive?}.", "items": { "anyOf": [{ "type": "string" }, { "type": "object" }] } },
                    "whitelist_patterns": { "type": "array", "description": "Suppressed matches: a literal the match excerpt contains, or {detector?, text?}.", "items": { "anyOf": [{ "type": "string" }, { "type": "object" }] } },
                    "whitelist": { "type": "array", "items": { "type": "string" }, "description": "Same as whitelist_patterns." },
                    "severity_overrides": { "type": "object", "description": "Detector id or category → low|medium|high (or info|warning|critical).", "additionalProperties": { "type": "string" } },
                    "severity": { "type": "string", "enum": ["low", "medium", "high", "info", "warning", "critical"], "description": "Override the severity of this detector (or category) itself." },
                    "governance_approval": { "type": "string", "description": "The X-Governance-Approval id: needed when the change loosens detection." }
                }),
                &["detector"],
            ),
            read_only: false,
            destructive: false,
            idempotent: true,
            permission: Permission::SecurityEvents,
            handler: |app, p, args| {
                Box::pin(async move {
                    let key = str_arg(&args, &["detector", "detector_key"])?;
                    let body = upsert_body(&key, &args);
                    app.upsert_detector_config(
                        &p,
                        &key,
                        body,
                        opt_str(&args, "governance_approval"),
                    )
                    .await
                })
            },
        },
        ToolSpec {
            name: "stack_reset_detector_config",
            description: "Reset a detector to built-in defaults — deletes the customization row. Studio+.",
            input_schema: object(
                json!({
                    "detector": detector_property(),
                    "governance_approval": { "type": "string", "description": "The X-Governance-Approval id (always required)." }
                }),
                &["detector"],
            ),
            read_only: false,
            destructive: true,
            idempotent: true,
            permission: Permission::SecurityEvents,
            handler: |app, p, args| {
                Box::pin(async move {
                    let key = str_arg(&args, &["detector", "detector_key"])?;
                    app.reset_detector_config(&p, &key, opt_str(&args, "governance_approval"))
                        .await
                })
            },
        },
    ]
}
