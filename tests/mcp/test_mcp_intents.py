"""Intent tools on /mcp (stack_simulate_intent, stack_submit_intent,
stack_get_intent_approval) and the enforced-mode gate of stack_proxy_request,
driven by the official `mcp` Python client. Nothing here reaches an upstream:
every call is refused, or simulated, before egress."""

from __future__ import annotations

from typing import Any

import httpx
import jwt
from mcp import ClientSession
from mcp_client import dump, json_of, mcp_session, run, text_of
from stack_harness import unique_name

INTENT_TOOLS = {
    "stack_simulate_intent": {"passport_token", "intent"},
    "stack_submit_intent": {"passport_token", "intent"},
    "stack_get_intent_approval": {"approval_id"},
}
ORIGIN = "https://api.orders.example"


async def _call(session: ClientSession, name: str, args: dict[str, Any]) -> dict[str, Any]:
    return dump(await session.call_tool(name, args))


def _ok(result: dict[str, Any]) -> Any:
    assert not result.get("isError"), f"tool error: {text_of(result)}"
    return json_of(result)


def _err(result: dict[str, Any]) -> str:
    assert result.get("isError"), f"expected a tool error: {text_of(result)}"
    return json_of(result)["error"]["code"]


def _enforced_passport(base_url: str, key: str) -> tuple[str, str, str]:
    """(agent_id, passport token, jti) for an enforced agent granted a custom connection."""
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=15.0) as c:
        conn = c.post("/v1/services/custom", json={"name": unique_name("orders"), "credential": "sk_upstream_x",
                                                    "base_url": ORIGIN}).json()
        agent = c.post("/v1/agents/register", json={"name": unique_name("mcp-refunder")}).json()
        assert agent["accountability_mode"] == "enforced", agent
        g = c.post("/v1/services/grant", json={"agent_id": agent["id"], "service_connection_id": conn["id"],
                                               "scopes": ["read", "write"]})
        assert g.status_code == 201, g.text
        pp = c.post("/v1/passports/issue", json={"agent_id": agent["id"],
                                                 "intent": {"summary": "refunds", "services": ["custom"]}}).json()
        assert pp.get("token"), pp
        return agent["id"], pp["token"], pp["jti"]


def _intent(amount: int) -> dict[str, Any]:
    return {"target": {"service": "custom", "url": f"{ORIGIN}/v1/refunds"}, "action": "POST",
            "parameters": {"amount": amount}}


def test_intent_tools_listed(stack_server) -> None:  # type: ignore[no-untyped-def]
    async def go() -> list[dict[str, Any]]:
        async with mcp_session(f"{stack_server.base_url}/mcp", stack_server.api_key) as s:
            await s.initialize()
            return [dump(t) for t in (await s.list_tools()).tools]

    tools = {t["name"]: t for t in run(go)}
    for name, required in INTENT_TOOLS.items():
        assert set(tools[name]["inputSchema"].get("required", [])) == required, name
        assert "not implemented" not in tools[name]["description"].lower(), name
    assert (tools["stack_get_intent_approval"].get("annotations") or {}).get("readOnlyHint") is True
    assert (tools["stack_submit_intent"].get("annotations") or {}).get("readOnlyHint") is False
    assert "approval_id" in tools["stack_proxy_request"]["inputSchema"]["properties"]


def test_simulate_submit_and_gate_over_mcp(stack_server) -> None:  # type: ignore[no-untyped-def]
    key = stack_server.new_operator()
    other = stack_server.second_api_key
    agent_id, token, jti = _enforced_passport(stack_server.base_url, key)
    url = f"{stack_server.base_url}/mcp"

    async def go() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with mcp_session(url, key) as a, mcp_session(url, other) as b:
            await a.initialize()
            await b.initialize()
            out["sim"] = await _call(a, "stack_simulate_intent", {"passport_token": token, "intent": _intent(10)})
            out["bad"] = await _call(a, "stack_simulate_intent", {"passport_token": token, "intent": {"action": "GET"}})
            out["no_approval"] = await _call(a, "stack_proxy_request", {
                "passport_token": token, "service": "custom", "method": "POST",
                "url": f"{ORIGIN}/v1/refunds", "body": {"amount": 10}})
            out["sub"] = await _call(a, "stack_submit_intent", {"passport_token": token, "intent": _intent(10),
                                                                "expires_in_seconds": 600})
            approval_id = json_of(out["sub"]).get("approval_id", "ia_missing")
            out["get"] = await _call(a, "stack_get_intent_approval", {"approval_id": approval_id})
            out["pending_use"] = await _call(a, "stack_proxy_request", {
                "passport_token": token, "service": "custom", "method": "POST",
                "url": f"{ORIGIN}/v1/refunds", "body": {"amount": 10}, "approval_id": approval_id})
            out["other_get"] = await _call(b, "stack_get_intent_approval", {"approval_id": approval_id})
            out["unknown"] = await _call(a, "stack_get_intent_approval", {"approval_id": "ia_nope"})
        return out

    out = run(go)
    sim = _ok(out["sim"])
    assert sim["allowed"] is True and sim["denial_reasons"] == [], sim
    assert sim["claim_id"].startswith("sim_")
    claim = jwt.decode(sim["claim"], options={"verify_signature": False})
    assert (claim["type"], claim["passport_jti"], claim["sub"]) == ("intent_simulation", jti, agent_id)
    assert _err(out["bad"]) == "VALIDATION_ERROR"
    assert _err(out["no_approval"]) == "INTENT_APPROVAL_REQUIRED"
    sub = _ok(out["sub"])
    assert sub["status"] == "pending" and sub["approval_id"].startswith("ia_")
    row = _ok(out["get"])
    assert (row["id"], row["status"], row["passport_jti"]) == (sub["approval_id"], "pending", jti)
    assert _err(out["pending_use"]) == "INTENT_APPROVAL_INVALID"
    assert _err(out["other_get"]) == "NOT_FOUND"
    assert _err(out["unknown"]) == "NOT_FOUND"
