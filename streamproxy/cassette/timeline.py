"""A recorded stream as a timeline: ``build_timeline(cassette) -> Timeline`` (no I/O).

Each interaction's response chunks are fed, in order, to a ``ChatStream``; every event a chunk
completes is placed at that chunk's time offset. What comes out:

- ``tracks``: one row each for content, reasoning and refusal text, and one per tool call for its
  argument fragments. A row never keeps one entry per fragment: fragments are summed into at most
  ``bin_count`` equal bins over the interaction's span, so a 1 MB call in 50,000 fragments is as
  small as a 20-piece answer. A row keeps a bounded sample of its text (head and tail).
- ``calls``: per tool call, when it started (``ToolCallStarted``, which the core sends with the
  call's first argument fragment: a name may still grow until then) and when it was sealed
  (``ToolCallReady``) or refused (``ToolCallInvalid``, with its kind and reason), its size and
  fragment count.
- ``stalls``: silences longer than ``stall_ms`` between two chunks that carried data (a chunk
  that completes no event, like a keep-alive comment, does not end a stall).
- the interaction's figures: chunks, bytes, first byte, first token, finish reason, how it ended.

The axis is milliseconds since the request was sent (the cassette's ``t``). A cassette imported
from a bare body has every ``t`` at 0; its axis is then the chunk number (``axis == "chunk"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Literal

from streamproxy.cassette.format import Cassette, Chunk, Interaction
from streamproxy.core import (
    ChatStream,
    ChoiceFinished,
    ContentDelta,
    Event,
    ProtocolError,
    ReasoningDelta,
    RefusalDelta,
    StreamEnded,
    ToolCallArgumentsDelta,
    ToolCallInvalid,
    ToolCallReady,
    ToolCallStarted,
    UpstreamErrorReported,
    UsageReported,
)

__all__ = [
    "DEFAULT_BIN_COUNT",
    "DEFAULT_STALL_MS",
    "Bin",
    "CallMark",
    "InteractionTimeline",
    "Stall",
    "Timeline",
    "Track",
    "build_timeline",
    "interaction_timeline",
]

DEFAULT_BIN_COUNT = 240
DEFAULT_STALL_MS = 1000.0
SAMPLE_HEAD = 2000
SAMPLE_TAIL = 500

TrackKind = Literal["content", "reasoning", "refusal", "arguments"]
Axis = Literal["ms", "chunk"]


@dataclass(frozen=True, slots=True)
class Bin:
    """The fragments of one track that arrived in ``[start, end)`` on the axis."""

    start: float
    end: float
    fragments: int
    size: int
    """Characters."""


@dataclass(frozen=True, slots=True)
class Track:
    """One row of the timeline: a kind of text, or one call's arguments."""

    kind: TrackKind
    label: str
    call_id: str | None
    bins: tuple[Bin, ...]
    """Only the bins that hold something, in order."""
    fragments: int
    size: int
    first: float
    last: float
    sample: str
    """The text's head (and tail, after `` … ``) when it is long."""


@dataclass(frozen=True, slots=True)
class CallMark:
    """A tool call: where it started and where it was sealed or refused."""

    id: str
    name: str
    position: int
    started: float
    sealed: float | None
    """When ``ToolCallReady`` or ``ToolCallInvalid`` came; None when neither did."""
    outcome: Literal["ready", "invalid", "open"]
    invalid_kind: str | None
    reason: str | None
    size: int
    fragments: int


@dataclass(frozen=True, slots=True)
class Stall:
    """A silence between two chunks that carried data."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True, slots=True, kw_only=True)
class InteractionTimeline:
    """One interaction's stream, placed on its axis."""

    index: int
    label: str
    status: int
    is_event_stream: bool
    axis: Axis
    span: float
    """The axis' end: the last chunk's offset (or the chunk count)."""
    chunk_count: int
    byte_count: int
    first_byte: float | None
    first_token: float | None
    """The first content, reasoning, refusal or tool call."""
    chunk_bins: tuple[Bin, ...]
    """Chunk arrivals, binned like the tracks (``size`` in bytes)."""
    tracks: tuple[Track, ...]
    calls: tuple[CallMark, ...]
    stalls: tuple[Stall, ...]
    finish_reason: str | None
    finished_at: float | None
    is_clean: bool
    end_reason: str | None
    errors: tuple[str, ...]
    usage: dict[str, object] | None


@dataclass(frozen=True, slots=True)
class Timeline:
    """Every interaction of a cassette."""

    source: str | None
    interactions: tuple[InteractionTimeline, ...]
    stall_ms: float


