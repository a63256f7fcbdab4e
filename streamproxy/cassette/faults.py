"""Seeded, reproducible faults applied to a recorded body on replay.

:func:`plan_delivery` turns a response's chunks into the :class:`Delivery` a transport or the
replay server sends: pieces of bytes, each with the time it is due. Faults are applied in this
order, every byte offset counting bytes of the body *as recorded*:

1. ``cut_at=N``: the body ends cleanly after N bytes (EOF mid-event or mid-tool-call).
2. ``drop_at=N``: N bytes are sent, then the connection is dropped (a transport error).
3. ``garbage_at=N`` with ``garbage_size``: that many random bytes are inserted before byte N
   (a proxy or a broken gateway corrupting the stream); the body goes on after them.
4. ``huge_event=S``: one extra SSE event of S bytes (a content delta) after the first event,
   for testing the event size limit.
5. ``error_after=E``: after E SSE events (or all of them, if fewer) an in-band error frame
   ``data: {"error": {...}}`` is sent and the body ends there (no ``[DONE]``).
6. ``stall_at=N`` with ``stall_seconds``: the bytes before N arrive, then nothing for that long.
7. ``keepalive=P``: before each SSE event, with probability P, a ``: keep-alive`` comment.
8. ``resplit=K``: the body is cut again at random byte boundaries into pieces of 1..K bytes
   (original chunk boundaries are forgotten).
9. ``coalesce=K``: runs of 1..K consecutive pieces are merged into one.

``status=CODE`` replaces the whole response instead: that status, ``content-type:
application/json`` and an OpenAI-shaped error body (:func:`status_error_body`), with a
``Retry-After`` header when ``retry_after`` is set. ``status=200`` is a JSON error body under a
success status, as some gateways send. The other faults do not apply to it.

All randomness comes from ``random.Random(seed)``, created afresh for each response, so the same
seed gives the same delivery every time.

Every field is checked for its type and bounds when a ``Faults`` is made (a ``ValueError`` naming
the field): byte offsets and counts are integers >= 0 (``true`` is not one), times are finite
numbers, ``huge_event`` is at most :data:`MAX_HUGE_EVENT` bytes (twice the core's default event
limit, so that limit can be tested, and no more), ``garbage_size`` at most :data:`MAX_GARBAGE`,
``stall_seconds`` and ``retry_after`` at most :data:`MAX_SECONDS`, ``error_message`` at most
:data:`MAX_ERROR_MESSAGE` characters.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from streamproxy.cassette.format import Chunk

KEEPALIVE_COMMENT = b": keep-alive\n\n"
_MIN_HUGE_EVENT = 128
MAX_HUGE_EVENT = 32 * 1024 * 1024
"""The largest ``huge_event``: 32 MiB (the core's default event limit is 16 MiB)."""
MAX_GARBAGE = 1024 * 1024
"""The largest ``garbage_size``: 1 MiB."""
MAX_SECONDS = 3600.0
"""The longest ``stall_seconds`` or ``retry_after``: an hour."""
MAX_ERROR_MESSAGE = 4096
"""The longest ``error_message``, in characters."""
_MAX_INTEGER = 2**63 - 1
DEFAULT_ERROR_MESSAGE = "injected fault: upstream error in the middle of the stream"

# A blank line ends an SSE event (WHATWG "event stream interpretation": CRLF, LF or CR).
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


@dataclass(frozen=True, slots=True, kw_only=True)
class Faults:
    """What to break on replay (every field off by default). See the module docstring."""

    seed: int = 0
    cut_at: int | None = None
    drop_at: int | None = None
    error_after: int | None = None
    error_message: str = DEFAULT_ERROR_MESSAGE
    stall_at: int | None = None
    stall_seconds: float = 0.0
    keepalive: float = 0.0
    resplit: int | None = None
    coalesce: int | None = None
    garbage_at: int | None = None
    garbage_size: int = 32
    huge_event: int | None = None
    status: int | None = None
    retry_after: float | None = None

    def __post_init__(self) -> None:
        _integer("seed", self.seed, -_MAX_INTEGER)
        for name in ("cut_at", "drop_at", "error_after", "stall_at", "garbage_at"):
            _optional_integer(name, getattr(self, name), 0)
        _optional_integer("resplit", self.resplit, 1)
        _optional_integer("coalesce", self.coalesce, 1)
        _integer("garbage_size", self.garbage_size, 1, MAX_GARBAGE)
        _optional_integer("huge_event", self.huge_event, _MIN_HUGE_EVENT, MAX_HUGE_EVENT)
        _optional_integer("status", self.status, 100, 599, what="an HTTP status")
        _number("keepalive", self.keepalive, 1.0, what="a probability in [0, 1]")
        _number("stall_seconds", self.stall_seconds, MAX_SECONDS)
        if self.retry_after is not None:
            _number("retry_after", self.retry_after, MAX_SECONDS)
        if not isinstance(self.error_message, str):
            raise ValueError(f"error_message must be a string, not {_kind(self.error_message)}")
        if len(self.error_message) > MAX_ERROR_MESSAGE:
            raise ValueError(f"error_message must be at most {MAX_ERROR_MESSAGE} characters")


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _integer(
    name: str, value: object, low: int, high: int = _MAX_INTEGER, *, what: str | None = None
) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, not {_kind(value)}")
    if not low <= value <= high:
        bounds = what or (f">= {low}" if high == _MAX_INTEGER else f"in [{low}, {high}]")
        raise ValueError(f"{name} must be {bounds}, not {value}")


def _optional_integer(
    name: str, value: object, low: int, high: int = _MAX_INTEGER, *, what: str | None = None
) -> None:
    if value is not None:
        _integer(name, value, low, high, what=what)


def _number(name: str, value: object, high: float, *, what: str | None = None) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"{name} must be a number, not {_kind(value)}")
    if not (math.isfinite(value) and 0 <= value <= high):
        raise ValueError(f"{name} must be {what or f'in [0, {high:g}]'}, not {value}")


