//! REST routes for passports, missions, accountability and the JWKS.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;
use stack_app::parse_input;
use stack_app::passports::accountability::{Decision, ReviewQuery};
use stack_app::passports::issue::{ActiveQuery, DelegatePassport, IssuePassport, TokenBody};
use stack_app::passports::missions::{EndMission, OpenMission};
use stack_app::passports::revoke::RevokeBody;
use stack_app::passports::{ActivityReport, RevokeTarget};
use stack_core::{Error, Principal};

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

/// Routes that need a credential.
pub(crate) fn protected() -> Router<HttpState> {
    Router::new()
        .route("/passports/issue", post(issue))
        .route("/passports/refresh", post(refresh))
        .route("/passports/delegate", post(delegate))
        .route("/passports/active", get(active))
        .route("/passports/revoke", post(revoke_one))
        .route("/passports/revoke-agent/{agent_id}", post(revoke_agent))
        .route(
            "/passports/revoke-session/{session_id}",
            post(revoke_session),
        )
        .route("/passports/revoke-all", post(revoke_all))
        .route("/passports/reviews", get(reviews))
        .route("/passports/reviews/{checkout_id}/decide", post(decide))
        .route("/passports/{jti}/checkpoint", post(checkpoint))
        .route("/passports/{jti}/checkout", post(checkout))
        .route("/passports/{jti}/report", get(report))
        .route("/missions", post(open_mission))
        .route("/missions/start", post(start_mission))
        .route("/missions/{mission_id}", get(get_mission))
        .route("/missions/{mission_id}/complete", post(complete_mission))
        .route("/missions/{mission_id}/revoke", post(revoke_mission))
        .route("/admin/keys/rotate", post(rotate_keys))
}

/// Routes anyone may call: verification and the key set are public by design.
pub(crate) fn public_v1() -> Router<HttpState> {
    Router::new()
        .route("/passports/verify", post(verify))
        .route("/.well-known/jwks.json", get(jwks))
}

/// `/.well-known/jwks.json` at the root, beside the `/v1` one.
pub(crate) fn public_root() -> Router<HttpState> {
    Router::new().route("/.well-known/jwks.json", get(jwks))
}

async fn jwks(State(s): State<HttpState>) -> ApiResult {
    let doc = s.app.passport_jwks()?;
    Ok((
        [(axum::http::header::CACHE_CONTROL, "public, max-age=300")],
        Json(doc),
    )
        .into_response())
}

async fn verify(State(s): State<HttpState>, JsonBody(body): JsonBody) -> ApiResult {
    let body: TokenBody = parse_input(body)?;
    ok(s.app.verify_passport(&body.token).await?)
}

async fn issue(
    State(s): State<HttpState>,
    Caller(p): Caller,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let cmd: IssuePassport = parse_input(body)?;
    Ok((
        StatusCode::CREATED,
        Json(s.app.issue_passport(&p, cmd).await?),
    )
        .into_response())
}

async fn refresh(
    State(s): State<HttpState>,
    Caller(p): Caller,
    JsonBody(body): JsonBody,
) -> ApiResult {
    ok(s.app.refresh_passport(&p, parse_input(body)?).await?)
}

async fn delegate(
    State(s): State<HttpState>,
    Caller(p): Caller,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let cmd: DelegatePassport = parse_input(body)?;
    Ok((
        StatusCode::CREATED,
        Json(s.app.delegate_passport(&p, cmd).await?),
    )
        .into_response())
}

async fn active(State(s): State<HttpState>, Caller(p): Caller, Q(q): Q<ActiveQuery>) -> ApiResult {
    ok(s.app.list_active_passports(&p, q).await?)
}

async fn revoke_with(s: &HttpState, p: &Principal, target: RevokeTarget, body: Value) -> ApiResult {
    let body: RevokeBody = parse_input(body)?;
    ok(s.app.revoke(p, target, body.reason).await?)
}

