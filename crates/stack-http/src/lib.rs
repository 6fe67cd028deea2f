//! STACK's REST adapter: the `/v1` routes on axum, bearer authentication, and
//! the one place where an application error becomes an HTTP response.
//!
//! What it does: parses requests leniently where the SDK needs it (an empty
//! body is `{}`, query numbers arrive as strings, unknown fields are
//! ignored), calls one `stack-app` operation per route, and renders the result
//! or the error envelope `{"error":{"code","message","details"}}`.
//!
//! It also serves the OAuth 2.1 authorization server's endpoints
//! ([`oauth`]), which speak OAuth's own error format and, for the browser
//! steps, HTML and redirects.
//!
//! What it does not do: no business rules and no SQL. Routes that belong to
//! capabilities not built yet answer `501 NOT_IMPLEMENTED` with the envelope,
//! never a bare 404.
#![forbid(unsafe_code)]

pub mod auth;
mod error;
mod extract;
mod intents;
pub mod oauth;
mod passports;
mod routes;
mod scan;
mod services;

use axum::Router;
use stack_app::App;

pub use auth::{AuthLayerConfig, require_principal};
pub use error::{ApiError, panic_response};
pub use oauth::mcp_www_authenticate;

/// HTTP-level settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Largest accepted `POST /v1/proxy` request, in bytes (it carries the
    /// upstream body, JSON-escaped).
    pub proxy_max_body_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            proxy_max_body_bytes: 2 * 10 * 1024 * 1024,
        }
    }
}

/// Shared state of the REST routes.
#[derive(Clone)]
pub struct HttpState {
    pub app: App,
    pub config: HttpConfig,
}

/// The REST API: `/v1/...`, `/healthz`, `/readyz`, the public OAuth
/// endpoints (`/.well-known/…`, `/oauth/…`), and the JSON fallbacks.
pub fn router(app: App, config: HttpConfig) -> Router {
    routes::router(HttpState { app, config })
}
