"""Each fault reshapes the body as documented and gives the assembler's documented outcome."""

from __future__ import annotations

import httpx2
import pytest

from streamproxy.cassette import Faults, ReplayTransport, plan_delivery, replay_into
from streamproxy.cassette.faults import KEEPALIVE_COMMENT, error_frame
from streamproxy.core import (
    ChatStream,
    StreamEnded,
    ToolCallInvalid,
    ToolCallReady,
    UpstreamErrorReported,
)

from .conftest import RECORDINGS

# Seeds for the reshaping faults: a handful is enough to cover splits inside every token
# (each seed moves every boundary), and keeps the module well under a second.
SEEDS = range(5)
OWN_CASSETTES = sorted(RECORDINGS.glob("*.cassette.json"))


def _body(cassette) -> bytes:
    return cassette.interactions[0].response.body


def _event_ends(body: bytes) -> list[int]:
    return [i + 2 for i in range(len(body) - 1) if body[i : i + 2] == b"\n\n"]


def _inside_arguments(body: bytes) -> int:
    """A byte offset in the middle of the fragment that carries 'Berlin'."""
    return body.index(b'"arguments":"lin"') + 10


def test_no_faults_delivers_the_recorded_chunks(thinking_cassette) -> None:
    chunks = thinking_cassette.interactions[0].response.chunks
    delivery = plan_delivery(chunks)
    assert [p.data for p in delivery.pieces] == [c.data for c in chunks]
    assert [p.recorded_ms for p in delivery.pieces] == [c.offset_ms for c in chunks]
    assert not delivery.is_dropped


def test_cut_at_ends_the_body_there_and_the_call_is_truncated(thinking_cassette) -> None:
    body = _body(thinking_cassette)
    at = _inside_arguments(body)
    delivery = plan_delivery(thinking_cassette.interactions[0].response.chunks, Faults(cut_at=at))
    assert delivery.body == body[:at] and not delivery.is_dropped
    events = replay_into(ChatStream(), thinking_cassette, faults=Faults(cut_at=at))
    (invalid,) = [e for e in events if isinstance(e, ToolCallInvalid)]
    assert invalid.kind == "truncated" and invalid.arguments == '{"city": "Ber'
    assert not [e for e in events if isinstance(e, ToolCallReady)]
    assert events[-1] == StreamEnded(is_clean=False, reason=events[-1].reason)
    assert not events[-1].is_clean


def test_drop_at_raises_a_transport_error_after_the_bytes_before_it(thinking_cassette) -> None:
    body = _body(thinking_cassette)
    at = _inside_arguments(body)
    received = b""
    transport = ReplayTransport(thinking_cassette, faults=Faults(drop_at=at))
    with (
        httpx2.Client(transport=transport) as client,
        client.stream("POST", "https://x/chat/completions", json={"stream": True}) as response,
        pytest.raises(httpx2.RemoteProtocolError, match=f"dropped after {at} bytes"),
    ):
        for data in response.iter_raw():
            received += data
    assert received == body[:at]
    events = replay_into(ChatStream(), thinking_cassette, faults=Faults(drop_at=at))
    assert [e.kind for e in events if isinstance(e, ToolCallInvalid)] == ["truncated"]
    assert isinstance(events[-1], StreamEnded) and not events[-1].is_clean


def test_error_after_sends_an_in_band_error_and_ends(thinking_cassette) -> None:
    body = _body(thinking_cassette)
    ends = _event_ends(body)
    in_call = next(i for i, end in enumerate(ends) if end > _inside_arguments(body))
    faults = Faults(error_after=in_call, error_message="overloaded")
    delivery = plan_delivery(thinking_cassette.interactions[0].response.chunks, faults)
    assert delivery.body == body[: ends[in_call - 1]] + error_frame("overloaded")
    events = replay_into(ChatStream(), thinking_cassette, faults=faults)
    (reported,) = [e for e in events if isinstance(e, UpstreamErrorReported)]
    assert reported.message == "overloaded"
    assert [e.kind for e in events if isinstance(e, ToolCallInvalid)] == ["upstream_error"]
    assert isinstance(events[-1], StreamEnded) and not events[-1].is_clean


def test_error_after_more_events_than_exist_appends_it_at_the_end(thinking_cassette) -> None:
    body = _body(thinking_cassette)
    delivery = plan_delivery(
        thinking_cassette.interactions[0].response.chunks, Faults(error_after=10_000)
    )
    assert delivery.body == body + error_frame(Faults().error_message)


def test_stall_delays_everything_from_its_byte_on(thinking_cassette) -> None:
    at = _inside_arguments(_body(thinking_cassette))
    faults = Faults(stall_at=at, stall_seconds=2.5, resplit=50, seed=3)
    delivery = plan_delivery(thinking_cassette.interactions[0].response.chunks, faults)
    sizes_before = 0
    for piece in delivery.pieces:
        assert piece.extra_ms == (2500.0 if sizes_before >= at else 0.0)
        sizes_before += len(piece.data)
    assert delivery.body == _body(thinking_cassette)
    assert replay_into(ChatStream(), thinking_cassette, faults=faults) == replay_into(
        ChatStream(), thinking_cassette
    )


def test_keepalive_inserts_comments_between_events_and_changes_no_event(thinking_cassette) -> None:
    faults = Faults(keepalive=1.0)
    delivery = plan_delivery(thinking_cassette.interactions[0].response.chunks, faults)
    body = _body(thinking_cassette)
    assert delivery.body.count(KEEPALIVE_COMMENT) == len(_event_ends(body))
    assert delivery.body.replace(KEEPALIVE_COMMENT, b"") == body
    assert delivery.body.startswith(KEEPALIVE_COMMENT)
    assert replay_into(ChatStream(), thinking_cassette, faults=faults) == replay_into(
        ChatStream(), thinking_cassette
    )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("path", OWN_CASSETTES, ids=lambda p: p.stem)
def test_resplit_and_coalesce_keep_the_bytes_and_the_events(path, seed: int) -> None:
    from streamproxy.cassette import load

    cassette = load(path)
    for interaction in cassette.interactions:
        chunks = interaction.response.chunks
        expected = replay_into(ChatStream(), interaction)
        for faults in (
            Faults(seed=seed, resplit=7),
            Faults(seed=seed, coalesce=4),
            Faults(seed=seed, resplit=3, coalesce=3, keepalive=0.5),
        ):
            delivery = plan_delivery(chunks, faults)
            assert delivery.body.replace(KEEPALIVE_COMMENT, b"") == interaction.response.body
            if faults.resplit == 7:
                assert max(len(p.data) for p in delivery.pieces) <= 7
            if faults.coalesce == 4:
                assert len(delivery.pieces) < len(chunks)
            assert replay_into(ChatStream(), interaction, faults=faults) == expected


def test_the_same_seed_gives_the_same_delivery_and_another_seed_another(thinking_cassette) -> None:
    chunks = thinking_cassette.interactions[0].response.chunks

    def pieces(seed: int) -> list[bytes]:
        faults = Faults(seed=seed, resplit=9, coalesce=3, keepalive=0.3)
        return [p.data for p in plan_delivery(chunks, faults).pieces]

    assert pieces(7) == pieces(7)
    assert pieces(7) != pieces(8)


@pytest.mark.parametrize(
    "options",
    [{"cut_at": -1}, {"resplit": 0}, {"coalesce": 0}, {"keepalive": 1.5}, {"stall_seconds": -1}],
    ids=str,
)
def test_out_of_range_faults_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must be|probability"):
        Faults(**options)  # type: ignore[arg-type]
