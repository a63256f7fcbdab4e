"""Memory stays bounded: a client that stops reading, and an event larger than the limit.

A real ``streamproxy serve`` process stands in front of an endless upstream (a small Starlette
app in its own process) that streams as fast as it is allowed to, up to ``UPSTREAM_CAP``, and
counts what it handed to its server:

- ``endless``: content chunks of 16 KiB, piece ``i`` starting with ``<i>``;
- ``huge``: one SSE event that never ends (its ``data:`` line grows by 1 MiB per write).

The proxy's memory is read from ``/proc/<pid>/status`` (``VmRSS`` now, ``VmHWM`` the peak).
The bounds are generous (tens of MiB on streams of hundreds); what they catch is a proxy that
reads ahead of its client, or buffers an event past the limit, which would grow with the stream.
"""

from __future__ import annotations

import os
import socket
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from benchmarks.bench_load import rss
from tests.e2e.test_proxy_e2e import Process

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
PIECE = 16 * 1024
UPSTREAM_CAP = 512 * MIB
# Kernel socket buffers on loopback hold a few MiB; everything past them must wait for the client.
STALL_RSS_BOUND = 32 * MIB
HUGE_EVENT_RSS_BOUND = 64 * MIB  # the core's event limit is 16 MiB
UPSTREAM_APP = """
import asyncio
import socket
import sys

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

PIECE = 16 * 1024
CAP = int(sys.argv[1])
stats = {"sent": 0, "opened": 0, "closed": 0}


def content_frame(i: int) -> bytes:
    text = f"<{i}>".ljust(PIECE, "x")
    payload = {
        "id": "up", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }
    return b"data: " + orjson.dumps(payload) + b"\\n\\n"


async def chat(request: Request) -> StreamingResponse:
    kind = (await request.json())["messages"][-1]["content"]

    async def body():
        stats["opened"] += 1
        try:
            if kind == "huge":
                yield b'data: {"id":"up","choices":[{"index":0,"delta":{"content":"'
            i = 0
            while stats["sent"] < CAP:
                data = b"x" * (1024 * 1024) if kind == "huge" else content_frame(i)
                stats["sent"] += len(data)
                i += 1
                yield data
                # a send to a closed connection returns at once: let the disconnect be seen
                await asyncio.sleep(0)
        finally:
            stats["closed"] += 1

    return StreamingResponse(body(), media_type="text/event-stream")


async def read_stats(request: Request) -> JSONResponse:
    return JSONResponse(stats)


app = Starlette(
    routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/chat/completions", chat, methods=["POST"]),
        Route("/stats", read_stats),
    ]
)

if __name__ == "__main__":
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    print(f"upstream: listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
"""


class Upstream:
    """The endless upstream in its own process (always stopped)."""

    def __init__(self, directory: Path) -> None:
        import subprocess
        import sys

        (directory / "endless_upstream.py").write_text(textwrap.dedent(UPSTREAM_APP))
        self.process = subprocess.Popen(
            [sys.executable, "endless_upstream.py", str(UPSTREAM_CAP)],
            cwd=directory,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"the upstream did not start: {line!r}")
        self.url = line.rsplit(" ", 1)[-1].strip()

    def stats(self) -> dict[str, int]:
        return httpx.get(f"{self.url}/stats").json()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Upstream, Process]]:
    directory = tmp_path_factory.mktemp("memory")
    upstream = Upstream(directory)
    try:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("DEEPSEEK_API_KEY", None)
        proxy = Process(
            ["serve", "--upstream", f"{upstream.url}/v1", "--port", "0", "--log-level", "warning"],
            cwd=directory,
            env=env,
        )
        try:
            yield upstream, proxy
        finally:
            proxy.terminate()
    finally:
        upstream.stop()


def _request(kind: str, host: str) -> bytes:
    body = orjson.dumps(
        {"model": "m", "messages": [{"role": "user", "content": kind}], "stream": True}
    )
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


def _dechunk(raw: bytes) -> bytes:
    """The body of a chunked HTTP/1.1 response, as far as it is complete in ``raw``."""
    _, _, rest = raw.partition(b"\r\n\r\n")
    body = bytearray()
    position = 0
    while True:
        line_end = rest.find(b"\r\n", position)
        if line_end < 0:
            break
        size = int(rest[position:line_end], 16)
        start = line_end + 2
        if size == 0 or start + size > len(rest):
            body += rest[start : start + size]
            break
        body += rest[start : start + size]
        position = start + size + 2
    return bytes(body)


