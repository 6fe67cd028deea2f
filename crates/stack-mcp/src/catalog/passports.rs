//! Passport, revocation and accountability tools.

use serde_json::{Value, json};
use stack_app::parse_input;
use stack_app::passports::accountability::{Decision, ReviewQuery};
use stack_app::passports::issue::{ActiveQuery, IssuePassport, TokenBody};
use stack_app::passports::revoke::RevokeBody;
use stack_app::passports::{ActivityReport, RevokeTarget};
use stack_core::{Error, Permission};

use super::{Args, ToolSpec, object};

fn str_arg(args: &Args, name: &str) -> Result<String, Error> {
    args.get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Error::invalid_field(name, format!("{name} is required")))
}

fn report_properties() -> Value {
    json!({
        "jti": { "type": "string", "description": "The passport (pp_…)." },
        "services_used": { "type": "array", "items": { "type": "string" } },
        "actions_count": { "type": "integer", "minimum": 0 },
        "tool_calls": { "type": "array", "items": { "type": "object", "properties": { "service": { "type": "string" }, "method": { "type": "string" }, "target": { "type": "string" } } } },
        "summary": { "type": "string", "maxLength": 4000 },
        "delegated_to": { "type": "array", "items": { "type": "string" } }
    })
}

fn report_of(args: Args) -> Result<(String, ActivityReport), Error> {
    let jti = str_arg(&args, "jti")?;
    let report: ActivityReport = parse_input(Value::Object(args))?;
    Ok((jti, report))
}

fn reason_schema(id_name: &str, id_description: &str) -> Value {
    object(
        json!({
            id_name: { "type": "string", "description": id_description },
            "reason": { "type": "string", "maxLength": 1000 }
        }),
        &[id_name],
    )
}

async fn revoke(
    app: stack_app::App,
    p: stack_core::Principal,
    target: RevokeTarget,
    args: Args,
) -> stack_core::Result<Value> {
    let body: RevokeBody = parse_input(Value::Object(args))?;
    app.revoke(&p, target, body.reason).await
}

