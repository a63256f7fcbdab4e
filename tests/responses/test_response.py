"""The non-streaming ``response`` object, and what is stored for ``previous_response_id``."""

from __future__ import annotations

import orjson
from openai.types.responses import Response

from streamproxy.proxy.request import parse_request
from streamproxy.proxy.responses import (
    ResponsesEncoder,
    response_from_completion,
    responses_usage,
    stored_items,
    translate_request,
)
from streamproxy.proxy.tools import ToolSet
from tests.responses.helpers import MODEL, call_arguments, call_head, chunk, usage_chunk

TOOLS = [{"type": "function", "name": "weather", "parameters": {"type": "object"}}]


def completion(message: dict[str, object], finish: str) -> dict[str, object]:
    """A ``chat.completion`` as ``Turn.completion`` builds it."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1780000000,
        "model": MODEL,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": 40,
            "completion_tokens": 12,
            "total_tokens": 52,
            "prompt_tokens_details": {"cached_tokens": 32},
            "completion_tokens_details": {"reasoning_tokens": 6},
        },
    }


def test_a_completion_with_reasoning_and_text_becomes_a_response() -> None:
    request = translate_request(
        {"model": MODEL, "input": "Hi", "tools": TOOLS, "metadata": {"k": "v"}}
    )
    body = response_from_completion(
        completion(
            {"role": "assistant", "content": "Hello!", "reasoning_content": "Greet back."}, "stop"
        ),
        request,
        response_id="resp_fixed",
    )
    response = Response.model_validate(body)
    assert response.id == "resp_fixed"
    assert response.status == "completed"
    assert response.output_text == "Hello!"
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output[0].summary[0].text == "Greet back."  # type: ignore[union-attr]
    assert response.usage is not None
    assert (
        response.usage.input_tokens,
        response.usage.output_tokens,
        response.usage.total_tokens,
    ) == (40, 12, 52)
    assert response.usage.input_tokens_details.cached_tokens == 32
    assert response.usage.output_tokens_details.reasoning_tokens == 6
    assert response.metadata == {"k": "v"}
    assert response.tools[0].name == "weather"  # type: ignore[union-attr]
    assert response.created_at == 1780000000


def test_a_completion_with_tool_calls_becomes_function_call_items() -> None:
    request = translate_request({"model": MODEL, "input": "Hi", "tools": TOOLS})
    calls = [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
        },
        {
            "id": "call_b",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
        },
    ]
    response = Response.model_validate(
        response_from_completion(
            completion({"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"),
            request,
        )
    )
    assert [(item.call_id, item.arguments) for item in response.output] == [  # type: ignore[union-attr]
        ("call_a", '{"city":"Paris"}'),
        ("call_b", '{"city":"Oslo"}'),
    ]
    assert response.status == "completed"


def test_a_length_cut_completion_is_incomplete() -> None:
    request = translate_request({"model": MODEL, "input": "Hi"})
    response = Response.model_validate(
        response_from_completion(
            completion({"role": "assistant", "content": "Once"}, "length"), request
        )
    )
    assert response.status == "incomplete"
    assert (
        response.incomplete_details is not None
        and response.incomplete_details.reason == "max_output_tokens"
    )


def test_deepseek_usage_maps_cache_hits() -> None:
    usage = responses_usage(
        {
            "prompt_tokens": 10,
            "completion_tokens": 4,
            "total_tokens": 14,
            "prompt_cache_hit_tokens": 6,
        }
    )
    assert usage == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 6, "cache_write_tokens": 0},
        "output_tokens": 4,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 14,
    }


def test_stored_items_chain_a_function_call_round_trip() -> None:
    first = translate_request(
        {"model": MODEL, "input": "Weather in Paris?", "tools": TOOLS, "stream": True}
    )
    encoder = ResponsesEncoder(first)
    for item in [
        chunk({"role": "assistant", "reasoning_content": "Call the tool."}),
        call_head(0, "call_a", "weather"),
        call_arguments(0, '{"city": "Paris"}'),
        chunk({}, finish="tool_calls"),
        usage_chunk(10, 5),
    ]:
        encoder.feed(item)
    encoder.finish()
    kept = stored_items(first, encoder.response())
    assert [item["type"] for item in kept] == ["message", "reasoning", "function_call"]
    second = translate_request(
        {
            "model": MODEL,
            "previous_response_id": encoder.id,
            "input": [{"type": "function_call_output", "call_id": "call_a", "output": "18 C"}],
            "tools": TOOLS,
        },
        previous_items=orjson.loads(orjson.dumps(kept)),  # what a store gives back
    )
    assert second.chat_body["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "Call the tool.",
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "18 C"},
    ]


def test_the_chat_body_passes_the_chat_face_request_checks() -> None:
    request = translate_request(
        {
            "model": MODEL,
            "input": "Hi",
            "tools": TOOLS,
            "stream": True,
            "max_output_tokens": 99,
            "streamproxy": {"tool_progress": True},
        }
    )
    checked = parse_request(
        orjson.dumps(request.chat_body), server_tools=ToolSet(), is_deepseek=True, max_size=1 << 20
    )
    assert checked.is_streaming and checked.include_usage and checked.wants_tool_progress
    assert checked.client_tool_names == {"weather"}
    assert checked.max_tokens == 99


def test_the_sdk_reads_the_non_streaming_response() -> None:
    import importlib

    import openai

    http = importlib.import_module("httpx2" if openai.__version__ >= "3" else "httpx")
    request = translate_request({"model": MODEL, "input": "Hi"})
    body = response_from_completion(
        completion(
            {"role": "assistant", "content": "Hello!", "reasoning_content": "Greet."}, "stop"
        ),
        request,
    )
    client = openai.OpenAI(
        api_key="sk-test",
        base_url="http://proxy.test/v1",
        http_client=http.Client(
            transport=http.MockTransport(lambda _: http.Response(200, json=body))
        ),
    )
    response = client.responses.create(model=MODEL, input="Hi")
    assert response.output_text == "Hello!"
    assert response.id == body["id"]
