"""The server process itself: first-start key, graceful SIGTERM, restart persistence."""

from __future__ import annotations

import pytest
from getstack import Stack
from stack_harness import KEY_RE, StackServer, backends, unique_name


@pytest.mark.parametrize("backend", backends())
def test_restart_keeps_data_and_does_not_reprint_key(backend: str) -> None:
    srv = StackServer.fresh(backend)
    try:
        srv.start()
        key = srv.api_key
        assert key and KEY_RE.fullmatch(key)
        assert sum(1 for line in srv.stdout_lines if KEY_RE.search(line)) == 1, srv.stdout_lines
        with Stack(api_key=key, base_url=srv.base_url) as s:
            a = s.agents.register(unique_name("persist"), description="survives restart")
            head = s.audit.chain_head()

        code = srv.stop()
        assert code == 0, f"SIGTERM should stop the server cleanly, exit code {code}\n{srv.stderr_tail()}"

        # Second start on the same data: no new key, same operator, same data.
        srv.api_key = None
        srv.start(expect_key=False)
        assert not any(KEY_RE.search(line) for line in srv.stdout_lines), (
            f"restart printed a key again: {srv.stdout_lines}"
        )
        with Stack(api_key=key, base_url=srv.base_url) as s:
            got = s.agents.get(a.id)
            assert (got.name, got.description) == (a.name, "survives restart")
            assert s.audit.chain_head() == head
            assert s.audit.verify_chain()["ok"] is True
            # And the chain continues where it stopped.
            s.agents.update(a.id, description="after restart")
            assert s.audit.chain_head()["entry_count"] == head["entry_count"] + 1
            assert s.audit.verify_chain()["ok"] is True
        assert srv.stop() == 0
    finally:
        srv.cleanup()


@pytest.mark.parametrize("backend", backends())
def test_operators_create_gives_distinct_working_keys(backend: str) -> None:
    srv = StackServer.fresh(backend)
    try:
        srv.start()
        k2 = srv.create_operator(unique_name("cli-op"))
        k3 = srv.create_operator(unique_name("cli-op"))
        assert len({srv.api_key, k2, k3}) == 3
        ops = set()
        for k in (srv.api_key, k2, k3):
            with Stack(api_key=k, base_url=srv.base_url) as s:
                ops.add(s.agents.register(unique_name("who")).operator_id)
        assert len(ops) == 3, "each key must belong to its own operator"
    finally:
        srv.stop()
        srv.cleanup()