@dataclass(frozen=True, slots=True)
class Piece:
    """Bytes due ``recorded_ms`` (scaled by the timing) plus ``extra_ms`` (a stall) after start."""

    recorded_ms: float
    extra_ms: float
    data: bytes


@dataclass(frozen=True, slots=True)
class Delivery:
    """What to send: the pieces in order, then a dropped connection if ``is_dropped``."""

    pieces: list[Piece]
    is_dropped: bool = False

    @property
    def body(self) -> bytes:
        return b"".join(piece.data for piece in self.pieces)


# The error ``type`` OpenAI-compatible APIs send with each status (DeepSeek documents 400, 401,
# 402, 422, 429, 500 and 503).
_STATUS_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_balance",
    403: "permission_error",
    404: "not_found_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


def status_error_body(status: int) -> bytes:
    """The JSON error body sent with ``status=CODE``: ``{"error": {"message", "type", ...}}``."""
    error = {
        "message": f"injected fault: the upstream answered {status}",
        "type": _STATUS_ERROR_TYPES.get(status, "server_error"),
        "param": None,
        "code": "injected_fault",
    }
    return orjson.dumps({"error": error})


def status_headers(faults: Faults) -> list[tuple[str, str]]:
    """The headers sent with ``status=CODE`` (content type, and ``Retry-After`` when set)."""
    headers = [("content-type", "application/json")]
    if faults.retry_after is not None:
        headers.append(("retry-after", f"{faults.retry_after:g}"))
    return headers


def huge_event_frame(size: int) -> bytes:
    """A well-formed content-delta event of exactly ``size`` bytes."""
    head = b'data: {"choices":[{"index":0,"delta":{"content":"'
    tail = b'"},"finish_reason":null}]}\n\n'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def error_frame(message: str) -> bytes:
    """The in-band error event an OpenAI-compatible upstream sends inside a 200 stream."""
    error = {"error": {"message": message, "type": "server_error", "code": "injected_fault"}}
    return b"data: " + orjson.dumps(error) + b"\n\n"


