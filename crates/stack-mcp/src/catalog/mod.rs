//! The tool catalog, as data: one entry per tool, one module per domain.

mod agents;
mod audit;
mod intents;
mod passports;
mod pending;
mod scan;
mod services;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde_json::{Map, Value, json};
use stack_app::App;
use stack_core::{Permission, Principal, Result};

pub(crate) type Args = Map<String, Value>;
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
    /// What the caller must hold to see and call the tool.
    pub permission: Permission,
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

pub(crate) fn to_value<T: serde::Serialize>(v: T) -> Result<Value> {
    serde_json::to_value(v).map_err(|_| stack_core::Error::internal("result did not serialize"))
}

pub(crate) fn object(properties: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": properties, "required": required, "additionalProperties": true })
}

/// The tools of the domains that are built.
fn implemented() -> Vec<ToolSpec> {
    let mut tools = Vec::new();
    tools.extend(agents::tools());
    tools.extend(audit::tools());
    tools.extend(passports::tools());
    tools.extend(services::tools());
    tools.extend(services::proxy_tools());
    tools.extend(scan::tools());
    tools.extend(intents::tools());
    tools
}

/// Placeholders for the published names that no module serves yet.
fn placeholders(implemented: &[ToolSpec]) -> Vec<ToolSpec> {
    pending::tools()
        .into_iter()
        .filter(|p| !implemented.iter().any(|t| t.name == p.name))
        .collect()
}

/// Every tool this build serves: the implemented domains, then — for every
/// published name no module serves yet — its `NOT_IMPLEMENTED` placeholder.
pub fn catalog() -> Vec<ToolSpec> {
    let mut tools = implemented();
    let pending = placeholders(&tools);
    tools.extend(pending);
    tools
}

/// Names in [`catalog`] still served by a `NOT_IMPLEMENTED` placeholder.
pub fn pending_names() -> Vec<&'static str> {
    placeholders(&implemented())
        .iter()
        .map(|t| t.name)
        .collect()
}
