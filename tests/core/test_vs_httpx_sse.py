"""Differential: our SSE decoding against httpx-sse's, a spec-following client, as the oracle.

Two levels: the decoder's messages on generated SSE text (every field, comments, lines the spec
ignores, any line ending, any split), and ``ChatStream``'s assembled result on generated chat
streams with noise between the events, against what a client reading the same bytes with
httpx-sse gets when it hands each payload over (``receive_chunk``) as the openai SDK would.
"""

from __future__ import annotations

import orjson
from httpx_sse._decoders import SSEDecoder as OracleDecoder
from httpx_sse._decoders import SSELineDecoder as OracleLineDecoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamproxy.core import ChatStream, SSEDecoder, StreamWarning
from tests.helpers import call_delta, chunk


def oracle_events(body: bytes) -> list[tuple[str, str, str]]:
    """(event, data, last id) per event httpx-sse dispatches with data (no data: no message)."""
    lines = OracleLineDecoder()
    decoder = OracleDecoder()
    found = []
    # the spec's "UTF-8 decode" drops one leading byte order mark, which httpx-sse leaves to
    # the response's text decoding
    text = body.decode("utf-8-sig", errors="replace")
    for line in [*lines.decode(text), *lines.flush()] if text else []:
        event = decoder.decode(line.rstrip("\n"))
        if event is not None and event.data:
            found.append((event.event, event.data, event.id))
    return found


def our_events(body: bytes, size: int) -> list[tuple[str, str, str]]:
    decoder = SSEDecoder()
    messages = []
    for start in range(0, len(body), size):
        messages += decoder.feed(body[start : start + size])
    messages += decoder.close()[0]
    return [(message.event or "message", message.data, message.id or "") for message in messages]


WORD = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\r\n"), max_size=8
)
LINE = st.one_of(
    st.builds(lambda value: "data: " + value, WORD),
    st.builds(lambda value: "data:" + value, WORD),
    st.just("data"),
    st.builds(lambda value: "event: " + value, WORD),
    st.builds(lambda value: "id: " + value, WORD),
    st.builds(lambda value: "retry: " + value, st.sampled_from(["10", "x"])),
    st.builds(lambda value: ": " + value, WORD),
    st.builds(lambda name, value: name + ": " + value, WORD, WORD),  # any field, mostly unknown
    st.builds(lambda junk: junk + "data: x", st.sampled_from(["\x07", " ", "xyz", "\ufeff"])),
    st.just(""),
)


@settings(max_examples=500, deadline=None)
@given(
    lines=st.lists(LINE, max_size=20),
    line_end=st.sampled_from(["\n", "\r\n", "\r"]),
    size=st.sampled_from([1, 2, 7, 10_000]),
)
def test_the_decoder_reads_what_httpx_sse_reads(lines: list[str], line_end: str, size: int) -> None:
    body = ("".join(line + line_end for line in lines) + line_end * 2).encode()
    assert our_events(body, size) == oracle_events(body)


# ------------------------------------------------------------------ whole chat streams

NOISE = st.sampled_from(
    [
        b"",
        b": keep-alive\n\n",
        b"x-provider-field: 1\n",  # a provider's own field
        b"\x07\x1b",  # garbage glued before "data:": the line, and its chunk, are ignored
        b"  ",  # whitespace before "data:" too
        b"garbage\n",
        b"event: message\n",
    ]
)
FRAGMENT = st.text(max_size=5)


@st.composite
def chat_body(draw: st.DrawFn) -> bytes:
    payloads: list[dict[str, object]] = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"tool_calls": [call_delta(index=0, id="c0", name="f", arguments="")]}),
    ]
    for kind, text in draw(st.lists(st.tuples(st.sampled_from("ca"), FRAGMENT), max_size=12)):
        if kind == "c":
            payloads.append(chunk({"content": text}))
        else:
            payloads.append(chunk({"tool_calls": [call_delta(index=0, arguments=text)]}))
    payloads.append(chunk(finish="tool_calls"))
    frames = [draw(NOISE) + b"data: " + orjson.dumps(payload) + b"\n\n" for payload in payloads]
    frames.append(draw(NOISE) + b"data: [DONE]\n\n")
    return b"".join(frames)


def read_like_a_client(body: bytes) -> tuple[dict[str, object], bool]:
    """What httpx-sse reads from ``body``, handed to ``ChatStream`` chunk by chunk."""
    stream = ChatStream()
    done = False
    for _, data, _ in oracle_events(body):
        if data == "[DONE]":
            stream.receive_done()
            done = True
        else:
            stream.receive_chunk(orjson.loads(data))
    stream.receive_eof()
    return stream.completion(), done


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=chat_body(), size=st.sampled_from([1, 7, 64, 100_000]))
def test_the_assembled_result_is_what_a_spec_following_client_reads(body: bytes, size: int) -> None:
    stream = ChatStream()
    events = []
    for start in range(0, len(body), size):
        events += stream.receive_data(body[start : start + size])
    events += stream.receive_eof()
    expected, _ = read_like_a_client(body)
    assert stream.completion() == expected
    warnings = [event for event in events if isinstance(event, StreamWarning)]
    ignored = [warning for warning in warnings if warning.kind == "sse_line_ignored"]
    assert len(ignored) <= 1  # reported once per stream, never an error
    has_ignored_line = any(
        noise in body for noise in (b"x-provider", b"\x07", b"garbage", b"  data")
    )
    assert bool(ignored) == has_ignored_line
