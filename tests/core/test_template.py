"""Chunk templates change nothing: bytes through templates give what parsed chunks give.

``receive_chunk`` never uses templates, so it is the reference: every stream below, fed as bytes
(templates learned and applied) and as parsed chunks, must give the same events and completion.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproxy.core import ChatStream, Event, StreamWarning, ToolCallArgumentsDelta
from streamproxy.core import stream as stream_module
from streamproxy.core.template import learn
from tests.helpers import call_delta, chunk, sse


def by_chunks(payloads: list[dict[str, Any]]) -> tuple[list[Event], dict[str, object]]:
    stream = ChatStream()
    events: list[Event] = []
    for payload in payloads:
        events += stream.receive_chunk(payload)
    events += stream.receive_done()
    events += stream.receive_eof()
    return events, stream.completion()


def by_bytes(body: bytes, read_size: int) -> tuple[list[Event], dict[str, object]]:
    stream = ChatStream()
    events: list[Event] = []
    for start in range(0, len(body), read_size):
        events += stream.receive_data(body[start : start + read_size])
    events += stream.receive_eof()
    return events, stream.completion()


# Fragments that stress the template: quotes, escapes, non-ASCII, JSON openers, blanks, and
# text that tries to close the string and add a field ("a","x":"b).
FRAGMENTS = st.one_of(
    st.text(max_size=6),
    st.sampled_from(['"', "\\", '\\"', "{", "[", " {", "}", "é", "\n", '","x":"', "", "  "]),
)

# One step of a stream: a fragment for call 0 or 1, content, a chunk with another `created`,
# or a chunk with an extra field.
STEP = st.tuples(st.sampled_from(["arg0", "arg1", "content", "created", "extra"]), FRAGMENTS)


def build(steps: list[tuple[str, str]]) -> list[dict[str, Any]]:
    payloads = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"tool_calls": [call_delta(index=0, id="c0", name="f", arguments="")]}),
    ]
    opened_second = False
    for kind, text in steps:
        if kind == "content":
            payload = chunk({"content": text, "reasoning_content": None})
        elif kind == "arg1" and not opened_second:
            opened_second = True
            payload = chunk(
                {"tool_calls": [call_delta(index=1, id="c1", name="g", arguments=text)]}
            )
        else:
            index = 1 if kind == "arg1" else 0
            payload = chunk({"tool_calls": [call_delta(index=index, arguments=text)]})
            if kind == "created":
                payload["created"] = 2
            elif kind == "extra":
                payload["obfuscation"] = text
        payloads.append(payload)
    payloads.append(chunk({}, finish="tool_calls"))
    return payloads


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(STEP, max_size=40), read_size=st.sampled_from([7, 64, 4096]))
def test_templates_give_the_same_events_as_parsed_chunks(
    steps: list[tuple[str, str]], read_size: int
) -> None:
    payloads = build(steps)
    assert by_bytes(sse(*payloads), read_size) == by_chunks(payloads)


def test_a_string_that_tries_to_add_a_field_is_parsed_in_full() -> None:
    template_chunk = chunk({"tool_calls": [call_delta(index=0, arguments="ab")]})
    raw = orjson.dumps(template_chunk)
    stream = ChatStream()
    head = chunk({"tool_calls": [call_delta(index=0, id="c", name="f")]})
    stream.receive_data(sse(head, done=False))
    events = stream.receive_data(b"data: " + raw + b"\n\n")
    assert [e.fragment for e in events if isinstance(e, ToolCallArgumentsDelta)] == ["ab"]
    template = learn(raw, template_chunk)
    assert template is not None
    forged = raw.replace(b'"ab"', b'"cd","name":"rm"')
    assert template.match(forged) is None  # two tokens: the chunk must be parsed in full
    assert template.match(raw.replace(b'"ab"', b'"c\\"d"')) == 'c"d'


def test_a_stream_whose_chunks_never_repeat_stops_learning() -> None:
    payloads = [chunk({"tool_calls": [call_delta(index=0, id="c", name="f", arguments="")]})]
    for number in range(50):
        payload = chunk({"tool_calls": [call_delta(index=0, arguments="x")]})
        payload["obfuscation"] = "p" * number  # a padding field that changes every chunk
        payloads.append(payload)
    stream = ChatStream()
    stream.receive_data(sse(*payloads, done=False))
    assert stream._fruitless == 4  # learned four times, then gave up
    assert not [e for e in stream.receive_eof() if isinstance(e, StreamWarning)]


def test_a_repetitive_stream_is_decoded_through_its_template() -> None:
    payloads = [chunk({"tool_calls": [call_delta(index=0, id="c", name="f", arguments="{")]})]
    payloads += [chunk({"tool_calls": [call_delta(index=0, arguments='"a')]}) for _ in range(20)]
    stream = ChatStream()
    stream.receive_data(sse(*payloads, done=False))
    assert stream._template is not None
    assert stream._fruitless == 0  # the last chunk was a hit (a hit resets the count)


def count_full_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the chunks that go through the full reader (``read_chunk``) from here on."""
    calls = [0]
    read_chunk = stream_module.read_chunk

    def counting(assembler: Any, chunk: dict[str, Any]) -> None:
        calls[0] += 1
        read_chunk(assembler, chunk)

    monkeypatch.setattr(stream_module, "read_chunk", counting)
    return calls


@pytest.mark.parametrize("kind", ["arguments", "content"])
def test_one_event_per_read_takes_the_template(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    # issue 13: a proxy hands over one SSE event per socket read; those events used to come out
    # of the decoder's line path as tuples, so the template was never tried
    payloads = [chunk({"tool_calls": [call_delta(index=0, id="c", name="f", arguments="{")]})]
    for number in range(200):
        if kind == "arguments":
            fragment = f'"k{number}": {number}, ' if number else '"a": 0, '
            payloads.append(chunk({"tool_calls": [call_delta(index=0, arguments=fragment)]}))
        else:
            payloads.append(chunk({"content": f"word {number} "}))
    payloads.append(chunk({"tool_calls": [call_delta(index=0, arguments='"z": 1}')]}))
    payloads.append(chunk({}, finish="tool_calls"))
    expected = by_chunks(payloads)  # receive_chunk: the full reader for every chunk
    full_reads = count_full_reads(monkeypatch)
    stream = ChatStream()
    events: list[Event] = []
    for frame in sse(*payloads).split(b"\n\n")[:-1]:
        events += stream.receive_data(frame + b"\n\n")
    events += stream.receive_eof()
    assert (events, stream.completion()) == expected
    assert full_reads[0] <= 6  # the head, a chunk to learn from, the finish; not 200


def test_a_template_follows_the_index_to_a_new_call_at_that_index() -> None:
    # a template learned on call c0's fragments must not keep feeding c0 once a new call took
    # index 0 (Ollama reuses index 0): the reader resolves the index at each chunk, so must it
    payloads = [chunk({"tool_calls": [call_delta(index=0, id="c0", name="f", arguments='{"a":')]})]
    payloads += [chunk({"tool_calls": [call_delta(index=0, arguments=" 1")]}) for _ in range(3)]
    payloads.append(chunk({"tool_calls": [call_delta(index=0, id="c1", name="g", arguments="{")]}))
    payloads += [chunk({"tool_calls": [call_delta(index=0, arguments=" 1")]}) for _ in range(3)]
    payloads.append(chunk({}, finish="tool_calls"))
    for read_size in (7, 4096):
        assert by_bytes(sse(*payloads), read_size) == by_chunks(payloads)
