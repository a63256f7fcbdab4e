"""streamproxy against its peers: the naive relay, going direct, and LiteLLM's proxy (issue 13).

One run, one upstream, one pinning. The upstream is a small fake provider in its own process
(asyncio on uvloop, pre-encoded frames, one HTTP chunk per SSE event, as providers send): the
user message says what to stream (``burst N``: N content chunks written back to back; ``paced N
MS``: N chunks MS apart on an exact schedule; ``hold``: one chunk, then silence). Every hop runs
pinned to CPU 1 (``taskset -c 1``); the upstream and this client to CPU 0, so a hop's CPU time
is its own. The client is a raw asyncio protocol with httptools' C parser (its own cost per
frame is small next to any hop's), one kept-alive connection per concurrent stream.

Paths: **direct** (to the upstream), **relay** (httpx2 ``aiter_raw`` in, Starlette
``StreamingResponse`` out: ``bench_proxy.RELAY_APP``), the same **relay on Http1Transport**
(what streamproxy's upstream transport alone earns a relay), **streamproxy** (``streamproxy
serve`` as shipped), three variants of it to show what each choice earns (**httpx2's
transport** for the upstream; **asyncio + h11**; **no coalescing**), and **LiteLLM** (its
proxy, from PyPI in its own virtualenv, offline with ``LITELLM_LOCAL_MODEL_COST_MAP=True``, the
upstream as an ``openai/`` provider with ``api_base``; skipped when absent). That virtualenv also
draws the chart; ``--litellm`` and ``--python`` default to it: ``python3 -m venv
/tmp/venv-litellm && /tmp/venv-litellm/bin/pip install 'litellm[proxy]==1.108.7' matplotlib``.
Figures:

- **burst CPU per chunk**: the hop process's CPU time (``/proc/PID/stat`` utime + stime)
  over R rounds of C streams of N chunks, divided by R x C x N; at concurrency 1 and 32;
- **paced CPU per chunk**: the hop's CPU time over the 64-stream paced level, per chunk;
- **paced capacity**: the most concurrent 20 ms-paced streams (100 chunks each, started over one
  period) the hop carries while its added p99 gap between content frames (its p99 minus
  direct's at the same concurrency) stays under 20 ms; levels double from 16, then one bisection
  step between the last pass and the first fail; a level that fails is run once more and fails
  only if it fails again (one p99 spike of a busy machine decided a level before);
- **added time to first token**: median (and p90) time to the first content byte through the
  hop minus direct's, concurrency 1, the paths taking turns request by request (each request
  finds its hop idle since the others ran: caches cold, process asleep); and **steady**, the
  paths taking turns in blocks of 21 requests, the first of each block not counted (a hop that
  serves request after request, as a proxy in use does);
- **memory per open stream**: the hop's RSS with 2M streams held open after their first
  token, minus its RSS with M, over M (after M were held and let go once, so the second M
  reuses nothing freed).

Run: ``python -m benchmarks.bench_peers [--quick] [--write] [--litellm PATH]``; ``--write``
replaces the ``## Peers`` section of ``benchmarks/README.md`` and redraws
``benchmarks/peers.png`` (matplotlib, with ``--python`` naming an interpreter that has it).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import httptools
import orjson

from benchmarks.bench_proxy import RELAY_APP, revision

HERE = Path(__file__).resolve().parent
MODEL = "deepseek-v4-flash"
HOP_CPU = "1"
CLIENT_CPU = 0
FIRST_CONTENT = re.compile(rb'"content":"[^"]')
CONTENT = b'"content":"'
PACED_CPU_LEVEL = 64  # the paced level whose CPU per chunk is reported
STEADY_BLOCK = 21  # first token, steady: requests in a row per path and turn, the first not counted
paced_cpu: dict[str, float] = {}
FAKE_UPSTREAM = r"""
import asyncio
import socket
import sys

import orjson
import uvloop


