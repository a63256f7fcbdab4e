"""The SSE decoder against the WHATWG rules and the edge cases real servers produce."""

from __future__ import annotations

import pytest

from streamproxy.core import LimitExceededError, SSEDecoder, SSEMessage


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
    with pytest.raises(LimitExceededError):
        for _ in range(20):
            decoder.feed(b"x" * 10)


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
