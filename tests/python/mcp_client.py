"""A thin wrapper over the official `mcp` package's Streamable HTTP client.

Works with mcp 2.x (`streamable_http_client` + an httpx2 client carrying the
headers) and falls back to mcp 1.x (`streamablehttp_client(url, headers=...)`).
Results are turned into plain dicts with the wire (camelCase) names, so the
tests read `isError`, `structuredContent` and `inputSchema` on either version.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from mcp import ClientSession

T = TypeVar("T")


@contextlib.asynccontextmanager
async def mcp_session(url: str, api_key: str | None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        from mcp.client.streamable_http import streamable_http_client  # mcp >= 2
    except ImportError:  # pragma: no cover - mcp 1.x
        streamable_http_client = None  # type: ignore[assignment]

    if streamable_http_client is not None:
        import httpx2

        http_client = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=60.0))
        async with http_client, streamable_http_client(url, http_client=http_client) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                yield session
    else:  # pragma: no cover - mcp 1.x
        from mcp.client.streamable_http import streamablehttp_client

        async with streamablehttp_client(url, headers=headers) as (read, write, _sid):
            async with ClientSession(read, write) as session:
                yield session


def dump(model: Any) -> dict[str, Any]:
    """A pydantic result as the JSON the server sent (aliases, no unset Nones)."""
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


def text_of(result: dict[str, Any]) -> str:
    return "\n".join(c.get("text", "") for c in result.get("content", []) if c.get("type") == "text")


def json_of(result: dict[str, Any]) -> Any:
    """structuredContent if present, else the JSON parsed from the text content."""
    if "structuredContent" in result:
        return result["structuredContent"]
    return json.loads(text_of(result))


def run(fn: Callable[[], Awaitable[T]], timeout: float = 60.0) -> T:
    async def _bounded() -> T:
        return await asyncio.wait_for(fn(), timeout)

    return asyncio.run(_bounded())
