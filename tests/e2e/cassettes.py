"""Small synthetic cassettes for end-to-end tests: a two-round tool loop matched by the
conversation's shape (``streamproxy replay --match turn``).

``two_rounds(path, first, second)`` writes a cassette whose first request (a user message) gets
``first`` and whose request with a call and its ``tool`` result at the tail gets ``second``;
``frame``, ``tool_call`` and ``answer`` build the SSE frames.
"""

from __future__ import annotations

from pathlib import Path

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
DONE = b"data: [DONE]\n\n"


def frame(delta: dict[str, object], finish: str | None = None, usage: object = None) -> bytes:
    """One ``chat.completion.chunk`` frame."""
    chunk = {
        "id": "e2e",
        "object": "chat.completion.chunk",
        "created": 1780000000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        "usage": usage,
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def tool_call(
    name: str, arguments: str, *, call_id: str = "call_e2e", piece: int = 0, text: str = ""
) -> list[bytes]:
    """A round that (after ``text``) calls ``name``, its arguments in pieces of ``piece``."""
    head = {"index": 0, "id": call_id, "type": "function"}
    size = piece or len(arguments) or 1
    frames = [frame({"role": "assistant", "content": ""})]
    if text:
        frames.append(frame({"content": text}))
    frames.append(frame({"tool_calls": [{**head, "function": {"name": name, "arguments": ""}}]}))
    frames += [
        frame({"tool_calls": [{"index": 0, "function": {"arguments": arguments[i : i + size]}}]})
        for i in range(0, len(arguments), size)
    ]
    return [*frames, frame({}, "tool_calls"), DONE]


def answer(text: str) -> list[bytes]:
    """A round that answers ``text``, its ``|``-separated pieces one frame each."""
    pieces = [frame({"content": piece}) for piece in text.split("|")]
    return [frame({"role": "assistant", "content": ""}), *pieces, frame({}, "stop"), DONE]


def two_rounds(
    path: Path,
    first: list[bytes],
    second: list[bytes],
    *,
    source: str,
    step_ms: float = 1.0,
) -> None:
    """Write the two-round cassette (frames ``step_ms`` apart, for ``--timing recorded``)."""

    def response(frames: list[bytes]) -> RecordedResponse:
        chunks = [Chunk(step_ms * (index + 1), data) for index, data in enumerate(frames)]
        return RecordedResponse(
            status=200, headers={"content-type": "text/event-stream"}, chunks=chunks
        )

    def request(messages: list[dict[str, object]]) -> RecordedRequest:
        body = {"model": MODEL, "messages": messages, "stream": True}
        return RecordedRequest(method="POST", path="/chat/completions", body=body)

    user = {"role": "user", "content": "?"}
    tail = [user, {"role": "assistant"}, {"role": "tool"}]
    cassette = Cassette(
        source=f"{source} (synthetic)",
        interactions=[
            Interaction(request=request([user]), response=response(first)),
            Interaction(request=request(tail), response=response(second)),
        ],
    )
    dump(cassette, path)


def one_answer(path: Path, frames: list[bytes], *, step_ms: float = 1.0) -> None:
    """Write a cassette of one interaction, which answers every request with ``frames``."""
    chunks = [Chunk(step_ms * (index + 1), data) for index, data in enumerate(frames)]
    response = RecordedResponse(
        status=200, headers={"content-type": "text/event-stream"}, chunks=chunks
    )
    request = RecordedRequest(method="POST", path="/chat/completions", body={"model": MODEL})
    dump(Cassette(interactions=[Interaction(request=request, response=response)]), path)
