//! The route table and the handlers: each one parses, calls one `stack-app`
//! operation, and renders.

use axum::extract::{FromRequestParts, OriginalUri, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use axum::{Json, Router, middleware};
use serde_json::json;
use stack_app::agents::{RegisterAgent, SkillAccessChange};
use stack_app::audit::{AuditListQuery, ExportQuery, VerifyQuery};
use stack_app::parse_input;
use stack_core::{Error, ErrorCode, Principal};

use crate::auth::{AuthLayerConfig, require_principal};
use crate::extract::{JsonBody, P, Q};
use crate::{ApiError, HttpState};

type ApiResult<T = Response> = Result<T, ApiError>;

/// The authenticated caller, put in place by [`require_principal`].
pub struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Self)
            .ok_or_else(|| ApiError(Error::unauthorized("missing credentials")))
    }
}

fn ok(v: impl serde::Serialize) -> ApiResult {
    Ok(Json(v).into_response())
}

/// Domains of the contract whose issues have not landed yet: their routes
/// answer 501 with the envelope, so SDK users get a clear, stable error.
const NOT_YET: &[(&str, &str)] = &[
    ("dropoffs", "drop-offs"),
    ("skills", "skills"),
    ("skill-requests", "skill requests"),
    ("team", "team members"),
    ("operators", "identity settings"),
    ("identity", "identity"),
    ("notifications", "notifications"),
    ("usage", "usage"),
];

pub fn router(state: HttpState) -> Router {
    let auth = AuthLayerConfig {
        app: state.app.clone(),
        www_authenticate: HeaderValue::from_static("Bearer"),
        audience: stack_app::oauth::Audience::Rest,
    };
    let mut v1 = Router::new()
        .route("/agents/register", post(register_agent))
        .route("/agents", get(list_agents))
        .route(
            "/agents/{agent_id}",
            get(get_agent).patch(update_agent).delete(delete_agent),
        )
        .route("/agents/{agent_id}/unblock", post(unblock_agent))
        .route("/agents/{agent_id}/permissions", get(agent_permissions))
        .route(
            "/agents/{agent_id}/allowed-skills/{skill_id}",
            put(allow_skill).delete(disallow_skill),
        )
        .route(
            "/agents/{agent_id}/enrollment-challenge",
            post(not_yet_agent_keys),
        )
        .route("/agents/{agent_id}/enroll", post(not_yet_agent_keys))
        .route("/audit", get(list_audit))
        .route("/audit/chain-head", get(chain_head))
        .route("/audit/verify-chain", get(verify_chain))
        .route("/audit/export", get(export_audit));
    for (segment, _) in NOT_YET {
        v1 = v1
            .route(&format!("/{segment}"), any(not_yet))
            .route(&format!("/{segment}/{{*rest}}"), any(not_yet));
    }
    // Authentication applies to these routes only (route_layer), so the
    // public passport routes merged below stay public.
    let v1 = v1
        .merge(crate::passports::protected())
        .merge(crate::services::protected())
        .merge(crate::services::proxy_routes())
        .merge(crate::intents::protected())
        .merge(crate::scan::protected())
        .route_layer(middleware::from_fn_with_state(auth, require_principal))
        .merge(crate::passports::public_v1())
        .merge(crate::services::public_v1())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);

    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(crate::oauth::routes())
        .merge(crate::passports::public_root())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

async fn readyz(State(s): State<HttpState>) -> Response {
    match s.app.store().ping().await {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(_) => ApiError(Error::new(
            ErrorCode::Unavailable,
            "the database is not reachable",
        ))
        .into_response(),
    }
}

/// The request path for messages, cut to 120 characters.
fn shown_path(uri: &OriginalUri) -> String {
    let p = uri.0.path();
    let mut shown: String = p.chars().take(120).collect();
    if shown.len() < p.len() {
        shown.push('…');
    }
    shown
}

async fn not_found(uri: OriginalUri) -> Response {
    ApiError(Error::new(
        ErrorCode::NotFound,
        format!("no route for {}", shown_path(&uri)),
    ))
    .into_response()
}

