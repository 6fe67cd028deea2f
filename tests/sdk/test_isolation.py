"""Tenant isolation: a second operator on the same server sees nothing of the first."""

from __future__ import annotations

import pytest
from getstack import NotFoundError, Stack
from stack_harness import unique_name


def test_second_operator_cannot_touch_first_operators_agent(stack: Stack, stack2: Stack) -> None:
    a = stack.agents.register(unique_name("private"), description="mine")

    with pytest.raises(NotFoundError) as ei:
        stack2.agents.get(a.id)
    assert ei.value.code == "NOT_FOUND" and ei.value.status_code == 404

    for call in (
        lambda: stack2.agents.update(a.id, description="stolen"),
        lambda: stack2.agents.suspend(a.id),
        lambda: stack2.agents.delete(a.id),
        lambda: stack2.agents.unblock(a.id, governance_approval_id="gov_x"),
        lambda: stack2.services.get_agent_permissions(a.id),
    ):
        with pytest.raises(NotFoundError) as ei:
            call()
        assert ei.value.code == "NOT_FOUND"

    theirs = stack2.agents.list()
    assert a.id not in {x.id for x in theirs}
    assert a.operator_id not in {x.operator_id for x in theirs}

    # Nothing changed for the owner.
    mine = stack.agents.get(a.id)
    assert (mine.description, mine.status) == ("mine", "active")


def test_same_name_allowed_across_operators(stack: Stack, stack2: Stack) -> None:
    name = unique_name("shared-name")
    a = stack.agents.register(name)
    b = stack2.agents.register(name)
    assert a.id != b.id and a.operator_id != b.operator_id
    assert stack.agents.get(a.id).operator_id == a.operator_id
    assert b.id not in {x.id for x in stack.agents.list()}


def test_audit_is_per_operator(stack: Stack, stack2: Stack) -> None:
    a = stack.agents.register(unique_name("audit-private"))
    stack.agents.update(a.id, description="secret change")
    b = stack2.agents.register(unique_name("audit-other"))

    theirs = stack2.audit.list(limit=100)["entries"]
    assert theirs, "second operator should see its own entries"
    assert {e["operator_id"] for e in theirs} == {b.operator_id}
    assert a.id not in {e["agent_id"] for e in theirs}
    assert stack2.audit.list(limit=100, agent_id=a.id)["entries"] == []

    head1, head2 = stack.audit.chain_head(), stack2.audit.chain_head()
    assert head1["operator_id"] == a.operator_id and head2["operator_id"] == b.operator_id
    assert head1["head_hash"] != head2["head_hash"]
    v2 = stack2.audit.verify_chain()
    assert v2["ok"] is True and v2["entries_checked"] == head2["entry_count"]


def test_export_is_per_operator(http, http2, stack: Stack) -> None:
    a = stack.agents.register(unique_name("export-private"))
    rows = http2.get("/v1/audit/export", params={"format": "ndjson"})
    assert rows.status_code == 200
    assert a.id not in rows.text and a.operator_id not in rows.text
