"""Split invariance: any split of a stream gives the same events, result and end reason.

The streams are the corpus recordings (skipped when the corpus is absent) and generated ones
(always run): chat chunks of every kind with noise between them (keep-alives, lines the spec
ignores, garbage glued before ``data:``, payloads that are not JSON), any line ending, cut at EOF
or not, with default or tiny ``Limits``.
"""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamproxy.cassette import importers
from streamproxy.core import (
    ChatStream,
    Event,
    Limits,
    ProtocolError,
    StreamEnded,
    ToolCallArgumentsDelta,
)
from tests.corpus import corpus_names, load
from tests.helpers import call_delta, chunk, feed, sse

NAMES = corpus_names() or ["(corpus absent)"]

# Cut points into a body: up to 40 positions, as fractions so one strategy fits every length.
CUTS = st.lists(st.floats(min_value=0.0, max_value=1.0), max_size=40)


def _pieces(length: int, fractions: list[float]) -> list[int]:
    cuts = sorted({int(fraction * length) for fraction in fractions})
    return [b - a for a, b in zip([0, *cuts], cuts, strict=False)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(NAMES), fractions=CUTS)
def test_any_split_gives_the_same_events_and_result(name: str, fractions: list[float]) -> None:
    recording = load(name)
    whole_events, whole = feed(recording.body)
    split_events, split = feed(recording.body, _pieces(len(recording.body), fractions))
    assert split_events == whole_events
    assert split.completion() == whole.completion()


def _invariants(events: list[Event], stream: ChatStream) -> None:
    assert isinstance(events[-1], StreamEnded)
    assert not any(isinstance(event, StreamEnded) for event in events[:-1])
    message = stream.completion()["choices"][0]["message"] if stream.completion()["choices"] else {}
    for call in message.get("tool_calls", []):  # type: ignore[union-attr]
        fragments = "".join(
            event.fragment
            for event in events
            if isinstance(event, ToolCallArgumentsDelta) and event.id == call["id"]
        )
        assert call["function"]["arguments"] in (fragments, "{}")


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(NAMES))
def test_event_invariants_hold_on_every_recording(name: str) -> None:
    events, stream = feed(load(name).body)
    _invariants(events, stream)


# ------------------------------------------------------------------ generated streams, no corpus

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
FRAGMENT = st.one_of(TEXT, st.sampled_from(["{", "}", '{"a": 1}', ' {"q"', '"x"}', "[", ""]))


@st.composite
def chat_payload(draw: st.DrawFn) -> object:
    kind = draw(
        st.sampled_from(
            ["content", "reasoning", "head", "fragment", "loose", "finish", "usage", "error"]
        )
    )
    index = draw(st.integers(0, 2))
    if kind == "content":
        return chunk({"content": draw(TEXT)})
    if kind == "reasoning":
        return chunk({"reasoning_content": draw(TEXT), "content": None})
    if kind == "head":
        entry = call_delta(index=index, id=f"call_{index}", name="f", arguments=draw(FRAGMENT))
        return chunk({"tool_calls": [entry]})
    if kind == "fragment":
        return chunk({"tool_calls": [call_delta(index=index, arguments=draw(FRAGMENT))]})
    if kind == "loose":  # no index: continues the latest call
        return chunk({"tool_calls": [call_delta(arguments=draw(FRAGMENT))]})
    if kind == "finish":
        return chunk(finish=draw(st.sampled_from(["stop", "tool_calls", "length"])))
    if kind == "usage":
        return chunk(usage={"completion_tokens": draw(st.integers(0, 9))})
    return {"error": {"message": draw(TEXT)}}


# Whatever sits between events: nothing, a keep-alive, a line the spec ignores, garbage glued
# before "data:", a payload that is not JSON.
NOISE = st.sampled_from(
    [b"", b"", b"", b": keep-alive\n\n", b"x-provider-field: 1\n", b"\x07\x1b", b"data: {oops\n\n"]
)


