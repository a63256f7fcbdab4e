"""The built-in offline default: ``streamproxy serve`` with no key and no ``--upstream``.

The upstream is a cassette replayed in process (two interactions matched on the conversation's
shape: the model calls ``get_weather``, then answers from its result), with recorded pacing, and
the server tool is ``get_weather`` below, which answers from a table. Nothing touches the network,
so the README's first command works on a fresh machine.

The cassette is ``streamproxy/data/demo-tool-loop.cassette.json`` when the package ships it;
otherwise an equivalent one is built here.
"""

from __future__ import annotations

from importlib import resources

import orjson

from streamproxy.cassette.format import (
    Cassette,
    Chunk,
    Interaction,
    RecordedRequest,
    RecordedResponse,
)
from streamproxy.cassette.match import match_turn
from streamproxy.cassette.replay import ReplayTransport
from streamproxy.tools import ToolSet, tool

DEMO_UPSTREAM_URL = "https://offline-demo.streamproxy.invalid/v1"
DEMO_MODEL = "deepseek-v4-flash"
CASSETTE_NAME = "demo-tool-loop.cassette.json"

_WEATHER = {
    "paris": {"condition": "sunny", "temperature_c": 24},
    "london": {"condition": "light rain", "temperature_c": 16},
    "tokyo": {"condition": "cloudy", "temperature_c": 21},
}


@tool(read_only=True, timeout=5)
def get_weather(city: str) -> dict[str, object]:
    """Current weather for a city (offline demo data).

    Args:
        city: The city name, e.g. "Paris".
    """
    found = _WEATHER.get(city.strip().lower())
    if found is None:
        return {"city": city, "error": "no data for this city in the offline demo"}
    return {"city": city, **found}


def demo_tools() -> ToolSet:
    """The demo's server tools."""
    return ToolSet([get_weather])


def demo_transport() -> ReplayTransport:
    """The replay transport standing in for the upstream."""
    bundled = resources.files("streamproxy") / "data" / CASSETTE_NAME
    if bundled.is_file():
        return ReplayTransport(str(bundled), timing="recorded", matcher=match_turn)
    return ReplayTransport(built_in_cassette(), timing="recorded", matcher=match_turn)


def built_in_cassette() -> Cassette:
    """Two DeepSeek-shaped interactions: a ``get_weather`` call, then the answer."""
    first = _stream(
        [
            {"role": "assistant", "content": ""},
            {"reasoning_content": "The user wants the weather; I will call get_weather."},
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_00_demo",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            },
            {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
        ],
        finish="tool_calls",
        usage=(120, 24, 9),
    )
    answer = "It is sunny in Paris right now, at 24 °C. A good day to be outside!"
    words = answer.split(" ")
    second = _stream(
        [
            {"role": "assistant", "content": ""},
            {"reasoning_content": "The tool says sunny and 24 °C."},
            *(_content(word + (" " if i < len(words) - 1 else "")) for i, word in enumerate(words)),
        ],
        finish="stop",
        usage=(170, 30, 8),
    )
    user: dict[str, object] = {"role": "user", "content": "What's the weather in Paris?"}
    assistant: dict[str, object] = {"role": "assistant", "content": "", "tool_calls": []}
    tool_result: dict[str, object] = {"role": "tool", "tool_call_id": "call_00_demo", "content": ""}
    return Cassette(
        source="built in: streamproxy.demo (synthetic, DeepSeek-shaped)",
        interactions=[
            Interaction(request=_request([user]), response=first),
            Interaction(request=_request([user, assistant, tool_result]), response=second),
        ],
    )


def _content(text: str) -> dict[str, object]:
    return {"content": text}


def _request(messages: list[dict[str, object]]) -> RecordedRequest:
    return RecordedRequest(
        method="POST",
        path="/chat/completions",
        headers={"content-type": "application/json"},
        body={"model": DEMO_MODEL, "messages": messages, "stream": True},
    )


def _stream(
    deltas: list[dict[str, object]], *, finish: str, usage: tuple[int, int, int]
) -> RecordedResponse:
    prompt, completion, reasoning = usage
    chunks: list[Chunk] = []
    offset = 180.0  # time to first byte
    for delta in [*deltas, {"content": ""}]:
        is_last = delta == {"content": ""}
        payload: dict[str, object] = {
            "id": "demo-completion",
            "object": "chat.completion.chunk",
            "created": 1780000000,
            "model": DEMO_MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish if is_last else None}],
            "usage": None,
        }
        if is_last:
            payload["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": 64},
                "prompt_cache_hit_tokens": 64,
                "prompt_cache_miss_tokens": prompt - 64,
                "completion_tokens_details": {"reasoning_tokens": reasoning},
            }
        chunks.append(Chunk(offset, b"data: " + orjson.dumps(payload) + b"\n\n"))
        offset += 35.0
    chunks.append(Chunk(offset, b"data: [DONE]\n\n"))
    return RecordedResponse(
        status=200, headers={"content-type": "text/event-stream; charset=utf-8"}, chunks=chunks
    )


def demo_models() -> dict[str, object]:
    """The model list the demo reports."""
    return {
        "object": "list",
        "data": [{"id": DEMO_MODEL, "object": "model", "created": 0, "owned_by": "offline-demo"}],
    }


__all__ = [
    "DEMO_UPSTREAM_URL",
    "built_in_cassette",
    "demo_models",
    "demo_tools",
    "demo_transport",
    "get_weather",
]
