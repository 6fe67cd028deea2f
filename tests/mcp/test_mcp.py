"""The MCP endpoint (/mcp, Streamable HTTP) driven by the official `mcp` Python client."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from mcp import ClientSession
from mcp_client import dump, json_of, mcp_session, run, text_of
from stack_checks import HEX64
from stack_harness import unique_name

TOOLS = (
    "stack_register_agent",
    "stack_list_agents",
    "stack_allow_skill",
    "stack_disallow_skill",
    "stack_audit_list",
    "stack_audit_chain_head",
    "stack_audit_verify_chain",
)
REQUIRED_ARGS = {
    "stack_register_agent": {"name"},
    "stack_allow_skill": {"agent_id", "skill_id"},
    "stack_disallow_skill": {"agent_id", "skill_id"},
}


def _url(stack_server) -> str:  # type: ignore[no-untyped-def]
    return f"{stack_server.base_url}/mcp"


async def _call(session: ClientSession, name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    return dump(await session.call_tool(name, args or {}))


def _ok(result: dict[str, Any]) -> Any:
    assert not result.get("isError"), f"tool error: {text_of(result)}"
    assert result.get("content"), f"no content: {result}"
    data = json_of(result)
    # The text content is the same JSON as the structured content.
    text = text_of(result)
    if "structuredContent" in result and text:
        assert json.loads(text) == result["structuredContent"], "text and structuredContent disagree"
    return data


def _tool_error(result: dict[str, Any], code: str) -> None:
    assert result.get("isError") is True, f"expected a tool error, got {result}"
    assert code in text_of(result), f"error text lacks {code}: {text_of(result)!r}"


# --------------------------------------------------------------------------- handshake and catalog


def test_initialize(stack_server) -> None:  # type: ignore[no-untyped-def]
    async def go() -> dict[str, Any]:
        async with mcp_session(_url(stack_server), stack_server.api_key) as s:
            return dump(await s.initialize())

    init = run(go)
    assert init["protocolVersion"], init
    assert init["serverInfo"]["name"], init
    assert "tools" in init["capabilities"], init["capabilities"]
    assert "logging" in init["capabilities"], init["capabilities"]


@pytest.mark.filterwarnings("ignore:The logging capability is deprecated")
def test_logging_set_level_is_accepted(stack_server) -> None:  # type: ignore[no-untyped-def]
    # `logging` is declared so clients may send setLevel; STACK emits no logs.
    async def go() -> dict[str, Any]:
        async with mcp_session(_url(stack_server), stack_server.api_key) as s:
            await s.initialize()
            return dump(await s.set_logging_level("warning"))

    assert run(go) == {}


def test_list_tools(stack_server) -> None:  # type: ignore[no-untyped-def]
    async def go() -> list[dict[str, Any]]:
        async with mcp_session(_url(stack_server), stack_server.api_key) as s:
            await s.initialize()
            return [dump(t) for t in (await s.list_tools()).tools]

    tools = {t["name"]: t for t in run(go)}
    missing = [n for n in TOOLS if n not in tools]
    assert not missing, f"tools missing: {missing}; have {sorted(tools)}"
    for name, tool in tools.items():
        assert isinstance(tool.get("description"), str) and len(tool["description"]) > 10, name
        schema = tool.get("inputSchema")
        assert isinstance(schema, dict) and schema.get("type") == "object", (name, schema)
        assert isinstance(schema.get("properties", {}), dict), (name, schema)
    for name, required in REQUIRED_ARGS.items():
        schema = tools[name]["inputSchema"]
        assert required <= set(schema.get("required", [])), (name, schema.get("required"))
        assert required <= set(schema.get("properties", {})), (name, schema.get("properties"))
    assert "name" in tools["stack_register_agent"]["inputSchema"]["properties"]
    audit_props = set(tools["stack_audit_list"]["inputSchema"].get("properties", {}))
    assert {"limit", "since", "agent_id", "passport_jti"} <= audit_props, audit_props


# --------------------------------------------------------------------------- agents


def test_register_then_list(stack_server, http) -> None:  # type: ignore[no-untyped-def]
    name = unique_name("mcp-agent")

    async def go() -> tuple[dict[str, Any], dict[str, Any]]:
        async with mcp_session(_url(stack_server), stack_server.api_key) as s:
            await s.initialize()
            reg = await _call(
                s, "stack_register_agent",
                {"name": name, "description": "made over MCP", "accountability_mode": "logged"},
            )
            lst = await _call(s, "stack_list_agents")
            return reg, lst

    reg, lst = run(go)
    agent = _ok(reg)
    assert agent["id"].startswith("agt_") and agent["operator_id"].startswith("op_")
    assert agent["name"] == name
    assert agent["description"] == "made over MCP"
    assert agent["accountability_mode"] == "logged"
    assert agent["status"] == "active"
    assert agent["credential_access"] == "proxy_only"

    listed = _ok(lst)
    assert isinstance(listed, dict) and isinstance(listed.get("agents"), list), listed
    by_id = {a["id"]: a for a in listed["agents"]}
    assert agent["id"] in by_id and by_id[agent["id"]]["name"] == name

    # Same state as REST.
    rest = http.get(f"/v1/agents/{agent['id']}")
    assert rest.status_code == 200 and rest.json()["name"] == name
    assert rest.json()["accountability_mode"] == "logged"


def test_rest_agent_visible_over_mcp(stack_server, stack) -> None:  # type: ignore[no-untyped-def]
    a = stack.agents.register(unique_name("rest-made"))

    async def go() -> dict[str, Any]:
        async with mcp_session(_url(stack_server), stack_server.api_key) as s:
            await s.initialize()
            return await _call(s, "stack_list_agents", {})

    ids = {x["id"] for x in _ok(run(go))["agents"]}
    assert a.id in ids


def test_register_validation_and_conflict(stack_server) -> None:  # type: ignore[no-untyped-def]
    name = unique_name("dup")

    async def go() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        async with mcp_session(_url(stack_server), stack_server.api_key) as s:
            await s.initialize()
            bad = await _call(s, "stack_register_agent", {"name": "Not Valid!"})
            first = await _call(s, "stack_register_agent", {"name": name})
            dup = await _call(s, "stack_register_agent", {"name": name})
            return bad, first, dup

    bad, first, dup = run(go)
    _tool_error(bad, "VALIDATION_ERROR")
    _ok(first)
    _tool_error(dup, "CONFLICT")


def test_missing_required_argument_is_an_error(stack_server) -> None:  # type: ignore[no-untyped-def]
    async def go() -> Any:
        async with mcp_session(_url(stack_server), stack_server.api_key) as s:
            await s.initialize()
            try:
                return await _call(s, "stack_allow_skill", {"skill_id": "skl_only"})
            except Exception as exc:  # a JSON-RPC invalid-params error is also acceptable
                return exc

    out = run(go)
    if isinstance(out, dict):
        assert out.get("isError") is True, out
        assert "VALIDATION_ERROR" in text_of(out) or "agent_id" in text_of(out), text_of(out)
    else:
        assert "agent_id" in str(out) or "-32602" in str(out) or "nvalid" in str(out), repr(out)


def test_unknown_tool_is_an_error(stack_server) -> None:  # type: ignore[no-untyped-def]
    async def go() -> Any:
        async with mcp_session(_url(stack_server), stack_server.api_key) as s:
            await s.initialize()
            try:
                return await _call(s, "stack_no_such_tool", {})
            except Exception as exc:
                return exc

    out = run(go)
    if isinstance(out, dict):
        assert out.get("isError") is True, out


# --------------------------------------------------------------------------- skills


def test_allow_and_disallow_skill(stack_server, stack) -> None:  # type: ignore[no-untyped-def]
    a = stack.agents.register(unique_name("skills"))

    async def go() -> list[dict[str, Any]]:
        async with mcp_session(_url(stack_server), stack_server.api_key) as s:
            await s.initialize()
            return [
                await _call(s, "stack_allow_skill", {"agent_id": a.id, "skill_id": "skl_weather"}),
                await _call(s, "stack_allow_skill", {"agent_id": a.id, "skill_id": "skl_calendar"}),
                await _call(s, "stack_allow_skill", {"agent_id": a.id, "skill_id": "skl_weather"}),
                await _call(s, "stack_disallow_skill", {"agent_id": a.id, "skill_id": "skl_weather"}),
                await _call(s, "stack_audit_list", {"agent_id": a.id, "limit": 20}),
            ]

    allow1, allow2, allow_again, disallow, audit = run(go)
    one = _ok(allow1)
    assert one["id"] == a.id
    assert "skl_weather" in one["allowed_skills"], one
    both = _ok(allow2)
    assert sorted(both["allowed_skills"]) == ["skl_calendar", "skl_weather"], both["allowed_skills"]
    again = _ok(allow_again)
    assert sorted(again["allowed_skills"]) == ["skl_calendar", "skl_weather"], "allow must be idempotent"
    after = _ok(disallow)
    assert after["allowed_skills"] == ["skl_calendar"], after["allowed_skills"]

    # REST agrees.
    raw = stack._client.get(f"/v1/agents/{a.id}")
    assert raw["allowed_skills"] == ["skl_calendar"]

    actions = [e["action"] for e in _ok(audit)["entries"]]
    assert actions[0] == "skill.disallow", actions
    assert actions.count("skill.disallow") == 1
    assert actions.count("skill.allow") >= 2
    assert actions[-1] == "agent.register"


def test_skill_tools_on_unknown_agent(stack_server) -> None:  # type: ignore[no-untyped-def]
    async def go() -> tuple[dict[str, Any], dict[str, Any]]:
        async with mcp_session(_url(stack_server), stack_server.api_key) as s:
            await s.initialize()
            return (
                await _call(s, "stack_allow_skill", {"agent_id": "agt_doesnotexist", "skill_id": "skl_x"}),
                await _call(s, "stack_disallow_skill", {"agent_id": "agt_doesnotexist", "skill_id": "skl_x"}),
            )

    allow, disallow = run(go)
    _tool_error(allow, "NOT_FOUND")
    _tool_error(disallow, "NOT_FOUND")


# --------------------------------------------------------------------------- audit


def test_audit_tools(stack_server) -> None:  # type: ignore[no-untyped-def]
    key = stack_server.new_operator()  # fresh chain: exact counts

    async def go() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with mcp_session(_url(stack_server), key) as s:
            await s.initialize()
            out["head0"] = _ok(await _call(s, "stack_audit_chain_head"))
            out["reg"] = _ok(await _call(s, "stack_register_agent", {"name": unique_name("audit-mcp")}))
            aid = out["reg"]["id"]
            out["allow"] = _ok(await _call(s, "stack_allow_skill", {"agent_id": aid, "skill_id": "skl_a"}))
            out["head1"] = _ok(await _call(s, "stack_audit_chain_head"))
            out["verify"] = _ok(await _call(s, "stack_audit_verify_chain"))
            out["list"] = _ok(await _call(s, "stack_audit_list", {"limit": 10}))
            out["by_agent"] = _ok(await _call(s, "stack_audit_list", {"agent_id": aid}))
            out["limited"] = _ok(await _call(s, "stack_audit_list", {"limit": 1}))
            mark = out["list"]["max_timestamp"]
            out["since"] = _ok(await _call(s, "stack_audit_list", {"since": mark}))
            out["jti"] = _ok(await _call(s, "stack_audit_list", {"passport_jti": "pp_none"}))
            try:
                out["bad_limit"] = await _call(s, "stack_audit_list", {"limit": "lots"})
            except Exception as exc:  # JSON-RPC invalid params is fine too
                out["bad_limit"] = exc
        return out

    o = run(go)
    head0, head1 = o["head0"], o["head1"]
    assert head1["entry_count"] == head0["entry_count"] + 2, (head0, head1)
    assert HEX64.match(head1["head_hash"]) and head1["head_hash"] != head0["head_hash"]
    assert head1["operator_id"] == o["reg"]["operator_id"]

    newest = o["list"]["entries"][0]
    assert newest["action"] == "skill.allow"
    assert newest["entry_hash"] == head1["head_hash"]
    assert newest["entry_id"] == head1["last_entry_id"]
    assert o["list"]["max_timestamp"] == newest["timestamp"]

    v = o["verify"]
    assert v["ok"] is True and v["first_break"] is None
    assert v["entries_checked"] == head1["entry_count"]

    assert [e["action"] for e in o["by_agent"]["entries"]] == ["skill.allow", "agent.register"]
    assert len(o["limited"]["entries"]) == 1
    assert o["since"]["entries"] == []
    assert o["jti"]["entries"] == []
    bad = o["bad_limit"]
    if isinstance(bad, dict):
        assert bad.get("isError") is True, f"limit='lots' was accepted: {bad}"


# --------------------------------------------------------------------------- isolation and auth


def test_mcp_tenant_isolation(stack_server, stack) -> None:  # type: ignore[no-untyped-def]
    a = stack.agents.register(unique_name("mcp-private"))

    async def go() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        async with mcp_session(_url(stack_server), stack_server.second_api_key) as s:
            await s.initialize()
            return (
                await _call(s, "stack_list_agents"),
                await _call(s, "stack_allow_skill", {"agent_id": a.id, "skill_id": "skl_steal"}),
                await _call(s, "stack_audit_list", {"agent_id": a.id}),
            )

    lst, allow, audit = run(go)
    assert a.id not in {x["id"] for x in _ok(lst)["agents"]}
    _tool_error(allow, "NOT_FOUND")
    assert _ok(audit)["entries"] == []
    assert stack._client.get(f"/v1/agents/{a.id}")["allowed_skills"] == []


def _initialize_body() -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "stack-e2e", "version": "0"},
        },
    }


MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


@pytest.mark.parametrize("auth", [None, "Bearer sk_live_op_notavalidkey00000", "Basic Zm9vOmJhcg=="])
def test_mcp_requires_a_key(stack_server, auth: str | None) -> None:  # type: ignore[no-untyped-def]
    headers = dict(MCP_HEADERS)
    if auth:
        headers["Authorization"] = auth
    r = httpx.post(_url(stack_server), headers=headers, json=_initialize_body(), follow_redirects=False)
    assert r.status_code == 401, (r.status_code, r.text[:300])
    www = r.headers.get("www-authenticate")
    assert www and www.lower().startswith("bearer"), f"WWW-Authenticate: {www!r}"


def test_mcp_client_without_key_fails(stack_server) -> None:  # type: ignore[no-untyped-def]
    async def go() -> None:
        async with mcp_session(_url(stack_server), None) as s:
            await s.initialize()

    with pytest.raises(BaseException):  # noqa: B017 - any failure to connect is right here
        run(go, timeout=30)


def test_raw_initialize_with_key(stack_server) -> None:  # type: ignore[no-untyped-def]
    """A plain JSON-RPC initialize POST works with the key (transport sanity)."""
    r = httpx.post(
        _url(stack_server),
        headers={**MCP_HEADERS, "Authorization": f"Bearer {stack_server.api_key}"},
        json=_initialize_body(),
    )
    assert r.status_code == 200, (r.status_code, r.text[:300])
    ctype = r.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        body = r.json()
    else:
        assert ctype.startswith("text/event-stream"), ctype
        data = [line[5:].strip() for line in r.text.splitlines() if line.startswith("data:")]
        body = next(json.loads(d) for d in data if d)
    assert body["id"] == 1 and "result" in body, body
    assert body["result"]["protocolVersion"]


def test_tool_argument_validation(stack_server) -> None:  # type: ignore[no-untyped-def]
    async def go() -> dict[str, dict[str, Any]]:
        async with mcp_session(_url(stack_server), stack_server.api_key) as s:
            await s.initialize()
            return {
                "mode": await _call(s, "stack_register_agent", {"name": unique_name("m"), "accountability_mode": "chaos"}),
                "limit0": await _call(s, "stack_audit_list", {"limit": 0}),
                "limit1000": await _call(s, "stack_audit_list", {"limit": 1000}),
                "skill": await _call(s, "stack_allow_skill", {"agent_id": "agt_x", "skill_id": "bad skill!"}),
                "profile": await _call(
                    s, "stack_register_agent", {"name": unique_name("m"), "profile": "proxied-llm-bot", "future_field": 1}
                ),
            }

    o = run(go)
    for key in ("mode", "limit0", "limit1000", "skill"):
        _tool_error(o[key], "VALIDATION_ERROR")
    agent = _ok(o["profile"])
    assert (agent["credential_access"], agent["accountability_mode"]) == ("proxy_only", "logged")


def _rpc_body(resp: httpx.Response) -> dict[str, Any]:
    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in resp.text.splitlines() if line.startswith("data:")]
        return next(json.loads(d) for d in data if d)
    return resp.json()


def test_identity_is_per_request_not_per_session(stack_server, stack) -> None:  # type: ignore[no-untyped-def]
    """Operator B reusing operator A's MCP session id must not act as A."""
    a = stack.agents.register(unique_name("session-owner"))
    url = _url(stack_server)
    auth_a = {**MCP_HEADERS, "Authorization": f"Bearer {stack_server.api_key}"}
    auth_b = {**MCP_HEADERS, "Authorization": f"Bearer {stack_server.second_api_key}"}
    with httpx.Client(timeout=15.0) as c:
        init = c.post(url, headers=auth_a, json=_initialize_body())
        assert init.status_code == 200, init.text
        sid = init.headers.get("mcp-session-id")
        extra = {"Mcp-Session-Id": sid} if sid else {}
        n = c.post(url, headers={**auth_a, **extra}, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert n.status_code in (200, 202), n.text
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "stack_list_agents", "arguments": {}}}
        as_b = c.post(url, headers={**auth_b, **extra}, json=call)
        if as_b.status_code == 200:
            body = _rpc_body(as_b)
            if "result" in body:
                ids = {x["id"] for x in body["result"]["structuredContent"]["agents"]}
                assert a.id not in ids, "operator B saw operator A's agents through A's session"
        else:
            assert as_b.status_code in (400, 401, 403, 404), as_b.status_code
        as_a = c.post(url, headers={**auth_a, **extra}, json=call)
        assert as_a.status_code == 200
        assert a.id in {x["id"] for x in _rpc_body(as_a)["result"]["structuredContent"]["agents"]}