@st.composite
def sse_bodies(draw: st.DrawFn) -> bytes:
    frames = []
    for payload in draw(st.lists(chat_payload(), max_size=14)):
        frames.append(draw(NOISE) + b"data: " + orjson.dumps(payload) + b"\n\n")
    if draw(st.booleans()):
        frames.append(b"data: [DONE]\n\n")
    body = b"".join(frames)
    line_end = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    body = body.replace(b"\n", line_end)
    if draw(st.booleans()):  # cut somewhere: EOF mid-event
        body = body[: draw(st.integers(0, len(body)))]
    return body


LIMITS = st.builds(
    Limits,
    max_event_size=st.sampled_from([24, 64, 160, 100_000]),
    max_arguments_size=st.sampled_from([4, 24, 100_000]),
    max_text_size=st.sampled_from([4, 24, 100_000]),
    max_tool_calls=st.sampled_from([1, 2, 128]),
    max_choices=st.sampled_from([1, 128]),
)


def run(body: bytes, sizes: list[int], limits: Limits) -> tuple[list[Event], dict[str, object]]:
    """Feed ``body`` cut into ``sizes`` (the rest in one piece), stopping at a protocol error."""
    stream = ChatStream(limits=limits)
    events: list[Event] = []
    position = 0
    try:
        for size in [*sizes, len(body)]:
            events += stream.receive_data(body[position : position + size])
            position += size
    except ProtocolError:
        pass
    events += stream.receive_eof()
    return events, stream.completion()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=sse_bodies(), fractions=CUTS, limits=st.one_of(st.just(Limits()), LIMITS))
def test_any_split_of_a_generated_stream_gives_the_same_events(
    body: bytes, fractions: list[float], limits: Limits
) -> None:
    whole_events, whole = run(body, [], limits)
    split_events, split = run(body, _pieces(len(body), fractions), limits)
    assert split_events[-1] == whole_events[-1]  # the same end, for the same reason
    assert split_events == whole_events
    assert split == whole


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=sse_bodies(), limits=LIMITS)
def test_byte_by_byte_gives_the_same_events_as_whole(body: bytes, limits: Limits) -> None:
    assert run(body, [1] * len(body), limits) == run(body, [], limits)


def _event_reads(body: bytes, group: int) -> list[int]:
    """Read sizes that cut ``body`` after every ``group``-th event (any line ending)."""
    events = importers.split_events(body)
    return [len(b"".join(events[i : i + group])) for i in range(0, len(events), group)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=sse_bodies(), group=st.integers(1, 3), limits=st.one_of(st.just(Limits()), LIMITS))
def test_reads_of_whole_events_give_the_same_events_as_whole(
    body: bytes, group: int, limits: Limits
) -> None:
    # a proxy reads event by event: its reads take the chunk template before the decoder
    # (stream.py), which must change nothing, noise, line endings and limits included
    assert run(body, _event_reads(body, group), limits) == run(body, [], limits)


def test_the_end_reason_of_an_oversized_event_does_not_depend_on_the_split() -> None:
    # found by fuzzing: fed whole the reason was "an SSE event exceeds...", cut it was
    # "an SSE line exceeds..."
    body = sse(chunk({"content": "x" * 200}))
    limits = Limits(max_event_size=100)
    reasons = {
        run(body, [size] * (len(body) // size), limits)[0][-1].reason  # type: ignore[attr-defined]
        for size in (1, 7, 64, len(body))
    }
    assert reasons == {"an SSE event exceeds the limit of 100 bytes"}


def test_a_long_comment_counts_toward_the_event_limit_whatever_the_split() -> None:
    body = b": " + b"k" * 300 + b"\n\n" + sse(chunk({"content": "a"}, finish="stop"))
    limits = Limits(max_event_size=100)
    outcomes = {str(run(body, [size] * (len(body) // size), limits)) for size in (1, 7, len(body))}
    assert len(outcomes) == 1
