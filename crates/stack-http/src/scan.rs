//! REST routes for content scanning, detector configuration and security
//! events (issue 6).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use stack_app::parse_input;
use stack_app::scan::{ScanRequest, SecurityEventQuery};
use stack_core::Error;

use crate::extract::{JsonBody, P, Q};
use crate::routes::Caller;
use crate::{ApiError, HttpState};

type ApiResult = Result<Response, ApiError>;

fn ok(v: impl serde::Serialize) -> ApiResult {
    Ok(Json(v).into_response())
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    h.get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError(Error::validation(format!("{name} must be ASCII"))))
        })
        .transpose()
}

/// The routes; all need a credential.
pub(crate) fn protected() -> Router<HttpState> {
    Router::new()
        .route("/scan", post(scan))
        .route("/scan/usage", get(usage))
        .route("/detectors/config", get(list_configs))
        .route(
            "/detectors/{detector_key}/config",
            get(get_config).put(put_config).delete(reset_config),
        )
        .route("/security-events", get(list_events))
        .route("/security-events/{event_id}", get(get_event))
        .route("/security-events/{event_id}/resolve", post(resolve_event))
}

async fn scan(
    State(s): State<HttpState>,
    Caller(p): Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let mut req: ScanRequest = parse_input(body)?;
    // The passport comes from the header on REST, never from the body.
    req.passport_token = None;
    let token = header(&headers, "x-passport-token")?;
    ok(s.app.scan(&p, req, token).await?)
}

async fn usage(State(s): State<HttpState>, Caller(p): Caller) -> ApiResult {
    ok(s.app.scan_usage(&p).await?)
}

async fn list_configs(State(s): State<HttpState>, Caller(p): Caller) -> ApiResult {
    ok(s.app.list_detector_configs(&p).await?)
}

async fn get_config(State(s): State<HttpState>, Caller(p): Caller, P(key): P<String>) -> ApiResult {
    ok(s.app.get_detector_config(&p, &key).await?)
}

async fn put_config(
    State(s): State<HttpState>,
    Caller(p): Caller,
    P(key): P<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let approval = header(&headers, "x-governance-approval")?;
    ok(s.app
        .upsert_detector_config(&p, &key, body, approval)
        .await?)
}

async fn reset_config(
    State(s): State<HttpState>,
    Caller(p): Caller,
    P(key): P<String>,
    headers: HeaderMap,
) -> ApiResult {
    let approval = header(&headers, "x-governance-approval")?;
    s.app.reset_detector_config(&p, &key, approval).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_events(
    State(s): State<HttpState>,
    Caller(p): Caller,
    Q(q): Q<SecurityEventQuery>,
) -> ApiResult {
    // REST lists unresolved events only (the contract).
    let q = SecurityEventQuery {
        include_resolved: None,
        ..q
    };
    ok(s.app.list_security_events(&p, q).await?)
}

async fn get_event(State(s): State<HttpState>, Caller(p): Caller, P(id): P<String>) -> ApiResult {
    ok(s.app.get_security_event(&p, &id).await?)
}

async fn resolve_event(
    State(s): State<HttpState>,
    Caller(p): Caller,
    P(id): P<String>,
) -> ApiResult {
    ok(s.app.resolve_security_event(&p, &id).await?)
}
