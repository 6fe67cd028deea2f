"""STACK's OAuth 2.1 authorization server, driven by real clients.

The official `mcp` client does the whole flow by itself (discovery from the
401, dynamic registration, PKCE, token exchange, refresh); the test only plays
the user in the browser: its redirect handler opens the authorization URL,
fills in the server-rendered login form (an API key) and the consent form
through their real HTML, and hands the redirect back. The security tests
speak the protocol with plain httpx.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import secrets
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp_client import dump, json_of, run, text_of
from stack_harness import StackServer, backends, unique_name

SDK_SCOPES = (
    "passports:read passports:write agents:read agents:write services:read "
    "services:connect credentials:read proxy:read proxy:write audit:read"
)
REDIRECT = "http://127.0.0.1:33418/callback"
ALL_TOOL_NAMES = (Path(__file__).resolve().parents[2] / "crates/stack-mcp/tests/tool-names.txt").read_text().split()


# --------------------------------------------------------------------------- the user's browser


class _Forms(HTMLParser):
    """Collects every <form> with its action and inputs (hidden and others)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "method": a.get("method", "get"), "fields": {}, "buttons": []})
        elif tag in ("input", "button") and self.forms:
            form = self.forms[-1]
            if tag == "input" and a.get("name"):
                form["fields"][a["name"]] = a.get("value", "")
            if tag == "button" and a.get("name"):
                form["buttons"].append((a["name"], a.get("value", "")))


def forms_of(html: str) -> list[dict[str, Any]]:
    p = _Forms()
    p.feed(html)
    return p.forms


