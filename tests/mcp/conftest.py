"""Real MCP server processes for the tests: stdio ones started by the proxy's client, and a
streamable HTTP one started here on 127.0.0.1 (a free port it picks and prints)."""

from __future__ import annotations

import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamproxy.proxy.mcp import HttpServer, StdioServer

DEMO_SERVER = Path(__file__).parent / "servers" / "demo_server.py"
START_TIMEOUT = 30.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def stdio_server(name: str = "demo", *, timeout: float = 10.0) -> StdioServer:
    return StdioServer(name=name, command=sys.executable, args=(str(DEMO_SERVER),), timeout=timeout)


@pytest.fixture
def http_url() -> Iterator[str]:
    """The URL of a streamable HTTP demo server process, terminated after the test."""
    process = subprocess.Popen(
        [sys.executable, str(DEMO_SERVER), "--http"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = ""
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + START_TIMEOUT
            while not line and time.monotonic() < deadline and process.poll() is None:
                if selector.select(timeout=0.1):
                    line = process.stdout.readline()
        assert "listening on http://" in line, f"the HTTP MCP server did not start: {line!r}"
        yield line.rsplit(" ", 1)[-1].strip()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def http_server(url: str, name: str = "remote", **headers: str) -> HttpServer:
    return HttpServer(name=name, url=url, headers=headers, timeout=10.0)
