"""The encoder's frames read by openai-python itself: its event types and its accumulator."""

from __future__ import annotations

import importlib

import openai
import orjson
import pytest
from openai.lib.streaming.responses._responses import ResponseStreamState

from streamproxy.errors import ToolRoundsExceededError
from tests.responses.helpers import (
    MODEL,
    call_arguments,
    call_head,
    chunk,
    encode,
    parse_frames,
    typed_events,
    types,
    usage_chunk,
)

PLAIN = [
    chunk({"role": "assistant", "content": "Hel"}),
    chunk({"content": "lo."}),
    chunk({}, finish="stop"),
    usage_chunk(12, 3, hit=8),
]
THINKING = [
    chunk({"role": "assistant", "reasoning_content": "The user "}),
    chunk({"reasoning_content": "greets."}),
    chunk({"content": "Hi!"}),
    chunk({}, finish="stop"),
    usage_chunk(20, 9, reasoning=5),
]
TWO_CALLS = [
    chunk({"role": "assistant", "reasoning_content": "Two cities."}),
    call_head(0, "call_a", "weather"),
    call_arguments(0, '{"city":'),
    call_arguments(0, ' "Paris"}'),
    call_head(1, "call_b", "weather"),
    call_arguments(1, '{"city": "Oslo"}'),
    chunk({}, finish="tool_calls"),
    usage_chunk(30, 14),
]


# openai-python 3.x takes an httpx2 client, 2.x (the version the project pins) an httpx one
http = importlib.import_module("httpx2" if openai.__version__ >= "3" else "httpx")


def client_for(raw: bytes, seen: list[dict[str, object]] | None = None) -> openai.OpenAI:
    def handler(request: object) -> object:
        if seen is not None:
            seen.append(orjson.loads(request.content))  # type: ignore[attr-defined]
        return http.Response(200, headers={"content-type": "text/event-stream"}, content=raw)

    return openai.OpenAI(
        api_key="sk-test",
        base_url="http://proxy.test/v1",
        http_client=http.Client(transport=http.MockTransport(handler)),
        max_retries=0,
    )


def accumulate(raw: bytes) -> ResponseStreamState[object]:
    state: ResponseStreamState[object] = ResponseStreamState(
        input_tools=openai.omit, text_format=openai.omit
    )
    for event in typed_events(raw):
        state.handle_event(event)
    return state


def test_every_frame_is_a_typed_event_with_consecutive_sequence_numbers() -> None:
    raw = encode(TWO_CALLS)
    frames = parse_frames(raw)
    assert [data["sequence_number"] for _, data in frames] == list(range(len(frames)))
    assert all(name == data["type"] for name, data in frames)
    assert len(typed_events(raw)) == len(frames)


def test_plain_text_follows_the_documented_sequence() -> None:
    assert types(encode(PLAIN)) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]


def test_plain_text_through_responses_stream() -> None:
    with client_for(encode(PLAIN)).responses.stream(model=MODEL, input="hi") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert deltas == ["Hel", "lo."]
    assert final.output_text == "Hello."
    assert final.status == "completed"
    assert final.usage is not None
    assert (final.usage.input_tokens, final.usage.output_tokens, final.usage.total_tokens) == (
        12,
        3,
        15,
    )
    assert final.usage.input_tokens_details.cached_tokens == 8


def test_reasoning_then_text() -> None:
    raw = encode(THINKING)
    with client_for(raw).responses.stream(model=MODEL, input="hi") as stream:
        summary = [
            event.delta for event in stream if event.type == "response.reasoning_summary_text.delta"
        ]
        final = stream.get_final_response()
    assert summary == ["The user ", "greets."]
    reasoning, message = final.output
    assert reasoning.type == "reasoning"
    assert [part.text for part in reasoning.summary] == ["The user greets."]
    assert message.type == "message" and final.output_text == "Hi!"
    assert final.usage is not None and final.usage.output_tokens_details.reasoning_tokens == 5
    assert types(raw)[2:6] == [
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
    ]


def test_one_call_with_argument_deltas() -> None:
    chunks = [
        call_head(0, "call_a", "weather"),
        call_arguments(0, '{"ci'),
        call_arguments(0, 'ty": "Rome"}'),
        chunk({}, finish="tool_calls"),
    ]
    with client_for(encode(chunks)).responses.stream(model=MODEL, input="hi") as stream:
        snapshots = [
            event.snapshot
            for event in stream
            if event.type == "response.function_call_arguments.delta"
        ]
        final = stream.get_final_response()
    assert snapshots == ['{"ci', '{"city": "Rome"}']
    (call,) = final.output
    assert call.type == "function_call"
    assert (call.call_id, call.name, call.arguments, call.status) == (
        "call_a",
        "weather",
        '{"city": "Rome"}',
        "completed",
    )


def test_two_calls_after_reasoning() -> None:
    final = accumulate(encode(TWO_CALLS))._completed_response
    assert final is not None
    kinds = [item.type for item in final.output]
    assert kinds == ["reasoning", "function_call", "function_call"]
    calls = [
        (item.call_id, item.arguments) for item in final.output if item.type == "function_call"
    ]
    assert calls == [("call_a", '{"city": "Paris"}'), ("call_b", '{"city": "Oslo"}')]