def build_timeline(
    cassette: Cassette,
    *,
    stall_ms: float = DEFAULT_STALL_MS,
    bin_count: int = DEFAULT_BIN_COUNT,
) -> Timeline:
    """The timeline of every interaction in ``cassette``."""
    return Timeline(
        source=cassette.source,
        interactions=tuple(
            interaction_timeline(item, index, stall_ms=stall_ms, bin_count=bin_count)
            for index, item in enumerate(cassette)
        ),
        stall_ms=stall_ms,
    )


def interaction_timeline(
    interaction: Interaction,
    index: int = 0,
    *,
    stall_ms: float = DEFAULT_STALL_MS,
    bin_count: int = DEFAULT_BIN_COUNT,
) -> InteractionTimeline:
    """One interaction's timeline (see the module docstring)."""
    if bin_count < 1:
        raise ValueError("bin_count must be at least 1")
    response = interaction.response
    chunks = response.chunks
    is_timed = any(chunk.offset_ms != chunks[0].offset_ms for chunk in chunks[1:])
    axis: Axis = "ms" if is_timed or len(chunks) <= 1 else "chunk"
    positions = [chunk.offset_ms if axis == "ms" else float(i) for i, chunk in enumerate(chunks)]
    span = positions[-1] if positions else 0.0
    binner = _Binner(span, bin_count)
    reader = _Reader(binner)
    if response.is_event_stream:
        reader.read(chunks, positions)
    chunk_bins = _Accumulator(binner)
    for chunk, position in zip(chunks, positions, strict=True):
        chunk_bins.add(position, len(chunk.data))
    return InteractionTimeline(
        index=index,
        label=_label(interaction),
        status=response.status,
        is_event_stream=response.is_event_stream,
        axis=axis,
        span=span,
        chunk_count=len(chunks),
        byte_count=sum(len(chunk.data) for chunk in chunks),
        first_byte=positions[0] if positions else None,
        first_token=reader.first_token,
        chunk_bins=chunk_bins.bins(),
        tracks=reader.tracks(),
        calls=reader.calls(),
        stalls=tuple(_stalls(reader.data_positions, stall_ms if axis == "ms" else None)),
        finish_reason=reader.finish_reason,
        finished_at=reader.finished_at,
        is_clean=reader.is_clean,
        end_reason=reader.end_reason,
        errors=tuple(reader.errors),
        usage=reader.usage,
    )


# --------------------------------------------------------------------------- binning


class _Binner:
    """Equal bins over ``[0, span]``."""

    def __init__(self, span: float, count: int) -> None:
        self.count = count if span > 0 else 1
        self.width = span / self.count if span > 0 else 1.0

    def index(self, position: float) -> int:
        return min(max(int(position / self.width), 0), self.count - 1)

    def bounds(self, index: int) -> tuple[float, float]:
        return index * self.width, (index + 1) * self.width


class _Accumulator:
    """Fragment counts and sizes per bin, plus a bounded sample of the text."""

    def __init__(self, binner: _Binner) -> None:
        self.binner = binner
        self.fragments: dict[int, int] = {}
        self.sizes: dict[int, int] = {}
        self.total_fragments = 0
        self.total_size = 0
        self.first: float | None = None
        self.last = 0.0
        self.head: list[str] = []
        self.head_size = 0
        self.tail = ""

    def add(self, position: float, size: int, text: str = "") -> None:
        index = self.binner.index(position)
        self.fragments[index] = self.fragments.get(index, 0) + 1
        self.sizes[index] = self.sizes.get(index, 0) + size
        self.total_fragments += 1
        self.total_size += size
        if self.first is None:
            self.first = position
        self.last = position
        if self.head_size < SAMPLE_HEAD:
            self.head.append(text[: SAMPLE_HEAD - self.head_size])
            self.head_size += len(self.head[-1])
            text = text[len(self.head[-1]) :]
        if text:
            self.tail = (self.tail + text)[-SAMPLE_TAIL:]

    def bins(self) -> tuple[Bin, ...]:
        return tuple(
            Bin(*self.binner.bounds(index), self.fragments[index], self.sizes[index])
            for index in sorted(self.fragments)
        )

    def sample(self) -> str:
        head = "".join(self.head)
        skipped = self.total_size - len(head) - len(self.tail)
        if not self.tail:
            return head
        return head + (" … " if skipped > 0 else "") + self.tail


# --------------------------------------------------------------------------- events


@dataclass(slots=True)
class _Call:
    id: str
    name: str
    position: int
    started: float
    arguments: _Accumulator
    sealed: float | None = None
    outcome: Literal["ready", "invalid", "open"] = "open"
    invalid_kind: str | None = None
    reason: str | None = None


