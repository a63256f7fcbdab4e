"""Proxy overhead: per-chunk cost and time to first token, through the proxy vs alternatives.

Three paths to the same loopback upstream (a ``streamproxy replay`` process, instant timing):

- direct: the client talks to the replay server;
- relay: a minimal byte relay (httpx in, Starlette out, no parsing) in its own process;
- proxy: ``streamproxy serve`` (parses every event, re-frames it under one completion id).

Measured from an httpx client in this process, at concurrency 1 and 64:

- per-chunk cost: wall time to read a stream of N content chunks, divided by N (at concurrency
  64: wall time / (64 x N), i.e. the cost per chunk of the whole machine);
- TTFT: time until the first non-empty ``content`` delta arrives (median over requests), on
  separate short streams (5 chunks) so that a long stream's CPU load does not delay it;
- a tool round: the proxy runs a server tool between two upstream rounds.

Run::

    .venv/bin/python benchmarks/bench_proxy.py            # prints the table
    .venv/bin/python benchmarks/bench_proxy.py --quick    # fewer repeats

Every process is started on 127.0.0.1 with port 0 and terminated at the end. The numbers are
relative (client, servers and upstream share the machine's cores), not capacity figures.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import orjson

from streamproxy.cassette.format import (
    Cassette,
    Chunk,
    Interaction,
    RecordedRequest,
    RecordedResponse,
    dump,
)

MODEL = "deepseek-v4-flash"
# The latency streams are short, so TTFT is not confounded by a long stream's CPU load.
SHORT = 5
FIRST_CONTENT = re.compile(rb'"content":"[^"]')
RELAY_APP = """
import sys
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

UPSTREAM = sys.argv[1]
client = httpx.AsyncClient(timeout=None, limits=httpx.Limits(max_connections=1000))


async def relay(request: Request) -> StreamingResponse:
    upstream = await client.send(
        client.build_request("POST", UPSTREAM + "/chat/completions", content=await request.body(),
                             headers={"content-type": "application/json"}),
        stream=True,
    )

    async def body():
        try:
            async for data in upstream.aiter_raw():
                yield data
        finally:
            await upstream.aclose()

    return StreamingResponse(body(), media_type="text/event-stream")


app = Starlette(routes=[Route("/v1/chat/completions", relay, methods=["POST"])])

