"""Agents through the published getstack 4.0.0 SDK, exactly as users call it."""

from __future__ import annotations

import pytest
from getstack import Agent, ForbiddenError, NotFoundError, Stack, StackError, UnauthorizedError
from stack_checks import parse_iso
from stack_harness import unique_name

UNKNOWN_AGENT = "agt_doesnotexist0000000000"


def _assert_agent_shape(a: Agent) -> None:
    assert isinstance(a, Agent)
    assert a.id.startswith("agt_"), a.id
    assert a.operator_id.startswith("op_"), a.operator_id
    created = parse_iso(a.created_at)
    updated = parse_iso(a.updated_at)
    assert updated >= created


# --------------------------------------------------------------------------- register


def test_register_defaults(stack: Stack, http, agent_name: str) -> None:
    a = stack.agents.register(agent_name)
    _assert_agent_shape(a)
    assert a.name == agent_name
    assert a.description is None
    assert a.status == "active"
    assert a.accountability_mode == "enforced"
    # The SDK's own fallback is "direct": seeing proxy_only proves the server sent it.
    assert a.credential_access == "proxy_only"
    assert a.key_mode == "stack_managed"
    assert a.on_warning == "notify"
    assert a.on_critical == "notify"
    assert a.passport_blocked is False
    assert a.passport_blocked_reason is None
    assert a.passport_blocked_at is None
    assert a.llm_inject_system_prompt is True
    assert a.llm_redact_pii is True

    # Fields the SDK's dataclass drops: check them on the wire.
    raw = http.get(f"/v1/agents/{a.id}").json()
    for key in (
        "id", "operator_id", "name", "description", "status", "accountability_mode",
        "credential_access", "key_mode", "on_warning", "on_critical", "passport_blocked",
        "passport_blocked_reason", "passport_blocked_at", "skill_access_mode", "allowed_skills",
        "llm_inject_system_prompt", "llm_redact_pii", "created_at", "updated_at",
    ):
        assert key in raw, f"agent JSON lacks {key!r}: {raw}"
    assert raw["skill_access_mode"] == "all"
    assert raw["allowed_skills"] == []
    assert raw["credential_access"] == "proxy_only"
    assert raw["on_warning"] == "notify" and raw["on_critical"] == "notify"
    assert raw["created_at"] == a.created_at


def test_register_with_options(stack: Stack, agent_name: str) -> None:
    a = stack.agents.register(
        agent_name,
        description="Books travel — with ünïcode",
        accountability_mode="logged",
        credential_access="direct",
        key_mode="stack_managed",
        on_warning="block",
        on_critical="block",
        llm_inject_system_prompt=False,
        llm_redact_pii=False,
    )
    _assert_agent_shape(a)
    assert a.name == agent_name
    assert a.description == "Books travel — with ünïcode"
    assert a.accountability_mode == "logged"
    assert a.credential_access == "direct"
    assert a.key_mode == "stack_managed"
    assert a.on_warning == "block"
    assert a.on_critical == "block"
    assert a.llm_inject_system_prompt is False
    assert a.llm_redact_pii is False
    # Persisted, not just echoed.
    g = stack.agents.get(a.id)
    assert (g.description, g.accountability_mode, g.credential_access, g.on_warning, g.on_critical) == (
        "Books travel — with ünïcode", "logged", "direct", "block", "block",
    )
    assert g.llm_inject_system_prompt is False and g.llm_redact_pii is False


@pytest.mark.parametrize("mode", ["enforced", "logged", "standard"])
def test_register_each_accountability_mode(stack: Stack, mode: str) -> None:
    a = stack.agents.register(unique_name(mode), accountability_mode=mode)
    assert a.accountability_mode == mode


