"""Load and soak: 500 concurrent streams through one proxy process, and 10 minutes of traffic.

The traffic is a mix of conversations written into one cassette, served by a real
``streamproxy replay`` process (``--match messages``, recorded timing; the mix's chunks are all
due at once, so it is instant unless a conversation is paced on purpose):

- **plain**: a content stream (``PLAIN_CHUNKS`` pieces, some non-ASCII);
- **tool loop**: round 1 reasons, says a few words and calls the read-only server tool
  ``lookup(key, n)`` with its arguments in fragments; round 2 is matched on the exact tool
  result (a deterministic function of the arguments, ``lookup_result``), so a wrong or
  missing result finds no interaction, and its answer quotes the result;
- **paced** (soak and memory only): a long content stream, one piece every ``pace_ms``;
- **held** (memory per stream only): one piece, then nothing until ``HOLD_MS``.

Every client stream is parsed and compared with the conversation (``check``): the content and
the reasoning joined exactly as the cassette says (each piece is unique, so a lost, repeated or
reordered piece shows), one ``finish_reason``, one completion id, ``[DONE]``, no server call
leaked as ``tool_calls``, and the tool's progress ``started`` then ``ok`` exactly once.

Run::

    .venv/bin/python -m benchmarks.bench_load            # the 500-stream table
    .venv/bin/python -m benchmarks.bench_load --soak 600 # 10 minutes, memory sampled every 5 s
    .venv/bin/python -m benchmarks.bench_load --write    # also update benchmarks/README.md

Paths side by side in one run: **direct** to the replay server, the minimal byte **relay** of
``bench_proxy.py`` (httpx in, Starlette out, no parsing), and the **proxy**. The relay cannot run
tools, so the side-by-side rows carry plain streams only; the proxy also runs the mix.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import os
import platform
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import orjson

from benchmarks.bench_proxy import RELAY_APP, Server
from streamproxy.cassette.format import (
    Cassette,
    Chunk,
    Interaction,
    RecordedRequest,
    RecordedResponse,
    dump,
)

MODEL = "deepseek-v4-flash"
DIAGNOSTICS = "/_streamproxy/diagnostics"
PLAIN_CHUNKS = 24
ANSWER_CHUNKS = 16
HOLD_MS = 120_000.0
# The read-only tool of the tool loops; ``lookup_result`` below is the same function.
TOOLS_MODULE = '''
import hashlib
import os

from streamproxy.proxy.tools import tool

LOG = os.environ.get("LOAD_TOOL_LOG")


def _log(line: str) -> None:
    if LOG:
        with open(LOG, "a") as log:
            log.write(f"{os.getpid()} {line}\\n")


@tool(read_only=True, timeout=10)
def lookup(key: str, n: int) -> str:
    """Look a key up."""
    _log(f"lookup {key}")
    digest = hashlib.sha256(f"{key}:{n}".encode()).hexdigest()[:16]
    return f"{key}={n * n}/{digest}"


@tool(needs_approval=True, timeout=10)
def save_note(key: str, text: str) -> str:
    """Save a note (writes: needs the user's approval)."""
    _log(f"save_note {key}")
    return f"saved {key}: {len(text)} characters"


TOOLS = [lookup, save_note]
'''


def lookup_result(key: str, n: int) -> str:
    """What the ``lookup`` tool returns (the same function as in ``TOOLS_MODULE``)."""
    digest = hashlib.sha256(f"{key}:{n}".encode()).hexdigest()[:16]
    return f"{key}={n * n}/{digest}"


# ---------------------------------------------------------------------------------- the mix


@dataclass(frozen=True, slots=True, kw_only=True)
class Conversation:
    """One conversation of the mix and what a client must receive for it."""

    name: str
    kind: str
    """``plain``, ``tool``, ``paced`` or ``held``."""
    content: str
    """The content the client must see, exactly (later rounds after a blank line)."""
    reasoning: str = ""
    tool_call_id: str | None = None
    tool_result: str | None = None

    @property
    def user_message(self) -> dict[str, object]:
        return {"role": "user", "content": self.name}


def sse_chunk(
    delta: dict[str, object], finish: str | None = None, usage: object = None, ident: str = "x"
) -> bytes:
    """One DeepSeek-shaped ``chat.completion.chunk`` frame."""
    payload = {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": 1780000000,
        "model": MODEL,
        "system_fingerprint": "fp_load",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
    }
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _usage(prompt: int, completion: int) -> dict[str, object]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _response(frames: Sequence[bytes | tuple[float, bytes]]) -> RecordedResponse:
    chunks = [Chunk(*frame) if isinstance(frame, tuple) else Chunk(0.0, frame) for frame in frames]
    return RecordedResponse(
        status=200, headers={"content-type": "text/event-stream"}, chunks=chunks
    )


def _request(messages: list[dict[str, object]]) -> RecordedRequest:
    return RecordedRequest(
        method="POST", path="/chat/completions", body={"model": MODEL, "messages": messages}
    )


def _content_frames(pieces: Sequence[str], ident: str) -> list[bytes]:
    return [
        sse_chunk({"content": piece, "reasoning_content": None}, ident=ident) for piece in pieces
    ]


def plain_conversation(index: int, chunks: int = PLAIN_CHUNKS) -> tuple[Conversation, Interaction]:
    name = f"plain-{index:04d}"
    pieces = [f"p{index}.{i}{' é°' if i % 5 == 0 else ' '}" for i in range(chunks)]
    ident = f"chatcmpl-{name}"
    frames = [
        sse_chunk({"role": "assistant", "content": ""}, ident=ident),
        *_content_frames(pieces, ident),
        sse_chunk({"content": ""}, "stop", _usage(10, chunks), ident=ident),
        b"data: [DONE]\n\n",
    ]
    conversation = Conversation(name=name, kind="plain", content="".join(pieces))
    return conversation, Interaction(
        request=_request([conversation.user_message]), response=_response(frames)
    )


def tool_conversation(
    index: int, chunks: int = ANSWER_CHUNKS
) -> tuple[Conversation, list[Interaction]]:
    """A two-round tool loop whose second round is matched on the exact tool result."""
    name = f"tool-{index:04d}"
    key, n = f"k{index}", index
    arguments_pieces = ['{"key": ', f'"{key}", ', f'"n": {n}}}']
    arguments = "".join(arguments_pieces)
    result = lookup_result(key, n)
    call_id = f"call_{index:04d}"
    ident = f"chatcmpl-{name}"
    reasoning = ["Need ", f"the value of {key}."]
    opening = f"Checking {key}."
    head = {
        "index": 0,
        "id": call_id,
        "type": "function",
        "function": {"name": "lookup", "arguments": ""},
    }
    first = [
        sse_chunk({"role": "assistant", "content": "", "reasoning_content": ""}, ident=ident),
        *(sse_chunk({"reasoning_content": text}, ident=ident) for text in reasoning),
        sse_chunk({"content": opening}, ident=ident),
        sse_chunk({"tool_calls": [head]}, ident=ident),
        *(
            sse_chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}, ident=ident)
            for piece in arguments_pieces
        ),
        sse_chunk({"content": ""}, "tool_calls", _usage(20, 12), ident=ident),
        b"data: [DONE]\n\n",
    ]
    answer = ["Result: ", *(result[i : i + 7] for i in range(0, len(result), 7)), "."]
    answer += [f" a{index}.{i}" for i in range(chunks - len(answer))]
    second = [
        sse_chunk({"role": "assistant", "content": ""}, ident=ident + "-2"),
        *_content_frames(answer, ident + "-2"),
        sse_chunk({"content": ""}, "stop", _usage(40, chunks), ident=ident + "-2"),
        b"data: [DONE]\n\n",
    ]
    conversation = Conversation(
        name=name,
        kind="tool",
        content=opening + "\n\n" + "".join(answer),
        reasoning="".join(reasoning),
        tool_call_id=call_id,
        tool_result=result,
    )
    user = conversation.user_message
    assistant = {
        "role": "assistant",
        "content": opening,
        "reasoning_content": "".join(reasoning),
        "tool_calls": [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": "lookup", "arguments": arguments},
            }
        ],
    }
    tool = {"role": "tool", "tool_call_id": call_id, "content": result}
    return conversation, [
        Interaction(request=_request([user]), response=_response(first)),
        Interaction(request=_request([user, assistant, tool]), response=_response(second)),
    ]


def paced_conversation(
    index: int, *, pieces: int, pace_ms: float
) -> tuple[Conversation, Interaction]:
    """A stream whose content pieces come ``pace_ms`` apart."""
    name = f"paced-{index:04d}"
    ident = f"chatcmpl-{name}"
    texts = [f"s{index}.{i} " for i in range(pieces)]
    frames: list[tuple[float, bytes]] = [(0.0, sse_chunk({"role": "assistant"}, ident=ident))]
    frames += [(pace_ms * i, frame) for i, frame in enumerate(_content_frames(texts, ident))]
    end = pace_ms * pieces
    frames += [
        (end, sse_chunk({"content": ""}, "stop", _usage(5, pieces), ident=ident)),
        (end, b"data: [DONE]\n\n"),
    ]
    conversation = Conversation(name=name, kind="paced", content="".join(texts))
    return conversation, Interaction(
        request=_request([conversation.user_message]), response=_response(frames)
    )


@dataclass(slots=True)
class Mix:
    """The conversations of a cassette, by kind."""

    plain: list[Conversation] = field(default_factory=list)
    tool: list[Conversation] = field(default_factory=list)
    paced: list[Conversation] = field(default_factory=list)
    held: list[Conversation] = field(default_factory=list)
    interactions: list[Interaction] = field(default_factory=list)

    def cassette(self) -> Cassette:
        return Cassette(
            source="benchmarks/bench_load.py (synthetic)", interactions=self.interactions
        )

    def alternating(self, count: int) -> list[Conversation]:
        """``count`` conversations, plain and tool loops taking turns (each used in rotation)."""
        chosen: list[Conversation] = []
        for i in range(count):
            pool = self.plain if (i % 2 == 0 or not self.tool) else self.tool
            chosen.append(pool[(i // 2) % len(pool)])
        return chosen


def build_mix(
    *,
    plain: int = 40,
    tool: int = 40,
    paced: int = 0,
    pace_ms: float = 200.0,
    paced_pieces: int = 50,
    held: int = 0,
) -> Mix:
    mix = Mix()
    for index in range(plain):
        conversation, interaction = plain_conversation(index)
        mix.plain.append(conversation)
        mix.interactions.append(interaction)
    for index in range(tool):
        conversation, interactions = tool_conversation(index)
        mix.tool.append(conversation)
        mix.interactions.extend(interactions)
    for index in range(paced):
        conversation, interaction = paced_conversation(index, pieces=paced_pieces, pace_ms=pace_ms)
        mix.paced.append(conversation)
        mix.interactions.append(interaction)
    for index in range(held):
        conversation, interaction = held_conversation(index)
        mix.held.append(conversation)
        mix.interactions.append(interaction)
    return mix


def held_conversation(index: int) -> tuple[Conversation, Interaction]:
    """One piece at once, then nothing until ``HOLD_MS``: a stream that stays open."""
    name = f"held-{index:04d}"
    ident = f"chatcmpl-{name}"
    text = f"h{index} first "
    frames = [
        (0.0, sse_chunk({"role": "assistant", "content": ""}, ident=ident)),
        (0.0, sse_chunk({"content": text}, ident=ident)),
        (HOLD_MS, sse_chunk({"content": ""}, "stop", _usage(5, 1), ident=ident)),
        (HOLD_MS, b"data: [DONE]\n\n"),
    ]
    conversation = Conversation(name=name, kind="held", content=text)
    return conversation, Interaction(
        request=_request([conversation.user_message]), response=_response(frames)
    )


# ---------------------------------------------------------------------------------- the client


@dataclass(slots=True)
class StreamResult:
    """What one client stream received."""

    conversation: Conversation
    status: int = 0
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    errors: list[object] = field(default_factory=list)
    leaked_tool_calls: int = 0
    progress: list[tuple[str, str]] = field(default_factory=list)
    is_done: bool = False
    started: float = 0.0
    token_times: list[float] = field(default_factory=list)
    """Arrival time of each frame carrying content or reasoning (perf_counter)."""
    round_starts: list[int] = field(default_factory=list)
    """Indexes into ``token_times`` of the first token of a later round (after a tool ran)."""
    failure: str | None = None

    @property
    def ttft(self) -> float | None:
        return self.token_times[0] - self.started if self.token_times else None


def chat_body(conversation: Conversation, *, progress: bool) -> dict[str, object]:
    body: dict[str, object] = {
        "model": MODEL,
        "messages": [conversation.user_message],
        "stream": True,
    }
    if progress:
        body["streamproxy"] = {"tool_progress": True}
    return body


def read_frames(result: StreamResult, frames: list[bytes]) -> None:
    """Record what each SSE frame carries."""
    for frame in frames:
        data = b"".join(
            line[5:].lstrip(b" ") for line in frame.split(b"\n") if line.startswith(b"data:")
        )
        if not data:
            continue  # a comment (keep-alive, tool progress for humans)
        if data == b"[DONE]":
            result.is_done = True
            continue
        payload = orjson.loads(data)
        if "error" in payload:
            result.errors.append(payload["error"])
            continue
        if "id" in payload:
            result.ids.add(payload["id"])
        extension = payload.get("streamproxy")
        if isinstance(extension, dict) and "tool_progress" in extension:
            progress = extension["tool_progress"]
            result.progress.append((progress["id"], progress["status"]))
        has_token = False
        for choice in payload.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if delta["content"].startswith("\n\n") and result.content:
                    result.round_starts.append(len(result.token_times))
                result.content.append(delta["content"])
                has_token = True
            if delta.get("reasoning_content"):
                result.reasoning.append(delta["reasoning_content"])
                has_token = True
            if delta.get("tool_calls"):
                result.leaked_tool_calls += 1
            if choice.get("finish_reason") is not None:
                result.finish_reasons.append(choice["finish_reason"])
        if has_token:
            result.token_times.append(time.perf_counter())


async def run_stream(
    client: httpx2.AsyncClient,
    url: str,
    conversation: Conversation,
    *,
    progress: bool = False,
) -> StreamResult:
    """One streaming request to ``url``'s ``/v1/chat/completions``, read to the end."""
    result = StreamResult(conversation)
    result.started = time.perf_counter()
    try:
        async with client.stream(
            "POST", f"{url}/v1/chat/completions", json=chat_body(conversation, progress=progress)
        ) as response:
            result.status = response.status_code
            if response.status_code != 200:
                result.failure = (
                    f"status {response.status_code}: {(await response.aread())[:300]!r}"
                )
                return result
            buffer = b""
            async for data in response.aiter_bytes():
                buffer += data
                *frames, buffer = buffer.split(b"\n\n")
                read_frames(result, frames)
            if buffer.strip():
                result.failure = f"the body ended inside a frame: {buffer[:100]!r}"
    except httpx2.HTTPError as error:
        result.failure = f"{type(error).__name__}: {error}"
    return result


def check(result: StreamResult, *, through_proxy: bool) -> list[str]:
    """Every way ``result`` differs from what its conversation says the client must see."""
    expected = result.conversation
    problems: list[str] = []
    if result.failure:
        problems.append(result.failure)
    if result.errors:
        problems.append(f"error frames: {result.errors}")
    content = "".join(result.content)
    if content != expected.content:
        at = next(
            (i for i, (a, b) in enumerate(zip(content, expected.content, strict=False)) if a != b),
            min(len(content), len(expected.content)),
        )
        problems.append(
            f"content differs at {at}: got {content[at : at + 30]!r}, "
            f"want {expected.content[at : at + 30]!r} ({len(content)} vs {len(expected.content)})"
        )
    if "".join(result.reasoning) != expected.reasoning:
        problems.append(f"reasoning {''.join(result.reasoning)!r} != {expected.reasoning!r}")
    if result.finish_reasons != ["stop"]:
        problems.append(f"finish reasons {result.finish_reasons}")
    if not result.is_done:
        problems.append("no [DONE]")
    if through_proxy:
        if len(result.ids) != 1:
            problems.append(f"completion ids {sorted(result.ids)}")
        if result.leaked_tool_calls:
            problems.append(f"{result.leaked_tool_calls} tool_calls deltas leaked")
        if expected.kind == "tool" and result.progress:
            want = [(expected.tool_call_id, "started"), (expected.tool_call_id, "ok")]
            if result.progress != want:
                problems.append(f"tool progress {result.progress}")
    return problems


def client_limits(concurrency: int) -> httpx2.Limits:
    return httpx2.Limits(max_connections=concurrency + 16, max_keepalive_connections=concurrency)


async def run_load(
    url: str,
    conversations: Sequence[Conversation],
    *,
    progress: bool = False,
    pid: int | None = None,
) -> tuple[list[StreamResult], float, int]:
    """All ``conversations`` at once; (results, wall seconds, peak RSS of ``pid`` in bytes)."""
    peak = 0

    async def sample() -> None:
        nonlocal peak
        while True:
            if pid is not None:
                peak = max(peak, rss(pid))
            await asyncio.sleep(0.02)

    async with httpx2.AsyncClient(
        timeout=httpx2.Timeout(60.0), limits=client_limits(len(conversations))
    ) as client:
        sampler = asyncio.create_task(sample())
        started = time.perf_counter()
        results = await asyncio.gather(
            *(run_stream(client, url, item, progress=progress) for item in conversations)
        )
        wall = time.perf_counter() - started
        sampler.cancel()
    return list(results), wall, peak


def rss(pid: int, field_name: str = "VmRSS") -> int:
    """A memory figure of process ``pid`` from ``/proc/<pid>/status``, in bytes (0: gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


# ---------------------------------------------------------------------------------- processes


def write_inputs(directory: Path, mix: Mix) -> Path:
    """Write the cassette and the tools module into ``directory``; return the cassette."""
    cassette = directory / "load.cassette.json"
    dump(mix.cassette(), cassette)
    (directory / "load_tools.py").write_text(textwrap.dedent(TOOLS_MODULE))
    (directory / "relay_app.py").write_text(textwrap.dedent(RELAY_APP))
    return cassette


def replay_command(cassette: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamproxy",
        "replay",
        str(cassette),
        "--port",
        "0",
        "--match",
        "messages",
        "--timing",
        "recorded",
    ]


def proxy_command(upstream: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamproxy",
        "serve",
        "--upstream",
        upstream + "/v1",
        "--tools",
        "load_tools:TOOLS",
        "--port",
        "0",
        "--log-level",
        "warning",
        *extra,
    ]


# ---------------------------------------------------------------------------------- the table


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass(frozen=True, slots=True)
class Row:
    path: str
    traffic: str
    streams: int
    errors: int
    wall: float
    tokens: int
    ttft_p50: float
    ttft_p99: float
    gap_p50: float
    gap_p99: float
    tool_gap_p50: float
    tool_gap_p99: float
    idle_rss: int
    peak_rss: int


def summarise(
    path: str,
    traffic: str,
    results: list[StreamResult],
    wall: float,
    idle: int,
    peak: int,
    *,
    through_proxy: bool,
) -> Row:
    failures = [
        problems for result in results if (problems := check(result, through_proxy=through_proxy))
    ]
    for problems in failures[:3]:
        print(f"  {path} {traffic}: {problems}", file=sys.stderr)
    ttfts = [result.ttft for result in results if result.ttft is not None]
    gaps: list[float] = []
    tool_gaps: list[float] = []
    for result in results:
        times = result.token_times
        for index in range(1, len(times)):
            gap = times[index] - times[index - 1]
            (tool_gaps if index in result.round_starts else gaps).append(gap)
    return Row(
        path=path,
        traffic=traffic,
        streams=len(results),
        errors=len(failures),
        wall=wall,
        tokens=sum(len(result.token_times) for result in results),
        ttft_p50=percentile(ttfts, 0.5),
        ttft_p99=percentile(ttfts, 0.99),
        gap_p50=percentile(gaps, 0.5),
        gap_p99=percentile(gaps, 0.99),
        tool_gap_p50=percentile(tool_gaps, 0.5),
        tool_gap_p99=percentile(tool_gaps, 0.99),
        idle_rss=idle,
        peak_rss=peak,
    )


def mib(value: float) -> str:
    return f"{value / 1024 / 1024:.1f}"


async def open_streams(
    url: str, conversations: Sequence[Conversation], pid: int
) -> tuple[int, int, int]:
    """Open every stream, wait until each got its first token, and hold them.

    Returns (RSS before, RSS with all open, RSS after they were all closed), in bytes.
    """
    before = rss(pid)
    first_tokens = 0
    all_open = asyncio.Event()

    async def hold(client: httpx2.AsyncClient, conversation: Conversation) -> None:
        nonlocal first_tokens
        async with client.stream(
            "POST", f"{url}/v1/chat/completions", json=chat_body(conversation, progress=False)
        ) as response:
            response.raise_for_status()
            async for data in response.aiter_bytes():
                if b'"content":"h' in data:
                    first_tokens += 1
                    if first_tokens == len(conversations):
                        all_open.set()
                    await asyncio.Event().wait()  # hold the stream open until cancelled

    async with httpx2.AsyncClient(
        timeout=httpx2.Timeout(HOLD_MS / 1000), limits=client_limits(len(conversations))
    ) as client:
        tasks = [asyncio.create_task(hold(client, item)) for item in conversations]
        waiter = asyncio.create_task(all_open.wait())
        done, _ = await asyncio.wait(
            {waiter, *tasks}, timeout=60, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter not in done:
            failed = [task for task in done if task.exception() is not None]
            raise RuntimeError(f"not every stream opened: {failed[:1]}")
        await asyncio.sleep(1.0)  # let buffers settle
        during = rss(pid)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(2.0)
    return before, during, rss(pid)


def run_bench(args: argparse.Namespace) -> str:
    directory = Path(tempfile.mkdtemp(prefix="bench_load_"))
    mix = build_mix(plain=args.streams // 2, tool=args.streams // 2, held=args.streams)
    cassette = write_inputs(directory, mix)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DEEPSEEK_API_KEY", None)
    servers: list[Server] = []

    def start(command: list[str]) -> Server:
        server = Server(command, cwd=directory, env=env)
        servers.append(server)
        return server

    rows: list[Row] = []
    per_stream: list[tuple[str, int, int, int]] = []
    try:
        replay = start(replay_command(cassette))
        commands = {
            "relay": [sys.executable, "relay_app.py", replay.url + "/v1"],
            "proxy": proxy_command(replay.url),
        }
        plain = [mix.plain[i % len(mix.plain)] for i in range(args.streams)]
        paths = [
            ("direct", plain, "plain", False),
            ("relay", plain, "plain", False),
            ("proxy", plain, "plain", True),
            ("proxy", mix.alternating(args.streams), "mix (½ tool loops)", True),
        ]
        for _ in range(args.repeats):
            for name, traffic, label, through_proxy in paths:
                # a fresh relay or proxy process per run, so its peak RSS is this run's
                server = replay if name == "direct" else start(commands[name])
                asyncio.run(run_load(server.url, traffic[:20]))  # warm up
                idle = rss(server.process.pid)
                results, wall, peak = asyncio.run(
                    run_load(server.url, traffic, progress=through_proxy, pid=server.process.pid)
                )
                if server is not replay:
                    server.stop()
                row = summarise(name, label, results, wall, idle, peak, through_proxy=through_proxy)
                rows.append(row)
                print(f"  {row}", file=sys.stderr)
        for name, command in commands.items():
            server = start(command)
            asyncio.run(run_load(server.url, mix.plain[:20]))  # warm up
            before, during, after = asyncio.run(
                open_streams(server.url, mix.held, server.process.pid)
            )
            server.stop()
            per_stream.append((name, before, during, after))
            print(f"  open streams {name}: {before} {during} {after}", file=sys.stderr)
    finally:
        for server in servers:
            server.stop()
    return load_table(rows, per_stream, args)


def load_table(
    rows: list[Row], per_stream: list[tuple[str, int, int, int]], args: argparse.Namespace
) -> str:
    lines = [
        f"Date: {datetime.date.today().isoformat()}; machine: {platform.machine()}, "
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; {args.streams} concurrent streams per run, "
        f"best run of {args.repeats} by wall time; load average at start: {_load_average()}.",
        "",
        "| path | traffic | streams | errors (all runs) | wall (s) | streams/s | tokens/s "
        "| TTFT p50 / p99 (ms) | per-chunk gap p50 / p99 (ms) | tool round gap p50 / p99 (ms) "
        "| RSS idle → peak (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    best: dict[tuple[str, str], Row] = {}
    for row in rows:
        key = (row.path, row.traffic)
        if key not in best or row.wall < best[key].wall:
            best[key] = row
    for key, row in best.items():
        runs = [other for other in rows if (other.path, other.traffic) == key]
        errors = f"{sum(other.errors for other in runs)} of {sum(other.streams for other in runs)}"
        tool_gap = (
            f"{row.tool_gap_p50 * 1000:.0f} / {row.tool_gap_p99 * 1000:.0f}"
            if row.tool_gap_p50 == row.tool_gap_p50  # not NaN: the traffic had tool rounds
            else "—"
        )
        memory = (
            f"{mib(row.idle_rss)} → {mib(row.peak_rss)}" if row.path != "direct" else "(upstream)"
        )
        lines.append(
            f"| {row.path} | {row.traffic} | {row.streams} | {errors} | {row.wall:.2f} "
            f"| {row.streams / row.wall:.0f} | {row.tokens / row.wall:,.0f} "
            f"| {row.ttft_p50 * 1000:.0f} / {row.ttft_p99 * 1000:.0f} "
            f"| {row.gap_p50 * 1000:.2f} / {row.gap_p99 * 1000:.1f} | {tool_gap} | {memory} |"
        )
    lines += [
        "",
        f"Memory per open stream ({args.streams} streams held open after their first token):",
        "",
        "| path | RSS before (MiB) | RSS with all open (MiB) | per open stream (KiB) "
        "| RSS after closing (MiB) |",
        "|---|---|---|---|---|",
    ]
    for name, before, during, after in per_stream:
        lines.append(
            f"| {name} | {mib(before)} | {mib(during)} "
            f"| {(during - before) / args.streams / 1024:.1f} | {mib(after)} |"
        )
    return "\n".join(lines)


def _load_average() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


# ---------------------------------------------------------------------------------- soak


async def soak(
    proxy_url: str, replay_url: str, pid: int, mix: Mix, args: argparse.Namespace
) -> tuple[list[tuple[float, int]], int, int, dict[str, object]]:
    """``args.soak`` seconds of traffic.

    Returns the RSS samples, the streams checked and failed, and the proxy's diagnostics two
    seconds after the traffic stopped.
    """
    deadline = time.monotonic() + args.soak
    samples: list[tuple[float, int]] = []
    tasks: list[int] = []
    checked = failed = 0
    failures: list[str] = []
    started = time.monotonic()

    async def worker(pool: list[Conversation], offset: int) -> None:
        nonlocal checked, failed
        position = offset
        async with httpx2.AsyncClient(timeout=httpx2.Timeout(120.0)) as client:
            while time.monotonic() < deadline:
                conversation = pool[position % len(pool)]
                position += 1
                result = await run_stream(client, proxy_url, conversation, progress=True)
                problems = check(result, through_proxy=True)
                checked += 1
                if problems:
                    failed += 1
                    if len(failures) < 5:
                        failures.append(f"{conversation.name}: {problems}")

    async def sampler() -> None:
        async with httpx2.AsyncClient() as client:
            while time.monotonic() < deadline:
                diagnostics = (await client.get(f"{proxy_url}{DIAGNOSTICS}")).json()
                tasks.append(int(diagnostics["asyncio_tasks"]))
                samples.append((time.monotonic() - started, rss(pid)))
                # the replay server keeps every request for inspection; keep it small
                await client.delete(f"{replay_url}/_streamproxy/requests")
                await asyncio.sleep(args.sample_every)

    mixed = mix.alternating(len(mix.plain) + len(mix.tool))
    workers = [worker(mixed, i * 7) for i in range(args.soak_concurrency)]
    workers += [worker(mix.paced, i) for i in range(len(mix.paced))]
    await asyncio.gather(sampler(), *workers)
    samples.append((time.monotonic() - started, rss(pid)))
    await asyncio.sleep(2.0)
    async with httpx2.AsyncClient() as client:
        after = (await client.get(f"{proxy_url}{DIAGNOSTICS}")).json()
    after["asyncio_tasks_under_load_max"] = max(tasks, default=0)
    after["rss_after_idle"] = rss(pid)
    for line in failures:
        print("  soak failure:", line, file=sys.stderr)
    return samples, checked, failed, after


def slope_per_minute(samples: Sequence[tuple[float, int]]) -> float:
    """Least-squares slope of RSS over time, bytes per minute."""
    if len(samples) < 2:
        return 0.0
    times = [moment for moment, _ in samples]
    values = [float(value) for _, value in samples]
    mean_t, mean_v = statistics.fmean(times), statistics.fmean(values)
    numerator = sum((t - mean_t) * (v - mean_v) for t, v in zip(times, values, strict=True))
    denominator = sum((t - mean_t) ** 2 for t in times)
    return numerator / denominator * 60 if denominator else 0.0


def run_soak(args: argparse.Namespace) -> str:
    directory = Path(tempfile.mkdtemp(prefix="bench_soak_"))
    mix = build_mix(plain=40, tool=40, paced=args.paced, pace_ms=200.0, paced_pieces=100)
    cassette = write_inputs(directory, mix)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DEEPSEEK_API_KEY", None)
    replay = Server(replay_command(cassette), cwd=directory, env=env)
    try:
        proxy = Server(proxy_command(replay.url, "--diagnostics"), cwd=directory, env=env)
        try:
            samples, checked, failed, after = asyncio.run(
                soak(proxy.url, replay.url, proxy.process.pid, mix, args)
            )
        finally:
            proxy.stop()
    finally:
        replay.stop()
    if args.samples:
        args.samples.write_text(orjson.dumps({"samples": samples, "after": after}).decode())
    return soak_table(samples, checked, failed, after, args)


def soak_table(
    samples: list[tuple[float, int]],
    checked: int,
    failed: int,
    after: dict[str, object],
    args: argparse.Namespace,
) -> str:
    warm = [sample for sample in samples if sample[0] >= args.warmup] or samples
    values = [value for _, value in warm]
    first_half = values[: len(values) // 2] or values
    second_half = values[len(values) // 2 :] or values
    slope = slope_per_minute(warm)
    growth = max(second_half) - max(first_half)
    is_flat = abs(slope) * 10 < 2 * 1024 * 1024 and growth < 2 * 1024 * 1024
    lines = [
        f"Date: {datetime.date.today().isoformat()}; machine: {platform.machine()}, "
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; {args.soak:.0f} s; "
        f"{args.soak_concurrency} clients looping over plain streams and tool loops, "
        f"{args.paced} clients on paced streams (100 pieces, 200 ms apart); RSS of the proxy "
        f"sampled every {args.sample_every:g} s ({len(samples)} samples).",
        "",
        "| streams checked | failed | RSS start (MiB) | RSS at warm-up end (MiB) "
        "| RSS end (MiB) | RSS max (MiB) | slope after warm-up (KiB/min) "
        "| max 2nd half − max 1st half (KiB) | flat |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {checked:,} | {failed} | {mib(samples[0][1])} | {mib(warm[0][1])} "
        f"| {mib(samples[-1][1])} | {mib(max(value for _, value in samples))} "
        f"| {slope / 1024:+.1f} | {growth / 1024:+.0f} | {'yes' if is_flat else '**no**'} |",
        "",
        f"Flat means: after a {args.warmup:g} s warm-up, the fitted slope projects less than "
        "2 MiB over 10 minutes, and the second half's peak is within 2 MiB of the first half's.",
        "",
        f"Two seconds after the traffic stopped (`/_streamproxy/diagnostics`): "
        f"{after.get('active_requests')} active requests, "
        f"{after.get('open_upstream_responses')} open upstream responses, "
        f"{after.get('running_tools')} running tools, {after.get('asyncio_tasks')} asyncio tasks "
        f"(at most {after.get('asyncio_tasks_under_load_max')} under load); RSS "
        f"{mib(float(str(after.get('rss_after_idle', 0))))} MiB.",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- README

README = Path(__file__).resolve().parent / "README.md"
SECTION = "## Load and soak"
SECTION_INTRO = """`.venv/bin/python -m benchmarks.bench_load [--write]` and
`.venv/bin/python -m benchmarks.bench_load --soak 600 [--write]` (issue 5).

One `streamproxy serve` process (one worker) in front of one `streamproxy replay` process
(`--match messages`), with the minimal byte relay of `bench_proxy.py` and the replay server
itself (direct) side by side, all on 127.0.0.1, driven by one httpx client process. Every stream
is checked against the cassette (`check`): content and reasoning exactly, one `finish_reason`,
`[DONE]`, no leaked server call, tool progress `started` then `ok` once; "errors" counts streams
that failed any check. TTFT: request sent to the first frame carrying content or reasoning.
Per-chunk gap: time between consecutive token-bearing frames of one stream. RSS: the serving
process's `VmRSS`, sampled every 20 ms. Client, servers and upstream share the machine's cores:
read the ratios."""


def write_section(part: str, text: str) -> None:
    """Replace ``### part`` under ``## Load and soak`` in the README (only that block)."""
    readme = README.read_text() if README.exists() else "# Benchmarks\n"
    if SECTION + "\n" not in readme:
        readme = readme.rstrip("\n") + f"\n\n{SECTION}\n\n{SECTION_INTRO}\n"
    start = readme.index(SECTION + "\n")
    following = readme.find("\n## ", start + 1)
    end = len(readme) if following < 0 else following + 1
    section = readme[start:end].rstrip("\n") + "\n"
    heading = f"### {part}\n"
    block = f"{heading}\n{text.rstrip()}\n"
    if heading in section:
        position = section.index(heading)
        after = section.find("\n### ", position + 1)
        section = section[:position] + block + (section[after:] if after >= 0 else "")
    else:
        section += "\n" + block
    readme = readme[:start] + section + ("\n" + readme[end:] if end < len(readme) else "")
    README.write_text(readme)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=500, help="concurrent streams")
    parser.add_argument("--repeats", type=int, default=3, help="runs per path (best is shown)")
    parser.add_argument("--soak", type=float, metavar="SECONDS", help="run the soak instead")
    parser.add_argument("--soak-concurrency", type=int, default=48, help="looping soak clients")
    parser.add_argument("--paced", type=int, default=16, help="soak clients on paced streams")
    parser.add_argument("--sample-every", type=float, default=5.0, metavar="SECONDS")
    parser.add_argument("--warmup", type=float, default=60.0, metavar="SECONDS")
    parser.add_argument("--samples", type=Path, help="soak: write the RSS samples (JSON) here")
    parser.add_argument("--write", action="store_true", help="update benchmarks/README.md")
    args = parser.parse_args()
    if args.soak:
        text = run_soak(args)
        part = "Soak"
    else:
        text = run_bench(args)
        part = "Load"
    print(text)
    if args.write:
        write_section(part, text)


if __name__ == "__main__":
    main()
