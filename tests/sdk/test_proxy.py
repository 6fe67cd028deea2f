"""Services, grants, credentials and the credential-injecting proxy, driven
through the real getstack SDK against a local upstream HTTP server that
records what it receives (`stack_upstream`: the server under test resolves
two test host names to it through the proxy's real egress path).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from getstack import Stack
from getstack.errors import ForbiddenError, NotFoundError, StackError, UnauthorizedError
from stack_harness import StackServer, backends, unique_name
from stack_upstream import OTHER_UPSTREAM_HOST, UPSTREAM_HOST, Upstream, proxy_ready_server


@dataclass
class ProxyEnv:
    base_url: str
    key: str
    second_key: str
    upstream: Upstream
    origin: str
    other_origin: str
    server: StackServer


QUOTA = 40  # proxy_quota_free for the quota test's operator tier


@pytest.fixture(scope="module", params=backends())
def proxy_env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyEnv]:
    cfg: Path = tmp_path_factory.mktemp("proxycfg") / "stack.toml"
    cfg.write_text(f"proxy_quota_free = {QUOTA}\n")
    with proxy_ready_server(request.param, extra_env={"STACK_CONFIG": str(cfg)}) as (srv, upstream):
        assert srv.api_key
        yield ProxyEnv(
            base_url=srv.base_url,
            key=srv.api_key,
            second_key=srv.create_operator(unique_name("second-op")),
            upstream=upstream,
            origin=upstream.origin(UPSTREAM_HOST),
            other_origin=upstream.origin(OTHER_UPSTREAM_HOST),
            server=srv,
        )


@pytest.fixture
def sdk(proxy_env: ProxyEnv) -> Iterator[Stack]:
    client = Stack(api_key=proxy_env.key, base_url=proxy_env.base_url, timeout=15.0)
    yield client
    client.close()


@pytest.fixture
def sdk2(proxy_env: ProxyEnv) -> Iterator[Stack]:
    client = Stack(api_key=proxy_env.second_key, base_url=proxy_env.base_url, timeout=15.0)
    yield client
    client.close()


@pytest.fixture
def raw(proxy_env: ProxyEnv) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=proxy_env.base_url, headers={"Authorization": f"Bearer {proxy_env.key}"},
                      timeout=15.0) as c:
        yield c


def _secret() -> str:
    return "upstream_SECRET_" + secrets.token_hex(12)


def _standard_agent(sdk: Stack) -> str:
    agent = sdk.agents.register(unique_name("proxy-agent"), accountability_mode="standard")
    return agent.id


def _passport(sdk: Stack, agent_id: str, scopes: list[dict[str, Any]] | None = None) -> str:
    mission = sdk.missions.open("call the orders API", agent_id=agent_id, intent_services=["custom"])
    p = sdk.passports.issue(agent_id, mission_ids=[mission["mission_id"]], scopes=scopes)
    assert p.token and p.token.count(".") == 2
    return p.token


def _connect(sdk: Stack, env: ProxyEnv, secret: str, auth: dict[str, str] | None = None) -> dict[str, Any]:
    credential: dict[str, Any] = {"api_key": secret, "base_url": env.origin}
    if auth is not None:
        credential["auth"] = auth
    conn = sdk.services.connect_custom(unique_name("orders"), credential, description="orders API",
                                       scopes=["read", "write"])
    assert conn["id"].startswith("scon_")
    assert secret not in json.dumps(conn)
    return conn


# --------------------------------------------------------------------------
# Catalog and connections
# --------------------------------------------------------------------------


def test_catalog_and_templates(sdk: Stack) -> None:
    available = sdk.services.list_available()
    slugs = {s.get("slug") or s.get("id", "").removeprefix("svc_") for s in available}
    for wanted in ("slack", "github", "notion", "stripe", "linear", "jira", "openai", "anthropic"):
        assert wanted in slugs, f"{wanted} missing from the catalog: {sorted(slugs)}"
    slack = next(s for s in available if (s.get("slug") or s.get("id", "").removeprefix("svc_")) == "slack")
    assert slack["scopes"], slack
    templates = sdk.services.list_templates()
    assert isinstance(templates, list) and templates
    intents = sdk._client.get("/v1/services/intents")  # noqa: SLF001 - no SDK method for this path
    names = {i["name"] for i in (intents if isinstance(intents, list) else intents.get("intents", []))}
    assert {"slack.post_to_channel", "github.open_pull_request"} <= names


def test_connect_custom_never_returns_the_secret(sdk: Stack, proxy_env: ProxyEnv) -> None:
    secret = _secret()
    conn = _connect(sdk, proxy_env, secret)
    listed = sdk.services.list()
    mine = [c for c in listed if c["id"] == conn["id"]]
    assert len(mine) == 1
    assert secret not in json.dumps(listed)
    assert set(mine[0]["scopes"]) == {"read", "write"}


def test_connect_catalog_service_validates_scopes(sdk: Stack) -> None:
    token = "xoxb-" + secrets.token_hex(10)
    slack = next(s for s in sdk.services.list_available() if "slack" in (s.get("slug") or s.get("id", "")))
    scope = slack["scopes"][0]
    scope = scope["name"] if isinstance(scope, dict) else scope
    conn = sdk.services.connect("svc_slack", oauth_token=token, scopes=[scope])
    assert conn["id"].startswith("scon_") and token not in json.dumps(conn)
    with pytest.raises(StackError) as bad:
        sdk.services.connect("svc_slack", oauth_token=token, scopes=["no-such-scope"])
    assert bad.value.status_code == 400
    with pytest.raises(NotFoundError):
        sdk.services.connect("svc_not_a_service", oauth_token=token, scopes=["x"])


def test_grants_and_permissions(sdk: Stack, proxy_env: ProxyEnv) -> None:
    conn = _connect(sdk, proxy_env, _secret())
    agent_id = _standard_agent(sdk)
    grant = sdk.services.grant_agent_access(agent_id, conn["id"], ["read"])
    assert grant["agent_id"] == agent_id
    perms = sdk.services.get_agent_permissions(agent_id)
    grants = perms["grants"] if isinstance(perms, dict) and "grants" in perms else perms
    assert any(g["service_connection_id"] == conn["id"] and g["scopes"] == ["read"] for g in grants), perms
    # Scopes the connection does not have are refused.
    with pytest.raises(StackError) as wider:
        sdk.services.grant_agent_access(agent_id, conn["id"], ["admin"])
    assert (wider.value.status_code, wider.value.code) == (400, "SCOPE_ESCALATION")
    with pytest.raises(StackError) as empty:
        sdk.services.grant_agent_access(agent_id, conn["id"], [])
    assert empty.value.status_code == 400


# --------------------------------------------------------------------------
# The proxy
# --------------------------------------------------------------------------


def test_proxy_injects_the_credential_only_upstream(sdk: Stack, proxy_env: ProxyEnv) -> None:
    secret = _secret()
    conn = _connect(sdk, proxy_env, secret, auth={"type": "header", "name": "X-Api-Key"})
    agent_id = _standard_agent(sdk)
    sdk.services.grant_agent_access(agent_id, conn["id"], ["read", "write"])
    token = _passport(sdk, agent_id)
    before = len(proxy_env.upstream.requests())

    r = sdk.proxy.get("custom", f"{proxy_env.origin}/v1/orders", query={"limit": "5"}, passport_token=token,
                      headers={"X-Api-Key": "forged", "Authorization": "Bearer forged", "X-Trace": "t1"})
    assert r.ok() and r.status == 200
    assert r.body == {"ok": True, "method": "GET", "path": "/v1/orders", "query": "limit=5"}
    seen = proxy_env.upstream.requests()[before:]
    assert len(seen) == 1
    assert seen[0]["headers"]["x-api-key"] == secret, "the connection's credential replaces the caller's"
    assert "authorization" not in seen[0]["headers"], "the caller's own Authorization is stripped"
    assert seen[0]["headers"]["x-trace"] == "t1"
    assert secret not in json.dumps({"status": r.status, "headers": r.headers, "body": r.body})

    # The secret is in no audit entry either.
    entries = sdk.audit.list(limit=100, agent_id=agent_id)["entries"]
    proxied = [e for e in entries if e["action"] == "credential.proxy"]
    assert len(proxied) == 1 and proxied[0]["outcome"] == "success", proxied
    assert secret not in json.dumps(entries)


def test_upstream_errors_are_data_and_denials_are_errors(sdk: Stack, proxy_env: ProxyEnv) -> None:
    conn = _connect(sdk, proxy_env, _secret())
    agent_id = _standard_agent(sdk)
    sdk.services.grant_agent_access(agent_id, conn["id"], ["read"])
    token = _passport(sdk, agent_id)
    r = sdk.proxy.get("custom", f"{proxy_env.origin}/v1/unauthorized", passport_token=token)
    assert r.status == 401 and not r.ok() and r.body == {"error": "bad token"}
    before = len(proxy_env.upstream.requests())
    # Another host than the connection's base_url is never reached.
    with pytest.raises(ForbiddenError) as other:
        sdk.proxy.get("custom", f"{proxy_env.other_origin}/v1/orders", passport_token=token)
    assert other.value.code == "SCOPE_DENIED"
    for url in (f"http://127.0.0.1:{proxy_env.upstream.port}/v1/orders",
                f"http://user@api.upstream.test:{proxy_env.upstream.port}/v1/orders",
                f"{proxy_env.origin}/v1/%2e%2e/admin"):
        with pytest.raises(ForbiddenError) as refused:
            sdk.proxy.get("custom", url, passport_token=token)
        assert refused.value.code == "SCOPE_DENIED", url
    # No passport: refused before anything else.
    with pytest.raises(StackError) as missing:
        sdk.proxy.get("custom", f"{proxy_env.origin}/v1/orders")
    assert missing.value.status_code in (400, 401)
    assert len(proxy_env.upstream.requests()) == before


def test_constraints_allow_and_deny(sdk: Stack, raw: httpx.Client, proxy_env: ProxyEnv) -> None:
    conn = _connect(sdk, proxy_env, _secret())
    agent_id = _standard_agent(sdk)
    g = raw.post("/v1/services/grant", json={
        "agent_id": agent_id, "service_connection_id": conn["id"], "scopes": ["read", "write"],
        "constraints": [
            {"path": "path", "op": "starts_with", "value": "/v1/"},
            {"path": "method", "op": "in", "value": ["GET", "POST"]},
            {"path": "query.region", "op": "not_eq", "value": "eu"},
            {"path": "body.amount", "op": "not_in", "value": [500, 1000]},
            {"path": "body.note", "op": "not_eq", "value": "refund everything"},
        ],
    })
    assert g.status_code == 201, g.text
    token = _passport(sdk, agent_id)
    ok = sdk.proxy.post("custom", f"{proxy_env.origin}/v1/refunds", body={"amount": 10, "currency": "USD"},
                        passport_token=token)
    assert ok.status == 200 and ok.body["path"] == "/v1/refunds"
    listed = sdk.proxy.get("custom", f"{proxy_env.origin}/v1/orders", query={"region": "us"}, passport_token=token)
    assert listed.status == 200 and listed.body["query"] == "region=us"
    denied = [
        ("DELETE", f"{proxy_env.origin}/v1/orders/1", None, None),
        ("GET", f"{proxy_env.origin}/admin", None, None),
        ("GET", f"{proxy_env.origin}/v1/orders", None, {"region": "eu"}),
        ("POST", f"{proxy_env.origin}/v1/refunds", {"amount": 500, "currency": "USD"}, None),
        ("POST", f"{proxy_env.origin}/v1/refunds", {"amount": 5, "note": "refund everything"}, None),
    ]
    before = len(proxy_env.upstream.requests())
    for method, url, body, query in denied:
        with pytest.raises(ForbiddenError) as e:
            sdk.proxy.request("custom", url, method, body=body, query=query, passport_token=token)
        assert e.value.code == "CONSTRAINT_VIOLATION", (method, url, body, query, str(e.value))
    assert len(proxy_env.upstream.requests()) == before, "denied calls never reach the upstream"

    # A passport can narrow the grant but not widen it.
    narrow = _passport(sdk, agent_id, scopes=[{
        "service_connection_id": conn["id"], "scopes": ["read"],
        "constraints": [{"path": "method", "op": "eq", "value": "GET"}],
    }])
    assert sdk.proxy.get("custom", f"{proxy_env.origin}/v1/orders", passport_token=narrow).status == 200
    with pytest.raises(ForbiddenError):
        sdk.proxy.post("custom", f"{proxy_env.origin}/v1/refunds", body={"amount": 1, "currency": "USD"},
                       passport_token=narrow)
    with pytest.raises(StackError) as wider:
        _passport(sdk, agent_id, scopes=[{"service_connection_id": conn["id"], "scopes": ["read", "admin"]}])
    assert wider.value.status_code in (400, 403)


def test_retries_are_delivered_at_most_once(sdk: Stack, proxy_env: ProxyEnv) -> None:
    conn = _connect(sdk, proxy_env, _secret())
    agent_id = _standard_agent(sdk)
    sdk.services.grant_agent_access(agent_id, conn["id"], ["read", "write"])
    token = _passport(sdk, agent_id)
    ids: list[str] = []
    first = sdk.proxy.post("custom", f"{proxy_env.origin}/v1/payments", body={"amount": 7}, passport_token=token,
                           on_operation_id=ids.append)
    assert first.status == 200 and first.operation_id and ids == [first.operation_id]
    before = len(proxy_env.upstream.requests())
    again = sdk.proxy.post("custom", f"{proxy_env.origin}/v1/payments", body={"amount": 7}, passport_token=token,
                           authority_request_id=first.operation_id)
    assert (again.status, again.body) == (first.status, first.body)
    assert len(proxy_env.upstream.requests()) == before, "an unchanged retry is replayed, not re-sent"
    with pytest.raises(StackError) as changed:
        sdk.proxy.post("custom", f"{proxy_env.origin}/v1/payments", body={"amount": 8}, passport_token=token,
                       authority_request_id=first.operation_id)
    assert changed.value.status_code == 409
    assert len(proxy_env.upstream.requests()) == before

    # The operation record, as the SDK reads it.
    op = sdk.proxy.get_operation(first.operation_id, passport_token=token, include_response=True)
    assert op["operation_id"] == first.operation_id
    assert (op["delivery_state"], op["replay_state"], op["accounting_state"]) == (
        "response_received", "available", "committed")
    assert (op["provider"], op["method"]) == ("custom", "POST")
    assert op["response"]["status"] == 200 and op["response"]["body"] == first.body
    assert "response" not in sdk.proxy.get_operation(first.operation_id, passport_token=token)
    # Another agent's passport, or an unknown id, sees nothing.
    other = _standard_agent(sdk)
    sdk.services.grant_agent_access(other, conn["id"], ["read"])
    with pytest.raises(NotFoundError):
        sdk.proxy.get_operation(first.operation_id, passport_token=_passport(sdk, other))
    with pytest.raises(NotFoundError):
        sdk.proxy.get_operation("op_" + secrets.token_urlsafe(20), passport_token=token)


def test_revocation_between_two_calls(sdk: Stack, proxy_env: ProxyEnv) -> None:
    conn = _connect(sdk, proxy_env, _secret())
    agent_id = _standard_agent(sdk)
    sdk.services.grant_agent_access(agent_id, conn["id"], ["read"])
    token = _passport(sdk, agent_id)
    assert sdk.proxy.get("custom", f"{proxy_env.origin}/v1/orders", passport_token=token).status == 200
    jti = sdk.passports.verify(token).get("jti") if hasattr(sdk.passports, "verify") else None
    claims = json.loads(__import__("base64").urlsafe_b64decode(token.split(".")[1] + "=="))
    sdk.passports.revoke(jti or claims["jti"], reason="test")
    with pytest.raises(UnauthorizedError) as e:
        sdk.proxy.get("custom", f"{proxy_env.origin}/v1/orders", passport_token=token)
    assert e.value.code == "PASSPORT_REVOKED"


def test_revoke_agent_access_and_disconnect(sdk: Stack, proxy_env: ProxyEnv) -> None:
    conn = _connect(sdk, proxy_env, _secret())
    agent_id = _standard_agent(sdk)
    sdk.services.grant_agent_access(agent_id, conn["id"], ["read"])
    token = _passport(sdk, agent_id)
    assert sdk.proxy.get("custom", f"{proxy_env.origin}/v1/orders", passport_token=token).status == 200
    sdk.services.revoke_agent_access(agent_id)
    perms = sdk.services.get_agent_permissions(agent_id)
    grants = perms["grants"] if isinstance(perms, dict) and "grants" in perms else perms
    assert not [g for g in grants if g.get("service_connection_id") == conn["id"]]
    with pytest.raises(StackError) as e:
        sdk.proxy.get("custom", f"{proxy_env.origin}/v1/orders", passport_token=token)
    assert e.value.status_code in (401, 403)

    # Disconnect: a fresh grant+passport on the disconnected connection is refused.
    conn2 = _connect(sdk, proxy_env, _secret())
    agent2 = _standard_agent(sdk)
    sdk.services.grant_agent_access(agent2, conn2["id"], ["read"])
    token2 = _passport(sdk, agent2)
    sdk.services.disconnect(conn2["id"])
    with pytest.raises(StackError) as d:
        sdk.proxy.get("custom", f"{proxy_env.origin}/v1/orders", passport_token=token2)
    assert d.value.status_code in (403, 404, 409)


def test_credential_retrieval_is_audited(sdk: Stack, proxy_env: ProxyEnv) -> None:
    secret = _secret()
    conn = _connect(sdk, proxy_env, secret)
    cred = sdk.credentials.get_by_connection(conn["id"])
    values = json.dumps({"credential": cred.credential, "credentials": cred.credentials})
    assert secret in values
    entries = sdk.audit.list(limit=50)["entries"]
    items = [e for e in entries if e["action"] == "credential.retrieve"]
    assert items, "credential.retrieve was not audited"
    assert secret not in json.dumps(entries)


def test_usage_counts_and_quota_exhaustion(proxy_env: ProxyEnv) -> None:
    # A fresh operator so the count starts at zero; its tier is free (QUOTA calls/month here).
    fresh = proxy_env.server.create_operator()
    with Stack(api_key=fresh, base_url=proxy_env.base_url, timeout=15.0) as sdk:
        u0 = sdk.proxy.usage()
        assert (u0["used"], u0["limit"], u0["remaining"]) == (0, QUOTA, QUOTA), u0
        conn = _connect(sdk, proxy_env, _secret())
        agent_id = _standard_agent(sdk)
        sdk.services.grant_agent_access(agent_id, conn["id"], ["read"])
        token = _passport(sdk, agent_id)
        for _ in range(QUOTA):
            assert sdk.proxy.get("custom", f"{proxy_env.origin}/v1/orders", passport_token=token).status == 200
        u1 = sdk.proxy.usage()
        assert (u1["used"], u1["remaining"]) == (QUOTA, 0), u1
        before = len(proxy_env.upstream.requests())
        with pytest.raises(StackError) as e:
            sdk.proxy.get("custom", f"{proxy_env.origin}/v1/orders", passport_token=token)
        assert (e.value.status_code, e.value.code) == (402, "QUOTA_EXCEEDED")
        assert len(proxy_env.upstream.requests()) == before


def test_tenant_isolation(sdk: Stack, sdk2: Stack, proxy_env: ProxyEnv) -> None:
    conn = _connect(sdk, proxy_env, _secret())
    agent_id = _standard_agent(sdk)
    assert conn["id"] not in {c["id"] for c in sdk2.services.list()}
    other_agent = _standard_agent(sdk2)
    with pytest.raises(NotFoundError):
        sdk2.services.grant_agent_access(other_agent, conn["id"], ["read"])
    with pytest.raises(NotFoundError):
        sdk2.services.disconnect(conn["id"])
    with pytest.raises(NotFoundError):
        sdk2.credentials.get_by_connection(conn["id"])
    with pytest.raises(NotFoundError):
        sdk2.services.get_agent_permissions(agent_id)
    # Operator 2's passport cannot be used with operator 1's key, nor the other way round.
    sdk.services.grant_agent_access(agent_id, conn["id"], ["read"])
    token = _passport(sdk, agent_id)
    with pytest.raises(StackError) as e:
        sdk2.proxy.get("custom", f"{proxy_env.origin}/v1/orders", passport_token=token)
    assert e.value.status_code in (401, 403)
