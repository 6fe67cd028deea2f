//! Two `stack-server` processes on one PostgreSQL database, with the same
//! master key, sharing revocations over the bus (`STACK_BUS=postgres`, and
//! `STACK_BUS=redis` when a Redis server is reachable). A passport issued on
//! node A is accepted on node B; once revoked on A, B refuses it; and a node
//! that was down during a revocation refuses the passport as soon as it is
//! back. A connection disconnected on A stops B's proxy from using what it
//! kept of it (the same bus carries changes of grants and connections).
//!
//! Needs `STACK_TEST_POSTGRES_URL` (skipped with a note otherwise); Redis is
//! `STACK_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

use std::time::{Duration, Instant};

mod support;

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};

/// How long a revocation may take to reach the other node in this test.
const PROPAGATION_BOUND: Duration = Duration::from_secs(5);

/// A node is the shared harness's server process.
use support::Server as Node;

async fn call(method: Method, url: String, bearer: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut req = client
        .request(method, url)
        .header("content-type", "application/json")
        .bearer_auth(bearer);
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}_{nanos}", std::process::id())
}

/// A master key both nodes share: 32 bytes, base64url.
fn master_key() -> String {
    let seed = unique();
    let mut bytes = [0u8; 32];
    for (i, b) in seed.bytes().cycle().take(32).enumerate() {
        bytes[i] = b.wrapping_mul(31).wrapping_add(i as u8);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn redis_url() -> String {
    std::env::var("STACK_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Whether something answers on the Redis URL's host and port.
fn redis_reachable(url: &str) -> bool {
    let rest = url
        .trim_start_matches("redis://")
        .trim_start_matches("rediss://");
    let hostport = rest.rsplit('@').next().unwrap_or(rest);
    let hostport = hostport.split('/').next().unwrap_or(hostport);
    let hostport = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:6379")
    };
    use std::net::ToSocketAddrs;
    hostport.to_socket_addrs().ok().is_some_and(|mut addrs| {
        addrs.any(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
    })
}

/// Issues an enforced passport for a new agent on `node`; returns (jti, token).
async fn issue(node: &Node, key: &str, agent_name: &str) -> (String, String) {
    let (st, agent) = call(
        Method::POST,
        node.url("/v1/agents/register"),
        key,
        Some(json!({ "name": agent_name })),
    )
    .await;
    assert_eq!(st, 201, "{agent}");
    let (st, started) = call(
        Method::POST,
        node.url("/v1/missions/start"),
        key,
        Some(json!({
            "agent_id": agent["id"],
            "mission": { "intent_summary": "multinode", "intent_services": [] },
        })),
    )
    .await;
    assert_eq!(st, 201, "{started}");
    let pp = &started["passport"];
    (
        pp["jti"].as_str().unwrap().to_owned(),
        pp["token"].as_str().unwrap().to_owned(),
    )
}

async fn revoke(node: &Node, key: &str, jti: &str) {
    let (st, body) = call(
        Method::POST,
        node.url("/v1/passports/revoke"),
        key,
        Some(json!({ "jti": jti, "reason": "multinode test" })),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["count"], 1, "{body}");
}

/// `GET /v1/agents` with the passport as the bearer.
async fn use_passport(node: &Node, token: &str) -> (u16, Value) {
    call(Method::GET, node.url("/v1/agents"), token, None).await
}

/// Polls `node` until it refuses `token` as revoked; panics after the bound.
async fn await_refused(node: &Node, token: &str, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        let (st, body) = use_passport(node, token).await;
        if st == 401 {
            assert_eq!(body["error"]["code"], "PASSPORT_REVOKED", "{what}: {body}");
            return start.elapsed();
        }
        assert_eq!(st, 200, "{what}: {body}");
        assert!(
            start.elapsed() < PROPAGATION_BOUND,
            "{what}: still accepted {PROPAGATION_BOUND:?} after the revocation"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The proxy's upstream host in these tests (resolved to 127.0.0.1).
const UPSTREAM_HOST: &str = "api.multinode.test";

/// How long a change of grants or connections may take to reach the other
/// node's proxy here: well under the 5 s after which a node stops using
/// what it kept anyway, so passing shows the bus carried the change.
const ACCESS_BOUND: Duration = Duration::from_millis(2_500);

/// A proxied GET through `node`: (status, body).
async fn proxy_get(node: &Node, key: &str, token: &str, url: &str) -> (u16, Value) {
    let r = support::client()
        .post(node.url("/v1/proxy"))
        .bearer_auth(key)
        .header("x-passport-token", token)
        .json(&json!({ "service": "custom", "method": "GET", "url": url }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// A connection and grant made on A, used through B's proxy (so B keeps
/// them), then disconnected on A: B refuses the next calls within
/// [`ACCESS_BOUND`] and sends nothing more upstream. Returns how long it took.
async fn access_follows_changes(a: &Node, b: &Node, key: &str) -> Duration {
    let (port, seen) = support::start_upstream().await;
    let base = format!("http://{UPSTREAM_HOST}:{port}");
    let (st, conn) = call(
        Method::POST,
        a.url("/v1/services/custom"),
        key,
        Some(json!({ "name": "multinode", "credential": "multinode_secret_0123456789", "base_url": base })),
    )
    .await;
    assert_eq!(st, 201, "{conn}");
    let cid = conn["id"].as_str().unwrap();
    let (st, agent) = call(
        Method::POST,
        a.url("/v1/agents/register"),
        key,
        Some(json!({ "name": "multinode-proxy", "accountability_mode": "standard" })),
    )
    .await;
    assert_eq!(st, 201, "{agent}");
    let (st, g) = call(
        Method::POST,
        a.url("/v1/services/grant"),
        key,
        Some(json!({ "agent_id": agent["id"], "service_connection_id": cid, "scopes": ["read"] })),
    )
    .await;
    assert_eq!(st, 201, "{g}");
    let (st, pp) = call(
        Method::POST,
        a.url("/v1/passports/issue"),
        key,
        Some(json!({ "agent_id": agent["id"] })),
    )
    .await;
    assert_eq!(st, 201, "{pp}");
    let token = pp["token"].as_str().unwrap();
    let url = format!("{base}/v1/items");
    for _ in 0..3 {
        let (st, r) = proxy_get(b, key, token, &url).await;
        assert_eq!((st, &r["status"]), (200, &json!(200)), "{r}");
    }
    assert_eq!(seen.len(), 3);

    let (st, body) = call(
        Method::DELETE,
        a.url(&format!("/v1/services/{cid}/disconnect")),
        key,
        None,
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let start = Instant::now();
    let took = loop {
        let (st, r) = proxy_get(b, key, token, &url).await;
        if st != 200 {
            assert_eq!(
                (st, &r["error"]["code"]),
                (403, &json!("SCOPE_DENIED")),
                "{r}"
            );
            break start.elapsed();
        }
        assert!(
            start.elapsed() < ACCESS_BOUND,
            "B's proxy still used a connection disconnected on A {ACCESS_BOUND:?} later"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let sent = seen.len();
    let (st, _) = proxy_get(b, key, token, &url).await;
    assert_eq!(st, 403);
    assert_eq!(seen.len(), sent, "a refused call reached the upstream");
    took
}

async fn two_nodes(bus: &str) {
    let Ok(admin) = std::env::var("STACK_TEST_POSTGRES_URL") else {
        eprintln!("STACK_TEST_POSTGRES_URL not set: skipping the two-node {bus} test");
        return;
    };
    let mut env = support::proxy_env(
        &[
            ("STACK_BUS".to_owned(), bus.to_owned()),
            ("STACK_MASTER_KEY".to_owned(), master_key()),
        ],
        &[UPSTREAM_HOST],
    );
    if bus == "redis" {
        let url = redis_url();
        if !redis_reachable(&url) {
            eprintln!("no Redis at {url}: skipping the two-node redis test");
            return;
        }
        env.push(("STACK_REDIS_URL".to_owned(), url));
    }
    let db_name = format!("stack_multinode_{bus}_{}", unique());
    let db_url = stack_store::scratch::create(&admin, &db_name)
        .await
        .unwrap();
    env.push(("STACK_DATABASE_URL".to_owned(), db_url));
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let env_for = |dir: &tempfile::TempDir| {
        let mut e = env.clone();
        e.push((
            "STACK_DATA_DIR".to_owned(),
            dir.path().display().to_string(),
        ));
        e
    };

    let a = Node::start(env_for(&dir_a));
    let key = a.key.clone().expect("node A created the first operator");
    let b = Node::start(env_for(&dir_b));
    assert!(b.key.is_none(), "node B must not create another operator");

    // Issued on A, accepted on B (same signing keys, same database).
    let (jti, token) = issue(&a, &key, "multinode-one").await;
    let (st, agents) = use_passport(&b, &token).await;
    assert_eq!(st, 200, "{agents}");
    assert_eq!(agents.as_array().map(Vec::len), Some(1), "{agents}");
    let (st, v) = call(
        Method::POST,
        b.url("/v1/passports/verify"),
        &key,
        Some(json!({ "token": token })),
    )
    .await;
    assert_eq!((st, &v["valid"]), (200, &json!(true)), "{v}");

    // Revoked on A: B refuses it within the bound.
    revoke(&a, &key, &jti).await;
    let took = await_refused(&b, &token, "revoked on A, used on B").await;
    eprintln!("[{bus}] revocation on A refused on B after {took:?}");
    let (_, v) = call(
        Method::POST,
        b.url("/v1/passports/verify"),
        &key,
        Some(json!({ "token": token })),
    )
    .await;
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(v["reason"], "revoked", "{v}");

    // And the other way round.
    let (jti2, token2) = issue(&a, &key, "multinode-two").await;
    assert_eq!(use_passport(&a, &token2).await.0, 200);
    revoke(&b, &key, &jti2).await;
    await_refused(&a, &token2, "revoked on B, used on A").await;

    // What B's proxy keeps of grants and connections follows a change on A.
    let took = access_follows_changes(&a, &b, &key).await;
    eprintln!("[{bus}] disconnect on A refused by B's proxy after {took:?}");

    // B is down while A revokes: once back, B refuses at once (catch-up).
    let (jti3, token3) = issue(&a, &key, "multinode-three").await;
    assert_eq!(use_passport(&b, &token3).await.0, 200);
    assert_eq!(b.stop(), Some(0), "node B did not stop cleanly");
    revoke(&a, &key, &jti3).await;
    let b = Node::start(env_for(&dir_b));
    let (st, body) = use_passport(&b, &token3).await;
    assert_eq!(
        st, 401,
        "restarted B accepted a passport revoked while it was down: {body}"
    );
    assert_eq!(body["error"]["code"], "PASSPORT_REVOKED", "{body}");
    // A passport that is still live keeps working on the restarted node.
    let (_, token4) = issue(&a, &key, "multinode-four").await;
    assert_eq!(use_passport(&b, &token4).await.0, 200);

    assert_eq!(b.stop(), Some(0));
    assert_eq!(a.stop(), Some(0));
    stack_store::scratch::drop(&admin, &db_name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_over_postgres_bus() {
    two_nodes("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_over_redis_bus() {
    two_nodes("redis").await;
}

/// One MCP JSON-RPC request over plain HTTP: returns (status, body). With
/// `rev` 2026-07-28 it carries the per-request `_meta` and the SEP-2243
/// `Mcp-Method`/`Mcp-Name` headers that revision requires.
async fn mcp(
    client: &reqwest::Client,
    node: &Node,
    key: &str,
    rev: &str,
    id: Option<u64>,
    method: &str,
    params: Value,
) -> (u16, Value) {
    let mut params = params;
    let modern = rev >= "2026-07-28";
    if modern && method != "initialize" {
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": rev,
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": { "name": "multinode-test", "version": "0" },
        });
    }
    let mut body = json!({ "jsonrpc": "2.0", "method": method, "params": params });
    if let Some(id) = id {
        body["id"] = json!(id);
    }
    let mut req = client
        .post(node.url("/mcp"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", rev);
    if modern {
        req = req.header("mcp-method", method);
        if let Some(name) = params["name"].as_str() {
            req = req.header("mcp-name", name);
        }
    }
    let res = req.body(body.to_string()).send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Issue 5 item 1: the requests of one MCP client land on different
/// `stack-server` processes sharing PostgreSQL, alternating per request.
/// Stateless Streamable HTTP means no session ties the client to a node.
async fn mcp_across_nodes(client: &reqwest::Client, a: &Node, b: &Node, key: &str, rev: &str) {
    let agent_name = format!("mcp-{}", rev.replace('-', ""));
    // Handshake on A: `initialize` before 2026-07-28, `server/discover` after.
    if rev >= "2026-07-28" {
        let (st, r) = mcp(client, a, key, rev, Some(1), "server/discover", json!({})).await;
        assert_eq!(st, 200, "{rev} discover on A: {r}");
        let versions = r["result"]["supportedVersions"].to_string();
        assert!(versions.contains(rev), "{rev} discover on A: {r}");
        assert!(r["result"]["capabilities"]["tools"].is_object(), "{r}");
    } else {
        let (st, r) = mcp(
            client,
            a,
            key,
            rev,
            Some(1),
            "initialize",
            json!({
                "protocolVersion": rev,
                "capabilities": {},
                "clientInfo": { "name": "multinode-test", "version": "0" },
            }),
        )
        .await;
        assert_eq!(st, 200, "{rev} initialize on A: {r}");
        assert_eq!(r["result"]["protocolVersion"], rev, "{r}");
        assert_eq!(r["result"]["serverInfo"]["name"], "stack", "{r}");
        // The `initialized` notification goes to the other node.
        let (st, r) = mcp(
            client,
            b,
            key,
            rev,
            None,
            "notifications/initialized",
            json!({}),
        )
        .await;
        assert_eq!(st, 202, "{rev} initialized on B: {r}");
    }

    // tools/list on B.
    let (st, r) = mcp(client, b, key, rev, Some(2), "tools/list", json!({})).await;
    assert_eq!(st, 200, "{rev} tools/list on B: {r}");
    let names: Vec<&str> = r["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"))
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for t in [
        "stack_register_agent",
        "stack_list_agents",
        "stack_audit_chain_head",
    ] {
        assert!(names.contains(&t), "{rev}: {t} missing from {names:?}");
    }

    // Register on B, list on A: the agent written by one process is read by
    // the other.
    let (st, r) = mcp(
        client,
        b,
        key,
        rev,
        Some(3),
        "tools/call",
        json!({ "name": "stack_register_agent", "arguments": { "name": agent_name } }),
    )
    .await;
    assert_eq!(st, 200, "{rev} register on B: {r}");
    assert_ne!(r["result"]["isError"], true, "{rev} register on B: {r}");
    let agent = &r["result"]["structuredContent"];
    assert_eq!(agent["name"], agent_name.as_str(), "{r}");
    let id = agent["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_owned();
    assert!(id.starts_with("agt_"), "{r}");

    let (st, r) = mcp(
        client,
        a,
        key,
        rev,
        Some(4),
        "tools/call",
        json!({ "name": "stack_list_agents", "arguments": {} }),
    )
    .await;
    assert_eq!(st, 200, "{rev} list on A: {r}");
    let agents = r["result"]["structuredContent"]["agents"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"))
        .clone();
    let found = agents.iter().find(|g| g["id"] == id.as_str());
    assert_eq!(
        found.map(|g| g["name"].clone()),
        Some(json!(agent_name)),
        "{rev}: agent registered on B not listed on A: {r}"
    );

    // And back to B: the audit chain head counts the registration, whichever
    // node wrote it.
    let (st, head_b) = mcp(
        client,
        b,
        key,
        rev,
        Some(5),
        "tools/call",
        json!({ "name": "stack_audit_chain_head", "arguments": {} }),
    )
    .await;
    assert_eq!(st, 200, "{rev} chain head on B: {head_b}");
    let (st, head_a) = mcp(
        client,
        a,
        key,
        rev,
        Some(6),
        "tools/call",
        json!({ "name": "stack_audit_chain_head", "arguments": {} }),
    )
    .await;
    assert_eq!(st, 200, "{rev} chain head on A: {head_a}");
    assert_eq!(
        head_a["result"]["structuredContent"], head_b["result"]["structuredContent"],
        "{rev}: the two nodes disagree on the audit chain head"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_client_alternating_nodes() {
    let Ok(admin) = std::env::var("STACK_TEST_POSTGRES_URL") else {
        eprintln!("STACK_TEST_POSTGRES_URL not set: skipping the two-node MCP test");
        return;
    };
    let db_name = format!("stack_multinode_mcp_{}", unique());
    let db_url = stack_store::scratch::create(&admin, &db_name)
        .await
        .unwrap();
    let env = vec![
        ("STACK_BUS".to_owned(), "postgres".to_owned()),
        ("STACK_MASTER_KEY".to_owned(), master_key()),
        ("STACK_DATABASE_URL".to_owned(), db_url),
    ];
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let env_for = |dir: &tempfile::TempDir| {
        let mut e = env.clone();
        e.push((
            "STACK_DATA_DIR".to_owned(),
            dir.path().display().to_string(),
        ));
        e
    };
    let a = Node::start(env_for(&dir_a));
    let key = a.key.clone().expect("node A created the first operator");
    let b = Node::start(env_for(&dir_b));
    assert!(b.key.is_none(), "node B must not create another operator");

    // One client (one keep-alive pool) for the whole conversation.
    let client = reqwest::Client::new();
    for rev in ["2025-11-25", "2026-07-28"] {
        mcp_across_nodes(&client, &a, &b, &key, rev).await;
    }

    assert_eq!(b.stop(), Some(0));
    assert_eq!(a.stop(), Some(0));
    stack_store::scratch::drop(&admin, &db_name).await.unwrap();
}
