//! STACK's MCP adapter: the tool catalog served over Streamable HTTP.
//!
//! What it does: holds the catalog of tools (name, description, JSON schema,
//! annotations, handler) built once at start-up; answers `tools/list` from it
//! and dispatches `tools/call` to the same `stack-app` operations the REST API
//! uses. The authenticated [`Principal`] comes from the HTTP request (an auth
//! middleware in front of this service puts it there), so a tool sees exactly
//! what its caller may see. Application errors become MCP tool errors
//! (`isError: true`) carrying the same codes as REST, in one place
//! ([`tool_error`]).
//!
//! What it does not do: no authentication of its own, no business rules.
//! The service runs stateless (no MCP sessions), so any node can serve any
//! request.
#![forbid(unsafe_code)]

mod catalog;
#[cfg(feature = "conformance-fixtures")]
mod fixtures;

use std::collections::HashMap;
use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Map, Value, json};
use stack_app::App;
use stack_core::{Error, ErrorCode, Principal};

pub use catalog::{ToolSpec, catalog, pending_names};

/// Settings for the MCP endpoint.
#[derive(Debug, Clone)]
pub struct McpConfig {
    /// `Host` header values accepted (DNS-rebinding protection).
    pub allowed_hosts: Vec<String>,
    /// `Origin` values accepted when a browser sends one; others get 403.
    pub allowed_origins: Vec<String>,
    /// Cancelled at shutdown.
    pub cancel: tokio_util::sync::CancellationToken,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            allowed_origins: vec![
                "http://localhost:*".into(),
                "http://127.0.0.1:*".into(),
                "http://[::1]:*".into(),
            ],
            cancel: tokio_util::sync::CancellationToken::new(),
        }
    }
}

struct Inner {
    app: App,
    tools: Vec<Tool>,
    /// Position of each tool in `tools`, by name.
    positions: HashMap<&'static str, usize>,
    specs: HashMap<&'static str, ToolSpec>,
}

/// The MCP server handler. Cloning is cheap: the catalog is built once.
#[derive(Clone)]
pub struct StackMcp(Arc<Inner>);

impl StackMcp {
    pub fn new(app: App) -> Self {
        let specs = catalog();
        let tools = specs.iter().map(ToolSpec::to_tool).collect();
        let positions = specs.iter().enumerate().map(|(i, s)| (s.name, i)).collect();
        Self(Arc::new(Inner {
            app,
            tools,
            positions,
            specs: specs.into_iter().map(|s| (s.name, s)).collect(),
        }))
    }

    /// The tools as `tools/list` returns them.
    pub fn tools(&self) -> &[Tool] {
        &self.0.tools
    }

    /// The tools `principal` may see and call.
    pub fn tools_for(&self, principal: &Principal) -> Vec<Tool> {
        self.0
            .tools
            .iter()
            .filter(|t| {
                self.0
                    .specs
                    .get(t.name.as_ref())
                    .is_some_and(|s| principal.allows(s.permission))
            })
            .cloned()
            .collect()
    }

    /// Runs a tool for `principal` outside any transport (tests, embedding).
    /// A tool the principal may not use answers FORBIDDEN.
    pub async fn call(
        &self,
        principal: &Principal,
        name: &str,
        args: Map<String, Value>,
    ) -> Result<Value, Error> {
        self.call_as(principal.clone(), name, args).await
    }

    /// [`StackMcp::call`] with the principal handed over.
    async fn call_as(
        &self,
        principal: Principal,
        name: &str,
        args: Map<String, Value>,
    ) -> Result<Value, Error> {
        let spec = self
            .0
            .specs
            .get(name)
            .ok_or_else(|| Error::new(ErrorCode::NotFound, format!("unknown tool {name}")))?;
        if !principal.allows(spec.permission) {
            return Err(Error::forbidden(format!(
                "this credential may not use {name} (its scopes or role do not cover it)"
            )));
        }
        (spec.handler)(self.0.app.clone(), principal, args).await
    }
}

/// The principal the auth middleware put on the HTTP request.
fn principal_of(ctx: &RequestContext<RoleServer>) -> Option<Principal> {
    ctx.extensions
        .get::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Principal>())
        .cloned()
}

