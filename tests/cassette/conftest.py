from __future__ import annotations

from pathlib import Path

import pytest

from streamproxy.cassette import Cassette, Chunk, Interaction, RecordedRequest, RecordedResponse

REPO = Path(__file__).resolve().parents[2]
RECORDINGS = REPO / "recordings"


def sse_cassette(
    bodies: list[bytes],
    *,
    request_bodies: list[object] | None = None,
    path: str = "/chat/completions",
) -> Cassette:
    """A cassette with one interaction per body; each body is one chunk per SSE event."""
    interactions = []
    for index, body in enumerate(bodies):
        request = None
        if request_bodies is not None:
            request = RecordedRequest(method="POST", path=path, body=request_bodies[index])
        pieces = [piece + b"\n\n" for piece in body.split(b"\n\n") if piece]
        chunks = [Chunk(10.0 * i, piece) for i, piece in enumerate(pieces)]
        response = RecordedResponse(
            status=200, headers={"content-type": "text/event-stream"}, chunks=chunks
        )
        interactions.append(Interaction(request=request, response=response))
    return Cassette(interactions=interactions, source="test")


@pytest.fixture
def thinking_cassette() -> Cassette:
    from streamproxy.cassette import load

    return load(RECORDINGS / "deepseek-thinking-tool-call-fragmented.cassette.json")
