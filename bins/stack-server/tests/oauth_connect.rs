//! End-to-end tests of upstream OAuth connections and connection
//! verification (issue 4): the real binary against a local OAuth 2.0
//! provider (authorization endpoint with PKCE, token endpoint with
//! refresh-token rotation and reuse detection, a protected API that answers
//! 401 to expired or unknown tokens), on SQLite and (when configured)
//! PostgreSQL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Method;
use serde_json::{Value, json};
use support::*;

const CLIENT_ID: &str = "stack-test-client";
const CLIENT_SECRET: &str = "client_SECRET_do_not_leak_0123456789";

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

struct CodeGrant {
    redirect_uri: String,
    challenge: Option<String>,
}

/// The provider's state; the test reads and steers it.
#[derive(Default)]
struct Provider {
    codes: HashMap<String, CodeGrant>,
    /// Live access tokens → expiry (epoch ms).
    access: HashMap<String, i64>,
    /// Refresh tokens → still usable (false once used: rotation).
    refresh: HashMap<String, bool>,
    issued_access: Vec<String>,
    issued_refresh: Vec<String>,
    verifiers: Vec<String>,
    /// `(grant_type, outcome)` of every token request.
    token_requests: Vec<(String, String)>,
    /// `(path, status)` of every API call.
    api_calls: Vec<(String, u16)>,
    /// `expires_in` of the next token issued.
    next_expires_in: i64,
    refresh_refused: bool,
    api_forbidden: bool,
    deny_next: bool,
    counter: u64,
    /// `(token_type_hint, whether the token was a refresh token we issued)`
    /// of every RFC 7009 revocation request.
    revocations: Vec<(String, bool)>,
}

type Shared = Arc<Mutex<Provider>>;

fn oauth_error(code: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": code, "error_description": "refused by the test provider" })),
    )
        .into_response()
}

async fn authorize(State(p): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut p = p.lock().unwrap();
    let redirect = q.get("redirect_uri").cloned().unwrap_or_default();
    let state = q.get("state").cloned().unwrap_or_default();
    let ok = q.get("client_id").map(String::as_str) == Some(CLIENT_ID)
        && q.get("response_type").map(String::as_str) == Some("code")
        && q.get("code_challenge_method").map(String::as_str) == Some("S256")
        && q.get("code_challenge").is_some_and(|c| c.len() == 43)
        && q.get("scope").map(String::as_str) == Some("repo read:org")
        && !state.is_empty();
    if !ok {
        return (StatusCode::BAD_REQUEST, "bad authorization request").into_response();
    }
    let location = if std::mem::take(&mut p.deny_next) {
        format!("{redirect}?error=access_denied&state={state}")
    } else {
        p.counter += 1;
        let code = format!("code_{}_{}", p.counter, support::rand_suffix());
        p.codes.insert(
            code.clone(),
            CodeGrant {
                redirect_uri: redirect.clone(),
                challenge: q.get("code_challenge").cloned(),
            },
        );
        format!("{redirect}?code={code}&state={state}")
    };
    (StatusCode::FOUND, [("location", location)]).into_response()
}

fn issue(p: &mut Provider) -> Value {
    p.counter += 1;
    let n = p.counter;
    let access = format!("gho_ACCESS_{n}_{}", support::rand_suffix());
    let refresh = format!("ghr_REFRESH_{n}_{}", support::rand_suffix());
    let expires_in = p.next_expires_in;
    p.access
        .insert(access.clone(), now_ms() + expires_in * 1000);
    p.refresh.insert(refresh.clone(), true);
    p.issued_access.push(access.clone());
    p.issued_refresh.push(refresh.clone());
    json!({ "access_token": access, "refresh_token": refresh, "token_type": "bearer",
            "expires_in": expires_in, "scope": "repo,read:org" })
}

/// RFC 7009: the client authenticates; a refresh token takes its access
/// tokens with it; `200` whatever the token was.
async fn revoke(State(p): State<Shared>, Form(f): Form<HashMap<String, String>>) -> Response {
    let mut p = p.lock().unwrap();
    if f.get("client_id").map(String::as_str) != Some(CLIENT_ID)
        || f.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
    {
        return oauth_error("invalid_client");
    }
    let token = f.get("token").cloned().unwrap_or_default();
    let hint = f.get("token_type_hint").cloned().unwrap_or_default();
    let known = p.refresh.contains_key(&token);
    if known {
        p.refresh.insert(token, false);
        p.access.clear();
    }
    p.revocations.push((hint, known));
    StatusCode::OK.into_response()
}

