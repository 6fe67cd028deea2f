//! End-to-end tests of intent simulation, submission and approval, and of
//! the proxy's enforced-mode gate (issue 4): the real binary, a local
//! upstream that records what reaches it, on SQLite and (when configured)
//! PostgreSQL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

mod support;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Method;
use serde_json::{Value, json};
use support::*;

const SECRET: &str = "upstream_SECRET_intents_0123456789";

/// One operator's set-up: a custom connection, an enforced agent with a
/// grant, and a passport.
struct Fixture {
    key: String,
    base: String,
    agent: String,
    token: String,
    jti: String,
}

async fn post(s: &Server, key: &str, path: &str, body: Value) -> (u16, Value) {
    call(Method::POST, s.url(path), Some(key), Some(body)).await
}

async fn get(s: &Server, key: &str, path: &str) -> (u16, Value) {
    call(Method::GET, s.url(path), Some(key), None).await
}

async fn issue(s: &Server, key: &str, agent: &str) -> (String, String) {
    let (st, pp) = post(
        s,
        key,
        "/v1/passports/issue",
        json!({"agent_id": agent, "intent": {"summary": "refund orders", "services": ["custom"]}}),
    )
    .await;
    assert_eq!(st, 201, "{pp}");
    assert_eq!(pp["accountability"], "enforced", "{pp}");
    (
        pp["token"].as_str().unwrap().to_owned(),
        pp["jti"].as_str().unwrap().to_owned(),
    )
}

async fn fixture(s: &Server, key: &str, port: u16) -> Fixture {
    let base = format!("http://api.upstream.test:{port}");
    let (st, conn) = post(
        s,
        key,
        "/v1/services/custom",
        json!({"name": "orders", "credential": SECRET, "base_url": base}),
    )
    .await;
    assert_eq!(st, 201, "{conn}");
    let (st, agent) = post(
        s,
        key,
        "/v1/agents/register",
        json!({"name": "refunder", "accountability_mode": "enforced"}),
    )
    .await;
    assert_eq!(st, 201, "{agent}");
    let agent = agent["id"].as_str().unwrap().to_owned();
    let (st, g) = post(
        s,
        key,
        "/v1/services/grant",
        json!({
            "agent_id": agent, "service_connection_id": conn["id"], "scopes": ["read", "write"],
            "constraints": [{"path": "body.amount", "op": "not_in", "value": [500]}]
        }),
    )
    .await;
    assert_eq!(st, 201, "{g}");
    let (token, jti) = issue(s, key, &agent).await;
    Fixture {
        key: key.to_owned(),
        base,
        agent,
        token,
        jti,
    }
}

async fn proxy(s: &Server, f: &Fixture, body: &Value, approval: Option<&str>) -> (u16, Value) {
    proxy_as(s, f, &f.token, body, approval).await
}

