"""The audit log through the SDK (stack.audit.*) plus the export endpoint.

Tests that need exact counts use a brand-new operator (empty chain) so they do
not depend on what other tests did on the shared server.
"""

from __future__ import annotations

import csv
import io
import json

import httpx
import pytest
from getstack import Stack
from stack_checks import (
    GENESIS_HASH,
    HEX64,
    assert_chain_links,
    export_all,
    recompute_entry_hash,
    wait_past,
)
from stack_harness import unique_name

ENTRY_FIELDS = (
    "entry_id", "operator_id", "seq", "timestamp", "agent_id", "passport_jti", "actor", "layer",
    "action", "outcome", "target_type", "target_id", "details", "prev_entry_hash", "entry_hash",
)


@pytest.fixture
def fresh(stack_server, fresh_operator):  # type: ignore[no-untyped-def]
    key, client = fresh_operator
    with httpx.Client(
        base_url=stack_server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=15.0
    ) as raw:
        yield client, raw


def _lifecycle(stack: Stack) -> tuple[str, str, list[str]]:
    """register, update, suspend, activate, unblock (approved), delete; returns
    (agent id, operator id, expected actions oldest first)."""
    a = stack.agents.register(unique_name("audited"))
    stack.agents.update(a.id, description="changed")
    stack.agents.suspend(a.id)
    stack.agents.activate(a.id)
    stack.agents.unblock(a.id, governance_approval_id="gov_e2e_approval")
    stack.agents.delete(a.id)
    return a.id, a.operator_id, [
        "agent.register", "agent.update", "agent.update", "agent.update", "agent.unblock", "agent.delete",
    ]


def test_lifecycle_is_audited_newest_first(fresh) -> None:  # type: ignore[no-untyped-def]
    stack, _raw = fresh
    agent_id, op_id, expected = _lifecycle(stack)

    page = stack.audit.list(limit=100, agent_id=agent_id)
    assert set(page) >= {"entries", "max_timestamp"}, page.keys()
    entries = page["entries"]
    actions = [e["action"] for e in entries]
    assert actions == list(reversed(expected)), f"actions newest-first: {actions}"

    for e in entries:
        missing = [f for f in ENTRY_FIELDS if f not in e]
        assert not missing, f"entry lacks {missing}: {e}"
        assert e["entry_id"].startswith("aud_"), e["entry_id"]
        assert e["operator_id"] == op_id
        assert e["agent_id"] == agent_id
        assert isinstance(e["timestamp"], int) and e["timestamp"] > 1_600_000_000_000, e["timestamp"]
        assert isinstance(e["seq"], int)
        assert e["outcome"] == "success"
        assert isinstance(e["layer"], str) and e["layer"]
        assert isinstance(e["actor"], str) and e["actor"], e
        assert "sk_live" not in json.dumps(e), "an API key leaked into the audit log"
        assert HEX64.match(e["entry_hash"]) and HEX64.match(e["prev_entry_hash"])
        assert e["target_id"] in (agent_id, None)

    seqs = [e["seq"] for e in entries]
    stamps = [e["timestamp"] for e in entries]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == len(seqs), seqs
    assert stamps == sorted(stamps, reverse=True), stamps
    assert page["max_timestamp"] == entries[0]["timestamp"]

    # Newest-first list links: each entry's prev is the next (older) entry's hash.
    full = stack.audit.list(limit=100)["entries"]
    for newer, older in zip(full, full[1:]):
        assert newer["prev_entry_hash"] == older["entry_hash"], (newer["entry_id"], older["entry_id"])
        assert newer["seq"] == older["seq"] + 1


def test_register_entry_details(fresh) -> None:  # type: ignore[no-untyped-def]
    stack, _ = fresh
    a = stack.agents.register(unique_name("details"), accountability_mode="logged")
    [entry] = stack.audit.list(limit=100, agent_id=a.id)["entries"]
    assert entry["action"] == "agent.register"
    assert entry["target_type"] == "agent" and entry["target_id"] == a.id
    assert isinstance(entry["details"], dict)
    assert a.operator_id in entry["actor"], f"actor should name the operator: {entry['actor']!r}"


def test_refused_unblock_changes_nothing(fresh) -> None:  # type: ignore[no-untyped-def]
    """A 403 unblock is not a state change: no successful agent.unblock entry."""
    stack, _ = fresh
    a = stack.agents.register(unique_name("refused"))
    with pytest.raises(Exception):
        stack.agents.unblock(a.id)
    entries = stack.audit.list(limit=100, agent_id=a.id)["entries"]
    assert [e["action"] for e in entries if e["outcome"] == "success"] == ["agent.register"]


