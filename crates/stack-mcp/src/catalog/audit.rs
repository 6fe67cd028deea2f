//! Audit chain tools.

use serde_json::{Value, json};
use stack_app::audit::{AuditListQuery, VerifyQuery};
use stack_app::parse_input;

use stack_core::Permission;

use super::{ToolSpec, object, to_value};

pub(super) fn tools() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "stack_audit_list",
            description: "List audit log entries of your operator's hash chain, newest first. Filter by agent or passport; pass the previous max_timestamp as since to tail.",
            input_schema: object(
                json!({
                    "limit": { "type": "integer", "minimum": 1, "maximum": 100, "default": 20 },
                    "since": { "type": "integer", "description": "Only entries strictly newer than this (epoch milliseconds)." },
                    "agent_id": { "type": "string" },
                    "passport_jti": { "type": "string" }
                }),
                &[],
            ),
            read_only: true,
            destructive: false,
            idempotent: true,
            permission: Permission::AuditRead,
            handler: |app, p, args| {
                Box::pin(async move {
                    let q: AuditListQuery = parse_input(Value::Object(args))?;
                    to_value(app.list_audit(&p, q).await?)
                })
            },
        },
        ToolSpec {
            name: "stack_audit_chain_head",
            description: "Get the head of your operator's audit hash chain: the latest entry hash and the entry count. Anchor it externally to detect later rewriting.",
            input_schema: object(json!({}), &[]),
            read_only: true,
            destructive: false,
            idempotent: true,
            permission: Permission::AuditRead,
            handler: |app, p, _args| {
                Box::pin(async move { to_value(app.audit_chain_head(&p).await?) })
            },
        },
        ToolSpec {
            name: "stack_audit_verify_chain",
            description: "Verify your operator's audit hash chain: recompute every entry hash and link, and report the first break (entry id, position and reason) if any row was changed, removed or reordered.",
            input_schema: object(
                json!({
                    "from": { "type": "string", "description": "Start of a range (ISO-8601 or epoch ms, inclusive)." },
                    "to": { "type": "string", "description": "End of a range (ISO-8601 or epoch ms, exclusive)." },
                    "limit": { "type": "integer", "minimum": 1 }
                }),
                &[],
            ),
            read_only: true,
            destructive: false,
            idempotent: true,
            permission: Permission::AuditRead,
            handler: |app, p, args| {
                Box::pin(async move {
                    let q: VerifyQuery = parse_input(Value::Object(args))?;
                    app.verify_audit_chain(&p, q).await
                })
            },
        },
    ]
}