pub(super) fn tools() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "stack_issue_passport",
            description: "Issue a signed JWT passport (EdDSA) for an agent session, bound to one mission and one declared intent. Default 15 min TTL, max 1 hour. Enforced and logged agents must declare an intent (ACCOUNTABILITY_REQUIRED); blocked agents get PASSPORT_BLOCKED. Scopes default to the agent's grants and can only narrow.",
            input_schema: object(
                json!({
                    "agent_id": { "type": "string" },
                    "intent": { "type": "object", "properties": {
                        "summary": { "type": "string" },
                        "services": { "type": "array", "items": { "type": "string" } },
                        "will_delegate": { "type": "boolean" },
                        "estimated_duration_seconds": { "type": "integer" },
                        "estimated_actions": { "type": "integer" }
                    } },
                    "scopes": { "type": "array", "items": { "type": "object", "properties": {
                        "service_connection_id": { "type": "string" },
                        "scopes": { "type": "array", "items": { "type": "string" } },
                        "constraints": { "type": "array" }
                    }, "required": ["service_connection_id"] } },
                    "mission_ids": { "type": "array", "items": { "type": "string" }, "maxItems": 1, "description": "The mission (ms_…). Omitted: a mission is opened for this passport." },
                    "ttl_seconds": { "type": "integer", "minimum": 60, "maximum": 3600, "default": 900 },
                    "checkpoint_interval_seconds": { "type": "integer", "minimum": 30, "maximum": 3600 }
                }),
                &["agent_id"],
            ),
            read_only: false,
            destructive: false,
            idempotent: false,
            permission: Permission::PassportsWrite,
            handler: |app, p, args| {
                Box::pin(async move {
                    let cmd: IssuePassport = parse_input(Value::Object(args))?;
                    app.issue_passport(&p, cmd).await
                })
            },
        },
        ToolSpec {
            name: "stack_verify_passport",
            description: "Verify a passport token: signature, issuer, audience, expiry and revocation. Returns valid, or the reason it is not (expired, revoked, bad_signature, …).",
            input_schema: object(json!({ "token": { "type": "string" } }), &["token"]),
            read_only: true,
            destructive: false,
            idempotent: true,
            permission: Permission::PassportsRead,
            handler: |app, _p, args| {
                Box::pin(async move {
                    let body: TokenBody = parse_input(Value::Object(args))?;
                    app.verify_passport(&body.token).await
                })
            },
        },
        ToolSpec {
            name: "stack_refresh_passport",
            description: "Refresh a passport before or after expiry (within 24h). Preserves session and delegation chain; refused once its mission has ended.",
            input_schema: object(
                json!({ "token": { "type": "string" }, "ttl_seconds": { "type": "integer", "minimum": 60, "maximum": 3600 } }),
                &["token"],
            ),
            read_only: false,
            destructive: false,
            idempotent: false,
            permission: Permission::ReportActivity,
            handler: |app, p, args| {
                Box::pin(async move {
                    let body: TokenBody = parse_input(Value::Object(args))?;
                    app.refresh_passport(&p, body).await
                })
            },
        },
        ToolSpec {
            name: "stack_list_active_passports",
            description: "List all active (non-expired, non-revoked) passports. Filter by agent or session.",
            input_schema: object(
                json!({ "agent_id": { "type": "string" }, "session_id": { "type": "string" } }),
                &[],
            ),
            read_only: true,
            destructive: false,
            idempotent: true,
            permission: Permission::PassportsRead,
            handler: |app, p, args| {
                Box::pin(async move {
                    let q: ActiveQuery = parse_input(Value::Object(args))?;
                    Ok(json!({ "passports": app.list_active_passports(&p, q).await? }))
                })
            },
        },
        ToolSpec {
            name: "stack_revoke_passport",
            description: "Revoke a specific passport by JTI, cascading breadth-first to every live passport delegated from it. Takes effect on every node at once (in-memory revocation sets fed by the bus).",
            input_schema: reason_schema("jti", "The passport (pp_…)."),
            read_only: false,
            destructive: true,
            idempotent: true,
            permission: Permission::PassportsWrite,
            handler: |app, p, args| {
                Box::pin(async move {
                    let jti = str_arg(&args, "jti")?;
                    revoke(app, p, RevokeTarget::Passport(jti), args).await
                })
            },
        },
        ToolSpec {
            name: "stack_revoke_agent_passports",
            description: "Revoke ALL active passports for a specific agent (and what was delegated from them).",
            input_schema: reason_schema("agent_id", "The agent (agt_…)."),
            read_only: false,
            destructive: true,
            idempotent: true,
            permission: Permission::PassportsWrite,
            handler: |app, p, args| {
                Box::pin(async move {
                    let agent = str_arg(&args, "agent_id")?;
                    revoke(app, p, RevokeTarget::Agent(agent), args).await
                })
            },
        },
        ToolSpec {
            name: "stack_revoke_session",
            description: "Revoke an entire session chain: the root passport and all delegated passports.",
            input_schema: reason_schema("session_id", "The session (ses_…)."),
            read_only: false,
            destructive: true,
            idempotent: true,
            permission: Permission::PassportsWrite,
            handler: |app, p, args| {
                Box::pin(async move {
                    let session = str_arg(&args, "session_id")?;
                    revoke(app, p, RevokeTarget::Session(session), args).await
                })
            },
        },
        ToolSpec {
            name: "stack_revoke_all_passports",
            description: "EMERGENCY: Revoke ALL active passports across all agents of your operator. Requires confirm: true.",
            input_schema: object(
                json!({ "confirm": { "type": "boolean", "const": true }, "reason": { "type": "string", "maxLength": 1000 } }),
                &["confirm"],
            ),
            read_only: false,
            destructive: true,
            idempotent: true,
            permission: Permission::PassportsWrite,
            handler: |app, p, args| {
                Box::pin(async move {
                    if args.get("confirm").and_then(Value::as_bool) != Some(true) {
                        return Err(Error::invalid_field(
                            "confirm",
                            "revoking every passport requires confirm: true",
                        ));
                    }
                    revoke(app, p, RevokeTarget::All, args).await
                })
            },
        },
        ToolSpec {
            name: "stack_checkpoint",
            description: "Submit a progress checkpoint during an active mission: services used and actions taken. In enforced mode it extends the passport by one checkpoint interval and returns a fresh token.",
            input_schema: object(report_properties(), &["jti"]),
            read_only: false,
            destructive: false,
            idempotent: false,
            permission: Permission::ReportActivity,
            handler: |app, p, args| {
                Box::pin(async move {
                    let (jti, report) = report_of(args)?;
                    app.checkpoint(&p, &jti, report).await
                })
            },
        },
        ToolSpec {
            name: "stack_checkout",
            description: "Submit the final report and check out from a mission (once per passport). Runs the review engine (clean, flagged or blocked) and revokes the passport.",
            input_schema: object(report_properties(), &["jti"]),
            read_only: false,
            destructive: false,
            idempotent: false,
            permission: Permission::ReportActivity,
            handler: |app, p, args| {
                Box::pin(async move {
                    let (jti, report) = report_of(args)?;
                    app.checkout(&p, &jti, report).await
                })
            },
        },
        ToolSpec {
            name: "stack_get_passport_report",
            description: "Get the full accountability report of a passport: intent, checkpoints, checkout, and review decision.",
            input_schema: object(json!({ "jti": { "type": "string" } }), &["jti"]),
            read_only: true,
            destructive: false,
            idempotent: true,
            permission: Permission::PassportsRead,
            handler: |app, p, args| {
                Box::pin(async move {
                    let jti = str_arg(&args, "jti")?;
                    app.passport_report(&p, &jti).await
                })
            },
        },
        ToolSpec {
            name: "stack_list_pending_reviews",
            description: "List flagged or blocked passport checkouts pending operator review.",
            input_schema: object(
                json!({
                    "status": { "type": "string", "enum": ["flagged", "blocked", "clean"], "default": "flagged" },
                    "page": { "type": "integer", "minimum": 1, "default": 1 },
                    "limit": { "type": "integer", "minimum": 1, "maximum": 100, "default": 20 }
                }),
                &[],
            ),
            read_only: true,
            destructive: false,
            idempotent: true,
            permission: Permission::PassportsRead,
            handler: |app, p, args| {
                Box::pin(async move {
                    let q: ReviewQuery = parse_input(Value::Object(args))?;
                    app.list_reviews(&p, q).await
                })
            },
        },
        ToolSpec {
            name: "stack_decide_review",
            description: "Approve or block a flagged passport checkout. Blocking with block_future stops the agent from getting new passports. Approving from an API-key session needs a governance approval id.",
            input_schema: object(
                json!({
                    "checkout_id": { "type": "string" },
                    "decision": { "type": "string", "enum": ["approved", "blocked"] },
                    "notes": { "type": "string", "maxLength": 2000 },
                    "block_future": { "type": "boolean" },
                    "governance_approval": { "type": "string", "description": "The X-Governance-Approval id (required to approve)." }
                }),
                &["checkout_id", "decision"],
            ),
            read_only: false,
            destructive: false,
            idempotent: false,
            permission: Permission::PassportsWrite,
            handler: |app, p, args| {
                Box::pin(async move {
                    let checkout = str_arg(&args, "checkout_id")?;
                    let approval = args
                        .get("governance_approval")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    let d: Decision = parse_input(Value::Object(args))?;
                    app.decide_review(&p, &checkout, d, approval.as_deref())
                        .await
                })
            },
        },
    ]
}
