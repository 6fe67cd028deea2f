//! Test-only fixtures for the official MCP conformance suite
//! (`@modelcontextprotocol/conformance`, run by `tests/conformance/run.sh`).
//!
//! What it does: wraps [`StackMcp`] and adds, next to the real catalog, the
//! tools, resources, prompts and completions the suite's server scenarios
//! call by name (`test_simple_text`, `test://static-text`,
//! `test_simple_prompt`, …), answering exactly what the scenarios describe.
//! Everything else goes to the real handler unchanged, so the suite also
//! exercises STACK's own `initialize`, `tools/list`, transport and
//! DNS-rebinding protection.
//!
//! What it does not do: it is compiled only with the cargo feature
//! `conformance-fixtures` (never on by default). It offers nothing a
//! stateless server cannot honour: no sampling or elicitation tools (the
//! client's answer would arrive in a new POST that no session can route back)
//! and no resource subscriptions (no session to notify). docs/mcp.md lists
//! those scenarios as not applicable.
#![allow(deprecated)] // logging is deprecated by SEP-2577; the suite still tests it

use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CompleteRequestParams, CompleteResult,
    GetPromptRequestParams, GetPromptResponse, GetPromptResult, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, LoggingLevel,
    LoggingMessageNotificationParam, PaginatedRequestParams, ProgressNotificationParam,
    PromptsCapability, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
    ResourcesCapability, ServerConfig, SetLevelRequestParams, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::StackMcp;

/// A 1×1 PNG.
const PNG: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC";
/// A WAV of eight silent samples (8 kHz, mono, 8 bit).
const WAV: &str = "UklGRiwAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQgAAACAgICAgICAgA==";
/// The pause between the notifications of the logging and progress tools.
const STEP: Duration = Duration::from_millis(50);

/// [`StackMcp`] plus the conformance fixtures.
#[derive(Clone)]
pub struct WithFixtures(StackMcp);

impl From<StackMcp> for WithFixtures {
    fn from(inner: StackMcp) -> Self {
        Self(inner)
    }
}

/// Deserializes a literal result into its rmcp type.
fn typed<T: DeserializeOwned>(v: Value) -> Result<T, ErrorData> {
    serde_json::from_value(v)
        .map_err(|e| ErrorData::internal_error(format!("fixture did not deserialize: {e}"), None))
}

fn empty_object() -> Value {
    json!({ "type": "object", "properties": {} })
}

/// The fixture tools, as `tools/list` shows them.
fn tools() -> Vec<Value> {
    let plain = |name: &str, description: &str| json!({ "name": name, "description": description, "inputSchema": empty_object() });
    vec![
        plain("test_simple_text", "Returns simple text content"),
        plain("test_image_content", "Returns image content"),
        plain("test_audio_content", "Returns audio content"),
        plain("test_embedded_resource", "Returns an embedded resource"),
        plain(
            "test_multiple_content_types",
            "Returns text, image and resource content",
        ),
        plain("test_tool_with_logging", "Sends three log messages"),
        plain("test_tool_with_progress", "Reports progress 0, 50, 100"),
        plain("test_error_handling", "Always returns a tool error"),
        json!({
            "name": "json_schema_2020_12_tool",
            "description": "Tool with JSON Schema 2020-12 features",
            "inputSchema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "$defs": { "address": { "type": "object", "properties": {
                    "street": { "type": "string" }, "city": { "type": "string" } } } },
                "properties": {
                    "name": { "type": "string" },
                    "address": { "$ref": "#/$defs/address" }
                },
                "additionalProperties": false
            }
        }),
    ]
}

fn fixture_tool(name: &str) -> Option<Tool> {
    tools()
        .into_iter()
        .find(|t| t.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|t| serde_json::from_value(t).ok())
}

fn text(s: &str) -> Value {
    json!({ "type": "text", "text": s })
}

fn image() -> Value {
    json!({ "type": "image", "data": PNG, "mimeType": "image/png" })
}

fn embedded(uri: &str, mime: &str, text: &str) -> Value {
    json!({ "type": "resource", "resource": { "uri": uri, "mimeType": mime, "text": text } })
}

async fn log(ctx: &RequestContext<RoleServer>, message: &str) {
    // A client that went away only loses the notification.
    let _ = ctx
        .peer
        .notify_logging_message(LoggingMessageNotificationParam::new(
            LoggingLevel::Info,
            json!(message),
        ))
        .await;
}

async fn progress(ctx: &RequestContext<RoleServer>, done: f64) {
    if let Some(token) = ctx.meta.get_progress_token() {
        let _ = ctx
            .peer
            .notify_progress(ProgressNotificationParam::new(token, done).with_total(100.0))
            .await;
    }
}

