"""Every real recording of ``../shared/recordings`` assembles to its ``expected`` result.

``expected`` is a deliberately naive accumulation (the corpus README says how it was computed).
Where streamproxy's reading differs on purpose, the comparison below adapts ``expected`` and says
why, each time:

- blank tool arguments are ``{}``: a no-argument tool sends ``""`` (ANCHORS B.15), and ``""`` is
  not a JSON object a client could send back;
- an empty tool-call id is replaced by a stable generated one (ANCHORS B.8), or the next request's
  ``tool_call_id`` could not name the call;
- ``reasoning`` and ``reasoning_content`` are one reasoning text, sent back as
  ``reasoning_content`` (ANCHORS B.39); ``""`` is not reasoning (B.40);
- Mistral's ``delta.content`` lists are content (``text`` parts) and reasoning (``thinking``
  parts); the naive reading skips them;
- the role defaults to ``assistant`` when a stream never sends one (Mistral's GLM stream).
"""

from __future__ import annotations

from typing import Any

import pytest

from streamproxy.core import (
    StreamEnded,
    ToolCallInvalid,
    ToolCallReady,
    UpstreamErrorReported,
)
from streamproxy.core.anthropic import STOP_REASONS
from tests.corpus import Recording, corpus_params, load
from tests.helpers import feed, of_type


def _expected_arguments(arguments: str) -> str:
    return arguments if arguments.strip() else "{}"


def _check_tool_calls(message: dict[str, Any], expected_calls: list[dict[str, Any]]) -> None:
    calls = message.get("tool_calls", [])
    assert len(calls) == len(expected_calls)
    for call, expected in zip(calls, expected_calls, strict=True):
        assert call["type"] == "function"
        assert call["function"]["name"] == expected["name"]
        assert call["function"]["arguments"] == _expected_arguments(expected["arguments"])
        if expected["id"]:
            assert call["id"] == expected["id"]
        else:
            assert call["id"].startswith("call_") and len(call["id"]) > 10


def _check_openai(recording: Recording, completion: dict[str, Any]) -> None:
    expected = recording.expected
    choices = {choice["index"]: choice for choice in completion["choices"]}
    assert sorted(choices) == [choice["index"] for choice in expected["choices"]]
    for want in expected["choices"]:
        got = choices[want["index"]]
        message = got["message"]
        assert message["role"] == (want["role"] or "assistant")
        list_text = want.get("content_list_text", "")
        if want["content"] is None and not list_text:
            assert message["content"] is None
        else:
            # the only list-content recording sends its list parts before its string parts
            assert message["content"] == list_text + (want["content"] or "")
        reasoning = (
            (want["reasoning_content"] or "")
            + (want["reasoning"] or "")
            + want.get("content_list_thinking", "")
        )
        assert message.get("reasoning_content") == (reasoning or None)
        assert message.get("refusal") == (want["refusal"] or None)
        assert got["finish_reason"] == want["finish_reason"]
        _check_tool_calls(message, want["tool_calls"])
    assert completion["usage"] == expected["usage"]


def _check_anthropic(recording: Recording, completion: dict[str, Any]) -> None:
    expected = recording.expected
    blocks = expected["content_blocks"]
    message = completion["choices"][0]["message"]
    text = "".join(block["text"] for block in blocks if block["type"] == "text")
    thinking = "".join(block["thinking"] for block in blocks if block["type"] == "thinking")
    assert message["content"] == (text if any(b["type"] == "text" for b in blocks) else None)
    assert message.get("reasoning_content") == (thinking or None)
    _check_tool_calls(message, expected["tool_calls"])
    assert completion["choices"][0]["finish_reason"] == STOP_REASONS[expected["stop_reason"]]
    assert completion["id"] == expected["message_id"]
    assert completion["model"] == expected["model"]
    usage = expected["usage"]
    prompt = (
        usage["input_tokens"]
        + usage.get("cache_read_input_tokens", 0)
        + usage.get("cache_creation_input_tokens", 0)
    )
    assert completion["usage"]["prompt_tokens"] == prompt
    assert completion["usage"]["completion_tokens"] == usage["output_tokens"]


@pytest.mark.parametrize("name", corpus_params())
def test_recording_assembles_to_expected(name: str) -> None:
    recording = load(name)
    events, stream = feed(recording.body)
    completion = stream.completion()
    if recording.dialect == "anthropic-messages":
        _check_anthropic(recording, completion)
    else:
        _check_openai(recording, completion)

    expected = recording.expected
    errors = expected.get("errors") or []
    assert [event.error for event in of_type(events, UpstreamErrorReported)] == errors
    end = events[-1]
    assert isinstance(end, StreamEnded)
    assert end.is_clean is (not errors)

    ready = of_type(events, ToolCallReady)
    invalid = of_type(events, ToolCallInvalid)
    calls = (
        expected["tool_calls"]
        if "tool_calls" in expected
        else [call for choice in expected["choices"] for call in choice["tool_calls"]]
    )
    assert len(ready) + len(invalid) == len(calls)
    if not errors:
        # every recorded call is complete JSON (or blank, meaning {}), so every one is ready
        assert len(ready) == len(calls)
        for event in ready:
            assert isinstance(event.parsed, dict)


@pytest.mark.parametrize("name", corpus_params())
def test_recording_is_the_same_fed_byte_by_byte(name: str) -> None:
    recording = load(name)
    whole_events, whole = feed(recording.body)
    byte_events, bytewise = feed(recording.body, [1] * len(recording.body))
    assert byte_events == whole_events
    assert bytewise.completion() == whole.completion()


@pytest.mark.parametrize("name", corpus_params())
def test_recording_fed_as_parsed_chunks_gives_the_same_result(name: str) -> None:
    # receive_chunk is for chunks another client already parsed (no SSE framing left)
    import orjson

    from streamproxy.core import ChatStream, SSEDecoder

    recording = load(name)
    whole_events, whole = feed(recording.body)
    decoder = SSEDecoder()
    messages = decoder.feed(recording.body) + decoder.close()[0]
    stream = ChatStream()
    events = []
    for message in messages:
        if message.data == "[DONE]":
            events += stream.receive_done()
        else:
            events += stream.receive_chunk(orjson.loads(message.data), event=message.event)
    events += stream.receive_eof()
    assert events == whole_events
    assert stream.completion() == whole.completion()
