"""The SSE decoder against the WHATWG rules and the edge cases real servers produce."""

from __future__ import annotations

import pytest

from streamproxy.core import LimitExceededError, ProtocolError, SSEDecoder, SSEMessage
from streamproxy.core.sse import IgnoredLine


def decode(data: bytes, *, split: int | None = None) -> list[SSEMessage]:
    decoder = SSEDecoder()
    messages: list[SSEMessage] = []
    if split is None:
        messages += decoder.feed(data)
    else:
        for start in range(0, len(data), split):
            messages += decoder.feed(data[start : start + split])
    tail, _ = decoder.close()
    return messages + tail


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(b"data: a\n\n", [SSEMessage("", "a")], id="lf"),
        pytest.param(b"data: a\r\n\r\n", [SSEMessage("", "a")], id="crlf"),
        pytest.param(b"data: a\r\r", [SSEMessage("", "a")], id="cr"),
        pytest.param(b"data: a\ndata: b\n\n", [SSEMessage("", "a\nb")], id="multi-line-data"),
        pytest.param(b"data:a\n\n", [SSEMessage("", "a")], id="no-space"),
        pytest.param(b"data:  a\n\n", [SSEMessage("", " a")], id="only-one-space-stripped"),
        pytest.param(b"event: error\ndata: x\n\n", [SSEMessage("error", "x")], id="event-field"),
        pytest.param(b": comment\n\ndata: x\n\n", [SSEMessage("", "x")], id="comment"),
        pytest.param(b"id: 7\n\n", [], id="id-alone-dispatches-nothing"),
        pytest.param(b"data\n\n", [], id="field-without-colon-is-empty-data"),
        pytest.param(b"data:\n\n", [], id="empty-data"),
        pytest.param(b"foo: bar\ndata: x\n\n", [SSEMessage("", "x")], id="unknown-field"),
        pytest.param(b"xdata: y\ndata: x\n\n", [SSEMessage("", "x")], id="glued-before-data"),
        pytest.param(b" data: y\n\n", [], id="space-before-data"),
        pytest.param(b"Data: y\n\n", [], id="field-names-are-case-sensitive"),
        pytest.param(b"<html>\n\ndata: x\n\n", [SSEMessage("", "x")], id="line-without-colon"),
        pytest.param(b"retry: 1x\ndata: x\n\n", [SSEMessage("", "x")], id="retry-not-digits"),
        pytest.param(b"\xef\xbb\xbfdata: x\n\n", [SSEMessage("", "x")], id="bom"),
        pytest.param(b"id: 3\ndata: x\n\n", [SSEMessage("", "x", "3")], id="id-kept"),
        pytest.param(b"retry: 10\ndata: x\n\n", [SSEMessage("", "x", None, 10)], id="retry"),
        pytest.param(b"data: x\n", [SSEMessage("", "x")], id="eof-without-blank-line"),
        pytest.param(b"data: \xff\n\n", [SSEMessage("", "\ufffd")], id="invalid-utf8-replaced"),
    ],
)
@pytest.mark.parametrize("split", [None, 1, 2, 3])
def test_decoding(body: bytes, expected: list[SSEMessage], split: int | None) -> None:
    assert decode(body, split=split) == expected


def test_crlf_split_between_pieces_is_one_line_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n\r") == [SSEMessage("", "a")]
    assert decoder.feed(b"\ndata: b\n\n") == [SSEMessage("", "b")]


def test_multibyte_character_split_across_pieces() -> None:
    body = "data: žluťoučký 🐎\n\n".encode()
    assert decode(body, split=1) == [SSEMessage("", "žluťoučký 🐎")]


def test_a_line_cut_at_eof_is_reported_as_truncated() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a": 1}\n\ndata: {"b"') == [SSEMessage("", '{"a": 1}')]
    messages, is_truncated = decoder.close()
    assert messages == [] and is_truncated


def test_an_event_over_the_limit_raises() -> None:
    decoder = SSEDecoder(max_event_size=100)
    with pytest.raises(LimitExceededError):
        for _ in range(20):
            decoder.feed(b"data: " + b"x" * 10 + b"\n")


def test_a_line_over_the_limit_raises_before_it_ends() -> None:
    decoder = SSEDecoder(max_event_size=100)
    with pytest.raises(LimitExceededError, match="an SSE event exceeds"):
        for _ in range(20):
            decoder.feed(b"x" * 10)


@pytest.mark.parametrize("split", [None, 1, 7, 50])
def test_the_limit_is_on_the_event_whatever_the_split(split: int | None) -> None:
    # 3 lines of 40 bytes: each line fits, the event does not
    body = (
        b"data: " + b"a" * 33 + b"\n" + b"data: " + b"b" * 33 + b"\n" + b": " + b"c" * 37 + b"\n\n"
    )
    with pytest.raises(LimitExceededError, match="an SSE event exceeds the limit of 100 bytes"):
        decode_limited(body, split, 100)
    assert decode_limited(body, split, 120) == [SSEMessage("", "a" * 33 + "\n" + "b" * 33)]


def decode_limited(body: bytes, split: int | None, limit: int) -> list[SSEMessage]:
    decoder = SSEDecoder(max_event_size=limit)
    size = split or len(body)
    messages: list[SSEMessage] = []
    for start in range(0, len(body), size):
        messages += decoder.feed(body[start : start + size])
    return messages + decoder.close()[0]


@pytest.mark.parametrize("split", [None, 1, 3])
def test_the_first_ignored_line_is_handed_out_once_in_its_place(split: int | None) -> None:
    body = b"data: a\n\nx-one: 1\ndata: b\n\nx-two: 2\n\ndata: c\n\n"
    decoder = SSEDecoder()
    raws: list[object] = []
    size = split or len(body)
    for start in range(0, len(body), size):
        raws += decoder.feed_raw(body[start : start + size])
    assert raws == [b"a", IgnoredLine("x-one: 1"), b"b", b"c"]


def test_strict_fields_make_an_unknown_field_an_error() -> None:
    decoder = SSEDecoder(strict_fields=True)
    assert decoder.feed(b"data: a\n\nid: 1\nretry: 5\n\n") == [SSEMessage("", "a")]
    with pytest.raises(ProtocolError, match="unknown field: 'x-one: 1'"):
        decoder.feed(b"x-one: 1\n")


def test_an_event_with_an_id_keeps_it_on_the_one_event_per_piece_path() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\n") == [SSEMessage("", "a")]
    assert decoder.feed(b"id: 7\ndata: b\n\n") == [SSEMessage("", "b", "7")]
    assert decoder.feed(b"data: c\n\n") == [SSEMessage("", "c", "7")]  # the last id stays


def test_agrees_with_httpx_sse_on_a_real_shaped_stream() -> None:
    # differential: httpx-sse's decoder (the project's chosen library) on the same lines
    from httpx_sse._decoders import SSEDecoder as HttpxSSEDecoder

    body = b": keep-alive\n\nevent: ping\ndata: {}\n\ndata: a\ndata: b\n\nid: 4\ndata: c\n\n"
    theirs = []
    reference = HttpxSSEDecoder()
    for line in body.decode().split("\n"):
        event = reference.decode(line)
        if event is not None and event.data:
            theirs.append((event.event if event.event != "message" else "", event.data))
    ours = [(message.event, message.data) for message in decode(body)]
    assert ours == theirs
