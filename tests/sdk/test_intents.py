"""Intent simulation, submission and approval, and the enforced-mode gate on
the proxy, driven through the real getstack SDK (`stack.intents.*`,
`stack.proxy.request(..., approval_id=...)`) against a local upstream HTTP
server that records what reaches it.

The upstream and the proxy-ready server come from `stack_upstream`, so the
proxy's real egress path is used.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from getstack import Stack
from getstack.errors import ForbiddenError, NotFoundError, StackError
from stack_harness import backends, unique_name
from stack_upstream import Upstream, proxy_ready_server


@dataclass
class Env:
    base_url: str
    key: str
    second_key: str
    upstream: Upstream
    origin: str


@pytest.fixture(scope="module", params=backends())
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    with proxy_ready_server(request.param) as (srv, upstream):
        assert srv.api_key
        yield Env(
            base_url=srv.base_url,
            key=srv.api_key,
            second_key=srv.create_operator(unique_name("intents-b")),
            upstream=upstream,
            origin=upstream.origin(),
        )


@pytest.fixture
def sdk(env: Env) -> Iterator[Stack]:
    client = Stack(api_key=env.key, base_url=env.base_url, timeout=15.0)
    yield client
    client.close()


@pytest.fixture
def sdk2(env: Env) -> Iterator[Stack]:
    client = Stack(api_key=env.second_key, base_url=env.base_url, timeout=15.0)
    yield client
    client.close()


@dataclass
class Agent:
    id: str
    token: str
    jti: str


def _enforced_agent(sdk: Stack, env: Env) -> Agent:
    """A connection, an enforced agent (the default mode) granted read and
    write on it, and a passport from a mission."""
    conn = sdk.services.connect_custom(
        unique_name("orders"),
        {"api_key": "upstream_SECRET_" + secrets.token_hex(8), "base_url": env.origin},
        scopes=["read", "write"],
    )
    agent = sdk.agents.register(unique_name("refunder"))
    assert agent.accountability_mode == "enforced"
    sdk.services.grant_agent_access(agent.id, conn["id"], ["read", "write"])
    mission = sdk.missions.open("refund orders", agent_id=agent.id, intent_services=["custom"])
    p = sdk.passports.issue(agent.id, intent="refund orders", services=["custom"],
                            mission_ids=[mission["mission_id"]])
    return Agent(id=agent.id, token=p.token, jti=p.jti)


def _intent(env: Env, agent: Agent, amount: int) -> dict[str, Any]:
    return {
        "type": "intent",
        "intent_type": "proxy_request",
        "agent_id": agent.id,
        "target": {"service": "custom", "url": f"{env.origin}/v1/refunds"},
        "action": "POST",
        "parameters": {"order": "o-1", "amount": amount},
        "reason": "the customer asked",
        "estimated_cost": {"usd": 0},
        "submitted_at": "2026-11-22T10:00:00Z",
    }


def _refund(sdk: Stack, env: Env, agent: Agent, amount: int, approval_id: str | None = None) -> Any:
    return sdk.proxy.request("custom", f"{env.origin}/v1/refunds", "POST",
                             body={"amount": amount, "order": "o-1"},
                             passport_token=agent.token, approval_id=approval_id)


def test_enforced_calls_need_an_approved_intent_used_once(sdk: Stack, env: Env) -> None:
    agent = _enforced_agent(sdk, env)
    before = len(env.upstream.requests())

    with pytest.raises(ForbiddenError) as missing:
        _refund(sdk, env, agent, 10)
    assert missing.value.code == "INTENT_APPROVAL_REQUIRED"

    sim = sdk.intents.simulate(_intent(env, agent, 10), agent.token)
    assert sim["allowed"] is True, sim
    assert sim["denial_reasons"] == []
    assert sim["predicted_detector_fires"] == []
    assert sim["simulated_cost"]["proxy_calls"] == 1
    assert sim["claim_id"].startswith("sim_")
    assert sim["diagnostics"]["requires_approval"] is True
    # The claim is a JWS signed with a key of the public JWKS.
    jwks = jwt.PyJWKClient(f"{env.base_url}/v1/.well-known/jwks.json")
    key = jwks.get_signing_key_from_jwt(sim["claim"])
    claim = jwt.decode(sim["claim"], key.key, algorithms=["EdDSA"])
    assert claim["type"] == "intent_simulation"
    assert claim["jti"] == sim["claim_id"]
    assert claim["passport_jti"] == agent.jti
    assert claim["allowed"] is True
    assert jwt.get_unverified_header(sim["claim"])["typ"] == "intent-simulation+jwt"

    out = sdk.intents.submit(_intent(env, agent, 10), agent.token)
    approval_id = out["approval_id"]
    assert approval_id.startswith("ia_") and out["status"] == "pending"
    assert out["intent_claim_id"].startswith("pc_")
    assert out["simulated_claim_id"].startswith("sim_")
    assert out["simulation"]["allowed"] is True
    assert out["expires_at"].endswith("Z")
    row = sdk.intents.get(approval_id)
    assert (row["id"], row["status"], row["agent_id"]) == (approval_id, "pending", agent.id)
    assert row["intent"]["reason"] == "the customer asked"
    queue = sdk.intents.list_pending()
    assert approval_id in [i["id"] for i in queue["items"]]

    with pytest.raises(ForbiddenError) as pending:
        _refund(sdk, env, agent, 10, approval_id)
    assert pending.value.code == "INTENT_APPROVAL_INVALID"

    approved = sdk.intents.approve(approval_id, notes="fine")
    assert approved["status"] == "approved" and approved["notes"] == "fine"
    assert approval_id not in [i["id"] for i in sdk.intents.list_pending()["items"]]

    with pytest.raises(ForbiddenError) as other_body:
        _refund(sdk, env, agent, 99, approval_id)
    assert other_body.value.code == "INTENT_APPROVAL_MISMATCH"
    assert len(env.upstream.requests()) == before

    r = _refund(sdk, env, agent, 10, approval_id)
    assert r.ok() and r.status == 200, r
    seen = env.upstream.requests()[before:]
    assert len(seen) == 1
    assert (seen[0]["method"], seen[0]["path"]) == ("POST", "/v1/refunds")
    assert json.loads(seen[0]["body"]) == {"amount": 10, "order": "o-1"}
    assert sdk.intents.get(approval_id)["status"] == "consumed"

    with pytest.raises(ForbiddenError) as again:
        _refund(sdk, env, agent, 10, approval_id)
    assert again.value.code == "INTENT_APPROVAL_CONSUMED"
    assert len(env.upstream.requests()) == before + 1

    actions = [e["action"] for e in sdk.audit.list(limit=100, agent_id=agent.id)["entries"]]
    for wanted in ("intent.simulate", "intent.submit", "intent.approve", "intent.consume"):
        assert wanted in actions, (wanted, actions)


def test_simulation_reports_denials_without_calling_upstream(sdk: Stack, env: Env) -> None:
    agent = _enforced_agent(sdk, env)
    before = len(env.upstream.requests())
    intent = _intent(env, agent, 10)
    intent["target"] = {"service": "custom", "url": "http://elsewhere.test/v1/refunds"}
    sim = sdk.intents.simulate(intent, agent.token, persist=False)
    assert sim["allowed"] is False
    assert [r["code"] for r in sim["denial_reasons"]] == ["SCOPE_DENIED"], sim
    assert sim["predicted_detector_fires"][0]["detector"] == "credential_outside_scope"
    assert sim["claim_id"] is None
    unknown = dict(_intent(env, agent, 10), target={"service": "slack", "url": "https://slack.com/api/chat.postMessage"})
    sim = sdk.intents.simulate(unknown, agent.token)
    assert sim["allowed"] is False and sim["denial_reasons"][0]["code"] == "SCOPE_DENIED"
    with pytest.raises(StackError) as bad:
        sdk.intents.simulate({"action": "POST"}, agent.token)
    assert (bad.value.status_code, bad.value.code) == (400, "VALIDATION_ERROR")
    assert len(env.upstream.requests()) == before


def test_submit_and_wait_sees_the_operator_decision(sdk: Stack, env: Env) -> None:
    agent = _enforced_agent(sdk, env)
    agent_sdk = Stack(api_key=env.key, base_url=env.base_url, timeout=15.0)
    decided: list[str] = []

    def operator() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not decided:
            for item in sdk.intents.list_pending(limit=100)["items"]:
                if item["agent_id"] == agent.id:
                    sdk.intents.approve(item["id"])
                    decided.append(item["id"])
                    return
            time.sleep(0.1)

    t = threading.Thread(target=operator)
    t.start()
    try:
        res = agent_sdk.intents.submit_and_wait(_intent(env, agent, 15), agent.token,
                                                timeout_seconds=20, poll_interval_seconds=0.2)
    finally:
        t.join()
        agent_sdk.close()
    assert res["timed_out"] is False
    assert res["final"]["status"] == "approved"
    assert decided == [res["initial"]["approval_id"]]
    r = _refund(sdk, env, agent, 15, res["final"]["id"])
    assert r.ok()


def test_approvals_expire_server_side(sdk: Stack, env: Env) -> None:
    agent = _enforced_agent(sdk, env)
    res = sdk.intents.submit_and_wait(_intent(env, agent, 20), agent.token, expires_in_seconds=1,
                                      timeout_seconds=15, poll_interval_seconds=0.25)
    assert res["timed_out"] is False
    assert res["final"]["status"] == "expired"
    approval_id = res["initial"]["approval_id"]
    with pytest.raises(StackError) as late:
        sdk.intents.approve(approval_id)
    assert (late.value.status_code, late.value.code) == (409, "CONFLICT")
    assert late.value.details["status"] == "expired"
    with pytest.raises(ForbiddenError) as used:
        _refund(sdk, env, agent, 20, approval_id)
    assert used.value.code == "INTENT_APPROVAL_EXPIRED"


def test_reject_revokes_the_passport_and_can_block_the_agent(sdk: Stack, env: Env) -> None:
    agent = _enforced_agent(sdk, env)
    approval_id = sdk.intents.submit(_intent(env, agent, 30), agent.token, skip_simulation=True)["approval_id"]
    assert sdk.intents.get(approval_id)["simulation"] is None
    out = sdk.intents.reject(approval_id, notes="no refunds today", block_future=True)
    assert out["status"] == "rejected" and out["block_future"] is True
    assert out["passport_revoked"] is True and agent.jti in out["revoked_jtis"]
    assert out["agent_blocked"] is True
    assert sdk.passports.verify(agent.token)["valid"] is False
    assert sdk.agents.get(agent.id).passport_blocked is True
    with pytest.raises(StackError) as blocked:
        sdk.passports.issue(agent.id, intent="again", services=["custom"],
                            mission_ids=[sdk.missions.open("again", agent_id=agent.id,
                                                           intent_services=["custom"])["mission_id"]])
    assert blocked.value.code == "PASSPORT_BLOCKED"
    assert sdk.intents.get(approval_id)["status"] == "rejected"
    # A repeated reject (a retry) answers with the first decision; approving stays refused.
    again = sdk.intents.reject(approval_id)
    assert {k: again[k] for k in ("status", "decided_at", "notes", "block_future")} == \
        {k: out[k] for k in ("status", "decided_at", "notes", "block_future")}
    assert again["passport_revoked"] is True and again["agent_blocked"] is True
    with pytest.raises(StackError) as decided:
        sdk.intents.approve(approval_id)
    assert (decided.value.status_code, decided.value.code) == (409, "CONFLICT")
    assert decided.value.details["status"] == "rejected"


def test_other_operators_cannot_see_or_decide(sdk: Stack, sdk2: Stack, env: Env) -> None:
    agent = _enforced_agent(sdk, env)
    approval_id = sdk.intents.submit(_intent(env, agent, 40), agent.token)["approval_id"]
    with pytest.raises(NotFoundError):
        sdk2.intents.get(approval_id)
    with pytest.raises(NotFoundError):
        sdk2.intents.approve(approval_id)
    with pytest.raises(NotFoundError):
        sdk2.intents.reject(approval_id, block_future=True)
    with pytest.raises(NotFoundError):
        sdk.intents.get("ia_doesnotexist")
    assert approval_id not in [i["id"] for i in sdk2.intents.list_pending()["items"]]
    # The second operator cannot submit with the first operator's passport.
    with pytest.raises(StackError) as foreign:
        sdk2.intents.submit(_intent(env, agent, 40), agent.token)
    assert foreign.value.status_code == 401
    assert sdk.intents.get(approval_id)["status"] == "pending"
