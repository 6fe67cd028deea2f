"""Transport rules of rest-contract.md §0-§2, checked with raw httpx.

These are the behaviours the SDK relies on without saying so: bodiless POSTs
that still carry Content-Type: application/json, JSON error envelopes on every
failure, no redirects.
"""

from __future__ import annotations

import json

import httpx
import pytest
from stack_checks import assert_envelope
from stack_harness import unique_name

SDK_HEADERS = {"Content-Type": "application/json", "Accept": "*/*"}
BAD_BODY_CODES = ("VALIDATION_ERROR", "INVALID_REQUEST")


@pytest.fixture
def agent_id(http: httpx.Client) -> str:
    r = http.post("/v1/agents/register", json={"name": unique_name("transport")})
    assert r.status_code in (200, 201), r.text
    return r.json()["id"]


def test_healthz_is_public(stack_server) -> None:
    r = httpx.get(f"{stack_server.base_url}/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_success_is_json(http: httpx.Client, agent_id: str) -> None:
    r = http.get(f"/v1/agents/{agent_id}", headers=SDK_HEADERS)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    lst = http.get("/v1/agents", headers=SDK_HEADERS)
    assert lst.status_code == 200 and isinstance(lst.json(), list), "GET /v1/agents must be a bare array"


def test_delete_returns_json_or_204(http: httpx.Client, agent_id: str) -> None:
    r = http.delete(f"/v1/agents/{agent_id}", headers=SDK_HEADERS)
    assert r.status_code in (200, 204), r.text
    if r.status_code == 200:
        assert isinstance(r.json(), dict)


# --------------------------------------------------------------------------- bodiless POST


def test_bodiless_post_with_json_content_type(http: httpx.Client, agent_id: str) -> None:
    # Without approval: the governance rule must answer, not a body-parse error.
    r = http.post(f"/v1/agents/{agent_id}/unblock", headers=SDK_HEADERS, content=b"")
    assert r.request.headers["content-length"] == "0"
    assert_envelope(r, 403, "GOVERNANCE_APPROVAL_REQUIRED")
    # With approval: success, JSON body.
    r = http.post(
        f"/v1/agents/{agent_id}/unblock",
        headers={**SDK_HEADERS, "X-Governance-Approval": "gov_e2e"},
        content=b"",
    )
    assert r.status_code == 200, r.text
    assert isinstance(r.json(), dict)


def test_bodiless_post_without_content_type(http: httpx.Client, agent_id: str) -> None:
    r = http.post(f"/v1/agents/{agent_id}/unblock", headers={"X-Governance-Approval": "gov_e2e"})
    assert r.status_code == 200, r.text


def test_empty_object_body_on_unblock(http: httpx.Client, agent_id: str) -> None:
    r = http.post(f"/v1/agents/{agent_id}/unblock", headers={"X-Governance-Approval": "gov_e2e"}, json={})
    assert r.status_code == 200, r.text


# --------------------------------------------------------------------------- bad bodies


@pytest.mark.parametrize(
    "raw",
    [
        b'{"name": ',  # truncated
        b"{name: 'x'}",  # not JSON
        b"\xff\xfe\x00",  # not UTF-8
        b"[1, 2, 3]",  # not an object
        b'"just a string"',
        b"null",
    ],
)
def test_malformed_json_is_400_envelope(http: httpx.Client, raw: bytes) -> None:
    r = http.post("/v1/agents/register", headers=SDK_HEADERS, content=raw)
    assert_envelope(r, 400, BAD_BODY_CODES)


@pytest.mark.parametrize(
    "body",
    [
        {"name": 123},
        {"name": None},
        {"name": ["a", "b"]},
        {},
        {"description": "no name"},
        {"name": "ok-name", "llm_redact_pii": "yes"},
        {"name": "ok-name", "description": 42},
        {"name": "ok-name", "accountability_mode": 1},
    ],
)
def test_wrong_types_are_400_envelope(http: httpx.Client, body: dict) -> None:
    if body.get("name") == "ok-name":
        body = {**body, "name": unique_name("types")}
    r = http.post("/v1/agents/register", headers=SDK_HEADERS, content=json.dumps(body))
    assert_envelope(r, 400, BAD_BODY_CODES)


def test_patch_wrong_types_are_400(http: httpx.Client, agent_id: str) -> None:
    for body in ({"status": 5}, {"llm_redact_pii": "no"}, [1]):
        r = http.patch(f"/v1/agents/{agent_id}", headers=SDK_HEADERS, content=json.dumps(body))
        assert_envelope(r, 400, BAD_BODY_CODES)


def test_null_optional_fields_accepted(http: httpx.Client) -> None:
    name = unique_name("nulls")
    r = http.post(
        "/v1/agents/register",
        headers=SDK_HEADERS,
        content=json.dumps({"name": name, "description": None, "accountability_mode": None}),
    )
    assert r.status_code in (200, 201), r.text
    body = r.json()
    assert body["name"] == name and body["description"] is None
    assert body["accountability_mode"] == "enforced"


def test_unknown_fields_on_register_tolerated(http: httpx.Client) -> None:
    r = http.post("/v1/agents/register", json={"name": unique_name("extra"), "icon_url": None, "future": {"x": 1}})
    assert r.status_code in (200, 201), r.text


def test_oversize_body_is_413_envelope(http: httpx.Client) -> None:
    big = json.dumps({"name": unique_name("huge"), "description": "x" * (2 * 1024 * 1024)}).encode()
    try:
        r = http.post("/v1/agents/register", headers=SDK_HEADERS, content=big)
    except httpx.TransportError as exc:  # pragma: no cover - failure path
        pytest.fail(f"server dropped the connection instead of answering 413: {exc!r}")
    err = assert_envelope(r, 413)
    assert err["code"] == "PAYLOAD_TOO_LARGE", err


def test_query_param_types(http: httpx.Client) -> None:
    r = http.get("/v1/audit", params={"limit": "5"})
    assert r.status_code == 200 and len(r.json()["entries"]) <= 5
    r = http.get("/v1/audit", params={"since": "yesterday"})
    assert_envelope(r, 400, BAD_BODY_CODES)


# --------------------------------------------------------------------------- auth


def test_missing_auth_is_401_envelope(stack_server) -> None:
    with httpx.Client(base_url=stack_server.base_url, follow_redirects=False) as anon:
        for method, path in (
            ("GET", "/v1/agents"),
            ("POST", "/v1/agents/register"),
            ("GET", "/v1/audit"),
            ("GET", "/v1/audit/chain-head"),
        ):
            r = anon.request(method, path, headers=SDK_HEADERS, content=b'{"name":"anon-agent"}' if method == "POST" else None)
            assert_envelope(r, 401, "UNAUTHORIZED")


@pytest.mark.parametrize(
    "value",
    ["Bearer sk_live_op_wrongwrongwrong", "Bearer", "Bearer sk_live_op_", "Basic dXNlcjpwYXNz", "sk_live_op_nobearerprefix"],
)
def test_bad_auth_is_401_envelope(stack_server, value: str) -> None:
    r = httpx.get(f"{stack_server.base_url}/v1/agents", headers={**SDK_HEADERS, "Authorization": value})
    assert_envelope(r, 401, ("UNAUTHORIZED", "INVALID_API_KEY"))


def test_error_never_echoes_the_key(stack_server) -> None:
    key = "sk_live_op_thisShouldNeverBeEchoed123"
    r = httpx.get(f"{stack_server.base_url}/v1/agents", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 401
    assert key not in r.text


# --------------------------------------------------------------------------- routing


def test_unknown_route_is_404_envelope(http: httpx.Client) -> None:
    for path in ("/v1/definitely-not-a-route", "/v1/agents/agt_x/nope", "/nothing-here"):
        r = http.get(path, headers=SDK_HEADERS)
        assert_envelope(r, 404, "NOT_FOUND")


def test_unknown_agent_is_404_envelope(http: httpx.Client) -> None:
    r = http.get("/v1/agents/agt_unknown123", headers=SDK_HEADERS)
    assert_envelope(r, 404, "NOT_FOUND")


def test_wrong_method_is_json_error(http: httpx.Client) -> None:
    r = http.put("/v1/agents", headers=SDK_HEADERS, content=b"{}")
    assert_envelope(r, 405)


@pytest.mark.parametrize("path", ["/v1/agents/", "/v1/audit/", "/v1/audit/chain-head/", "/v1//agents"])
def test_no_redirects(http: httpx.Client, path: str) -> None:
    r = http.get(path, headers=SDK_HEADERS)
    assert not r.is_redirect, f"{path} -> {r.status_code} Location={r.headers.get('location')}"
    assert r.status_code < 300 or r.status_code >= 400
    r.json()  # every response, success or error, is JSON
    if r.status_code >= 400:
        assert_envelope(r, r.status_code)


def test_empty_governance_header_is_not_an_approval(http: httpx.Client, agent_id: str) -> None:
    r = http.post(f"/v1/agents/{agent_id}/unblock", headers={**SDK_HEADERS, "X-Governance-Approval": ""})
    assert r.status_code in (400, 403), r.text
    assert_envelope(r, r.status_code, ("GOVERNANCE_APPROVAL_REQUIRED", "VALIDATION_ERROR"))


def test_trailing_garbage_after_json_is_400(http: httpx.Client) -> None:
    r = http.post("/v1/agents/register", headers=SDK_HEADERS, content=b'{"name":"garbage-tail"} xx')
    assert_envelope(r, 400, BAD_BODY_CODES)


@pytest.mark.parametrize(
    "path,params",
    [
        ("/v1/audit", {"limit": "99999999999999999999"}),
        ("/v1/audit", {"limit": "1.5"}),
        ("/v1/audit/export", {"format": "json", "after_seq": "abc"}),
        ("/v1/audit/export", {"format": "json", "from": "not-a-date"}),
        ("/v1/audit/export", {"format": "json", "limit": "0"}),
        ("/v1/audit/verify-chain", {"from": "not-a-date"}),
        ("/v1/audit/verify-chain", {"limit": "many"}),
    ],
)
def test_bad_query_params_are_400_envelope(http: httpx.Client, path: str, params: dict) -> None:
    assert_envelope(http.get(path, params=params, headers=SDK_HEADERS), 400, BAD_BODY_CODES)


def test_hostile_path_ids_are_404_not_500(http: httpx.Client) -> None:
    for aid in ("agt_" + "x" * 5000, "agt_%00x", "agt_%2e%2e", "%F0%9F%92%A5"):
        r = http.get(f"/v1/agents/{aid}", headers=SDK_HEADERS)
        assert_envelope(r, r.status_code, ("NOT_FOUND", "VALIDATION_ERROR"))
        assert r.status_code in (400, 404), (aid[:20], r.status_code)
