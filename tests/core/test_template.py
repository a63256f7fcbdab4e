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

from streamproxy.core import ChatStream, Event, Limits, StreamWarning, ToolCallArgumentsDelta
from streamproxy.core import stream as stream_module
from streamproxy.core.template import learn
from streamproxy.errors import LimitExceededError, ProtocolError
from tests.helpers import call_delta, chunk, sse


def by_chunks(payloads: list[dict[str, Any]]) -> tuple[list[Event], dict[str, object]]:
    stream = ChatStream()
    events: list[Event] = []
    for payload in payloads:
        events += stream.receive_chunk(payload)
    events += stream.receive_done()
    events += stream.receive_eof()
    return events, stream.completion()


def by_bytes(body: bytes, read_size: int | None) -> tuple[list[Event], dict[str, object]]:
    """Feed ``body`` in reads of ``read_size`` bytes, or one SSE event per read (None)."""
    stream = ChatStream()
    events: list[Event] = []
    if read_size is None:
        reads = [frame + b"\n\n" for frame in body.split(b"\n\n")[:-1]]
    else:
        reads = [body[start : start + read_size] for start in range(0, len(body), read_size)]
    for piece in reads:
        events += stream.receive_data(piece)
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
@given(steps=st.lists(STEP, max_size=40), read_size=st.sampled_from([7, 64, 4096, None]))
def test_templates_give_the_same_events_as_parsed_chunks(
    steps: list[tuple[str, str]], read_size: int | None
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
    decoded = count_decoded_reads(monkeypatch, stream)
    events: list[Event] = []
    for frame in sse(*payloads).split(b"\n\n")[:-1]:
        events += stream.receive_data(frame + b"\n\n")
    events += stream.receive_eof()
    assert (events, stream.completion()) == expected
    assert full_reads[0] <= 6  # the head, a chunk to learn from, the finish; not 200
    # a read that is one whole event of the template's shape skips the SSE decoder too
    assert decoded[0] <= 8


def count_decoded_reads(monkeypatch: pytest.MonkeyPatch, stream: ChatStream) -> list[int]:
    """Count the reads of ``stream`` that go through its SSE decoder from here on."""
    calls = [0]
    feed_raw = stream._decoder.feed_raw

    def counting(data: bytes) -> list[Any]:
        calls[0] += 1
        return feed_raw(data)

    monkeypatch.setattr(stream._decoder, "feed_raw", counting)
    return calls


def test_an_event_read_matches_only_one_whole_event_of_the_template() -> None:
    template_chunk = chunk({"tool_calls": [call_delta(index=0, arguments="ab")]})
    raw = orjson.dumps(template_chunk)
    template = learn(raw, template_chunk)
    assert template is not None

    def frame(fragment: bytes) -> bytes:
        return b"data: " + raw.replace(b'"ab"', fragment) + b"\n\n"

    assert template.match_event(frame(b'"c\\nd"')) == "c\nd"  # an escaped line feed
    assert template.match_event(frame(b'"c\nd"')) is None  # a raw one ends the line
    assert template.match_event(frame(b'"cd","name":"rm"')) is None
    # JSON whitespace around the string may hold a line end, which ends the event there
    for fragment in (b'"x"\n', b'"x"\r', b'"x"\n\n', b'\r\n"x"', b' "x"', b'"x"\t'):
        assert template.match_event(frame(fragment)) is None
    two = frame(b'"x"') + frame(b'"y"')  # two events whose ends look like one
    assert template.match_event(two) is None
    assert template.match_event(b"data:" + raw + b"\n\n") is None  # no space: the full path
    assert template.match_event(b"event: x\n" + frame(b'"ab"')) is None
    # a chunk that was data on two lines has a line feed in its bytes: no event form at all
    split = raw.replace(b'"choices":', b'"choices":\n')
    split_template = learn(split, template_chunk)
    assert split_template is not None
    assert split_template.match(split) == "ab"
    assert split_template.match_event(b"data: " + split + b"\n\n") is None


def test_an_event_read_over_the_event_limit_is_refused_as_before() -> None:
    head = chunk({"tool_calls": [call_delta(index=0, id="c", name="f", arguments="{")]})
    small = [chunk({"tool_calls": [call_delta(index=0, arguments=" ")]}) for _ in range(3)]
    stream = ChatStream(limits=Limits(max_event_size=400))
    for frame in sse(head, *small, done=False).split(b"\n\n")[:-1]:
        stream.receive_data(frame + b"\n\n")
    assert stream._template is not None
    big = sse(chunk({"tool_calls": [call_delta(index=0, arguments=" " * 400)]}), done=False)
    with pytest.raises(LimitExceededError):
        stream.receive_data(big)


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


def test_an_event_read_that_is_two_events_fails_as_the_decoder_reads_it() -> None:
    # 'data: <prefix>"x"\n\n<suffix>\n\n': the template's bytes around a string, but two
    # events, neither of them JSON; a read of it must not be taken for the chunk with "x"
    head = chunk({"tool_calls": [call_delta(index=0, id="c", name="f", arguments="{")]})
    small = chunk({"tool_calls": [call_delta(index=0, arguments=" ")]})
    stream = ChatStream()
    for frame in sse(head, small, small, small, done=False).split(b"\n\n")[:-1]:
        stream.receive_data(frame + b"\n\n")
    assert stream._template is not None
    raw = orjson.dumps(small)
    with pytest.raises(ProtocolError, match="not JSON"):
        stream.receive_data(b"data: " + raw.replace(b'" "', b'"x"\n\n') + b"\n\n")
    # what came before the bad read is kept
    assert stream.message()["tool_calls"] == [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{   "}}
    ]


def test_an_event_read_after_a_pending_data_line_is_decoded_as_one_event() -> None:
    # "data: a\n" then "data: b\n\n" is one event whose data is "a\nb", not the event "b"
    head = chunk({"tool_calls": [call_delta(index=0, id="c", name="f", arguments="{")]})
    small = [chunk({"tool_calls": [call_delta(index=0, arguments=" ")]}) for _ in range(3)]
    stream = ChatStream()
    for frame in sse(head, *small, done=False).split(b"\n\n")[:-1]:
        stream.receive_data(frame + b"\n\n")
    assert stream._template is not None
    assert stream.receive_data(b'data: {"x":\n') == []  # a data line, the event not ended
    with pytest.raises(ProtocolError, match="not JSON"):
        stream.receive_data(sse(small[0], done=False))