async fn token(State(p): State<Shared>, Form(f): Form<HashMap<String, String>>) -> Response {
    let mut p = p.lock().unwrap();
    let grant = f.get("grant_type").cloned().unwrap_or_default();
    if f.get("client_id").map(String::as_str) != Some(CLIENT_ID)
        || f.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
    {
        p.token_requests.push((grant, "invalid_client".into()));
        return oauth_error("invalid_client");
    }
    let outcome = match grant.as_str() {
        "authorization_code" => {
            let code = f.get("code").cloned().unwrap_or_default();
            match p.codes.remove(&code) {
                None => Err("invalid_grant"),
                Some(g) if Some(&g.redirect_uri) != f.get("redirect_uri") => Err("invalid_grant"),
                Some(g) => {
                    let verifier = f.get("code_verifier").cloned().unwrap_or_default();
                    let computed =
                        URL_SAFE_NO_PAD.encode(stack_crypto::sha256(verifier.as_bytes()));
                    if g.challenge.as_deref() == Some(computed.as_str()) {
                        p.verifiers.push(verifier);
                        Ok(())
                    } else {
                        Err("invalid_grant")
                    }
                }
            }
        }
        "refresh_token" => {
            let rt = f.get("refresh_token").cloned().unwrap_or_default();
            if p.refresh_refused {
                Err("invalid_grant")
            } else {
                match p.refresh.get(&rt) {
                    Some(true) => {
                        // Rotation: the old refresh token dies now.
                        p.refresh.insert(rt, false);
                        Ok(())
                    }
                    _ => Err("invalid_grant"),
                }
            }
        }
        _ => Err("unsupported_grant_type"),
    };
    match outcome {
        Ok(()) => {
            p.token_requests.push((grant, "ok".into()));
            axum::Json(issue(&mut p)).into_response()
        }
        Err(code) => {
            p.token_requests.push((grant, code.into()));
            oauth_error(code)
        }
    }
}

/// The protected API (GitHub's `/user` and anything else).
async fn api(State(p): State<Shared>, uri: axum::http::Uri, headers: HeaderMap) -> Response {
    let mut p = p.lock().unwrap();
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_owned();
    let live = p.access.get(&token).is_some_and(|exp| *exp > now_ms());
    let status = if !live {
        401
    } else if p.api_forbidden {
        403
    } else {
        200
    };
    p.api_calls.push((uri.path().to_owned(), status));
    match status {
        200 => axum::Json(json!({ "login": "octocat", "path": uri.path() })).into_response(),
        401 => (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "message": "Bad credentials" })),
        )
            .into_response(),
        _ => (
            StatusCode::FORBIDDEN,
            axum::Json(json!({ "message": "Resource not accessible" })),
        )
            .into_response(),
    }
}

async fn start_provider() -> (u16, Shared) {
    let shared: Shared = Arc::new(Mutex::new(Provider {
        next_expires_in: 3600,
        ..Provider::default()
    }));
    let app = axum::Router::new()
        .route("/authorize", get(authorize))
        .route("/token", post(token))
        .route("/revoke", post(revoke))
        .fallback(api)
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, shared)
}

/// Every response body STACK gave, to search for leaked secrets at the end.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    async fn call(
        &mut self,
        method: Method,
        url: String,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (st, v) = call(method, url, key, body).await;
        self.0.push(v.to_string());
        (st, v)
    }

    async fn get(&mut self, url: &str) -> (u16, Value) {
        let res = client().get(url).send().await.unwrap();
        let st = res.status().as_u16();
        let text = res.text().await.unwrap();
        self.0.push(text.clone());
        (
            st,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn proxy(&mut self, s: &Server, key: &str, passport: &str, url: &str) -> (u16, Value) {
        let r = client()
            .post(s.url("/v1/proxy"))
            .bearer_auth(key)
            .header("x-passport-token", passport)
            .json(&json!({ "service": "github", "method": "GET", "url": url }))
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        self.0.push(v.to_string());
        (st, v)
    }
}

/// "Opens the browser": follows the authorization URL at the provider (the
/// test resolves `oauth.provider.test` itself) and returns the redirect to
/// STACK's callback.
async fn authorize_in_browser(authorization_url: &str, provider_port: u16) -> String {
    let url = authorization_url.replace(
        &format!("http://oauth.provider.test:{provider_port}"),
        &format!("http://127.0.0.1:{provider_port}"),
    );
    let res = client().get(url).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 302, "{:?}", res.text().await);
    res.headers()["location"].to_str().unwrap().to_owned()
}