class Browser:
    """A user agent with a cookie jar that follows the login and consent pages."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url
        self.http = httpx.Client(base_url=base_url, timeout=15.0, follow_redirects=False)
        self.last_consent: dict[str, Any] | None = None

    def close(self) -> None:
        self.http.close()

    def open(self, url: str) -> httpx.Response:
        return self.http.get(url)

    def login(self, page: httpx.Response, api_key: str) -> httpx.Response:
        assert page.status_code in (200, 401), page.text
        assert page.headers["content-type"].startswith("text/html")
        (form,) = forms_of(page.text)
        assert form["method"].lower() == "post" and form["action"] == "/oauth/authorize", form
        fields = dict(form["fields"])
        assert "csrf" in fields and "request_id" in fields, fields
        fields["api_key"] = api_key
        return self.http.post(form["action"], data=fields)

    def consent(self, page: httpx.Response, decision: str = "approve") -> httpx.Response:
        assert page.status_code == 200, page.text
        (form,) = forms_of(page.text)
        assert (("decision", "approve") in form["buttons"]) and (("decision", "deny") in form["buttons"]), form
        self.last_consent = dict(form["fields"])
        return self.http.post(form["action"], data={**form["fields"], "decision": decision})

    def authorize(self, url: str, api_key: str, decision: str = "approve") -> str:
        """Runs the whole browser part; returns the Location sent back to the client."""
        res = self.consent(self.login(self.open(url), api_key), decision)
        assert res.status_code in (302, 303), (res.status_code, res.text)
        return res.headers["location"]


def query_of(location: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))


# --------------------------------------------------------------------------- raw protocol helpers


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def register(http: httpx.Client, redirect_uris: list[str] | None = None) -> str:
    res = http.post(
        "/oauth/register",
        json={
            "client_name": "pytest raw client",
            "redirect_uris": redirect_uris or [REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none",
        },
    )
    assert res.status_code == 201, res.text
    body = res.json()
    assert "client_secret" not in body
    return str(body["client_id"])


def authorize_url(client_id: str, challenge: str, **extra: str) -> str:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": SDK_SCOPES,
        "state": secrets.token_urlsafe(12),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    return "/oauth/authorize?" + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})


class Flow:
    """One authorization: registers a client and runs the browser part."""

    def __init__(self, stack_server, api_key: str | None = None, **extra: str) -> None:  # type: ignore[no-untyped-def]
        self.base = stack_server.base_url
        self.http = httpx.Client(base_url=self.base, timeout=15.0, follow_redirects=False)
        self.client_id = register(self.http)
        self.verifier, challenge = pkce()
        self.url = authorize_url(self.client_id, challenge, **extra)
        self.state = query_of(self.url)["state"]
        self.browser = Browser(self.base)
        self.location = self.browser.authorize(self.url, api_key or stack_server.api_key)
        q = query_of(self.location)
        assert q.get("state") == self.state, q
        assert q.get("iss") == self.base, q
        self.code = q["code"]

    def exchange(self, **override: str) -> httpx.Response:
        form = {
            "grant_type": "authorization_code",
            "code": self.code,
            "redirect_uri": REDIRECT,
            "client_id": self.client_id,
            "code_verifier": self.verifier,
            **override,
        }
        return self.http.post("/oauth/token", data=form)

    def refresh(self, refresh_token: str) -> httpx.Response:
        return self.http.post(
            "/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": self.client_id},
        )

    def close(self) -> None:
        self.http.close()
        self.browser.close()


def mcp_post(base: str, token: str, method: str, params: dict[str, Any] | None = None, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{base}/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}},
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2025-11-25",
            **headers,
        },
        timeout=15.0,
    )


def mcp_tools(base: str, token: str) -> list[str]:
    res = mcp_post(base, token, "tools/list")
    assert res.status_code == 200, res.text
    return [t["name"] for t in res.json()["result"]["tools"]]


def token_ok(res: httpx.Response) -> dict[str, Any]:
    assert res.status_code == 200, res.text
    assert "no-store" in res.headers.get("cache-control", "")
    body = res.json()
    assert body["token_type"] == "Bearer"
    assert body["access_token"].startswith("sat_") and body["refresh_token"].startswith("srt_")
    assert isinstance(body["expires_in"], int) and 0 < body["expires_in"] <= 3600
    assert isinstance(body["scope"], str)
    return body


def oauth_err(res: httpx.Response, error: str, status: int = 400) -> None:
    assert res.status_code == status, (res.status_code, res.text)
    body = res.json()
    assert body["error"] == error, body
    assert isinstance(body.get("error_description"), str)


# --------------------------------------------------------------------------- discovery


def test_discovery_documents_and_401(stack_server) -> None:  # type: ignore[no-untyped-def]
    base = stack_server.base_url
    res = httpx.post(f"{base}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert res.status_code == 401
    www = res.headers["www-authenticate"]
    assert f'resource_metadata="{base}/.well-known/oauth-protected-resource/mcp"' in www, www
    assert 'scope="' in www and "agents:read" in www, www

    prm = httpx.get(f"{base}/.well-known/oauth-protected-resource/mcp").json()
    assert prm["resource"] == f"{base}/mcp"
    assert prm["authorization_servers"] == [base]
    assert httpx.get(f"{base}/.well-known/oauth-protected-resource").json()["resource"] == base

    for path in ("/.well-known/oauth-authorization-server", "/v1/.well-known/oauth-authorization-server"):
        meta = httpx.get(base + path).json()
        assert meta["issuer"] == base
        assert meta["authorization_endpoint"] == f"{base}/oauth/authorize"
        assert meta["token_endpoint"] == f"{base}/oauth/token"
        assert meta["registration_endpoint"] == f"{base}/oauth/register"
        assert meta["revocation_endpoint"] == f"{base}/oauth/revoke"
        assert meta["code_challenge_methods_supported"] == ["S256"]
        assert meta["authorization_response_iss_parameter_supported"] is True
        assert meta["token_endpoint_auth_methods_supported"] == ["none"]
        assert meta["client_id_metadata_document_supported"] is True
        assert set(SDK_SCOPES.split()) <= set(meta["scopes_supported"])


# --------------------------------------------------------------------------- the official mcp client


class _MemoryStorage:
    def __init__(self) -> None:
        self.tokens = None
        self.client_info = None

    async def get_tokens(self):  # type: ignore[no-untyped-def]
        return self.tokens

    async def set_tokens(self, tokens) -> None:  # type: ignore[no-untyped-def]
        self.tokens = tokens

    async def get_client_info(self):  # type: ignore[no-untyped-def]
        return self.client_info

    async def set_client_info(self, info) -> None:  # type: ignore[no-untyped-def]
        self.client_info = info


def test_official_client_full_oauth_flow_both_revisions(stack_server) -> None:  # type: ignore[no-untyped-def]
    import httpx2
    from mcp import ClientSession
    from mcp.client.auth import OAuthClientProvider
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

    base = stack_server.base_url
    url = f"{base}/mcp"
    browser = Browser(base)
    seen: dict[str, Any] = {"authorizations": 0}
    name = unique_name("oauth-agent")

    async def redirect_handler(authorization_url: str) -> None:
        seen["authorizations"] += 1
        q = query_of(authorization_url)
        seen["auth_query"] = q
        seen["location"] = browser.authorize(authorization_url, stack_server.api_key)

    async def callback_handler() -> AuthorizationCodeResult:
        q = query_of(seen["location"])
        return AuthorizationCodeResult(code=q["code"], state=q.get("state"), iss=q.get("iss"))

    storage = _MemoryStorage()
    provider = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="pytest mcp client",
            redirect_uris=[REDIRECT],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )

    async def session(modern: bool) -> dict[str, Any]:
        client = httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(30.0, read=60.0))
        async with client, streamable_http_client(url, http_client=client) as streams:
            async with ClientSession(streams[0], streams[1]) as s:
                if modern:
                    await s.discover()
                else:
                    await s.initialize()
                tools = [dump(t) for t in (await s.list_tools()).tools]
                reg = dump(await s.call_tool("stack_register_agent", {"name": f"{name}-{int(modern)}"}))
                listed = dump(await s.call_tool("stack_list_agents", {}))
                return {"tools": tools, "reg": reg, "listed": listed}

    async def go() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        legacy = await session(modern=False)
        first_tokens = storage.tokens
        # Make the client believe its access token has expired: it must
        # refresh (rotating the refresh token) without a new authorization.
        provider.context.token_expiry_time = time.time() - 5
        modern = await session(modern=True)
        seen["rotated"] = (first_tokens.refresh_token, storage.tokens.refresh_token)
        seen["access"] = (first_tokens.access_token, storage.tokens.access_token)
        return legacy, modern, {}

    try:
        legacy, modern, _ = run(go, timeout=120)
    finally:
        browser.close()

    assert seen["authorizations"] == 1, "the client should authorize once and then refresh"
    q = seen["auth_query"]
    assert q["code_challenge_method"] == "S256" and q.get("resource") == url, q
    old_refresh, new_refresh = seen["rotated"]
    assert old_refresh != new_refresh, "the refresh token was not rotated"
    assert seen["access"][0] != seen["access"][1]
    for result in (legacy, modern):
        names = {t["name"] for t in result["tools"]}
        assert {"stack_list_agents", "stack_register_agent", "stack_audit_list"} <= names
        assert not result["reg"].get("isError"), text_of(result["reg"])
        agents = {a["name"] for a in json_of(result["listed"])["agents"]}
        assert f"{name}-0" in agents
    assert f"{name}-1" in {a["name"] for a in json_of(modern["listed"])["agents"]}

    # The rotated-away refresh token is dead, and reusing it kills the family.
    with httpx.Client(base_url=base, timeout=15.0) as http:
        res = http.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": old_refresh})
        oauth_err(res, "invalid_grant")
        assert mcp_post(base, seen["access"][1], "tools/list").status_code == 401

    # The consent is in the operator's audit chain.
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {stack_server.api_key}"}) as http:
        actions = [e["action"] for e in http.get("/v1/audit", params={"limit": 50}).json()["entries"]]
    assert "oauth.authorize" in actions and "oauth.revoke" in actions, actions


def test_tools_list_names_every_published_tool_and_pending_ones_say_so(stack_server) -> None:  # type: ignore[no-untyped-def]
    flow = Flow(stack_server, scope=SDK_SCOPES + " services:write identity:read identity:write admin")
    try:
        token = token_ok(flow.exchange())["access_token"]
    finally:
        flow.close()
    names = mcp_tools(stack_server.base_url, token)
    missing = sorted(set(ALL_TOOL_NAMES) - set(names))
    assert not missing, missing
    assert len(ALL_TOOL_NAMES) == 77
    res = mcp_post(stack_server.base_url, token, "tools/call", {"name": "stack_list_members", "arguments": {}})
    result = res.json()["result"]
    assert result["isError"] is True and "NOT_IMPLEMENTED" in text_of(result), result


# --------------------------------------------------------------------------- scopes and tenancy


def test_scopes_are_a_ceiling_and_tenants_stay_apart(stack_server, http, http2) -> None:  # type: ignore[no-untyped-def]
    mine = unique_name("mine")
    assert http.post("/v1/agents/register", json={"name": mine}).status_code == 201
    theirs = unique_name("theirs")
    assert http2.post("/v1/agents/register", json={"name": theirs}).status_code == 201

    flow = Flow(stack_server, scope="agents:read")
    try:
        body = token_ok(flow.exchange())
    finally:
        flow.close()
    assert body["scope"] == "agents:read"
    base, token = stack_server.base_url, body["access_token"]
    names = mcp_tools(base, token)
    assert "stack_list_agents" in names
    assert "stack_register_agent" not in names and "stack_audit_list" not in names, names
    res = mcp_post(base, token, "tools/call", {"name": "stack_register_agent", "arguments": {"name": unique_name()}})
    result = res.json()["result"]
    assert result["isError"] is True and "FORBIDDEN" in text_of(result), result
    res = mcp_post(base, token, "tools/call", {"name": "stack_list_agents", "arguments": {}})
    agents = {a["name"] for a in res.json()["result"]["structuredContent"]["agents"]}
    assert mine in agents and theirs not in agents

    # The second operator's token sees only its own agents.
    flow2 = Flow(stack_server, api_key=stack_server.second_api_key, scope="agents:read")
    try:
        token2 = token_ok(flow2.exchange())["access_token"]
    finally:
        flow2.close()
    res = mcp_post(base, token2, "tools/call", {"name": "stack_list_agents", "arguments": {}})
    agents2 = {a["name"] for a in res.json()["result"]["structuredContent"]["agents"]}
    assert theirs in agents2 and mine not in agents2


# --------------------------------------------------------------------------- attacks


def test_pkce_is_mandatory_and_plain_is_refused(stack_server) -> None:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=stack_server.base_url, follow_redirects=False) as http:
        client_id = register(http)
        verifier, challenge = pkce()
        for extra in ({"code_challenge_method": "plain", "code_challenge": verifier}, {"code_challenge_method": None}, {"code_challenge": None}):
            res = http.get(authorize_url(client_id, challenge, state="st8", **extra))  # type: ignore[arg-type]
            assert res.status_code == 302, res.text
            q = query_of(res.headers["location"])
            assert res.headers["location"].startswith(REDIRECT)
            assert q["error"] == "invalid_request" and q["state"] == "st8" and q["iss"] == stack_server.base_url, q
            assert "code" not in q


def test_wrong_verifier_and_code_replay(stack_server) -> None:  # type: ignore[no-untyped-def]
    flow = Flow(stack_server)
    try:
        oauth_err(flow.exchange(code_verifier=pkce()[0]), "invalid_grant")
        tokens = token_ok(flow.exchange())
        assert len(mcp_tools(stack_server.base_url, tokens["access_token"])) > 0
        # Replay: refused, and every token issued from the code dies.
        oauth_err(flow.exchange(), "invalid_grant")
        assert mcp_post(stack_server.base_url, tokens["access_token"], "tools/list").status_code == 401
        oauth_err(flow.refresh(tokens["refresh_token"]), "invalid_grant")
    finally:
        flow.close()


def test_redirect_uri_must_match_and_never_open_redirects(stack_server) -> None:  # type: ignore[no-untyped-def]
    base = stack_server.base_url
    with httpx.Client(base_url=base, follow_redirects=False) as http:
        client_id = register(http)
        _, challenge = pkce()
        for evil in (
            "https://evil.example/callback",
            "http://127.0.0.1:33418/other",
            "http://localhost:33418/callback",
            "http://127.0.0.1:33418/callback/../../evil",
            "http://127.0.0.1:33418/callback?next=https://evil.example",
        ):
            res = http.get(authorize_url(client_id, challenge, redirect_uri=evil))
            assert res.status_code == 400, (evil, res.status_code)
            assert "location" not in res.headers, evil
            assert "text/html" in res.headers["content-type"]
        # Unknown client: shown, not redirected.
        res = http.get(authorize_url("mcpc_nope", challenge))
        assert res.status_code == 400 and "location" not in res.headers
        # Registration refuses non-loopback http and dangerous schemes.
        for bad in ("http://evil.example/cb", "javascript:alert(1)", "https://x.example/cb#f"):
            res = http.post("/oauth/register", json={"redirect_uris": [bad]})
            assert res.status_code == 400 and res.json()["error"] == "invalid_redirect_uri", (bad, res.text)
        # A loopback redirect URI matches on any port (RFC 8252 §7.3).
        res = http.get(authorize_url(client_id, challenge, redirect_uri="http://127.0.0.1:45001/callback"))
        assert res.status_code == 200, res.text

    # The token request must repeat the authorized redirect_uri exactly.
    flow = Flow(stack_server)
    try:
        oauth_err(flow.exchange(redirect_uri="http://127.0.0.1:33419/callback"), "invalid_grant")
        oauth_err(flow.exchange(client_id=register(flow.http)), "invalid_grant")
    finally:
        flow.close()


def test_tokens_are_bound_to_their_resource(stack_server) -> None:  # type: ignore[no-untyped-def]
    base = stack_server.base_url
    with httpx.Client(base_url=base, follow_redirects=False) as http:
        client_id = register(http)
        _, challenge = pkce()
        res = http.get(authorize_url(client_id, challenge, resource="https://evil.example/mcp"))
        assert res.status_code == 302
        assert query_of(res.headers["location"])["error"] == "invalid_target"

    flow = Flow(stack_server, resource=base)  # the REST API, not /mcp
    try:
        rest = token_ok(flow.exchange())["access_token"]
    finally:
        flow.close()
    res = mcp_post(base, rest, "tools/list")
    assert res.status_code == 401 and "resource_metadata" in res.headers["www-authenticate"]
    res = httpx.get(f"{base}/v1/agents", headers={"Authorization": f"Bearer {rest}"})
    assert res.status_code == 200, res.text

    flow = Flow(stack_server)
    try:
        mcp_token = token_ok(flow.exchange())["access_token"]
        oauth_err(flow.exchange(), "invalid_grant")  # (replay, for completeness)
    finally:
        flow.close()
    assert httpx.get(f"{base}/v1/agents", headers={"Authorization": f"Bearer {mcp_token}"}).status_code == 401


def test_refresh_rotation_and_reuse_revokes_the_family(stack_server) -> None:  # type: ignore[no-untyped-def]
    flow = Flow(stack_server)
    try:
        first = token_ok(flow.exchange())
        second = token_ok(flow.refresh(first["refresh_token"]))
        assert second["refresh_token"] != first["refresh_token"]
        third = token_ok(flow.refresh(second["refresh_token"]))
        assert mcp_post(stack_server.base_url, third["access_token"], "tools/list").status_code == 200
        # Reusing a rotated refresh token: refused, and the whole family dies.
        oauth_err(flow.refresh(first["refresh_token"]), "invalid_grant")
        oauth_err(flow.refresh(third["refresh_token"]), "invalid_grant")
        assert mcp_post(stack_server.base_url, third["access_token"], "tools/list").status_code == 401
    finally:
        flow.close()


def test_revoked_and_bogus_tokens_are_refused(stack_server) -> None:  # type: ignore[no-untyped-def]
    base = stack_server.base_url
    flow = Flow(stack_server)
    try:
        tokens = token_ok(flow.exchange())
        assert mcp_post(base, tokens["access_token"], "tools/list").status_code == 200
        res = flow.http.post("/oauth/revoke", data={"token": tokens["access_token"], "client_id": flow.client_id})
        assert res.status_code == 200
        assert mcp_post(base, tokens["access_token"], "tools/list").status_code == 401
        # Revoking the refresh token ends the authorization.
        assert flow.http.post("/oauth/revoke", data={"token": tokens["refresh_token"]}).status_code == 200
        oauth_err(flow.refresh(tokens["refresh_token"]), "invalid_grant")
        # Unknown tokens: 200 per RFC 7009, and 401 on use.
        assert flow.http.post("/oauth/revoke", data={"token": "sat_nope"}).status_code == 200
    finally:
        flow.close()
    for bogus in ("sat_" + secrets.token_urlsafe(32), "sat_" + "x" * 5000):
        res = mcp_post(base, bogus, "tools/list")
        assert res.status_code == 401 and "resource_metadata" in res.headers["www-authenticate"]


def test_consent_needs_this_browser_and_this_form(stack_server) -> None:  # type: ignore[no-untyped-def]
    base = stack_server.base_url
    with httpx.Client(base_url=base, follow_redirects=False) as http:
        client_id = register(http)
    _, challenge = pkce()
    url = authorize_url(client_id, challenge)
    victim = Browser(base)
    attacker = Browser(base)
    try:
        consent_page = victim.login(victim.open(url), stack_server.api_key)
        assert consent_page.status_code == 200
        (form,) = forms_of(consent_page.text)
        fields = {**form["fields"], "decision": "approve"}
        # Posted from elsewhere (no cookie of this request): refused, no redirect.
        res = attacker.http.post("/oauth/consent", data=fields)
        assert res.status_code == 403 and "location" not in res.headers, res.status_code
        # Right browser, forged CSRF token: refused.
        res = victim.http.post("/oauth/consent", data={**fields, "csrf": secrets.token_urlsafe(32)})
        assert res.status_code == 403 and "location" not in res.headers
        # The login form's token cannot be replayed into the consent step.
        res = victim.http.post("/oauth/consent", data={**fields, "csrf": forms_of(victim.open(url).text)[0]["fields"]["csrf"]})
        assert res.status_code == 403
        # The genuine form works once.
        res = victim.http.post("/oauth/consent", data=fields)
        assert res.status_code == 303 and "code=" in res.headers["location"]
        res = victim.http.post("/oauth/consent", data=fields)
        assert res.status_code in (400, 403) and "location" not in res.headers
        # The pages cannot be framed and are not cached.
        page = victim.open(url)
        assert page.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert "no-store" in page.headers["cache-control"]
    finally:
        victim.close()
        attacker.close()


def test_wrong_api_key_shows_the_login_again_and_deny_redirects(stack_server) -> None:  # type: ignore[no-untyped-def]
    base = stack_server.base_url
    with httpx.Client(base_url=base, follow_redirects=False) as http:
        client_id = register(http)
    _, challenge = pkce()
    url = authorize_url(client_id, challenge, state="s1")
    b = Browser(base)
    try:
        page = b.login(b.open(url), "sk_live_op_" + "A" * 43)
        assert page.status_code == 401 and "not a valid" in page.text
        consent = b.login(page, stack_server.api_key)
        res = b.consent(consent, "deny")
        q = query_of(res.headers["location"])
        assert q["error"] == "access_denied" and q["state"] == "s1", q
    finally:
        b.close()


def test_foreign_origin_is_refused(stack_server) -> None:  # type: ignore[no-untyped-def]
    flow = Flow(stack_server)
    try:
        token = token_ok(flow.exchange())["access_token"]
    finally:
        flow.close()
    base = stack_server.base_url
    assert mcp_post(base, token, "tools/list", Origin="https://evil.example").status_code == 403
    assert mcp_post(base, token, "tools/list", Origin="http://localhost:6274").status_code == 200
    assert mcp_post(base, stack_server.api_key, "tools/list", Origin="https://evil.example").status_code == 403


def test_token_endpoint_speaks_rfc6749(stack_server) -> None:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=stack_server.base_url) as http:
        oauth_err(http.post("/oauth/token", data={"grant_type": "password"}), "unsupported_grant_type")
        oauth_err(http.post("/oauth/token", data={}), "invalid_request")
        oauth_err(http.post("/oauth/token", json={"grant_type": "authorization_code"}), "invalid_request")
        oauth_err(
            http.post("/oauth/token", data={"grant_type": "authorization_code", "code": "sac_x", "client_id": "c", "redirect_uri": REDIRECT, "code_verifier": "v" * 43}),
            "invalid_grant",
        )
        oauth_err(http.post("/v1/oauth/token", data={"grant_type": "refresh_token", "refresh_token": "srt_x"}), "invalid_grant")


def test_registration_flooding_is_limited(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "stack.toml"
    config.write_text("oauth_registrations_per_hour = 3\n")
    monkeypatch.setenv("STACK_CONFIG", str(config))
    srv = StackServer.fresh("sqlite")
    try:
        srv.start()
        with httpx.Client(base_url=srv.base_url) as http:
            for _ in range(3):
                register(http)
            res = http.post("/oauth/register", json={"redirect_uris": [REDIRECT]})
            assert res.status_code == 429, res.text
            assert res.json()["error"] == "too_many_requests"
        srv.stop()
    finally:
        srv.cleanup()
        os.environ.pop("STACK_CONFIG", None)


# --------------------------------------------------------------------------- Client ID Metadata Documents
#
# The client_id is an https URL; STACK fetches the JSON document there through
# the proxy's SSRF-guarded egress client. The documents are served by a local
# HTTPS server with a throw-away certificate that the STACK server under test
# trusts (STACK_PROXY_CA_FILE); `cimd.test` resolves to 127.0.0.1
# (STACK_PROXY_RESOLVE) and loopback is allow-listed (STACK_PROXY_ALLOW_PRIVATE),
# as in tests/sdk/test_proxy.py. Plain http is not allowed on this server.

CIMD_HOST = "cimd.test"
CIMD_TIMEOUT_S = 5  # stack_app::oauth::CLIENT_METADATA_FETCH_TIMEOUT_SECONDS


def _self_signed(directory: Path, hosts: list[str]) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cimd.cert.pem", directory / "cimd.key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@dataclass
class _Doc:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})
    delay: float = 0.0


class Documents:
    """A local HTTPS server that serves Client ID Metadata Documents by path and counts fetches."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.docs: dict[str, _Doc] = {}
        self.hits: dict[str, int] = {}
        self.lock = threading.Lock()
        docs = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                with docs.lock:
                    docs.hits[self.path] = docs.hits.get(self.path, 0) + 1
                    doc = docs.docs.get(self.path, _Doc(status=404, body=b"{}"))
                if doc.delay:
                    time.sleep(doc.delay)
                try:
                    self.send_response(doc.status)
                    for k, v in doc.headers.items():
                        self.send_header(k, v)
                    self.send_header("content-length", str(len(doc.body)))
                    self.end_headers()
                    self.wfile.write(doc.body)
                except OSError:
                    pass  # the server under test gave up (the slow-document test)

            def log_message(self, *_args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, *_args: Any) -> None:
                pass

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str, host: str = CIMD_HOST, scheme: str = "https") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def serve(self, path: str, document: dict[str, Any] | bytes, **kw: Any) -> str:
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        with self.lock:
            self.docs[path] = _Doc(body=body, **kw)
            self.hits[path] = 0
        return self.url(path)

    def fetches(self, path: str) -> int:
        with self.lock:
            return self.hits.get(path, 0)

    def close(self) -> None:
        self.httpd.shutdown()


