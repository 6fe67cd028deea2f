//! The OAuth 2.1 authorization server's HTTP surface (issue 5): discovery
//! metadata (RFC 8414, RFC 9728), dynamic registration (RFC 7591), the
//! authorization endpoint with its server-rendered login and consent pages,
//! the token endpoint and revocation (RFC 7009).
//!
//! These routes are public (no bearer). They speak OAuth, not the STACK
//! envelope: errors are `{"error","error_description"}` (RFC 6749 §5.2),
//! rendered in one place ([`oauth_error`]); the browser steps answer HTML or
//! redirect back to the client. The decisions are all in `stack_app::oauth`.
//!
//! CSRF: `GET /oauth/authorize` sets a cookie scoped to the request
//! (`stack_oauth_<request id>`, HttpOnly, SameSite=Strict) and each form
//! carries a one-time token; both must match what the request stored, so a
//! form posted from another site or replayed is refused.

use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;
use stack_app::App;
use stack_app::oauth::{
    AuthorizeFailure, AuthorizeParams, ConsentForm, ConsentStep, DEFAULT_SCOPES, LoginForm,
    LoginStep, OAuthError, OAuthErrorCode, REQUEST_TTL_SECONDS, SCOPES,
};

use crate::HttpState;

/// The public OAuth routes, merged into the main router.
pub(crate) fn routes() -> Router<HttpState> {
    Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            get(authorization_server_metadata),
        )
        .route(
            "/v1/.well-known/oauth-authorization-server",
            get(authorization_server_metadata),
        )
        .route(
            "/.well-known/oauth-protected-resource",
            get(rest_resource_metadata),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(mcp_resource_metadata),
        )
        .route("/oauth/register", post(register))
        .route("/oauth/authorize", get(authorize).post(login))
        .route("/oauth/consent", post(consent))
        .route("/oauth/token", post(token))
        .route("/v1/oauth/token", post(token))
        .route("/oauth/revoke", post(revoke))
}

/// The `WWW-Authenticate` value of a 401 on `/mcp`: where the protected
/// resource metadata is, and the scopes to ask for (MCP authorization spec).
pub fn mcp_www_authenticate(app: &App) -> HeaderValue {
    let value = format!(
        "Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\", scope=\"{}\"",
        app.oauth_issuer(),
        DEFAULT_SCOPES.join(" ")
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

// ------------------------------------------------------------------ errors

/// An OAuth error as a response: the one mapping of [`OAuthErrorCode`] to
/// a status, with the RFC 6749 body.
pub(crate) fn oauth_error(e: &OAuthError) -> Response {
    let status = match e.code {
        OAuthErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
        OAuthErrorCode::AccessDenied => StatusCode::FORBIDDEN,
        OAuthErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        OAuthErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        OAuthErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut res = (
        status,
        Json(json!({ "error": e.code.as_str(), "error_description": e.description })),
    )
        .into_response();
    no_store(res.headers_mut());
    if status == StatusCode::TOO_MANY_REQUESTS {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("3600"));
    }
    res
}

fn no_store(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// A form body, with OAuth errors for a wrong content type or bad encoding.
struct OAuthForm<T>(T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequest<S> for OAuthForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Form::<T>::from_request(req, state)
            .await
            .map(|f| Self(f.0))
            .map_err(|e| {
                oauth_error(&OAuthError::new(
                    OAuthErrorCode::InvalidRequest,
                    format!(
                        "expected an application/x-www-form-urlencoded body: {}",
                        e.body_text()
                    ),
                ))
            })
    }
}

// ------------------------------------------------------------------ metadata

fn scope_names() -> Vec<&'static str> {
    SCOPES.iter().map(|s| s.name).collect()
}

async fn authorization_server_metadata(State(s): State<HttpState>) -> Response {
    let base = s.app.oauth_issuer();
    let mut res = Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/oauth/authorize"),
        "token_endpoint": format!("{base}/oauth/token"),
        "registration_endpoint": format!("{base}/oauth/register"),
        "revocation_endpoint": format!("{base}/oauth/revoke"),
        "scopes_supported": scope_names(),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": s.app.client_metadata_documents_supported(),
    }))
    .into_response();
    cors(res.headers_mut());
    res
}