def test_create_stream_yields_typed_events() -> None:
    seen: list[dict[str, object]] = []
    events = list(
        client_for(encode(THINKING), seen).responses.create(model=MODEL, input="hi", stream=True)
    )
    assert seen[0]["stream"] is True
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "Hi!"


def test_an_error_mid_stream_raises_api_error_in_the_sdk() -> None:
    from streamproxy.proxy.responses import ResponsesEncoder
    from tests.responses.helpers import request

    encoder = ResponsesEncoder(request())
    frames = encoder.start() + encoder.feed(chunk({"content": "Partial"}))
    frames += encoder.error(ToolRoundsExceededError("the model kept calling tools"))
    raw = b"".join(frames)
    assert types(raw)[-2:] == ["error", "response.failed"]
    failed = typed_events(raw)[-1]
    assert failed.type == "response.failed"
    assert failed.response.status == "failed"
    assert failed.response.error is not None and "kept calling" in failed.response.error.message
    texts = []
    with pytest.raises(openai.APIError, match="kept calling"):
        for event in client_for(raw).responses.create(model=MODEL, input="hi", stream=True):
            if event.type == "response.output_text.delta":
                texts.append(event.delta)
    assert texts == ["Partial"]


def test_a_length_cut_ends_incomplete() -> None:
    raw = encode([chunk({"content": "Once upon"}), chunk({}, finish="length"), usage_chunk(5, 2)])
    events = typed_events(raw)
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "max_output_tokens"
    assert last.response.output[0].status == "incomplete"
    assert last.response.usage is not None and last.response.usage.output_tokens == 2
    with client_for(raw).responses.stream(model=MODEL, input="hi") as stream:
        assert [event.type for event in stream][-1] == "response.incomplete"


def test_tool_progress_passes_as_an_extension_event_the_sdk_tolerates() -> None:
    progress = {
        **chunk({}),
        "streamproxy": {"tool_progress": {"id": "c1", "name": "search", "status": "started"}},
    }
    raw = encode([progress, *PLAIN])
    name, data = parse_frames(raw)[2]
    assert name == "streamproxy.tool_progress"
    assert data["tool_progress"] == {"id": "c1", "name": "search", "status": "started"}
    with client_for(raw).responses.stream(model=MODEL, input="hi") as stream:
        assert stream.get_final_response().output_text == "Hello."


def test_a_refusal_is_a_refusal_part() -> None:
    raw = encode(
        [chunk({"refusal": "I can't "}), chunk({"refusal": "help."}), chunk({}, finish="stop")]
    )
    final = accumulate(raw)._completed_response
    assert final is not None
    (message,) = final.output
    assert message.type == "message"
    assert [(part.type, getattr(part, "refusal", None)) for part in message.content] == [
        ("refusal", "I can't help.")
    ]
    assert "response.refusal.done" in types(raw)


def test_tool_rounds_keep_the_order_of_the_turn() -> None:
    """Round 1 thinks and runs a server tool (progress only), round 2 thinks again and answers."""
    progress = {
        **chunk({}),
        "streamproxy": {"tool_progress": {"id": "s1", "name": "search", "status": "ok"}},
    }
    raw = encode(
        [
            chunk({"role": "assistant", "reasoning_content": "Search first."}),
            progress,
            chunk({"reasoning_content": "\n\nFound it."}),
            chunk({"content": "It is 18 C."}),
            chunk({"content": "\n\nAnything else?"}),
            chunk({}, finish="stop"),
            usage_chunk(50, 20),
        ]
    )
    final = accumulate(raw)._completed_response
    assert final is not None
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.output[0].summary[0].text == "Search first.\n\nFound it."  # type: ignore[union-attr]
    assert final.output_text == "It is 18 C.\n\nAnything else?"


def test_an_error_frame_dict_fails_the_response() -> None:
    from streamproxy.proxy.responses import ResponsesEncoder
    from tests.responses.helpers import request

    encoder = ResponsesEncoder(request())
    frames = encoder.feed(
        {"error": {"message": "boom", "type": "upstream_error", "code": "upstream_error"}}
    )
    assert types(b"".join(frames)) == [
        "response.created",
        "response.in_progress",
        "error",
        "response.failed",
    ]
    assert encoder.finish() == [] and encoder.error(ToolRoundsExceededError("late")) == []
    with pytest.raises(RuntimeError):
        encoder.feed(chunk({"content": "late"}))


def test_a_length_cut_marks_only_the_cut_item_incomplete() -> None:
    raw = encode(
        [
            chunk({"reasoning_content": "Plan."}),
            chunk({"content": "Once"}),
            chunk({}, finish="length"),
        ]
    )
    final = typed_events(raw)[-1]
    assert final.type == "response.incomplete"
    assert [(item.type, item.status) for item in final.response.output] == [
        ("reasoning", "completed"),
        ("message", "incomplete"),
    ]
