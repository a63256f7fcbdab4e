"""The connection guard: deadlines for the request head and body, a cap on open connections.

uvicorn (0.54) bounds neither. Its h11 and httptools protocols arm no timer when a connection
opens, and the keep-alive timer they arm after a response is cancelled by any byte received, so
a client that dribbles a request head one byte at a time holds its connection (and a file
descriptor) forever. ``limit_concurrency`` counts those connections too, and answers plain-text
503s to everyone once slow clients fill it.

``GuardedProtocol`` wraps whichever uvicorn HTTP/1.1 protocol class is chosen (``h11``,
``httptools``, ``auto``, ...) rather than subclassing each one: uvicorn takes it as
``uvicorn.Config(http=guarded_http("auto", limits))``. It forwards every asyncio callback to the
wrapped protocol and watches two things of it: ``cycle`` (a new request cycle appears once its
head is parsed; its ``more_body`` turns false once the body is complete) and
``on_response_complete`` (the connection waits for its next head). One timer per connection:

- **head**: from the connection's start, or the end of the previous response, until the next
  request head is parsed: ``header_timeout``. A partial head gets ``408``, an idle connection is
  just closed. Bytes received do not extend it.
- **body**: from the head until the body is complete: ``body_timeout`` (``408`` unless the app
  already answered).
- **cap**: at most ``max_connections`` open connections per process (per uvicorn server). A new
  one beyond it first evicts the connection that has waited longest for a request head (idle
  keep-alive or dribbling: they cost nothing to close, and nginx does the same when short of
  connections); when every connection is busy with a request, the new one is answered ``503``
  with an OpenAI-shaped body and ``Retry-After: 1``, then closed. The connections being refused
  are bounded too: beyond ``max_connections`` of them, a new one is closed at once.

The settings travel in a ``functools.partial``, so ``--workers`` (uvicorn spawns processes and
pickles the config) gives each worker its own guard with the same limits.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import resource
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, cast

import orjson

__all__ = ["ConnectionLimits", "GuardedProtocol", "ensure_file_limit", "guarded_http"]

logger = logging.getLogger("streamproxy.serve")

# File descriptors a process needs beside its client connections: the upstream pool (at most
# 1,000 connections, upstream.py), the state store, MCP servers, logs.
_OTHER_FILES = 1024
# How often the "over --max-connections" warning may be logged.
_WARNING_INTERVAL = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionLimits:
    """What one process allows its client connections (``Config``'s fields of the same name)."""

    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_connections: int = 2048

    def __post_init__(self) -> None:
        if self.header_timeout <= 0 or self.body_timeout <= 0:
            raise ValueError("header_timeout and body_timeout must be positive")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")


def guarded_http(http: str | type[asyncio.Protocol], limits: ConnectionLimits) -> Any:
    """The value for ``uvicorn.Config(http=...)``: ``http`` (a uvicorn name such as ``"auto"``,
    ``"h11"``, ``"httptools"``, a ``module:attr`` path or a class) behind the guard."""
    return functools.partial(GuardedProtocol, http=http, limits=limits)


def ensure_file_limit(max_connections: int) -> str | None:
    """Raise this process's soft limit on open files towards what ``max_connections`` needs
    (never past the hard limit); a warning to log when the hard limit is too low, else None."""
    needed = max_connections + _OTHER_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft != resource.RLIM_INFINITY and soft < needed:
        return (
            f"--max-connections {max_connections} needs about {needed} open files but the limit "
            f"is {soft} (ulimit -n); lower --max-connections or raise the limit"
        )
    return None


# ---------------------------------------------------------------------------------- per server


class _Connections:
    """The guarded connections of one uvicorn server (one per process)."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.open: set[GuardedProtocol] = set()
        self.waiting: OrderedDict[GuardedProtocol, float] = OrderedDict()
        """Connections waiting for a request head (since when), the longest-waiting first."""
        self.refusing: set[GuardedProtocol] = set()
        """Connections beyond the cap, being answered 503 (not counted in ``open``)."""
        self.rejected = 0
        self._last_warning = 0.0

    def make_room(self) -> bool:
        """Whether a new connection fits, after evicting the longest-waiting one if needed."""
        if len(self.open) < self.limits.max_connections:
            return True
        if not self.waiting:
            return False
        # the longest-waiting, however young: a grace period for new connections was measured
        # to let a reconnecting attack hold every slot (benchmarks/bench_slowloris.py)
        oldest, _ = self.waiting.popitem(last=False)
        oldest.evict()
        return True

    def note_rejected(self) -> None:
        self.rejected += 1
        now = time.monotonic()
        if now - self._last_warning >= _WARNING_INTERVAL:
            self._last_warning = now
            logger.warning(
                "%d connections open, all busy with requests: new ones get 503 "
                "(--max-connections %d; %d refused so far)",
                len(self.open),
                self.limits.max_connections,
                self.rejected,
            )


_SERVERS: MutableMapping[object, _Connections] = weakref.WeakKeyDictionary()


def _connections_of(server_state: object, limits: ConnectionLimits) -> _Connections:
    connections = _SERVERS.get(server_state)
    if connections is None:
        connections = _SERVERS[server_state] = _Connections(limits)
    return connections


_PROTOCOL_CLASSES: dict[str, Callable[..., Any]] = {}


def _protocol_class(http: str | type[asyncio.Protocol]) -> Callable[..., Any]:
    """The uvicorn protocol class ``http`` names (imported once per process)."""
    if not isinstance(http, str):
        return http
    found = _PROTOCOL_CLASSES.get(http)
    if found is None:
        from uvicorn.config import HTTP_PROTOCOLS
        from uvicorn.importer import import_from_string

        found = _PROTOCOL_CLASSES[http] = import_from_string(HTTP_PROTOCOLS.get(http, http))
    return found


# ---------------------------------------------------------------------------------- responses

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def _error_body(message: str, kind: str, code: str) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": kind, "code": code}})


def _raw_response(status: bytes, body: bytes) -> bytes:
    """A whole HTTP/1.1 response that closes the connection (written past the HTTP parser)."""
    head = (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
    )
    return head + body


class _OverCapacity:
    """The ASGI app a connection beyond the cap is served by: 503, then the connection closes."""

    def __init__(self, limit: int) -> None:
        self.body = _error_body(
            f"the proxy has {limit} connections open, all busy (--max-connections); retry shortly",
            "service_unavailable",
            "too_many_connections",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.body)).encode()),
            (b"retry-after", b"1"),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


# ---------------------------------------------------------------------------------- the protocol

_HEAD, _BODY, _BUSY = "head", "body", "busy"


class GuardedProtocol(asyncio.Protocol):
    """One client connection: uvicorn's protocol inside, the deadlines and the cap around it."""

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        http: str | type[asyncio.Protocol],
        limits: ConnectionLimits,
    ) -> None:
        self._inner: Any = _protocol_class(http)(
            config=config, server_state=server_state, app_state=app_state, _loop=_loop
        )
        self._loop = _loop or asyncio.get_event_loop()
        self._limits = limits
        self._connections = _connections_of(server_state, limits)
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._phase = _HEAD
        self._cycle: object = None
        self._received = 0
        """Bytes received while waiting for the current head (0: an idle connection)."""
        self._is_refused = False
        response_complete = self._inner.on_response_complete

        def on_response_complete() -> None:
            response_complete()
            self._wait_for_head()

        # the request cycle is given ``self.on_response_complete`` when a head arrives: this
        # instance attribute is what it finds
        self._inner.on_response_complete = on_response_complete

    # ------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)
        connections = self._connections
        if connections.make_room():
            connections.open.add(self)
        else:
            connections.note_rejected()
            self._is_refused = True
            self._inner.app = _OverCapacity(self._limits.max_connections)
            connections.refusing.add(self)
        self._inner.connection_made(transport)
        if len(connections.refusing) > self._limits.max_connections:
            self._close()  # even the 503s are too many: close at once
            return
        self._wait_for_head()

    def data_received(self, data: bytes) -> None:
        if self._phase is _HEAD:
            self._received += len(data)
        self._inner.data_received(data)
        cycle: Any = self._inner.cycle
        if cycle is not self._cycle and cycle is not None:
            self._cycle = cycle
            self._head_received(cycle)
        elif self._phase is _BODY and not self._inner.cycle.more_body:
            self._stop_timer()
            self._phase = _BUSY

    def eof_received(self) -> bool | None:
        return cast("bool | None", self._inner.eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self._connections.open.discard(self)
        self._connections.refusing.discard(self)
        self._connections.waiting.pop(self, None)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    # ------------------------------------------------------------ phases

    def _wait_for_head(self) -> None:
        self._stop_timer()
        if self._transport is None or self._transport.is_closing():
            return
        self._phase = _HEAD
        self._received = 0
        if not self._is_refused:  # a refused connection makes no room for another
            self._connections.waiting[self] = self._loop.time()
            self._connections.waiting.move_to_end(self)
        self._timer = self._loop.call_later(self._limits.header_timeout, self._head_expired)

    def _head_received(self, cycle: Any) -> None:
        self._stop_timer()
        self._connections.waiting.pop(self, None)
        if cycle.more_body and not cycle.response_complete:
            self._phase = _BODY
            self._timer = self._loop.call_later(self._limits.body_timeout, self._body_expired)
        else:
            self._phase = _BUSY

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_expired(self) -> None:
        self._timer = None
        if self._received:
            seconds = f"{self._limits.header_timeout:g}"
            self._close_with_408(f"the request head did not arrive within {seconds} s")
        else:
            self._close()

    def _body_expired(self) -> None:
        self._timer = None
        if getattr(self._cycle, "response_started", False):
            self._close()  # the app already answered: nothing more can be said
        else:
            seconds = f"{self._limits.body_timeout:g}"
            self._close_with_408(f"the request body did not arrive within {seconds} s")

    def evict(self) -> None:
        """Close this connection (it was waiting for a head) to make room for a new one."""
        self._connections.open.discard(self)
        self._close()

    def _close_with_408(self, message: str) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            body = _error_body(message, "invalid_request_error", "request_timeout")
            transport.write(_raw_response(b"408 Request Timeout", body))
        self._close()

    def _close(self) -> None:
        self._stop_timer()
        self._connections.waiting.pop(self, None)
        if self._transport is not None:
            self._transport.close()
