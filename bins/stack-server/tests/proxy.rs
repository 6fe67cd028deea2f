//! End-to-end tests of the credential-injecting proxy (issue 4): the real
//! binary, a local upstream HTTP server that records what it receives, on
//! SQLite and (when configured) PostgreSQL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

mod support;

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method as HttpMethod, Uri};
use axum::response::IntoResponse;
use reqwest::Method;
use serde_json::{Value, json};
use support::*;

const SECRET: &str = "upstream_SECRET_token_0123456789";

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Value>>>);

/// Records method, path, query, Authorization and body; answers without
/// echoing the credential.
async fn upstream(
    State(seen): State<Seen>,
    method: HttpMethod,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    seen.0.lock().unwrap().push(json!({
        "method": method.as_str(), "path": uri.path(), "query": uri.query(),
        "authorization": auth, "body": String::from_utf8_lossy(&body),
    }));
    if uri.path() == "/v1/redirect" {
        return (
            axum::http::StatusCode::FOUND,
            [("location", "https://evil.example/steal")],
            "moved",
        )
            .into_response();
    }
    if uri.path() == "/v1/fail" {
        return (
            axum::http::StatusCode::BAD_GATEWAY,
            axum::Json(json!({"error": "upstream broke"})),
        )
            .into_response();
    }
    axum::Json(json!({ "ok": true, "path": uri.path(), "method": method.as_str() })).into_response()
}

async fn start_upstream() -> (u16, Seen) {
    let seen = Seen::default();
    let app = axum::Router::new()
        .fallback(upstream)
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, seen)
}