def client_document(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "client_id": url,
        "client_name": "pytest CIMD client",
        "client_uri": "https://cimd.test/",
        "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        **extra,
    }


@dataclass
class CimdEnv:
    base_url: str
    api_key: str
    docs: Documents
    cert: Path
    server: StackServer


def _cimd_server(backend: str, cert: Path, allow_private: bool) -> StackServer:
    env = {"STACK_PROXY_RESOLVE": f"{CIMD_HOST}=127.0.0.1,private.test=10.11.12.13", "STACK_PROXY_CA_FILE": str(cert)}
    if allow_private:
        env["STACK_PROXY_ALLOW_PRIVATE"] = "127.0.0.0/8"
    srv = StackServer.fresh(backend, extra_env=env)
    srv.start()
    return srv


@pytest.fixture(scope="module", params=backends())
def cimd_env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CimdEnv]:
    cert, key = _self_signed(tmp_path_factory.mktemp("cimd"), [CIMD_HOST, "private.test"])
    docs = Documents(cert, key)
    srv = _cimd_server(request.param, cert, allow_private=True)
    try:
        assert srv.api_key
        yield CimdEnv(base_url=srv.base_url, api_key=srv.api_key, docs=docs, cert=cert, server=srv)
        srv.stop()
    finally:
        srv.cleanup()
        docs.close()


