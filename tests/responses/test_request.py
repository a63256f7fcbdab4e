"""Responses request bodies -> chat-completions bodies."""

from __future__ import annotations

import pytest

from streamproxy.errors import RequestError, RequestTooLargeError
from streamproxy.proxy.responses import load_body, translate_request

MODEL = "deepseek-v4-flash"


def chat(**fields: object) -> dict[str, object]:
    return translate_request({"model": MODEL, **fields}).chat_body


def test_a_string_input_is_one_user_message_after_the_instructions() -> None:
    body = chat(input="Hello", instructions="Be brief.")
    assert body == {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
        ],
        "stream": False,
    }


def test_streaming_always_asks_for_usage() -> None:
    body = chat(input="Hi", stream=True)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_message_items_map_by_role_and_text_parts_join() -> None:
    body = chat(
        input=[
            {"role": "developer", "content": "Answer in French."},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "First line"},
                    {"type": "input_text", "text": "second line"},
                ],
            },
            {"role": "assistant", "content": [{"type": "output_text", "text": "Bonjour"}]},
            {"role": "user", "content": "Encore"},
        ]
    )
    assert body["messages"] == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "First line\nsecond line"},
        {"role": "assistant", "content": "Bonjour"},
        {"role": "user", "content": "Encore"},
    ]


def test_an_image_keeps_the_chat_part_form() -> None:
    body = chat(
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {
                        "type": "input_image",
                        "image_url": "data:image/png;base64,AAAA",
                        "detail": "low",
                    },
                ],
            }
        ]
    )
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"},
                },
            ],
        }
    ]


def test_reasoning_message_and_calls_merge_into_one_assistant_message() -> None:
    body = chat(
        input=[
            {"role": "user", "content": "Weather in Paris and Oslo?"},
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [{"type": "summary_text", "text": "Two calls."}],
            },
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Checking."}],
            },
            {
                "type": "function_call",
                "call_id": "call_a",
                "name": "weather",
                "arguments": '{"city":"Paris"}',
            },
            {
                "type": "function_call",
                "call_id": "call_b",
                "name": "weather",
                "arguments": '{"city":"Oslo"}',
            },
            {"type": "function_call_output", "call_id": "call_a", "output": "18 C"},
            {
                "type": "function_call_output",
                "call_id": "call_b",
                "output": [{"type": "input_text", "text": "9 C"}],
            },
        ]
    )
    assert body["messages"] == [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "reasoning_content": "Two calls.",
            "tool_calls": [
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
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "18 C"},
        {"role": "tool", "tool_call_id": "call_b", "content": "9 C"},
    ]


def test_reasoning_content_parts_win_over_the_summary() -> None:
    body = chat(
        input=[
            {"role": "user", "content": "Hi"},
            {
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": "short"}],
                "content": [{"type": "reasoning_text", "text": "the full thought"}],
            },
            {"role": "assistant", "content": "Hello"},
        ]
    )
    assert body["messages"][1] == {
        "role": "assistant",
        "content": "Hello",
        "reasoning_content": "the full thought",
    }  # type: ignore[index]


def test_flat_function_tools_become_chat_tools_and_strict_only_when_set() -> None:
    body = chat(
        input="Hi",
        tools=[
            {
                "type": "function",
                "name": "weather",
                "description": "Weather.",
                "parameters": {"type": "object"},
            },
            {"type": "function", "name": "time", "parameters": {"type": "object"}, "strict": True},
        ],
        tool_choice={"type": "function", "name": "weather"},
        parallel_tool_calls=False,
    )
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "Weather.",
                "parameters": {"type": "object"},
            },
        },
        {
            "type": "function",
            "function": {"name": "time", "parameters": {"type": "object"}, "strict": True},
        },
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert body["parallel_tool_calls"] is False


def test_allowed_tools_narrow_the_tool_list() -> None:
    tools = [
        {"type": "function", "name": name, "parameters": {"type": "object"}}
        for name in ("a", "b", "c")
    ]
    body = chat(
        input="Hi",
        tools=tools,
        tool_choice={
            "type": "allowed_tools",
            "mode": "required",
            "tools": [{"type": "function", "name": "b"}],
        },
    )
    assert [tool["function"]["name"] for tool in body["tools"]] == ["b"]  # type: ignore[attr-defined, index]
    assert body["tool_choice"] == "required"


