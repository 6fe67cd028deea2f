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

use reqwest::Method;
use serde_json::{Value, json};
use support::*;

const SECRET: &str = "upstream_SECRET_token_0123456789";

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
    let s = start_proxy_server(data, &["api.upstream.test", "other.upstream.test"]);
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
        let seen = seen.requests();
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
    assert_eq!(seen.len(), 1, "denied calls never reach the upstream");

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
    assert_eq!(seen.len(), 3);

    // At most once: an unchanged retry replays, a changed one is refused.
    let id = "op_retry_0123456789abcdefgh";
    let post = json!({"service": "custom", "method": "POST", "url": format!("{base}/v1/refunds"), "body": {"amount": 10}});
    let (st1, r1) = proxy(&s, &k, &token, post.clone(), Some(id)).await;
    let (st2, r2) = proxy(&s, &k, &token, post.clone(), Some(id)).await;
    assert_eq!((st1, st2), (200, 200));
    assert_eq!(r1, r2);
    assert_eq!(seen.len(), 4, "the retry was not delivered again");
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

    // A client that gives up while the upstream is still answering: the
    // call went out, so it is still recorded (entry and meter unit).
    let gave_up = client()
        .post(s.url("/v1/proxy"))
        .bearer_auth(&k)
        .header("x-passport-token", &token)
        .timeout(std::time::Duration::from_millis(200))
        .json(&json!({"service": "custom", "url": format!("{base}/v1/slow")}))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client was meant to time out");
    let mut used = Value::Null;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let (_, usage) = call(Method::GET, s.url("/v1/proxy/usage"), Some(&k), None).await;
        used = usage["used"].clone();
        if used == 5 {
            break;
        }
    }
    assert_eq!(used, 5, "the abandoned call was not recorded");
    assert_eq!(seen.len(), 5);

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
    assert_eq!(seen.len(), 5);

    // Every decision is audited, allowed or denied; the secret is in none.
    let log = audit_ndjson(&s, &k).await;
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
        5
    );
    assert!(
        proxied
            .iter()
            .any(|e| e["details"]["upstream_status"] == 200 && e["outcome"] == "success"),
        "{proxied:?}"
    );
    let (_, v) = call(Method::GET, s.url("/v1/audit/verify-chain"), Some(&k), None).await;
    assert_eq!(v["ok"], true);
    s.stop();
}
both_backends!(
    the_proxy_injects_checks_and_audits,
    the_proxy_injects_checks_and_audits_body
);

/// What the proxy keeps of grants and connections between calls never
/// outlives a change on the same node: a new grant applies to the next
/// call, a disconnect refuses it.
async fn changes_to_grants_and_connections_apply_at_once_body(data: &Data) {
    let (port, seen) = start_upstream().await;
    let s = start_proxy_server(data, &["api.upstream.test"]);
    let k = s.key();
    let base = format!("http://api.upstream.test:{port}");
    let (conn, tokens) = scanned_readers(&s, &k, &base, &["off"]).await;
    let cid = conn["id"].as_str().unwrap().to_owned();
    let token = tokens[0].clone();
    let (_, agents) = call(Method::GET, s.url("/v1/agents"), Some(&k), None).await;
    let aid = agents[0]["id"].as_str().unwrap().to_owned();
    let get = json!({"service": "custom", "method": "GET", "url": format!("{base}/v1/orders")});
    for _ in 0..2 {
        let (st, r) = proxy(&s, &k, &token, get.clone(), None).await;
        assert_eq!((st, &r["status"]), (200, &json!(200)), "{r}");
        assert!(r.get("scan").is_none(), "{r}");
    }

    // A second grant on the connection that scans responses: the next call is scanned.
    let (st, g) = call(
        Method::POST,
        s.url("/v1/services/grant"),
        Some(&k),
        Some(json!({"agent_id": aid, "service_connection_id": cid, "scopes": ["read"], "response_scan": "annotate"})),
    )
    .await;
    assert_eq!(st, 201, "{g}");
    let (st, r) = proxy(&s, &k, &token, get.clone(), None).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["scan"]["verdict"], "clean", "{r}");

    // Disconnected: the next call is refused and nothing more goes upstream.
    let (st, _) = call(
        Method::DELETE,
        s.url(&format!("/v1/services/{cid}/disconnect")),
        Some(&k),
        None,
    )
    .await;
    assert_eq!(st, 200);
    let (st, r) = proxy(&s, &k, &token, get, None).await;
    assert_eq!(
        (st, r["error"]["code"].as_str()),
        (403, Some("SCOPE_DENIED")),
        "{r}"
    );
    assert_eq!(seen.len(), 3);
    s.stop();
}
both_backends!(
    changes_to_grants_and_connections_apply_at_once,
    changes_to_grants_and_connections_apply_at_once_body
);