def chunk(delta, finish=None):
    payload = {
        "id": "up-0123456789abcdef", "object": "chat.completion.chunk", "created": 1780000000,
        "model": "deepseek-v4-flash", "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    event = b"data: " + orjson.dumps(payload) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"transfer-encoding: chunked\r\n\r\n")
ROLE = chunk({"role": "assistant", "content": ""})
WORDS = [chunk({"content": f" word{i}", "reasoning_content": None}) for i in range(100000)]
TAIL = chunk({"content": ""}, "stop") + b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"


class Upstream(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""
        self.timer = None
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            length = 0
            for line in head.split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if len(self.buffer) < end + 4 + length:
                return
            start, stop = end + 4, end + 4 + length
            body, self.buffer = self.buffer[start:stop], self.buffer[stop:]
            if not head.startswith(b"post"):
                self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                continue
            self.answer(orjson.loads(body)["messages"][-1]["content"].split())

    def answer(self, command):
        write = self.transport.write
        write(HEAD)
        write(ROLE)
        if command[0] == "burst":
            for piece in WORDS[: int(command[1])]:
                write(piece)
            write(TAIL)
            return
        loop = asyncio.get_running_loop()
        paced = command[0] == "paced"
        count, period = (int(command[1]), float(command[2]) / 1000) if paced else (1, 0)
        start = loop.time()

        def tick(i):
            if self.transport.is_closing():
                return
            if i == count:
                if command[0] == "paced":
                    write(TAIL)
                return
            write(WORDS[i])
            due = start + (i + 1) * period if period else start + 3600
            self.timer = loop.call_at(due, tick, i + 1)

        tick(0)

    def connection_lost(self, exc):
        if self.timer is not None:
            self.timer.cancel()


async def main():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    print(f"upstream: listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    server = await asyncio.get_running_loop().create_server(Upstream, sock=sock)
    await server.serve_forever()


uvloop.run(main())
"""
VARIANT = """
import sys
import streamproxy.commands.serve as serve
import httpx2
import streamproxy.proxy.response as response
import streamproxy.proxy.upstream as upstream
from streamproxy.cli import main

if "h11" in sys.argv[1]:
    serve.serving_stack = lambda: ("asyncio", "h11")
if "nocoalesce" in sys.argv[1]:
    response.EventStreamResponse.coalesce = False
if "httpx2" in sys.argv[1]:
    upstream.connection_transport = lambda url, limits: httpx2.AsyncHTTPTransport(limits=limits)
sys.exit(main(sys.argv[2:]))
"""


# ---------------------------------------------------------------- processes


class Process:
    """A server process pinned to ``cpus``; ``url`` from its first stdout line (or ``url``)."""

    def __init__(
        self, command: list[str], *, cpus: str, cwd: Path, env: dict[str, str], url: str = ""
    ) -> None:
        self.process = subprocess.Popen(
            ["taskset", "-c", cpus, *command],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.pid = self.process.pid  # taskset execs the command: the same process
        if url:
            self.url = url
            return
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "http://" not in line:
            self.stop()
            raise RuntimeError(f"{command} did not start: {line!r}")
        self.url = line.rsplit(" ", 1)[-1].strip()

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_up(url: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not come up")


# ---------------------------------------------------------------- the client


@dataclass
class Result:
    status: int = 0
    first_content: float = float("nan")
    content_times: list[float] = field(default_factory=list)


class Connection(asyncio.Protocol):
    """One kept-alive HTTP/1.1 connection; ``post`` sends a request and reads its stream."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[None] | None = None
        self.first: asyncio.Future[None] | None = None
        self.result = Result()
        self.started = 0.0
        self.tail = b""
        self.parser = httptools.HttpResponseParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_headers_complete(self) -> None:
        self.result.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        now = time.perf_counter()
        result = self.result
        if CONTENT in body:
            result.content_times.append(now)
        if result.first_content != result.first_content:  # nan: not seen yet
            self.tail = self.tail[-32:] + body
            if FIRST_CONTENT.search(self.tail):
                result.first_content = now - self.started
                if self.first is not None and not self.first.done():
                    self.first.set_result(None)

    def on_message_complete(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        for waiter in (self.done, self.first):
            if waiter is not None and not waiter.done():
                waiter.set_exception(ConnectionError("closed"))
                waiter.exception()  # awaited or not: one of the two is (no "never retrieved")

    async def post(self, host: str, body: bytes, headers: bytes, *, hold: bool = False) -> Result:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self.result, self.tail = Result(), b""
        self.parser = httptools.HttpResponseParser(self)
        self.done, self.first = loop.create_future(), loop.create_future()
        self.started = time.perf_counter()
        self.transport.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: %s\r\ncontent-type: application/json\r\n"
            b"%scontent-length: %d\r\n\r\n%s" % (host.encode(), headers, len(body), body)
        )
        await (self.first if hold else self.done)
        return self.result


@dataclass
class Path_:
    name: str
    url: str
    process: Process | None = None
    headers: bytes = b""

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    async def connect(self, count: int) -> list[Connection]:
        loop = asyncio.get_running_loop()
        host, port = self.host.rsplit(":", 1)
        connections = []
        for _ in range(count):
            _, connection = await loop.create_connection(Connection, host, int(port))
            connections.append(connection)
        return connections


def request_body(command: str) -> bytes:
    return orjson.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": command}], "stream": True}
    )


async def run_streams(
    path: Path_, connections: list[Connection], command: str, *, stagger: float = 0.0
) -> list[Result]:
    body = request_body(command)

    async def one(number: int, connection: Connection) -> Result:
        if stagger:
            await asyncio.sleep(stagger * number / len(connections))
        if connection.transport is None or connection.transport.is_closing():
            # the server closed it while it sat idle (uvicorn's keep-alive timeout is 5 s)
            connection = connections[number] = (await path.connect(1))[0]
        return await connection.post(path.host, body, path.headers)

    results = await asyncio.gather(*(one(n, c) for n, c in enumerate(connections)))
    for result in results:
        if result.status != 200:
            raise RuntimeError(f"{path.name}: status {result.status}")
    return results


def close(connections: list[Connection]) -> None:
    for connection in connections:
        if connection.transport is not None:
            connection.transport.close()


# ---------------------------------------------------------------- the figures


async def burst_cpu(path: Path_, *, concurrency: int, rounds: int, chunks: int) -> float:
    """The hop's CPU microseconds per chunk (nan for direct)."""
    connections = await path.connect(concurrency)
    try:
        await run_streams(path, connections, f"burst {chunks}")  # warm-up
        assert path.process is not None
        before = path.process.cpu_seconds()
        for _ in range(rounds):
            results = await run_streams(path, connections, f"burst {chunks}")
            assert all(len(result.content_times) > 0 for result in results)
        spent = path.process.cpu_seconds() - before
    finally:
        close(connections)
    return spent / (rounds * concurrency * chunks) * 1e6


async def paced_p99(path: Path_, concurrency: int, *, chunks: int, period_ms: float) -> float:
    """The p99 gap between content arrivals (ms) over ``concurrency`` paced streams."""
    connections = await path.connect(concurrency)
    try:
        results = await run_streams(
            path, connections, f"paced {chunks} {period_ms}", stagger=period_ms / 1000
        )
    finally:
        close(connections)
    gaps = [
        (later - earlier) * 1000
        for result in results
        for earlier, later in zip(result.content_times, result.content_times[1:], strict=False)
    ]
    return percentile(gaps, 0.99)


async def capacity(
    path: Path_, direct: Path_, *, levels: list[int], chunks: int, period_ms: float
) -> tuple[int, list[tuple[int, float, float]]]:
    """The most paced streams with added p99 gap < period_ms; every level's (n, p99, direct)."""
    seen: list[tuple[int, float, float]] = []
    passed, failed = 0, 0

    async def measure(level: int) -> bool:
        assert path.process is not None
        before = path.process.cpu_seconds()
        try:
            own = await paced_p99(path, level, chunks=chunks, period_ms=period_ms)
        except (ConnectionError, RuntimeError, OSError):
            own = float("inf")
        if level == PACED_CPU_LEVEL:
            paced_cpu[path.name] = (path.process.cpu_seconds() - before) / (level * chunks) * 1e6
        base = await paced_p99(direct, level, chunks=chunks, period_ms=period_ms)
        seen.append((level, own, base))
        print(
            f"    {path.name}: {level} streams p99 {own:.1f} ms (direct {base:.1f})",
            file=sys.stderr,
        )
        return own - base < period_ms

    async def carries(level: int) -> bool:
        # one p99 spike (a pause of the machine, not of the hop) must not decide a level
        return await measure(level) or await measure(level)

    for level in levels:
        if await carries(level):
            passed = level
        else:
            failed = level
            break
    if passed and failed and failed - passed > 1:
        middle = (passed + failed) // 2
        if await carries(middle):
            passed = middle
    return passed, seen


async def first_token(
    paths: list[Path_], *, requests: int, block: int = 1
) -> dict[str, list[float]]:
    """Seconds to the first content byte, per path, the paths taking turns.

    ``block`` 1: one request each per turn, so every request finds its hop idle while the
    others ran (its caches cold, its process asleep). Larger: ``block`` requests in a row, the
    first of each block not counted (a hop serving steadily, as a busy proxy does).
    """
    connections = {path.name: (await path.connect(1))[0] for path in paths}
    times: dict[str, list[float]] = {path.name: [] for path in paths}
    body = request_body("burst 5")
    warm_turns = 20 if block == 1 else 1
    turn = 0
    try:
        while min(len(values) for values in times.values()) < requests:
            start = turn % len(paths)
            for path in paths[start:] + paths[:start]:
                for number in range(block):
                    result = await connections[path.name].post(path.host, body, path.headers)
                    if turn >= warm_turns and (block == 1 or number > 0):
                        times[path.name].append(result.first_content)
            turn += 1
    finally:
        close(list(connections.values()))
    return times


async def memory_per_stream(path: Path_, *, streams: int) -> float:
    """KiB of hop RSS per stream held open after its first token: the slope from M to 2M.

    M streams are held and let go first (pools, lazy imports, the allocator's arenas grown to M
    streams' worth), then M are held (reusing what the first M freed) and M more beside them:
    the second M can reuse nothing, so the RSS they add is what an open stream costs. Valid
    once per hop process, before it ever held 2M streams (the paced levels run after this):
    a second call finds the memory of the first's 2M freed and reusable, and gives 1-3 KiB.
    """
    assert path.process is not None
    body = request_body("hold")

    async def hold(count: int) -> list[Connection]:
        connections = await path.connect(count)
        await asyncio.gather(
            *(c.post(path.host, body, path.headers, hold=True) for c in connections)
        )
        return connections

    close(await hold(streams))
    await asyncio.sleep(1.0)
    first = await hold(streams)
    await asyncio.sleep(0.5)
    before = path.process.rss()
    second = await hold(streams)
    await asyncio.sleep(0.5)
    during = path.process.rss()
    close(first + second)
    await asyncio.sleep(1.0)
    return (during - before) / streams / 1024


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# ---------------------------------------------------------------- the run


def start_paths(args: argparse.Namespace, directory: Path) -> tuple[list[Path_], list[Process]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DEEPSEEK_API_KEY", None)
    (directory / "upstream.py").write_text(textwrap.dedent(FAKE_UPSTREAM))
    (directory / "relay_app.py").write_text(textwrap.dedent(RELAY_APP))
    (directory / "variant.py").write_text(textwrap.dedent(VARIANT))
    processes: list[Process] = []

    def start(command: list[str], *, cpus: str = HOP_CPU, url: str = "", **extra: str) -> Process:
        process = Process(command, cpus=cpus, cwd=directory, env={**env, **extra}, url=url)
        processes.append(process)
        return process

    upstream = start([sys.executable, "upstream.py"], cpus=str(CLIENT_CPU))
    quiet = ["--upstream", upstream.url + "/v1", "--log-level", "warning", "--port", "0"]
    paths = [Path_("direct", upstream.url, upstream)]
    relay = start([sys.executable, "relay_app.py", upstream.url + "/v1"])
    paths.append(Path_("relay", relay.url, relay))
    if not args.quick:
        relay = start([sys.executable, "relay_app.py", upstream.url + "/v1", "http1"])
        paths.append(Path_("relay on Http1Transport", relay.url, relay))
    for name, variant in (
        ("streamproxy", "shipped"),
        ("streamproxy, httpx2's transport", "httpx2"),
        ("streamproxy, asyncio + h11", "h11"),
        ("streamproxy, no coalescing", "nocoalesce"),
    ):
        if variant != "shipped" and args.quick:
            continue
        process = start([sys.executable, "variant.py", variant, "serve", *quiet])
        paths.append(Path_(name, process.url, process))
    if args.litellm:
        key = "sk-" + secrets.token_hex(32)
        port = free_port()
        config = {
            "model_list": [
                {
                    "model_name": MODEL,
                    "litellm_params": {
                        "model": f"openai/{MODEL}",
                        "api_base": upstream.url + "/v1",
                        "api_key": "sk-bench",
                    },
                }
            ],
            "litellm_settings": {"telemetry": False},
        }
        (directory / "litellm.json").write_text(json.dumps(config))
        url = f"http://127.0.0.1:{port}"
        process = start(
            [args.litellm, "--config", "litellm.json", "--host", "127.0.0.1", "--port", str(port)],
            url=url,
            LITELLM_MASTER_KEY=key,
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            LITELLM_LOG="ERROR",
        )
        wait_until_up(url)
        paths.append(Path_("LiteLLM", url, process, b"authorization: Bearer %s\r\n" % key.encode()))
    return paths, processes


async def measure(args: argparse.Namespace, paths: list[Path_]) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {path.name: {} for path in paths}
    direct = paths[0]
    hops = paths[1:]
    # a few streams through every path first: lazy imports, connection pools, JIT-free warm-up
    for path in paths:
        connections = await path.connect(4)
        await run_streams(path, connections, "burst 50")
        close(connections)
    print("  first token", file=sys.stderr)
    times = await first_token(paths, requests=args.ttft_requests)
    steady = await first_token(paths, requests=args.ttft_requests, block=STEADY_BLOCK)
    for path in paths:
        rows[path.name]["ttft_ms"] = statistics.median(times[path.name]) * 1000
        rows[path.name]["ttft_p90_ms"] = percentile(times[path.name], 0.9) * 1000
        rows[path.name]["steady_ttft_ms"] = statistics.median(steady[path.name]) * 1000
    for concurrency in (1, 32):
        print(f"  burst CPU, concurrency {concurrency}", file=sys.stderr)
        rounds = args.rounds * (4 if concurrency == 1 else 1)
        # the hops take turns, round block by round block, twice; the smaller figure counts
        for _ in range(2):
            for path in hops:
                value = await burst_cpu(
                    path, concurrency=concurrency, rounds=rounds, chunks=args.chunks
                )
                key = f"cpu_c{concurrency}"
                rows[path.name][key] = min(rows[path.name].get(key, float("inf")), value)
    print("  memory per open stream", file=sys.stderr)
    for path in hops:
        rows[path.name]["kib_per_stream"] = await memory_per_stream(path, streams=args.hold)
    print("  paced capacity", file=sys.stderr)
    for path in hops:
        if args.quick and path.name != "streamproxy" and path.name != "relay":
            continue
        passed, seen = await capacity(
            path, direct, levels=args.levels, chunks=args.paced_chunks, period_ms=20.0
        )
        rows[path.name]["capacity"] = passed
        if path.name in paced_cpu:
            rows[path.name]["paced_cpu"] = paced_cpu[path.name]
        rows[path.name]["levels"] = seen  # type: ignore[assignment]
    return rows


def stack(python: str) -> str:
    code = "import uvicorn, uvloop, httptools; print(uvicorn.__version__)"
    done = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return done.stdout.strip()


def table(rows: dict[str, dict[str, float]], args: argparse.Namespace, load: str) -> str:
    litellm_version = ""
    if args.litellm:
        python = str(Path(args.litellm).parent / "python")
        done = subprocess.run(
            [python, "-c", "from importlib.metadata import version; print(version('litellm'))"],
            capture_output=True,
            text=True,
        )
        litellm_version = f", LiteLLM {done.stdout.strip()}"
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    lines = [
        f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; commit {revision()}; "
        f"machine: {cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}, Python "
        f"{platform.python_version()}; uvicorn {version('uvicorn')}, uvloop {version('uvloop')}, "
        f"httptools {version('httptools')}, httpx2 {version('httpx2')}, starlette "
        f"{version('starlette')}{litellm_version}; hops on CPU {HOP_CPU}, upstream and client on "
        f"CPU {CLIENT_CPU}; load average {load}. Burst: {args.chunks}-chunk streams, "
        f"{args.rounds * 4} rounds at concurrency 1 and {args.rounds} x 32, best of 2 turns; "
        f"first token: {args.ttft_requests} requests per path, taking turns request by request, "
        f"then (steady) in blocks of {STEADY_BLOCK}, the first of each not counted; "
        f"memory: the RSS slope from {args.hold} to {2 * args.hold} streams held; "
        f"capacity: {args.paced_chunks} chunks 20 ms apart per stream.",
        "",
        "| path | burst CPU per chunk, c=1 (µs) | burst CPU per chunk, c=32 (µs) "
        "| vs relay c=1 / c=32 | paced capacity (streams, added p99 gap < 20 ms) "
        f"| paced CPU per chunk, {PACED_CPU_LEVEL} streams (µs) | vs relay "
        "| median TTFT (ms) | added median TTFT vs direct (ms) | p90 TTFT (ms) "
        "| median TTFT, steady (ms) | added, steady (ms) "
        "| memory per open stream (KiB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    relay = rows.get("relay", {})
    direct = rows["direct"]
    for name, row in rows.items():

        def show(key: str, form: str = "{:.1f}", row: dict[str, float] = row) -> str:
            value = row.get(key)
            return "—" if value is None else form.format(value)

        ratio = "—"
        if "cpu_c1" in row and relay:
            ratio = (
                f"{row['cpu_c1'] / relay['cpu_c1']:.2f}x / {row['cpu_c32'] / relay['cpu_c32']:.2f}x"
            )
        paced_ratio = "—"
        if "paced_cpu" in row and "paced_cpu" in relay:
            paced_ratio = f"{row['paced_cpu'] / relay['paced_cpu']:.2f}x"
        lines.append(
            f"| {name} | {show('cpu_c1')} | {show('cpu_c32')} | {ratio} "
            f"| {show('capacity', '{:.0f}')} | {show('paced_cpu')} | {paced_ratio} "
            f"| {row['ttft_ms']:.2f} "
            f"| {row['ttft_ms'] - direct['ttft_ms']:+.2f} | {row['ttft_p90_ms']:.2f} "
            f"| {row['steady_ttft_ms']:.2f} "
            f"| {row['steady_ttft_ms'] - direct['steady_ttft_ms']:+.2f} "
            f"| {show('kib_per_stream')} |"
        )
    lines.append("")
    lines.append("Paced levels (streams: p99 gap through the hop / direct, ms):")
    lines.append("")
    for name, row in rows.items():
        seen = row.get("levels")
        if seen:
            shown = "; ".join(f"{n}: {own:.1f} / {base:.1f}" for n, own, base in seen)  # type: ignore[attr-defined]
            lines.append(f"- {name}: {shown}")
    return "\n".join(lines)


def chart(rows: dict[str, dict[str, float]], python: str) -> None:
    """``benchmarks/peers.png``: one panel per figure, two rows of three (drawn by ``python``);
    the CPU and first-token panels are on a log scale where their values span more than 10x
    (LiteLLM's), so the other bars stay readable."""
    data = {name: {k: v for k, v in row.items() if k != "levels"} for name, row in rows.items()}
    script = textwrap.dedent(
        """
        import json, sys
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
        rows = json.loads(sys.argv[1])
        panels = [  # key, title, may be on a log scale
            ("cpu_c1", "burst CPU per chunk, c=1 (µs)", True),
            ("cpu_c32", "burst CPU per chunk, c=32 (µs)", True),
            ("capacity", "20 ms-paced streams carried (p99 gap +20 ms)", False),
            ("paced_cpu", "paced CPU per chunk, 64 streams (µs)", True),
            ("added_ttft", "added median TTFT, turn by turn (ms)", True),
            ("added_steady_ttft", "added median TTFT, steady (ms)", True),
        ]  # memory per open stream is in the table only: RSS hardly resolves it
        direct = rows["direct"]
        for row in rows.values():
            row["added_ttft"] = row["ttft_ms"] - direct["ttft_ms"]
            row["added_steady_ttft"] = row["steady_ttft_ms"] - direct["steady_ttft_ms"]
        figure, axes = plt.subplots(2, 3, figsize=(15, 8))
        for axis, (key, title, may_log) in zip(axes.flat, panels):
            names = [n for n, row in rows.items() if key in row and n != "direct"]
            values = [rows[n][key] for n in names]
            colours = ["#d62728" if n == "streamproxy" else "#7f7f7f" for n in names]
            axis.barh(names, values, color=colours)
            axis.invert_yaxis()
            positive = [value for value in values if value > 0]
            if may_log and positive and max(positive) / min(positive) > 10:
                axis.set_xscale("log")
                axis.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
                axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
                title += ", log scale"
            axis.set_title(title, fontsize=9)
            for y, value in enumerate(values):
                axis.text(value, y, f" {value:.3g}", va="center", fontsize=8)
            axis.tick_params(labelsize=8)
        figure.suptitle(sys.argv[2], fontsize=9)
        figure.tight_layout()
        figure.savefig(sys.argv[3], dpi=110)
        """
    )
    subtitle = (
        "streamproxy vs its peers (benchmarks/bench_peers.py; lower is better except capacity)"
    )
    subprocess.run(
        [python, "-c", script, json.dumps(data), subtitle, str(HERE / "peers.png")], check=True
    )


README = HERE / "README.md"
HAND_WRITTEN = "Reading (written by hand"


def write_section(text: str) -> None:
    readme = README.read_text()
    intro = __doc__.split("\n\n", 1)[1].split("\nRun:")[0].strip()
    section = (
        f"## Peers\n\n`python -m benchmarks.bench_peers [--write]` (issue 13).\n\n{intro}\n\n"
        f"### Results\n\n{text}\n\n![the figures of this run](peers.png)\n"
    )
    start = readme.find("## Peers\n")
    if start < 0:
        anchor = readme.find("## Load and soak\n")
        readme = readme[:anchor] + section + "\n" + readme[anchor:]
    else:
        end = readme.find("\n## ", start + 1)
        old = readme[start:end] if end >= 0 else readme[start:]
        kept = old.find(HAND_WRITTEN)  # the reading written by hand stays, under the new table
        if kept >= 0:
            section += "\n" + old[kept:].rstrip("\n") + "\n"
        readme = readme[:start] + section + (readme[end + 1 :] if end >= 0 else "")
    README.write_text(readme)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ttft-requests", type=int, default=200)
    parser.add_argument("--hold", type=int, default=200, help="streams held open for memory")
    parser.add_argument("--paced-chunks", type=int, default=100)
    parser.add_argument(
        "--levels",
        type=lambda s: [int(v) for v in s.split(",")],
        default=[16, 32, 64, 128, 256, 512, 1024],
    )
    parser.add_argument("--litellm", default="/tmp/venv-litellm/bin/litellm")
    parser.add_argument("--python", default="/tmp/venv-litellm/bin/python", help="for the chart")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.chunks, args.rounds, args.ttft_requests, args.hold = 300, 1, 50, 50
        args.paced_chunks, args.levels = 30, [16, 64, 256]
    if args.litellm and not Path(args.litellm).exists():
        print(f"no LiteLLM at {args.litellm}: skipped", file=sys.stderr)
        args.litellm = ""
    os.sched_setaffinity(0, {CLIENT_CPU})
    directory = Path(tempfile.mkdtemp(prefix="bench_peers_"))
    load_before = os.getloadavg()
    paths, processes = start_paths(args, directory)
    try:
        import uvloop

        rows = uvloop.run(measure(args, paths))
    finally:
        for process in processes:
            process.stop()
    load_after = os.getloadavg()
    load = " -> ".join(
        ", ".join(f"{v:.2f}" for v in sample) for sample in (load_before, load_after)
    )
    text = table(rows, args, load)
    print(text)
    if args.write:
        write_section(text)
        chart(rows, args.python)


if __name__ == "__main__":
    main()
