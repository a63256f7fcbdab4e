"""MCP servers as server tools: ``streamproxy serve --mcp FILE``.

``FILE`` is the ``{"mcpServers": {...}}`` file of Claude Desktop, Cursor and VS Code
(``config.py`` says what it may hold). Each server's tools join the proxy's ``ToolSet`` and run
like Python tools, through the official ``mcp`` SDK (2.x) over stdio or streamable HTTP::

    config = load_mcp_config("mcp.json")     # checked now: a bad file fails before start-up
    mcp_tools = McpTools(config, tools)      # tools: the app's ToolSet
    await mcp_tools.start()                  # connect, list, add; the app's lifespan does this
    ...
    await mcp_tools.stop()

**Names.** A tool keeps its MCP name when that name is free. When it is taken (by a Python tool,
or by a server earlier in the file, or earlier to list it at run time) it becomes
``SERVER__name``; characters outside ``[A-Za-z0-9_-]`` become ``_``, and a name past 64
characters is cut and ends in a short hash. A name, once given, stays while the tool exists.

**Modes** come from the tool's annotations: ``readOnlyHint`` -> ``read_only`` (starts mid-stream
the moment its call is sealed), ``destructiveHint`` -> ``needs_approval``, anything else ->
``auto`` (runs when the round ends cleanly).

**Results** go to the model as text: the text blocks (the spec has servers put structured
content's JSON there too), or the structured content as JSON when there is no text block; other
blocks become a bracketed note. ``isError``, an error answer,
a call past the server's ``timeout`` and a server that went away each give the model an error
result (``Tool.run``) and the stream goes on; a server that went away is reconnected (a stdio
server restarted) with a bounded backoff, so a later call works.

**Changes.** The tools are listed at start and again on ``notifications/tools/list_changed``
(or a ``subscriptions/listen`` event on a 2026-era connection): new tools are added, changed ones
replaced under the same name, gone ones removed.

**Tracing.** ``McpTools(call_meta=...)`` gives each ``tools/call`` a ``_meta`` (W3C
``traceparent``); an HTTP server's ``headers`` come from the file.
"""

from __future__ import annotations

from streamproxy.proxy.mcp.config import (
    HttpServer,
    McpConfig,
    McpServer,
    StdioServer,
    load_mcp_config,
    parse_mcp_config,
)
from streamproxy.proxy.mcp.connection import CallMeta, McpConnection, ProtocolMode
from streamproxy.proxy.mcp.convert import call_result_text, public_name, tool_mode
from streamproxy.proxy.mcp.registry import McpTools

__all__ = [
    "CallMeta",
    "HttpServer",
    "McpConfig",
    "McpConnection",
    "McpServer",
    "McpTools",
    "ProtocolMode",
    "StdioServer",
    "call_result_text",
    "load_mcp_config",
    "parse_mcp_config",
    "public_name",
    "tool_mode",
]