async fn revoke_one(
    State(s): State<HttpState>,
    Caller(p): Caller,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let parsed: RevokeBody = parse_input(body.clone())?;
    let jti = parsed
        .jti
        .ok_or_else(|| ApiError(Error::invalid_field("jti", "jti is required")))?;
    revoke_with(&s, &p, RevokeTarget::Passport(jti), body).await
}

async fn revoke_agent(
    State(s): State<HttpState>,
    Caller(p): Caller,
    P(agent_id): P<String>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    revoke_with(&s, &p, RevokeTarget::Agent(agent_id), body).await
}

async fn revoke_session(
    State(s): State<HttpState>,
    Caller(p): Caller,
    P(session_id): P<String>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    revoke_with(&s, &p, RevokeTarget::Session(session_id), body).await
}

/// REST takes no `confirm` (the SDK does not send one); the MCP tool does.
async fn revoke_all(
    State(s): State<HttpState>,
    Caller(p): Caller,
    JsonBody(body): JsonBody,
) -> ApiResult {
    revoke_with(&s, &p, RevokeTarget::All, body).await
}

async fn checkpoint(
    State(s): State<HttpState>,
    Caller(p): Caller,
    P(jti): P<String>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let report: ActivityReport = parse_input(body)?;
    ok(s.app.checkpoint(&p, &jti, report).await?)
}

async fn checkout(
    State(s): State<HttpState>,
    Caller(p): Caller,
    P(jti): P<String>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let report: ActivityReport = parse_input(body)?;
    ok(s.app.checkout(&p, &jti, report).await?)
}

async fn report(State(s): State<HttpState>, Caller(p): Caller, P(jti): P<String>) -> ApiResult {
    ok(s.app.passport_report(&p, &jti).await?)
}

async fn reviews(State(s): State<HttpState>, Caller(p): Caller, Q(q): Q<ReviewQuery>) -> ApiResult {
    ok(s.app.list_reviews(&p, q).await?)
}

async fn decide(
    State(s): State<HttpState>,
    Caller(p): Caller,
    P(checkout_id): P<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let d: Decision = parse_input(body)?;
    let approval = header(&headers, "x-governance-approval")?;
    ok(s.app.decide_review(&p, &checkout_id, d, approval).await?)
}

async fn open_mission(
    State(s): State<HttpState>,
    Caller(p): Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let mut cmd: OpenMission = parse_input(body)?;
    if cmd.idempotency_key.is_none() {
        cmd.idempotency_key = header(&headers, "idempotency-key")?.map(str::to_owned);
    }
    let (m, created) = s.app.open_mission(&p, cmd).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(stack_app::passports::missions::mission_view(
            &m,
            s.app.now(),
        )),
    )
        .into_response())
}

async fn start_mission(
    State(s): State<HttpState>,
    Caller(p): Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let mut body = body;
    if let (Some(key), Value::Object(m)) = (header(&headers, "idempotency-key")?, &mut body) {
        m.entry("idempotency_key")
            .or_insert_with(|| Value::String(key.to_owned()));
    }
    Ok((
        StatusCode::CREATED,
        Json(s.app.start_mission(&p, body).await?),
    )
        .into_response())
}

async fn get_mission(State(s): State<HttpState>, Caller(p): Caller, P(id): P<String>) -> ApiResult {
    let m = s.app.get_mission(&p, &id).await?;
    ok(stack_app::passports::missions::mission_view(
        &m,
        s.app.now(),
    ))
}

async fn complete_mission(
    State(s): State<HttpState>,
    Caller(p): Caller,
    P(id): P<String>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let _: Value = body;
    ok(s.app
        .end_mission(&p, &id, false, EndMission::default())
        .await?)
}

async fn revoke_mission(
    State(s): State<HttpState>,
    Caller(p): Caller,
    P(id): P<String>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let cmd: EndMission = parse_input(body)?;
    ok(s.app.end_mission(&p, &id, true, cmd).await?)
}

async fn rotate_keys(State(s): State<HttpState>, Caller(p): Caller) -> ApiResult {
    ok(s.app.rotate_passport_key(Some(&p)).await?)
}