if __name__ == "__main__":
    import socket
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    print(f"relay: listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
"""
TOOLS_MODULE = '''
from streamproxy.tools import tool


@tool(read_only=True)
def get_weather(city: str) -> dict:
    """Weather."""
    return {"city": city, "temperature_c": 24}


TOOLS = [get_weather]
'''


def _chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
    payload = {
        "id": "bench-0123456789abcdef",
        "object": "chat.completion.chunk",
        "created": 1780000000,
        "model": MODEL,
        "system_fingerprint": "fp_8b330d02d0_prod0820_fp8_kvcache",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": None,
    }
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def content_response(chunks: int) -> RecordedResponse:
    pieces = [_chunk({"role": "assistant", "content": ""})]
    pieces += [_chunk({"content": f" word{i}", "reasoning_content": None}) for i in range(chunks)]
    pieces += [_chunk({"content": ""}, "stop"), b"data: [DONE]\n\n"]
    return RecordedResponse(
        status=200,
        headers={"content-type": "text/event-stream"},
        chunks=[Chunk(0.0, piece) for piece in pieces],
    )


def tool_cassette(answer_chunks: int) -> Cassette:
    call = {
        "index": 0,
        "id": "call_bench",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    first = RecordedResponse(
        status=200,
        headers={"content-type": "text/event-stream"},
        chunks=[
            Chunk(0.0, _chunk({"role": "assistant", "content": ""})),
            Chunk(0.0, _chunk({"tool_calls": [call]})),
            Chunk(0.0, _chunk({"content": ""}, "tool_calls")),
            Chunk(0.0, b"data: [DONE]\n\n"),
        ],
    )

    def request(roles: list[str]) -> RecordedRequest:
        messages = [{"role": role} for role in roles]
        return RecordedRequest(
            method="POST", path="/chat/completions", body={"model": MODEL, "messages": messages}
        )

    return Cassette(
        interactions=[
            Interaction(request=request(["user"]), response=first),
            Interaction(
                request=request(["user", "assistant", "tool"]),
                response=content_response(answer_chunks),
            ),
        ]
    )


class Server:
    def __init__(self, command: list[str], *, cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "http://" not in line:
            self.stop()
            raise RuntimeError(f"{command} did not start: {line!r}")
        self.url = line.rsplit(" ", 1)[-1].strip()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if self.process.stdout is not None:
            self.process.stdout.close()


async def one_stream(client: httpx.AsyncClient, url: str) -> tuple[float, float]:
    """(seconds to the first non-empty content delta, seconds to the end of the body)."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }
    started = time.perf_counter()
    first: float | None = None
    tail = b""
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for data in response.aiter_raw():
            if first is None:
                tail += data
                if FIRST_CONTENT.search(tail):
                    first = time.perf_counter() - started
                tail = tail[-64:]
    return (first if first is not None else float("nan")), time.perf_counter() - started


async def measure(url: str, *, concurrency: int, repeats: int, chunks: int) -> dict[str, float]:
    limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await one_stream(client, url)  # warm up connections and imports
        ttfts: list[float] = []
        walls: list[float] = []
        for _ in range(repeats):
            started = time.perf_counter()
            results = await asyncio.gather(*(one_stream(client, url) for _ in range(concurrency)))
            walls.append(time.perf_counter() - started)
            ttfts.extend(first for first, _ in results)
    wall = statistics.median(walls)
    return {
        "per_chunk_us": wall / (concurrency * chunks) * 1e6,
        "ttft_ms": statistics.median(ttfts) * 1000,
        "wall_ms": wall * 1000,
    }


def run(args: argparse.Namespace) -> str:
    directory = Path(tempfile.mkdtemp(prefix="bench_proxy_"))
    long_cassette = directory / "stream.cassette.json"
    dump(
        Cassette(interactions=[Interaction(request=None, response=content_response(args.chunks))]),
        long_cassette,
    )
    short_cassette = directory / "short.cassette.json"
    dump(
        Cassette(interactions=[Interaction(request=None, response=content_response(SHORT))]),
        short_cassette,
    )
    loop_cassette = directory / "loop.cassette.json"
    dump(tool_cassette(args.chunks), loop_cassette)
    short_loop_cassette = directory / "short-loop.cassette.json"
    dump(tool_cassette(SHORT), short_loop_cassette)
    (directory / "bench_tools.py").write_text(textwrap.dedent(TOOLS_MODULE))
    (directory / "relay_app.py").write_text(textwrap.dedent(RELAY_APP))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DEEPSEEK_API_KEY", None)
    cli = [sys.executable, "-m", "streamproxy"]
    servers: list[Server] = []

    def start(command: list[str]) -> str:
        server = Server(command, cwd=directory, env=env)
        servers.append(server)
        return server.url

    def paths(cassette: Path, loop: Path) -> dict[str, str]:
        upstream = start([*cli, "replay", str(cassette), "--port", "0"])
        loop_upstream = start([*cli, "replay", str(loop), "--port", "0", "--match", "turn"])
        quiet = ["--log-level", "warning", "--port", "0"]
        tools = ["--tools", "bench_tools:TOOLS"]
        return {
            "direct": upstream,
            "relay": start([sys.executable, "relay_app.py", upstream + "/v1"]),
            "proxy": start([*cli, "serve", "--upstream", upstream + "/v1", *quiet]),
            "proxy + tool round": start(
                [*cli, "serve", "--upstream", loop_upstream + "/v1", *tools, *quiet]
            ),
        }

    rows: list[tuple[str, int, dict[str, float]]] = []
    try:
        throughput = paths(long_cassette, loop_cassette)
        latency = paths(short_cassette, short_loop_cassette)
        for concurrency, repeats in ((1, args.repeats * 4), (64, args.repeats)):
            for name in throughput:
                cost = asyncio.run(
                    measure(
                        throughput[name],
                        concurrency=concurrency,
                        repeats=repeats,
                        chunks=args.chunks,
                    )
                )
                ttft = asyncio.run(
                    measure(
                        latency[name],
                        concurrency=concurrency,
                        repeats=args.latency_repeats if concurrency == 1 else repeats,
                        chunks=SHORT,
                    )
                )
                result = {"per_chunk_us": cost["per_chunk_us"], "ttft_ms": ttft["ttft_ms"]}
                rows.append((name, concurrency, result))
                print(f"  {name:<20} c={concurrency:<3} {result}", file=sys.stderr)
    finally:
        for server in servers:
            server.stop()
    return table(rows, args)


def table(rows: list[tuple[str, int, dict[str, float]]], args: argparse.Namespace) -> str:
    by_key = {(name, concurrency): result for name, concurrency, result in rows}
    lines = [
        f"Date: {datetime.date.today().isoformat()}; machine: {platform.machine()}, "
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; per-chunk cost over {args.chunks}-chunk streams, "
        f"TTFT over {SHORT}-chunk streams.",
        "",
        "| path | concurrency | per chunk (µs) | added per chunk vs direct (µs) "
        "| median TTFT (ms) | added TTFT vs direct (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for name, concurrency, result in rows:
        direct = by_key[("direct", concurrency)]
        added_chunk = result["per_chunk_us"] - direct["per_chunk_us"]
        added_ttft = result["ttft_ms"] - direct["ttft_ms"]
        lines.append(
            f"| {name} | {concurrency} | {result['per_chunk_us']:.1f} | {added_chunk:+.1f} "
            f"| {result['ttft_ms']:.2f} | {added_ttft:+.2f} |"
        )
    lines.append("")
    for concurrency in (1, 64):
        direct = by_key[("direct", concurrency)]["per_chunk_us"]
        relay = by_key[("relay", concurrency)]["per_chunk_us"]
        proxy = by_key[("proxy", concurrency)]["per_chunk_us"]
        lines.append(
            f"- concurrency {concurrency}: proxy / relay per-chunk cost = {proxy / relay:.2f}x; "
            f"added cost proxy / relay = {(proxy - direct) / (relay - direct):.2f}x"
        )
    return "\n".join(lines)


README = Path(__file__).resolve().parent / "README.md"
SECTION_INTRO = """`.venv/bin/python benchmarks/bench_proxy.py [--write] [--quick]` (issue 4).

Three paths to the same loopback upstream (`streamproxy replay`, instant timing), each in its own
process on 127.0.0.1, driven by an httpx client in the benchmark process: **direct** to the replay
server; a minimal **relay** (httpx `aiter_raw` in, Starlette `StreamingResponse` out, no parsing);
the **proxy** (`streamproxy serve`, every event parsed by `ChatStream` and re-framed under one
completion id); and the proxy with a **tool round** (round 1 calls a read-only server tool, round 2
streams the answer). Per-chunk cost: wall time to read a stream of N content chunks divided by N
(at concurrency 64, by 64 x N: the whole machine's cost per chunk). TTFT: time to the first
non-empty `content` delta on separate 5-chunk streams, median over requests (200 sequential at
concurrency 1). Client, upstream and proxy share the machine's 2 cores, so read the ratios, not
the absolute numbers.

Target (issue 4): per-chunk cost within 1.5x of the relay's; median added TTFT under 1 ms at
concurrency 1."""


def write_section(table_text: str) -> None:
    """Replace the ``## Proxy`` section of ``benchmarks/README.md`` (only that section)."""
    text = README.read_text() if README.exists() else "# Benchmarks\n"
    section = f"## Proxy\n\n{SECTION_INTRO}\n\n### Results\n\n{table_text}\n"
    start = text.find("## Proxy\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[end + 1 :] if end >= 0 else "")
    README.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=1000, help="content chunks per stream")
    parser.add_argument("--repeats", type=int, default=3, help="rounds at concurrency 64")
    parser.add_argument(
        "--latency-repeats", type=int, default=200, help="sequential requests for TTFT at c=1"
    )
    parser.add_argument("--quick", action="store_true", help="one round, 300 chunks")
    parser.add_argument("--write", action="store_true", help="update benchmarks/README.md")
    args = parser.parse_args()
    if args.quick:
        args.chunks, args.repeats, args.latency_repeats = 300, 1, 50
    result = run(args)
    print(result)
    if args.write:
        write_section(result)


if __name__ == "__main__":
    main()
