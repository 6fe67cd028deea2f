//! REST routes for intent simulation, submission and approval (issue 4).
//! `/intents/pending` is a static segment, so it wins over `/intents/{id}`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use stack_app::intents::{IntentDecision, PendingQuery, SimulateIntent, SubmitIntent};
use stack_app::parse_input;
use stack_core::Error;

use crate::extract::{JsonBody, P, Q};
use crate::routes::Caller;
use crate::{ApiError, HttpState};

type ApiResult = Result<Response, ApiError>;

fn ok(v: impl serde::Serialize) -> ApiResult {
    Ok(Json(v).into_response())
}

/// The routes; all need a credential.
pub(crate) fn protected() -> Router<HttpState> {
    Router::new()
        .route("/intents/simulate", post(simulate))
        .route("/intents/submit", post(submit))
        .route("/intents/pending", get(pending))
        .route("/intents/{approval_id}", get(get_approval))
        .route("/intents/{approval_id}/approve", post(approve))
        .route("/intents/{approval_id}/reject", post(reject))
}

fn passport_token(h: &HeaderMap) -> Result<Option<&str>, ApiError> {
    h.get("x-passport-token")
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError(Error::validation("X-Passport-Token must be ASCII")))
        })
        .transpose()
}

async fn simulate(
    State(s): State<HttpState>,
    Caller(p): Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let cmd: SimulateIntent = parse_input(body)?;
    ok(s.app
        .simulate_intent(&p, passport_token(&headers)?, cmd)
        .await?)
}

async fn submit(
    State(s): State<HttpState>,
    Caller(p): Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let cmd: SubmitIntent = parse_input(body)?;
    let v = s
        .app
        .submit_intent(&p, passport_token(&headers)?, cmd)
        .await?;
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

async fn pending(
    State(s): State<HttpState>,
    Caller(p): Caller,
    Q(q): Q<PendingQuery>,
) -> ApiResult {
    ok(s.app.list_pending_intents(&p, q).await?)
}

async fn get_approval(
    State(s): State<HttpState>,
    Caller(p): Caller,
    P(id): P<String>,
) -> ApiResult {
    ok(s.app.get_intent_approval(&p, &id).await?)
}

async fn approve(
    State(s): State<HttpState>,
    Caller(p): Caller,
    P(id): P<String>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let d: IntentDecision = parse_input(body)?;
    ok(s.app.approve_intent(&p, &id, d).await?)
}

async fn reject(
    State(s): State<HttpState>,
    Caller(p): Caller,
    P(id): P<String>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let d: IntentDecision = parse_input(body)?;
    ok(s.app.reject_intent(&p, &id, d).await?)
}
