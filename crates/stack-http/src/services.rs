//! REST routes for services, connections, grants and credentials (issue 4).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use stack_app::parse_input;
use stack_app::services::{ConnectCustom, ConnectService, GrantAccess};
use stack_core::{Error, Principal};

use crate::extract::{JsonBody, P};
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

async fn connect(
    State(s): State<HttpState>,
    Caller(p): Caller,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let cmd: ConnectService = parse_input(body)?;
    created(s.app.connect_service(&p, cmd).await?)
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

/// The health check calls the upstream through the egress client, which
/// arrives with the proxy.
async fn verify(Caller(_p): Caller, P(_id): P<String>) -> ApiResult {
    Err(ApiError(Error::not_implemented(
        "connection verification (it needs the proxy's egress client)",
    )))
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
}

async fn proxy(
    State(s): State<HttpState>,
    Caller(p): Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let req: stack_app::proxy::ProxyRequest = parse_input(body)?;
    let passport = match headers.get("x-passport-token") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError(Error::validation("X-Passport-Token must be ASCII")))?
                .to_owned(),
        ),
        None => bearer_passport(&headers),
    };
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