def refused_page(http: httpx.Client, client_id: str, *needles: str, **extra: str) -> str:
    """GET /oauth/authorize for `client_id`: an error page, never a redirect."""
    _, challenge = pkce()
    res = http.get(authorize_url(client_id, challenge, **extra))
    assert res.status_code == 400, (client_id, res.status_code, res.text)
    assert "location" not in res.headers
    assert "text/html" in res.headers["content-type"]
    text = html_text(res.text)
    assert "invalid_client" in text, text
    for needle in needles:
        assert needle in text, (needle, text)
    return text


def html_text(page: str) -> str:
    import html

    return html.unescape(page)


def test_cimd_official_client_completes_authorization(cimd_env: CimdEnv) -> None:
    import httpx2
    from mcp import ClientSession
    from mcp.client.auth import OAuthClientProvider
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

    path = f"/clients/{secrets.token_hex(4)}/client.json"
    client_url = cimd_env.docs.url(path)
    cimd_env.docs.serve(path, client_document(client_url), headers={"content-type": "application/json", "cache-control": "max-age=60"})
    base = cimd_env.base_url
    url = f"{base}/mcp"
    browser = Browser(base)
    seen: dict[str, Any] = {}

    async def redirect_handler(authorization_url: str) -> None:
        seen["auth_query"] = query_of(authorization_url)
        login = browser.open(authorization_url)
        seen["login_page"] = html_text(login.text)
        consent = browser.login(login, cimd_env.api_key)
        seen["consent_page"] = html_text(consent.text)
        res = browser.consent(consent)
        assert res.status_code == 303, (res.status_code, res.text)
        seen["location"] = res.headers["location"]

    async def callback_handler() -> AuthorizationCodeResult:
        q = query_of(seen["location"])
        return AuthorizationCodeResult(code=q["code"], state=q.get("state"), iss=q.get("iss"))

    provider = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="pytest CIMD client",
            redirect_uris=[REDIRECT],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
        ),
        storage=_MemoryStorage(),
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
        client_metadata_url=client_url,
    )
    name = unique_name("cimd-agent")

    async def go() -> dict[str, Any]:
        client = httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(30.0, read=60.0))
        async with client, streamable_http_client(url, http_client=client) as streams:
            async with ClientSession(streams[0], streams[1]) as s:
                await s.initialize()
                reg = dump(await s.call_tool("stack_register_agent", {"name": name}))
                listed = dump(await s.call_tool("stack_list_agents", {}))
                return {"reg": reg, "listed": listed}

    try:
        result = run(go, timeout=120)
    finally:
        browser.close()

    # The client used its URL as client_id (no registration) and got through.
    assert seen["auth_query"]["client_id"] == client_url, seen["auth_query"]
    assert not result["reg"].get("isError"), text_of(result["reg"])
    assert name in {a["name"] for a in json_of(result["listed"])["agents"]}
    # Both pages name the client and the host its document came from.
    for page in (seen["login_page"], seen["consent_page"]):
        assert "pytest CIMD client" in page and f"{CIMD_HOST}:{cimd_env.docs.port}" in page, page
    # Cache-Control: max-age=60 — fetched once for authorize, login and consent.
    assert cimd_env.docs.fetches(path) == 1
    # The consent is audited under the URL client_id.
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {cimd_env.api_key}"}) as http:
        entries = http.get("/v1/audit", params={"limit": 50}).json()["entries"]
    assert any(e["action"] == "oauth.authorize" and e.get("target_id") == client_url for e in entries), entries[:3]


