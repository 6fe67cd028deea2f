//! Tools of the published catalog whose domains are not built yet.
//!
//! Each is listed with its documented description, an input schema and
//! annotations, so clients discover the whole surface; calling one answers
//! the tool error `NOT_IMPLEMENTED`. A name that another catalog module
//! already serves is skipped (see [`super::catalog`]), so a domain moves out
//! of here simply by landing its module.

use serde_json::{Value, json};
use stack_core::{Error, Permission};

use super::{ToolSpec, object};

/// Annotation presets: (read_only, destructive, idempotent).
const READ: (bool, bool, bool) = (true, false, true);
const WRITE: (bool, bool, bool) = (false, false, false);
const SET: (bool, bool, bool) = (false, false, true);
const DESTROY: (bool, bool, bool) = (false, true, true);

macro_rules! pending {
    ($name:literal, $perm:expr, $kind:expr, $desc:literal, $props:expr, [$($req:literal),*]) => {{
        let (read_only, destructive, idempotent) = $kind;
        ToolSpec {
            name: $name,
            description: $desc,
            input_schema: object($props, &[$($req),*]),
            read_only,
            destructive,
            idempotent,
            permission: $perm,
            handler: |_, _, _| Box::pin(async { Err(Error::not_implemented(concat!("the tool ", $name))) }),
        }
    }};
}

fn s(description: &str) -> Value {
    json!({ "type": "string", "description": description })
}

fn id(description: &str) -> Value {
    s(description)
}

fn int(description: &str) -> Value {
    json!({ "type": "integer", "description": description })
}

fn obj(description: &str) -> Value {
    json!({ "type": "object", "description": description })
}

fn strings(description: &str) -> Value {
    json!({ "type": "array", "items": { "type": "string" }, "description": description })
}

fn boolean(description: &str) -> Value {
    json!({ "type": "boolean", "description": description })
}

fn none() -> Value {
    json!({})
}

fn report() -> Value {
    json!({
        "jti": id("The passport (pp_…)."),
        "services_used": strings("Services used so far."),
        "actions_count": int("Number of actions taken."),
        "summary": s("What was done.")
    })
}

fn delivery_id() -> Value {
    json!({ "delivery_method_id": id("The delivery method.") })
}

fn rule_props() -> Value {
    json!({
        "name": s("A name for the rule."),
        "delivery_method_ids": strings("Delivery methods to notify."),
        "event_types": strings("Event types that trigger the rule."),
        "min_severity": { "type": "string", "enum": ["info", "warning", "critical"] }
    })
}

