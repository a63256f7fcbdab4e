"""The stream state machine: every (state, input) pair, the illegal ones included.

The pairs are generated from the enums, so a new state or input fails ``EXPECTED``'s coverage
check until its moves are written down here. Each pair is tested twice: on ``Assembler.move``
alone, and through ``ChatStream``'s public methods, reaching the state and applying the input the
way a caller would.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from streamproxy.core import ChatStream, ProtocolError, StreamEnded
from streamproxy.core.assembler import _TRANSITIONS, Assembler, StreamInput, StreamState
from tests.helpers import chunk, sse

S, In = StreamState, StreamInput
RAISES = None  # the input is illegal in that state

# Written by hand from the module docstring, not read from the code under test.
EXPECTED: dict[tuple[StreamState, StreamInput], StreamState | None] = {
    (S.IDLE, In.DATA): S.IDLE,
    (S.IDLE, In.PAYLOAD): S.STREAMING,
    (S.IDLE, In.END_MARK): S.ENDED_MARK,
    (S.IDLE, In.END): S.CLOSED,
    (S.IDLE, In.BROKEN): S.ERROR,
    (S.STREAMING, In.DATA): S.STREAMING,
    (S.STREAMING, In.PAYLOAD): S.STREAMING,
    (S.STREAMING, In.END_MARK): S.ENDED_MARK,
    (S.STREAMING, In.END): S.CLOSED,
    (S.STREAMING, In.BROKEN): S.ERROR,
    (S.ENDED_MARK, In.DATA): S.ENDED_MARK,
    (S.ENDED_MARK, In.PAYLOAD): S.ENDED_MARK,  # ignored, with a payload_after_end warning
    (S.ENDED_MARK, In.END_MARK): S.ENDED_MARK,
    (S.ENDED_MARK, In.END): S.CLOSED,
    (S.ENDED_MARK, In.BROKEN): S.ERROR,
    (S.ERROR, In.DATA): RAISES,
    (S.ERROR, In.PAYLOAD): RAISES,
    (S.ERROR, In.END_MARK): RAISES,
    (S.ERROR, In.END): S.CLOSED,  # the caller still gets the closing events
    (S.ERROR, In.BROKEN): S.ERROR,
    (S.CLOSED, In.DATA): RAISES,
    (S.CLOSED, In.PAYLOAD): RAISES,
    (S.CLOSED, In.END_MARK): RAISES,
    (S.CLOSED, In.END): S.CLOSED,  # ending twice is a no-op
    (S.CLOSED, In.BROKEN): RAISES,
}
PAIRS = list(itertools.product(StreamState, StreamInput))
PAIR_IDS = [f"{state.value}-{what.value}" for state, what in PAIRS]


def test_every_pair_has_an_expected_outcome() -> None:
    assert set(EXPECTED) == set(PAIRS)


def test_the_table_holds_exactly_the_legal_moves() -> None:
    legal = {pair: target for pair, target in EXPECTED.items() if target is not RAISES}
    assert legal == _TRANSITIONS


@pytest.mark.parametrize(("state", "what"), PAIRS, ids=PAIR_IDS)
def test_move(state: StreamState, what: StreamInput) -> None:
    assembler = Assembler()
    assembler.state = state
    expected = EXPECTED[(state, what)]
    if expected is RAISES:
        with pytest.raises(ProtocolError):
            assembler.move(what)
        # an illegal move leaves the stream broken; CLOSED is final and stays CLOSED
        assert assembler.state is (S.CLOSED if state is S.CLOSED else S.ERROR)
        with pytest.raises(ProtocolError):  # and every later input but END raises too
            assembler.move(StreamInput.PAYLOAD)
    else:
        assert assembler.move(what) is state
        assert assembler.state is expected


# ------------------------------------------------------------------ through ChatStream

NOT_JSON = b"data: not json\n\n"


def _reach(state: StreamState) -> ChatStream:
    """A stream brought to ``state`` by public calls."""
    stream = ChatStream()
    if state is S.STREAMING:
        stream.receive_data(sse(chunk({"content": "a"}), done=False))
    elif state is S.ENDED_MARK:
        stream.receive_data(sse(chunk({"content": "a"}, finish="stop")))
    elif state is S.ERROR:
        with pytest.raises(ProtocolError):
            stream.receive_data(NOT_JSON)
    elif state is S.CLOSED:
        stream.receive_eof()
    assert stream.state is state
    return stream


def _broken(stream: ChatStream) -> None:
    stream.receive_data(NOT_JSON)


APPLY: dict[StreamInput, Callable[[ChatStream], object]] = {
    In.DATA: lambda stream: stream.receive_data(b": keep-alive\n\n"),
    In.PAYLOAD: lambda stream: stream.receive_chunk(chunk({"content": "b"})),
    In.END_MARK: lambda stream: stream.receive_done(),
    In.END: lambda stream: stream.receive_eof(),
    In.BROKEN: _broken,
}


def test_every_input_has_a_public_call() -> None:
    assert set(APPLY) == set(StreamInput)


@pytest.mark.parametrize(("state", "what"), PAIRS, ids=PAIR_IDS)
def test_move_through_chat_stream(state: StreamState, what: StreamInput) -> None:
    stream = _reach(state)
    expected = EXPECTED[(state, what)]
    if what is In.BROKEN and expected is S.ERROR:
        # the input itself is the breakage: it raises, and the stream is then broken
        with pytest.raises(ProtocolError, match="not JSON"):
            APPLY[what](stream)
        assert stream.state is S.ERROR
        assert stream.receive_eof()[-1].is_clean is False
        return
    if expected is RAISES:
        with pytest.raises(ProtocolError, match=r"broken|ended"):
            APPLY[what](stream)
        assert stream.state is (S.CLOSED if state is S.CLOSED else S.ERROR)
        if state is S.ERROR:  # the closing events still come, once
            closing = stream.receive_eof()
            assert isinstance(closing[-1], StreamEnded) and not closing[-1].is_clean
        assert stream.receive_eof() == []
        return
    events = APPLY[what](stream)
    assert stream.state is expected
    if what is In.END:
        ends = [event for event in events if isinstance(event, StreamEnded)]  # type: ignore[attr-defined]
        assert len(ends) == (0 if state is S.CLOSED else 1)


def test_a_payload_after_the_end_mark_is_ignored_with_a_warning() -> None:
    stream = _reach(S.ENDED_MARK)
    (warning,) = stream.receive_chunk(chunk({"content": "late"}))
    assert getattr(warning, "kind", None) == "payload_after_end"
    assert stream.message()["content"] == "a"


def test_the_error_names_the_first_breakage_for_every_later_call() -> None:
    stream = _reach(S.ERROR)
    for call in (APPLY[In.DATA], APPLY[In.PAYLOAD], APPLY[In.END_MARK]):
        with pytest.raises(ProtocolError, match="the stream is broken: an SSE event's data"):
            call(stream)