def test_cimd_raw_flow_and_no_store_documents_are_fetched_each_time(cimd_env: CimdEnv) -> None:
    path = "/clients/no-store.json"
    client_url = cimd_env.docs.url(path)
    cimd_env.docs.serve(path, client_document(client_url), headers={"content-type": "application/json", "cache-control": "no-store"})
    verifier, challenge = pkce()
    browser = Browser(cimd_env.base_url)
    try:
        location = browser.authorize(authorize_url(client_url, challenge, state="s-cimd"), cimd_env.api_key)
    finally:
        browser.close()
    q = query_of(location)
    assert location.startswith(REDIRECT) and q["state"] == "s-cimd" and q["iss"] == cimd_env.base_url, q
    # authorize, login and consent each fetched it again (no-store).
    assert cimd_env.docs.fetches(path) == 3
    with httpx.Client(base_url=cimd_env.base_url) as http:
        form = {"grant_type": "authorization_code", "code": q["code"], "redirect_uri": REDIRECT, "client_id": client_url, "code_verifier": verifier}
        oauth_err(http.post("/oauth/token", data={**form, "client_id": cimd_env.docs.url("/clients/other.json")}), "invalid_grant")
        tokens = token_ok(http.post("/oauth/token", data=form))
        refreshed = token_ok(http.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": client_url}))
    assert mcp_post(cimd_env.base_url, refreshed["access_token"], "tools/list").status_code == 200


def test_cimd_document_must_name_its_own_url(cimd_env: CimdEnv) -> None:
    path = "/clients/mismatch.json"
    client_url = cimd_env.docs.url(path)
    cimd_env.docs.serve(path, client_document(cimd_env.docs.url("/clients/someone-else.json")))
    with httpx.Client(base_url=cimd_env.base_url, follow_redirects=False) as http:
        refused_page(http, client_url, "client_id does not match its URL")
        # Not cached: a corrected document is accepted at once.
        cimd_env.docs.serve(path, client_document(client_url))
        _, challenge = pkce()
        assert http.get(authorize_url(client_url, challenge)).status_code == 200
        # Missing required fields.
        for broken in ({"client_name": None}, {"redirect_uris": []}, {"client_secret": "s3cret"}, {"token_endpoint_auth_method": "client_secret_basic"}):
            p = f"/clients/broken-{secrets.token_hex(3)}.json"
            u = cimd_env.docs.url(p)
            doc = {k: v for k, v in client_document(u, **broken).items() if v is not None}
            cimd_env.docs.serve(p, doc)
            refused_page(http, u)
        p = "/clients/not-json.json"
        cimd_env.docs.serve(p, b"<html>hello</html>", headers={"content-type": "text/html"})
        refused_page(http, cimd_env.docs.url(p), "not served as JSON")
        p = "/clients/missing.json"
        refused_page(http, cimd_env.docs.url(p), "HTTP 404")


def test_cimd_redirect_uri_must_be_in_the_document(cimd_env: CimdEnv) -> None:
    path = "/clients/redirects.json"
    client_url = cimd_env.docs.url(path)
    cimd_env.docs.serve(path, client_document(client_url))
    with httpx.Client(base_url=cimd_env.base_url, follow_redirects=False) as http:
        _, challenge = pkce()
        for evil in ("https://evil.example/callback", "http://127.0.0.1:33418/other", "http://localhost:33418/callback"):
            res = http.get(authorize_url(client_url, challenge, redirect_uri=evil))
            assert res.status_code == 400 and "location" not in res.headers, (evil, res.status_code)
            assert "redirect_uri does not match" in html_text(res.text)
        res = http.get(authorize_url(client_url, challenge))
        assert res.status_code == 200 and "pytest CIMD client" in html_text(res.text)


def test_cimd_refuses_plain_http_ip_literals_and_private_addresses(cimd_env: CimdEnv) -> None:
    path = "/clients/where.json"
    cimd_env.docs.serve(path, client_document(cimd_env.docs.url(path)))
    with httpx.Client(base_url=cimd_env.base_url, follow_redirects=False) as http:
        refused_page(http, cimd_env.docs.url(path, scheme="http"), "must use https")
        refused_page(http, cimd_env.docs.url(path, host="127.0.0.1"), "not acceptable")
        refused_page(http, cimd_env.docs.url("/"), "must have a path")
        refused_page(http, cimd_env.docs.url(path, host="user@cimd.test"), "not acceptable")
        # private.test resolves to 10.11.12.13: outside the allow-list, refused before connecting.
        refused_page(http, cimd_env.docs.url(path, host="private.test"), "non-public address")
    # Without the loopback allow-list (the default), the same document is refused.
    strict = _cimd_server("sqlite", cimd_env.cert, allow_private=False)
    try:
        with httpx.Client(base_url=strict.base_url, follow_redirects=False) as http:
            refused_page(http, cimd_env.docs.url(path), "non-public address (loopback)")
        strict.stop()
    finally:
        strict.cleanup()


def test_cimd_oversized_and_slow_documents_are_refused(cimd_env: CimdEnv) -> None:
    big = "/clients/big.json"
    big_url = cimd_env.docs.url(big)
    cimd_env.docs.serve(big, client_document(big_url, padding="x" * 6000))
    slow = "/clients/slow.json"
    slow_url = cimd_env.docs.url(slow)
    cimd_env.docs.serve(slow, client_document(slow_url), delay=CIMD_TIMEOUT_S + 3)
    with httpx.Client(base_url=cimd_env.base_url, follow_redirects=False, timeout=30.0) as http:
        refused_page(http, big_url, "larger than 5120 bytes")
        started = time.monotonic()
        refused_page(http, slow_url, f"within {CIMD_TIMEOUT_S} s")
        assert time.monotonic() - started < CIMD_TIMEOUT_S + 2.5