def test_register_profile_proxied_llm_bot(stack: Stack) -> None:
    """rest-contract §4.1: profile proxied-llm-bot = proxy_only + logged + stack_managed;
    explicit fields override the preset."""
    a = stack.agents.register(unique_name("bot"), profile="proxied-llm-bot")
    assert (a.credential_access, a.accountability_mode, a.key_mode) == ("proxy_only", "logged", "stack_managed")
    b = stack.agents.register(unique_name("bot"), profile="proxied-llm-bot", accountability_mode="enforced")
    assert (b.credential_access, b.accountability_mode) == ("proxy_only", "enforced")


@pytest.mark.parametrize(
    "bad",
    [
        "Upper",
        "-leading-dash",
        "trailing-dash-",
        "a",  # the pattern needs at least two characters
        "has space",
        "under_score",
        "dot.name",
        "x" * 65,
        "ünï",
    ],
)
def test_register_rejects_bad_names(stack: Stack, bad: str) -> None:
    with pytest.raises(StackError) as ei:
        stack.agents.register(bad)
    assert ei.value.status_code == 400, (ei.value.status_code, ei.value.code, str(ei.value))
    assert ei.value.code == "VALIDATION_ERROR", (ei.value.code, str(ei.value))
    assert str(ei.value) and str(ei.value) != "API error: 400"  # a real message


def test_register_empty_name_rejected(http) -> None:
    r = http.post("/v1/agents/register", json={"name": ""})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "VALIDATION_ERROR"


@pytest.mark.parametrize("name", ["ab", "a" * 64, "0-9", "x1-y2-z3"])
def test_register_accepts_boundary_names(stack: Stack, name: str) -> None:
    # Names are unique per operator and this operator is shared: make them unique
    # while keeping the interesting shape (and staying <= 64 chars).
    if name == "a" * 64:
        suffix = unique_name("n")[-8:]
        name = "a" * (64 - len(suffix)) + suffix
    else:
        name = f"{name}-{unique_name('n')[-8:]}" if name != "ab" else unique_name("ab")
    a = stack.agents.register(name)
    assert a.name == name


def test_register_rejects_bad_enum_values(stack: Stack) -> None:
    for kwargs in (
        {"accountability_mode": "chaotic"},
        {"credential_access": "everything"},
        {"on_warning": "explode"},
        {"key_mode": "no_keys"},
    ):
        with pytest.raises(StackError) as ei:
            stack.agents.register(unique_name("enum"), **kwargs)
        assert (ei.value.status_code, ei.value.code) == (400, "VALIDATION_ERROR"), (kwargs, ei.value.code)


def test_register_rejects_long_description(stack: Stack) -> None:
    with pytest.raises(StackError) as ei:
        stack.agents.register(unique_name("desc"), description="d" * 257)
    assert (ei.value.status_code, ei.value.code) == (400, "VALIDATION_ERROR")


def test_duplicate_name_conflict(stack: Stack, agent_name: str) -> None:
    first = stack.agents.register(agent_name)
    with pytest.raises(StackError) as ei:
        stack.agents.register(agent_name)
    assert ei.value.status_code == 409
    assert ei.value.code == "CONFLICT"
    # The original is untouched.
    assert stack.agents.get(first.id).name == agent_name


# --------------------------------------------------------------------------- read


def test_list_and_get(stack: Stack) -> None:
    a = stack.agents.register(unique_name("list"), description="one")
    b = stack.agents.register(unique_name("list"), accountability_mode="standard")
    agents = stack.agents.list()
    assert isinstance(agents, list) and all(isinstance(x, Agent) for x in agents)
    by_id = {x.id: x for x in agents}
    assert a.id in by_id and b.id in by_id
    assert by_id[a.id].name == a.name and by_id[a.id].description == "one"
    assert by_id[b.id].accountability_mode == "standard"
    assert len({x.operator_id for x in agents}) == 1, "list mixes operators"
    assert len(by_id) == len(agents), "duplicate ids in list"

    got = stack.agents.get(a.id)
    assert got == a, f"get differs from register:\n{got}\n{a}"


