"""``McpTools``: the tools of every configured MCP server, kept in the proxy's ``ToolSet``.

Each connection reports its complete tool list after every listing; ``_apply`` turns the
difference into ``ToolSet.add``/``remove`` calls, naming new tools with ``public_name``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from streamproxy.proxy.mcp.config import McpConfig
from streamproxy.proxy.mcp.connection import (
    CONNECT_TIMEOUT,
    CallMeta,
    McpConnection,
    ProtocolMode,
)
from streamproxy.proxy.mcp.convert import call_result_text, public_name, tool_mode
from streamproxy.proxy.tools import Tool, ToolSet

if TYPE_CHECKING:
    import mcp_types

__all__ = ["McpTools"]

logger = logging.getLogger("streamproxy.mcp")


class McpTools:
    """The tools of every configured MCP server, kept in ``tools`` as the servers change.

    ``await start()`` connects every server (at most ``CONNECT_TIMEOUT``; one that fails is
    logged and retried in the background) and adds their tools in the file's order;
    ``await stop()`` removes them and stops the servers.
    """

    def __init__(
        self,
        config: McpConfig,
        tools: ToolSet,
        *,
        call_meta: CallMeta | None = None,
        protocol: ProtocolMode = "auto",
    ) -> None:
        self.config = config
        self.tools = tools
        self.call_meta = call_meta
        self.connections = [
            McpConnection(server, on_tools=self._update, protocol=protocol)
            for server in config.servers
        ]
        self._names: dict[str, dict[str, str]] = {server.name: {} for server in config.servers}
        """server -> MCP tool name -> the public name in ``tools``."""
        self._definitions: dict[tuple[str, str], str] = {}
        self._pending: dict[str, list[mcp_types.Tool]] | None = {}

    def connection(self, server: str) -> McpConnection:
        return next(item for item in self.connections if item.server.name == server)

    def public_names(self, server: str) -> dict[str, str]:
        """MCP tool name -> the name the model sees, for one server."""
        return dict(self._names[server])

    async def start(self) -> None:
        for connection in self.connections:
            connection.start()
        waits = [asyncio.ensure_future(item.wait_attempted()) for item in self.connections]
        if waits:
            _, late = await asyncio.wait(waits, timeout=CONNECT_TIMEOUT + 1)
            for wait in late:
                wait.cancel()
        pending, self._pending = self._pending or {}, None
        for connection in self.connections:  # the file's order decides collisions
            listed = pending.get(connection.server.name)
            if listed is not None:
                self._apply(connection, listed)
            else:
                logger.error(
                    "MCP server %s: not connected at start (%s); retrying in the background",
                    connection.server.name,
                    connection.last_error or "timed out",
                )

    async def stop(self) -> None:
        for connection in self.connections:
            await connection.stop()
        for names in self._names.values():
            for public in names.values():
                self.tools.remove(public)
            names.clear()

    def _update(self, connection: McpConnection, listed: list[mcp_types.Tool]) -> None:
        if self._pending is not None:
            self._pending[connection.server.name] = listed
        else:
            self._apply(connection, listed)

    def _apply(self, connection: McpConnection, listed: list[mcp_types.Tool]) -> None:
        """Add, replace and remove this server's tools to match ``listed``."""
        server = connection.server.name
        names = self._names[server]
        current: dict[str, mcp_types.Tool] = {}
        for definition in listed:  # a name listed twice: the first one counts
            current.setdefault(definition.name, definition)
        for mcp_name in [name for name in names if name not in current]:
            public = names.pop(mcp_name)
            self._definitions.pop((server, mcp_name), None)
            self.tools.remove(public)
            logger.info("tool %s (mcp:%s): removed", public, server)
        for mcp_name, definition in current.items():
            signature = definition.model_dump_json(exclude={"meta", "icons"})
            if self._definitions.get((server, mcp_name)) == signature:
                continue
            previous = names.pop(mcp_name, None)
            if previous is not None:  # the definition changed: same name, new tool
                self.tools.remove(previous)
            public = previous or public_name(server, mcp_name, self.tools.names)
            try:
                entry = self._tool(connection, public, definition)
            except Exception as error:  # a bad name or schema from the server: skip that tool
                logger.warning("MCP server %s: tool %r skipped: %s", server, mcp_name, error)
                continue
            self.tools.add(entry)
            names[mcp_name] = public
            self._definitions[(server, mcp_name)] = signature
            logger.info("%s", entry.describe())

    def _tool(self, connection: McpConnection, public: str, definition: mcp_types.Tool) -> Tool:
        mcp_name = definition.name
        call_meta = self.call_meta

        async def invoke(arguments: Mapping[str, object]) -> object:
            result = await connection.call(mcp_name, arguments, call_meta() if call_meta else None)
            return call_result_text(
                result.content, result.structured_content, bool(result.is_error)
            )

        return Tool.from_schema(
            public,
            invoke,
            parameters=_schema(definition.input_schema),
            description=definition.description or definition.title or "",
            mode=tool_mode(definition.annotations),
            timeout=connection.server.timeout,
            origin=f"mcp:{connection.server.name}",
        )


def _schema(schema: Mapping[str, Any]) -> dict[str, object]:
    """The input schema as plain JSON (a copy the SDK's model cannot change)."""
    copied: dict[str, object] = json.loads(json.dumps(schema))
    copied.setdefault("type", "object")
    copied.setdefault("properties", {})
    return copied