def test_limit_and_default(fresh) -> None:  # type: ignore[no-untyped-def]
    stack, raw = fresh
    for _ in range(12):
        stack.agents.register(unique_name("bulk"))
    a = stack.agents.list()[0]
    for i in range(10):
        stack.agents.update(a.id, description=f"rev {i}")
    assert len(stack.audit.list(limit=3)["entries"]) == 3
    assert len(stack.audit.list()["entries"]) == 20  # default limit
    total = stack.audit.chain_head()["entry_count"]
    assert total >= 22
    assert len(stack.audit.list(limit=100)["entries"]) == total
    for bad in ("0", "101", "abc", "-1"):
        r = raw.get("/v1/audit", params={"limit": bad})
        if r.status_code == 200:  # clamping is acceptable
            assert 1 <= len(r.json()["entries"]) <= 100, (bad, len(r.json()["entries"]))
        else:
            assert r.status_code == 400, (bad, r.status_code, r.text)
            assert r.json()["error"]["code"] in ("VALIDATION_ERROR", "INVALID_REQUEST")


def test_since_tail(fresh) -> None:  # type: ignore[no-untyped-def]
    stack, _ = fresh
    a = stack.agents.register(unique_name("tail"))
    first = stack.audit.list()
    mark = first["max_timestamp"]
    assert isinstance(mark, int)

    empty = stack.audit.list(since=mark)
    assert empty["entries"] == [], empty
    assert empty["max_timestamp"] in (None, mark)

    wait_past(mark)
    stack.agents.update(a.id, description="tail 1")
    stack.agents.suspend(a.id)
    tail = stack.audit.list(since=mark)
    assert [e["action"] for e in tail["entries"]] == ["agent.update", "agent.update"]
    assert all(e["timestamp"] > mark for e in tail["entries"])
    assert tail["max_timestamp"] == tail["entries"][0]["timestamp"]


def test_filters(fresh) -> None:  # type: ignore[no-untyped-def]
    stack, _ = fresh
    a = stack.agents.register(unique_name("filter-a"))
    b = stack.agents.register(unique_name("filter-b"))
    stack.agents.update(b.id, description="b only")
    only_a = stack.audit.list(limit=100, agent_id=a.id)["entries"]
    only_b = stack.audit.list(limit=100, agent_id=b.id)["entries"]
    assert [e["agent_id"] for e in only_a] == [a.id]
    assert [e["action"] for e in only_b] == ["agent.update", "agent.register"]
    assert stack.audit.list(agent_id="agt_nobody")["entries"] == []
    assert stack.audit.list(passport_jti="pp_nothing")["entries"] == []


def test_empty_chain_for_new_operator(fresh) -> None:  # type: ignore[no-untyped-def]
    stack, _ = fresh
    head = stack.audit.chain_head()
    # Creating the operator may or may not itself be audited; the head must agree either way.
    entries = stack.audit.list(limit=100)["entries"]
    assert head["entry_count"] == len(entries)
    if not entries:
        assert head["head_hash"] in (GENESIS_HASH, None)
        assert head["last_entry_id"] is None
    v = stack.audit.verify_chain()
    assert v["ok"] is True and v["first_break"] is None
    assert v["entries_checked"] == len(entries)


def test_chain_head_and_verify(fresh) -> None:  # type: ignore[no-untyped-def]
    stack, raw = fresh
    _lifecycle(stack)
    stack.agents.register(unique_name("extra"))

    all_entries = export_all(raw)
    newest = stack.audit.list(limit=1)["entries"][0]
    head = stack.audit.chain_head()
    assert set(head) >= {"operator_id", "entry_count", "head_hash", "last_entry_id", "last_timestamp"}, head
    assert head["operator_id"] == newest["operator_id"]
    assert head["entry_count"] == len(all_entries) >= 7
    assert head["head_hash"] == newest["entry_hash"]
    assert head["last_entry_id"] == newest["entry_id"]
    assert head["last_timestamp"] == newest["timestamp"]

    v = stack.audit.verify_chain()
    assert v["ok"] is True, v
    assert v["first_break"] is None
    assert v["entries_checked"] == head["entry_count"]
    assert v["head_hash"] == head["head_hash"]

    # The chain grows by exactly one per state change.
    stack.agents.register(unique_name("one-more"))
    assert stack.audit.chain_head()["entry_count"] == head["entry_count"] + 1
    assert stack.audit.verify_chain()["ok"] is True


def test_verify_chain_accepts_sdk_params(fresh) -> None:  # type: ignore[no-untyped-def]
    stack, _ = fresh
    stack.agents.register(unique_name("params"))
    v = stack.audit.verify_chain(from_date="2020-01-01T00:00:00Z", to_date="2100-01-01T00:00:00Z", limit=50)
    assert v["ok"] is True and v["first_break"] is None


