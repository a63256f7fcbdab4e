"""Recordings: cassettes that keep real chunk sequences, recorded live and replayed anywhere.

- :mod:`~streamproxy.cassette.format`: the versioned cassette format, ``load``/``dump``.
- :class:`RecordTransport`: wraps any httpx2 (or httpx) transport and records what passes
  through.
- :class:`ReplayTransport` (sync and async): answers an httpx2 (or httpx) client from a cassette.
- :func:`create_replay_app`: the loopback OpenAI-compatible replay server (Starlette).
- :func:`replay_into`: feeds a recorded body straight into a ``ChatStream``.
- :class:`Faults`: seeded, reproducible damage applied on replay.
- :func:`read_cassette`: reads cassettes, raw ``.sse`` bodies, VCR YAML and JSON-lines fixtures.
"""

from __future__ import annotations

from streamproxy.cassette.assemble import assemble_completion, replay_into
from streamproxy.cassette.faults import Faults, plan_delivery
from streamproxy.cassette.format import (
    Cassette,
    Chunk,
    Interaction,
    RecordedRequest,
    RecordedResponse,
    dump,
    dumps,
    load,
    loads,
)
from streamproxy.cassette.http import Timing
from streamproxy.cassette.importers import read_cassette
from streamproxy.cassette.match import Matcher, Player, match_request, match_turn
from streamproxy.cassette.record import RecordTransport
from streamproxy.cassette.replay import AsyncReplayTransport, Replayer, ReplayTransport

__all__ = [
    "AsyncReplayTransport",
    "Cassette",
    "Chunk",
    "Faults",
    "Interaction",
    "Matcher",
    "Player",
    "RecordTransport",
    "RecordedRequest",
    "RecordedResponse",
    "ReplayTransport",
    "Replayer",
    "Timing",
    "assemble_completion",
    "create_replay_app",
    "dump",
    "dumps",
    "load",
    "loads",
    "match_request",
    "match_turn",
    "plan_delivery",
    "read_cassette",
    "replay_into",
]


def __getattr__(name: str) -> object:
    # The server needs starlette: import it on first use only.
    if name == "create_replay_app":
        from streamproxy.cassette.server import create_replay_app

        return create_replay_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
