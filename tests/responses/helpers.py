"""Chunk dicts shaped like the tool loop's client chunks, and readers of Responses frames."""

from __future__ import annotations

import typing
from collections.abc import Iterable, Sequence

import orjson
import pydantic
from openai.types.responses import ResponseStreamEvent

from streamproxy.proxy.responses import ResponsesEncoder, ResponsesRequest, translate_request

MODEL = "deepseek-v4-flash"
EVENT_CLASSES: dict[str, type[pydantic.BaseModel]] = {
    typing.get_args(member.model_fields["type"].annotation)[0]: member
    for member in typing.get_args(typing.get_args(ResponseStreamEvent)[0])
}
"""openai-python's event classes by their ``type`` (validated one by one: clearer failures)."""


def chunk(delta: dict[str, object], *, finish: str | None = None) -> dict[str, object]:
    """A ``chat.completion.chunk`` as ``Turn._chunk_dict`` builds it."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1780000000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def usage_chunk(
    prompt: int, completion: int, *, hit: int = 0, reasoning: int = 0
) -> dict[str, object]:
    """The usage chunk of ``Turn.final_frames`` (DeepSeek usage fields)."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1780000000,
        "model": MODEL,
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_cache_hit_tokens": hit,
            "prompt_cache_miss_tokens": prompt - hit,
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        },
    }


def call_head(index: int, call_id: str, name: str) -> dict[str, object]:
    entry = {
        "index": index,
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": ""},
    }
    return chunk({"tool_calls": [entry]})


def call_arguments(index: int, fragment: str) -> dict[str, object]:
    return chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})


def request(**fields: object) -> ResponsesRequest:
    body: dict[str, object] = {"model": MODEL, "input": "hi", "stream": True, **fields}
    return translate_request(body)


def encode(
    chunks: Iterable[dict[str, object]], *, ending: str = "finish", **fields: object
) -> bytes:
    """Every frame the encoder makes for ``chunks``, then ``finish()`` (or nothing)."""
    encoder = ResponsesEncoder(request(**fields))
    frames = encoder.start()
    for item in chunks:
        frames += encoder.feed(item)
    if ending == "finish":
        frames += encoder.finish()
    return b"".join(frames)


def parse_frames(raw: bytes) -> list[tuple[str, dict[str, object]]]:
    """(event name, data) for every SSE frame; each frame must be ``event:`` then ``data:``."""
    frames = []
    for block in raw.split(b"\n\n"):
        if not block:
            continue
        lines = block.split(b"\n")
        assert (
            len(lines) == 2 and lines[0].startswith(b"event: ") and lines[1].startswith(b"data: ")
        )
        frames.append((lines[0][7:].decode(), orjson.loads(lines[1][6:])))
    return frames


def typed_events(raw: bytes) -> list[ResponseStreamEvent]:
    """The frames validated against openai-python's event union (extension events skipped)."""
    return [
        EVENT_CLASSES[name].model_validate(data)  # type: ignore[misc]
        for name, data in parse_frames(raw)
        if not name.startswith("streamproxy.")
    ]


def types(raw: bytes) -> Sequence[str]:
    return [name for name, _ in parse_frames(raw)]
