//! Agent tools.

use serde_json::{Value, json};
use stack_app::agents::{RegisterAgent, SkillAccessChange};
use stack_app::parse_input;

use stack_core::Permission;

use super::{ToolSpec, object, to_value};

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

pub(super) fn tools() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "stack_register_agent",
            description: "Register a new agent with STACK. Returns the agent (id agt_…, status, accountability settings). Agents default to enforced accountability and proxy-only credential access.",
            input_schema: object(agent_properties(), &["name"]),
            read_only: false,
            destructive: false,
            idempotent: false,
            permission: Permission::AgentsWrite,
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
            permission: Permission::AgentsRead,
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
            permission: Permission::AgentsWrite,
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
            permission: Permission::AgentsWrite,
            handler: |app, p, args| {
                Box::pin(async move {
                    let change: SkillAccessChange = parse_input(Value::Object(args))?;
                    to_value(app.set_skill_access(&p, change, false).await?)
                })
            },
        },
    ]
}