fn resource_metadata(app: &App, resource: String) -> Response {
    let mut res = Json(json!({
        "resource": resource,
        "authorization_servers": [app.oauth_issuer()],
        "scopes_supported": scope_names(),
        "bearer_methods_supported": ["header"],
        "resource_name": "STACK",
    }))
    .into_response();
    cors(res.headers_mut());
    res
}

/// Discovery documents are public and read by browser-based clients too.
fn cors(h: &mut HeaderMap) {
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
}

async fn rest_resource_metadata(State(s): State<HttpState>) -> Response {
    resource_metadata(&s.app, s.app.resource_uri(stack_app::oauth::Audience::Rest))
}

async fn mcp_resource_metadata(State(s): State<HttpState>) -> Response {
    resource_metadata(&s.app, s.app.resource_uri(stack_app::oauth::Audience::Mcp))
}

// ------------------------------------------------------------------ registration

async fn register(State(s): State<HttpState>, req: Request) -> Response {
    let source = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string());
    let limit = s.config.max_body_bytes;
    let Ok(bytes) = axum::body::to_bytes(req.into_body(), limit).await else {
        return oauth_error(&OAuthError::new(
            OAuthErrorCode::InvalidClientMetadata,
            "the registration request is too large",
        ));
    };
    let meta = match serde_json::from_slice::<stack_app::oauth::ClientMetadata>(&bytes) {
        Ok(m) => m,
        Err(_) => {
            return oauth_error(&OAuthError::new(
                OAuthErrorCode::InvalidClientMetadata,
                "the body must be a JSON object of client metadata (RFC 7591)",
            ));
        }
    };
    match s.app.register_oauth_client(meta, &source).await {
        Ok(client) => {
            let mut res = (StatusCode::CREATED, Json(client)).into_response();
            no_store(res.headers_mut());
            res
        }
        Err(e) => oauth_error(&e),
    }
}

// ------------------------------------------------------------------ token and revoke

async fn token(
    State(s): State<HttpState>,
    OAuthForm(form): OAuthForm<stack_app::oauth::TokenRequest>,
) -> Response {
    match s.app.oauth_token(form).await {
        Ok(t) => {
            let mut res = Json(t).into_response();
            no_store(res.headers_mut());
            res
        }
        Err(e) => oauth_error(&e),
    }
}

async fn revoke(
    State(s): State<HttpState>,
    OAuthForm(form): OAuthForm<stack_app::oauth::RevokeRequest>,
) -> Response {
    match s.app.oauth_revoke(form).await {
        Ok(()) => {
            let mut res = StatusCode::OK.into_response();
            no_store(res.headers_mut());
            res
        }
        Err(e) => oauth_error(&e),
    }
}

// ------------------------------------------------------------------ browser steps

fn cookie_name(request_id: &str) -> String {
    format!("stack_oauth_{request_id}")
}

/// The value of this request's browser-binding cookie, if the browser sent it.
fn browser_secret<'a>(headers: &'a HeaderMap, request_id: &str) -> Option<&'a str> {
    let name = cookie_name(request_id);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

async fn authorize(
    State(s): State<HttpState>,
    params: Result<axum::extract::Query<AuthorizeParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(axum::extract::Query(params)) = params else {
        return error_page(&OAuthError::new(
            OAuthErrorCode::InvalidRequest,
            "the authorization request's query string is malformed",
        ));
    };
    match s.app.begin_authorization(params).await {
        Ok(step) => {
            let secure = s.app.oauth_issuer().starts_with("https://");
            let mut res = login_page(&step, None, StatusCode::OK);
            if let Some(secret) = &step.browser_secret {
                let cookie = format!(
                    "{}={secret}; Path=/oauth; Max-Age={REQUEST_TTL_SECONDS}; HttpOnly; SameSite=Strict{}",
                    cookie_name(&step.request_id),
                    if secure { "; Secure" } else { "" }
                );
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    res.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            res
        }
        Err(f) => failure(f),
    }
}

async fn login(
    State(s): State<HttpState>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return error_page(&OAuthError::new(
            OAuthErrorCode::InvalidRequest,
            "the login form is malformed",
        ));
    };
    let secret = browser_secret(&headers, &form.request_id).map(str::to_owned);
    match s.app.authorization_login(form, secret.as_deref()).await {
        Ok(step) => consent_page(&step),
        Err(f) => failure(f),
    }
}

