"""Replay a cassette as an httpx transport, in process.

::

    transport = ReplayTransport("recordings/deepseek-tool-call.cassette.json")
    client = openai.OpenAI(api_key="unused", base_url="https://api.deepseek.com",
                           http_client=httpx2.Client(transport=transport))

    # async code: the same class is also an httpx2.AsyncBaseTransport
    client = openai.AsyncOpenAI(api_key="unused",
                                http_client=httpx2.AsyncClient(transport=AsyncReplayTransport(cassette)))

The same class also works inside an ``httpx.Client`` / ``httpx.AsyncClient`` (the ``openai`` 2.x
SDK) when httpx is installed: the response is of the library the request came from.

The response has the recorded status and headers, and its body arrives as the recorded chunks
(with ``faults``, as :func:`~streamproxy.cassette.faults.plan_delivery` reshapes them), each after
its recorded offset scaled by ``timing``. A request that matches nothing raises ``CassetteError``.

A request that does not ask for a stream (``"stream"`` absent or false) answered by a recorded SSE
stream gets the stream assembled into one ``chat.completion`` JSON body, so the same cassette
serves ``create(stream=True)`` and ``create()``.

A test can script the next requests with :meth:`Replayer.add_plan`: each :class:`Plan` answers one
request, in arrival order, with a chosen interaction and its own faults (``429`` then ``503``
then the recording; a clean round 1 then a dropped round 2). Requests beyond the plan are
matched as usual and get the replayer's own faults.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from types import ModuleType

import anyio
import httpx2
import orjson

from streamproxy.cassette.faults import (
    Delivery,
    Faults,
    Piece,
    plan_delivery,
    status_error_body,
    status_headers,
)
from streamproxy.cassette.format import Cassette, Interaction, RecordedRequest
from streamproxy.cassette.http import Timing, recorded_request, replayed_headers, timing_factor
from streamproxy.cassette.http_libraries import (
    AsyncBaseTransport,
    AsyncByteStream,
    BaseTransport,
    SyncByteStream,
    library_of,
)
from streamproxy.cassette.match import Matcher, Player
from streamproxy.errors import CassetteError


@dataclass(frozen=True, slots=True)
class Answer:
    """What to send back for one request."""

    interaction: Interaction | None
    """The interaction replayed; None for an injected ``status`` (nothing is replayed)."""
    status: int
    headers: list[tuple[str, str]]
    delivery: Delivery
    factor: float

    def due_seconds(self, piece: Piece) -> float:
        """When ``piece`` is due, in seconds after the request arrived."""
        return (piece.recorded_ms * self.factor + piece.extra_ms) / 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """How to answer one scripted request (see :meth:`Replayer.add_plan`)."""

    interaction: int | None = None
    """The index of the interaction to replay; None: the matcher chooses."""
    faults: Faults = field(default_factory=Faults)
    """The faults for this request, instead of the replayer's own (default: none)."""

    @classmethod
    def from_json(cls, value: object) -> Plan:
        """A plan from ``{"interaction": 2, "drop_at": 700, ...}`` (any :class:`Faults` field).

        Raises:
            ValueError: not an object, an unknown field, or a value out of range.
        """
        if not isinstance(value, dict):
            raise ValueError(f"a plan is a JSON object, not {type(value).__name__}")
        fields = dict(value)
        interaction = fields.pop("interaction", None)
        if interaction is not None and (
            not isinstance(interaction, int) or isinstance(interaction, bool) or interaction < 0
        ):
            raise ValueError(f"interaction must be an index >= 0, not {interaction!r:.40}")
        known = {item.name for item in dataclasses.fields(Faults)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown plan fields: {', '.join(unknown)}")
        try:
            faults = Faults(**fields)
        except TypeError as error:
            raise ValueError(str(error)) from None
        return cls(interaction=interaction, faults=faults)


RECEIVED_LIMIT = 1000
"""How many received requests :attr:`Replayer.received` keeps: the newest 1000 (a ring)."""
PLAN_LIMIT = 10_000
"""The most scripted plans waiting at once."""


class Replayer:
    """Picks the interaction for each request and plans its delivery; shared by every adapter.

    Args:
        cassette: a :class:`Cassette`, or a path to anything
            :func:`~streamproxy.cassette.importers.read_cassette` reads (a cassette, a ``.sse``
            body, a VCR YAML file, a JSON-lines fixture, or a directory of them).
        timing: ``"instant"`` (default), ``"recorded"`` or a factor on the recorded offsets.
        faults: faults to apply to every response body, or ``None``.
        matcher: ``(request, interactions) -> Interaction | None``; default
            :func:`~streamproxy.cassette.match.match_request`.
        is_strict: match a one-interaction cassette like any other instead of answering every
            request with it.
    """

    def __init__(
        self,
        cassette: Cassette | str | os.PathLike[str],
        *,
        timing: Timing = "instant",
        faults: Faults | None = None,
        matcher: Matcher | None = None,
        is_strict: bool = False,
    ) -> None:
        if not isinstance(cassette, Cassette):
            from streamproxy.cassette.importers import read_cassette

            cassette = read_cassette(cassette)
        self.cassette = cassette
        self.factor = timing_factor(timing)
        self.faults = faults
        self.player = Player(cassette, matcher=matcher, is_strict=is_strict)
        self.received: deque[RecordedRequest] = deque(maxlen=RECEIVED_LIMIT)
        """The requests answered, oldest first: the newest :data:`RECEIVED_LIMIT` of them."""
        self.plan: deque[Plan] = deque()
        """Scripted answers for the next requests, oldest first (see :meth:`add_plan`)."""
        self._lock = threading.Lock()

    def add_plan(self, plans: Iterable[Plan]) -> None:
        """Answer the next requests, one plan each, in arrival order, before any matching.

        Raises:
            CassetteError: a plan names an interaction the cassette does not have, or more than
                :data:`PLAN_LIMIT` plans would be waiting.
        """
        plans = list(plans)
        count = len(self.cassette.interactions)
        for plan in plans:
            if plan.interaction is not None and plan.interaction >= count:
                raise CassetteError(
                    f"plan names interaction {plan.interaction}; the cassette has {count}"
                )
        with self._lock:
            if len(self.plan) + len(plans) > PLAN_LIMIT:
                raise CassetteError(
                    f"at most {PLAN_LIMIT} plans can wait; {len(self.plan)} are waiting"
                )
            self.plan.extend(plans)

    def answer(self, request: RecordedRequest) -> Answer:
        """The answer to ``request``; it is also appended to :attr:`received`.

        Raises:
            CassetteError: no interaction matches.
        """
        with self._lock:
            self.received.append(request)
            planned = self.plan.popleft() if self.plan else None
        faults = self.faults if planned is None else planned.faults
        if faults is not None and faults.status is not None:
            body = status_error_body(faults.status)
            delivery = Delivery([Piece(0.0, 0.0, body)])
            return Answer(None, faults.status, status_headers(faults), delivery, self.factor)
        if planned is not None and planned.interaction is not None:
            interaction = self.cassette.interactions[planned.interaction]
        else:
            interaction = self.player.select(request)
        response = interaction.response
        headers = replayed_headers(response.headers)
        if response.is_event_stream and not _asks_for_stream(request) and response.status < 300:
            from streamproxy.cassette.assemble import assemble_completion

            body = orjson.dumps(assemble_completion(response))
            headers = [("content-type", "application/json")]
            last_ms = response.chunks[-1].offset_ms if response.chunks else 0.0
            delivery = Delivery([Piece(last_ms, 0.0, body)])
        else:
            delivery = plan_delivery(response.chunks, faults)
        return Answer(interaction, response.status, headers, delivery, self.factor)


def _asks_for_stream(request: RecordedRequest) -> bool:
    body = request.body
    return request.raw_body is not None or not isinstance(body, dict) or body.get("stream") is True


def dropped_connection(answer: Answer, library: ModuleType = httpx2) -> httpx2.RemoteProtocolError:
    """The error a client of ``library`` sees when the replay drops the connection mid-body."""
    error_class: type[httpx2.RemoteProtocolError] = library.RemoteProtocolError
    return error_class(
        "peer closed connection without sending complete message body "
        f"(replay fault: dropped after {len(answer.delivery.body)} bytes)"
    )


class ReplayTransport(BaseTransport, AsyncBaseTransport):
    """An httpx2 (or httpx) transport, sync and async, that answers from a cassette.

    Takes the same arguments as :class:`Replayer`; :attr:`replayer` exposes the requests received.
    """

    def __init__(
        self,
        cassette: Cassette | str | os.PathLike[str],
        *,
        timing: Timing = "instant",
        faults: Faults | None = None,
        matcher: Matcher | None = None,
    ) -> None:
        self.replayer = Replayer(cassette, timing=timing, faults=faults, matcher=matcher)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        started = time.monotonic()
        library = library_of(request)
        answer = self.replayer.answer(recorded_from_httpx(request, request.read()))
        response_class: type[httpx2.Response] = library.Response
        return response_class(
            answer.status,
            headers=answer.headers,
            stream=_SyncBody(answer, started, library),
            request=request,
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        started = time.monotonic()
        library = library_of(request)
        answer = self.replayer.answer(recorded_from_httpx(request, await request.aread()))
        response_class: type[httpx2.Response] = library.Response
        return response_class(
            answer.status,
            headers=answer.headers,
            stream=_AsyncBody(answer, started, library),
            request=request,
        )


AsyncReplayTransport = ReplayTransport
"""The same class: one ``ReplayTransport`` serves ``Client`` and ``AsyncClient``."""


def recorded_from_httpx(request: httpx2.Request, content: bytes) -> RecordedRequest:
    """``request`` as a cassette would keep it (for matchers)."""
    return recorded_request(
        request.method,
        request.url.path,
        request.url.query.decode("ascii", "replace"),
        request.headers.multi_items(),
        content,
        set(),
    )


class _SyncBody(SyncByteStream):
    def __init__(self, answer: Answer, started: float, library: ModuleType) -> None:
        self.answer = answer
        self.started = started
        self.library = library

    def __iter__(self) -> Iterator[bytes]:
        for piece in self.answer.delivery.pieces:
            wait = self.started + self.answer.due_seconds(piece) - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            yield piece.data
        if self.answer.delivery.is_dropped:
            raise dropped_connection(self.answer, self.library)


class _AsyncBody(AsyncByteStream):
    def __init__(self, answer: Answer, started: float, library: ModuleType) -> None:
        self.answer = answer
        self.started = started
        self.library = library

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.answer.delivery.pieces:
            wait = self.started + self.answer.due_seconds(piece) - time.monotonic()
            if wait > 0:
                await anyio.sleep(wait)
            yield piece.data
        if self.answer.delivery.is_dropped:
            raise dropped_connection(self.answer, self.library)