/// Runs fixture tool `name`; `None` when it is not one.
async fn call(name: &str, ctx: &RequestContext<RoleServer>) -> Option<Value> {
    let content = match name {
        "test_simple_text" => vec![text("This is a simple text response for testing.")],
        "test_image_content" => vec![image()],
        "test_audio_content" => {
            vec![json!({ "type": "audio", "data": WAV, "mimeType": "audio/wav" })]
        }
        "test_embedded_resource" => vec![embedded(
            "test://embedded-resource",
            "text/plain",
            "This is an embedded resource content.",
        )],
        "test_multiple_content_types" => vec![
            text("Multiple content types test:"),
            image(),
            embedded(
                "test://mixed-content-resource",
                "application/json",
                r#"{"test":"data","value":123}"#,
            ),
        ],
        "test_tool_with_logging" => {
            log(ctx, "Tool execution started").await;
            tokio::time::sleep(STEP).await;
            log(ctx, "Tool processing data").await;
            tokio::time::sleep(STEP).await;
            log(ctx, "Tool execution completed").await;
            vec![text("Tool with logging executed successfully")]
        }
        "test_tool_with_progress" => {
            progress(ctx, 0.0).await;
            tokio::time::sleep(STEP).await;
            progress(ctx, 50.0).await;
            tokio::time::sleep(STEP).await;
            progress(ctx, 100.0).await;
            vec![text("Tool with progress executed successfully")]
        }
        "test_error_handling" => {
            return Some(json!({ "isError": true, "content": [
                text("This tool intentionally returns an error for testing")
            ]}));
        }
        "json_schema_2020_12_tool" => vec![text("JSON Schema 2020-12 tool called")],
        _ => return None,
    };
    Some(json!({ "content": content }))
}

fn read(uri: &str) -> Option<Value> {
    let contents = match uri {
        "test://static-text" => json!({ "uri": uri, "mimeType": "text/plain",
            "text": "This is the content of the static text resource." }),
        "test://static-binary" => json!({ "uri": uri, "mimeType": "image/png", "blob": PNG }),
        _ => {
            let id = uri
                .strip_prefix("test://template/")?
                .strip_suffix("/data")?;
            if id.is_empty() || id.contains('/') {
                return None;
            }
            let text =
                json!({ "id": id, "templateTest": true, "data": format!("Data for ID: {id}") });
            json!({ "uri": uri, "mimeType": "application/json", "text": text.to_string() })
        }
    };
    Some(json!({ "contents": [contents] }))
}

fn prompt(name: &str, args: &Map<String, Value>) -> Option<Value> {
    let arg = |k: &str| args.get(k).and_then(Value::as_str).unwrap_or_default();
    let user = |content: Value| json!({ "role": "user", "content": content });
    let messages = match name {
        "test_simple_prompt" => vec![user(text("This is a simple prompt for testing."))],
        "test_prompt_with_arguments" => vec![user(text(&format!(
            "Prompt with arguments: arg1='{}', arg2='{}'",
            arg("arg1"),
            arg("arg2")
        )))],
        "test_prompt_with_embedded_resource" => vec![
            user(embedded(
                arg("resourceUri"),
                "text/plain",
                "Embedded resource content for testing.",
            )),
            user(text("Please process the embedded resource above.")),
        ],
        "test_prompt_with_image" => {
            vec![user(image()), user(text("Please analyze the image above."))]
        }
        _ => return None,
    };
    Some(json!({ "messages": messages }))
}

impl ServerHandler for WithFixtures {
    fn get_info(&self) -> ServerConfig {
        let mut info = self.0.get_info();
        info.capabilities.resources = Some(ResourcesCapability::default());
        info.capabilities.prompts = Some(PromptsCapability::default());
        info.capabilities.completions = Some(Map::new());
        info
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.0.set_level(request, ctx).await
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let mut result = self.0.list_tools(request, ctx).await?;
        result.tools.extend(
            tools()
                .into_iter()
                .map(typed::<Tool>)
                .collect::<Result<Vec<_>, _>>()?,
        );
        Ok(result)
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        fixture_tool(name).or_else(|| self.0.get_tool(name))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        match call(request.name.as_ref(), &ctx).await {
            Some(result) => Ok(typed::<CallToolResult>(result)?.into()),
            None => self.0.call_tool(request, ctx).await,
        }
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        typed(json!({ "resources": [
            { "uri": "test://static-text", "name": "static-text", "mimeType": "text/plain",
              "description": "A static text resource" },
            { "uri": "test://static-binary", "name": "static-binary", "mimeType": "image/png",
              "description": "A static binary resource (a 1x1 PNG)" },
        ]}))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        typed(json!({ "resourceTemplates": [
            { "uriTemplate": "test://template/{id}/data", "name": "template",
              "mimeType": "application/json", "description": "Data for an id" },
        ]}))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        match read(&request.uri) {
            Some(v) => Ok(typed::<ReadResourceResult>(v)?.into()),
            None => Err(ErrorData::resource_not_found(
                format!("no resource {}", request.uri),
                None,
            )),
        }
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let arg = |name: &str, description: &str| json!({ "name": name, "description": description, "required": true });
        typed(json!({ "prompts": [
            { "name": "test_simple_prompt", "description": "A simple prompt without arguments" },
            { "name": "test_prompt_with_arguments", "description": "A prompt with required arguments",
              "arguments": [arg("arg1", "First test argument"), arg("arg2", "Second test argument")] },
            { "name": "test_prompt_with_embedded_resource",
              "description": "A prompt that includes an embedded resource",
              "arguments": [arg("resourceUri", "URI of the resource to embed")] },
            { "name": "test_prompt_with_image", "description": "A prompt that includes image content" },
        ]}))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        match prompt(&request.name, &args) {
            Some(v) => Ok(typed::<GetPromptResult>(v)?.into()),
            None => Err(ErrorData::invalid_params(
                format!("no prompt {}", request.name),
                None,
            )),
        }
    }

    async fn complete(
        &self,
        _request: CompleteRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        typed(json!({ "completion": { "values": [], "total": 0, "hasMore": false } }))
    }
}
