//! Service, grant and credential tools (issue 4).

use serde_json::{Value, json};
use stack_app::parse_input;
use stack_app::services::oauth::ConfigureOAuthApp;
use stack_app::services::{ConnectCustom, ConnectService, GrantAccess};
use stack_core::{Error, Permission};

use super::{Args, ToolSpec, object};

fn str_arg(args: &Args, name: &str) -> Option<String> {
    args.get(name).and_then(Value::as_str).map(str::to_owned)
}

pub(super) fn tools() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "stack_list_services",
            description: "List all available services that can be connected (the built-in catalog: Slack, GitHub, Notion, Stripe, Gmail, Drive, Linear, Jira, OpenAI, Anthropic, custom HTTP), with their hosts, scopes and named intents.",
            input_schema: object(json!({}), &[]),
            read_only: true,
            destructive: false,
            idempotent: true,
            permission: Permission::ServicesRead,
            handler: |app, p, _args| {
                Box::pin(async move { Ok(json!({ "services": app.list_services(&p)? })) })
            },
        },
        ToolSpec {
            name: "stack_list_credential_templates",
            description: "List available credential templates for manual service connections: the fields each service needs.",
            input_schema: object(json!({}), &[]),
            read_only: true,
            destructive: false,
            idempotent: true,
            permission: Permission::ServicesRead,
            handler: |app, p, _args| {
                Box::pin(async move { Ok(json!({ "templates": app.credential_templates(&p)? })) })
            },
        },
        ToolSpec {
            name: "stack_list_intents",
            description: "List available named intents (e.g. \"slack.post_to_channel\") that expand to parameter-level constraints in grants and passports, with their parameters.",
            input_schema: object(json!({}), &[]),
            read_only: true,
            destructive: false,
            idempotent: true,
            permission: Permission::ServicesRead,
            handler: |app, p, _args| {
                Box::pin(async move { Ok(json!({ "intents": app.list_named_intents(&p)? })) })
            },
        },
        ToolSpec {
            name: "stack_connect_service",
            description: "Connect an external service (Slack, GitHub, Notion, etc.) via OAuth. For a catalog service pass service_id (e.g. svc_slack) and scopes: without a token this answers {status: \"pending\", authorization_url} — open that URL, approve, and the provider's redirect to STACK's callback creates the connection (the service's OAuth app must be configured first, see stack_configure_oauth_app); with connection_id it re-authorizes that connection. Or pass an oauth_token (or credential fields) you already hold. For any other HTTP API pass service_id \"custom\" with base_url (the only origin the credential may be sent to), credential and optional auth {type: bearer|header|query|basic, name}. Secrets are sealed and never shown again.",
            input_schema: object(
                json!({
                    "service_id": { "type": "string" },
                    "connection_id": { "type": "string", "description": "Re-authorize this connection (scon_…) through the OAuth flow." },
                    "name": { "type": "string" },
                    "oauth_token": { "type": "string" },
                    "credential": { "type": ["string", "object"] },
                    "scopes": { "type": "array", "items": { "type": "string" } },
                    "base_url": { "type": "string" },
                    "auth": { "type": "object", "properties": { "type": { "type": "string", "enum": ["bearer", "header", "query", "basic"] }, "name": { "type": "string" } } },
                    "fields": { "type": "object", "additionalProperties": { "type": "string" } },
                    "verify_path": { "type": "string", "description": "Custom services: the path stack_verify_connection calls (default /)." }
                }),
                &["service_id"],
            ),
            read_only: false,
            destructive: false,
            idempotent: false,
            permission: Permission::ServicesConnect,
            handler: |app, p, args| {
                Box::pin(async move {
                    let service = str_arg(&args, "service_id").unwrap_or_default();
                    if service == "custom"
                        || service == "svc_custom"
                        || args.contains_key("base_url")
                    {
                        let mut args = args;
                        if !args.contains_key("name") {
                            args.insert("name".into(), Value::String("custom".into()));
                        }
                        let cmd: ConnectCustom = parse_input(Value::Object(args))?;
                        app.connect_custom(&p, cmd).await
                    } else {
                        let cmd: ConnectService = parse_input(Value::Object(args))?;
                        app.connect_service(&p, cmd).await
                    }
                })
            },
        },
        ToolSpec {
            name: "stack_verify_connection",
            description: "Verify a service connection is healthy by testing its credentials: one cheap authenticated call upstream (e.g. Slack auth.test, GitHub /user), an OAuth token refreshed first when needed. Returns {ok, status (upstream HTTP status), reason, connection_status, checked_at}; never the credential.",
            input_schema: object(
                json!({
                    "service_connection_id": { "type": "string", "description": "The connection (scon_…)." }
                }),
                &["service_connection_id"],
            ),
            read_only: false,
            destructive: false,
            idempotent: true,
            permission: Permission::ServicesWrite,
            handler: |app, p, args| {
                Box::pin(async move {
                    let id = str_arg(&args, "service_connection_id")
                        .or_else(|| str_arg(&args, "connection_id"))
                        .ok_or_else(|| {
                            Error::invalid_field(
                                "service_connection_id",
                                "service_connection_id is required",
                            )
                        })?;
                    app.verify_connection(&p, &id).await
                })
            },
        },
        ToolSpec {
            name: "stack_configure_oauth_app",
            description: "Store the operator's OAuth client (client_id, client_secret) for a catalog service so stack_connect_service can run the OAuth flow. The secret is sealed and never shown again. Register the answered redirect_uri with the provider. Optional authorize_url, token_url, revoke_url (RFC 7009, called on disconnect) and api_base_url override the catalog's endpoints (self-hosted providers).",
            input_schema: object(
                json!({
                    "service_id": { "type": "string", "description": "e.g. svc_github or github." },
                    "client_id": { "type": "string" },
                    "client_secret": { "type": "string" },
                    "authorize_url": { "type": "string" },
                    "token_url": { "type": "string" },
                    "revoke_url": { "type": "string" },
                    "api_base_url": { "type": "string" }
                }),
                &["service_id", "client_id"],
            ),
            read_only: false,
            destructive: false,
            idempotent: true,
            permission: Permission::ServicesWrite,
            handler: |app, p, args| {
                Box::pin(async move {
                    let cmd: ConfigureOAuthApp = parse_input(Value::Object(args))?;
                    app.configure_oauth_app(&p, cmd).await
                })
            },
        },
        ToolSpec {
            name: "stack_list_oauth_apps",
            description: "List the operator's configured OAuth apps per service (client ids, endpoints, redirect_uri; never the secrets).",
            input_schema: object(json!({}), &[]),
            read_only: true,
            destructive: false,
            idempotent: true,
            permission: Permission::ServicesRead,
            handler: |app, p, _args| {
                Box::pin(async move { Ok(json!({ "oauth_apps": app.list_oauth_apps(&p).await? })) })
            },
        },
        ToolSpec {
            name: "stack_delete_oauth_app",
            description: "Delete the operator's OAuth app of a service. Existing connections keep their tokens but cannot refresh them until an app is configured again.",
            input_schema: object(
                json!({ "service_id": { "type": "string" } }),
                &["service_id"],
            ),
            read_only: false,
            destructive: true,
            idempotent: true,
            permission: Permission::ServicesWrite,
            handler: |app, p, args| {
                Box::pin(async move {
                    let service = str_arg(&args, "service_id").ok_or_else(|| {
                        Error::invalid_field("service_id", "service_id is required")
                    })?;
                    app.delete_oauth_app(&p, &service).await
                })
            },
        },
        ToolSpec {
            name: "stack_grant_agent_access",
            description: "Grant an agent access to a connected service with specific scopes. Supports baseline constraints ({path, op, value}) and named intents for parameter-level ceilings; passports can only narrow them. response_scan (off, annotate, block) scans upstream responses for prompt injection.",
            input_schema: object(
                json!({
                    "agent_id": { "type": "string" },
                    "service_connection_id": { "type": "string" },
                    "scopes": { "type": "array", "items": { "type": "string" }, "minItems": 1 },
                    "constraints": { "type": "array", "maxItems": 32, "items": { "type": "object", "properties": { "path": { "type": "string" }, "op": { "type": "string", "enum": ["eq", "not_eq", "in", "not_in", "matches", "starts_with", "lte", "gte"] }, "value": {} }, "required": ["path", "op"] } },
                    "intents": { "type": "array", "items": { "type": "object", "properties": { "name": { "type": "string" }, "params": { "type": "object" } }, "required": ["name"] } },
                    "allow_data_from": { "type": "array", "items": { "type": "string" } },
                    "response_scan": { "type": "string", "enum": ["off", "annotate", "block"], "default": "off", "description": "Scan upstream responses for prompt injection: annotate adds the verdict, block withholds a critical answer." }
                }),
                &["agent_id", "service_connection_id", "scopes"],
            ),
            read_only: false,
            destructive: false,
            idempotent: false,
            permission: Permission::ServicesWrite,
            handler: |app, p, args| {
                Box::pin(async move {
                    let cmd: GrantAccess = parse_input(Value::Object(args))?;
                    app.grant_access(&p, cmd).await
                })
            },
        },
        ToolSpec {
            name: "stack_revoke_agent_access",
            description: "Revoke all service access for an agent: every grant and every active passport.",
            input_schema: object(json!({ "agent_id": { "type": "string" } }), &["agent_id"]),
            read_only: false,
            destructive: true,
            idempotent: true,
            permission: Permission::ServicesWrite,
            handler: |app, p, args| {
                Box::pin(async move {
                    let agent = str_arg(&args, "agent_id")
                        .ok_or_else(|| Error::invalid_field("agent_id", "agent_id is required"))?;
                    app.revoke_agent_access(&p, &agent).await
                })
            },
        },
        ToolSpec {
            name: "stack_get_agent_permissions",
            description: "Get all service permissions (live grants with scopes and constraints) granted to an agent.",
            input_schema: object(json!({ "agent_id": { "type": "string" } }), &["agent_id"]),
            read_only: true,
            destructive: false,
            idempotent: true,
            permission: Permission::AgentsRead,
            handler: |app, p, args| {
                Box::pin(async move {
                    let agent = str_arg(&args, "agent_id")
                        .ok_or_else(|| Error::invalid_field("agent_id", "agent_id is required"))?;
                    serde_json::to_value(app.agent_permissions(&p, &agent).await?)
                        .map_err(|_| Error::internal("result did not serialize"))
                })
            },
        },
        ToolSpec {
            name: "stack_get_credential",
            description: "Retrieve a decrypted credential for a connected service at runtime. Allowed for the operator or an admin member, or with a passport that holds the connection (not for proxy_only agents). Audited as credential.retrieve; prefer stack_proxy_request.",
            input_schema: object(
                json!({
                    "provider": { "type": "string", "description": "Service slug (e.g. slack) or connection name." },
                    "connection_id": { "type": "string" },
                    "passport_token": { "type": "string" }
                }),
                &[],
            ),
            read_only: true,
            destructive: false,
            idempotent: true,
            permission: Permission::CredentialsRead,
            handler: |app, p, args| {
                Box::pin(async move {
                    let who = match str_arg(&args, "passport_token") {
                        Some(t) => {
                            let pass = app.authenticate_bearer(&t).await?;
                            if pass.operator_id != p.operator_id {
                                return Err(Error::unauthorized(
                                    "passport_token is not a passport of this operator",
                                ));
                            }
                            pass
                        }
                        None => p,
                    };
                    match (str_arg(&args, "connection_id"), str_arg(&args, "provider")) {
                        (Some(c), _) => app.get_credential(&who, &c, true).await,
                        (None, Some(prov)) => app.get_credential(&who, &prov, false).await,
                        (None, None) => Err(Error::invalid_field(
                            "provider",
                            "provider or connection_id is required",
                        )),
                    }
                })
            },
        },
    ]
}