async fn consent(
    State(s): State<HttpState>,
    headers: HeaderMap,
    form: Result<Form<ConsentForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return error_page(&OAuthError::new(
            OAuthErrorCode::InvalidRequest,
            "the consent form is malformed",
        ));
    };
    let request_id = form.request_id.clone();
    let secret = browser_secret(&headers, &request_id).map(str::to_owned);
    let (mut res, finished) = match s.app.authorization_decision(form, secret.as_deref()).await {
        Ok(location) => (redirect(&location, StatusCode::SEE_OTHER), true),
        Err(f @ AuthorizeFailure::Redirect(_)) => (failure(f), true),
        Err(f) => (failure(f), false),
    };
    // The request is over: drop its cookie. (Not after a refused post: a
    // forged form must not log the real user out of their request.)
    if finished
        && let Ok(v) = HeaderValue::from_str(&format!(
            "{}=; Path=/oauth; Max-Age=0; HttpOnly; SameSite=Strict",
            cookie_name(&request_id)
        ))
    {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

fn failure(f: AuthorizeFailure) -> Response {
    match f {
        AuthorizeFailure::Show(e) => error_page(&e),
        AuthorizeFailure::Redirect(location) => redirect(&location, StatusCode::FOUND),
        AuthorizeFailure::LoginAgain(step, message) => {
            login_page(&step, Some(&message), StatusCode::UNAUTHORIZED)
        }
    }
}

fn redirect(location: &str, status: StatusCode) -> Response {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    no_store(res.headers_mut());
    res.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

// ------------------------------------------------------------------ HTML

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;color:#1b1b1f}\
h1{font-size:1.4rem}code{background:#f1f1f4;padding:0 .25rem;border-radius:3px}\
.box{border:1px solid #d8d8de;border-radius:8px;padding:1rem 1.25rem;margin:1rem 0}\
.err{border-color:#c62828;color:#8e1c1c}input[type=password]{width:100%;padding:.5rem;font-family:monospace}\
button{padding:.5rem 1.1rem;margin-right:.5rem;border-radius:6px;border:1px solid #888;cursor:pointer}\
button.primary{background:#1b1b1f;color:#fff}li{margin:.3rem 0}.muted{color:#666;font-size:.9rem}";

pub(crate) fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{} · STACK</title><style>{STYLE}</style></head><body>{body}</body></html>",
        esc(title)
    );
    let mut res = (status, html).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    no_store(h);
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

fn scope_list(scopes: &[&stack_app::oauth::ScopeInfo], beyond: &[&str]) -> String {
    let mut out = String::from("<ul>");
    for s in scopes {
        let note = if beyond.contains(&s.name) {
            " <span class=\"muted\">(beyond your role: will not be usable)</span>"
        } else {
            ""
        };
        out.push_str(&format!(
            "<li><code>{}</code> — {}{note}</li>",
            esc(s.name),
            esc(s.description)
        ));
    }
    out.push_str("</ul>");
    out
}

/// Who the client is, for the pages: its self-chosen name and, for a
/// metadata-document client, the host its description came from (the part
/// the user can trust).
fn client_label(name: &str, host: Option<&str>) -> String {
    match host {
        Some(host) => format!(
            "<strong>{}</strong> from <strong>{}</strong>",
            esc(name),
            esc(host)
        ),
        None => format!("<strong>{}</strong>", esc(name)),
    }
}

fn client_note(host: Option<&str>) -> String {
    host.map_or_else(String::new, |host| {
        format!(
            "<p class=\"muted\">The name is chosen by the application itself; <code>{}</code> is the host that published its description (its Client ID Metadata Document). Continue only if you expect an application from there.</p>",
            esc(host)
        )
    })
}

fn login_page(step: &LoginStep, error: Option<&str>, status: StatusCode) -> Response {
    let error = error.map_or_else(String::new, |m| {
        format!("<div class=\"box err\" role=\"alert\">{}</div>", esc(m))
    });
    let body = format!(
        "<h1>Sign in to STACK</h1>\
<p>{client} wants to access your STACK account. It will be sent back to <code>{redirect}</code>.</p>{note}{error}\
<form method=\"post\" action=\"/oauth/authorize\" class=\"box\">\
<input type=\"hidden\" name=\"request_id\" value=\"{rid}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<label for=\"api_key\">Operator or team-member API key</label>\
<p><input type=\"password\" id=\"api_key\" name=\"api_key\" autocomplete=\"off\" placeholder=\"sk_live_…\" required autofocus></p>\
<button type=\"submit\" class=\"primary\">Continue</button></form>\
<p class=\"muted\">STACK has no passwords: you sign in with the API key you were given. It is checked once and never stored; the application only receives a token limited to the scopes below, and never more than this key may do.</p>\
<p>Requested access:</p>{scopes}",
        client = client_label(&step.client_name, step.client_host.as_deref()),
        note = client_note(step.client_host.as_deref()),
        redirect = esc(&step.redirect_uri),
        rid = esc(&step.request_id),
        csrf = esc(&step.csrf),
        scopes = scope_list(&step.scopes, &[]),
    );
    page(status, "Sign in", &body)
}

fn consent_page(step: &ConsentStep) -> Response {
    let body = format!(
        "<h1>Allow access?</h1>\
<p>Signed in as <code>{who}</code>.</p>\
<p>{client} (<code>{client_id}</code>) asks for:</p>{scopes}{note}\
<p class=\"muted\">You will be sent back to <code>{redirect}</code>. Access tokens last one hour; the application can renew them until you revoke it.</p>\
<form method=\"post\" action=\"/oauth/consent\">\
<input type=\"hidden\" name=\"request_id\" value=\"{rid}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<button type=\"submit\" name=\"decision\" value=\"approve\" class=\"primary\">Allow</button>\
<button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>",
        who = esc(&step.signed_in_as),
        client = client_label(&step.client_name, step.client_host.as_deref()),
        note = client_note(step.client_host.as_deref()),
        client_id = esc(&step.client_id),
        scopes = scope_list(&step.scopes, &step.beyond_role),
        redirect = esc(&step.redirect_uri),
        rid = esc(&step.request_id),
        csrf = esc(&step.csrf),
    );
    page(StatusCode::OK, "Allow access", &body)
}

fn error_page(e: &OAuthError) -> Response {
    let status = match e.code {
        OAuthErrorCode::AccessDenied => StatusCode::FORBIDDEN,
        OAuthErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
        OAuthErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    let body = format!(
        "<h1>Authorization failed</h1><div class=\"box err\" role=\"alert\"><p><code>{}</code></p><p>{}</p></div>\
<p class=\"muted\">You have not been sent back to the application. Close this page and try again from it.</p>",
        esc(e.code.as_str()),
        esc(&e.description)
    );
    page(status, "Authorization failed", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            esc("<script>\"x\"&'y'"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;"
        );
    }

    #[test]
    fn metadata_clients_show_their_host() {
        let label = client_label("<b>Evil</b>", Some("app.example"));
        assert_eq!(
            label,
            "<strong>&lt;b&gt;Evil&lt;/b&gt;</strong> from <strong>app.example</strong>"
        );
        assert!(client_note(Some("app.example")).contains("<code>app.example</code>"));
        assert_eq!(client_label("x", None), "<strong>x</strong>");
        assert!(client_note(None).is_empty());
    }

    #[test]
    fn cookie_lookup_is_per_request() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; stack_oauth_oar_x=sekrit; stack_oauth_oar_y=other"),
        );
        assert_eq!(browser_secret(&h, "oar_x"), Some("sekrit"));
        assert_eq!(browser_secret(&h, "oar_z"), None);
    }
}
