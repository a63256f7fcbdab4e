"""Coalesced writes (``EventStreamResponse``): the client gets the same bytes as frame by frame.

Each case runs the whole app at the ASGI level (the messages it sends are recorded) twice, with
coalescing on and off, over the same upstream body cut into generated reads, and compares what a
client would receive. The per-request id, ``created`` and tool durations are normalised; nothing
else is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import re
from collections.abc import AsyncIterator

import httpx2
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamproxy.config import Config
from streamproxy.proxy import create_app
from streamproxy.proxy.response import MAX_PENDING_BYTES, EventStreamResponse
from streamproxy.proxy.tools import ToolSet, tool
from tests.proxy.helpers import (
    MODEL,
    AsgiClient,
    ScriptedUpstream,
    chat_scope,
    content_round,
    tool_round,
)

USER = [{"role": "user", "content": "What's the weather in Paris?"}]
CONFIG = Config(upstream_url="http://upstream.test/v1", api_key="sk-key", state_url="memory://")


@tool(read_only=True, timeout=2)
def get_weather(city: str) -> dict[str, object]:
    """Current weather in a city."""
    return {"city": city, "temperature_c": 24}


@dataclasses.dataclass
class Received:
    status: int
    bodies: list[bytes]
    is_closed: bool

    @property
    def raw(self) -> bytes:
        return b"".join(self.bodies)


async def call_app(
    upstream: ScriptedUpstream, body: dict[str, object], *, coalesce: bool, config: Config = CONFIG
) -> Received:
    """POST ``body`` to the app at the ASGI level; every message it sends, recorded."""
    app = create_app(config, tools=ToolSet([get_weather]), transport=upstream.transport())
    client = AsgiClient(orjson.dumps(body), leave_at_end=True)
    messages = client.sent
    scope = chat_scope((b"host", b"proxy.test"))
    previous = EventStreamResponse.coalesce
    EventStreamResponse.coalesce = coalesce
    try:
        await app(scope, client.receive, client.send)  # type: ignore[arg-type]
    finally:
        EventStreamResponse.coalesce = previous
    start = messages[0]
    bodies = [
        message["body"] for message in messages[1:] if message["type"] == "http.response.body"
    ]
    is_closed = messages[-1].get("more_body") is False
    return Received(int(start["status"]), [bytes(b) for b in bodies if b], is_closed)  # type: ignore[call-overload]


def normalised(raw: bytes) -> bytes:
    raw = re.sub(rb"chatcmpl-[0-9a-f]+", b"chatcmpl-ID", raw)
    raw = re.sub(rb'"created":\d+', b'"created":0', raw)
    raw = re.sub(rb'"duration_ms":[0-9.]+', b'"duration_ms":0', raw)
    return re.sub(rb" in \d+ ms", b" in N ms", raw)


def cut(body: bytes, points: list[int]) -> list[bytes]:
    edges = [0, *sorted({point % (len(body) + 1) for point in points}), len(body)]
    return [body[a:b] for a, b in itertools.pairwise(edges) if b > a]


def reads(pieces: list[bytes], pauses: list[bool]) -> AsyncIterator[bytes]:
    """The upstream body as ``pieces``; where ``pauses`` says so, the upstream goes quiet once
    (the proxy's reader blocks, so the writer runs before the next piece)."""

    async def body() -> AsyncIterator[bytes]:
        for number, piece in enumerate(pieces):
            if pauses and pauses[number % len(pauses)]:
                await asyncio.sleep(0)
            yield piece

    return body()


class Broken(httpx2.AsyncByteStream):
    """Sends ``pieces``, then fails like a dropped connection."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            await asyncio.sleep(0)
            yield piece
        raise httpx2.ReadError("connection reset by peer")


def rounds(scenario: str) -> list[list[bytes]]:
    if scenario == "content":
        return [content_round("|".join(f"w{i} " for i in range(40)), reasoning="think")]
    # a server tool round (progress frames, tool_progress extension), then the answer
    return [
        tool_round([("call_1", "get_weather", '{"city": "Paris"}')]),
        content_round("It is|24|degrees"),
    ]


async def both(
    scenario: str, points: list[int], pauses: list[bool], body: dict[str, object]
) -> tuple[Received, Received]:
    results = []
    for coalesce in (False, True):
        bodies = [b"".join(item) for item in rounds(scenario)]
        responses = [functools.partial(reads, cut(data, points), pauses) for data in bodies]
        upstream = ScriptedUpstream(list(responses))
        results.append(await call_app(upstream, body, coalesce=coalesce))
    return results[0], results[1]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    scenario=st.sampled_from(["content", "tool"]),
    points=st.lists(st.integers(min_value=0, max_value=20_000), max_size=60),
    pauses=st.lists(st.booleans(), max_size=8),
    progress=st.booleans(),
)
def test_same_bytes_for_any_upstream_reads(
    scenario: str, points: list[int], pauses: list[bool], progress: bool
) -> None:
    body: dict[str, object] = {
        "model": MODEL,
        "messages": USER,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if progress:
        body["streamproxy"] = {"tool_progress": True}
    plain, coalesced = asyncio.run(both(scenario, points, pauses, body))
    assert plain.status == coalesced.status == 200
    assert plain.is_closed and coalesced.is_closed
    assert normalised(coalesced.raw) == normalised(plain.raw)
    assert b"data: [DONE]" in plain.raw
    if scenario == "tool":
        assert b": tool get_weather ok" in plain.raw
        assert (b'"tool_progress"' in plain.raw) is progress
    # the first frame of the response is sent alone (the time to first token waits for nothing)
    assert normalised(coalesced.bodies[0]) == normalised(plain.bodies[0])
    assert len(coalesced.bodies) <= len(plain.bodies)


def test_a_burst_leaves_in_fewer_messages() -> None:
    # one read per upstream event, all ready at once (an HTTP chunk each, from one socket read):
    # frame by frame, one message per event; coalesced, the first frame alone, then the rest
    body = {"model": MODEL, "messages": USER, "stream": True}
    data = b"".join(rounds("content")[0])
    boundaries = [match.end() for match in re.finditer(rb"\n\n", data)]
    plain, coalesced = asyncio.run(both("content", boundaries, [], body))
    assert normalised(coalesced.raw) == normalised(plain.raw)
    assert len(plain.bodies) > 40
    assert len(coalesced.bodies) < len(plain.bodies) / 4


@pytest.mark.parametrize("coalesce", [False, True])
def test_an_upstream_failure_mid_stream_is_one_error_frame_after_the_frames(
    coalesce: bool,
) -> None:
    pieces = content_round("a|b|c|d")[:4]
    upstream = ScriptedUpstream(
        [httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=Broken(pieces))]
    )
    body = {"model": MODEL, "messages": USER, "stream": True}
    received = asyncio.run(call_app(upstream, body, coalesce=coalesce))
    frames = [frame for frame in received.raw.split(b"\n\n") if frame]
    assert frames[-1].startswith(b'data: {"error"')
    assert b"connection" in frames[-1]
    assert b'"content":"a"' in received.raw and b'"content":"c"' in received.raw
    assert received.is_closed


def test_keepalives_while_the_upstream_is_quiet_and_none_while_it_sends() -> None:
    async def slow() -> AsyncIterator[bytes]:
        pieces = content_round("a|b")
        yield pieces[0]
        await asyncio.sleep(0.35)
        for piece in pieces[1:]:
            yield piece

    config = dataclasses.replace(CONFIG, keepalive_interval=0.1)
    body = {"model": MODEL, "messages": USER, "stream": True}
    received = asyncio.run(call_app(ScriptedUpstream([slow]), body, coalesce=True, config=config))
    raw = received.raw
    # the role-only first event makes no frame: the quiet 0.35 s comes before the first frame
    quiet, frames = raw[: raw.index(b"data: ")], raw[raw.index(b"data: ") :]
    assert 2 <= quiet.count(b": keep-alive\n\n") <= 4
    assert quiet.replace(b": keep-alive\n\n", b"") == b""
    assert b"keep-alive" not in frames
    assert b'"content":"a"' in frames and b"[DONE]" in frames


@pytest.mark.parametrize("stuck_from", [1, 2])
def test_a_slow_client_holds_the_reader_back(stuck_from: int) -> None:
    # the client stops reading at its first body message (the reader, which sends the first
    # frame itself, waits in that send) or at its second (the writer waits in send with what
    # the buffer held, MAX_PENDING_BYTES; the reader stops once the buffer holds that again)
    frame = b"data: " + b"x" * 1000 + b"\n\n"
    made = 0
    bodies = 0

    async def frames() -> AsyncIterator[bytes]:
        nonlocal made
        while True:
            made += 1
            yield frame

    async def run() -> None:
        gate = asyncio.Event()
        disconnect = asyncio.Event()

        async def send(message: dict[str, object]) -> None:
            nonlocal bodies
            if message["type"] == "http.response.body":
                bodies += 1
                if bodies >= stuck_from:
                    await gate.wait()

        async def receive() -> dict[str, object]:
            await disconnect.wait()
            return {"type": "http.disconnect"}

        response = EventStreamResponse(frames(), keepalive_interval=60)  # type: ignore[arg-type]
        task = asyncio.create_task(response({}, receive, send))  # type: ignore[arg-type]
        for _ in range(50):
            await asyncio.sleep(0)
        disconnect.set()
        await task

    asyncio.run(run())
    if stuck_from == 1:
        assert made == 1
    else:
        bound = 2 * MAX_PENDING_BYTES / len(frame)
        assert bound <= made - 1 <= bound + 3


@pytest.mark.parametrize("coalesce", [True, False], ids=["coalesced", "frame-by-frame"])
def test_the_first_frame_of_a_burst_read_at_once_leaves_alone(coalesce: bool) -> None:
    # the whole answer in one upstream read: the first frame is handled and sent before the
    # events after it are parsed (one data line in the first message), the rest as before
    body = {"model": MODEL, "messages": USER, "stream": True}
    data = b"".join(rounds("content")[0])
    upstream = ScriptedUpstream([functools.partial(reads, [data], [])])
    received = asyncio.run(call_app(upstream, body, coalesce=coalesce))
    assert received.bodies[0].count(b"data: ") == 1
    assert b'"reasoning_content":"think"' in received.bodies[0]
    frame_by_frame = asyncio.run(
        both("content", [match.end() for match in re.finditer(rb"\n\n", data)], [], body)
    )[0]
    assert normalised(received.raw) == normalised(frame_by_frame.raw)
    if coalesce:
        assert len(received.bodies) == 2  # the first frame alone, then the rest in one


def test_the_first_frame_leaves_before_the_reader_makes_the_next() -> None:
    # a burst already read (the next frames are made without waiting): the first frame is sent
    # before the second is made, not after the reader has gone through the whole burst
    events: list[str] = []

    async def frames() -> AsyncIterator[bytes]:
        for number in range(3):
            events.append(f"made {number}")
            yield b"data: %d\n\n" % number

    async def run() -> None:
        async def send(message: dict[str, object]) -> None:
            body = message.get("body")
            if message["type"] == "http.response.body" and body:
                events.append(f"sent {body!r}")

        async def receive() -> dict[str, object]:
            await asyncio.Event().wait()
            return {"type": "http.disconnect"}

        response = EventStreamResponse(frames(), keepalive_interval=60)  # type: ignore[arg-type]
        await response({}, receive, send)  # type: ignore[arg-type]

    asyncio.run(run())
    assert events[:2] == ["made 0", "sent b'data: 0\\n\\n'"]
    assert events[-1] == "sent b'data: 1\\n\\ndata: 2\\n\\n'"  # the rest still coalesced


async def _respond(
    frames: AsyncIterator[bytes], *, fail_at: int = 0, leave: asyncio.Event | None = None
) -> list[dict[str, object]]:
    """Run an EventStreamResponse over ``frames``; its messages (``send`` raises OSError from
    body message ``fail_at`` on; the client disconnects when ``leave`` is set)."""
    sent: list[dict[str, object]] = []
    gone = leave or asyncio.Event()

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.body":
            bodies = sum(1 for item in sent if item["type"] == "http.response.body")
            if fail_at and bodies + 1 >= fail_at:
                raise OSError("the connection is closed")
        sent.append(message)

    async def receive() -> dict[str, object]:
        await gone.wait()
        return {"type": "http.disconnect"}

    response = EventStreamResponse(frames, keepalive_interval=60)  # type: ignore[arg-type]
    await asyncio.wait_for(response({}, receive, send), timeout=2)  # type: ignore[arg-type]
    return sent


def test_a_failed_send_stops_the_frames_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    closed = asyncio.Event()

    async def frames() -> AsyncIterator[bytes]:
        try:
            yield b"data: 1\n\n"
            await asyncio.sleep(0)
            yield b"data: 2\n\n"
            await asyncio.sleep(60)
            yield b"data: 3\n\n"
        finally:
            closed.set()

    sent = asyncio.run(_respond(frames(), fail_at=2))
    assert [m.get("body") for m in sent[1:]] == [b"data: 1\n\n"]
    assert closed.is_set()
    assert "the event stream failed" in caplog.text


def test_frames_that_fail_still_send_what_they_made(caplog: pytest.LogCaptureFixture) -> None:
    async def frames() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        yield b"data: 2\n\n"
        raise RuntimeError("a bug")

    sent = asyncio.run(_respond(frames()))
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b"data: 1\n\ndata: 2\n\n"  # type: ignore[misc]
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert "the event stream failed" in caplog.text and "a bug" in caplog.text


@pytest.mark.parametrize("before_the_first_frame", [True, False])
def test_a_client_that_leaves_stops_and_closes_the_frames(before_the_first_frame: bool) -> None:
    closed = asyncio.Event()

    async def run() -> list[dict[str, object]]:
        leave = asyncio.Event()

        async def frames() -> AsyncIterator[bytes]:
            try:
                if not before_the_first_frame:
                    yield b"data: 1\n\n"
                leave.set()
                await asyncio.sleep(60)  # the upstream is silent
                yield b"data: 2\n\n"
            finally:
                closed.set()

        return await _respond(frames(), leave=leave)

    sent = asyncio.run(run())
    assert closed.is_set()
    bodies = [m["body"] for m in sent if m["type"] == "http.response.body"]
    assert bodies == ([] if before_the_first_frame else [b"data: 1\n\n"])  # no final message