/// A custom connection to `base` and, per response-scan mode, an agent
/// granted read and write on it in that mode, with a passport: the
/// connection and the passports, in the order of `modes`.
async fn scanned_readers(s: &Server, k: &str, base: &str, modes: &[&str]) -> (Value, Vec<String>) {
    let (_, conn) = call(
        Method::POST,
        s.url("/v1/services/custom"),
        Some(k),
        Some(json!({"name": "mail", "credential": SECRET, "base_url": base})),
    )
    .await;
    let mut tokens = Vec::new();
    for mode in modes {
        let (_, agent) = call(
            Method::POST,
            s.url("/v1/agents/register"),
            Some(k),
            Some(json!({"name": format!("reader-{mode}"), "accountability_mode": "standard"})),
        )
        .await;
        let (st, g) = call(
            Method::POST,
            s.url("/v1/services/grant"),
            Some(k),
            Some(
                json!({"agent_id": agent["id"], "service_connection_id": conn["id"],
                "scopes": ["read", "write"], "response_scan": mode}),
            ),
        )
        .await;
        assert_eq!((st, g["response_scan"].as_str()), (201, Some(*mode)), "{g}");
        let (_, pp) = call(
            Method::POST,
            s.url("/v1/passports/issue"),
            Some(k),
            Some(json!({"agent_id": agent["id"]})),
        )
        .await;
        tokens.push(pp["token"].as_str().unwrap().to_owned());
    }
    (conn, tokens)
}

/// Response scanning per grant: `annotate` adds the verdict, `block` withholds
/// a critical answer (also on a retry) and raises a security event.
async fn responses_are_scanned_per_grant_body(data: &Data) {
    let (port, seen) = start_upstream().await;
    let s = start_proxy_server(data, &["api.upstream.test"]);
    let k = s.key();
    let base = format!("http://api.upstream.test:{port}");
    let (conn, tokens) = scanned_readers(&s, &k, &base, &["off", "annotate", "block"]).await;
    let (st, bad) = call(
        Method::POST,
        s.url("/v1/services/grant"),
        Some(&k),
        Some(
            json!({"agent_id": "agt_x", "service_connection_id": conn["id"],
            "scopes": ["read"], "response_scan": "sometimes"}),
        ),
    )
    .await;
    assert_eq!(st, 400, "{bad}");
    let poisoned = json!({"service": "custom", "url": format!("{base}/v1/poisoned")});
    let clean = json!({"service": "custom", "url": format!("{base}/v1/orders")});

    // off: the body passes, no verdict.
    let (st, r) = proxy(&s, &k, &tokens[0], poisoned.clone(), None).await;
    assert_eq!(st, 200, "{r}");
    assert!(r.get("scan").is_none(), "{r}");
    assert!(
        r["body"]["text"]
            .as_str()
            .unwrap()
            .contains("Ignore all previous")
    );

    // annotate: the body passes with the verdict beside it.
    let (st, r) = proxy(&s, &k, &tokens[1], poisoned.clone(), None).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["scan"]["verdict"], "critical", "{r}");
    assert!(!r["scan"]["matches"].as_array().unwrap().is_empty());
    assert!(
        r["scan"]["security_event_id"]
            .as_str()
            .unwrap()
            .starts_with("sev_")
    );
    let (_, r) = proxy(&s, &k, &tokens[1], clean.clone(), None).await;
    assert_eq!(r["scan"]["verdict"], "clean", "{r}");

    // block: a critical answer is withheld, also on a retry; clean ones pass.
    let post = json!({"service": "custom", "method": "POST", "url": format!("{base}/v1/poisoned"), "body": {"q": 1}});
    let id = "op_blocked_0123456789abcdefg";
    let before = seen.len();
    for _ in 0..2 {
        let (st, r) = proxy(&s, &k, &tokens[2], post.clone(), Some(id)).await;
        assert_eq!(
            (st, r["error"]["code"].as_str()),
            (502, Some("RESPONSE_BLOCKED")),
            "{r}"
        );
        assert!(
            !r.to_string().contains("id_rsa"),
            "the withheld body leaked: {r}"
        );
        assert_eq!(r["error"]["details"]["scan"]["verdict"], "critical", "{r}");
    }
    assert_eq!(seen.len(), before + 1, "the retry was not sent again");
    let (st, r) = proxy(&s, &k, &tokens[2], clean, None).await;
    assert_eq!(
        (st, r["scan"]["verdict"].as_str()),
        (200, Some("clean")),
        "{r}"
    );

    // Security events: one for annotate, one for block.
    let (_, events) = call(Method::GET, s.url("/v1/security-events"), Some(&k), None).await;
    let text = events.to_string();
    assert!(
        text.matches("proxy_response").count() >= 2
            || text.matches("prompt_injection").count() >= 2,
        "{events}"
    );
    let (_, v) = call(Method::GET, s.url("/v1/audit/verify-chain"), Some(&k), None).await;
    assert_eq!(v["ok"], true);
    s.stop();
}
both_backends!(
    responses_are_scanned_per_grant,
    responses_are_scanned_per_grant_body
);