/// Every tool of the published catalog that has no implementation module.
#[allow(clippy::too_many_lines)]
pub(super) fn tools() -> Vec<ToolSpec> {
    use Permission as P;
    vec![
        // ---- services and credentials
        pending!(
            "stack_connect_service",
            P::ServicesConnect,
            WRITE,
            "Connect an external service (Slack, GitHub, Notion, etc.) via OAuth.",
            json!({ "service": s("Provider slug, e.g. slack or github."), "scopes": strings("Provider scopes to request."), "credential_template": s("For manual connections: a credential template id.") }),
            ["service"]
        ),
        pending!(
            "stack_list_services",
            P::ServicesRead,
            READ,
            "List all available services that can be connected.",
            none(),
            []
        ),
        pending!(
            "stack_grant_agent_access",
            P::ServicesWrite,
            SET,
            "Grant an agent access to a connected service with specific scopes. Supports baseline constraints and named intents for parameter-level ceilings.",
            json!({ "agent_id": id("The agent (agt_…)."), "service_connection_id": id("The connection (scon_…)."), "scopes": strings("Scopes granted."), "constraints": { "type": "array", "items": { "type": "object" }, "description": "Parameter-level constraints." }, "intents": { "type": "array", "items": { "type": "object" }, "description": "Named intents with their params." } }),
            ["agent_id", "service_connection_id", "scopes"]
        ),
        pending!(
            "stack_list_intents",
            P::ServicesRead,
            READ,
            "List available named intents (e.g. \"slack.post_to_channel\") that expand to parameter-level constraints in grants and passports.",
            json!({ "service": s("Only intents of this service.") }),
            []
        ),
        pending!(
            "stack_revoke_agent_access",
            P::ServicesWrite,
            DESTROY,
            "Revoke all service access for an agent.",
            json!({ "agent_id": id("The agent (agt_…)."), "service_connection_id": id("Only this connection.") }),
            ["agent_id"]
        ),
        pending!(
            "stack_get_agent_permissions",
            P::AgentsRead,
            READ,
            "Get all service permissions granted to an agent.",
            json!({ "agent_id": id("The agent (agt_…).") }),
            ["agent_id"]
        ),
        pending!(
            "stack_get_credential",
            P::CredentialsRead,
            READ,
            "Retrieve a decrypted credential for a connected service at runtime.",
            json!({ "service": s("Provider slug or connection id."), "passport_token": s("The passport authorizing the retrieval.") }),
            ["service"]
        ),
        pending!(
            "stack_list_credential_templates",
            P::ServicesRead,
            READ,
            "List available credential templates for manual service connections.",
            none(),
            []
        ),
        pending!(
            "stack_verify_connection",
            P::ServicesWrite,
            SET,
            "Verify a service connection is healthy by testing its credentials.",
            json!({ "service_connection_id": id("The connection (scon_…).") }),
            ["service_connection_id"]
        ),
        // ---- passports
        pending!(
            "stack_issue_passport",
            P::PassportsWrite,
            WRITE,
            "Issue a signed JWT passport for an agent session. Default 15 min TTL, max 1 hour.",
            json!({ "agent_id": id("The agent (agt_…)."), "intent": obj("Declared intent: summary, services, estimated_duration_seconds, will_delegate. Required for enforced and logged agents."), "scopes": strings("Requested scopes (narrowed to the agent's grants)."), "ttl_seconds": { "type": "number", "minimum": 1, "maximum": 3600, "default": 900 }, "mission_id": id("Bind the passport to a mission (ms_…)."), "parent_passport_id": id("Delegate from this passport.") }),
            ["agent_id"]
        ),
        pending!(
            "stack_verify_passport",
            P::PassportsRead,
            READ,
            "Verify a passport token is valid, not expired, and not revoked.",
            json!({ "token": s("The passport JWT.") }),
            ["token"]
        ),
        pending!(
            "stack_refresh_passport",
            P::PassportsWrite,
            WRITE,
            "Refresh a passport before or after expiry (within 24h). Preserves session and delegation chain.",
            json!({ "jti": id("The passport to refresh (pp_…)."), "ttl_seconds": { "type": "number", "minimum": 1, "maximum": 3600 } }),
            ["jti"]
        ),
        pending!(
            "stack_list_active_passports",
            P::PassportsRead,
            READ,
            "List all active (non-expired, non-revoked) passports. Filter by agent or session.",
            json!({ "agent_id": id("Only this agent."), "session_id": id("Only this session (ses_…).") }),
            []
        ),
        pending!(
            "stack_revoke_passport",
            P::PassportsWrite,
            DESTROY,
            "Revoke a specific passport by JTI. Takes effect within 60 seconds.",
            json!({ "jti": id("The passport (pp_…)."), "reason": s("Why.") }),
            ["jti"]
        ),
        pending!(
            "stack_revoke_agent_passports",
            P::PassportsWrite,
            DESTROY,
            "Revoke ALL active passports for a specific agent.",
            json!({ "agent_id": id("The agent (agt_…)."), "reason": s("Why.") }),
            ["agent_id"]
        ),
        pending!(
            "stack_revoke_session",
            P::PassportsWrite,
            DESTROY,
            "Revoke an entire session chain -- root passport and all delegated passports.",
            json!({ "session_id": id("The session (ses_…)."), "reason": s("Why.") }),
            ["session_id"]
        ),
        pending!(
            "stack_revoke_all_passports",
            P::PassportsWrite,
            DESTROY,
            "EMERGENCY: Revoke ALL active passports across all agents. Requires confirm: true.",
            json!({ "confirm": { "type": "boolean", "const": true, "description": "Must be true." }, "reason": s("Why.") }),
            ["confirm"]
        ),
        // ---- accountability
        pending!(
            "stack_checkpoint",
            P::PassportsWrite,
            WRITE,
            "Submit a progress checkpoint during an active mission. Reports services used and actions taken.",
            report(),
            ["jti"]
        ),
        pending!(
            "stack_checkout",
            P::PassportsWrite,
            WRITE,
            "Submit final report and check out from a mission. Triggers the review engine.",
            report(),
            ["jti"]
        ),
        pending!(
            "stack_get_passport_report",
            P::PassportsRead,
            READ,
            "Get full accountability report: intent, checkpoints, checkout, and review decision.",
            json!({ "jti": id("The passport (pp_…).") }),
            ["jti"]
        ),
        pending!(
            "stack_list_pending_reviews",
            P::PassportsRead,
            READ,
            "List flagged or blocked passport checkouts pending operator review.",
            none(),
            []
        ),
        pending!(
            "stack_decide_review",
            P::PassportsWrite,
            WRITE,
            "Approve or block a flagged passport checkout. Can block agent from future passports.",
            json!({ "review_id": id("The review."), "decision": { "type": "string", "enum": ["approved", "blocked"] }, "block_agent": boolean("Also block the agent from future passports."), "note": s("A note for the audit log.") }),
            ["review_id", "decision"]
        ),
        // ---- drop-offs
        pending!(
            "stack_create_dropoff",
            P::AgentsWrite,
            WRITE,
            "Create a point-to-point drop-off between two agents with schema validation and TTL.",
            json!({ "from_agent_id": id("The producer (agt_…)."), "to_agent_id": id("The consumer (agt_…)."), "schema": obj("JSON Schema the package must satisfy."), "ttl_seconds": int("Lifetime of the drop-off.") }),
            ["from_agent_id", "to_agent_id"]
        ),
        pending!(
            "stack_deposit",
            P::Proxy,
            WRITE,
            "Deposit a package into a drop-off. Validates against declared schema, encrypts at rest.",
            json!({ "dropoff_id": id("The drop-off (dof_…)."), "payload": obj("The package.") }),
            ["dropoff_id", "payload"]
        ),
        pending!(
            "stack_collect",
            P::Proxy,
            WRITE,
            "Collect a package from a drop-off. Decrypts and returns data, then deletes from storage.",
            json!({ "dropoff_id": id("The drop-off (dof_…).") }),
            ["dropoff_id"]
        ),
        pending!(
            "stack_get_dropoff_status",
            P::AgentsRead,
            READ,
            "Get current status of a drop-off (created, deposited, collected, expired, failed).",
            json!({ "dropoff_id": id("The drop-off (dof_…).") }),
            ["dropoff_id"]
        ),
        pending!(
            "stack_list_dropoffs",
            P::AgentsRead,
            READ,
            "List all drop-offs for your account, ordered by creation date.",
            json!({ "status": s("Only drop-offs in this status.") }),
            []
        ),
        pending!(
            "stack_expire_dropoff",
            P::AgentsWrite,
            DESTROY,
            "Manually expire a drop-off and permanently delete its package.",
            json!({ "dropoff_id": id("The drop-off (dof_…).") }),
            ["dropoff_id"]
        ),
        // ---- skills
        pending!(
            "stack_publish_skill",
            P::AgentsWrite,
            WRITE,
            "Publish a skill to the marketplace. Supports open, sealed, and source execution modes.",
            json!({ "name": s("Skill name."), "description": s("What it does."), "execution_mode": { "type": "string", "enum": ["open", "sealed", "source"] }, "input_schema": obj("JSON Schema of the input."), "output_schema": obj("JSON Schema of the output."), "price": { "type": "number", "description": "Price per invocation." }, "tags": strings("Tags.") }),
            ["name", "execution_mode"]
        ),
        pending!(
            "stack_browse_skills",
            P::AgentsRead,
            READ,
            "Browse the skills marketplace with filters for trust level, tags, and search.",
            json!({ "search": s("Full-text search."), "tags": strings("Tags."), "min_trust_level": int("Minimum trust level.") }),
            []
        ),
        pending!(
            "stack_get_skill",
            P::AgentsRead,
            READ,
            "Get details of a specific skill including input/output schemas.",
            json!({ "skill_id": id("The skill (skl_…).") }),
            ["skill_id"]
        ),
        pending!(
            "stack_invoke_skill",
            P::Proxy,
            WRITE,
            "Invoke a skill with input data. Paid skills debit the caller's STACK wallet. Poll stack_check_invocation for result.",
            json!({ "skill_id": id("The skill (skl_…)."), "passport_id": id("The passport binding the calling agent."), "input": obj("Input matching the skill's input schema.") }),
            ["skill_id", "input"]
        ),
        pending!(
            "stack_check_invocation",
            P::Proxy,
            READ,
            "Check invocation status. Returns decrypted output when completed.",
            json!({ "invocation_id": id("The invocation.") }),
            ["invocation_id"]
        ),
        pending!(
            "stack_list_pending_invocations",
            P::AgentsRead,
            READ,
            "List pending invocations for skills you provide. Poll this for work.",
            json!({ "skill_id": id("Only this skill.") }),
            []
        ),
        pending!(
            "stack_complete_invocation",
            P::AgentsWrite,
            WRITE,
            "Complete a skill invocation by submitting schema-validated, encrypted output.",
            json!({ "invocation_id": id("The invocation."), "output": obj("Output matching the skill's output schema.") }),
            ["invocation_id", "output"]
        ),
        pending!(
            "stack_check_trust_level",
            P::AgentsRead,
            READ,
            "Check if your trust level meets a skill's requirements. Returns upgrade guidance.",
            json!({ "skill_id": id("The skill (skl_…).") }),
            ["skill_id"]
        ),
        pending!(
            "stack_list_favorite_skills",
            P::AgentsRead,
            READ,
            "List your saved/favorite skills for quick access.",
            none(),
            []
        ),
        pending!(
            "stack_post_skill_request",
            P::AgentsWrite,
            WRITE,
            "Post a request for a skill capability you need. Other operators can discover it and build matching skills.",
            json!({ "title": s("What you need."), "description": s("Details."), "tags": strings("Tags."), "budget": { "type": "number", "description": "What you would pay per invocation." } }),
            ["title"]
        ),
        pending!(
            "stack_list_skill_requests",
            P::AgentsRead,
            READ,
            "Browse open skill requests from other operators.",
            json!({ "search": s("Full-text search."), "tags": strings("Tags.") }),
            []
        ),
        pending!(
            "stack_find_matching_skills",
            P::AgentsRead,
            READ,
            "Find skills that match a specific skill request.",
            json!({ "request_id": id("The skill request.") }),
            ["request_id"]
        ),
        pending!(
            "stack_suggest_skill_composition",
            P::AgentsRead,
            READ,
            "Get suggestions for combining multiple skills to fulfill a complex request. Returns chain suggestions.",
            json!({ "request_id": id("The skill request."), "description": s("Or: a free-text description of the need.") }),
            []
        ),
        // ---- team
        pending!(
            "stack_invite_member",
            P::TeamAdmin,
            WRITE,
            "Invite a team member by email with a role and optional connection restrictions.",
            json!({ "email": s("The member's email."), "role": { "type": "string", "enum": ["readonly", "standard", "admin"], "default": "standard" }, "allowed_connections": strings("Connection ids the member may use (null: all).") }),
            ["email"]
        ),
        pending!(
            "stack_list_members",
            P::IdentityRead,
            READ,
            "List all team members and their statuses.",
            none(),
            []
        ),
        pending!(
            "stack_revoke_member",
            P::TeamAdmin,
            DESTROY,
            "Revoke a team member, disabling their API key.",
            json!({ "member_id": id("The member (mem_…).") }),
            ["member_id"]
        ),
        pending!(
            "stack_update_member",
            P::TeamAdmin,
            SET,
            "Update a member's role or allowed connections.",
            json!({ "member_id": id("The member (mem_…)."), "role": { "type": "string", "enum": ["readonly", "standard", "admin"] }, "allowed_connections": strings("Connection ids the member may use.") }),
            ["member_id"]
        ),
        // ---- identity
        pending!(
            "stack_get_identity_settings",
            P::IdentityRead,
            READ,
            "Get identity security settings: claim TTL, inheritance mode, auto-revoke.",
            none(),
            []
        ),
        pending!(
            "stack_update_identity_settings",
            P::IdentityWrite,
            SET,
            "Update identity settings -- claim TTL capping, inheritance mode, auto-revoke on expiry.",
            json!({ "claim_ttl_seconds": int("Cap on claim lifetime."), "inheritance_mode": s("How delegated passports inherit claims."), "auto_revoke_on_expiry": boolean("Revoke claims when they expire.") }),
            []
        ),
        // ---- proxy and intents
        pending!(
            "stack_proxy_request",
            P::Proxy,
            WRITE,
            "Send a request through STACK's credential proxy. Agent never sees the secret. Studio/Enterprise only. Threads approval_id when the passport is enforced.",
            json!({ "passport_token": s("The passport (X-Passport-Token)."), "service": s("Provider slug."), "method": { "type": "string", "enum": ["GET", "POST", "PUT", "PATCH", "DELETE"] }, "url": s("The upstream URL."), "headers": obj("Extra headers."), "body": { "description": "The request body." }, "approval_id": id("Intent approval for enforced passports."), "operation_id": id("Idempotency key.") }),
            ["passport_token", "service", "method", "url"]
        ),
        pending!(
            "stack_proxy_usage",
            P::ProxyRead,
            READ,
            "Check monthly proxy usage and remaining quota.",
            none(),
            []
        ),
        pending!(
            "stack_simulate_intent",
            P::PassportsRead,
            READ,
            "Dry-run an Intent against a passport. Returns allowed + denial_reasons + diagnostics. Emits a signed intent_simulation claim.",
            json!({ "passport_token": s("The passport."), "intent": obj("The intent to simulate.") }),
            ["passport_token", "intent"]
        ),
        pending!(
            "stack_submit_intent",
            P::PassportsWrite,
            WRITE,
            "Submit an Intent for operator approval. Required before enforced-mode producer calls. Returns approval_id; pair with stack_get_intent_approval to poll.",
            json!({ "passport_token": s("The passport."), "intent": obj("The intent to approve.") }),
            ["passport_token", "intent"]
        ),
        pending!(
            "stack_get_intent_approval",
            P::PassportsRead,
            READ,
            "Fetch an intent approval row by id. Returns terminal status (pending|approved|rejected|expired|consumed). Poll after stack_submit_intent.",
            json!({ "approval_id": id("The approval.") }),
            ["approval_id"]
        ),
        // ---- content scan
        pending!(
            "stack_scan",
            P::ScanUse,
            READ,
            "Scan retrieved content (email/document/webpage/API response) for prompt-injection markers BEFORE feeding to the LLM. Two-layer detector: L1 regex catalog + L2 encoding-aware normalization (base64/URL/hex/leetspeak/homoglyphs/zero-width/ROT13/reverse). Returns verdict + match details.",
            json!({ "content": s("The text to scan."), "source": { "type": "string", "enum": ["email", "document", "webpage", "api_response", "other"] }, "agent_id": id("The agent that retrieved it.") }),
            ["content"]
        ),
        pending!(
            "stack_scan_usage",
            P::ProxyRead,
            READ,
            "Check monthly /v1/scan usage and remaining quota.",
            none(),
            []
        ),
        // ---- security events and detectors
        pending!(
            "stack_list_security_events",
            P::SecurityEvents,
            READ,
            "List unresolved security events (credential misuse, delegation violations, etc.).",
            json!({ "agent_id": id("Only this agent."), "include_resolved": boolean("Also resolved events.") }),
            []
        ),
        pending!(
            "stack_resolve_security_event",
            P::SecurityEvents,
            SET,
            "Mark a security event as reviewed and resolved.",
            json!({ "event_id": id("The security event."), "note": s("Resolution note.") }),
            ["event_id"]
        ),
        pending!(
            "stack_list_detector_configs",
            P::AuditRead,
            READ,
            "List every per-detector customization this operator has set. Empty list means defaults.",
            none(),
            []
        ),
        pending!(
            "stack_get_detector_config",
            P::AuditRead,
            READ,
            "Get a single detector's config. 404 means defaults.",
            json!({ "detector": s("The detector name.") }),
            ["detector"]
        ),
        pending!(
            "stack_upsert_detector_config",
            P::SecurityEvents,
            SET,
            "Customize a detector for your traffic — custom regex, whitelist suppression, severity overrides, master switch. Studio+.",
            json!({ "detector": s("The detector name."), "enabled": boolean("Master switch."), "custom_patterns": strings("Extra regular expressions."), "whitelist": strings("Suppressed matches."), "severity": { "type": "string", "enum": ["info", "warning", "critical"] } }),
            ["detector"]
        ),
        pending!(
            "stack_reset_detector_config",
            P::SecurityEvents,
            DESTROY,
            "Reset a detector to built-in defaults — deletes the customization row. Studio+.",
            json!({ "detector": s("The detector name.") }),
            ["detector"]
        ),
        // ---- notifications
        pending!(
            "stack_add_delivery_method",
            P::IdentityWrite,
            WRITE,
            "Add a notification delivery method (email, SMS, or webhook).",
            json!({ "type": { "type": "string", "enum": ["email", "sms", "webhook"] }, "target": s("Address, phone number or URL."), "label": s("A label.") }),
            ["type", "target"]
        ),
        pending!(
            "stack_list_delivery_methods",
            P::IdentityRead,
            READ,
            "List all configured notification delivery methods.",
            none(),
            []
        ),
        pending!(
            "stack_delete_delivery_method",
            P::IdentityWrite,
            DESTROY,
            "Delete a delivery method. Cascades to associated rules.",
            delivery_id(),
            ["delivery_method_id"]
        ),
        pending!(
            "stack_send_verification_code",
            P::IdentityWrite,
            WRITE,
            "Send a verification code to a pending delivery method.",
            delivery_id(),
            ["delivery_method_id"]
        ),
        pending!(
            "stack_verify_delivery_method",
            P::IdentityWrite,
            SET,
            "Verify a delivery method with a 6-digit code.",
            json!({ "delivery_method_id": id("The delivery method."), "code": { "type": "string", "pattern": "^[0-9]{6}$" } }),
            ["delivery_method_id", "code"]
        ),
        pending!(
            "stack_test_delivery_method",
            P::IdentityWrite,
            WRITE,
            "Send a test notification to a verified delivery method.",
            delivery_id(),
            ["delivery_method_id"]
        ),
        pending!(
            "stack_create_notification_rule",
            P::IdentityWrite,
            WRITE,
            "Create a rule targeting delivery methods for specific event types and severities.",
            rule_props(),
            ["delivery_method_ids", "event_types"]
        ),
        pending!(
            "stack_list_notification_rules",
            P::IdentityRead,
            READ,
            "List all notification rules with their associated delivery methods.",
            none(),
            []
        ),
        pending!(
            "stack_update_notification_rule",
            P::IdentityWrite,
            SET,
            "Update a notification rule -- change delivery methods, events, or severity.",
            {
                let mut p = rule_props();
                if let Some(m) = p.as_object_mut() {
                    m.insert("rule_id".into(), id("The rule."));
                }
                p
            },
            ["rule_id"]
        ),
        pending!(
            "stack_delete_notification_rule",
            P::IdentityWrite,
            DESTROY,
            "Delete a notification rule.",
            json!({ "rule_id": id("The rule.") }),
            ["rule_id"]
        ),
    ]
}
