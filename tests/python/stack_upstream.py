"""A local upstream HTTP server that records every request, and a server
under test whose proxy can reach it.

The server gets a loopback allow-list (`STACK_PROXY_ALLOW_PRIVATE`), plain
HTTP to upstreams (`STACK_PROXY_ALLOW_HTTP`) and a resolver override that maps
the test host names to 127.0.0.1 (`STACK_PROXY_RESOLVE`), so the proxy's real
egress path (resolve, check the address, connect to it) is used.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from stack_harness import StackServer

# The host names the proxy-ready server resolves to 127.0.0.1.
UPSTREAM_HOST = "api.upstream.test"
OTHER_UPSTREAM_HOST = "other.upstream.test"


@dataclass
class Upstream:
    """What the upstream received: one dict a request with `method`, `path`,
    `query`, `headers` (lower-cased names) and `body` (text)."""

    port: int = 0
    seen: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    httpd: ThreadingHTTPServer | None = None

    def requests(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.seen)

    def origin(self, host: str = UPSTREAM_HOST) -> str:
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


def start_upstream() -> Upstream:
    """Starts the upstream on a free loopback port. It answers
    `{ok, method, path, query}` with 200, and 401 on `/v1/unauthorized`."""
    state = Upstream()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
            path, _, query = self.path.partition("?")
            with state.lock:
                state.seen.append({
                    "method": self.command,
                    "path": path,
                    "query": query,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body,
                })
            if path == "/v1/unauthorized":
                self._reply(401, {"error": "bad token"})
                return
            self._reply(200, {"ok": True, "method": self.command, "path": path, "query": query})

        def _reply(self, status: int, payload: dict[str, Any]) -> None:
            raw = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        def log_message(self, *_args: Any) -> None:  # keep pytest output clean
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.httpd = httpd
    state.port = httpd.server_address[1]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return state


def proxy_env(hosts: tuple[str, ...] = (UPSTREAM_HOST, OTHER_UPSTREAM_HOST)) -> dict[str, str]:
    """The settings that let the proxy reach the upstream at `hosts`."""
    return {
        "STACK_PROXY_ALLOW_PRIVATE": "127.0.0.0/8",
        "STACK_PROXY_ALLOW_HTTP": "1",
        "STACK_PROXY_RESOLVE": ",".join(f"{h}=127.0.0.1" for h in hosts),
    }


@contextmanager
def proxy_ready_server(backend: str, extra_env: dict[str, str] | None = None
                       ) -> Iterator[tuple[StackServer, Upstream]]:
    """A started fresh server (first key in `api_key`) whose proxy reaches a
    fresh recording upstream; both are stopped and cleaned up on exit.
    `extra_env` adds to (or overrides) the proxy settings."""
    upstream = start_upstream()
    srv = StackServer.fresh(backend, extra_env={**proxy_env(), **(extra_env or {})})
    try:
        srv.start()
        assert srv.api_key
        yield srv, upstream
        srv.stop()
    finally:
        srv.cleanup()
        upstream.close()