def test_get_unknown_agent_is_not_found(stack: Stack) -> None:
    for call in (
        lambda: stack.agents.get(UNKNOWN_AGENT),
        lambda: stack.agents.update(UNKNOWN_AGENT, description="x"),
        lambda: stack.agents.delete(UNKNOWN_AGENT),
        lambda: stack.agents.unblock(UNKNOWN_AGENT, governance_approval_id="gov_x"),
        lambda: stack.services.get_agent_permissions(UNKNOWN_AGENT),
    ):
        with pytest.raises(NotFoundError) as ei:
            call()
        assert ei.value.code == "NOT_FOUND" and ei.value.status_code == 404


# --------------------------------------------------------------------------- update


def test_update_fields_and_unknown_fields_tolerated(stack: Stack, agent_name: str) -> None:
    a = stack.agents.register(agent_name)
    u = stack.agents.update(
        a.id,
        description="updated description",
        accountability_mode="standard",
        credential_access="proxy_preferred",
        on_critical="block",
        llm_redact_pii=False,
        some_future_field={"nested": [1, 2, 3]},
        another_unknown="ignored",
    )
    assert u.id == a.id and u.name == agent_name
    assert u.description == "updated description"
    assert u.accountability_mode == "standard"
    assert u.credential_access == "proxy_preferred"
    assert u.on_critical == "block"
    assert u.on_warning == "notify"  # untouched
    assert u.llm_redact_pii is False
    assert u.llm_inject_system_prompt is True  # untouched
    assert u.created_at == a.created_at
    assert parse_iso(u.updated_at) >= parse_iso(a.updated_at)
    g = stack.agents.get(a.id)
    assert g == u, f"update not persisted:\n{g}\n{u}"


def test_update_with_only_unknown_fields_changes_nothing(stack: Stack, agent_name: str) -> None:
    a = stack.agents.register(agent_name, description="keep")
    u = stack.agents.update(a.id, totally_unknown=True)
    assert (u.description, u.status, u.accountability_mode) == ("keep", "active", "enforced")


def test_update_rejects_bad_values(stack: Stack, agent_name: str) -> None:
    a = stack.agents.register(agent_name)
    for kwargs in ({"status": "deleted"}, {"accountability_mode": "chaotic"}, {"credential_access": "all"}):
        with pytest.raises(StackError) as ei:
            stack.agents.update(a.id, **kwargs)
        assert (ei.value.status_code, ei.value.code) == (400, "VALIDATION_ERROR"), (kwargs, ei.value.code)
    assert stack.agents.get(a.id).status == "active"


def test_suspend_and_activate(stack: Stack, agent_name: str) -> None:
    a = stack.agents.register(agent_name)
    s = stack.agents.suspend(a.id)
    assert s.status == "suspended"
    assert stack.agents.get(a.id).status == "suspended"
    listed = {x.id: x for x in stack.agents.list()}
    assert listed[a.id].status == "suspended"
    r = stack.agents.activate(a.id)
    assert r.status == "active"
    assert stack.agents.get(a.id).status == "active"


# --------------------------------------------------------------------------- delete


def test_delete(stack: Stack, agent_name: str) -> None:
    a = stack.agents.register(agent_name)
    result = stack.agents.delete(a.id)
    assert result is None or isinstance(result, dict)
    with pytest.raises(NotFoundError) as ei:
        stack.agents.get(a.id)
    assert ei.value.code == "NOT_FOUND"
    assert ei.value.status_code == 404
    assert a.id not in {x.id for x in stack.agents.list()}
    with pytest.raises(NotFoundError):
        stack.agents.delete(a.id)
    with pytest.raises(NotFoundError):
        stack.agents.update(a.id, description="ghost")


# --------------------------------------------------------------------------- unblock / permissions