@dataclass(slots=True)
class _Reader:
    """Feeds the chunks to a ``ChatStream`` and places what each one completed."""

    binner: _Binner
    text: dict[TrackKind, _Accumulator] = field(default_factory=dict)
    call_order: list[_Call] = field(default_factory=list)
    by_id: dict[str, _Call] = field(default_factory=dict)
    data_positions: list[float] = field(default_factory=list)
    first_token: float | None = None
    finish_reason: str | None = None
    finished_at: float | None = None
    is_clean: bool = False
    end_reason: str | None = None
    errors: list[str] = field(default_factory=list)
    usage: dict[str, object] | None = None

    def read(self, chunks: Sequence[Chunk], positions: Sequence[float]) -> None:
        stream = ChatStream(previews=False)
        position = 0.0
        for chunk, position in zip(chunks, positions, strict=True):
            try:
                events = stream.receive_data(chunk.data)
            except ProtocolError as error:
                self.errors.append(f"at {position:g}: {error}")
                break
            if events:
                self.data_positions.append(position)
            self.place(events, position)
        self.place(stream.receive_eof(), position)

    def place(self, events: list[Event], position: float) -> None:
        for event in events:
            if isinstance(event, ContentDelta | ReasoningDelta | RefusalDelta):
                if event.choice != 0 or not event.text:
                    continue
                kind: TrackKind = (
                    "content"
                    if isinstance(event, ContentDelta)
                    else "reasoning"
                    if isinstance(event, ReasoningDelta)
                    else "refusal"
                )
                self._token(position)
                accumulator = self.text.setdefault(kind, _Accumulator(self.binner))
                accumulator.add(position, len(event.text), event.text)
            elif isinstance(event, ToolCallStarted):
                self._token(position)
                call = _Call(
                    event.id, event.name, event.position, position, _Accumulator(self.binner)
                )
                self.call_order.append(call)
                self.by_id[event.id] = call
            elif isinstance(event, ToolCallArgumentsDelta):
                found = self.by_id.get(event.id)
                if found is not None and event.fragment:
                    found.arguments.add(position, len(event.fragment), event.fragment)
            elif isinstance(event, ToolCallReady | ToolCallInvalid):
                found = self.by_id.get(event.id)
                if found is None:
                    continue
                found.sealed = position
                if isinstance(event, ToolCallReady):
                    found.outcome = "ready"
                else:
                    found.outcome = "invalid"
                    found.invalid_kind = event.kind
                    found.reason = event.reason
            elif isinstance(event, ChoiceFinished):
                if event.choice == 0:
                    self.finish_reason = event.finish_reason
                    self.finished_at = position
            elif isinstance(event, UsageReported):
                self.usage = event.usage
            elif isinstance(event, UpstreamErrorReported):
                self.errors.append(f"at {position:g}: the upstream reported: {event.message}")
            elif isinstance(event, StreamEnded):
                self.is_clean = event.is_clean
                self.end_reason = event.reason

    def _token(self, position: float) -> None:
        if self.first_token is None:
            self.first_token = position

    def tracks(self) -> tuple[Track, ...]:
        labels = {"content": "content", "reasoning": "reasoning", "refusal": "refusal"}
        tracks = [
            _track(kind, labels[kind], None, self.text[kind])
            for kind in ("reasoning", "content", "refusal")
            if kind in self.text
        ]
        for call in self.call_order:
            tracks.append(_track("arguments", call.name, call.id, call.arguments))
        return tuple(tracks)

    def calls(self) -> tuple[CallMark, ...]:
        return tuple(
            CallMark(
                id=call.id,
                name=call.name,
                position=call.position,
                started=call.started,
                sealed=call.sealed,
                outcome=call.outcome,
                invalid_kind=call.invalid_kind,
                reason=call.reason,
                size=call.arguments.total_size,
                fragments=call.arguments.total_fragments,
            )
            for call in self.call_order
        )


def _track(kind: TrackKind, label: str, call_id: str | None, source: _Accumulator) -> Track:
    first = source.first if source.first is not None else 0.0
    return Track(
        kind=kind,
        label=label,
        call_id=call_id,
        bins=source.bins(),
        fragments=source.total_fragments,
        size=source.total_size,
        first=first,
        last=source.last,
        sample=source.sample(),
    )


def _stalls(positions: Sequence[float], threshold: float | None) -> list[Stall]:
    if threshold is None:
        return []
    return [
        Stall(before, after) for before, after in pairwise(positions) if after - before > threshold
    ]


def _label(interaction: Interaction) -> str:
    request = interaction.request
    if request is None:
        return "(any request)"
    parts = [f"{request.method} {request.path}"]
    body = request.body
    if isinstance(body, dict):
        if isinstance(body.get("model"), str):
            parts.append(str(body["model"]))
        messages = body.get("messages")
        if isinstance(messages, list):
            parts.append(f"{len(messages)} message{'s' if len(messages) != 1 else ''}")
    return " · ".join(parts)