/// A response scan that fails (the operator's scanner cannot be loaded, or the
/// security event of a critical verdict cannot be stored) still leaves the
/// call recorded, since it went out: block mode fails closed, annotate mode
/// passes the answer with what happened. Faults are injected in the real
/// database under the running server.
async fn a_failed_response_scan_still_records_the_call_body(data: &Data) {
    let (port, seen) = start_upstream().await;
    let s = start_proxy_server(data, &["api.upstream.test"]);
    let k = s.key();
    let base = format!("http://api.upstream.test:{port}");
    let (_, tokens) = scanned_readers(&s, &k, &base, &["annotate", "block"]).await;
    let poisoned = json!({"service": "custom", "url": format!("{base}/v1/poisoned")});

    // 1. No scanner: its configuration table is gone.
    let moved = "ALTER TABLE detector_configs RENAME TO detector_configs_moved";
    data.execute_sql(moved, moved).await;
    let (st, r) = proxy(&s, &k, &tokens[0], poisoned.clone(), None).await;
    assert_eq!(st, 200, "{r}");
    assert!(r["scan"]["verdict"].is_null(), "{r}");
    assert_eq!(r["scan"]["error"]["code"], "INTERNAL_ERROR", "{r}");
    assert!(!r.to_string().contains("detector_configs"), "{r}");
    // Block mode fails closed, also on a retry under the same request id
    // (which is not sent again).
    let post = json!({"service": "custom", "method": "POST",
        "url": format!("{base}/v1/poisoned"), "body": {"q": 1}});
    for _ in 0..2 {
        let (st, r) = proxy(
            &s,
            &k,
            &tokens[1],
            post.clone(),
            Some("op_unscanned_0123456789abc"),
        )
        .await;
        assert_eq!(
            (st, r["error"]["code"].as_str()),
            (502, Some("RESPONSE_BLOCKED")),
            "{r}"
        );
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap()
                .contains("could not run"),
            "{r}"
        );
        assert!(
            !r.to_string().contains("id_rsa"),
            "the unscanned body leaked: {r}"
        );
    }
    assert_eq!(seen.len(), 2, "the retry was sent again");
    let back = "ALTER TABLE detector_configs_moved RENAME TO detector_configs";
    data.execute_sql(back, back).await;

    // 2. A verdict whose security event cannot be stored.
    data.execute_sql(
        "CREATE TRIGGER refuse_events BEFORE INSERT ON security_events \
         BEGIN SELECT RAISE(ABORT, 'injected fault'); END",
        "CREATE FUNCTION refuse_events() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'injected fault'; END $$; \
         CREATE TRIGGER refuse_events BEFORE INSERT ON security_events \
         FOR EACH ROW EXECUTE FUNCTION refuse_events()",
    )
    .await;
    let (st, r) = proxy(&s, &k, &tokens[0], poisoned.clone(), None).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["scan"]["verdict"], "critical", "{r}");
    assert!(r["scan"]["security_event_error"].is_string(), "{r}");
    assert!(r["scan"].get("security_event_id").is_none(), "{r}");
    let (st, r) = proxy(&s, &k, &tokens[1], poisoned.clone(), None).await;
    assert_eq!(
        (
            st,
            r["error"]["code"].as_str(),
            r["error"]["details"]["scan"]["verdict"].as_str()
        ),
        (502, Some("RESPONSE_BLOCKED"), Some("critical")),
        "{r}"
    );

    // Four calls went out; all four are metered and audited with their scan.
    assert_eq!(seen.len(), 4);
    let (_, usage) = call(Method::GET, s.url("/v1/proxy/usage"), Some(&k), None).await;
    assert_eq!(usage["used"], 4, "{usage}");
    let log = audit_ndjson(&s, &k).await;
    let proxied: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["action"] == "credential.proxy")
        .collect();
    let outcomes: Vec<(&str, &Value)> = proxied
        .iter()
        .map(|e| {
            (
                e["outcome"].as_str().unwrap(),
                &e["details"]["response_scan"]["verdict"],
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("success", &Value::Null),
            ("blocked", &Value::Null),
            ("success", &json!("critical")),
            ("blocked", &json!("critical")),
        ],
        "{proxied:?}"
    );
    let (_, v) = call(Method::GET, s.url("/v1/audit/verify-chain"), Some(&k), None).await;
    assert_eq!(v["ok"], true);
    s.stop();
}
both_backends!(
    a_failed_response_scan_still_records_the_call,
    a_failed_response_scan_still_records_the_call_body
);
