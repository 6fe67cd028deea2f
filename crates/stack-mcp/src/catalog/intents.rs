//! Intent tools: simulate an intended proxy call against a passport, submit
//! it for operator approval, and poll the approval.

use serde_json::{Map, Value, json};
use stack_app::intents::{SimulateIntent, SubmitIntent};
use stack_app::parse_input;
use stack_core::{Error, Permission};

use super::{Args, ToolSpec, object};

fn str_arg(args: &Args, name: &str) -> Result<String, Error> {
    args.get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Error::invalid_field(name, format!("{name} is required")))
}

/// The command body: the tool's arguments without the passport token.
fn body(args: &Args) -> Value {
    let mut m: Map<String, Value> = args.clone();
    m.remove("passport_token");
    Value::Object(m)
}

fn intent_property() -> Value {
    json!({
        "type": "object",
        "description": "The IntentClaim: target {service, url, query?} names the proxied call, action is its HTTP method, parameters is its body. Optional: named_intent (a name like slack.post_to_channel, or {name, params}) that the call must fit, agent_id, estimated_cost, reason, accountability, requires, user_subject, mission_ref, submitted_at (recorded as given).",
        "properties": {
            "type": { "type": "string" },
            "intent_type": { "type": "string" },
            "agent_id": { "type": "string" },
            "named_intent": { "anyOf": [{ "type": "string" }, { "type": "object" }] },
            "target": {
                "type": "object",
                "properties": {
                    "service": { "type": "string", "description": "Provider slug, e.g. slack, or custom." },
                    "url": { "type": "string", "description": "Absolute URL on one of the connection's hosts." },
                    "query": { "type": "object", "additionalProperties": { "type": "string" } },
                    "connection_id": { "type": "string" }
                },
                "required": ["service", "url"]
            },
            "action": { "type": "string", "description": "HTTP method: GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS." },
            "parameters": { "description": "The request body, exactly as it will be sent." },
            "estimated_cost": {},
            "reason": { "type": "string" }
        },
        "required": ["target", "action"]
    })
}

pub(super) fn tools() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "stack_simulate_intent",
            description: "Dry-run an Intent against a passport. Returns allowed + denial_reasons + diagnostics. Emits a signed intent_simulation claim. Runs the proxy's checks (grant, URL policy, constraints, named intent, quota) without calling upstream; also returns simulated_cost, predicted_detector_fires and claim (a JWS signed with the passport key, verifiable with the JWKS).",
            input_schema: object(
                json!({
                    "passport_token": { "type": "string", "description": "The passport the call would be made with (X-Passport-Token)." },
                    "intent": intent_property(),
                    "intent_claim_ref": { "type": "string", "description": "An intent claim id (pc_…) this simulation refers to." },
                    "persist": { "type": "boolean", "default": true, "description": "Keep the signed claim in the audit chain and return its claim_id." }
                }),
                &["passport_token", "intent"],
            ),
            read_only: true,
            destructive: false,
            idempotent: false,
            permission: Permission::PassportsRead,
            handler: |app, p, args| {
                Box::pin(async move {
                    let token = str_arg(&args, "passport_token")?;
                    let cmd: SimulateIntent = parse_input(body(&args))?;
                    app.simulate_intent(&p, Some(&token), cmd).await
                })
            },
        },
        ToolSpec {
            name: "stack_submit_intent",
            description: "Submit an Intent for operator approval. Required before enforced-mode producer calls. Returns approval_id; pair with stack_get_intent_approval to poll. The approval is bound to this passport and to the exact request (service, method, URL with query, body); once approved, pass approval_id to stack_proxy_request, which uses it once. Expires after expires_in_seconds (default 900).",
            input_schema: object(
                json!({
                    "passport_token": { "type": "string", "description": "The passport that will make the call (X-Passport-Token)." },
                    "intent": intent_property(),
                    "expires_in_seconds": { "type": "integer", "minimum": 1, "maximum": 86400, "default": 900 },
                    "skip_simulation": { "type": "boolean", "default": false }
                }),
                &["passport_token", "intent"],
            ),
            read_only: false,
            destructive: false,
            idempotent: false,
            permission: Permission::Proxy,
            handler: |app, p, args| {
                Box::pin(async move {
                    let token = str_arg(&args, "passport_token")?;
                    let cmd: SubmitIntent = parse_input(body(&args))?;
                    app.submit_intent(&p, Some(&token), cmd).await
                })
            },
        },
        ToolSpec {
            name: "stack_get_intent_approval",
            description: "Fetch an intent approval row by id. Returns terminal status (pending|approved|rejected|expired|consumed). Poll after stack_submit_intent. Unknown ids and other operators' rows are NOT_FOUND.",
            input_schema: object(
                json!({ "approval_id": { "type": "string", "description": "The approval (ia_…)." } }),
                &["approval_id"],
            ),
            read_only: true,
            destructive: false,
            idempotent: true,
            permission: Permission::PassportsRead,
            handler: |app, p, args| {
                Box::pin(async move {
                    let id = str_arg(&args, "approval_id")?;
                    app.get_intent_approval(&p, &id).await
                })
            },
        },
    ]
}