async fn proxy_as(
    s: &Server,
    f: &Fixture,
    token: &str,
    body: &Value,
    approval: Option<&str>,
) -> (u16, Value) {
    let mut req = client()
        .post(s.url("/v1/proxy"))
        .bearer_auth(&f.key)
        .header("x-passport-token", token)
        .json(body);
    if let Some(a) = approval {
        req = req.header("x-intent-approval-id", a);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn intent_call(
    s: &Server,
    f: &Fixture,
    path: &str,
    token: &str,
    body: Value,
) -> (u16, Value) {
    let r = client()
        .post(s.url(path))
        .bearer_auth(&f.key)
        .header("x-passport-token", token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The intent for `POST {base}/v1/refunds` with `body`.
fn refund_intent(f: &Fixture, amount: i64) -> Value {
    json!({
        "type": "intent", "intent_type": "proxy_request", "agent_id": f.agent,
        "target": {"service": "custom", "url": format!("{}/v1/refunds", f.base)},
        "action": "POST",
        "parameters": {"order": "o-1", "amount": amount},
        "reason": "customer asked", "estimated_cost": {"usd": 0},
    })
}

fn refund_call(f: &Fixture, amount: i64) -> Value {
    // Same body, other key order: the binding is canonical.
    json!({"service": "custom", "method": "post", "url": format!("{}/v1/refunds", f.base),
           "body": {"amount": amount, "order": "o-1"}})
}

async fn submit(s: &Server, f: &Fixture, intent: Value, ttl: Option<i64>) -> Value {
    let mut body = json!({ "intent": intent });
    if let Some(t) = ttl {
        body["expires_in_seconds"] = json!(t);
    }
    let (st, v) = intent_call(s, f, "/v1/intents/submit", &f.token, body).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["status"], "pending", "{v}");
    v
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// Checks a compact JWS against the server's JWKS.
async fn verify_against_jwks(s: &Server, jws: &str) -> (Value, Value) {
    let parts: Vec<&str> = jws.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let (_, jwks) = call(Method::GET, s.url("/v1/.well-known/jwks.json"), None, None).await;
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the claim's kid is in the JWKS");
    let x: [u8; 32] = URL_SAFE_NO_PAD
        .decode(jwk["x"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    let input = format!("{}.{}", parts[0], parts[1]);
    assert!(
        stack_crypto::ed25519::verify(&x, input.as_bytes(), &sig),
        "the simulation claim's signature verifies with the JWKS key"
    );
    (header, payload)
}

async fn approvals_bind_and_gate_enforced_calls_body(data: &Data) {
    let (port, seen) = start_upstream().await;
    let s = start_proxy_server(data, &["api.upstream.test"]);
    let f = fixture(&s, &s.key(), port).await;

    // Enforced passport, no approval: refused before anything goes out.
    let (st, r) = proxy(&s, &f, &refund_call(&f, 10), None).await;
    assert_eq!((st, code(&r)), (403, "INTENT_APPROVAL_REQUIRED"), "{r}");
    assert_eq!(seen.len(), 0);

    // Simulation: allowed, with a claim signed by the passport key.
    let (st, sim) = intent_call(
        &s,
        &f,
        "/v1/intents/simulate",
        &f.token,
        json!({"intent": refund_intent(&f, 10)}),
    )
    .await;
    assert_eq!(st, 200, "{sim}");
    assert_eq!(sim["allowed"], true, "{sim}");
    assert_eq!(sim["denial_reasons"], json!([]));
    assert_eq!(sim["predicted_detector_fires"], json!([]));
    assert_eq!(sim["simulated_cost"]["proxy_calls"], 1);
    assert_eq!(sim["diagnostics"]["requires_approval"], true);
    assert!(sim["claim_id"].as_str().unwrap().starts_with("sim_"));
    assert!(sim["simulated_at"].as_str().unwrap().ends_with('Z'));
    let (header, claim) = verify_against_jwks(&s, sim["claim"].as_str().unwrap()).await;
    assert_eq!(header["typ"], "intent-simulation+jwt");
    assert_eq!(claim["type"], "intent_simulation");
    assert_eq!(claim["jti"], sim["claim_id"]);
    assert_eq!(claim["passport_jti"], f.jti.as_str());
    assert_eq!(claim["allowed"], true);
    // The claim is not a passport.
    let (_, v) = call(
        Method::POST,
        s.url("/v1/passports/verify"),
        None,
        Some(json!({"token": sim["claim"]})),
    )
    .await;
    assert_ne!(v["valid"], true, "{v}");

    // A call outside the grant's constraints simulates as denied, with reasons.
    let (_, denied) = intent_call(
        &s,
        &f,
        "/v1/intents/simulate",
        &f.token,
        json!({"intent": refund_intent(&f, 500), "persist": false}),
    )
    .await;
    assert_eq!(denied["allowed"], false, "{denied}");
    assert_eq!(
        denied["denial_reasons"][0]["code"], "CONSTRAINT_VIOLATION",
        "{denied}"
    );
    assert_eq!(
        denied["predicted_detector_fires"][0]["detector"],
        "credential_outside_scope"
    );
    assert!(denied["claim_id"].is_null());
    // A malformed intent is a validation error, not a denial.
    let (st, v) = intent_call(
        &s,
        &f,
        "/v1/intents/simulate",
        &f.token,
        json!({"intent": {"action": "POST"}}),
    )
    .await;
    assert_eq!((st, code(&v)), (400, "VALIDATION_ERROR"), "{v}");
    // The passport header is required.
    let (st, v) = post(
        &s,
        &f.key,
        "/v1/intents/simulate",
        json!({"intent": refund_intent(&f, 10)}),
    )
    .await;
    assert_eq!(st, 401, "{v}");

    // Submit → pending, visible in the queue (the static path beats {id}).
    let sub = submit(&s, &f, refund_intent(&f, 10), None).await;
    let id = sub["approval_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ia_"), "{sub}");
    assert!(sub["intent_claim_id"].as_str().unwrap().starts_with("pc_"));
    assert!(
        sub["simulated_claim_id"]
            .as_str()
            .unwrap()
            .starts_with("sim_")
    );
    assert_eq!(sub["simulation"]["allowed"], true);
    let (st, row) = get(&s, &f.key, &format!("/v1/intents/{id}")).await;
    assert_eq!((st, row["id"].as_str()), (200, Some(id.as_str())), "{row}");
    assert_eq!(row["status"], "pending");
    let (st, queue) = get(&s, &f.key, "/v1/intents/pending").await;
    assert_eq!(st, 200, "{queue}");
    assert_eq!(queue["total"], 1, "{queue}");
    assert_eq!(queue["items"][0]["id"], id.as_str());

    // Pending is not approved.
    let (st, r) = proxy(&s, &f, &refund_call(&f, 10), Some(&id)).await;
    assert_eq!((st, code(&r)), (403, "INTENT_APPROVAL_INVALID"), "{r}");

    // Approve; the queue empties; a second decision conflicts.
    let (st, row) = post(
        &s,
        &f.key,
        &format!("/v1/intents/{id}/approve"),
        json!({"notes": "ok"}),
    )
    .await;
    assert_eq!(
        (st, row["status"].as_str()),
        (200, Some("approved")),
        "{row}"
    );
    let (_, queue) = get(&s, &f.key, "/v1/intents/pending").await;
    assert_eq!(queue["total"], 0, "{queue}");
    let (st, v) = post(&s, &f.key, &format!("/v1/intents/{id}/reject"), json!({})).await;
    assert_eq!((st, code(&v)), (409, "CONFLICT"), "{v}");

    // A different body, or another passport, cannot ride on the approval.
    let (st, r) = proxy(&s, &f, &refund_call(&f, 11), Some(&id)).await;
    assert_eq!((st, code(&r)), (403, "INTENT_APPROVAL_MISMATCH"), "{r}");
    let (other_token, _) = issue(&s, &f.key, &f.agent).await;
    let (st, r) = proxy_as(&s, &f, &other_token, &refund_call(&f, 10), Some(&id)).await;
    assert_eq!((st, code(&r)), (403, "INTENT_APPROVAL_MISMATCH"), "{r}");
    assert_eq!(seen.len(), 0);

    // The approved call goes through, once.
    let (st, r) = proxy(&s, &f, &refund_call(&f, 10), Some(&id)).await;
    assert_eq!((st, r["status"].as_i64()), (200, Some(200)), "{r}");
    assert_eq!(seen.len(), 1);
    let (_, row) = get(&s, &f.key, &format!("/v1/intents/{id}")).await;
    assert_eq!(row["status"], "consumed", "{row}");
    let (st, r) = proxy(&s, &f, &refund_call(&f, 10), Some(&id)).await;
    assert_eq!((st, code(&r)), (403, "INTENT_APPROVAL_CONSUMED"), "{r}");
    assert_eq!(seen.len(), 1);

    // Two concurrent uses of one approval: exactly one goes out.
    let sub = submit(&s, &f, refund_intent(&f, 20), None).await;
    let id2 = sub["approval_id"].as_str().unwrap().to_owned();
    let (st, _) = post(&s, &f.key, &format!("/v1/intents/{id2}/approve"), json!({})).await;
    assert_eq!(st, 200);
    let call20 = refund_call(&f, 20);
    let (a, b) = tokio::join!(
        proxy(&s, &f, &call20, Some(&id2)),
        proxy(&s, &f, &call20, Some(&id2))
    );
    let mut outcomes = [a.0, b.0];
    outcomes.sort_unstable();
    assert_eq!(outcomes, [200, 403], "{a:?} {b:?}");
    let refused = if a.0 == 403 { &a.1 } else { &b.1 };
    assert_eq!(code(refused), "INTENT_APPROVAL_CONSUMED");
    assert_eq!(seen.len(), 2);

    // Expiry: an approval unused past its deadline is refused; a pending one
    // can no longer be decided.
    let sub = submit(&s, &f, refund_intent(&f, 30), Some(3)).await;
    let id3 = sub["approval_id"].as_str().unwrap().to_owned();
    let late = submit(&s, &f, refund_intent(&f, 31), Some(3)).await;
    let id4 = late["approval_id"].as_str().unwrap().to_owned();
    let (st, v) = post(&s, &f.key, &format!("/v1/intents/{id3}/approve"), json!({})).await;
    assert_eq!(st, 200, "{v}");
    tokio::time::sleep(Duration::from_millis(3_300)).await;
    let (_, row) = get(&s, &f.key, &format!("/v1/intents/{id3}")).await;
    assert_eq!(row["status"], "expired", "{row}");
    let (st, r) = proxy(&s, &f, &refund_call(&f, 30), Some(&id3)).await;
    assert_eq!((st, code(&r)), (403, "INTENT_APPROVAL_EXPIRED"), "{r}");
    let (st, v) = post(&s, &f.key, &format!("/v1/intents/{id4}/approve"), json!({})).await;
    assert_eq!(
        (st, v["error"]["details"]["status"].as_str()),
        (409, Some("expired")),
        "{v}"
    );
    assert_eq!(seen.len(), 2);

    // Another operator sees none of it.
    let other = data.create_operator("intents-b");
    for path in [
        format!("/v1/intents/{id}"),
        format!("/v1/intents/{id4}"),
        "/v1/intents/ia_unknown".to_owned(),
        "/v1/intents/not-an-id".to_owned(),
    ] {
        let (st, v) = get(&s, &other, &path).await;
        assert_eq!((st, code(&v)), (404, "NOT_FOUND"), "{path}: {v}");
    }
    let (st, v) = post(&s, &other, &format!("/v1/intents/{id4}/approve"), json!({})).await;
    assert_eq!((st, code(&v)), (404, "NOT_FOUND"), "{v}");
    let (_, queue) = get(&s, &other, "/v1/intents/pending").await;
    assert_eq!(queue["total"], 0);
    // Nor can it use the first operator's passport for intents.
    let r = client()
        .post(s.url("/v1/intents/submit"))
        .bearer_auth(&other)
        .header("x-passport-token", &f.token)
        .json(&json!({"intent": refund_intent(&f, 10)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // Reject with block_future: the passport is revoked, the agent blocked.
    let sub = submit(&s, &f, refund_intent(&f, 40), None).await;
    let id5 = sub["approval_id"].as_str().unwrap().to_owned();
    let (st, row) = post(
        &s,
        &f.key,
        &format!("/v1/intents/{id5}/reject"),
        json!({"notes": "not this one", "block_future": true}),
    )
    .await;
    assert_eq!(st, 200, "{row}");
    assert_eq!(row["status"], "rejected");
    assert_eq!(row["passport_revoked"], true);
    assert_eq!(row["agent_blocked"], true);
    assert!(
        row["revoked_jtis"]
            .as_array()
            .unwrap()
            .contains(&json!(f.jti))
    );
    let (st, r) = proxy(&s, &f, &refund_call(&f, 40), Some(&id5)).await;
    assert_eq!((st, code(&r)), (401, "PASSPORT_REVOKED"), "{r}");
    let (_, agent) = get(&s, &f.key, &format!("/v1/agents/{}", f.agent)).await;
    assert_eq!(agent["passport_blocked"], true, "{agent}");
    let (st, v) = post(
        &s,
        &f.key,
        "/v1/passports/issue",
        json!({"agent_id": f.agent, "intent": {"summary": "again", "services": ["custom"]}}),
    )
    .await;
    assert_eq!((st, code(&v)), (403, "PASSPORT_BLOCKED"), "{v}");
    assert_eq!(seen.len(), 2);

    // Rejecting again is not a conflict: the same row (the first decision;
    // this call's notes and block_future are not a new decision), nothing
    // left to revoke, nothing new written.
    let reject5 = format!("/v1/intents/{id5}/reject");
    let (st, again) = post(&s, &f.key, &reject5, json!({"notes": "other"})).await;
    assert_eq!(st, 200, "{again}");
    for field in [
        "id",
        "status",
        "decided_at",
        "decided_by",
        "notes",
        "block_future",
    ] {
        assert_eq!(again[field], row[field], "{field}: {again}");
    }
    assert_eq!(again["passport_revoked"], true);
    assert_eq!(again["agent_blocked"], true);
    assert_eq!(again["revoked_jtis"], json!([]), "{again}");
    // A reject that stopped after storing its decision (here: the block is
    // undone) is completed by the retry.
    let r = client()
        .post(s.url(&format!("/v1/agents/{}/unblock", f.agent)))
        .bearer_auth(&f.key)
        .header("x-governance-approval", "gov_retry_test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (_, agent) = get(&s, &f.key, &format!("/v1/agents/{}", f.agent)).await;
    assert_eq!(agent["passport_blocked"], false, "{agent}");
    let (st, again) = post(&s, &f.key, &reject5, json!({})).await;
    assert_eq!(
        (st, again["agent_blocked"].as_bool()),
        (200, Some(true)),
        "{again}"
    );
    let (_, agent) = get(&s, &f.key, &format!("/v1/agents/{}", f.agent)).await;
    assert_eq!(agent["passport_blocked"], true, "{agent}");
    // A rejected row still cannot be approved.
    let (st, v) = post(&s, &f.key, &format!("/v1/intents/{id5}/approve"), json!({})).await;
    assert_eq!(
        (st, v["error"]["details"]["status"].as_str()),
        (409, Some("rejected")),
        "{v}"
    );

    // Every step is in the audit chain, which still verifies.
    let log = audit_ndjson(&s, &f.key).await;
    assert!(!log.contains(SECRET));
    let actions: Vec<String> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let count = |a: &str| actions.iter().filter(|x| *x == a).count();
    assert_eq!(count("intent.simulate"), 2, "{actions:?}");
    assert_eq!(count("intent.submit"), 5);
    assert_eq!(count("intent.approve"), 3);
    assert_eq!(count("intent.consume"), 2);
    assert_eq!(count("intent.reject"), 1);
    // The reject's block, and the retry's after the unblock.
    assert_eq!(count("agent.block"), 2);
    assert_eq!(count("agent.unblock"), 1);
    assert_eq!(count("passport.revoke"), 1);
    let (_, v) = get(&s, &f.key, "/v1/audit/verify-chain").await;
    assert_eq!(v["ok"], true, "{v}");
    s.stop();
}
both_backends!(
    approvals_bind_and_gate_enforced_calls,
    approvals_bind_and_gate_enforced_calls_body
);

async fn standard_passports_need_no_approval_body(data: &Data) {
    let (port, seen) = start_upstream().await;
    let s = start_proxy_server(data, &["api.upstream.test"]);
    let k = s.key();
    let base = format!("http://api.upstream.test:{port}");
    let (_, conn) = post(
        &s,
        &k,
        "/v1/services/custom",
        json!({"name": "orders", "credential": SECRET, "base_url": base}),
    )
    .await;
    let (_, agent) = post(
        &s,
        &k,
        "/v1/agents/register",
        json!({"name": "std", "accountability_mode": "standard"}),
    )
    .await;
    let (st, _) = post(
        &s,
        &k,
        "/v1/services/grant",
        json!({"agent_id": agent["id"], "service_connection_id": conn["id"], "scopes": ["read"], "response_scan": "block"}),
    )
    .await;
    assert_eq!(st, 201);
    let (_, pp) = post(
        &s,
        &k,
        "/v1/passports/issue",
        json!({"agent_id": agent["id"]}),
    )
    .await;
    let f = Fixture {
        key: k.clone(),
        base: base.clone(),
        agent: agent["id"].as_str().unwrap().to_owned(),
        token: pp["token"].as_str().unwrap().to_owned(),
        jti: pp["jti"].as_str().unwrap().to_owned(),
    };
    let read = json!({"service": "custom", "url": format!("{base}/v1/orders")});
    // The dry run says the answer will be scanned in block mode.
    let (st, sim) = intent_call(
        &s,
        &f,
        "/v1/intents/simulate",
        &f.token,
        json!({"intent": {"target": {"service": "custom", "url": format!("{base}/v1/orders")}, "action": "GET"}}),
    )
    .await;
    assert_eq!((st, &sim["allowed"]), (200, &json!(true)), "{sim}");
    let fires = sim["predicted_detector_fires"].as_array().unwrap();
    assert_eq!(fires.len(), 1, "{sim}");
    assert_eq!(
        (fires[0]["detector"].as_str(), fires[0]["mode"].as_str()),
        (Some("response_scan"), Some("block"))
    );
    let (st, r) = proxy(&s, &f, &read, None).await;
    assert_eq!(st, 200, "{r}");
    // An approval that is presented is still checked.
    let (st, r) = proxy(&s, &f, &read, Some("ia_doesnotexist")).await;
    assert_eq!((st, code(&r)), (403, "INTENT_APPROVAL_INVALID"), "{r}");
    assert_eq!(seen.len(), 1);
    // Agents (here: the passport as bearer) may submit and poll but not decide.
    let r = client()
        .post(s.url("/v1/intents/submit"))
        .bearer_auth(&f.token)
        .json(&json!({"intent": {"target": {"service": "custom", "url": format!("{base}/v1/orders")}, "action": "GET"}, "skip_simulation": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let sub: Value = r.json().await.unwrap();
    assert!(sub["simulation"].is_null());
    assert!(sub["simulated_claim_id"].is_null());
    let id = sub["approval_id"].as_str().unwrap();
    let (st, row) = get(&s, &f.token, &format!("/v1/intents/{id}")).await;
    assert_eq!(
        (st, row["status"].as_str()),
        (200, Some("pending")),
        "{row}"
    );
    let (st, v) = post(
        &s,
        &f.token,
        &format!("/v1/intents/{id}/approve"),
        json!({}),
    )
    .await;
    assert_eq!((st, code(&v)), (403, "FORBIDDEN"), "{v}");
    s.stop();
}
both_backends!(
    standard_passports_need_no_approval,
    standard_passports_need_no_approval_body
);
