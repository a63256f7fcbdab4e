"""Telemetry overhead per chunk: the runner over a scripted 2,000-chunk stream, on vs off.

Modes: ``off`` (no observer, the plain upstream), ``metrics`` (the request's telemetry with the
API's no-op tracer: the default), ``metrics+traces`` (an SDK provider with an in-memory
exporter). Each run is one request through ``TurnRunner.stream`` (no HTTP, no sockets); the
figure is the median wall time over the rounds divided by the chunk count.

Run::

    python benchmarks/bench_telemetry.py [--chunks 2000] [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator

import httpx
import orjson
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider
from opentelemetry.trace import TracerProvider as ApiTracerProvider
from prometheus_client import CollectorRegistry

from streamproxy.core.limits import Limits
from streamproxy.proxy.approval import ApprovalSigner
from streamproxy.proxy.request import parse_request
from streamproxy.proxy.runner import NO_OBSERVER, TurnObserver, TurnRunner
from streamproxy.proxy.state import open_state_store
from streamproxy.proxy.telemetry import Telemetry
from streamproxy.proxy.tools import ToolSet
from streamproxy.proxy.turn import Turn
from streamproxy.proxy.upstream import Upstream

URL = "https://api.deepseek.com"


def frames(count: int) -> list[bytes]:
    def chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
        item = {
            "id": "bench",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + orjson.dumps(item) + b"\n\n"

    body = [chunk({"role": "assistant", "content": ""})]
    body += [chunk({"content": "word "}) for _ in range(count)]
    return [*body, chunk({}, finish="stop"), b"data: [DONE]\n\n"]


async def one_request(
    upstream: Upstream, telemetry: Telemetry | None, signer: ApprovalSigner
) -> float:
    raw = orjson.dumps(
        {"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    )
    chat = parse_request(raw, server_tools=ToolSet(), is_deepseek=True, max_size=1 << 20)
    turn = Turn(
        chat, tools=ToolSet(), signer=signer, client="", max_rounds=8, use_strict=False,
        limits=Limits(), approvals="chat",
    )  # fmt: skip
    observer: TurnObserver = NO_OBSERVER
    used = upstream
    if telemetry is not None:
        request = telemetry.request("POST", "/v1/chat/completions", {})
        observer, used = request, upstream.with_hooks(request)
    runner = TurnRunner(
        turn,
        used,
        store=open_state_store("memory://"),
        max_tool_result_size=1 << 20,
        observer=observer,
    )
    started = time.perf_counter()
    await runner.start()
    stream = runner.stream() if telemetry is None else request.watch(runner.stream())
    async for _ in stream:
        pass
    return time.perf_counter() - started


async def main(chunks: int, rounds: int) -> None:
    body = frames(chunks)

    async def pieces() -> AsyncIterator[bytes]:
        for piece in body:
            yield piece

    async def handler(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "text/event-stream"}
        return httpx.Response(200, headers=headers, content=pieces())

    upstream = Upstream(URL, transport=httpx.MockTransport(handler))
    signer = ApprovalSigner(b"s" * 32)
    providers: dict[str, ApiTracerProvider | None] = {
        "off": None,
        "metrics": NoOpTracerProvider(),
        "metrics+traces": TracerProvider(),
    }
    traced = providers["metrics+traces"]
    assert isinstance(traced, TracerProvider)
    traced.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    telemetries = {
        name: None if provider is None else Telemetry(
            upstream_url=URL, registry=CollectorRegistry(), tracer_provider=provider
        )
        for name, provider in providers.items()
    }  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in providers}
    for _ in range(3):  # warm up
        for telemetry in telemetries.values():
            await one_request(upstream, telemetry, signer)
    for _ in range(rounds):
        for name, telemetry in telemetries.items():
            times[name].append(await one_request(upstream, telemetry, signer))
    base = statistics.median(times["off"]) / chunks
    print(f"{chunks} chunks, median of {rounds} requests")
    for name, values in times.items():
        per_chunk = statistics.median(values) / chunks
        print(f"  {name:15} {per_chunk * 1e6:7.2f} µs/chunk  (+{(per_chunk - base) * 1e6:5.2f})")
    await upstream.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=30)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.chunks, arguments.rounds))
