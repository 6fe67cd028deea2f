"""The comparison server of `cargo xtask bench mcp` (see docs/benchmarks.md).

The official Python SDK's high-level server (`FastMCP`, named `MCPServer`
since mcp 2.x) over Streamable HTTP, stateless with JSON responses, like
STACK's /mcp. Bearer auth goes through the SDK's own `TokenVerifier`: one
static key, compared in constant time. One read-only tool returns a small
JSON object, like `stack_audit_chain_head`.

    python mcp_bench_fastmcp.py PORT KEY
"""

import hmac
import logging
import sys

import uvicorn

try:  # mcp >= 2
    from mcp.server.mcpserver import MCPServer as FastMCP
except ImportError:  # mcp 1.x
    from mcp.server.fastmcp import FastMCP  # type: ignore[no-redef]
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings


class StaticKey:
    def __init__(self, key: str) -> None:
        self.key = key

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode(), self.key.encode()):
            return AccessToken(token=token, client_id="bench", scopes=[])
        return None


def main() -> None:
    port, key = int(sys.argv[1]), sys.argv[2]
    base = f"http://127.0.0.1:{port}"
    server = FastMCP(
        "bench",
        token_verifier=StaticKey(key),
        auth=AuthSettings(
            issuer_url=base,
            resource_server_url=f"{base}/mcp",
            validate_token_resource=False,
        ),
        log_level="WARNING",
    )

    @server.tool(annotations={"readOnlyHint": True})
    def chain_head() -> dict:
        """The head of the audit chain: latest entry hash and entry count."""
        return {"head_hash": "0" * 64, "entries": 0}

    app = server.streamable_http_app(json_response=True, stateless_http=True)
    logging.getLogger("mcp").setLevel(logging.WARNING)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