async fn proxy(
    s: &Server,
    key: &str,
    passport: &str,
    body: Value,
    request_id: Option<&str>,
) -> (u16, Value) {
    let mut req = client()
        .post(s.url("/v1/proxy"))
        .bearer_auth(key)
        .header("x-passport-token", passport)
        .json(&body);
    if let Some(id) = request_id {
        req = req.header("x-stack-authority-request-id", id);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn the_proxy_injects_checks_and_audits_body(data: &Data) {
    let (port, seen) = start_upstream().await;
    let mut env = data.env.clone();
    env.push(("STACK_PROXY_ALLOW_PRIVATE".into(), "127.0.0.0/8".into()));
    env.push(("STACK_PROXY_ALLOW_HTTP".into(), "1".into()));
    env.push((
        "STACK_PROXY_RESOLVE".into(),
        "api.upstream.test=127.0.0.1,other.upstream.test=127.0.0.1".into(),
    ));
    let s = Server::start(env);
    let k = s.key();
    let base = format!("http://api.upstream.test:{port}");
    let (st, conn) = call(
        Method::POST,
        s.url("/v1/services/custom"),
        Some(&k),
        Some(json!({"name": "orders", "credential": SECRET, "base_url": base})),
    )
    .await;
    assert_eq!(st, 201, "{conn}");
    let cid = conn["id"].as_str().unwrap().to_owned();
    let (_, agent) = call(
        Method::POST,
        s.url("/v1/agents/register"),
        Some(&k),
        Some(json!({"name": "worker", "accountability_mode": "standard"})),
    )
    .await;
    let aid = agent["id"].as_str().unwrap().to_owned();
    let (st, g) = call(
        Method::POST,
        s.url("/v1/services/grant"),
        Some(&k),
        Some(json!({
        "agent_id": aid, "service_connection_id": cid, "scopes": ["read", "write"],
        "constraints": [
            {"path": "path", "op": "starts_with", "value": "/v1/"},
            {"path": "method", "op": "in", "value": ["GET", "POST"]},
            {"path": "body.amount", "op": "not_in", "value": [500, 1000]}
        ]})),
    )
    .await;
    assert_eq!(st, 201, "{g}");
    let (_, pp) = call(
        Method::POST,
        s.url("/v1/passports/issue"),
        Some(&k),
        Some(json!({"agent_id": aid})),
    )
    .await;
    let token = pp["token"].as_str().unwrap().to_owned();

    // Allowed: the credential arrives upstream, the caller's own Authorization is replaced.
    let (st, r) = proxy(
        &s,
        &k,
        &token,
        json!({"service": "custom", "method": "get", "url": format!("{base}/v1/orders"),
        "query": {"limit": "5"}, "headers": {"Authorization": "Bearer forged", "X-Trace": "t1"}}),
        None,
    )
    .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["status"], 200);
    assert_eq!(r["body"]["path"], "/v1/orders");
    assert!(!r.to_string().contains(SECRET));
    {
        let seen = seen.0.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0]["authorization"], format!("Bearer {SECRET}"));
        assert_eq!(seen[0]["query"], "limit=5");
    }

    // Denied by constraints, scope and URL policy; nothing reaches upstream.
    let denials = [
        (
            json!({"service": "custom", "method": "DELETE", "url": format!("{base}/v1/orders/1")}),
            "CONSTRAINT_VIOLATION",
        ),
        (
            json!({"service": "custom", "method": "GET", "url": format!("{base}/admin")}),
            "CONSTRAINT_VIOLATION",
        ),
        (
            json!({"service": "custom", "method": "POST", "url": format!("{base}/v1/refunds"), "body": {"amount": 500}}),
            "CONSTRAINT_VIOLATION",
        ),
        (
            json!({"service": "custom", "method": "GET", "url": format!("http://other.upstream.test:{port}/v1/orders")}),
            "SCOPE_DENIED",
        ),
        (
            json!({"service": "custom", "method": "GET", "url": format!("http://user@api.upstream.test:{port}/v1/orders")}),
            "SCOPE_DENIED",
        ),
        (
            json!({"service": "custom", "method": "GET", "url": format!("http://127.0.0.1:{port}/v1/orders")}),
            "SCOPE_DENIED",
        ),
        (
            json!({"service": "custom", "method": "GET", "url": format!("{base}/v1/../admin")}),
            "SCOPE_DENIED",
        ),
        (
            json!({"service": "custom", "method": "GET", "url": format!("{base}/v1/%2e%2e/admin")}),
            "SCOPE_DENIED",
        ),
        (
            json!({"service": "custom", "method": "GET", "url": format!("http://2130706433:{port}/v1/orders")}),
            "SCOPE_DENIED",
        ),
        (
            json!({"service": "slack", "method": "GET", "url": "https://slack.com/api/auth.test"}),
            "SCOPE_DENIED",
        ),
    ];
    for (body, code) in denials {
        let (st, r) = proxy(&s, &k, &token, body.clone(), None).await;
        assert_eq!(r["error"]["code"], code, "{body} -> {st} {r}");
        assert!(st == 403, "{body} -> {st}");
    }
    assert_eq!(
        seen.0.lock().unwrap().len(),
        1,
        "denied calls never reach the upstream"
    );

    // Upstream errors and redirects are data; the redirect is not followed.
    let (st, r) = proxy(
        &s,
        &k,
        &token,
        json!({"service": "custom", "url": format!("{base}/v1/fail")}),
        None,
    )
    .await;
    assert_eq!((st, r["status"].as_i64()), (200, Some(502)), "{r}");
    let (_, r) = proxy(
        &s,
        &k,
        &token,
        json!({"service": "custom", "url": format!("{base}/v1/redirect")}),
        None,
    )
    .await;
    assert_eq!(r["status"], 302);
    assert_eq!(seen.0.lock().unwrap().len(), 3);

    // At most once: an unchanged retry replays, a changed one is refused.
    let id = "op_retry_0123456789abcdefgh";
    let post = json!({"service": "custom", "method": "POST", "url": format!("{base}/v1/refunds"), "body": {"amount": 10}});
    let (st1, r1) = proxy(&s, &k, &token, post.clone(), Some(id)).await;
    let (st2, r2) = proxy(&s, &k, &token, post.clone(), Some(id)).await;
    assert_eq!((st1, st2), (200, 200));
    assert_eq!(r1, r2);
    assert_eq!(
        seen.0.lock().unwrap().len(),
        4,
        "the retry was not delivered again"
    );
    let changed = json!({"service": "custom", "method": "POST", "url": format!("{base}/v1/refunds"), "body": {"amount": 11}});
    let (st, r) = proxy(&s, &k, &token, changed, Some(id)).await;
    assert_eq!(
        (st, r["error"]["code"].as_str()),
        (409, Some("CONFLICT")),
        "{r}"
    );

    // Usage counts the calls that went out.
    let (_, usage) = call(Method::GET, s.url("/v1/proxy/usage"), Some(&k), None).await;
    assert_eq!(usage["used"], 4, "{usage}");

    // A passport revoked between two calls is refused at once.
    let (_, _) = call(
        Method::POST,
        s.url("/v1/passports/revoke"),
        Some(&k),
        Some(json!({"jti": pp["jti"], "reason": "test"})),
    )
    .await;
    let (st, r) = proxy(
        &s,
        &k,
        &token,
        json!({"service": "custom", "url": format!("{base}/v1/orders")}),
        None,
    )
    .await;
    assert_eq!(
        (st, r["error"]["code"].as_str()),
        (401, Some("PASSPORT_REVOKED")),
        "{r}"
    );
    assert_eq!(seen.0.lock().unwrap().len(), 4);

    // Every decision is audited, allowed or denied; the secret is in none.
    let log = client()
        .get(s.url("/v1/audit/export?format=ndjson"))
        .bearer_auth(&k)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!log.contains(SECRET));
    let entries: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let proxied: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "credential.proxy")
        .collect();
    assert_eq!(
        proxied.iter().filter(|e| e["outcome"] == "blocked").count(),
        10
    );
    assert_eq!(
        proxied.iter().filter(|e| e["outcome"] == "success").count(),
        4
    );
    let (_, v) = call(Method::GET, s.url("/v1/audit/verify-chain"), Some(&k), None).await;
    assert_eq!(v["ok"], true);
    s.stop();
}
both_backends!(
    the_proxy_injects_checks_and_audits,
    the_proxy_injects_checks_and_audits_body
);