/// The error result for a failed tool call: the REST envelope as text and as
/// structured content, with `isError: true`.
pub fn tool_error(e: &Error) -> CallToolResult {
    let message = if e.code == ErrorCode::Internal {
        tracing::error!(message = %e.message, "internal error in a tool");
        "internal error; the server log has the details".to_owned()
    } else {
        e.message.clone()
    };
    let body = json!({ "error": {
        "code": e.code.as_str(),
        "message": message,
        "details": e.details.clone().unwrap_or_else(|| json!({})),
    }});
    let mut r = CallToolResult::error(vec![ContentBlock::text(format!(
        "{}: {message}\n{body}",
        e.code.as_str()
    ))]);
    r.structured_content = Some(body);
    r
}

fn tool_success(v: Value) -> CallToolResult {
    // Compact: the same JSON travels as structured content, and a model
    // reading the text pays for every byte of indentation.
    let text = serde_json::to_string(&v).unwrap_or_default();
    let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
    // structuredContent must be an object.
    r.structured_content = Some(if v.is_object() {
        v
    } else {
        json!({ "result": v })
    });
    r
}

impl ServerHandler for StackMcp {
    // `logging` is declared so that clients may send `logging/setLevel`
    // (2025-11-25); STACK sends no log notifications (the spec's MAY), so
    // the level is accepted and ignored. rmcp marks logging deprecated
    // (SEP-2577).
    #[allow(deprecated)]
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_logging()
            .enable_tools()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("stack", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "STACK: trust infrastructure for AI agents. Register agents, read and verify the tamper-evident audit chain. Every call is scoped to the operator of the bearer credential.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        // A caller sees only the tools its credential (and OAuth scopes) allow.
        let tools = match principal_of(&ctx) {
            Some(p) => self.tools_for(&p),
            None => Vec::new(),
        };
        Ok(ListToolsResult::with_all_items(tools))
    }

    /// rmcp asks for a tool's schema on every `tools/call` of protocol
    /// 2026-07-28 (to check the `Mcp-Name` header): a map lookup.
    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.0
            .positions
            .get(name)
            .and_then(|&i| self.0.tools.get(i))
            .cloned()
    }

    /// Accepted and ignored: STACK emits no log notifications.
    #[allow(deprecated)]
    async fn set_level(
        &self,
        _request: rmcp::model::SetLevelRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        Ok(())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.as_ref();
        if !self.0.specs.contains_key(name) {
            return Err(ErrorData::invalid_params(
                format!("unknown tool: {name}"),
                None,
            ));
        }
        let Some(principal) = principal_of(&ctx) else {
            return Ok(tool_error(&Error::unauthorized("missing credentials")).into());
        };
        let args = request.arguments.unwrap_or_default();
        let result = match self.call_as(principal, name, args).await {
            Ok(v) => tool_success(v),
            Err(e) => tool_error(&e),
        };
        Ok(result.into())
    }
}

/// The handler [`service`] serves: [`StackMcp`], plus the conformance suite's
/// fixtures in a test-only `conformance-fixtures` build.
#[cfg(not(feature = "conformance-fixtures"))]
pub type Served = StackMcp;
#[cfg(feature = "conformance-fixtures")]
pub type Served = fixtures::WithFixtures;

/// The `/mcp` endpoint as a tower service that is cheap to clone. axum
/// clones a nested service for every request, and rmcp's own
/// `Service::call` clones the whole [`StreamableHttpService`] (its
/// configuration, with the allowed host and origin lists) once more; this
/// clones one `Arc` and calls [`StreamableHttpService::handle`].
#[derive(Clone)]
pub struct McpService(Arc<StreamableHttpService<Served, NeverSessionManager>>);

type McpResponse =
    http::Response<http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>>;

impl tower::Service<axum::extract::Request> for McpService {
    type Response = McpResponse;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<McpResponse, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::extract::Request) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { Ok(service.handle(req).await) })
    }
}

/// The Streamable HTTP service to mount at `/mcp` (behind the auth
/// middleware). The handler and its tool catalog are built here, once; rmcp
/// runs each stateless request against a clone of it (an `Arc`).
pub fn service(app: App, config: &McpConfig) -> McpService {
    let handler = Served::from(StackMcp::new(app));
    let cfg = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_cancellation_token(config.cancel.child_token())
        .with_allowed_hosts(config.allowed_hosts.clone())
        .with_allowed_origins(config.allowed_origins.clone());
    McpService(Arc::new(StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(NeverSessionManager::default()),
        cfg,
    )))
}
