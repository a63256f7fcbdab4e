"""One test per real-world stream quirk (ANCHORS.md section B), named for it.

Each stream is written by hand in the shape the cited provider sends; the corpus test covers the
same quirks in real bytes where the corpus has them. None needs the corpus.

Every body is fed three ways, whole, one byte at a time and in 7-byte pieces, and must give the
same events and the same completion each time (h11's ``t_body_reader`` pattern): ``feed`` below
checks that before a test looks at the events.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from streamproxy.core import (
    ChatStream,
    ChoiceFinished,
    ContentDelta,
    Event,
    ReasoningDelta,
    StreamEnded,
    StreamWarning,
    ToolCallArgumentsDelta,
    ToolCallInvalid,
    ToolCallReady,
    ToolCallStarted,
    UpstreamErrorReported,
    UsageReported,
)
from tests import helpers
from tests.helpers import call_delta, chunk, of_type, sse

SPLITS = {"byte by byte": 1, "7-byte pieces": 7}


def feed(body: bytes, **options: Any) -> tuple[list[Event], ChatStream]:
    """Feed ``body`` whole, byte by byte and in 7-byte pieces; all three must agree."""
    events, stream = helpers.feed(body, **options)
    for name, size in SPLITS.items():
        split_events, split = helpers.feed(body, [size] * (len(body) // size), **options)
        assert split_events == events, f"fed {name}, the events differ"
        assert split.completion() == stream.completion(), f"fed {name}, the completion differs"
    return events, stream


def tool_chunk(*entries: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return chunk({"tool_calls": list(entries)}, finish=finish)


def ready_calls(events: list[Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(event.id, event.name, event.parsed) for event in of_type(events, ToolCallReady)]


# --------------------------------------------------------------------------- identity (B.1)


def test_missing_index_continues_the_latest_call() -> None:
    # Ollama before 0.4.7, Gemini: no index at all (ANCHORS B.1, B.3)
    body = sse(
        tool_chunk(call_delta(id="call_a", name="lookup", arguments='{"q":')),
        tool_chunk(call_delta(arguments=' "x"}')),
        chunk(finish="tool_calls"),
    )
    events, stream = feed(body)
    assert ready_calls(events) == [("call_a", "lookup", {"q": "x"})]
    assert len(stream.message()["tool_calls"]) == 1


def test_null_index_is_treated_as_missing() -> None:
    # Gemini OpenAI-compat sends "index": null (meilisearch/meilisearch#5712)
    body = sse(
        tool_chunk({"index": None, "id": "c1", "function": {"name": "f", "arguments": '{"a"'}}),
        tool_chunk({"index": None, "function": {"arguments": ": 1}"}}),
        chunk(finish="tool_calls"),
    )
    events, _ = feed(body)
    assert ready_calls(events) == [("c1", "f", {"a": 1})]


def test_reused_index_with_a_new_id_starts_a_new_call() -> None:
    # Ollama: index always 0 for several calls (ollama/ollama#15457); Bedrock (langchain#35281)
    body = sse(
        tool_chunk(call_delta(index=0, id="c1", name="weather", arguments='{"city": "Paris"}')),
        tool_chunk(call_delta(index=0, id="c2", name="weather", arguments='{"city": "Rome"}')),
        chunk(finish="tool_calls"),
    )
    events, stream = feed(body)
    assert ready_calls(events) == [
        ("c1", "weather", {"city": "Paris"}),
        ("c2", "weather", {"city": "Rome"}),
    ]
    assert [call["id"] for call in stream.message()["tool_calls"]] == ["c1", "c2"]


def test_sparse_indexes_are_independent_calls_never_array_slots() -> None:
    # gateway fallbacks produce indexes 3 and 7 (vercel/ai#18382)
    body = sse(
        tool_chunk(call_delta(index=3, id="c3", name="a", arguments="{}")),
        tool_chunk(call_delta(index=7, id="c7", name="b", arguments='{"x": 1}')),
        chunk(finish="tool_calls"),
    )
    events, stream = feed(body)
    assert ready_calls(events) == [("c3", "a", {}), ("c7", "b", {"x": 1})]
    assert len(stream.message()["tool_calls"]) == 2


def test_id_match_wins_over_index() -> None:
    # a delta naming an earlier call by id goes there, whatever its index says
    body = sse(
        tool_chunk(call_delta(index=0, id="c1", name="a", arguments='{"x":')),
        tool_chunk(call_delta(index=1, id="c2", name="b", arguments='{"y": 2}')),
        tool_chunk(call_delta(index=1, id="c1", arguments=" 1}")),
        chunk(finish="tool_calls"),
    )
    events, _ = feed(body)
    assert sorted(ready_calls(events)) == [("c1", "a", {"x": 1}), ("c2", "b", {"y": 2})]


def test_two_calls_in_one_delta_without_index_stay_two_calls() -> None:
    body = sse(
        tool_chunk(
            {"function": {"name": "a", "arguments": '{"n": 1}'}},
            {"function": {"name": "b", "arguments": '{"n": 2}'}},
        ),
        chunk(finish="tool_calls"),
    )
    events, stream = feed(body)
    assert [(name, parsed) for _, name, parsed in ready_calls(events)] == [
        ("a", {"n": 1}),
        ("b", {"n": 2}),
    ]
    ids = [call["id"] for call in stream.message()["tool_calls"]]
    assert len(set(ids)) == 2


def test_id_repeated_on_every_chunk_is_assigned_never_concatenated() -> None:
    # Fireworks, DeepSeek, Qwen, LiteLLM output (SillyTavern#5948, langchain4j#4544)
    body = sse(
        tool_chunk(call_delta(index=0, id="chatcmpl-tool-aa62", name="f", arguments="")),
        tool_chunk(call_delta(index=0, id="chatcmpl-tool-aa62", arguments='{"a":')),
        tool_chunk(call_delta(index=0, id="chatcmpl-tool-aa62", arguments="1}")),
        chunk(finish="tool_calls"),
    )
    events, stream = feed(body)
    assert ready_calls(events) == [("chatcmpl-tool-aa62", "f", {"a": 1})]
    assert stream.message()["tool_calls"][0]["id"] == "chatcmpl-tool-aa62"


def test_whole_name_repeated_on_every_chunk_is_not_concatenated() -> None:
    # llama.cpp before #13800, MiniMax on NIM, GPT-5.x (ANCHORS B.9)
    body = sse(
        tool_chunk(call_delta(index=0, id="c1", name="read_file", arguments="")),
        tool_chunk(call_delta(index=0, name="read_file", arguments='{"path":')),
        tool_chunk(call_delta(index=0, name="read_file", arguments=' "a.txt"}')),
        chunk(finish="tool_calls"),
    )
    events, _ = feed(body)
    assert ready_calls(events) == [("c1", "read_file", {"path": "a.txt"})]


def test_name_split_across_chunks_is_joined() -> None:
    # Gemini splits names: "edit_ex" + "isting_file" (continuedev/continue#5849)
    body = sse(
        tool_chunk(call_delta(index=0, id="c1", name="edit_ex")),
        tool_chunk(call_delta(index=0, name="isting_file")),
        tool_chunk(call_delta(index=0, arguments='{"path": "x"}')),
        chunk(finish="tool_calls"),
    )
    events, _ = feed(body)
    started = of_type(events, ToolCallStarted)
    assert [event.name for event in started] == ["edit_existing_file"]
    assert ready_calls(events) == [("c1", "edit_existing_file", {"path": "x"})]


def test_empty_string_id_gets_a_stable_generated_id() -> None:
    # Gemini sends "id": "" (vercel/ai#19091); the id must be the same on every replay
    body = sse(
        tool_chunk({"id": "", "type": "function", "function": {"name": "f", "arguments": "{}"}}),
        tool_chunk({"id": "", "type": "function", "function": {"name": "g", "arguments": "{}"}}),
        chunk(finish="tool_calls"),
    )
    first, _ = feed(body)
    second, _ = feed(body)
    ids = [event.id for event in of_type(first, ToolCallReady)]
    assert ids == [event.id for event in of_type(second, ToolCallReady)]
    assert len(set(ids)) == 2 and all(id.startswith("call_") for id in ids)
    started_ids = [event.id for event in of_type(first, ToolCallStarted)]
    assert started_ids == ids


def test_arguments_in_the_first_chunk_count_once() -> None:
    # Mistral sends id, name and arguments together; naive code doubled them (async-openai#329)
    body = sse(
        tool_chunk(call_delta(index=0, id="c1", name="f", arguments='{"a": ')),
        tool_chunk(call_delta(index=0, arguments="1}")),
        chunk(finish="tool_calls"),
    )
    events, _ = feed(body)
    fragments = [event.fragment for event in of_type(events, ToolCallArgumentsDelta)]
    assert "".join(fragments) == '{"a": 1}'
    assert ready_calls(events) == [("c1", "f", {"a": 1})]


def test_whole_call_in_one_chunk() -> None:
    # Groq, Ollama, Gemini send the whole call at once (BerriAI/litellm#7621)
    body = sse(
        chunk(
            {"tool_calls": [call_delta(index=0, id="c1", name="f", arguments='{"a": [1, 2]}')]},
            finish="tool_calls",
        )
    )
    events, _ = feed(body)
    assert ready_calls(events) == [("c1", "f", {"a": [1, 2]})]
    kinds = [type(event).__name__ for event in events if "ToolCall" in type(event).__name__]
    assert kinds == ["ToolCallStarted", "ToolCallArgumentsDelta", "ToolCallReady"]


def test_full_arguments_resent_after_fragments_are_dropped() -> None:
    # GPT-5.x and LiteLLM summary chunks re-send the whole arguments (open-webui#22235)
    body = sse(
        tool_chunk(call_delta(index=0, id="c1", name="f", arguments='{"a": 1,')),
        tool_chunk(call_delta(index=0, arguments=' "b": 2}')),
        tool_chunk(call_delta(index=0, arguments='{"a":1,"b":2}')),
        chunk(finish="tool_calls"),
    )
    events, stream = feed(body)
    assert ready_calls(events) == [("c1", "f", {"a": 1, "b": 2})]
    assert stream.message()["tool_calls"][0]["function"]["arguments"] == '{"a": 1, "b": 2}'
    assert [event.kind for event in of_type(events, StreamWarning)] == ["duplicate_arguments"]


def test_two_complete_json_values_under_one_index_are_never_glued() -> None:
    # Gemini through gateways: whole calls all at index 0 (BerriAI/litellm#11558, #11999)
    body = sse(
        tool_chunk(call_delta(index=0, name="get_time", arguments='{"city":"London"}')),
        tool_chunk(call_delta(index=0, arguments='{"city":"Tokyo"}')),
        chunk(finish="tool_calls"),
    )
    events, stream = feed(body)
    assert [(name, parsed) for _, name, parsed in ready_calls(events)] == [
        ("get_time", {"city": "London"}),
        ("get_time", {"city": "Tokyo"}),
    ]
    arguments = [call["function"]["arguments"] for call in stream.message()["tool_calls"]]
    assert arguments == ['{"city":"London"}', '{"city":"Tokyo"}']


def test_two_json_values_in_one_fragment_are_invalid_not_glued() -> None:
    body = sse(
        tool_chunk(call_delta(index=0, id="c1", name="f", arguments='{"a":1}{"a":2}')),
        chunk(finish="tool_calls"),
    )
    events, _ = feed(body)
    (invalid,) = of_type(events, ToolCallInvalid)
    assert invalid.kind == "invalid_json"
    assert "more than one JSON value" in invalid.reason
    assert not of_type(events, ToolCallReady)


def test_empty_arguments_mean_an_empty_object() -> None:
    # Anthropic no-argument tools and OpenAI-compatible servers send "" (BerriAI/litellm#5063)
    body = sse(
        tool_chunk(call_delta(index=0, id="c1", name="now", arguments="")),
        chunk(finish="tool_calls"),
    )
    events, stream = feed(body)
    assert ready_calls(events) == [("c1", "now", {})]
    assert stream.message()["tool_calls"][0]["function"]["arguments"] == "{}"


# --------------------------------------------------------------------------- framing (B.3)


def test_keep_alive_and_other_comments_are_ignored() -> None:
    # DeepSeek ": keep-alive", OpenRouter ": OPENROUTER PROCESSING" (ANCHORS B.26, B.27)
    body = b": keep-alive\n\n: OPENROUTER PROCESSING\n\n" + sse(
        chunk({"content": "hi"}, finish="stop")
    )
    events, stream = feed(body)
    assert [event.text for event in of_type(events, ContentDelta)] == ["hi"]
    assert stream.message()["content"] == "hi"
    assert events[-1] == StreamEnded(is_clean=True, reason=None)


def test_events_with_empty_data_are_ignored() -> None:
    # an id: line then a blank line made openai-python parse "" (openai/openai-python#2722)
    body = b"id: 1\n\n: ping\n\ndata:\n\n" + sse(chunk({"content": "ok"}, finish="stop"))
    events, stream = feed(body)
    assert stream.message()["content"] == "ok"
    assert events[-1].is_clean


def test_event_error_under_http_200_is_reported_and_aborts_open_calls() -> None:
    # Groq: "event: error" after content, no finish, no [DONE] (corpus groq__gpt-oss-...)
    body = (
        sse(tool_chunk(call_delta(index=0, id="c1", name="f", arguments='{"a": 1}')), done=False)
        + b'event: error\ndata: {"error": {"message": "tool_use_failed", "code": "x"}}\n\n'
    )
    events, _ = feed(body)
    (error,) = of_type(events, UpstreamErrorReported)
    assert error.message == "tool_use_failed"
    (invalid,) = of_type(events, ToolCallInvalid)
    assert invalid.kind == "upstream_error"
    assert not of_type(events, ToolCallReady)
    assert events[-1] == StreamEnded(is_clean=False, reason="upstream error: tool_use_failed")


def test_error_payload_under_http_200_then_done_is_still_an_error() -> None:
    # vLLM/SGLang send {"error": {...}} then [DONE] (BerriAI/litellm#32237, #40578)
    body = sse(
        chunk({"content": "par"}), {"error": {"object": "error", "message": "boom", "code": 400}}
    )
    events, stream = feed(body)
    assert [event.message for event in of_type(events, UpstreamErrorReported)] == ["boom"]
    assert stream.message()["content"] == "par"
    assert events[-1].is_clean is False


def test_error_next_to_choices_is_reported_and_the_chunk_still_applied() -> None:
    payload = chunk({"content": "kept"}, finish="stop")
    payload["error"] = {"message": "partial failure"}
    events, stream = feed(sse(payload))
    assert stream.message()["content"] == "kept"
    assert [event.message for event in of_type(events, UpstreamErrorReported)] == [
        "partial failure"
    ]


# --------------------------------------------------------------------------- usage (B.5)


def test_usage_on_a_trailing_chunk_with_empty_choices() -> None:
    # OpenAI include_usage: a last chunk with choices: [] (ANCHORS B.44)
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    body = sse(
        chunk({"content": "hi"}, finish="stop"),
        {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": usage},
    )
    events, stream = feed(body)
    assert stream.completion()["usage"] == usage
    assert [event.usage for event in of_type(events, UsageReported)] == [usage]


def test_usage_on_the_finish_chunk() -> None:
    # DeepSeek: delta, finish_reason and usage in one chunk (ANCHORS B.21)
    usage = {
        "prompt_tokens": 5,
        "completion_tokens": 2,
        "total_tokens": 7,
        "prompt_cache_hit_tokens": 0,
        "prompt_cache_miss_tokens": 5,
    }
    _, stream = feed(sse(chunk({"content": ""}, finish="stop", usage=usage)))
    assert stream.completion()["usage"] == usage


def test_usage_on_every_chunk_takes_the_last_never_the_sum() -> None:
    # vLLM continuous_usage_stats, Perplexity, xAI (ANCHORS B.46, B.47)
    body = sse(
        chunk(
            {"content": "a"}, usage={"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
        ),
        chunk(
            {"content": "b"}, usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
        ),
        chunk(
            {}, finish="stop", usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
        ),
        chunk({}, usage=None),
    )
    events, stream = feed(body)
    assert stream.completion()["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 2,
        "total_tokens": 7,
    }
    assert len(of_type(events, UsageReported)) == 2  # a repeat of the same figure is not news


# --------------------------------------------------------------------------- finish (B.2)


def test_finish_reason_and_the_last_delta_in_one_chunk() -> None:
    # GLM-5 on vllm-ascend (vllm-project/vllm-ascend#8327)
    body = sse(
        tool_chunk(call_delta(index=0, id="c1", name="f", arguments='{"a":')),
        tool_chunk(call_delta(index=0, arguments=" 1}"), finish="tool_calls"),
    )
    events, _ = feed(body)
    assert ready_calls(events) == [("c1", "f", {"a": 1})]
    kinds = [type(event).__name__ for event in events]
    assert kinds.index("ToolCallReady") < kinds.index("ChoiceFinished")


def test_finish_reason_stop_while_tool_calls_are_present() -> None:
    # Gemini, Ollama end tool turns with "stop" (open-webui/computer#224)
    body = sse(tool_chunk(call_delta(id="c1", name="f", arguments="{}"), finish="stop"))
    events, stream = feed(body)
    assert ready_calls(events) == [("c1", "f", {})]
    assert stream.completion()["choices"][0]["finish_reason"] == "stop"


def test_null_and_empty_strings_are_not_deltas() -> None:
    # DeepSeek V4: reasoning_content null on content chunks, "" on the first (ANCHORS B.40)
    body = sse(
        chunk({"role": "assistant", "content": "", "reasoning_content": ""}),
        chunk({"content": None, "reasoning_content": "think"}),
        chunk({"content": "answer", "reasoning_content": None, "tool_calls": None}),
        chunk({"content": "", "reasoning_content": None}, finish="stop"),
    )
    events, stream = feed(body)
    assert [event.text for event in of_type(events, ReasoningDelta)] == ["think"]
    assert [event.text for event in of_type(events, ContentDelta)] == ["answer"]
    assert stream.message() == {
        "role": "assistant",
        "content": "answer",
        "reasoning_content": "think",
    }


def test_content_as_a_list_of_parts() -> None:
    # Mistral hybrid reasoning (corpus mistral__hybrid-reasoning-thinking-content-list)
    body = sse(
        chunk({"content": [{"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]}]}),
        chunk({"content": [{"type": "text", "text": "4"}]}),
        chunk({"content": "2"}, finish="stop"),
    )
    _, stream = feed(body)
    assert stream.message()["content"] == "42"
    assert stream.message()["reasoning_content"] == "hmm"


def test_unknown_fields_are_ignored() -> None:
    # obfuscation (OpenAI), x_groq (Groq), p (Mistral padding), logprobs, native_finish_reason
    payload = chunk({"content": "hi", "channel": "final"}, finish="stop")
    payload.update({"obfuscation": "xyz", "x_groq": {"id": "req"}, "p": "abc"})
    payload["choices"][0].update({"logprobs": None, "native_finish_reason": "end_turn"})
    events, stream = feed(sse(payload))
    assert stream.message() == {"role": "assistant", "content": "hi"}
    assert events[-1].is_clean


def test_n_greater_than_one_with_interleaved_choices() -> None:
    body = sse(
        chunk({"content": "A"}, index=0),
        chunk({"content": "B"}, index=1),
        chunk({"content": "a"}, index=0),
        chunk({"tool_calls": [call_delta(index=0, id="c1", name="f", arguments="{}")]}, index=1),
        chunk({}, finish="stop", index=0),
        chunk({}, finish="tool_calls", index=1),
    )
    events, stream = feed(body)
    completion = stream.completion()
    assert [choice["message"]["content"] for choice in completion["choices"]] == ["Aa", "B"]
    assert [event.choice for event in of_type(events, ToolCallReady)] == [1]
    assert [(event.choice, event.finish_reason) for event in of_type(events, ChoiceFinished)] == [
        (0, "stop"),
        (1, "tool_calls"),
    ]


# --------------------------------------------------------------------------- the sealing rule


def test_a_parseable_prefix_never_seals_a_call() -> None:
    # vercel/ai#13137: finalising on parseability dropped '"limit": 10'
    events_seen: list[Any] = []
    from streamproxy.core import ChatStream

    stream = ChatStream()
    for payload in (
        tool_chunk(call_delta(index=0, id="c1", name="search", arguments='{"query": "test"')),
        tool_chunk(call_delta(index=0, arguments="}")),
    ):
        events_seen += stream.receive_data(sse(payload, done=False))
    assert not of_type(events_seen, ToolCallReady)  # complete JSON, but no boundary yet
    events_seen += stream.receive_data(sse(chunk(finish="tool_calls")))
    assert ready_calls(events_seen) == [("c1", "search", {"query": "test"})]


def test_the_next_call_seals_the_previous_complete_one_before_the_finish() -> None:
    body = sse(
        tool_chunk(call_delta(index=0, id="c1", name="a", arguments='{"x": 1}')),
        tool_chunk(call_delta(index=1, id="c2", name="b", arguments='{"y":')),
        tool_chunk(call_delta(index=1, arguments=" 2}")),
        chunk(finish="tool_calls"),
    )
    events, _ = feed(body)
    names = [(type(event).__name__, getattr(event, "id", None)) for event in events]
    assert names.index(("ToolCallReady", "c1")) < names.index(("ToolCallStarted", "c2"))


def test_interleaved_calls_with_incomplete_arguments_stay_open_until_the_finish() -> None:
    body = sse(
        tool_chunk(call_delta(index=0, id="c1", name="a", arguments='{"x":')),
        tool_chunk(call_delta(index=1, id="c2", name="b", arguments='{"y": 2}')),
        tool_chunk(call_delta(index=0, arguments=" 1}")),
        chunk(finish="tool_calls"),
    )
    events, _ = feed(body)
    assert sorted(ready_calls(events)) == [("c1", "a", {"x": 1}), ("c2", "b", {"y": 2})]
    assert not of_type(events, StreamWarning)


def test_stream_without_finish_or_done_gives_truncated_calls() -> None:
    # ANCHORS B.22: "Response stream ended without a finish reason"
    body = sse(tool_chunk(call_delta(index=0, id="c1", name="f", arguments='{"a": 1}')), done=False)
    events, _ = feed(body)
    (invalid,) = of_type(events, ToolCallInvalid)
    assert invalid.kind == "truncated"
    assert events[-1] == StreamEnded(
        is_clean=False, reason="the stream ended with no finish_reason and no end mark"
    )


def test_arguments_cut_off_under_a_tool_calls_finish_are_truncated() -> None:
    # vLLM says tool_calls for a call cut by max_tokens (vllm-project/vllm#53269)
    body = sse(
        tool_chunk(
            call_delta(
                index=0, id="c1", name="write", arguments='{"path": "/tmp/log.txt", "content": "'
            )
        ),
        chunk(finish="tool_calls"),
    )
    events, stream = feed(body)
    (invalid,) = of_type(events, ToolCallInvalid)
    assert invalid.kind == "truncated"
    assert invalid.reason == "the arguments end inside a string"
    assert stream.message()["tool_calls"][0]["function"]["arguments"].endswith('"content": "')


def test_a_length_finish_never_gives_a_ready_call() -> None:
    body = sse(
        tool_chunk(call_delta(index=0, id="c1", name="f", arguments='{"a": 1}'), finish="length")
    )
    events, _ = feed(body)
    (invalid,) = of_type(events, ToolCallInvalid)
    assert invalid.kind == "truncated" and "length" in invalid.reason


def test_usage_at_max_tokens_turns_a_tool_calls_finish_into_length() -> None:
    # ANCHORS B.17: when completion_tokens == max_tokens, treat the finish as length
    body = sse(
        tool_chunk(call_delta(index=0, id="c1", name="f", arguments='{"a": 1}')),
        chunk(finish="tool_calls"),
        {
            "id": "chatcmpl-1",
            "choices": [],
            "usage": {"prompt_tokens": 3, "completion_tokens": 64, "total_tokens": 67},
        },
    )
    events, _ = feed(body, max_tokens=64)
    assert [event.kind for event in of_type(events, ToolCallInvalid)] == ["truncated"]
    events, _ = feed(body, max_tokens=65)
    assert ready_calls(events) == [("c1", "f", {"a": 1})]


def test_a_fragment_after_the_seal_is_reported_and_dropped() -> None:
    body = sse(
        tool_chunk(
            call_delta(index=0, id="c1", name="f", arguments='{"a": 1}'), finish="tool_calls"
        ),
        tool_chunk(call_delta(index=0, id="c1", arguments=', "b": 2')),
    )
    events, stream = feed(body)
    assert ready_calls(events) == [("c1", "f", {"a": 1})]
    assert [event.kind for event in of_type(events, StreamWarning)] == ["fragment_after_seal"]
    assert stream.message()["tool_calls"][0]["function"]["arguments"] == '{"a": 1}'


def test_fragments_before_the_name_are_buffered_until_it_is_known() -> None:
    # the first delta has no function.name (vercel/ai openai-compatible pendingToolCalls)
    body = sse(
        tool_chunk(call_delta(index=0, id="c1", arguments='{"a"')),
        tool_chunk(call_delta(index=0, name="f", arguments=": 1}")),
        chunk(finish="tool_calls"),
    )
    events, _ = feed(body)
    tool_events = [event for event in events if "ToolCall" in type(event).__name__]
    assert isinstance(tool_events[0], ToolCallStarted) and tool_events[0].name == "f"
    assert "".join(e.fragment for e in of_type(events, ToolCallArgumentsDelta)) == '{"a": 1}'


def test_id_less_continuations_after_id_and_name() -> None:
    # Mistral: id and name first, then deltas with no id (vercel/ai#19181)
    body = sse(
        tool_chunk({"id": "m1", "function": {"name": "f", "arguments": ""}, "index": 0}),
        tool_chunk(
            {"type": "function", "function": {"name": "", "arguments": '{"q": "z"}'}, "index": 0}
        ),
        chunk(finish="tool_calls"),
    )
    events, _ = feed(body)
    assert ready_calls(events) == [("m1", "f", {"q": "z"})]


def test_arguments_sent_as_an_object_are_serialised_once() -> None:
    body = sse(
        tool_chunk({"id": "c1", "function": {"name": "f", "arguments": {"a": 1}}}),
        chunk(finish="tool_calls"),
    )
    events, _ = feed(body)
    assert ready_calls(events) == [("c1", "f", {"a": 1})]


def test_payload_after_done_is_ignored_with_a_warning() -> None:
    body = sse(chunk({"content": "x"}, finish="stop")) + sse(chunk({"content": "late"}), done=False)
    events, stream = feed(body)
    assert stream.message()["content"] == "x"
    assert [event.kind for event in of_type(events, StreamWarning)] == ["payload_after_end"]
    assert events[-1].is_clean


# --------------------------------------------------------------------------- validation


class Weather(BaseModel):
    city: str
    days: int


@pytest.mark.parametrize(
    "schema",
    [
        pytest.param(Weather, id="pydantic"),
        pytest.param(
            {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city", "days"],
                "additionalProperties": False,
            },
            id="json-schema",
        ),
    ],
)
def test_schema_validation_decides_ready_or_invalid(schema: Any) -> None:
    good = sse(
        tool_chunk(
            call_delta(index=0, id="c1", name="weather", arguments='{"city": "Oslo", "days": 3}')
        ),
        chunk(finish="tool_calls"),
    )
    bad = sse(
        tool_chunk(call_delta(index=0, id="c1", name="weather", arguments='{"city": "Oslo"}')),
        chunk(finish="tool_calls"),
    )
    events, _ = feed(good, tools={"weather": schema})
    assert ready_calls(events) == [("c1", "weather", {"city": "Oslo", "days": 3})]
    events, _ = feed(bad, tools={"weather": schema})
    (invalid,) = of_type(events, ToolCallInvalid)
    assert invalid.kind == "schema" and "days" in invalid.reason


def test_a_tool_that_is_not_allowed_is_invalid() -> None:
    body = sse(
        tool_chunk(call_delta(index=0, id="c1", name="rm_rf", arguments="{}")),
        chunk(finish="tool_calls"),
    )
    events, _ = feed(body, tools={"weather": None})
    (invalid,) = of_type(events, ToolCallInvalid)
    assert invalid.kind == "unknown_tool" and "rm_rf" in invalid.reason


def test_arguments_that_are_not_an_object_are_invalid() -> None:
    body = sse(
        tool_chunk(call_delta(index=0, id="c1", name="f", arguments="[1, 2]")),
        chunk(finish="tool_calls"),
    )
    events, _ = feed(body)
    assert [event.kind for event in of_type(events, ToolCallInvalid)] == ["not_an_object"]


def test_lenient_json_is_refused_by_the_strict_parse() -> None:
    # a lenient final parse turned truncation into a call with flipped flags (langchain#39275)
    for arguments in ('{"a": NaN}', "{'a': 1}", '{"a": 1,}'):
        body = sse(
            tool_chunk(call_delta(index=0, id="c1", name="f", arguments=arguments)),
            chunk(finish="tool_calls"),
        )
        events, _ = feed(body)
        assert [event.kind for event in of_type(events, ToolCallInvalid)] == ["invalid_json"], (
            arguments
        )


def test_integers_beyond_64_bits_stay_exact() -> None:
    # orjson alone would turn 18446744073709551616 into a float and lose the last digits
    arguments = '{"id": 123456789012345678901234567890, "n": -9223372036854775809}'
    body = sse(
        tool_chunk(call_delta(index=0, id="c1", name="f", arguments=arguments)),
        chunk(finish="tool_calls"),
    )
    events, _ = feed(body)
    assert ready_calls(events) == [
        ("c1", "f", {"id": 123456789012345678901234567890, "n": -9223372036854775809})
    ]


def test_arguments_over_the_limit_are_invalid_and_dropped() -> None:
    from streamproxy.core import Limits

    body = sse(
        tool_chunk(call_delta(index=0, id="c1", name="f", arguments='{"a": "' + "x" * 100)),
        tool_chunk(call_delta(index=0, arguments='"}')),
        chunk(finish="tool_calls"),
    )
    events, stream = feed(body, limits=Limits(max_arguments_size=64))
    (invalid,) = of_type(events, ToolCallInvalid)
    assert invalid.kind == "too_large"
    assert stream.message()["tool_calls"][0]["function"]["arguments"] == ""


# --------------------------------------------------------------------------- Anthropic dialect


def anthropic(*payloads: dict[str, Any]) -> bytes:
    """An Anthropic Messages body: each payload under an ``event:`` named for its type."""
    import orjson

    return b"".join(
        b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
        for payload in payloads
    )


def block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def block_delta(index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


MESSAGE_START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "model": "claude",
        "role": "assistant",
        "usage": {"input_tokens": 10, "output_tokens": 1},
    },
}
MESSAGE_STOP = {"type": "message_stop"}


def test_anthropic_start_input_is_not_an_argument_prefix() -> None:
    # content_block_start.input = {} prefixed arguments with "{}" (BerriAI/litellm#4537)
    body = anthropic(
        MESSAGE_START,
        block_start(0, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}),
        block_delta(0, {"type": "input_json_delta", "partial_json": '{"a":'}),
        block_delta(0, {"type": "input_json_delta", "partial_json": " 1}"}),
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 9},
        },
        MESSAGE_STOP,
    )
    events, stream = feed(body)
    assert ready_calls(events) == [("toolu_1", "f", {"a": 1})]
    kinds = [type(event).__name__ for event in events]
    assert kinds.index("ToolCallReady") < kinds.index("ChoiceFinished")  # sealed by block stop
    assert stream.completion()["usage"]["completion_tokens"] == 9
    assert stream.completion()["choices"][0]["finish_reason"] == "tool_calls"


def test_anthropic_done_after_message_stop_is_harmless() -> None:
    # OpenRouter's Anthropic-compatible endpoint adds [DONE] (OpenRouterTeam/docs#1)
    body = (
        anthropic(
            MESSAGE_START,
            block_start(0, {"type": "text", "text": ""}),
            block_delta(0, {"type": "text_delta", "text": "hi"}),
            MESSAGE_STOP,
        )
        + b"data: [DONE]\n\n"
    )
    events, stream = feed(body)
    assert stream.message()["content"] == "hi"
    assert events[-1].is_clean and not of_type(events, StreamWarning)
