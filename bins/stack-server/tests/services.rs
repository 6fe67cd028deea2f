//! End-to-end tests of connections, sealed credentials and grants (issue 4)
//! through the real binary, on SQLite and (when configured) PostgreSQL.
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

const SECRET: &str = "tok_live_SUPERSECRET_value_1234567890";

async fn agent(s: &Server, k: &str, name: &str, access: &str) -> String {
    let (st, a) = call(
        Method::POST,
        s.url("/v1/agents/register"),
        Some(k),
        Some(json!({"name": name, "credential_access": access, "accountability_mode": "standard"})),
    )
    .await;
    assert_eq!(st, 201, "{a}");
    a["id"].as_str().unwrap().to_owned()
}

async fn passport(s: &Server, k: &str, agent: &str, scopes: Value) -> Value {
    let (st, p) = call(
        Method::POST,
        s.url("/v1/passports/issue"),
        Some(k),
        Some(json!({"agent_id": agent, "scopes": scopes})),
    )
    .await;
    assert_eq!(st, 201, "{p}");
    p
}

fn claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

async fn connections_grants_and_credentials_body(data: &Data) {
    let s = data.start();
    let k = s.key();
    let other = data.create_operator("other");

    // Connect a custom API; the secret never comes back.
    let (st, conn) = call(
        Method::POST,
        s.url("/v1/services/custom"),
        Some(&k),
        Some(json!({"name": "orders", "credential": SECRET, "base_url": "https://api.example.com", "scopes": ["read", "write"]})),
    )
    .await;
    assert_eq!(st, 201, "{conn}");
    assert!(!conn.to_string().contains(SECRET));
    let cid = conn["id"].as_str().unwrap().to_owned();
    assert!(cid.starts_with("scon_"));
    assert_eq!(conn["hosts"], json!(["api.example.com"]));
    let (_, list) = call(Method::GET, s.url("/v1/services/connected"), Some(&k), None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains(SECRET));
    let (_, catalog) = call(Method::GET, s.url("/v1/services"), Some(&k), None).await;
    assert!(
        catalog
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["provider"] == "slack")
    );

    // Grants: scopes must be the connection's; intents expand to constraints.
    let direct = agent(&s, &k, "direct-agent", "direct").await;
    let proxied = agent(&s, &k, "proxied-agent", "proxy_only").await;
    let (st, e) = call(
        Method::POST,
        s.url("/v1/services/grant"),
        Some(&k),
        Some(json!({"agent_id": direct, "service_connection_id": cid, "scopes": ["admin"]})),
    )
    .await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (400, Some("SCOPE_ESCALATION")),
        "{e}"
    );
    for a in [&direct, &proxied] {
        let (st, g) = call(
            Method::POST,
            s.url("/v1/services/grant"),
            Some(&k),
            Some(json!({"agent_id": a, "service_connection_id": cid, "scopes": ["read", "write"],
                        "intents": [{"name": "custom.read_only", "params": {"path_prefix": "/v1/"}}]})),
        )
        .await;
        assert_eq!(st, 201, "{g}");
        assert_eq!(g["constraints"].as_array().unwrap().len(), 2, "{g}");
    }
    let (_, perms) = call(
        Method::GET,
        s.url(&format!("/v1/agents/{direct}/permissions")),
        Some(&k),
        None,
    )
    .await;
    assert_eq!(perms["grants"].as_array().unwrap().len(), 1, "{perms}");

    // Passports carry the grants, narrowed on request, never widened.
    let full = passport(&s, &k, &direct, json!([])).await;
    let c = claims(full["token"].as_str().unwrap());
    let svc = &c["stk"]["services"][0];
    assert_eq!(svc["connection_id"], cid.as_str());
    assert_eq!(svc["scopes"], json!(["read", "write"]));
    assert_eq!(svc["constraints"].as_array().unwrap().len(), 2);
    let narrow = passport(
        &s,
        &k,
        &direct,
        json!([{"service_connection_id": cid, "scopes": ["read"]}]),
    )
    .await;
    assert_eq!(
        claims(narrow["token"].as_str().unwrap())["stk"]["services"][0]["scopes"],
        json!(["read"])
    );
    let (st, e) = call(
        Method::POST,
        s.url("/v1/passports/delegate"),
        Some(&k),
        Some(
            json!({"parent_passport_token": narrow["token"], "child_agent_id": proxied,
                    "scopes": [{"service_connection_id": cid, "scopes": ["write"]}]}),
        ),
    )
    .await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (400, Some("SCOPE_ESCALATION")),
        "{e}"
    );

    // Credentials: operator yes; a direct agent's passport yes; proxy_only no; other tenant no.
    let (st, cred) = call(Method::GET, s.url("/v1/credentials/custom"), Some(&k), None).await;
    assert_eq!(
        (st, cred["credential"].as_str()),
        (200, Some(SECRET)),
        "{cred}"
    );
    let r = client()
        .get(s.url(&format!("/v1/credentials/by-connection/{cid}")))
        .bearer_auth(&k)
        .header("x-passport-token", full["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let proxied_pp = passport(&s, &k, &proxied, json!([])).await;
    let r = client()
        .get(s.url("/v1/credentials/custom"))
        .bearer_auth(proxied_pp["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        403,
        "proxy_only agents never see the secret"
    );
    let (st, _) = call(
        Method::GET,
        s.url(&format!("/v1/credentials/by-connection/{cid}")),
        Some(&other),
        None,
    )
    .await;
    assert_eq!(st, 404);
    let (st, _) = call(
        Method::POST,
        s.url("/v1/services/grant"),
        Some(&other),
        Some(json!({"agent_id": direct, "service_connection_id": cid, "scopes": ["read"]})),
    )
    .await;
    assert_eq!(st, 404);
    let (_, other_list) = call(
        Method::GET,
        s.url("/v1/services/connected"),
        Some(&other),
        None,
    )
    .await;
    assert_eq!(other_list, json!([]));

    // The secret is in no audit entry; the retrieval is.
    let log = audit_ndjson(&s, &k).await;
    assert!(
        !log.contains(SECRET),
        "the secret leaked into the audit log"
    );
    assert!(log.contains("credential.retrieve"));
    assert!(log.contains("service.connect"));

    // Revoking access kills grants and passports; disconnecting erases the secret.
    let (st, out) = call(
        Method::DELETE,
        s.url(&format!("/v1/services/agents/{direct}/revoke")),
        Some(&k),
        None,
    )
    .await;
    assert_eq!(st, 200, "{out}");
    assert_eq!(out["grants_revoked"], 1);
    let (_, v) = call(
        Method::POST,
        s.url("/v1/passports/verify"),
        None,
        Some(json!({"token": full["token"]})),
    )
    .await;
    assert_eq!(v["reason"], "revoked");
    let (st, _) = call(
        Method::DELETE,
        s.url(&format!("/v1/services/{cid}/disconnect")),
        Some(&k),
        None,
    )
    .await;
    assert_eq!(st, 200);
    let (st, _) = call(Method::GET, s.url("/v1/credentials/custom"), Some(&k), None).await;
    assert_eq!(st, 404);
    let (_, perms) = call(
        Method::GET,
        s.url(&format!("/v1/agents/{proxied}/permissions")),
        Some(&k),
        None,
    )
    .await;
    assert_eq!(
        perms["grants"],
        json!([]),
        "disconnect revokes the connection's grants"
    );
    let (_, v) = call(Method::GET, s.url("/v1/audit/verify-chain"), Some(&k), None).await;
    assert_eq!(v["ok"], true, "{v}");
    s.stop();
}
both_backends!(
    connections_grants_and_credentials,
    connections_grants_and_credentials_body
);