fn query_param(url: &str, name: &str) -> Option<String> {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn mcp_tool(s: &Server, key: &str, name: &str, args: Value) -> Value {
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": { "name": name, "arguments": args } });
    let res = client()
        .post(s.url("/mcp"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let v: Value = res.json().await.unwrap();
    v["result"].clone()
}

async fn oauth_connect_refresh_and_verify_body(data: &Data) {
    let (port, provider) = start_provider().await;
    let mut env = data.env.clone();
    env.push(("STACK_PROXY_ALLOW_PRIVATE".into(), "127.0.0.0/8".into()));
    env.push(("STACK_PROXY_ALLOW_HTTP".into(), "1".into()));
    env.push((
        "STACK_PROXY_RESOLVE".into(),
        "oauth.provider.test=127.0.0.1,api.github.com=127.0.0.1".into(),
    ));
    let s = Server::start(env);
    let k = s.key();
    let mut seen = Seen::default();
    let api_base = format!("http://api.github.com:{port}");
    let provider_base = format!("http://oauth.provider.test:{port}");

    // Without an OAuth app, connect says what to do.
    let connect = json!({ "service_id": "svc_github", "scopes": ["repo", "read:org"] });
    let (st, e) = seen
        .call(
            Method::POST,
            s.url("/v1/services/connect"),
            Some(&k),
            Some(connect.clone()),
        )
        .await;
    assert_eq!(st, 409, "{e}");
    assert_eq!(e["error"]["details"]["reason"], "oauth_app_missing", "{e}");

    // The operator's OAuth app: the secret is sealed and never shown.
    let (st, app) = seen
        .call(
            Method::POST,
            s.url("/v1/services/oauth-apps"),
            Some(&k),
            Some(json!({
                "service_id": "svc_github", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                "authorize_url": format!("{provider_base}/authorize"),
                "token_url": format!("{provider_base}/token"),
                "revoke_url": format!("{provider_base}/revoke"),
                "api_base_url": api_base,
            })),
        )
        .await;
    assert_eq!(st, 201, "{app}");
    assert_eq!(app["revoke_url"], json!(format!("{provider_base}/revoke")));
    assert_eq!(app["client_secret_set"], true);
    assert_eq!(app["pkce"], true);
    let redirect_uri = s.url("/v1/services/oauth/callback");
    assert_eq!(app["redirect_uri"], json!(redirect_uri));
    let (st, apps) = seen
        .call(
            Method::GET,
            s.url("/v1/services/oauth-apps"),
            Some(&k),
            None,
        )
        .await;
    assert_eq!(st, 200, "{apps}");
    assert_eq!(apps[0]["client_id"], CLIENT_ID);
    // Overrides must be URLs on DNS hosts.
    let (st, _) = seen
        .call(
            Method::POST,
            s.url("/v1/services/oauth-apps"),
            Some(&k),
            Some(json!({ "service_id": "github", "client_id": "x", "token_url": "file:///etc/passwd" })),
        )
        .await;
    assert_eq!(st, 400);

    // Start: an authorization URL with state and PKCE S256, never the verifier.
    let (st, pending) = seen
        .call(
            Method::POST,
            s.url("/v1/services/connect"),
            Some(&k),
            Some(connect.clone()),
        )
        .await;
    assert_eq!(st, 200, "{pending}");
    assert_eq!(pending["status"], "pending");
    let auth_url = pending["authorization_url"].as_str().unwrap().to_owned();
    assert!(
        auth_url.starts_with(&format!("{provider_base}/authorize?")),
        "{auth_url}"
    );
    assert_eq!(
        query_param(&auth_url, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(
        query_param(&auth_url, "redirect_uri").as_deref(),
        Some(redirect_uri.as_str())
    );
    assert_eq!(
        query_param(&auth_url, "scope").as_deref(),
        Some("repo read:org")
    );
    assert!(query_param(&auth_url, "code_verifier").is_none());
    let state = query_param(&auth_url, "state").unwrap();
    assert!(state.len() >= 43, "{state}");

    // Unknown and missing states are refused before anything else.
    let (st, e) = seen
        .get(&s.url("/v1/services/oauth/callback?code=abc&state=not-a-state"))
        .await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (400, Some("VALIDATION_ERROR")),
        "{e}"
    );
    let (st, _) = seen
        .get(&s.url("/v1/services/oauth/callback?code=abc"))
        .await;
    assert_eq!(st, 400);

    // The browser approves; the provider redirects to the callback.
    let back = authorize_in_browser(&auth_url, port).await;
    assert!(back.starts_with(&redirect_uri), "{back}");
    let (st, done) = seen.get(&back).await;
    assert_eq!(st, 200, "{done}");
    assert_eq!(done["connected"], true);
    let cid = done["connection_id"].as_str().unwrap().to_owned();
    assert_eq!(done["connection"]["connected_via"], "oauth");
    assert_eq!(done["connection"]["oauth"]["refreshable"], true);
    assert_eq!(done["connection"]["hosts"], json!(["api.github.com"]));
    {
        let p = provider.lock().unwrap();
        assert_eq!(
            p.token_requests,
            [("authorization_code".into(), "ok".into())]
        );
        // The provider checked S256(code_verifier) against the challenge.
        assert_eq!(p.verifiers.len(), 1);
    }
    // Replaying the callback (same code and state) is refused: single use.
    let (st, e) = seen.get(&back).await;
    assert_eq!(st, 400, "{e}");
    assert_eq!(provider.lock().unwrap().token_requests.len(), 1);

    // A refused authorization: the state is consumed, nothing is connected.
    provider.lock().unwrap().deny_next = true;
    let (_, pending2) = seen
        .call(
            Method::POST,
            s.url("/v1/services/connect"),
            Some(&k),
            Some(connect.clone()),
        )
        .await;
    let back2 = authorize_in_browser(pending2["authorization_url"].as_str().unwrap(), port).await;
    let (st, e) = seen.get(&back2).await;
    assert_eq!(st, 400, "{e}");
    assert_eq!(e["error"]["details"]["reason"], "oauth_denied", "{e}");
    let (_, conns) = seen
        .call(Method::GET, s.url("/v1/services/connected"), Some(&k), None)
        .await;
    assert_eq!(conns.as_array().unwrap().len(), 1, "{conns}");

    // An agent with a grant and a passport.
    let (_, agent) = seen
        .call(
            Method::POST,
            s.url("/v1/agents/register"),
            Some(&k),
            Some(json!({"name": "coder", "accountability_mode": "standard"})),
        )
        .await;
    let aid = agent["id"].as_str().unwrap().to_owned();
    let (st, g) = seen
        .call(
            Method::POST,
            s.url("/v1/services/grant"),
            Some(&k),
            Some(json!({"agent_id": aid, "service_connection_id": cid, "scopes": ["repo"]})),
        )
        .await;
    assert_eq!(st, 201, "{g}");
    let (_, pp) = seen
        .call(
            Method::POST,
            s.url("/v1/passports/issue"),
            Some(&k),
            Some(json!({"agent_id": aid})),
        )
        .await;
    let passport = pp["token"].as_str().unwrap().to_owned();
    let user_url = format!("{api_base}/user");

    // A proxied call carries the access token.
    let (st, r) = seen.proxy(&s, &k, &passport, &user_url).await;
    assert_eq!((st, r["status"].as_u64()), (200, Some(200)), "{r}");
    assert_eq!(r["body"]["login"], "octocat");
    assert_eq!(provider.lock().unwrap().token_requests.len(), 1);

    // Expiry: the next token lives 30 s (inside the 60 s margin), so the
    // call after it refreshes before use; the provider rotates the refresh token.
    provider.lock().unwrap().next_expires_in = 30;
    let access_before = provider.lock().unwrap().issued_access.clone();
    // Revoke the current token so the 401 path runs: one refresh, one retry.
    {
        let mut p = provider.lock().unwrap();
        let current = p.issued_access.last().unwrap().clone();
        p.access.remove(&current);
    }
    let (st, r) = seen.proxy(&s, &k, &passport, &user_url).await;
    assert_eq!((st, r["status"].as_u64()), (200, Some(200)), "{r}");
    {
        let p = provider.lock().unwrap();
        let refreshes = p
            .token_requests
            .iter()
            .filter(|(g, _)| g == "refresh_token")
            .count();
        assert_eq!(refreshes, 1, "{:?}", p.token_requests);
        let last_two: Vec<u16> = p.api_calls.iter().rev().take(2).map(|(_, s)| *s).collect();
        assert_eq!(
            last_two,
            [200, 401],
            "the 401 was retried once with the new token"
        );
        assert_eq!(p.issued_access.len(), access_before.len() + 1);
    }
    // That token expires within the margin: this call refreshes first (no 401).
    provider.lock().unwrap().next_expires_in = 3600;
    let calls_before = provider.lock().unwrap().api_calls.len();
    let (st, r) = seen.proxy(&s, &k, &passport, &user_url).await;
    assert_eq!((st, r["status"].as_u64()), (200, Some(200)), "{r}");
    {
        let p = provider.lock().unwrap();
        let refreshes = p
            .token_requests
            .iter()
            .filter(|(g, _)| g == "refresh_token")
            .count();
        assert_eq!(refreshes, 2, "{:?}", p.token_requests);
        assert_eq!(
            p.api_calls.len(),
            calls_before + 1,
            "refreshed before use, no 401"
        );
        assert_eq!(p.api_calls.last().unwrap().1, 200);
        // Every rotated-out refresh token is dead at the provider.
        let old = p.issued_refresh[0].clone();
        assert_eq!(p.refresh.get(&old), Some(&false));
    }
    // The old refresh token is refused by the provider (STACK kept the new one).
    let old_refresh = provider.lock().unwrap().issued_refresh[0].clone();
    let res = client()
        .post(format!("http://127.0.0.1:{port}/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", old_refresh.as_str()),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);

    // Concurrent calls on a rejected token: one refresh, no lost rotation.
    {
        let mut p = provider.lock().unwrap();
        let current = p.issued_access.last().unwrap().clone();
        p.access.remove(&current);
    }
    // (The provider's log includes the test's own refused request above.)
    let log_before = provider.lock().unwrap().token_requests.len();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let url = s.url("/v1/proxy");
        let (k, passport, user_url) = (k.clone(), passport.clone(), user_url.clone());
        tasks.push(tokio::spawn(async move {
            let r = client()
                .post(url)
                .bearer_auth(k)
                .header("x-passport-token", passport)
                .json(&json!({ "service": "github", "method": "GET", "url": user_url }))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }));
    }
    for t in tasks {
        let (st, body) = t.await.unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!((st, v["status"].as_u64()), (200, Some(200)), "{body}");
        seen.0.push(body);
    }
    {
        let p = provider.lock().unwrap();
        let during = &p.token_requests[log_before..];
        assert_eq!(
            during,
            [("refresh_token".to_owned(), "ok".to_owned())],
            "{:?}",
            p.token_requests
        );
    }

    // Verify: ok, then refused (403), then ok again.
    let verify_url = s.url(&format!("/v1/services/{cid}/verify"));
    let (st, v) = seen
        .call(Method::POST, verify_url.clone(), Some(&k), None)
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["ok"].as_bool(), v["status"].as_u64()),
        (Some(true), Some(200)),
        "{v}"
    );
    assert_eq!(v["connection_status"], "active");
    assert!(v["checked_at"].is_string());
    assert_eq!(
        provider.lock().unwrap().api_calls.last().unwrap().0,
        "/user"
    );
    provider.lock().unwrap().api_forbidden = true;
    let (st, v) = seen
        .call(Method::POST, verify_url.clone(), Some(&k), None)
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["ok"].as_bool(), v["status"].as_u64()),
        (Some(false), Some(403)),
        "{v}"
    );
    assert_eq!(v["reason"], "credential_rejected");
    assert_eq!(v["connection_status"], "invalid_credential");
    provider.lock().unwrap().api_forbidden = false;
    // The same through MCP.
    let result = mcp_tool(
        &s,
        &k,
        "stack_verify_connection",
        json!({ "service_connection_id": cid }),
    )
    .await;
    seen.0.push(result.to_string());
    assert_ne!(result["isError"], true, "{result}");
    assert_eq!(result["structuredContent"]["ok"], true, "{result}");
    assert_eq!(
        result["structuredContent"]["connection_status"], "active",
        "{result}"
    );

    // A custom connection whose credential the upstream refuses.
    let (st, custom) = seen
        .call(
            Method::POST,
            s.url("/v1/services/custom"),
            Some(&k),
            Some(json!({"name": "gh-custom", "credential": "not_a_live_token", "base_url": api_base, "verify_path": "/user"})),
        )
        .await;
    assert_eq!(st, 201, "{custom}");
    let custom_id = custom["id"].as_str().unwrap();
    let (st, v) = seen
        .call(
            Method::POST,
            s.url(&format!("/v1/services/{custom_id}/verify")),
            Some(&k),
            None,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["ok"].as_bool(), v["status"].as_u64()),
        (Some(false), Some(401)),
        "{v}"
    );
    assert_eq!(v["connection_status"], "invalid_credential");
    let (st, _) = seen
        .call(
            Method::POST,
            s.url("/v1/services/scon_nope/verify"),
            Some(&k),
            None,
        )
        .await;
    assert_eq!(st, 404);

    // Credential retrieval hands out the current access token only.
    let (st, cred) = call(
        Method::GET,
        s.url(&format!("/v1/credentials/by-connection/{cid}")),
        Some(&k),
        None,
    )
    .await;
    assert_eq!(st, 200, "{cred}");
    {
        let p = provider.lock().unwrap();
        assert_eq!(
            cred["credential"].as_str(),
            p.issued_access.last().map(String::as_str)
        );
        assert!(
            p.issued_refresh
                .iter()
                .all(|r| !cred.to_string().contains(r.as_str()))
        );
    }

    // Refresh refused: needs_reauth, a security event, a clear error.
    {
        let mut p = provider.lock().unwrap();
        p.refresh_refused = true;
        let current = p.issued_access.last().unwrap().clone();
        p.access.remove(&current);
    }
    let (st, e) = seen.proxy(&s, &k, &passport, &user_url).await;
    assert_eq!(st, 409, "{e}");
    assert_eq!(e["error"]["code"], "CONFLICT");
    assert_eq!(
        e["error"]["details"]["reason"], "connection_needs_reauth",
        "{e}"
    );
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("re-authorization"),
        "{e}"
    );
    let calls = provider.lock().unwrap().api_calls.len();
    let (st, e) = seen.proxy(&s, &k, &passport, &user_url).await;
    assert_eq!(st, 409, "{e}");
    assert_eq!(
        provider.lock().unwrap().api_calls.len(),
        calls,
        "nothing is sent"
    );
    let (_, events) = seen
        .call(Method::GET, s.url("/v1/security-events"), Some(&k), None)
        .await;
    let event = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["signal_type"] == "oauth_refresh_failed")
        .unwrap_or_else(|| panic!("{events}"));
    assert_eq!(event["metadata"]["connection_id"], json!(cid), "{event}");
    let (_, v) = seen
        .call(Method::POST, verify_url.clone(), Some(&k), None)
        .await;
    assert_eq!(
        (v["ok"].as_bool(), v["reason"].as_str()),
        (Some(false), Some("needs_reauth")),
        "{v}"
    );
    assert_eq!(v["connection_status"], "needs_reauth");

    // Re-authorization keeps the connection (and so its grants and passports).
    provider.lock().unwrap().refresh_refused = false;
    let mut again = connect.clone();
    again["connection_id"] = json!(cid);
    let (st, pending3) = seen
        .call(
            Method::POST,
            s.url("/v1/services/connect"),
            Some(&k),
            Some(again),
        )
        .await;
    assert_eq!(st, 200, "{pending3}");
    let back3 = authorize_in_browser(pending3["authorization_url"].as_str().unwrap(), port).await;
    let (st, done) = seen.get(&back3).await;
    assert_eq!(st, 200, "{done}");
    assert_eq!(
        (
            done["reauthorized"].as_bool(),
            done["connection_id"].as_str()
        ),
        (Some(true), Some(cid.as_str()))
    );
    assert_eq!(done["status"], "active");
    let (st, r) = seen.proxy(&s, &k, &passport, &user_url).await;
    assert_eq!((st, r["status"].as_u64()), (200, Some(200)), "{r}");

    // Another operator sees neither the OAuth app nor the connection.
    let k2 = data.create_operator("other");
    let (st, apps) = seen
        .call(
            Method::GET,
            s.url("/v1/services/oauth-apps"),
            Some(&k2),
            None,
        )
        .await;
    assert_eq!((st, apps), (200, json!([])));
    let (st, _) = seen
        .call(Method::POST, verify_url.clone(), Some(&k2), None)
        .await;
    assert_eq!(st, 404);
    let (st, _) = seen
        .call(
            Method::DELETE,
            s.url("/v1/services/oauth-apps/svc_github"),
            Some(&k2),
            None,
        )
        .await;
    assert_eq!(st, 404);

    // No token, secret, verifier or code in any response, the audit export
    // or the security events.
    let export = audit_ndjson(&s, &k).await;
    assert!(
        export.contains("service.oauth_refresh"),
        "refreshes are audited"
    );
    assert!(
        export.contains("service.verify"),
        "verifications are audited"
    );
    assert!(export.contains("service.reconnect"));
    seen.0.push(export);
    let (_, events) = seen
        .call(
            Method::GET,
            s.url("/v1/security-events?include_resolved=true"),
            Some(&k),
            None,
        )
        .await;
    seen.0.push(events.to_string());

    // The operator's browser lands on the callback: it gets an HTML page
    // (escaped, no code or state in it), not JSON; the SDK still gets JSON.
    let browser_accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let res = client()
        .get(s.url("/v1/services/oauth/callback?code=abc&state=<script>x</script>"))
        .header("accept", browser_accept)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "{:?}",
        res.headers()
    );
    let page = res.text().await.unwrap();
    assert!(
        page.contains("Connection failed") && page.contains("VALIDATION_ERROR"),
        "{page}"
    );
    assert!(
        !page.contains("<script>") && !page.contains("abc"),
        "{page}"
    );
    let (_, again) = seen
        .call(
            Method::POST,
            s.url("/v1/services/connect"),
            Some(&k),
            Some(connect.clone()),
        )
        .await;
    let back3 = authorize_in_browser(again["authorization_url"].as_str().unwrap(), port).await;
    let res = client()
        .get(&back3)
        .header("accept", browser_accept)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let page = res.text().await.unwrap();
    assert!(
        page.contains("<h1>Connected</h1>") && page.contains("scon_"),
        "{page}"
    );
    for part in ["code", "state"] {
        let v = query_param(&back3, part).unwrap();
        assert!(!page.contains(&v), "the callback page echoes its {part}");
    }
    seen.0.push(page);

    // Disconnecting asks the provider to revoke the refresh token (RFC
    // 7009), then the connection stops working locally.
    let (st, gone) = seen
        .call(
            Method::DELETE,
            s.url(&format!("/v1/services/{cid}/disconnect")),
            Some(&k),
            None,
        )
        .await;
    assert_eq!(st, 200, "{gone}");
    assert_eq!(gone["provider_revocation"], "revoked", "{gone}");
    assert_eq!(
        provider.lock().unwrap().revocations,
        [("refresh_token".to_owned(), true)]
    );
    let (_, audit) = seen
        .call(Method::GET, s.url("/v1/audit?limit=20"), Some(&k), None)
        .await;
    assert!(
        audit
            .to_string()
            .contains("\"provider_revocation\":\"revoked\""),
        "{audit}"
    );

    let mut secrets: Vec<String> = vec![CLIENT_SECRET.to_owned()];
    {
        let p = provider.lock().unwrap();
        secrets.extend(p.issued_access.iter().cloned());
        secrets.extend(p.issued_refresh.iter().cloned());
        secrets.extend(p.verifiers.iter().cloned());
    }
    secrets.push(query_param(&back, "code").unwrap());
    for text in &seen.0 {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a secret leaked into {text}"
            );
        }
    }
    let (_, v) = call(Method::GET, s.url("/v1/audit/verify-chain"), Some(&k), None).await;
    assert_eq!(v["ok"], true, "{v}");
    s.stop();
}

