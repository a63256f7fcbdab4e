"""MCP tools against real server processes (``servers/demo_server.py``, written with the SDK's
``MCPServer``), over stdio and over streamable HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable

import pytest

from streamproxy.proxy.mcp import McpConfig, McpServer, McpTools, StdioServer
from streamproxy.proxy.tools import ToolOutcome, ToolSet, tool
from tests.mcp.conftest import http_server, stdio_server

pytestmark = pytest.mark.anyio

MAX_RESULT = 256 * 1024
WAIT = 20.0  # the bound on waiting for something a server does in the background


async def started(*servers: McpServer, tools: ToolSet | None = None, **options: object) -> McpTools:
    mcp_tools = McpTools(McpConfig(servers), tools or ToolSet(), **options)  # type: ignore[arg-type]
    await mcp_tools.start()
    return mcp_tools


@pytest.fixture
async def demo() -> AsyncIterator[McpTools]:
    mcp_tools = await started(stdio_server())
    try:
        yield mcp_tools
    finally:
        await mcp_tools.stop()


async def run(mcp_tools: McpTools, name: str, **arguments: object) -> ToolOutcome:
    return await mcp_tools.tools[name].run(arguments, max_result_size=MAX_RESULT)


async def eventually(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT):
        while not condition():
            await asyncio.sleep(0.05)


async def test_stdio_tools_are_listed_with_modes_from_annotations(demo: McpTools) -> None:
    tools = demo.tools
    assert {"echo", "weather", "delete_file", "add", "fail", "hang", "crash"} <= tools.names
    assert tools["echo"].mode == "read_only"
    assert tools["delete_file"].mode == "needs_approval"
    assert tools["add"].mode == "auto"
    assert tools["add"].origin == "mcp:demo"
    assert tools["add"].description == "Add two numbers."
    assert tools["add"].timeout == 10.0
    # the strict form goes upstream; the server's own schema is what calls are checked against
    assert tools["add"].is_strict
    assert tools["add"].parameters["additionalProperties"] is False
    assert set(tools["add"].parameters["required"]) == {"a", "b"}  # type: ignore[arg-type]
    assert tools["add"].schema["required"] == ["a", "b"]  # type: ignore[index]


async def test_text_and_structured_results(demo: McpTools) -> None:
    echoed = await run(demo, "echo", text="héllo")
    assert (echoed.status, echoed.content) == ("ok", "héllo")
    added = await run(demo, "add", a=2, b=3)
    assert (added.status, added.content) == ("ok", "5")
    weather = await run(demo, "weather", city="Paris")
    assert weather.status == "ok"
    assert json.loads(weather.content) == {"city": "Paris", "temperature_c": 21.5}


async def test_is_error_and_invalid_arguments_are_error_results(demo: McpTools) -> None:
    failed = await run(demo, "fail", reason="no disk")
    assert failed.status == "error"
    assert failed.content.startswith("error: McpToolError: ")
    assert "Error executing tool fail" in failed.content
    refused = await run(demo, "add", a="two", b=3)  # the server checks its own arguments
    assert refused.status == "error"
    assert (await run(demo, "echo", text="still fine")).content == "still fine"


async def test_a_hanging_tool_times_out_and_the_server_still_answers() -> None:
    mcp_tools = await started(stdio_server(timeout=1.0))
    try:
        hung = await run(mcp_tools, "hang")
        assert hung.status == "timeout"
        assert hung.content == "error: tool hang timed out after 1 s"
        assert (await run(mcp_tools, "echo", text="next")).content == "next"
        assert mcp_tools.connection("demo").connections == 1
    finally:
        await mcp_tools.stop()


async def test_a_crashed_server_gives_an_error_result_then_is_restarted(demo: McpTools) -> None:
    first_pid = int((await run(demo, "process_id")).content)
    crashed = await run(demo, "crash")
    assert crashed.status == "error"
    assert "MCP server 'demo' went away during the call; restarting it" in crashed.content
    after = await run(demo, "process_id")  # waits for the restart
    assert after.status == "ok"
    assert int(after.content) != first_pid
    assert demo.connection("demo").connections == 2
    assert (await run(demo, "add", a=1, b=1)).content == "2"


@pytest.mark.parametrize("protocol", ["auto", "legacy"])
async def test_a_tool_added_at_run_time_appears(protocol: str) -> None:
    mcp_tools = await started(stdio_server(), protocol=protocol)
    try:
        assert "added_later" not in mcp_tools.tools
        assert (await run(mcp_tools, "grow")).content == "grown"
        await eventually(lambda: "added_later" in mcp_tools.tools)
        assert (await run(mcp_tools, "added_later", word="yes")).content == "YES"
        assert mcp_tools.tools["added_later"].origin == "mcp:demo"
    finally:
        await mcp_tools.stop()
    assert "added_later" not in mcp_tools.tools and "echo" not in mcp_tools.tools


@tool
def echo(text: str) -> str:
    """A Python tool with the name of an MCP tool."""
    return f"python: {text}"


async def test_collisions_prefix_the_later_tool() -> None:
    tools = ToolSet([echo])
    mcp_tools = await started(stdio_server("one"), stdio_server("two"), tools=tools)
    try:
        names = tools.names
        assert mcp_tools.public_names("one")["echo"] == "one__echo"  # the Python tool came first
        assert mcp_tools.public_names("two")["echo"] == "two__echo"
        assert mcp_tools.public_names("one")["add"] == "add"  # the file's order decides
        assert mcp_tools.public_names("two")["add"] == "two__add"
        assert {"echo", "one__echo", "two__echo", "add", "two__add"} <= names
        assert tools["echo"].origin == "python"
        assert tools["two__add"].origin == "mcp:two"
        assert (await run(mcp_tools, "echo", text="a")).content == "python: a"
        assert (await run(mcp_tools, "two__echo", text="b")).content == "b"
        assert (await run(mcp_tools, "two__add", a=20, b=22)).content == "42"
    finally:
        await mcp_tools.stop()
    assert tools.names == {"echo"}


async def test_streamable_http_lists_and_calls_with_headers_and_trace_meta(
    http_url: str,
) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    mcp_tools = await started(
        http_server(http_url, **{"x-test": "from-config"}),
        call_meta=lambda: {"traceparent": traceparent},
    )
    try:
        tools = mcp_tools.tools
        assert tools["echo"].mode == "read_only"
        assert tools["delete_file"].mode == "needs_approval"
        assert tools["echo"].origin == "mcp:remote"
        assert (await run(mcp_tools, "echo", text="over http")).content == "over http"
        weather = json.loads((await run(mcp_tools, "weather", city="Oslo")).content)
        assert weather == {"city": "Oslo", "temperature_c": 21.5}
        assert (await run(mcp_tools, "fail", reason="x")).status == "error"
        details = json.loads((await run(mcp_tools, "request_details")).content)
        assert details == {"header": "from-config", "traceparent": traceparent}
        assert (await run(mcp_tools, "grow")).content == "grown"
        await eventually(lambda: "added_later" in tools)
        assert (await run(mcp_tools, "added_later", word="http")).content == "HTTP"
    finally:
        await mcp_tools.stop()


async def test_a_server_that_cannot_start_leaves_the_others_working() -> None:
    broken = StdioServer(name="broken", command=sys.executable, args=("-c", "raise SystemExit(1)"))
    mcp_tools = await started(broken, stdio_server())
    try:
        assert mcp_tools.public_names("broken") == {}
        assert not mcp_tools.connection("broken").is_connected
        assert mcp_tools.connection("broken").last_error
        assert (await run(mcp_tools, "echo", text="ok")).content == "ok"
    finally:
        await mcp_tools.stop()
