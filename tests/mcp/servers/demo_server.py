"""A real MCP server for the tests, written with the SDK's ``MCPServer``.

    python demo_server.py                 # stdio
    python demo_server.py --http          # streamable HTTP on 127.0.0.1, a free port; prints
                                          # "listening on http://127.0.0.1:PORT/mcp" once bound

Its tools cover what the proxy must handle: annotations (modes), text and structured results,
``isError``, a call that hangs, a crash, a tool added at run time (list_changed), and the
request's headers and ``_meta`` (what the proxy sends).
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import ToolAnnotations
from pydantic import BaseModel

server = MCPServer("demo")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def echo(text: str) -> str:
    """Say the text back."""
    return text


class Weather(BaseModel):
    city: str
    temperature_c: float


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def weather(city: str) -> Weather:
    """Current weather in a city."""
    return Weather(city=city, temperature_c=21.5)


@server.tool(annotations=ToolAnnotations(destructive_hint=True))
def delete_file(path: str) -> str:
    """Delete a file (it does not really)."""
    return f"deleted {path}"


@server.tool()
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@server.tool()
def fail(reason: str) -> str:
    """Always fails."""
    raise ValueError(f"it failed: {reason}")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
async def hang() -> str:
    """Never answers."""
    await asyncio.sleep(3600)
    return "too late"


@server.tool()
def crash() -> str:
    """Kills the server process."""
    os._exit(3)


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def process_id() -> int:
    """This server process's id."""
    return os.getpid()


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def request_details(ctx: Context) -> dict[str, str]:
    """The x-test header and the _meta traceparent of this call."""
    headers = ctx.headers or {}
    meta = ctx.request_context.meta or {}
    return {
        "header": str(headers.get("x-test", "")),
        "traceparent": str(meta.get("traceparent", "")),
    }


@server.tool()
async def grow(ctx: Context) -> str:
    """Adds the tool 'added_later' and says so (list_changed)."""

    def added_later(word: str) -> str:
        """A tool added at run time."""
        return word.upper()

    server.add_tool(added_later)
    await ctx.notify_tools_changed()  # 2026-era connections: subscriptions/listen
    try:
        await ctx.session.send_tool_list_changed()  # handshake-era connections
    except Exception as error:  # not available on 2026-era connections
        print(f"legacy list_changed not sent: {error!r}", file=sys.stderr)
    return "grown"


def serve_http() -> None:
    import uvicorn

    app = server.streamable_http_app()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}/mcp", flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    if "--http" in sys.argv:
        serve_http()
    else:
        server.run()