async fn method_not_allowed(method: Method, uri: OriginalUri) -> Response {
    ApiError(Error::new(
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed on {}", shown_path(&uri)),
    ))
    .into_response()
}

async fn not_yet(uri: Uri) -> Response {
    let path = uri.path();
    let segment = path
        .trim_start_matches("/v1")
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    let what = NOT_YET
        .iter()
        .find(|(s, _)| *s == segment)
        .map_or("this endpoint", |(_, w)| *w);
    ApiError(Error::not_implemented(what)).into_response()
}

async fn not_yet_agent_keys() -> Response {
    ApiError(Error::not_implemented("agent keypair enrollment")).into_response()
}

// ---- agents

async fn register_agent(
    State(s): State<HttpState>,
    Caller(p): Caller,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let cmd: RegisterAgent = parse_input(body)?;
    let agent = s.app.register_agent(&p, cmd).await?;
    Ok((StatusCode::CREATED, Json(agent)).into_response())
}

async fn list_agents(State(s): State<HttpState>, Caller(p): Caller) -> ApiResult {
    ok(s.app.list_agents(&p).await?)
}

async fn get_agent(State(s): State<HttpState>, Caller(p): Caller, P(id): P<String>) -> ApiResult {
    ok(s.app.get_agent(&p, &id).await?)
}

async fn update_agent(
    State(s): State<HttpState>,
    Caller(p): Caller,
    P(id): P<String>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    ok(s.app.update_agent(&p, &id, body).await?)
}

async fn delete_agent(
    State(s): State<HttpState>,
    Caller(p): Caller,
    P(id): P<String>,
) -> ApiResult {
    ok(s.app.delete_agent(&p, &id).await?)
}

async fn unblock_agent(
    State(s): State<HttpState>,
    Caller(p): Caller,
    P(id): P<String>,
    headers: HeaderMap,
) -> ApiResult {
    let approval = headers
        .get("x-governance-approval")
        .map(|v| {
            v.to_str()
                .map_err(|_| Error::validation("X-Governance-Approval must be ASCII"))
        })
        .transpose()?;
    ok(s.app.unblock_agent(&p, &id, approval).await?)
}

async fn agent_permissions(
    State(s): State<HttpState>,
    Caller(p): Caller,
    P(id): P<String>,
) -> ApiResult {
    ok(s.app.agent_permissions(&p, &id).await?)
}

async fn allow_skill(
    State(s): State<HttpState>,
    Caller(p): Caller,
    P((agent_id, skill_id)): P<(String, String)>,
) -> ApiResult {
    ok(s.app
        .set_skill_access(&p, SkillAccessChange { agent_id, skill_id }, true)
        .await?)
}

async fn disallow_skill(
    State(s): State<HttpState>,
    Caller(p): Caller,
    P((agent_id, skill_id)): P<(String, String)>,
) -> ApiResult {
    ok(s.app
        .set_skill_access(&p, SkillAccessChange { agent_id, skill_id }, false)
        .await?)
}

// ---- audit

async fn list_audit(
    State(s): State<HttpState>,
    Caller(p): Caller,
    Q(q): Q<AuditListQuery>,
) -> ApiResult {
    ok(s.app.list_audit(&p, q).await?)
}

async fn chain_head(State(s): State<HttpState>, Caller(p): Caller) -> ApiResult {
    ok(s.app.audit_chain_head(&p).await?)
}

async fn verify_chain(
    State(s): State<HttpState>,
    Caller(p): Caller,
    Q(q): Q<VerifyQuery>,
) -> ApiResult {
    ok(s.app.verify_audit_chain(&p, q).await?)
}

async fn export_audit(
    State(s): State<HttpState>,
    Caller(p): Caller,
    Q(q): Q<ExportQuery>,
) -> ApiResult {
    let page = s.app.export_audit(&p, q).await?;
    let mut res = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(page.content_type()),
        )],
        page.render(),
    )
        .into_response();
    if let Some(next) = page.next_after_seq
        && let Ok(v) = HeaderValue::from_str(&next.to_string())
    {
        res.headers_mut().insert("x-next-after-seq", v);
    }
    Ok(res)
}