def test_options_map_to_their_chat_names() -> None:
    body = chat(
        input="Hi",
        max_output_tokens=256,
        temperature=0.2,
        top_p=0.9,
        reasoning={"effort": "high", "summary": "auto"},
        text={
            "format": {
                "type": "json_schema",
                "name": "answer",
                "schema": {"type": "object"},
                "strict": True,
            }
        },
        user="u-1",
        streamproxy={"tool_progress": True},
        include=["reasoning.encrypted_content"],
        truncation="auto",
    )
    assert body["max_tokens"] == 256
    assert (body["temperature"], body["top_p"], body["user"]) == (0.2, 0.9, "u-1")
    assert body["reasoning_effort"] == "high"
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
    }
    assert body["streamproxy"] == {"tool_progress": True}
    assert "include" not in body and "truncation" not in body


def test_store_metadata_and_echo_are_surfaced() -> None:
    request = translate_request(
        {"model": MODEL, "input": "Hi", "store": False, "metadata": {"k": "v"}, "tools": []}
    )
    assert request.store is False
    assert request.metadata == {"k": "v"}
    assert request.echo["tool_choice"] == "auto"
    assert request.echo["parallel_tool_calls"] is True
    assert translate_request({"model": MODEL, "input": "Hi"}).store is True


def test_previous_items_come_before_the_new_input() -> None:
    previous = [
        {"type": "message", "role": "user", "content": "My name is Ada."},
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Hello Ada.", "annotations": []}],
        },
    ]
    request = translate_request(
        {
            "model": MODEL,
            "input": "What is my name?",
            "previous_response_id": "resp_1",
            "instructions": "Be kind.",
        },
        previous_items=previous,
    )
    assert request.chat_body["messages"] == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada."},
        {"role": "user", "content": "What is my name?"},
    ]
    assert request.previous_response_id == "resp_1"
    assert request.items[:2] == previous
    assert request.items[2] == {"type": "message", "role": "user", "content": "What is my name?"}


def test_an_item_reference_is_resolved_through_the_lookup() -> None:
    stored = {
        "msg_1": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Earlier"}],
        }
    }
    body = translate_request(
        {
            "model": MODEL,
            "input": [
                {"role": "user", "content": "a"},
                {"type": "item_reference", "id": "msg_1"},
                {"role": "user", "content": "b"},
            ],
        },
        find_item=stored.get,
    ).chat_body
    assert body["messages"][1] == {"role": "assistant", "content": "Earlier"}  # type: ignore[index]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"input": "Hi", "frobnicate": 1, "temprature": 1},
            "unknown request fields: frobnicate, temprature",
        ),
        (
            {"input": "Hi", "tools": [{"type": "web_search"}]},
            "tools of type 'web_search' are not supported",
        ),
        (
            {"input": [{"type": "computer_call_output", "call_id": "c"}]},
            "items of type 'computer_call_output'",
        ),
        ({"input": [{"type": "item_reference", "id": "msg_x"}]}, "the item 'msg_x' is not known"),
        (
            {"input": "Hi", "previous_response_id": "resp_gone"},
            "the previous response 'resp_gone' is not known",
        ),
        ({"input": "Hi", "background": True}, "background responses are not supported"),
        ({"input": "Hi", "conversation": "conv_1"}, "conversations are not supported"),
        (
            {
                "input": [
                    {"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}
                ]
            },
            "file ids",
        ),
        (
            {"input": [{"role": "system", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "take text only",
        ),
        ({"input": "Hi", "tool_choice": {"type": "web_search_preview"}}, "'tool_choice'"),
        (
            {"input": "Hi", "text": {"format": {"type": "grammar"}}},
            "'text.format' of type 'grammar'",
        ),
        ({"input": []}, "the request has no input"),
        ({"input": 7}, "'input' must be a string or a list"),
        (
            {"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
            "'call_id' and 'name'",
        ),
    ],
)
def test_refused_requests_say_why(fields: dict[str, object], message: str) -> None:
    with pytest.raises(RequestError, match=message.replace("(", r"\(")):
        translate_request({"model": MODEL, **fields})


def test_a_missing_model_is_refused() -> None:
    with pytest.raises(RequestError, match="'model' is required"):
        translate_request({"input": "Hi"})


def test_load_body_checks_size_and_shape() -> None:
    assert load_body(b'{"model": "m"}', max_size=100) == {"model": "m"}
    with pytest.raises(RequestTooLargeError):
        load_body(b'{"model": "m"}', max_size=5)
    with pytest.raises(RequestError, match="JSON object"):
        load_body(b"[1]", max_size=100)
    with pytest.raises(RequestError, match="not JSON"):
        load_body(b"{", max_size=100)
