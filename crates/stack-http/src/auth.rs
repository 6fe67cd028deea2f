//! Bearer authentication as a middleware: resolves the `Authorization`
//! header to a `Principal` and stores it in the request's extensions for the
//! handlers (REST) and tools (MCP) behind it.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use stack_app::App;
use stack_app::oauth::Audience;
use stack_core::{Error, Principal};

use crate::ApiError;

/// What the middleware needs.
#[derive(Clone)]
pub struct AuthLayerConfig {
    pub app: App,
    /// The `WWW-Authenticate` value sent with a 401 (e.g. with a
    /// `resource_metadata` parameter for MCP clients).
    pub www_authenticate: HeaderValue,
    /// The protected resource behind this layer: OAuth access tokens issued
    /// for another resource are refused (RFC 8707).
    pub audience: Audience,
}

/// Extracts the token from `Authorization: Bearer <token>` (scheme is case-insensitive).
pub fn bearer_token(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Rejects unauthenticated requests with 401 and the error envelope;
/// otherwise inserts the [`Principal`] and runs the rest of the stack.
pub async fn require_principal(
    State(cfg): State<AuthLayerConfig>,
    mut req: Request,
    next: Next,
) -> Response {
    let result = match bearer_token(&req) {
        None => Err(Error::unauthorized(
            "missing credentials: send Authorization: Bearer <API key>",
        )),
        Some(token) => cfg.app.authenticate_bearer_for(token, cfg.audience).await,
    };
    match result {
        Ok(principal) => {
            req.extensions_mut().insert::<Principal>(principal);
            next.run(req).await
        }
        Err(e) => {
            let mut res = ApiError(e).into_response();
            if res.status() == axum::http::StatusCode::UNAUTHORIZED {
                res.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, cfg.www_authenticate.clone());
            }
            res
        }
    }
}
