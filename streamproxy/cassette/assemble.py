"""Replay a cassette's response straight into the assembler (no HTTP at all).

::

    stream = ChatStream(tools={"weather": Weather})
    events = replay_into(stream, read_cassette("recordings/deepseek-tool-call.cassette.json"))

Each recorded chunk (or each piece of a faulted delivery) is one ``receive_data`` call, so the
assembler sees the provider's real chunk boundaries; then ``receive_eof`` closes the stream. A
dropped connection is fed the same way: whatever arrived, then EOF.
"""

from __future__ import annotations

from streamproxy.cassette.faults import Faults, plan_delivery
from streamproxy.cassette.format import Cassette, Interaction, RecordedResponse
from streamproxy.core import ChatStream, Event, ProtocolError


def replay_into(
    stream: ChatStream,
    source: Cassette | Interaction | RecordedResponse,
    *,
    faults: Faults | None = None,
) -> list[Event]:
    """Feed a response's chunks into ``stream`` and close it; return every event.

    ``source`` may be a cassette (its first interaction is used), an interaction or a response.
    A ``ProtocolError`` from the core ends the feeding; the closing events are still returned.
    """
    response = _response_of(source)
    events: list[Event] = []
    try:
        for piece in plan_delivery(response.chunks, faults).pieces:
            events.extend(stream.receive_data(piece.data))
    except ProtocolError:
        pass
    events.extend(stream.receive_eof())
    return events


def assemble_completion(source: Cassette | Interaction | RecordedResponse) -> dict[str, object]:
    """The ``chat.completion`` object a non-streaming request would have got for this stream."""
    stream = ChatStream()
    replay_into(stream, source)
    return stream.completion()


def _response_of(source: Cassette | Interaction | RecordedResponse) -> RecordedResponse:
    if isinstance(source, Cassette):
        return source.interactions[0].response
    if isinstance(source, Interaction):
        return source.response
    return source
