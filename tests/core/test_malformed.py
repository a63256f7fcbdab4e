"""Malformed input raises only the project's documented errors, and loses nothing before it."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamproxy.core import (
    ChatStream,
    ContentDelta,
    LimitExceededError,
    Limits,
    ProtocolError,
    StreamEnded,
    StreamWarning,
    ToolCallInvalid,
)
from tests.corpus import corpus_names, load
from tests.helpers import call_delta, chunk, sse

NAMES = corpus_names() or ["(corpus absent)"]


def run_to_end(body: bytes, pieces: int = 7) -> tuple[list[object], ChatStream]:
    """Feed ``body``; a ProtocolError is allowed (and only that); always end with EOF."""
    stream = ChatStream()
    events: list[object] = []
    try:
        for start in range(0, len(body), pieces):
            events += stream.receive_data(body[start : start + pieces])
    except ProtocolError:
        with pytest.raises(ProtocolError):  # a broken stream stays broken
            stream.receive_data(b"data: {}\n\n")
    events += stream.receive_eof()
    assert isinstance(events[-1], StreamEnded)
    assert stream.receive_eof() == []  # ending twice is a no-op
    stream.completion()  # what was assembled stays readable
    return events, stream


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=600))
def test_random_bytes_raise_only_documented_errors(body: bytes) -> None:
    run_to_end(body)


# One mutation of a real recording: delete, duplicate, or overwrite a byte range.
MUTATION = st.tuples(
    st.sampled_from(["delete", "duplicate", "overwrite", "truncate"]),
    st.floats(0.0, 1.0),
    st.integers(1, 40),
    st.binary(min_size=1, max_size=8),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(NAMES), mutations=st.lists(MUTATION, min_size=1, max_size=3))
def test_mutated_recordings_raise_only_documented_errors(
    name: str, mutations: list[tuple[str, float, int, bytes]]
) -> None:
    body = bytearray(load(name).body)
    for kind, where, length, noise in mutations:
        at = int(where * len(body))
        if kind == "delete":
            del body[at : at + length]
        elif kind == "duplicate":
            body[at:at] = body[at : at + length]
        elif kind == "overwrite":
            body[at : at + len(noise)] = noise
        else:
            del body[at:]
    run_to_end(bytes(body))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        pytest.param("not json", "not JSON", id="not-json"),
        pytest.param("[1, 2]", "not a JSON object", id="not-an-object"),
        pytest.param('{"choices": {"0": {}}}', "choices is not a list", id="choices-not-list"),
        pytest.param('{"type": {"a": 1}, "choices": 3}', "choices", id="type-object"),
        pytest.param(
            '{"choices": [{"delta": []}]}', "delta is not an object", id="delta-not-object"
        ),
        pytest.param('{"choices": [{"index": -1}]}', "non-negative", id="negative-index"),
        pytest.param('{"choices": [{"delta": {"content": 5}}]}', "content", id="content-number"),
        pytest.param(
            '{"choices": [{"delta": {"tool_calls": [{"index": "0"}]}}]}', "index", id="index-str"
        ),
    ],
)
def test_a_malformed_chunk_is_a_protocol_error_and_keeps_what_came_before(
    payload: str, message: str
) -> None:
    stream = ChatStream()
    before = stream.receive_data(sse(chunk({"content": "kept"}), done=False))
    assert [event.text for event in before if isinstance(event, ContentDelta)] == ["kept"]
    pending = sse(
        chunk({"tool_calls": [call_delta(index=0, id="c1", name="f", arguments="{}")]}), done=False
    )
    stream.receive_data(pending)
    with pytest.raises(ProtocolError, match=message):
        stream.receive_data(sse(payload, done=False))
    closing = stream.receive_eof()
    assert [event.kind for event in closing if isinstance(event, ToolCallInvalid)] == ["truncated"]
    assert closing[-1].is_clean is False and message in (closing[-1].reason or "")
    assert stream.message()["content"] == "kept"


def test_a_line_with_an_unknown_field_is_ignored_and_reported_once() -> None:
    # garbage before "data:" makes the line's field "\x07\x1bdata": the SSE standard ignores the
    # line (and with it the chunk), as the openai SDK and httpx-sse do; the core says so once
    stream = ChatStream()
    stream.receive_data(sse(chunk({"content": "kept"}), done=False))
    events = stream.receive_data(b'\x07\x1bdata: {"choices": []}\n\n')
    events += stream.receive_data(b"x-provider: 1\n" + sse(chunk({"content": "!"}, finish="stop")))
    events += stream.receive_eof()
    (warning,) = [event for event in events if isinstance(event, StreamWarning)]
    assert warning.kind == "sse_line_ignored" and "\\x07\\x1bdata" in warning.detail
    assert events[-1] == StreamEnded(is_clean=True, reason=None)
    assert stream.message()["content"] == "kept!"


def test_strict_sse_makes_a_line_with_an_unknown_field_a_protocol_error() -> None:
    stream = ChatStream(strict_sse=True)
    stream.receive_data(sse(chunk({"content": "kept"}), done=False))
    with pytest.raises(ProtocolError, match="unknown field"):
        stream.receive_data(b'\x07\x1bdata: {"choices": []}\n\n')
    assert stream.receive_eof()[-1].is_clean is False
    assert stream.message()["content"] == "kept"


@pytest.mark.parametrize("first", ['{"type": []}', '{"type": {"a": 1}}', '{"type": 5}'])
def test_a_first_payload_with_an_odd_type_field_is_read_as_an_openai_chunk(first: str) -> None:
    # found by fuzz/fuzz_core.py: dialect detection raised TypeError on an unhashable "type"
    stream = ChatStream()
    stream.receive_data(sse(first, chunk({"content": "ok"}, finish="stop")))
    assert stream.dialect == "openai-chat"
    assert stream.receive_eof()[-1].is_clean
    assert stream.message()["content"] == "ok"


def collect_until_error(stream: ChatStream, body: bytes) -> list[object]:
    events: list[object] = []
    with pytest.raises(ProtocolError):
        events += stream.receive_data(body)
    return events + stream.receive_eof()


def test_events_before_an_error_in_a_huge_read_are_not_lost() -> None:
    # found by fuzz/fuzz_core.py: a read over the decoder's slice size lost the events of its
    # earlier slices when a later slice was malformed
    body = sse(*[chunk({"content": "x"}) for _ in range(3000)], done=False) + b"data: not json\n\n"
    assert len(body) > 256 * 1024
    events = collect_until_error(ChatStream(), body)
    assert sum(isinstance(event, ContentDelta) for event in events) == 3000


def test_events_before_an_oversized_event_in_the_same_read_are_not_lost() -> None:
    # found by fuzz/fuzz_core.py: the decoder raised for a later event before handing out the
    # complete ones before it
    body = sse(chunk({"content": "first"}), done=False) + b"data: " + b"x" * 3000 + b"\n\n"
    events = collect_until_error(ChatStream(limits=Limits(max_event_size=2048)), body)
    assert [event.text for event in events if isinstance(event, ContentDelta)] == ["first"]
    assert isinstance(events[-1], StreamEnded) and "exceeds the limit" in (events[-1].reason or "")


def test_a_huge_event_hits_the_limit_not_memory() -> None:
    stream = ChatStream(limits=Limits(max_event_size=1024))
    with pytest.raises(LimitExceededError):
        stream.receive_data(b"data: " + b"x" * 4096)
    assert stream.receive_eof()[-1].is_clean is False


def test_a_body_that_is_not_sse_ends_uncleanly_with_a_warning_naming_the_line() -> None:
    stream = ChatStream()
    events = stream.receive_data(b"<html>502 Bad Gateway</html>\n")
    events += stream.receive_eof()
    warning, end = events
    assert isinstance(warning, StreamWarning) and "502 Bad Gateway" in warning.detail
    assert end == StreamEnded(is_clean=False, reason="the stream ended before any chunk")


def test_a_body_that_is_not_sse_is_a_protocol_error_naming_the_line_when_strict() -> None:
    stream = ChatStream(strict_sse=True)
    with pytest.raises(ProtocolError, match="502 Bad Gateway"):
        stream.receive_data(b"<html>502 Bad Gateway</html>\n")
    (end,) = stream.receive_eof()
    assert end.is_clean is False and "502 Bad Gateway" in (end.reason or "")


def test_an_empty_body_ends_uncleanly() -> None:
    stream = ChatStream()
    assert stream.receive_data(b": keep-alive\n\n") == []
    (end,) = stream.receive_eof()
    assert end == StreamEnded(is_clean=False, reason="the stream ended before any chunk")