def test_unblock_requires_governance_approval(stack: Stack, agent_name: str) -> None:
    a = stack.agents.register(agent_name)
    with pytest.raises(ForbiddenError) as ei:
        stack.agents.unblock(a.id)
    assert ei.value.status_code == 403
    assert ei.value.code == "GOVERNANCE_APPROVAL_REQUIRED"
    ok = stack.agents.unblock(a.id, governance_approval_id="gov_approval_e2e_1")
    assert isinstance(ok, dict)
    after = stack.agents.get(a.id)
    assert after.passport_blocked is False
    assert after.passport_blocked_reason is None and after.passport_blocked_at is None


def test_permissions(stack: Stack, agent_name: str) -> None:
    a = stack.agents.register(agent_name)
    perms = stack.services.get_agent_permissions(a.id)
    assert isinstance(perms, dict)
    assert perms.get("agent_id") == a.id
    assert perms.get("grants") == []


# --------------------------------------------------------------------------- auth


def test_wrong_api_key_is_unauthorized(stack_server) -> None:
    with Stack(api_key="sk_live_op_thisisnotarealkey000000", base_url=stack_server.base_url) as bad:
        with pytest.raises(UnauthorizedError) as ei:
            bad.agents.list()
    assert ei.value.status_code == 401
    assert ei.value.code in ("UNAUTHORIZED", "INVALID_API_KEY")


def test_sdk_strips_trailing_slash_from_base_url(stack_server) -> None:
    with Stack(api_key=stack_server.api_key, base_url=stack_server.base_url + "/") as s:
        assert isinstance(s.agents.list(), list)


# --------------------------------------------------------------------------- update rules


def test_rename_follows_register_rules(stack: Stack) -> None:
    a = stack.agents.register(unique_name("rename-a"))
    b = stack.agents.register(unique_name("rename-b"))
    with pytest.raises(StackError) as ei:
        stack.agents.update(a.id, name="Not Valid")
    assert (ei.value.status_code, ei.value.code) == (400, "VALIDATION_ERROR")
    with pytest.raises(StackError) as ei:
        stack.agents.update(a.id, name=b.name)
    assert (ei.value.status_code, ei.value.code) == (409, "CONFLICT")
    new = unique_name("renamed")
    assert stack.agents.update(a.id, name=new).name == new
    assert stack.agents.get(a.id).name == new


def test_fields_that_patch_may_not_change(stack: Stack, agent_name: str) -> None:
    a = stack.agents.register(agent_name)
    for kwargs in ({"key_mode": "customer_managed"}, {"passport_blocked": True}, {"status": None}):
        with pytest.raises(StackError) as ei:
            stack.agents.update(a.id, **kwargs)
        assert (ei.value.status_code, ei.value.code) == (400, "VALIDATION_ERROR"), kwargs
    g = stack.agents.get(a.id)
    assert (g.key_mode, g.passport_blocked, g.status) == ("stack_managed", False, "active")


def test_skill_access_fields_via_patch(stack: Stack, http, agent_name: str) -> None:
    a = stack.agents.register(agent_name)
    stack.agents.update(a.id, skill_access_mode="custom", allowed_skills=["skl_alpha"])
    raw = http.get(f"/v1/agents/{a.id}").json()
    assert (raw["skill_access_mode"], raw["allowed_skills"]) == ("custom", ["skl_alpha"])
    for kwargs in ({"skill_access_mode": "some"}, {"allowed_skills": ["not a skill id"]}):
        with pytest.raises(StackError) as ei:
            stack.agents.update(a.id, **kwargs)
        assert (ei.value.status_code, ei.value.code) == (400, "VALIDATION_ERROR"), kwargs


def test_description_boundary(stack: Stack) -> None:
    a = stack.agents.register(unique_name("desc256"), description="d" * 256)
    assert a.description == "d" * 256


def test_deleted_name_can_be_reused(stack: Stack, agent_name: str) -> None:
    a = stack.agents.register(agent_name)
    stack.agents.delete(a.id)
    b = stack.agents.register(agent_name)
    assert b.id != a.id and b.name == agent_name
    with pytest.raises(NotFoundError):
        stack.agents.get(a.id)