pub(super) fn proxy_tools() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "stack_proxy_request",
            description: "Proxy an outbound HTTP call through STACK: the passport is verified, the grant's scopes and constraints are checked, the stored credential is injected server-side (the agent never sees it), and the call is audited. Returns {status, headers, body}; upstream errors are data, STACK denials are tool errors (SCOPE_DENIED, CONSTRAINT_VIOLATION, PASSPORT_REVOKED, QUOTA_EXCEEDED).",
            input_schema: object(
                json!({
                    "passport_token": { "type": "string" },
                    "service": { "type": "string", "description": "Provider slug, e.g. slack, or custom." },
                    "method": { "type": "string", "default": "GET" },
                    "url": { "type": "string", "description": "Absolute URL on one of the connection's hosts." },
                    "headers": { "type": "object", "additionalProperties": { "type": "string" } },
                    "query": { "type": "object", "additionalProperties": { "type": "string" } },
                    "body": {},
                    "connection_id": { "type": "string" },
                    "authority_request_id": { "type": "string", "pattern": "^[A-Za-z0-9_-]{22,256}$" },
                    "approval_id": { "type": "string", "description": "An approved intent approval (ia_…) for exactly this call; required for enforced-mode passports (see stack_submit_intent). Used once." }
                }),
                &["service", "url"],
            ),
            read_only: false,
            destructive: false,
            idempotent: false,
            permission: Permission::Proxy,
            handler: |app, p, args| {
                Box::pin(async move {
                    let token = str_arg(&args, "passport_token");
                    let request_id = str_arg(&args, "authority_request_id");
                    let req: stack_app::proxy::ProxyRequest = parse_input(Value::Object(args))?;
                    app.proxy(&p, token.as_deref(), request_id.as_deref(), req)
                        .await
                })
            },
        },
        ToolSpec {
            name: "stack_proxy_usage",
            description: "Proxy usage this month: tier, limit, used, remaining, period.",
            input_schema: object(json!({}), &[]),
            read_only: true,
            destructive: false,
            idempotent: true,
            permission: Permission::Proxy,
            handler: |app, p, _args| Box::pin(async move { app.proxy_usage(&p).await }),
        },
    ]
}
