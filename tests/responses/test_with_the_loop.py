"""The encoder fed what today's tool loop really sends: the chat face's client chunks.

A Responses body is translated, posted to ``/v1/chat/completions`` of the in-process app in
front of a scripted upstream, and the chunks (and error frames) it streams go through the
encoder; openai-python's accumulator then reads the result. This pins the contract between
``Turn``'s chunk dicts and ``ResponsesEncoder`` (tests/proxy/helpers.py builds the upstream).
"""

from __future__ import annotations

import pytest

from streamproxy.config import Config
from streamproxy.proxy.responses import ResponsesEncoder, translate_request
from streamproxy.proxy.tools import ToolSet, tool
from tests.proxy.helpers import (
    MODEL,
    ScriptedUpstream,
    chunk,
    content_round,
    post_stream,
    proxy_client,
    sse,
    tool_round,
)
from tests.responses.test_sdk import accumulate

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@tool(read_only=True)
def get_weather(city: str) -> dict[str, object]:
    """Current weather in a city."""
    return {"city": city, "temperature_c": 24}


@tool(needs_approval=True)
def write_note(title: str) -> str:
    """Save a note."""
    return f"saved {title}"


TOOLS = ToolSet([get_weather, write_note])
SHOW_MAP = {"type": "function", "name": "show_map", "parameters": {"type": "object"}}


async def run(upstream: ScriptedUpstream, body: dict[str, object]) -> bytes:
    request = translate_request({"model": MODEL, "stream": True, **body})
    config = Config(upstream_url="http://upstream.test/v1", approvals="client")
    async with proxy_client(upstream, tools=TOOLS, config=config) as client:
        result = await post_stream(client, request.chat_body)
    assert result.status == 200
    encoder = ResponsesEncoder(request)
    frames = encoder.start()
    for item in [*result.chunks, *result.errors]:
        frames += encoder.feed(item)
    frames += encoder.finish()
    return b"".join(frames)


async def test_a_server_tool_round_then_the_answer() -> None:
    upstream = ScriptedUpstream(
        [
            tool_round([("call_1", "get_weather", '{"city": "Paris"}')], reasoning="Look it up."),
            content_round("It is |24 C.", reasoning="Got it."),
        ]
    )
    raw = await run(
        upstream, {"input": "Weather in Paris?", "streamproxy": {"tool_progress": True}}
    )
    assert raw.count(b"event: streamproxy.tool_progress") == 2
    final = accumulate(raw)._completed_response
    assert final is not None
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.output[0].summary[0].text == "Look it up.\n\nGot it."  # type: ignore[union-attr]
    assert final.output_text == "It is 24 C."
    assert final.usage is not None and final.usage.input_tokens == 30  # both rounds summed


async def test_a_client_call_and_a_write_call_are_function_calls() -> None:
    upstream = ScriptedUpstream(
        [
            tool_round(
                [
                    ("call_map", "show_map", '{"place": "Paris"}'),
                    ("call_note", "write_note", '{"title": "trip"}'),
                ]
            )
        ]
    )
    raw = await run(upstream, {"input": "Map and note", "tools": [SHOW_MAP]})
    final = accumulate(raw)._completed_response
    assert final is not None
    calls = [item for item in final.output if item.type == "function_call"]
    assert [(call.name, call.arguments) for call in calls] == [
        ("show_map", '{"place": "Paris"}'),
        ("write_note", '{"title": "trip"}'),
    ]
    assert calls[0].call_id == "call_map"
    assert calls[1].call_id != "call_note"  # the signed approval id the client sends back


async def test_a_broken_upstream_fails_the_response() -> None:
    upstream = ScriptedUpstream([sse([chunk({"role": "assistant", "content": "Par"})], done=False)])
    raw = await run(upstream, {"input": "Hi"})
    assert b"event: error\n" in raw
    assert raw.rstrip().split(b"\n")[-2] == b"event: response.failed"
