"""Assertions and helpers shared by the suites (no STACK code, no fixtures)."""

from __future__ import annotations

import hashlib
import json
import re
import time
from datetime import datetime
from typing import Any

import httpx

GENESIS_HASH = "0" * 64
HEX64 = re.compile(r"^[0-9a-f]{64}$")
ID_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")


def parse_iso(value: str) -> datetime:
    """Parse an ISO-8601 timestamp (accepts a trailing Z); fail clearly otherwise."""
    assert isinstance(value, str) and value, f"expected ISO-8601 string, got {value!r}"
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:  # pragma: no cover - failure path
        raise AssertionError(f"not ISO-8601: {value!r}") from exc
    assert dt.tzinfo is not None, f"timestamp without a time zone: {value!r}"
    return dt


def assert_envelope(resp: httpx.Response, status: int, codes: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """The canonical error envelope {"error": {"code", "message", "details"}}."""
    assert resp.status_code == status, (
        f"{resp.request.method} {resp.request.url.path} -> {resp.status_code}, expected {status}; body={resp.text[:500]!r}"
    )
    ctype = resp.headers.get("content-type", "")
    assert ctype.startswith("application/json"), f"error content-type {ctype!r}; body={resp.text[:200]!r}"
    body = resp.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"no error envelope: {body!r}"
    err = body["error"]
    assert isinstance(err.get("code"), str) and err["code"], f"error.code missing: {body!r}"
    assert isinstance(err.get("message"), str) and err["message"], f"error.message missing: {body!r}"
    assert isinstance(err.get("details", {}), dict), f"error.details not an object: {body!r}"
    if codes is not None:
        wanted = (codes,) if isinstance(codes, str) else codes
        assert err["code"] in wanted, f"error.code {err['code']!r}, expected one of {wanted}; body={body!r}"
    return err


def wait_past(ms: int) -> None:
    """Block (bounded) until the wall clock is strictly past `ms` epoch-ms."""
    deadline = time.monotonic() + 2.0
    while time.time() * 1000 <= ms + 1 and time.monotonic() < deadline:
        time.sleep(0.002)


def export_all(http: httpx.Client, page: int = 50) -> list[dict[str, Any]]:
    """Every audit entry of the caller's operator, via paginated JSON export."""
    out: list[dict[str, Any]] = []
    after: int | None = None
    for _ in range(10_000):
        params: dict[str, str] = {"format": "json", "limit": str(page)}
        if after is not None:
            params["after_seq"] = str(after)
        r = http.get("/v1/audit/export", params=params)
        assert r.status_code == 200, f"export -> {r.status_code}: {r.text[:300]}"
        body = r.json()
        entries = body["entries"]
        out.extend(entries)
        nxt = body.get("next_after_seq")
        if not entries or nxt is None:
            return out
        assert after is None or nxt > after, f"export pagination does not advance: {after} -> {nxt}"
        after = nxt
    raise AssertionError("export pagination did not terminate")


# Fields hashed by format v1 (docs/audit-chain.md): every field but entry_hash, plus "v": 1.
HASHED_FIELDS = (
    "action",
    "actor",
    "agent_id",
    "details",
    "duration_ms",
    "entry_id",
    "error_code",
    "error_message",
    "layer",
    "operator_id",
    "outcome",
    "passport_jti",
    "payload_hash",
    "prev_entry_hash",
    "seq",
    "target_id",
    "target_type",
    "timestamp",
    "trace_id",
)


def recompute_entry_hash(entry: dict[str, Any]) -> str:
    """SHA-256 hex of canonical JSON (sorted keys, no whitespace) of the v1 hash input."""
    missing = [k for k in HASHED_FIELDS if k not in entry]
    assert not missing, f"exported entry lacks hashed fields {missing}: {entry!r}"
    doc = {k: entry[k] for k in HASHED_FIELDS}
    doc["v"] = 1
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def assert_chain_links(entries_oldest_first: list[dict[str, Any]]) -> None:
    """seq runs 1..n without gaps, genesis prev hash, each prev = previous entry_hash."""
    prev = GENESIS_HASH
    for i, e in enumerate(entries_oldest_first, start=1):
        assert e["seq"] == i, f"seq gap: expected {i}, got {e['seq']} ({e['entry_id']})"
        assert e["prev_entry_hash"] == prev, f"broken link at seq {i}: {e['prev_entry_hash']} != {prev}"
        assert HEX64.match(e["entry_hash"]), f"entry_hash not 64 lower-hex: {e['entry_hash']!r}"
        prev = e["entry_hash"]
