"""Passport tools on /mcp, driven by the official `mcp` Python client."""

from __future__ import annotations

import json
from typing import Any

import httpx
from mcp import ClientSession
from mcp_client import dump, json_of, mcp_session, run, text_of
from stack_harness import unique_name

PASSPORT_TOOLS = {
    "stack_issue_passport": {"agent_id"},
    "stack_verify_passport": {"token"},
    "stack_refresh_passport": {"token"},
    "stack_list_active_passports": set(),
    "stack_revoke_passport": {"jti"},
    "stack_revoke_agent_passports": {"agent_id"},
    "stack_revoke_session": {"session_id"},
    "stack_revoke_all_passports": {"confirm"},
    "stack_checkpoint": {"jti"},
    "stack_checkout": {"jti"},
    "stack_get_passport_report": {"jti"},
    "stack_list_pending_reviews": set(),
    "stack_decide_review": {"checkout_id", "decision"},
}


def _url(stack_server) -> str:  # type: ignore[no-untyped-def]
    return f"{stack_server.base_url}/mcp"


async def _call(session: ClientSession, name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    return dump(await session.call_tool(name, args or {}))


def _ok(result: dict[str, Any]) -> Any:
    assert not result.get("isError"), f"tool error: {text_of(result)}"
    data = json_of(result)
    text = text_of(result)
    if "structuredContent" in result and text:
        assert json.loads(text) == result["structuredContent"], "text and structuredContent disagree"
    return data


def test_passport_tools_listed(stack_server) -> None:  # type: ignore[no-untyped-def]
    async def go() -> list[dict[str, Any]]:
        async with mcp_session(_url(stack_server), stack_server.api_key) as s:
            await s.initialize()
            return [dump(t) for t in (await s.list_tools()).tools]

    tools = {t["name"]: t for t in run(go)}
    names = {n for n in tools if "passport" in n or n in PASSPORT_TOOLS}
    assert names == set(PASSPORT_TOOLS), sorted(names ^ set(PASSPORT_TOOLS))
    assert len(PASSPORT_TOOLS) == 13
    for name, required in PASSPORT_TOOLS.items():
        schema = tools[name]["inputSchema"]
        assert schema.get("type") == "object", (name, schema)
        assert set(schema.get("required", [])) == required, (name, schema.get("required"))
        assert required <= set(schema.get("properties", {})), (name, schema)
        assert len(tools[name]["description"]) > 20, name
    ann = tools["stack_verify_passport"].get("annotations") or {}
    assert ann.get("readOnlyHint") is True, ann
    ann = tools["stack_revoke_all_passports"].get("annotations") or {}
    assert ann.get("destructiveHint") is True, ann


def test_issue_verify_revoke(stack_server, stack, http: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    agent = stack.agents.register(unique_name("mcp-pp"))

    async def go() -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        async with mcp_session(_url(stack_server), stack_server.api_key) as s:
            await s.initialize()
            out["no_intent"] = await _call(s, "stack_issue_passport", {"agent_id": agent.id})
            out["issue"] = await _call(s, "stack_issue_passport", {
                "agent_id": agent.id,
                "intent": {"summary": "answer tickets", "services": ["zendesk"], "will_delegate": False},
                "ttl_seconds": 600,
            })
            token = json_of(out["issue"])["token"]
            jti = json_of(out["issue"])["jti"]
            out["verify"] = await _call(s, "stack_verify_passport", {"token": token})
            out["active"] = await _call(s, "stack_list_active_passports", {"agent_id": agent.id})
            out["revoke"] = await _call(s, "stack_revoke_passport", {"jti": jti, "reason": "done over mcp"})
            out["verify_after"] = await _call(s, "stack_verify_passport", {"token": token})
            out["revoke_all_unconfirmed"] = await _call(s, "stack_revoke_all_passports", {"reason": "oops"})
            out["revoke_all_false"] = await _call(s, "stack_revoke_all_passports", {"confirm": False})
        return out

    out = run(go)
    assert out["no_intent"].get("isError") is True
    assert "ACCOUNTABILITY_REQUIRED" in text_of(out["no_intent"])

    issued = _ok(out["issue"])
    assert issued["jti"].startswith("pp_") and issued["accountability"] == "enforced"
    assert issued["mission_id"].startswith("ms_")
    verified = _ok(out["verify"])
    assert verified["valid"] is True and verified["jti"] == issued["jti"] and verified["agent_id"] == agent.id
    assert verified["claims"]["stk"]["intent_services"] == ["zendesk"]
    active = _ok(out["active"])
    assert [p["jti"] for p in active["passports"]] == [issued["jti"]]
    revoked = _ok(out["revoke"])
    assert revoked["revoked"] is True and revoked["jti"] == issued["jti"] and revoked["reason"] == "done over mcp"
    after = _ok(out["verify_after"])
    assert after["valid"] is False and after["reason"] == "revoked"

    for key in ("revoke_all_unconfirmed", "revoke_all_false"):
        res = out[key]
        assert res.get("isError") is True, res
        assert "confirm" in text_of(res), text_of(res)

    # Same state over REST; nothing else was revoked by the refused revoke-all.
    assert http.post("/v1/passports/verify", json={"token": issued["token"]}).json()["reason"] == "revoked"
    actions = [e["action"] for e in http.get("/v1/audit", params={"limit": "100"}).json()["entries"]]
    assert "passport.revoke_all" not in actions


def test_revoke_all_confirmed(stack_server) -> None:  # type: ignore[no-untyped-def]
    key = stack_server.new_operator()
    from getstack import Stack

    client = Stack(api_key=key, base_url=stack_server.base_url, timeout=15.0)
    try:
        agent = client.agents.register(unique_name("mcp-all"), accountability_mode="standard")
        m = client.missions.open("x", agent_id=agent.id)
        p = client.passports.issue(agent.id, mission_ids=[m["mission_id"]])

        async def go() -> tuple[dict[str, Any], dict[str, Any]]:
            async with mcp_session(_url(stack_server), key) as s:
                await s.initialize()
                before = await _call(s, "stack_list_active_passports", {})
                res = await _call(s, "stack_revoke_all_passports", {"confirm": True, "reason": "drill"})
                return before, res

        before, res = run(go)
        assert [x["jti"] for x in _ok(before)["passports"]] == [p.jti]
        body = _ok(res)
        assert body["count"] == 1 and body["revoked_jtis"] == [p.jti] and body["reason"] == "drill"
        assert client.passports.verify(p.token)["reason"] == "revoked"
    finally:
        client.close()
