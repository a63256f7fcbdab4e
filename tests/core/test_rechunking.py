"""Split invariance: any split of any corpus recording gives the same events and result."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamproxy.core import ChatStream, Event, StreamEnded, ToolCallArgumentsDelta
from tests.corpus import corpus_names, load
from tests.helpers import feed

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