def _content_pieces(body: bytes) -> list[str]:
    pieces: list[str] = []
    for frame in body.split(b"\n\n")[:-1]:  # the last frame may be cut
        if frame.startswith(b"data: {"):
            for choice in orjson.loads(frame[6:])["choices"]:
                if choice["delta"].get("content"):
                    pieces.append(choice["delta"]["content"])
    return pieces


def _wait_for(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_a_client_that_stops_reading_holds_the_upstream_back(
    servers: tuple[Upstream, Process],
) -> None:
    upstream, proxy = servers
    pid = proxy.process.pid
    address = proxy.url.removeprefix("http://")
    host, port = address.rsplit(":", 1)
    httpx.get(f"{proxy.url}/healthz")
    before = rss(pid)
    opened = upstream.stats()["opened"]
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    try:
        client.connect((host, int(port)))
        client.sendall(_request("endless", address))
        raw = bytearray()
        while len(raw) < 256 * 1024:  # read a little, then stop reading
            raw += client.recv(65536)
        peak = rss(pid)
        sent = []
        for _ in range(8):  # 4 s of a client that reads nothing
            time.sleep(0.5)
            peak = max(peak, rss(pid))
            sent.append(upstream.stats()["sent"])
        # the upstream is held back: it stops once the buffers on the way are full...
        assert sent[-1] - sent[3] < 2 * MIB, f"the upstream kept sending: {sent}"
        assert sent[-1] < 64 * MIB, f"{sent[-1] / MIB:.0f} MiB went into the proxy"
        # ...and the proxy does not hold what the client has not read
        assert peak - before < STALL_RSS_BOUND, f"RSS grew {(peak - before) / MIB:.0f} MiB"
        # reading again, everything comes, in order, nothing lost
        client.settimeout(10)
        while len(raw) < 8 * MIB:
            data = client.recv(1 << 20)
            assert data, "the stream ended early"
            raw += data
    finally:
        client.close()
    pieces = _content_pieces(_dechunk(bytes(raw)))
    assert len(pieces) > 400
    assert pieces == [f"<{i}>".ljust(PIECE, "x") for i in range(len(pieces))]
    # the client went away: the proxy closed the upstream request at once and keeps serving
    closing = upstream.stats()
    assert _wait_for(lambda: upstream.stats()["closed"] == opened + 1)
    assert upstream.stats()["sent"] - closing["sent"] < 16 * MIB
    assert httpx.get(f"{proxy.url}/healthz").json() == {"status": "ok"}


def test_an_event_larger_than_the_limit_is_cut_off_not_buffered(
    servers: tuple[Upstream, Process],
) -> None:
    upstream, proxy = servers
    pid = proxy.process.pid
    httpx.get(f"{proxy.url}/healthz")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = rss(pid, "VmRSS")
    assert rss(pid, "VmHWM") < before + MIB
    stats = upstream.stats()
    body = {"model": "m", "messages": [{"role": "user", "content": "huge"}], "stream": True}
    with httpx.stream(
        "POST", f"{proxy.url}/v1/chat/completions", json=body, timeout=30
    ) as response:
        assert response.status_code == 200
        frames = [line for line in response.iter_lines() if line.startswith("data:")]
    # one error frame, no [DONE]: the client is told the stream failed
    assert len(frames) == 1, frames
    error = orjson.loads(frames[0][5:])["error"]
    assert error["code"] == "limit_exceeded", error
    assert "16777216" in error["message"]
    peak = rss(pid, "VmHWM")
    assert peak - before < HUGE_EVENT_RSS_BOUND, f"peak RSS grew {(peak - before) / MIB:.0f} MiB"
    # the proxy stopped reading and closed the upstream soon after the limit
    assert _wait_for(lambda: upstream.stats()["closed"] == stats["closed"] + 1)
    assert upstream.stats()["sent"] - stats["sent"] < 64 * MIB
    assert httpx.get(f"{proxy.url}/healthz").json() == {"status": "ok"}
