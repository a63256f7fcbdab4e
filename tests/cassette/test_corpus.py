"""Replay every cassette in recordings/ and every recording of ../shared/recordings."""

from __future__ import annotations

import httpx2
import pytest

from streamproxy.cassette import Faults, ReplayTransport, load, read_cassette, replay_into
from streamproxy.core import ChatStream, ContentDelta, StreamEnded, ToolCallInvalid, ToolCallReady
from streamproxy.core.stream import assemble
from tests.corpus import CORPUS, corpus_params

from .conftest import RECORDINGS

# What each project cassette must produce, per interaction: (ready tool names, invalid kinds,
# is_clean, content). Written from the cassettes' stated purpose, not from running them.
OWN_EXPECTED = {
    "deepseek-thinking-tool-call-fragmented": [(["get_weather"], [], True, "")],
    "openai-two-parallel-calls": [(["get_weather", "get_weather"], [], True, "")],
    "deepseek-cut-mid-arguments": [([], ["truncated"], False, "")],
    "demo-tool-loop": [
        (["get_weather"], [], True, ""),
        ([], [], True, "It's currently **18 °C** and partly cloudy in Paris."),
    ],
}


def _replayed_pieces(transport: ReplayTransport, body: object) -> list[bytes]:
    with (
        httpx2.Client(transport=transport) as client,
        client.stream("POST", "https://x/v1/chat/completions", json=body) as response,
    ):
        return list(response.iter_raw())


def test_every_project_cassette_has_expectations() -> None:
    names = {
        path.name.removesuffix(".cassette.json") for path in RECORDINGS.glob("*.cassette.json")
    }
    assert names == set(OWN_EXPECTED)


@pytest.mark.parametrize("name", sorted(OWN_EXPECTED))
def test_project_cassettes_replay_with_their_chunks_and_outcomes(name: str) -> None:
    cassette = load(RECORDINGS / f"{name}.cassette.json")
    transport = ReplayTransport(cassette)
    for interaction, (ready, invalid, is_clean, content) in zip(
        cassette.interactions, OWN_EXPECTED[name], strict=True
    ):
        assert interaction.request is not None
        pieces = _replayed_pieces(transport, interaction.request.body)
        assert pieces == [chunk.data for chunk in interaction.response.chunks]
        events = replay_into(ChatStream(), interaction)
        assert [e.name for e in events if isinstance(e, ToolCallReady)] == ready
        assert [e.kind for e in events if isinstance(e, ToolCallInvalid)] == invalid
        assert "".join(e.text for e in events if isinstance(e, ContentDelta)) == content
        assert isinstance(events[-1], StreamEnded) and events[-1].is_clean is is_clean


@pytest.mark.parametrize("name", corpus_params())
def test_shared_recordings_convert_and_replay_exactly(name: str) -> None:
    body = (CORPUS / f"{name}.sse").read_bytes()
    cassette = read_cassette(CORPUS / f"{name}.sse")
    (interaction,) = cassette.interactions
    assert interaction.response.body == body
    assert cassette.source and name in cassette.source

    pieces = _replayed_pieces(ReplayTransport(cassette), {"stream": True})
    assert b"".join(pieces) == body
    assert pieces == [chunk.data for chunk in interaction.response.chunks]

    expected_events, _ = assemble(body)
    assert replay_into(ChatStream(), interaction) == expected_events
    faults = Faults(seed=len(name), resplit=13, keepalive=0.2)
    assert replay_into(ChatStream(), interaction, faults=faults) == expected_events


def test_the_shared_directory_replays_as_one_cassette() -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is absent (looked for {CORPUS})")
    cassette = read_cassette(CORPUS)
    assert len(cassette) == len(list(CORPUS.glob("*.sse")))
