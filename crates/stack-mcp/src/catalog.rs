//! The tool catalog, as data: one entry per tool.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde_json::{Map, Value, json};
use stack_app::agents::{RegisterAgent, SkillAccessChange};
use stack_app::audit::{AuditListQuery, VerifyQuery};
use stack_app::{App, parse_input};
use stack_core::{Principal, Result};

type Args = Map<String, Value>;
pub type ToolFuture = Pin<Box<dyn Future<Output = Result<Value>> + Send>>;
pub type ToolHandler = fn(App, Principal, Args) -> ToolFuture;

/// One MCP tool.
#[derive(Clone)]
pub struct ToolSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub input_schema: Value,
    pub read_only: bool,
    pub destructive: bool,
    pub idempotent: bool,
    pub handler: ToolHandler,
}

impl ToolSpec {
    pub fn to_tool(&self) -> Tool {
        let schema: JsonObject = match &self.input_schema {
            Value::Object(m) => m.clone(),
            _ => JsonObject::new(),
        };
        Tool::new(self.name, self.description, Arc::new(schema)).with_annotations(
            ToolAnnotations::new()
                .read_only(self.read_only)
                .destructive(self.destructive)
                .idempotent(self.idempotent),
        )
    }
}

fn to_value<T: serde::Serialize>(v: T) -> Result<Value> {
    serde_json::to_value(v).map_err(|_| stack_core::Error::internal("result did not serialize"))
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": properties, "required": required, "additionalProperties": true })
}

fn agent_properties() -> Value {
    json!({
        "name": { "type": "string", "description": "Lowercase letters, digits and '-', 2-64 characters, unique per operator.", "pattern": "^[a-z0-9][a-z0-9-]*[a-z0-9]$", "maxLength": 64 },
        "description": { "type": "string", "maxLength": 256 },
        "profile": { "type": "string", "enum": ["proxied-llm-bot"], "description": "Preset: proxy_only + logged + stack_managed. Explicit fields override it." },
        "accountability_mode": { "type": "string", "enum": ["enforced", "logged", "standard"], "default": "enforced" },
        "credential_access": { "type": "string", "enum": ["direct", "proxy_preferred", "proxy_only"], "default": "proxy_only" },
        "key_mode": { "type": "string", "enum": ["stack_managed", "customer_managed", "co_signed"], "default": "stack_managed" },
        "on_warning": { "type": "string", "enum": ["notify", "block"], "default": "notify" },
        "on_critical": { "type": "string", "enum": ["notify", "block"], "default": "notify" },
        "skill_access_mode": { "type": "string", "enum": ["all", "custom"], "default": "all", "description": "custom: only skills in allowed_skills may be invoked." },
        "allowed_skills": { "type": "array", "items": { "type": "string", "pattern": "^skl_[A-Za-z0-9_-]+$" } },
        "icon_url": { "type": "string", "maxLength": 100000 },
        "llm_inject_system_prompt": { "type": "boolean", "default": true },
        "llm_redact_pii": { "type": "boolean", "default": true }
    })
}

fn skill_change_schema() -> Value {
    object(
        json!({
            "agent_id": { "type": "string", "description": "The agent (agt_…)." },
            "skill_id": { "type": "string", "description": "The skill (skl_…).", "pattern": "^skl_[A-Za-z0-9_-]+$" }
        }),
        &["agent_id", "skill_id"],
    )
}

/// Every tool this build serves.
pub fn catalog() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "stack_register_agent",
            description: "Register a new agent with STACK. Returns the agent (id agt_…, status, accountability settings). Agents default to enforced accountability and proxy-only credential access.",
            input_schema: object(agent_properties(), &["name"]),
            read_only: false,
            destructive: false,
            idempotent: false,
            handler: |app, p, args| {
                Box::pin(async move {
                    let cmd: RegisterAgent = parse_input(Value::Object(args))?;
                    to_value(app.register_agent(&p, cmd).await?)
                })
            },
        },
        ToolSpec {
            name: "stack_list_agents",
            description: "List all registered agents of your operator account.",
            input_schema: object(json!({}), &[]),
            read_only: true,
            destructive: false,
            idempotent: true,
            handler: |app, p, _args| {
                Box::pin(async move {
                    let agents = app.list_agents(&p).await?;
                    Ok(json!({ "agents": to_value(agents)? }))
                })
            },
        },
        ToolSpec {
            name: "stack_allow_skill",
            description: "Add a skill to an agent's allowed_skills list (idempotent). Enforced when the agent's skill_access_mode is \"custom\".",
            input_schema: skill_change_schema(),
            read_only: false,
            destructive: false,
            idempotent: true,
            handler: |app, p, args| {
                Box::pin(async move {
                    let change: SkillAccessChange = parse_input(Value::Object(args))?;
                    to_value(app.set_skill_access(&p, change, true).await?)
                })
            },
        },
        ToolSpec {
            name: "stack_disallow_skill",
            description: "Remove a skill from an agent's allowed_skills list (idempotent).",
            input_schema: skill_change_schema(),
            read_only: false,
            destructive: true,
            idempotent: true,
            handler: |app, p, args| {
                Box::pin(async move {
                    let change: SkillAccessChange = parse_input(Value::Object(args))?;
                    to_value(app.set_skill_access(&p, change, false).await?)
                })
            },
        },
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
            handler: |app, p, args| {
                Box::pin(async move {
                    let q: VerifyQuery = parse_input(Value::Object(args))?;
                    app.verify_audit_chain(&p, q).await
                })
            },
        },
    ]
}