def test_export_formats_and_independent_verification(fresh) -> None:  # type: ignore[no-untyped-def]
    """An outside verifier can rebuild the chain from the JSON export alone."""
    stack, raw = fresh
    _lifecycle(stack)
    entries = export_all(raw, page=2)  # forces several pages
    head = stack.audit.chain_head()
    assert len(entries) == head["entry_count"]
    assert [e["seq"] for e in entries] == sorted(e["seq"] for e in entries), "export is not oldest-first"
    assert entries[0]["prev_entry_hash"] == GENESIS_HASH
    assert_chain_links(entries)
    for e in entries:
        assert recompute_entry_hash(e) == e["entry_hash"], f"entry_hash does not recompute for {e['entry_id']}"
    assert entries[-1]["entry_hash"] == head["head_hash"]

    # Same rows in the list endpoint.
    listed = {e["entry_id"]: e for e in stack.audit.list(limit=100)["entries"]}
    for e in entries:
        assert listed[e["entry_id"]]["entry_hash"] == e["entry_hash"]

    nd = raw.get("/v1/audit/export", params={"format": "ndjson"})
    assert nd.status_code == 200, nd.text
    rows = [json.loads(line) for line in nd.text.splitlines() if line.strip()]
    assert [r["entry_id"] for r in rows] == [e["entry_id"] for e in entries]

    cv = raw.get("/v1/audit/export", params={"format": "csv"})
    assert cv.status_code == 200, cv.text
    assert "csv" in cv.headers.get("content-type", ""), cv.headers.get("content-type")
    table = list(csv.DictReader(io.StringIO(cv.text)))
    assert [r["entry_id"] for r in table] == [e["entry_id"] for e in entries]
    assert [r["action"] for r in table] == [e["action"] for e in entries]
    assert [r["entry_hash"] for r in table] == [e["entry_hash"] for e in entries]

    bad = raw.get("/v1/audit/export", params={"format": "xml"})
    assert bad.status_code == 400, bad.text


def test_export_time_window(fresh) -> None:  # type: ignore[no-untyped-def]
    stack, raw = fresh
    stack.agents.register(unique_name("win-1"))
    mark = stack.audit.list()["max_timestamp"]
    wait_past(mark)
    stack.agents.register(unique_name("win-2"))
    after = raw.get("/v1/audit/export", params={"format": "json", "from": str(mark + 1)}).json()["entries"]
    assert [e["action"] for e in after] == ["agent.register"]
    assert after[0]["timestamp"] > mark
    before = raw.get("/v1/audit/export", params={"format": "json", "to": str(mark + 1)}).json()["entries"]
    assert all(e["timestamp"] <= mark for e in before) and before
    iso = raw.get("/v1/audit/export", params={"format": "json", "from": "2000-01-01T00:00:00Z"})
    assert iso.status_code == 200 and len(iso.json()["entries"]) == len(export_all(raw))


def test_concurrent_writes_keep_one_chain(stack_server, fresh) -> None:  # type: ignore[no-untyped-def]
    """Parallel state changes must not fork the chain (two entries on one head)."""
    from concurrent.futures import ThreadPoolExecutor

    _stack, raw = fresh
    key = raw.headers["authorization"].split(" ", 1)[1]
    names = [unique_name("par") for _ in range(24)]

    def register(name: str) -> int:
        with Stack(api_key=key, base_url=stack_server.base_url) as s:
            s.agents.register(name)
        return 1

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert sum(pool.map(register, names)) == len(names)

    entries = export_all(raw)
    registers = [e for e in entries if e["action"] == "agent.register"]
    assert len(registers) == len(names)
    assert_chain_links(entries)
    head = _stack.audit.chain_head()
    assert head["entry_count"] == len(entries)
    v = _stack.audit.verify_chain()
    assert v["ok"] is True and v["entries_checked"] == len(entries), v


def test_concurrent_duplicate_names_one_winner(stack_server, fresh) -> None:  # type: ignore[no-untyped-def]
    from concurrent.futures import ThreadPoolExecutor

    from getstack import StackError

    _stack, raw = fresh
    key = raw.headers["authorization"].split(" ", 1)[1]
    name = unique_name("race")

    def attempt(_: int) -> str:
        with Stack(api_key=key, base_url=stack_server.base_url) as s:
            try:
                s.agents.register(name)
                return "ok"
            except StackError as exc:
                return f"{exc.status_code}:{exc.code}"

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(attempt, range(8)))
    assert results.count("ok") == 1, results
    assert set(results) - {"ok"} == {"409:CONFLICT"}, results
    assert [a.name for a in _stack.agents.list()].count(name) == 1
    assert _stack.audit.verify_chain()["ok"] is True
