"""Small helpers shared by the core tests: feeding a stream in different ways."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from streamproxy.core import ChatStream, Event


def feed(
    body: bytes, pieces: Iterable[int] | None = None, **options: Any
) -> tuple[list[Event], ChatStream]:
    """Feed ``body`` cut at the given piece sizes (whole when None); return events and stream."""
    stream = ChatStream(**options)
    events: list[Event] = []
    if pieces is None:
        events += stream.receive_data(body)
    else:
        position = 0
        for size in pieces:
            events += stream.receive_data(body[position : position + size])
            position += size
        events += stream.receive_data(body[position:])
    events += stream.receive_eof()
    return events, stream


def feed_bytewise(body: bytes, **options: Any) -> tuple[list[Event], ChatStream]:
    """Feed ``body`` one byte at a time."""
    return feed(body, [1] * len(body), **options)


def sse(*payloads: object, done: bool = True) -> bytes:
    """An SSE body of ``data:`` events (dicts become JSON), with ``[DONE]`` unless told not."""
    frames = []
    for payload in payloads:
        data = payload if isinstance(payload, str) else orjson.dumps(payload).decode()
        frames.append(f"data: {data}\n\n")
    if done:
        frames.append("data: [DONE]\n\n")
    return "".join(frames).encode()


def chunk(
    delta: dict[str, Any] | None = None,
    *,
    finish: str | None = None,
    index: int = 0,
    usage: dict[str, Any] | None = None,
    id: str = "chatcmpl-1",
) -> dict[str, Any]:
    """A ``chat.completion.chunk`` with one choice."""
    payload: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "deepseek-v4-flash",
        "choices": [{"index": index, "delta": delta or {}, "finish_reason": finish}],
    }
    if usage is not None:
        payload["usage"] = usage
    return payload


def call_delta(
    index: int | None = None,
    id: str | None = None,
    name: str | None = None,
    arguments: str | None = None,
) -> dict[str, Any]:
    """One ``delta.tool_calls`` entry with only the given fields."""
    entry: dict[str, Any] = {}
    if index is not None:
        entry["index"] = index
    if id is not None:
        entry["id"] = id
    function: dict[str, Any] = {}
    if name is not None:
        function["name"] = name
    if arguments is not None:
        function["arguments"] = arguments
    if function:
        entry["function"] = function
    return entry


def of_type(events: Iterable[Event], kind: type) -> list[Any]:
    """The events of one type, in order."""
    return [event for event in events if isinstance(event, kind)]
