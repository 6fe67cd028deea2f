//! REST routes for services, connections, grants and credentials (issue 4).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use stack_app::parse_input;
use stack_app::services::oauth::{ConfigureOAuthApp, OAuthCallback};
use stack_app::services::{ConnectCustom, ConnectService, GrantAccess};
use stack_core::{Error, Principal};

use crate::extract::{JsonBody, P, ProxyJsonBody};
use crate::routes::Caller;
use crate::{ApiError, HttpState};

type ApiResult = Result<Response, ApiError>;

fn ok(v: impl serde::Serialize) -> ApiResult {
    Ok(Json(v).into_response())
}

fn created(v: impl serde::Serialize) -> ApiResult {
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

pub(crate) fn protected() -> Router<HttpState> {
    Router::new()
        .route("/services", get(catalog))
        .route("/services/connected", get(connected))
        .route("/services/templates", get(templates))
        .route("/services/intents", get(intents))
        .route("/services/connect", post(connect))
        .route(
            "/services/oauth-apps",
            get(oauth_apps).post(configure_oauth_app),
        )
        .route(
            "/services/oauth-apps/{service_id}",
            delete(delete_oauth_app),
        )
        .route("/services/custom", post(custom))
        .route("/services/grant", post(grant))
        .route("/services/agents/{agent_id}/revoke", delete(revoke_agent))
        .route("/services/{connection_id}/disconnect", delete(disconnect))
        .route("/services/{connection_id}/verify", post(verify))
        .route(
            "/credentials/by-connection/{connection_id}",
            get(credential_by_connection),
        )
        .route("/credentials/{provider}", get(credential))
}

async fn catalog(State(s): State<HttpState>, Caller(p): Caller) -> ApiResult {
    ok(s.app.list_services(&p)?)
}

async fn connected(State(s): State<HttpState>, Caller(p): Caller) -> ApiResult {
    ok(s.app.list_connections(&p).await?)
}

async fn templates(State(s): State<HttpState>, Caller(p): Caller) -> ApiResult {
    ok(s.app.credential_templates(&p)?)
}

async fn intents(State(s): State<HttpState>, Caller(p): Caller) -> ApiResult {
    ok(s.app.list_named_intents(&p)?)
}

/// 201 with the connection, or 200 with `{status: "pending",
/// authorization_url}` when the OAuth flow starts.
async fn connect(
    State(s): State<HttpState>,
    Caller(p): Caller,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let cmd: ConnectService = parse_input(body)?;
    let v = s.app.connect_service(&p, cmd).await?;
    if v.get("status").and_then(serde_json::Value::as_str) == Some("pending") {
        ok(v)
    } else {
        created(v)
    }
}

async fn oauth_apps(State(s): State<HttpState>, Caller(p): Caller) -> ApiResult {
    ok(s.app.list_oauth_apps(&p).await?)
}

async fn configure_oauth_app(
    State(s): State<HttpState>,
    Caller(p): Caller,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let cmd: ConfigureOAuthApp = parse_input(body)?;
    created(s.app.configure_oauth_app(&p, cmd).await?)
}

async fn delete_oauth_app(
    State(s): State<HttpState>,
    Caller(p): Caller,
    P(service_id): P<String>,
) -> ApiResult {
    ok(s.app.delete_oauth_app(&p, &service_id).await?)
}

/// Routes without a bearer: the provider redirects the browser here.
pub(crate) fn public_v1() -> Router<HttpState> {
    Router::new().route("/services/oauth/callback", get(oauth_callback))
}

/// `GET /v1/services/oauth/callback?code&state` (or `?error&state`): the
/// single-use state is the capability. Answers JSON, or a small HTML page
/// when the client (the operator's browser, sent here by the provider)
/// prefers `text/html`; the query (code, state) is never echoed or logged.
async fn oauth_callback(
    State(s): State<HttpState>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<OAuthCallback>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let outcome = match query {
        Ok(axum::extract::Query(cb)) => s.app.complete_oauth_connect(cb).await,
        Err(_) => Err(Error::validation(
            "the callback's query string does not parse",
        )),
    };
    if !prefers_html(&headers) {
        return ok(outcome?);
    }
    Ok(match outcome {
        Ok(v) => {
            let service = v
                .get("service")
                .and_then(|x| x.as_str())
                .unwrap_or("the service");
            let id = v
                .get("connection_id")
                .and_then(|x| x.as_str())
                .unwrap_or("");
            crate::oauth::page(
                StatusCode::OK,
                "Service connected",
                &format!(
                    "<h1>Connected</h1><div class=\"box\"><p><strong>{}</strong> is connected to STACK \
                     (connection <code>{}</code>). Its tokens are sealed on the server; agents use them \
                     only through the proxy, within what you grant.</p></div>\
                     <p class=\"muted\">You can close this window.</p>",
                    crate::oauth::esc(service),
                    crate::oauth::esc(id)
                ),
            )
        }
        Err(e) => {
            let status = StatusCode::from_u16(e.code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            // Internal errors keep their detail in the log, as in JSON.
            let message = if e.code == stack_core::ErrorCode::Internal {
                "internal error; the server log has the details".to_owned()
            } else {
                e.message.clone()
            };
            crate::oauth::page(
                status,
                "Connection failed",
                &format!(
                    "<h1>Connection failed</h1><div class=\"box err\"><p><code>{}</code>: {}</p></div>\
                     <p class=\"muted\">Start again from STACK (<code>POST /v1/services/connect</code>).</p>",
                    crate::oauth::esc(e.code.as_str()),
                    crate::oauth::esc(&message)
                ),
            )
        }
    })
}

/// Whether `Accept` ranks `text/html` above JSON (a browser's does; the SDK
/// and `curl` send `application/json` or `*/*`).
fn prefers_html(headers: &HeaderMap) -> bool {
    let Some(accept) = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let position = |needle: &str| accept.find(needle);
    match (position("text/html"), position("application/json")) {
        (Some(h), Some(j)) => h < j,
        (Some(_), None) => true,
        _ => false,
    }
}

async fn custom(
    State(s): State<HttpState>,
    Caller(p): Caller,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let cmd: ConnectCustom = parse_input(body)?;
    created(s.app.connect_custom(&p, cmd).await?)
}

async fn grant(
    State(s): State<HttpState>,
    Caller(p): Caller,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let cmd: GrantAccess = parse_input(body)?;
    created(s.app.grant_access(&p, cmd).await?)
}

async fn revoke_agent(
    State(s): State<HttpState>,
    Caller(p): Caller,
    P(agent_id): P<String>,
) -> ApiResult {
    ok(s.app.revoke_agent_access(&p, &agent_id).await?)
}

async fn disconnect(State(s): State<HttpState>, Caller(p): Caller, P(id): P<String>) -> ApiResult {
    ok(s.app.disconnect_service(&p, &id).await?)
}

/// One cheap authenticated call upstream: `{ok, status, checked_at, …}`.
async fn verify(State(s): State<HttpState>, Caller(p): Caller, P(id): P<String>) -> ApiResult {
    ok(s.app.verify_connection(&p, &id).await?)
}

/// The caller, or the passport in `X-Passport-Token` when one is sent (it
/// must belong to the caller's operator).
async fn acting(s: &HttpState, p: Principal, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let Some(token) = headers.get("x-passport-token") else {
        return Ok(p);
    };
    let token = token
        .to_str()
        .map_err(|_| ApiError(Error::validation("X-Passport-Token must be ASCII")))?;
    let passport = s.app.authenticate_bearer(token).await?;
    if passport.operator_id != p.operator_id
        || !matches!(
            passport.kind,
            stack_core::principal::PrincipalKind::Passport { .. }
        )
    {
        return Err(ApiError(Error::unauthorized(
            "X-Passport-Token is not a passport of this operator",
        )));
    }
    Ok(passport)
}

async fn credential(
    State(s): State<HttpState>,
    Caller(p): Caller,
    P(provider): P<String>,
    headers: HeaderMap,
) -> ApiResult {
    let who = acting(&s, p, &headers).await?;
    ok(s.app.get_credential(&who, &provider, false).await?)
}

async fn credential_by_connection(
    State(s): State<HttpState>,
    Caller(p): Caller,
    P(id): P<String>,
    headers: HeaderMap,
) -> ApiResult {
    let who = acting(&s, p, &headers).await?;
    ok(s.app.get_credential(&who, &id, true).await?)
}

pub(crate) fn proxy_routes() -> Router<HttpState> {
    Router::new()
        .route("/proxy", post(proxy))
        .route("/proxy/usage", get(proxy_usage))
        .route("/proxy/operations/get", post(proxy_operation))
}

async fn proxy(
    State(s): State<HttpState>,
    Caller(p): Caller,
    headers: HeaderMap,
    ProxyJsonBody(body): ProxyJsonBody,
) -> ApiResult {
    let mut req: stack_app::proxy::ProxyRequest = parse_input(body)?;
    // The intent approval comes from the header on REST, never from the body.
    req.approval_id = match headers.get("x-intent-approval-id") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError(Error::validation("X-Intent-Approval-Id must be ASCII")))?
                .to_owned(),
        ),
        None => None,
    };
    let passport = proxy_passport(&headers)?;
    let request_id = match headers.get("x-stack-authority-request-id") {
        Some(v) => {
            let id = v.to_str().map_err(|_| {
                ApiError(Error::validation(
                    "X-STACK-Authority-Request-Id must be ASCII",
                ))
            })?;
            let ok = (22..=256).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(ApiError(Error::invalid_field(
                    "X-STACK-Authority-Request-Id",
                    "must be 22-256 characters of [A-Za-z0-9_-]",
                )));
            }
            Some(id.to_owned())
        }
        None => None,
    };
    ok(s.app
        .proxy(&p, passport.as_deref(), request_id.as_deref(), req)
        .await?)
}

/// `X-Passport-Token`, else a passport used as the bearer.
fn proxy_passport(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("x-passport-token") {
        Some(v) => v
            .to_str()
            .map(|t| Some(t.to_owned()))
            .map_err(|_| ApiError(Error::validation("X-Passport-Token must be ASCII"))),
        None => Ok(bearer_passport(headers)),
    }
}

async fn proxy_operation(
    State(s): State<HttpState>,
    Caller(p): Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let cmd: stack_app::proxy::GetOperation = parse_input(body)?;
    let passport = proxy_passport(&headers)?;
    ok(s.app.proxy_operation(&p, passport.as_deref(), cmd).await?)
}

/// A passport used as the bearer is also the proxy's passport.
fn bearer_passport(headers: &HeaderMap) -> Option<String> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && token.trim().starts_with("eyJ"))
        .then(|| token.trim().to_owned())
}

async fn proxy_usage(State(s): State<HttpState>, Caller(p): Caller) -> ApiResult {
    ok(s.app.proxy_usage(&p).await?)
}