def plan_delivery(chunks: Sequence[Chunk], faults: Faults | None = None) -> Delivery:
    """The pieces to send for ``chunks`` with ``faults`` applied (see the module docstring)."""
    pieces = [Piece(chunk.offset_ms, 0.0, chunk.data) for chunk in chunks if chunk.data]
    if faults is None:
        return Delivery(pieces)
    rng = random.Random(faults.seed)
    is_dropped = False
    if faults.cut_at is not None:
        pieces, _ = _split_at(pieces, faults.cut_at)
    if faults.drop_at is not None:
        pieces, rest = _split_at(pieces, faults.drop_at)
        is_dropped = True
    if faults.garbage_at is not None:
        garbage = rng.randbytes(faults.garbage_size)
        pieces = _insert_at(pieces, faults.garbage_at, garbage)
    if faults.huge_event is not None:
        ends = _event_ends(pieces)
        pieces = _insert_at(pieces, ends[0] if ends else 0, huge_event_frame(faults.huge_event))
    if faults.error_after is not None:
        ends = _event_ends(pieces)
        count = min(faults.error_after, len(ends))
        pieces, rest = _split_at(pieces, ends[count - 1] if count else 0)
        due = rest[0] if rest else (pieces[-1] if pieces else Piece(0.0, 0.0, b""))
        pieces.append(Piece(due.recorded_ms, due.extra_ms, error_frame(faults.error_message)))
    if faults.stall_at is not None and faults.stall_seconds > 0:
        before, after = _split_at(pieces, faults.stall_at)
        stall_ms = faults.stall_seconds * 1000
        pieces = before + [Piece(p.recorded_ms, p.extra_ms + stall_ms, p.data) for p in after]
    if faults.keepalive > 0:
        pieces = _insert_keepalives(pieces, faults.keepalive, rng)
    if faults.resplit is not None:
        pieces = _resplit(pieces, faults.resplit, rng)
    if faults.coalesce is not None:
        pieces = _coalesce(pieces, faults.coalesce, rng)
    return Delivery(pieces, is_dropped=is_dropped)


def _split_at(pieces: list[Piece], offset: int) -> tuple[list[Piece], list[Piece]]:
    """The pieces holding the first ``offset`` bytes, and the rest (a piece may be cut in two)."""
    position = 0
    for index, piece in enumerate(pieces):
        end = position + len(piece.data)
        if end > offset:
            cut = offset - position
            head = Piece(piece.recorded_ms, piece.extra_ms, piece.data[:cut])
            tail = Piece(piece.recorded_ms, piece.extra_ms, piece.data[cut:])
            before = [*pieces[:index], head] if cut else pieces[:index]
            return before, [tail, *pieces[index + 1 :]]
        position = end
    return list(pieces), []


def _insert_at(pieces: list[Piece], offset: int, data: bytes) -> list[Piece]:
    """``data`` as its own piece before byte ``offset``, due when the byte after it is."""
    before, after = _split_at(pieces, offset)
    due = after[0] if after else (before[-1] if before else Piece(0.0, 0.0, b""))
    return [*before, Piece(due.recorded_ms, due.extra_ms, data), *after]


def _event_ends(pieces: list[Piece]) -> list[int]:
    """Byte offsets just after each SSE event's closing blank line."""
    body = b"".join(piece.data for piece in pieces)
    return [match.end() for match in _EVENT_END.finditer(body)]


def _insert_keepalives(pieces: list[Piece], probability: float, rng: random.Random) -> list[Piece]:
    starts = [0, *_event_ends(pieces)]
    body_size = sum(len(piece.data) for piece in pieces)
    result: list[Piece] = []
    rest = pieces
    consumed = 0
    for start in starts:
        if start >= body_size or rng.random() >= probability:
            continue
        before, rest = _split_at(rest, start - consumed)
        consumed = start
        result.extend(before)
        due = rest[0]
        result.append(Piece(due.recorded_ms, due.extra_ms, KEEPALIVE_COMMENT))
    result.extend(rest)
    return result


def _resplit(pieces: list[Piece], largest: int, rng: random.Random) -> list[Piece]:
    """Cut into 1..largest-byte pieces, each due when its last byte was; stalls stay put."""
    result: list[Piece] = []
    for group in _groups_by_extra(pieces):
        body = b"".join(piece.data for piece in group)
        piece_ends = list(itertools.accumulate(len(piece.data) for piece in group))
        position = 0
        while position < len(body):
            size = rng.randint(1, largest)
            end = min(position + size, len(body))
            owner = group[bisect.bisect_left(piece_ends, end)]
            result.append(Piece(owner.recorded_ms, owner.extra_ms, body[position:end]))
            position = end
    return result


def _coalesce(pieces: list[Piece], largest: int, rng: random.Random) -> list[Piece]:
    """Merge runs of 1..largest pieces, each due when its last piece was; stalls stay put."""
    result: list[Piece] = []
    for group in _groups_by_extra(pieces):
        index = 0
        while index < len(group):
            run = group[index : index + rng.randint(1, largest)]
            last = run[-1]
            result.append(Piece(last.recorded_ms, last.extra_ms, b"".join(p.data for p in run)))
            index += len(run)
    return result


def _groups_by_extra(pieces: list[Piece]) -> list[list[Piece]]:
    groups: list[list[Piece]] = []
    for piece in pieces:
        if groups and groups[-1][-1].extra_ms == piece.extra_ms:
            groups[-1].append(piece)
        else:
            groups.append([piece])
    return groups
