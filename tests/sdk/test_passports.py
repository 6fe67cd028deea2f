"""Passports, missions and accountability through the published getstack 4.0.0
SDK (and PyJWT for the offline checks), exactly as users call them."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from getstack import (
    ForbiddenError,
    MissionEndedError,
    NotFoundError,
    Passport,
    PassportReport,
    Stack,
    StackError,
    UnauthorizedError,
    verify_passport_offline,
)
from stack_checks import assert_envelope, export_all, parse_iso
from stack_harness import unique_name

GOV = "gva_e2e_human_ok"


# --------------------------------------------------------------------------- helpers


def _claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _jwks_url(stack_server) -> str:  # type: ignore[no-untyped-def]
    return f"{stack_server.base_url}/v1/.well-known/jwks.json"


def _start(stack: Stack, agent_id: str, intent: str = "triage the inbox", services: list[str] | None = None,
           **passport: Any) -> dict[str, Any]:
    return stack.missions.start(
        agent_id=agent_id,
        mission={"intent_summary": intent, "intent_services": services if services is not None else ["gmail"]},
        passport=passport or None,
    )


def _open(stack: Stack, agent_id: str, intent: str = "weekly report") -> str:
    m = stack.missions.open(intent, agent_id=agent_id, intent_services=["resend"])
    assert m["mission_id"].startswith("ms_"), m
    return str(m["mission_id"])


def _bearer(stack_server, token: str) -> httpx.Client:  # type: ignore[no-untyped-def]
    return httpx.Client(base_url=stack_server.base_url, headers={"Authorization": f"Bearer {token}"},
                        timeout=15.0, follow_redirects=False)


@pytest.fixture
def op(stack_server) -> Iterator[tuple[Stack, httpx.Client]]:  # type: ignore[no-untyped-def]
    """A brand-new operator (empty review queue and audit chain): SDK + raw client."""
    key = stack_server.new_operator()
    client = Stack(api_key=key, base_url=stack_server.base_url, timeout=15.0)
    raw = _bearer(stack_server, key)
    yield client, raw
    raw.close()
    client.close()


# --------------------------------------------------------------------------- issue


def test_missions_start_issues_a_passport(stack: Stack) -> None:
    a = stack.agents.register(unique_name("pp-start"))
    started = _start(stack, a.id, "triage the inbox", ["gmail", "slack"])
    assert started["mission_id"].startswith("ms_")
    assert started["claim_id"]
    parse_iso(started["expires_at"])
    pp = started["passport"]
    assert pp["jti"].startswith("pp_")
    assert pp["accountability"] == "enforced"
    c = _claims(pp["token"])
    assert c["jti"] == pp["jti"]
    assert c["sub"] == a.id == c["stk"]["agent_id"]
    assert c["stk"]["mission_ids"] == [started["mission_id"]]
    assert c["stk"]["intent_summary"] == "triage the inbox"
    assert c["stk"]["intent_services"] == ["gmail", "slack"]
    assert c["stk"]["accountability"] == "enforced"
    # Enforced: the JWT lives one checkpoint interval (default 300 s).
    assert c["stk"]["checkpoint_interval"] == 300
    assert c["exp"] - c["iat"] == 300
    assert parse_iso(pp["expires_at"]).timestamp() == c["exp"]
    # The passport never outlives the mission.
    assert c["exp"] <= parse_iso(started["expires_at"]).timestamp()
    m = stack.missions.get(started["mission_id"])
    assert m["status"] == "active" and m["agent_id"] == a.id


def test_issue_with_mission_ids_for_each_mode(stack: Stack) -> None:
    for mode in ("enforced", "logged", "standard"):
        a = stack.agents.register(unique_name(f"pp-{mode}"), accountability_mode=mode)
        mission_id = _open(stack, a.id)
        p = stack.passports.issue(a.id, mission_ids=[mission_id], intent="send the weekly report",
                                  services=["resend"], ttl_seconds=600)
        assert isinstance(p, Passport)
        assert p.jti.startswith("pp_")
        assert p.accountability == mode
        c = _claims(p.token)
        assert c["stk"]["accountability"] == mode
        assert c["stk"]["mission_id"] == mission_id
        assert c["stk"]["services"] == []  # no services exist yet
        assert c["stk"]["delegation_depth"] == 0
        assert c["stk"]["session_id"].startswith("ses_")
        if mode == "enforced":
            assert c["exp"] - c["iat"] == 300
            assert c["stk"]["checkpoint_interval"] == 300
        else:
            assert c["exp"] - c["iat"] == 600
            assert "checkpoint_interval" not in c["stk"] or c["stk"]["checkpoint_interval"] is None


def test_accountability_required(stack: Stack, http: httpx.Client) -> None:
    enforced = stack.agents.register(unique_name("pp-noint"))
    logged = stack.agents.register(unique_name("pp-noint-log"), accountability_mode="logged")
    standard = stack.agents.register(unique_name("pp-noint-std"), accountability_mode="standard")
    for agent in (enforced, logged):
        mission_id = _open(stack, agent.id)
        with pytest.raises(StackError) as ei:
            stack.passports.issue(agent.id, mission_ids=[mission_id])
        assert ei.value.status_code == 400
        assert ei.value.code == "ACCOUNTABILITY_REQUIRED"
        assert agent.id in str(ei.value)
    # Same on the wire.
    r = http.post("/v1/passports/issue", json={"agent_id": enforced.id, "mission_ids": [_open(stack, enforced.id)]})
    assert_envelope(r, 400, "ACCOUNTABILITY_REQUIRED")
    # A standard agent needs no intent.
    p = stack.passports.issue(standard.id, mission_ids=[_open(stack, standard.id)])
    assert p.accountability == "standard"
    assert "intent_summary" not in _claims(p.token)["stk"] or not _claims(p.token)["stk"]["intent_summary"]


def test_sdk_requires_one_mission_client_side(stack: Stack) -> None:
    a = stack.agents.register(unique_name("pp-nomission"))
    with pytest.raises(ValueError):
        stack.passports.issue(a.id, intent="x")
    with pytest.raises(ValueError):
        stack.passports.issue(a.id, intent="x", mission_ids=["ms_a", "ms_b"])


# --------------------------------------------------------------------------- offline verification


def test_offline_verify_with_the_sdk(stack_server, stack: Stack) -> None:  # type: ignore[no-untyped-def]
    a = stack.agents.register(unique_name("pp-offline"))
    started = _start(stack, a.id)
    token = started["passport"]["token"]

    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA" and header["typ"] == "JWT"
    jwks = httpx.get(_jwks_url(stack_server)).json()
    assert header["kid"] in {k["kid"] for k in jwks["keys"]}
    for k in jwks["keys"]:
        assert k["kty"] == "OKP" and k["crv"] == "Ed25519" and "d" not in k

    claims = verify_passport_offline(token, jwks_url=_jwks_url(stack_server))
    assert claims["iss"] == "getstack.run"
    assert claims["aud"] == "stack:passport"
    assert claims["sub"] == a.id == claims["stk"]["agent_id"]
    assert claims["jti"] == started["passport"]["jti"]
    assert isinstance(claims["exp"], int) and isinstance(claims["iat"], int)
    assert claims["iat"] <= time.time() + 1 < claims["exp"]
    assert claims["stk"]["operator_id"].startswith("op_")
    assert claims["stk"]["mission_ids"] == [started["mission_id"]]

    # Air-gapped: the same key handed over as a JWK.
    jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    assert verify_passport_offline(token, public_jwk=jwk)["jti"] == claims["jti"]

    # Tampered payload: flip one character of the payload segment.
    h, p, s = token.split(".")
    i = len(p) // 2
    flipped = p[:i] + ("A" if p[i] != "A" else "B") + p[i + 1:]
    with pytest.raises(ValueError):
        verify_passport_offline(f"{h}.{flipped}.{s}", jwks_url=_jwks_url(stack_server))
    # A payload changed meaningfully (other agent) and re-encoded, old signature.
    body = _claims(token)
    body["sub"] = body["stk"]["agent_id"] = "agt_someoneelse00000000000"
    forged = f"{h}.{_b64url(json.dumps(body).encode())}.{s}"
    with pytest.raises(ValueError):
        verify_passport_offline(forged, jwks_url=_jwks_url(stack_server))

    # Re-signed with another Ed25519 key under our kid.
    other = Ed25519PrivateKey.generate()
    resigned = jwt.encode(_claims(token), other, algorithm="EdDSA", headers={"kid": header["kid"]})
    with pytest.raises(ValueError):
        verify_passport_offline(resigned, jwks_url=_jwks_url(stack_server))
    # ... or under a kid we never published.
    unknown = jwt.encode(_claims(token), other, algorithm="EdDSA", headers={"kid": "not-our-key"})
    with pytest.raises(ValueError):
        verify_passport_offline(unknown, jwks_url=_jwks_url(stack_server))
    # Wrong audience / issuer expectations are refused.
    with pytest.raises(ValueError):
        verify_passport_offline(token, jwks_url=_jwks_url(stack_server), audience="stack:other")
    with pytest.raises(ValueError):
        verify_passport_offline(token, jwks_url=_jwks_url(stack_server), issuer="https://api.getstack.run")

    # The server agrees on every forgery.
    for bad, reason in ((resigned, "bad_signature"), (unknown, "unknown_key"), (forged, "bad_signature")):
        v = stack.passports.verify(bad)
        assert v["valid"] is False and v["reason"] == reason, v
    v = stack.passports.verify("not.a.jwt")
    assert v["valid"] is False and v["reason"] == "malformed", v


def test_offline_verify_with_plain_pyjwt(stack_server, stack: Stack) -> None:  # type: ignore[no-untyped-def]
    a = stack.agents.register(unique_name("pp-pyjwt"), accountability_mode="standard")
    p = stack.passports.issue(a.id, mission_ids=[_open(stack, a.id)])
    client = jwt.PyJWKClient(_jwks_url(stack_server))
    key = client.get_signing_key_from_jwt(p.token)
    claims = jwt.decode(p.token, key.key, algorithms=["EdDSA"], audience="stack:passport", issuer="getstack.run",
                        options={"require": ["exp", "iat", "jti", "sub", "iss", "aud"]})
    assert claims["jti"] == p.jti
    assert claims["sub"] == a.id
    other = Ed25519PrivateKey.generate()
    resigned = jwt.encode(claims, other, algorithm="EdDSA", headers={"kid": key.key_id})
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(resigned, key.key, algorithms=["EdDSA"], audience="stack:passport", issuer="getstack.run")


# --------------------------------------------------------------------------- verify, refresh


def test_verify_valid_and_revoked(stack_server, stack: Stack) -> None:  # type: ignore[no-untyped-def]
    a = stack.agents.register(unique_name("pp-verify"))
    started = _start(stack, a.id)
    token, jti = started["passport"]["token"], started["passport"]["jti"]
    v = stack.passports.verify(token)
    assert v["valid"] is True
    assert v["jti"] == jti and v["agent_id"] == a.id
    assert v["mission_id"] == started["mission_id"]
    assert v["accountability"] == "enforced"
    assert v["claims"]["sub"] == a.id
    # /verify is public: no credential needed.
    anon = httpx.post(f"{stack_server.base_url}/v1/passports/verify", json={"token": token})
    assert anon.status_code == 200 and anon.json()["valid"] is True

    r = stack.passports.revoke(jti, reason="test over")
    assert r["revoked"] is True and r["jti"] == jti and r["count"] == 1 and r["reason"] == "test over"
    v = stack.passports.verify(token)
    assert v == {**v, "valid": False, "reason": "revoked", "code": "PASSPORT_REVOKED"}
    # Offline verification does not know about revocation (by design).
    assert verify_passport_offline(token, jwks_url=_jwks_url(stack_server))["jti"] == jti
    # A revoked passport is no credential.
    with _bearer(stack_server, token) as c:
        assert_envelope(c.get("/v1/agents"), 401, "PASSPORT_REVOKED")
    # Unknown jti.
    with pytest.raises(NotFoundError):
        stack.passports.revoke("pp_doesnotexist00000000000")


def test_refresh_keeps_session_new_jti(stack: Stack) -> None:
    a = stack.agents.register(unique_name("pp-refresh"), accountability_mode="logged")
    mission_id = _open(stack, a.id)
    p = stack.passports.issue(a.id, mission_ids=[mission_id], intent="report", ttl_seconds=120)
    before = _claims(p.token)
    time.sleep(1.1)
    r = stack.passports.refresh(p.token, ttl_seconds=300)
    after = _claims(r.token)
    assert r.jti != p.jti and r.jti.startswith("pp_")
    assert after["jti"] == r.jti
    assert after["stk"]["session_id"] == before["stk"]["session_id"]
    assert after["stk"]["mission_ids"] == [mission_id]
    assert after["sub"] == a.id
    assert after["exp"] - after["iat"] == 300
    assert after["exp"] > before["exp"]
    assert stack.passports.verify(r.token)["valid"] is True
    # The refreshed passport shows up as active, with its lineage.
    active = {x["jti"]: x for x in stack.passports.list_active(agent_id=a.id)}
    assert active[r.jti]["refreshed_from"] == p.jti
    assert active[r.jti]["session_id"] == before["stk"]["session_id"]


def test_passport_session_auto_refresh(stack: Stack) -> None:
    a = stack.agents.register(unique_name("pp-session"), accountability_mode="standard")
    mission_id = _open(stack, a.id)
    session = stack.issue_passport(agent_id=a.id, mission_ids=[mission_id], ttl_seconds=120)
    first = session.token
    assert session.get_token(grace_seconds=60) == first  # 120 s left: no refresh
    time.sleep(1.1)
    second = session.get_token(grace_seconds=3600)  # forces a refresh
    assert second != first
    assert _claims(second)["stk"]["session_id"] == _claims(first)["stk"]["session_id"]
    assert session.expires_at_seconds == _claims(second)["exp"]
    stack.missions.complete(mission_id)
    with pytest.raises(MissionEndedError) as ei:
        session.get_token(grace_seconds=3600)
    assert ei.value.code == "MISSION_ENDED"
    assert ei.value.mission_id == mission_id and ei.value.mission_state == "completed"


# --------------------------------------------------------------------------- delegation


def test_delegate_depth_limit_and_cascade(op) -> None:  # type: ignore[no-untyped-def]
    stack, raw = op
    root_agent = stack.agents.register(unique_name("pp-root"))
    kids = [stack.agents.register(unique_name(f"pp-kid{i}")) for i in range(5)]
    started = _start(stack, root_agent.id)
    root = started["passport"]
    chain = [root["token"]]
    jtis = [root["jti"]]
    for depth in range(1, 5):
        # No scopes given: the SDK derives them from the parent's stk.services (empty).
        child = stack.passports.delegate(chain[-1], kids[depth - 1].id)
        c = _claims(child.token)
        assert c["sub"] == kids[depth - 1].id
        assert c["stk"]["delegation_depth"] == depth
        assert c["stk"]["parent_passport_id"] == jtis[-1]
        assert c["stk"]["session_id"] == root["session_id"]
        assert c["stk"]["services"] == []
        assert c["stk"]["accountability"] == "enforced"
        assert c["exp"] <= _claims(chain[-1])["exp"]
        assert child.accountability == "enforced"
        chain.append(child.token)
        jtis.append(child.jti)
    with pytest.raises(StackError) as ei:
        stack.passports.delegate(chain[-1], kids[4].id)
    assert ei.value.status_code == 400 and ei.value.code == "DELEGATION_DEPTH_EXCEEDED"

    r = stack.passports.revoke(root["jti"], reason="stop the chain")
    assert r["count"] == 5
    assert sorted(r["cascaded"]) == sorted(jtis[1:])
    for token in chain:
        v = stack.passports.verify(token)
        assert v["valid"] is False and v["reason"] == "revoked", v
    active = {x["jti"] for x in stack.passports.list_active()}
    assert not active & set(jtis)

    entries = export_all(raw)
    revokes = [e for e in entries if e["action"] == "passport.revoke"]
    cascades = [e for e in entries if e["action"] == "passport.revoke_cascade"]
    assert [e["target_id"] for e in revokes] == [root["jti"]]
    assert sorted(e["target_id"] for e in cascades) == sorted(jtis[1:])
    for e in cascades:
        assert e["details"]["reason"] == "stop the chain"
        assert e["details"]["cascaded_from"] in jtis
    assert len([e for e in entries if e["action"] == "passport.delegate"]) == 4


def test_delegation_never_lowers_accountability(stack: Stack) -> None:
    parent = stack.agents.register(unique_name("pp-enf"))
    child_std = stack.agents.register(unique_name("pp-std"), accountability_mode="standard")
    child_log = stack.agents.register(unique_name("pp-log"), accountability_mode="logged")
    token = _start(stack, parent.id)["passport"]["token"]
    for child in (child_std, child_log):
        with pytest.raises(StackError) as ei:
            stack.passports.delegate(token, child.id, scopes=[])
        assert ei.value.status_code == 400
        assert ei.value.code == "DELEGATION_ACCOUNTABILITY_VIOLATION"
    # Upwards is fine: a standard parent may delegate to an enforced child.
    std_parent = stack.passports.issue(child_std.id, mission_ids=[_open(stack, child_std.id)])
    up = stack.passports.delegate(std_parent.token, parent.id, scopes=[])
    assert _claims(up.token)["stk"]["delegation_depth"] == 1


# --------------------------------------------------------------------------- revoke-*


def test_revoke_agent_session_all(op) -> None:  # type: ignore[no-untyped-def]
    stack, raw = op
    a = stack.agents.register(unique_name("pp-ra"))
    b = stack.agents.register(unique_name("pp-rb"))
    c = stack.agents.register(unique_name("pp-rc"))
    a1 = _start(stack, a.id)["passport"]
    a2 = _start(stack, a.id)["passport"]
    b1 = _start(stack, b.id)["passport"]
    b1_child = stack.passports.delegate(b1["token"], c.id)
    c1 = _start(stack, c.id)["passport"]
    active = {x["jti"] for x in stack.passports.list_active()}
    assert active == {a1["jti"], a2["jti"], b1["jti"], b1_child.jti, c1["jti"]}
    assert {x["jti"] for x in stack.passports.list_active(agent_id=a.id)} == {a1["jti"], a2["jti"]}
    assert {x["jti"] for x in stack.passports.list_active(session_id=b1["session_id"])} == {b1["jti"], b1_child.jti}

    r = stack.passports.revoke_agent(a.id, reason="agent retired")
    assert r["count"] == 2 and sorted(r["revoked_jtis"]) == sorted([a1["jti"], a2["jti"]])
    assert {x["jti"] for x in stack.passports.list_active()} == {b1["jti"], b1_child.jti, c1["jti"]}

    r = stack.passports.revoke_session(b1["session_id"])
    assert r["count"] == 2 and sorted(r["revoked_jtis"]) == sorted([b1["jti"], b1_child.jti])
    assert stack.passports.verify(b1_child.token)["reason"] == "revoked"
    assert {x["jti"] for x in stack.passports.list_active()} == {c1["jti"]}

    # REST revoke-all takes no confirm (the SDK sends none).
    r = stack.passports.revoke_all(reason="emergency drill")
    assert r["count"] == 1 and r["revoked_jtis"] == [c1["jti"]]
    assert stack.passports.list_active() == []
    r = stack.passports.revoke_all()
    assert r["count"] == 0

    actions = [e["action"] for e in export_all(raw)]
    for want in ("passport.revoke_agent", "passport.revoke_session", "passport.revoke_all"):
        assert want in actions, actions


# --------------------------------------------------------------------------- accountability


def test_checkpoint_enforced_and_not_on_standard(stack: Stack, http: httpx.Client) -> None:
    a = stack.agents.register(unique_name("pp-cp"))
    pp = _start(stack, a.id, "sync tickets", ["gmail"])["passport"]
    time.sleep(1.1)  # the new expiry must be later than the current one
    cp = stack.passports.checkpoint(pp["jti"], services_used=["gmail"], actions_count=3,
                                    tool_calls=[{"service": "gmail", "method": "list", "target": "inbox"}])
    assert cp.checkpoint_id.startswith("cp_") and cp.passport_jti == pp["jti"]
    assert cp.flags == []
    assert cp.new_expires_at is not None
    raw = http.post(f"/v1/passports/{pp['jti']}/checkpoint", json={"services_used": ["gmail", "github"],
                                                                   "actions_count": 1})
    assert raw.status_code == 200, raw.text
    body = raw.json()
    assert {"checkpoint_id", "passport_jti", "new_expires_at", "token", "flags"} <= set(body)
    assert body["flags"] == ["services_outside_intent"]
    # The first checkpoint's new token carries the moved expiry.
    assert parse_iso(cp.new_expires_at).timestamp() > _claims(pp["token"])["exp"]

    s = stack.agents.register(unique_name("pp-cp-std"), accountability_mode="standard")
    p = stack.passports.issue(s.id, mission_ids=[_open(stack, s.id)])
    with pytest.raises(NotFoundError) as ei:
        stack.passports.checkpoint(p.jti, services_used=[], actions_count=0)
    assert ei.value.code == "CHECKPOINT_NOT_AVAILABLE"
    assert_envelope(http.post(f"/v1/passports/{p.jti}/checkpoint", json={"services_used": [], "actions_count": 0}),
                    404, "CHECKPOINT_NOT_AVAILABLE")


def test_checkpoint_returns_fresh_token(stack: Stack, http: httpx.Client) -> None:
    a = stack.agents.register(unique_name("pp-cp-tok"))
    pp = _start(stack, a.id)["passport"]
    old_exp = _claims(pp["token"])["exp"]
    time.sleep(1.1)
    body = http.post(f"/v1/passports/{pp['jti']}/checkpoint", json={"services_used": [], "actions_count": 0}).json()
    assert isinstance(body["token"], str)
    new = _claims(body["token"])
    assert new["jti"] == pp["jti"]
    assert new["exp"] > old_exp
    assert parse_iso(body["new_expires_at"]).timestamp() == new["exp"]
    assert stack.passports.verify(body["token"])["valid"] is True


def test_checkout_review_statuses(stack: Stack, http: httpx.Client) -> None:
    a = stack.agents.register(unique_name("pp-co"))
    clean = _start(stack, a.id, "read mail", ["gmail"])["passport"]
    co = stack.passports.checkout(clean["jti"], services_used=["gmail"], actions_count=2,
                                  tool_calls=[{"service": "gmail", "method": "list"}])
    assert co.checkout_id.startswith("co_") and co.passport_jti == clean["jti"]
    assert co.review_status == "clean" and co.flags == []
    # Once only.
    with pytest.raises(StackError) as ei:
        stack.passports.checkout(clean["jti"], services_used=[], actions_count=0)
    assert ei.value.status_code == 409
    # Checking out ends the passport.
    assert stack.passports.verify(clean["token"])["reason"] == "revoked"

    flagged = _start(stack, a.id, "read mail", ["gmail"])["passport"]
    co = stack.passports.checkout(flagged["jti"], services_used=["gmail", "stripe"], actions_count=4)
    assert co.review_status == "flagged"
    assert co.flags is not None
    assert [f["type"] for f in co.flags] == ["services_outside_intent"]
    assert co.flags[0]["severity"] == "warning" and "stripe" in co.flags[0]["message"]

    # Critical: 10x over the estimated actions (estimate sent on the wire).
    m = _open(stack, a.id)
    r = http.post("/v1/passports/issue", json={
        "agent_id": a.id, "mission_ids": [m],
        "intent": {"summary": "two actions", "services": ["gmail"], "will_delegate": False, "estimated_actions": 2},
    })
    assert r.status_code in (200, 201), r.text
    co = stack.passports.checkout(r.json()["jti"], services_used=["gmail"], actions_count=50)
    assert co.review_status == "blocked"
    assert {f["type"]: f["severity"] for f in co.flags or []}["actions_far_over_estimate"] == "critical"


def test_reviews_decide_block_and_unblock(op) -> None:  # type: ignore[no-untyped-def]
    stack, raw = op
    a = stack.agents.register(unique_name("pp-rev"))
    p1 = _start(stack, a.id, "read mail", ["gmail"])["passport"]
    p2 = _start(stack, a.id, "read mail", ["gmail"])["passport"]
    p3 = _start(stack, a.id, "read mail", ["gmail"])["passport"]
    co1 = stack.passports.checkout(p1["jti"], services_used=["gmail", "github"], actions_count=1)
    co2 = stack.passports.checkout(p2["jti"], services_used=["gmail", "github"], actions_count=1)
    co3 = stack.passports.checkout(p3["jti"], services_used=["gmail"], actions_count=1)
    assert (co1.review_status, co2.review_status, co3.review_status) == ("flagged", "flagged", "clean")

    q = stack.reviews.list()  # default status=flagged
    assert q.total == 2
    assert {i.checkout_id for i in q.items} == {co1.checkout_id, co2.checkout_id}
    for item in q.items:
        assert item.agent_id == a.id and item.agent_name == a.name
        assert item.intent_summary == "read mail"
        assert item.review_status == "flagged"
        assert [f["type"] for f in item.flags] == ["services_outside_intent"]
        parse_iso(item.submitted_at)
    clean_q = stack.reviews.list(status="clean")
    assert clean_q.total == 1 and clean_q.items[0].checkout_id == co3.checkout_id
    assert stack.reviews.list(status="blocked").total == 0
    assert stack.reviews.list(limit=1).total == 2 and len(stack.reviews.list(limit=1).items) == 1

    # Approving needs a governance approval.
    with pytest.raises(ForbiddenError) as ei:
        stack.reviews.decide(co1.checkout_id, "approved")
    assert ei.value.code == "GOVERNANCE_APPROVAL_REQUIRED"
    d = stack.reviews.decide(co1.checkout_id, "approved", notes="fine", governance_approval_id=GOV)
    assert d.review_id and d.agent_id == a.id and d.decision == "approved" and d.passport_blocked is False
    with pytest.raises(StackError) as ei:
        stack.reviews.decide(co1.checkout_id, "blocked")
    assert ei.value.status_code == 409

    # Blocking with block_future blocks the agent.
    d = stack.reviews.decide(co2.checkout_id, "blocked", notes="used github", block_future=True)
    assert d.decision == "blocked" and d.passport_blocked is True and d.agent_id == a.id
    agent = stack.agents.get(a.id)
    assert agent.passport_blocked is True
    assert agent.passport_blocked_reason == "used github"
    parse_iso(agent.passport_blocked_at)
    mission_id = _open(stack, a.id)
    with pytest.raises(ForbiddenError) as ei:
        stack.passports.issue(a.id, mission_ids=[mission_id], intent="again")
    assert ei.value.code == "PASSPORT_BLOCKED"
    assert_envelope(raw.post("/v1/passports/issue", json={"agent_id": a.id, "mission_ids": [mission_id],
                                                          "intent": {"summary": "again", "services": [],
                                                                     "will_delegate": False}}),
                    403, "PASSPORT_BLOCKED")
    with pytest.raises(StackError) as ei:
        stack.missions.start(agent_id=a.id, mission={"intent_summary": "again", "intent_services": []})
    assert ei.value.code == "PASSPORT_BLOCKED"

    # Unblocking needs a governance approval too.
    with pytest.raises(ForbiddenError) as ei:
        stack.agents.unblock(a.id)
    assert ei.value.code == "GOVERNANCE_APPROVAL_REQUIRED"
    stack.agents.unblock(a.id, governance_approval_id=GOV)
    assert stack.agents.get(a.id).passport_blocked is False
    p = stack.passports.issue(a.id, mission_ids=[mission_id], intent="again")
    assert p.jti.startswith("pp_")

    # A plain "blocked" decision does not block the agent.
    p4 = _start(stack, a.id, "read mail", ["gmail"])["passport"]
    co4 = stack.passports.checkout(p4["jti"], services_used=["slack"], actions_count=1)
    d = stack.reviews.decide(co4.checkout_id, "blocked")
    assert d.passport_blocked is False
    assert stack.agents.get(a.id).passport_blocked is False


def test_report_constructs_in_the_sdk(stack: Stack, http: httpx.Client) -> None:
    a = stack.agents.register(unique_name("pp-report"))
    pp = _start(stack, a.id, "sync", ["gmail"])["passport"]
    report = stack.passports.report(pp["jti"])
    assert isinstance(report, PassportReport)
    assert report.passport["jti"] == pp["jti"]
    assert report.intent is not None and report.intent["summary"] == "sync"
    assert report.checkpoints == [] and report.checkout is None and report.review is None

    stack.passports.checkpoint(pp["jti"], services_used=["gmail"], actions_count=1)
    co = stack.passports.checkout(pp["jti"], services_used=["gmail", "x"], actions_count=2)
    stack.reviews.decide(co.checkout_id, "blocked", notes="no")
    raw = http.get(f"/v1/passports/{pp['jti']}/report").json()
    assert set(raw) == {"passport", "intent", "checkpoints", "checkout", "review"}
    report = PassportReport(**raw)
    assert len(report.checkpoints) == 1 and report.checkpoints[0]["services_used"] == ["gmail"]
    assert report.checkout is not None and report.checkout["checkout_id"] == co.checkout_id
    assert report.checkout["review_status"] == "flagged"
    assert report.review is not None and report.review["decision"] == "blocked"


# --------------------------------------------------------------------------- missions


def test_mission_context_manager(stack: Stack) -> None:
    a = stack.agents.register(unique_name("pp-cm"))
    with stack.passports.mission(agent_id=a.id, intent="post the digest", services=["slack"]) as m:
        assert m.mission_id is not None and m.mission_id.startswith("ms_")
        assert m.passport is not None and m.passport.accountability == "enforced"
        token = m.token
        assert token is not None and stack.passports.verify(token)["valid"] is True
        m.log("slack", "chat.postMessage", "#general")
    assert m.review_status == "clean"
    assert m.result is not None and m.result.checkout_id.startswith("co_")
    got = stack.missions.get(m.mission_id)
    assert got["status"] == "completed"
    assert stack.passports.verify(token)["reason"] == "revoked"
    report = stack.passports.report(m.passport.jti)
    assert report.checkout is not None and report.checkout["actions_count"] == 1

    # On an exception the mission is revoked instead, and checkout says so.
    with pytest.raises(RuntimeError), stack.passports.mission(agent_id=a.id, intent="fail", services=["slack"]) as m2:
        raise RuntimeError("boom")
    assert m2.mission_id is not None
    assert stack.missions.get(m2.mission_id)["status"] == "revoked"
    assert m2.review_status == "flagged"
    assert m2.result is not None and "mission_failed" in [f["type"] for f in m2.result.flags or []]


def test_mission_complete_revokes_and_is_idempotent(stack: Stack) -> None:
    a = stack.agents.register(unique_name("pp-complete"))
    started = _start(stack, a.id)
    mission_id = started["mission_id"]
    token = started["passport"]["token"]
    second = stack.passports.issue(a.id, mission_ids=[mission_id], intent="more")
    done = stack.missions.complete(mission_id)
    assert done["mission_id"] == mission_id and done["terminal_state"] == "completed"
    assert done["transitioned"] is True
    assert sorted(done["revoked_passports"]) == sorted([started["passport"]["jti"], second.jti])
    again = stack.missions.complete(mission_id)
    assert again["terminal_state"] == "completed" and again["transitioned"] is False
    assert again["revoked_passports"] == []
    for t in (token, second.token):
        assert stack.passports.verify(t)["reason"] == "revoked"

    with pytest.raises(MissionEndedError) as ei:
        stack.passports.refresh(token)
    assert ei.value.code == "MISSION_ENDED"
    assert ei.value.mission_id == mission_id and ei.value.mission_state == "completed"
    assert ei.value.status_code == 403
    with pytest.raises(MissionEndedError) as ei:
        stack.passports.issue(a.id, mission_ids=[mission_id], intent="too late")
    assert ei.value.mission_state == "completed"

    # Revoked missions say so too.
    m2 = _open(stack, a.id)
    stack.missions.revoke(m2, reason="adversarial", notes="stop")
    with pytest.raises(MissionEndedError) as ei:
        stack.passports.issue(a.id, mission_ids=[m2], intent="x")
    assert ei.value.mission_state == "revoked"
    # Unknown mission.
    with pytest.raises(MissionEndedError) as ei:
        stack.passports.issue(a.id, mission_ids=["ms_doesnotexist0000000000"], intent="x")
    assert ei.value.mission_state == "not_found" and ei.value.status_code == 404


# --------------------------------------------------------------------------- passport as bearer


def test_passport_as_bearer(stack_server, stack: Stack) -> None:  # type: ignore[no-untyped-def]
    a = stack.agents.register(unique_name("pp-bearer"))
    stack.agents.register(unique_name("pp-other"))
    token = _start(stack, a.id)["passport"]["token"]
    as_passport = Stack(api_key=token, base_url=stack_server.base_url, timeout=15.0)
    try:
        agents = as_passport.agents.list()
        assert [x.id for x in agents] == [a.id]
        with pytest.raises(ForbiddenError):
            as_passport.agents.register(unique_name("pp-nope"))
    finally:
        as_passport.close()
    with _bearer(stack_server, token) as c:
        r = c.get("/v1/agents")
        assert r.status_code == 200 and [x["id"] for x in r.json()] == [a.id]
        assert_envelope(c.post("/v1/agents/register", json={"name": unique_name("pp-nope")}), 403)
    with _bearer(stack_server, token[:-4] + "AAAA") as c:
        assert_envelope(c.get("/v1/agents"), 401)


# --------------------------------------------------------------------------- tenant isolation


def test_tenant_isolation(stack: Stack, stack2: Stack, http2: httpx.Client) -> None:
    a = stack.agents.register(unique_name("pp-iso"))
    started = _start(stack, a.id)
    jti, token, mission_id = started["passport"]["jti"], started["passport"]["token"], started["mission_id"]

    with pytest.raises(NotFoundError):
        stack2.passports.revoke(jti)
    with pytest.raises(NotFoundError):
        stack2.passports.report(jti)
    with pytest.raises(NotFoundError):
        stack2.passports.checkpoint(jti, services_used=[], actions_count=0)
    with pytest.raises(NotFoundError):
        stack2.passports.checkout(jti, services_used=[], actions_count=0)
    with pytest.raises((NotFoundError, ForbiddenError, UnauthorizedError)):
        stack2.passports.refresh(token)
    with pytest.raises(NotFoundError):
        stack2.passports.revoke_agent(a.id)
    with pytest.raises(NotFoundError):
        stack2.missions.get(mission_id)
    with pytest.raises(NotFoundError):
        stack2.missions.complete(mission_id)
    b = stack2.agents.register(unique_name("pp-iso-b"))
    with pytest.raises(MissionEndedError) as ei:
        stack2.passports.issue(b.id, mission_ids=[mission_id], intent="steal")
    assert ei.value.mission_state == "not_found"
    with pytest.raises(NotFoundError):
        stack2.passports.delegate(token, b.id, scopes=[])
    r = http2.post(f"/v1/passports/revoke-session/{started['passport']['session_id']}", json={"reason": None})
    assert r.status_code == 200 and r.json()["count"] == 0
    r = http2.post("/v1/passports/revoke-all", json={"reason": "b only"})
    assert r.status_code == 200 and jti not in r.json()["revoked_jtis"]
    assert jti not in {x["jti"] for x in stack2.passports.list_active()}
    # Still valid for its owner.
    assert stack.passports.verify(token)["valid"] is True
    assert jti in {x["jti"] for x in stack.passports.list_active(agent_id=a.id)}
