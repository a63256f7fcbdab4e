"""One supervised SDK client per MCP server (the I/O half; ``registry.py`` keeps the tools).

A connection runs in its own task (the SDK's anyio task groups are entered and left there):
connect, list the tools, then wait for a change (``notifications/tools/list_changed``, or a
``subscriptions/listen`` event on a 2026-era connection) or a break. A call that finds the
connection closed breaks it; the task then reconnects (restarting a stdio server) after a backoff
of 0.5 s doubling up to 30 s, and calls made meanwhile wait up to ``RECONNECT_WAIT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal, cast

from streamproxy.errors import McpToolError, ToolDefinitionError
from streamproxy.proxy.mcp.config import HttpServer, McpServer

try:
    import anyio
    import httpx2
    import mcp_types
    from mcp import Client, StdioServerParameters
    from mcp.client.streamable_http import streamable_http_client
    from mcp.client.subscriptions import ListenNotSupportedError
    from mcp.shared.exceptions import MCPError
    from mcp_types.version import MODERN_PROTOCOL_VERSIONS
except ImportError as error:  # pragma: no cover - the extra is part of the test install
    raise ToolDefinitionError(
        f"--mcp needs the MCP SDK ({error.name} is missing): pip install 'streamproxy[mcp]'"
    ) from None

__all__ = ["CallMeta", "McpConnection", "ProtocolMode"]

logger = logging.getLogger("streamproxy.mcp")

CallMeta = Callable[[], Mapping[str, object] | None]
"""Gives the ``_meta`` of one ``tools/call`` (W3C ``traceparent``/``tracestate`` from the current
span, say), or None; called in the task that runs the tool."""
ProtocolMode = Literal["auto", "legacy"]
"""``auto``: the 2026 protocol when the server speaks it, else the handshake; ``legacy``: the
handshake only (tests use it to cover handshake-era servers)."""

CONNECT_TIMEOUT = 30.0
"""Longest a connection (start-up, handshake, first listing) may take."""
RECONNECT_WAIT = 10.0
"""Longest a call waits for a server that is (re)connecting before it gets an error result."""
MIN_BACKOFF = 0.5
MAX_BACKOFF = 30.0
MAX_TOOLS_PER_SERVER = 128
"""OpenAI and DeepSeek take at most 128 tools in one request."""
MAX_LIST_PAGES = 20
_CLOSED_ERRORS = (
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
    httpx2.TransportError,
    OSError,
)


def _client_info() -> mcp_types.Implementation:
    try:
        own_version = version("streamproxy")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree
        own_version = "0"
    return mcp_types.Implementation(name="streamproxy", version=own_version)


class McpConnection:
    """One server, kept connected; ``on_tools`` gets its complete tool list after each listing."""

    def __init__(
        self,
        server: McpServer,
        *,
        on_tools: Callable[[McpConnection, list[mcp_types.Tool]], None],
        protocol: ProtocolMode = "auto",
    ) -> None:
        self.server = server
        self._on_tools = on_tools
        self._protocol = protocol
        self._client: Client | None = None
        self._connected = asyncio.Event()
        self._attempted = asyncio.Event()
        self._wake = asyncio.Event()
        self._needs_listing = False
        self._is_broken = False
        self._delay = MIN_BACKOFF
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        self.connections = 0
        """How many times it connected (1 + the restarts)."""

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name=f"mcp {self.server.name}")

    async def wait_attempted(self) -> None:
        """Until the first connection succeeded or failed."""
        await self._attempted.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def call(
        self, name: str, arguments: Mapping[str, object], meta: Mapping[str, object] | None
    ) -> mcp_types.CallToolResult:
        """``tools/call``; a closed connection is broken (then reconnected) and reported.

        Raises:
            McpToolError: the server is not connected, answered an error, or went away.
        """
        client = await self._ready_client()
        where = f"MCP server {self.server.name!r}"
        try:
            return await client.call_tool(
                name,
                dict(arguments),
                meta=cast(mcp_types.RequestParamsMeta, dict(meta)) if meta else None,
            )
        except MCPError as error:
            if error.code == mcp_types.CONNECTION_CLOSED:
                self._break("the connection closed during a call")
                raise McpToolError(f"{where} went away during the call; restarting it") from None
            raise McpToolError(f"{where} answered error {error.code}: {error.message}") from None
        except _CLOSED_ERRORS as error:
            self._break(_describe(error))
            raise McpToolError(f"{where} is unreachable ({_describe(error)})") from None

    async def _ready_client(self) -> Client:
        if not self._connected.is_set():
            try:
                async with asyncio.timeout(RECONNECT_WAIT):
                    await self._connected.wait()
            except TimeoutError:
                reason = self.last_error or "still connecting"
                raise McpToolError(
                    f"MCP server {self.server.name!r} is not connected ({reason})"
                ) from None
        assert self._client is not None
        return self._client

    def _break(self, reason: str) -> None:
        if not self._is_broken:
            self.last_error = reason
            self._is_broken = True
            self._connected.clear()
            self._wake.set()

    def _request_listing(self) -> None:
        self._needs_listing = True
        self._wake.set()

    async def _supervise(self) -> None:
        while True:
            try:
                await self._session()
                logger.warning("MCP server %s: %s", self.server.name, self.last_error)
            except Exception as error:  # anything the SDK or the server throws: reconnect
                self.last_error = _describe(error)
                logger.warning("MCP server %s: %s", self.server.name, self.last_error)
            finally:
                self._client = None
                self._connected.clear()
                self._attempted.set()
            logger.info("MCP server %s: reconnecting in %g s", self.server.name, self._delay)
            await asyncio.sleep(self._delay)
            self._delay = min(self._delay * 2, MAX_BACKOFF)

    async def _session(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            client = Client(
                await self._transport(stack),
                mode=self._protocol,
                message_handler=self._on_message,
                client_info=_client_info(),
            )
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await stack.enter_async_context(client)
                self._is_broken = False
                await self._publish_listing(client)
            self._client = client
            self._connected.set()
            self._attempted.set()
            self._delay = MIN_BACKOFF
            self.connections += 1
            logger.info(
                "MCP server %s: connected (protocol %s)", self.server.name, client.protocol_version
            )
            if client.protocol_version in MODERN_PROTOCOL_VERSIONS and _announces_changes(client):
                listener = asyncio.create_task(self._listen(client))
                stack.push_async_callback(_cancelled, listener)
            while not self._is_broken:
                await self._wake.wait()
                self._wake.clear()
                if self._needs_listing and not self._is_broken:
                    async with asyncio.timeout(CONNECT_TIMEOUT):
                        await self._publish_listing(client)

    async def _transport(self, stack: contextlib.AsyncExitStack) -> Any:
        server = self.server
        if isinstance(server, HttpServer):
            # no read timeout: a listen stream stays quiet for long; Tool.timeout bounds calls
            http = await stack.enter_async_context(
                httpx2.AsyncClient(
                    headers=dict(server.headers), timeout=httpx2.Timeout(30.0, read=None)
                )
            )
            return streamable_http_client(server.url, http_client=http)
        return StdioServerParameters(
            command=server.command,
            args=list(server.args),
            env=dict(server.env) or None,
            cwd=server.cwd,
        )

    async def _publish_listing(self, client: Client) -> None:
        self._needs_listing = False
        listed: list[mcp_types.Tool] = []
        cursor: str | None = None
        for _ in range(MAX_LIST_PAGES):
            page = await client.list_tools(cursor=cursor, cache_mode="refresh")
            listed.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None or len(listed) > MAX_TOOLS_PER_SERVER:
                break
        if len(listed) > MAX_TOOLS_PER_SERVER:
            logger.warning(
                "MCP server %s: lists over %d tools; only the first %d are used",
                self.server.name,
                MAX_TOOLS_PER_SERVER,
                MAX_TOOLS_PER_SERVER,
            )
        self._on_tools(self, listed[:MAX_TOOLS_PER_SERVER])

    async def _on_message(self, message: mcp_types.ServerNotification | Exception) -> None:
        if isinstance(message, mcp_types.ToolListChangedNotification):
            self._request_listing()
        elif isinstance(message, Exception):
            logger.debug("MCP server %s: transport fault: %s", self.server.name, message)

    async def _listen(self, client: Client) -> None:
        """Follow a 2026-era ``subscriptions/listen`` stream; its end breaks the connection."""
        try:
            subscription = client.listen(tools_list_changed=True)
            async with subscription as events:
                async for _event in events:
                    self._request_listing()
        except (ListenNotSupportedError, MCPError) as error:
            logger.debug("MCP server %s: no listen stream: %s", self.server.name, error)
            return
        except Exception as error:  # the stream was lost: reconnect and list again
            self._break(f"change stream lost: {_describe(error)}")
            return
        self._break("the server closed its change stream")


def _announces_changes(client: Client) -> bool:
    capability = client.server_capabilities.tools
    return capability is not None and bool(capability.list_changed)


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _describe(error: BaseException) -> str:
    """One line for an error, an exception group's first leaf included."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}"[:500]
