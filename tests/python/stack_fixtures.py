"""pytest fixtures shared by tests/sdk and tests/mcp.

Each suite's conftest.py does `from stack_fixtures import *`. The server
fixture is session-scoped per suite and parametrized over the storage
backends: always "sqlite", plus "postgres" when STACK_TEST_POSTGRES_URL is set
(each postgres server gets its own freshly created database, dropped after).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from stack_harness import HarnessError, ServerInfo, StackServer, backends, server_bin, unique_name

__all__ = [
    "stack_server",
    "stack",
    "stack2",
    "http",
    "http2",
    "fresh_operator",
    "agent_name",
]


@pytest.fixture(scope="session", params=backends())
def stack_server(request: pytest.FixtureRequest) -> Iterator[ServerInfo]:
    try:
        server_bin()
    except HarnessError as exc:
        pytest.exit(str(exc), returncode=3)
    srv = StackServer.fresh(request.param)
    try:
        srv.start()
        assert srv.api_key, "server printed no operator key"
        second = srv.create_operator(unique_name("second-op"))
        assert second != srv.api_key, "operators create returned the first operator's key"
        yield ServerInfo(
            base_url=srv.base_url,
            api_key=srv.api_key,
            second_api_key=second,
            backend=request.param,
            server=srv,
        )
        code = srv.stop()
        if code not in (0, None):
            # Surfaces in the session output; the dedicated lifecycle test asserts it.
            print(f"\n[stack-server/{request.param}] exited with code {code} after SIGTERM")
    finally:
        srv.cleanup()


def _client(base_url: str, key: str):  # type: ignore[no-untyped-def]
    from getstack import Stack

    return Stack(api_key=key, base_url=base_url, timeout=15.0)


@pytest.fixture
def stack(stack_server: ServerInfo):  # type: ignore[no-untyped-def]
    """The getstack SDK client for the first operator."""
    client = _client(stack_server.base_url, stack_server.api_key)
    yield client
    client.close()


@pytest.fixture
def stack2(stack_server: ServerInfo):  # type: ignore[no-untyped-def]
    """The getstack SDK client for the second operator."""
    client = _client(stack_server.base_url, stack_server.second_api_key)
    yield client
    client.close()


@pytest.fixture
def fresh_operator(stack_server: ServerInfo):  # type: ignore[no-untyped-def]
    """(api_key, SDK client) for a brand-new operator whose audit chain is empty."""
    key = stack_server.new_operator()
    client = _client(stack_server.base_url, key)
    yield key, client
    client.close()


def _http(base_url: str, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=base_url, headers=headers, timeout=15.0, follow_redirects=False)


@pytest.fixture
def http(stack_server: ServerInfo) -> Iterator[httpx.Client]:
    """Raw httpx client authenticated as the first operator (no redirects)."""
    with _http(stack_server.base_url, stack_server.api_key) as c:
        yield c


@pytest.fixture
def http2(stack_server: ServerInfo) -> Iterator[httpx.Client]:
    """Raw httpx client authenticated as the second operator (no redirects)."""
    with _http(stack_server.base_url, stack_server.second_api_key) as c:
        yield c


@pytest.fixture
def agent_name() -> str:
    return unique_name("agent")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """On a failure, attach the tail of the server's stderr log to the report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when in ("setup", "call"):
        info = getattr(item, "funcargs", {}).get("stack_server")
        if isinstance(info, ServerInfo):
            report.sections.append((f"stack-server ({info.backend}) stderr tail", info.server.stderr_tail(30)))


__all__.append("pytest_runtest_makereport")