both_backends!(
    oauth_connect_refresh_and_verify,
    oauth_connect_refresh_and_verify_body
);

/// Two nodes on one PostgreSQL database: the callback lands on the node
/// that did not start the flow, and concurrent calls on both nodes after
/// the upstream refused the token refresh it exactly once (the lease on
/// the connection row serialises refreshes across nodes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_refresh_once() {
    let Some(data) = Data::new("postgres").await else {
        eprintln!("STACK_TEST_POSTGRES_URL not set: skipping the two-node OAuth test");
        return;
    };
    let (port, provider) = start_provider().await;
    let master: [u8; 32] = std::array::from_fn(|i| u8::try_from(i).unwrap().wrapping_mul(7) ^ 0x5a);
    let mut env = data.env.clone();
    env.push(("STACK_MASTER_KEY".into(), URL_SAFE_NO_PAD.encode(master)));
    env.push(("STACK_PROXY_ALLOW_PRIVATE".into(), "127.0.0.0/8".into()));
    env.push(("STACK_PROXY_ALLOW_HTTP".into(), "1".into()));
    env.push((
        "STACK_PROXY_RESOLVE".into(),
        "oauth.provider.test=127.0.0.1,api.github.com=127.0.0.1".into(),
    ));
    let a = Server::start(env.clone());
    let k = a.key();
    let dir_b = tempfile::tempdir().unwrap();
    let env_b: Vec<(String, String)> = env
        .iter()
        .map(|(n, v)| {
            if n == "STACK_DATA_DIR" {
                (n.clone(), dir_b.path().display().to_string())
            } else {
                (n.clone(), v.clone())
            }
        })
        .collect();
    let b = Server::start(env_b);
    assert!(b.key.is_none());
    let api_base = format!("http://api.github.com:{port}");
    let provider_base = format!("http://oauth.provider.test:{port}");

    let (st, app) = call(
        Method::POST,
        a.url("/v1/services/oauth-apps"),
        Some(&k),
        Some(json!({
            "service_id": "github", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
            "authorize_url": format!("{provider_base}/authorize"),
            "token_url": format!("{provider_base}/token"),
            "api_base_url": api_base,
        })),
    )
    .await;
    assert_eq!(st, 201, "{app}");
    let (st, pending) = call(
        Method::POST,
        a.url("/v1/services/connect"),
        Some(&k),
        Some(json!({ "service_id": "github", "scopes": ["repo", "read:org"] })),
    )
    .await;
    assert_eq!(st, 200, "{pending}");
    let back = authorize_in_browser(pending["authorization_url"].as_str().unwrap(), port).await;
    // The browser comes back to node B.
    let back = back.replace(&a.base, &b.base);
    let res = client().get(&back).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let done: Value = res.json().await.unwrap();
    let cid = done["connection_id"].as_str().unwrap().to_owned();

    let (_, agent) = call(
        Method::POST,
        a.url("/v1/agents/register"),
        Some(&k),
        Some(json!({"name": "twin", "accountability_mode": "standard"})),
    )
    .await;
    let aid = agent["id"].as_str().unwrap().to_owned();
    let (st, _) = call(
        Method::POST,
        a.url("/v1/services/grant"),
        Some(&k),
        Some(json!({"agent_id": aid, "service_connection_id": cid, "scopes": ["repo"]})),
    )
    .await;
    assert_eq!(st, 201);
    let (_, pp) = call(
        Method::POST,
        a.url("/v1/passports/issue"),
        Some(&k),
        Some(json!({"agent_id": aid})),
    )
    .await;
    let passport = pp["token"].as_str().unwrap().to_owned();

    for round in 0..3 {
        {
            let mut p = provider.lock().unwrap();
            let current = p.issued_access.last().unwrap().clone();
            p.access.remove(&current);
        }
        let log_before = provider.lock().unwrap().token_requests.len();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let url = if i % 2 == 0 {
                a.url("/v1/proxy")
            } else {
                b.url("/v1/proxy")
            };
            let (k, passport) = (k.clone(), passport.clone());
            let target = format!("{api_base}/user");
            tasks.push(tokio::spawn(async move {
                let r = client()
                    .post(url)
                    .bearer_auth(k)
                    .header("x-passport-token", passport)
                    .json(&json!({ "service": "github", "method": "GET", "url": target }))
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            }));
        }
        for t in tasks {
            let (st, body) = t.await.unwrap();
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(
                (st, v["status"].as_u64()),
                (200, Some(200)),
                "round {round}: {body}"
            );
        }
        let p = provider.lock().unwrap();
        assert_eq!(
            &p.token_requests[log_before..],
            [("refresh_token".to_owned(), "ok".to_owned())],
            "round {round}: {:?}",
            p.token_requests
        );
    }
    drop(a);
    drop(b);
    data.cleanup().await;
}
