"""An HTTP/1.1 client transport for httpx2 on httptools' C parser (llhttp).

httpx2's own transport (httpcore2 on h11) parses the upstream's chunked body in Python: one h11
event, and five async generators climbed, per HTTP chunk. Providers send one SSE event per chunk,
so a 2,000-chunk answer costs 2,000 such trips (17-23 µs each on the machine of
benchmarks/README.md, "Upstream read path"). ``Http1Transport`` parses in C as bytes arrive
and hands the body on one piece per wake-up: every chunk that arrived since the reader last
asked comes out as one ``bytes``.

It is an ``httpx2.AsyncBaseTransport``, so ``Upstream`` keeps httpx2 as its seam (timeouts in
the request's extensions, ``BoundedDecoding``, the ``transport=`` seam the cassette transports
and tests use) and failures are httpx2's exceptions, which the retry policy already sorts:

- ``ConnectError`` / ``ConnectTimeout``: nothing was sent (refused, unreachable, TLS failed);
- ``PoolTimeout``: every connection slot stayed busy;
- ``WriteTimeout`` / ``WriteError``: the request could not be sent whole;
- ``ReadTimeout``: no byte for ``read`` seconds while a response (head or body) was awaited;
- ``ReadError``: the connection failed under a read (reset);
- ``RemoteProtocolError``: a malformed response, or one the server cut short;
- ``LocalProtocolError``: a request that cannot be written (a header holding CR or LF).

Scope: HTTP/1.1 over TCP or TLS, one request at a time per connection, kept alive in a pool per
origin (``max_connections`` requests in flight, ``max_keepalive_connections`` idle, each idle at
most ``keepalive_expiry`` seconds). A connection is reused only when its last response was read to
its end and both sides allow keep-alive. No HTTP/2, proxies, Unix sockets or ``Upgrade``:
``Upstream`` takes httpx2's own transport where those are needed.

The body's buffer is bounded: past ``max_buffered`` bytes not yet taken the socket stops being
read (TCP's flow control holds the upstream back) until the reader takes them.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Final, cast

import httptools
import httpx2

__all__ = ["MAX_HEAD_BYTES", "Http1Transport"]

_DEFAULT_PORTS: Final = {b"http": 80, b"https": 443}
MAX_HEAD_BYTES: Final = 64 * 1024
"""The most bytes a response's status line and headers may take (h11 allows 16 KiB)."""
_Origin = tuple[bytes, bytes, int]


class Http1Transport(httpx2.AsyncBaseTransport):
    """HTTP/1.1 on httptools, with a keep-alive pool (module docstring)."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        limits: httpx2.Limits | None = None,
        max_buffered: int = 256 * 1024,
    ) -> None:
        limits = limits or httpx2.Limits()
        self._ssl_context = ssl_context
        self._max_connections = limits.max_connections
        self._max_idle = (
            limits.max_keepalive_connections
            if limits.max_keepalive_connections is not None
            else 1 << 30
        )
        self._keepalive_expiry = limits.keepalive_expiry
        self._max_buffered = max_buffered
        self._slots: asyncio.Semaphore | None = None
        self._idle: dict[_Origin, list[tuple[float, _Connection]]] = {}
        self._idle_count = 0
        self._is_closed = False

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if self._is_closed:
            raise RuntimeError("the transport is closed")
        scheme = request.url.raw_scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx2.UnsupportedProtocol(f"Http1Transport does not speak {scheme!r}")
        if request.method == "HEAD":  # llhttp cannot be told that a body-less answer has no body
            raise httpx2.UnsupportedProtocol("Http1Transport does not send HEAD requests")
        origin = (scheme, request.url.raw_host, request.url.port or _DEFAULT_PORTS[scheme])
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        head = _request_head(request)
        await self._take_slot(timeouts.get("pool"))
        try:
            connection = self._idle_connection(origin)
            if connection is None:
                connection = await self._connect(origin, timeouts.get("connect"))
            try:
                await connection.send(head, request, timeouts.get("write"))
                status, headers, reason = await connection.read_head(timeouts.get("read"))
            except BaseException:
                connection.close()
                raise
        except BaseException:
            self._free_slot()
            raise
        stream = _ResponseBody(self, origin, connection, timeouts.get("read"))
        return httpx2.Response(
            status,
            headers=headers,
            stream=stream,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )

    async def aclose(self) -> None:
        self._is_closed = True
        for connections in self._idle.values():
            for _, connection in connections:
                connection.close()
        self._idle.clear()
        self._idle_count = 0

    # -- the pool ---------------------------------------------------------------------------

    async def _take_slot(self, timeout: float | None) -> None:
        if self._max_connections is None:
            return
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max_connections)
        if not self._slots.locked():
            await self._slots.acquire()
            return
        try:
            async with asyncio.timeout(timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx2.PoolTimeout("no connection slot came free in time") from None

    def _free_slot(self) -> None:
        if self._slots is not None:
            self._slots.release()

    def _idle_connection(self, origin: _Origin) -> _Connection | None:
        connections = self._idle.get(origin)
        if not connections:
            return None
        now = asyncio.get_running_loop().time()
        while connections:
            parked_at, connection = connections.pop()  # the most recently used first
            self._idle_count -= 1
            is_fresh = self._keepalive_expiry is None or now - parked_at < self._keepalive_expiry
            if is_fresh and connection.is_reusable():
                return connection
            connection.close()
        return None

    def _finished(self, origin: _Origin, connection: _Connection) -> None:
        """A response's body was closed: park its connection if it can be reused."""
        self._free_slot()
        if self._is_closed or not connection.is_reusable():
            connection.close()
            return
        connection.park()
        if self._idle_count >= self._max_idle:
            self._evict_oldest()
            if self._idle_count >= self._max_idle:
                connection.close()
                return
        now = asyncio.get_running_loop().time()
        self._idle.setdefault(origin, []).append((now, connection))
        self._idle_count += 1

    def _evict_oldest(self) -> None:
        oldest: tuple[float, _Origin] | None = None
        for origin, connections in self._idle.items():
            if connections and (oldest is None or connections[0][0] < oldest[0]):
                oldest = (connections[0][0], origin)
        if oldest is not None:
            _, connection = self._idle[oldest[1]].pop(0)
            self._idle_count -= 1
            connection.close()

    async def _connect(self, origin: _Origin, timeout: float | None) -> _Connection:
        scheme, raw_host, port = origin
        host = raw_host.decode("ascii")
        context: ssl.SSLContext | None = None
        if scheme == b"https":
            if self._ssl_context is None:
                self._ssl_context = httpx2.create_ssl_context()
                self._ssl_context.set_alpn_protocols(["http/1.1"])
            context = self._ssl_context
        loop = asyncio.get_running_loop()
        connection = _Connection(loop, self._max_buffered)
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(
                    lambda: connection,
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                )
        except TimeoutError:
            connection.close()
            raise httpx2.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except (OSError, ssl.SSLError) as error:
            connection.close()
            raise httpx2.ConnectError(f"cannot connect to {host}:{port}: {error}") from None
        return connection


class _ResponseBody(httpx2.AsyncByteStream):
    """One response's body: the bytes read since the last ask, then the connection back."""

    def __init__(
        self,
        pool: Http1Transport,
        origin: _Origin,
        connection: _Connection,
        timeout: float | None,
    ) -> None:
        self._pool = pool
        self._origin = origin
        self._connection: _Connection | None = connection
        self._timeout = timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None:
            raise httpx2.StreamClosed()
        while True:
            piece = await connection.read_body(self._timeout)
            if piece is None:
                break
            yield piece
        await self.aclose()

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._pool._finished(self._origin, connection)


class _Connection(asyncio.Protocol):
    """One connection: writes a request, parses its response as bytes arrive (httptools)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_buffered: int) -> None:
        self._loop = loop
        self._max_buffered = max_buffered
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []
        self._forget_response()
        self._is_reading_paused = False
        self._error: Exception | None = None
        self._is_lost = False
        # waking the reader
        self._waiter: asyncio.Future[None] | None = None
        self._wait_started = 0.0
        self._wait_timeout: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._writable: asyncio.Future[None] | None = None
        self._is_write_paused = False

    # -- the request ------------------------------------------------------------------------

    async def send(self, head: bytes, request: httpx2.Request, timeout: float | None) -> None:
        transport = self._transport
        if transport is None or self._is_lost or transport.is_closing():
            raise httpx2.WriteError("the connection closed before the request was sent")
        self._is_busy = True
        try:
            content = request.content
        except httpx2.RequestNotRead:
            is_chunked = _is_chunked(request.headers.raw)
            transport.write(head)
            assert isinstance(request.stream, httpx2.AsyncByteStream)
            async for piece in request.stream:
                if not piece:
                    continue
                transport.write(b"%x\r\n%s\r\n" % (len(piece), piece) if is_chunked else piece)
                await self._drain(timeout)
            if is_chunked:
                transport.write(b"0\r\n\r\n")
        else:
            if len(content) < 65536:
                transport.write(head + content)  # one segment for the usual small body
            else:
                transport.write(head)
                transport.write(content)
        await self._drain(timeout)

    async def _drain(self, timeout: float | None) -> None:
        if self._is_lost:
            raise httpx2.WriteError("the connection closed while the request was sent")
        if not self._is_write_paused:
            return
        self._writable = self._loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._writable
        except TimeoutError:
            raise httpx2.WriteTimeout("the upstream did not take the request in time") from None
        finally:
            self._writable = None

    # -- the response -----------------------------------------------------------------------

    async def read_head(
        self, timeout: float | None
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        while not self._has_head:
            if self._error is not None:
                raise self._error
            await self._wait(timeout)
        return self._status, self._headers, self._reason

    async def read_body(self, timeout: float | None) -> bytes | None:
        """The body bytes that arrived since the last call (waiting for some), None at the end.

        Bytes that arrived before a failure are handed on first; the failure comes next.
        """
        while not self._body:
            if self._is_complete:
                return None
            if self._error is not None:
                raise self._error
            await self._wait(timeout)
        body = self._body
        piece = body[0] if len(body) == 1 else b"".join(body)
        body.clear()
        self._buffered = 0
        if self._is_reading_paused and self._transport is not None and not self._is_lost:
            self._is_reading_paused = False
            self._transport.resume_reading()
        return piece

    async def _wait(self, timeout: float | None) -> None:
        waiter = self._waiter = self._loop.create_future()
        self._wait_started = self._loop.time()
        self._wait_timeout = timeout
        if timeout is not None and self._timer is None:
            self._timer = self._loop.call_at(self._wait_started + timeout, self._check_timeout)
        try:
            await waiter
        finally:
            self._waiter = None

    def _check_timeout(self) -> None:
        """The read timer: one per connection, re-armed only while a reader waits."""
        self._timer = None
        waiter, timeout = self._waiter, self._wait_timeout
        if waiter is None or waiter.done() or timeout is None:
            return
        due = self._wait_started + timeout
        if self._loop.time() >= due:
            waiter.set_exception(httpx2.ReadTimeout("the upstream sent nothing in time"))
        else:
            self._timer = self._loop.call_at(due, self._check_timeout)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def is_reusable(self) -> bool:
        """Whether a next request may be sent: open, and the last response read to its end
        with keep-alive on both sides."""
        if self._is_lost or self._error is not None or self._transport is None:
            return False
        if self._transport.is_closing():
            return False
        return not self._is_busy or (self._is_complete and self._is_keep_alive)

    def park(self) -> None:
        """Forget the finished response (the connection waits in the pool)."""
        self._cancel_timer()
        self._forget_response()

    def _forget_response(self) -> None:
        """The state of the response being read, as before any."""
        self._status = 0
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._has_head = False
        self._has_framing = False  # content-length or chunked: EOF before the end is an error
        self._is_keep_alive = False
        self._is_complete = False
        self._is_busy = False  # a request was sent and its response is not finished
        self._body.clear()
        self._buffered = 0

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        self._cancel_timer()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()
        self._is_lost = True
        if self._error is None:
            self._error = httpx2.ReadError("the connection was closed")

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if not self._is_busy or self._is_complete:
            # bytes nobody asked for: the connection cannot carry another request
            self._fail(httpx2.RemoteProtocolError("the upstream sent bytes between responses"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx2.RemoteProtocolError("the upstream switched protocols"))
            return
        except httptools.HttpParserCallbackError as error:
            if isinstance(error.__context__, _HeadTooLarge):
                message = f"the upstream's response head exceeds {MAX_HEAD_BYTES} bytes"
            else:
                message = f"malformed response from the upstream: {error}"
            self._fail(httpx2.RemoteProtocolError(message))
            return
        except httptools.HttpParserError as error:
            self._fail(httpx2.RemoteProtocolError(f"malformed response from the upstream: {error}"))
            return
        if self._buffered > self._max_buffered and not self._is_reading_paused:
            assert self._transport is not None
            self._is_reading_paused = True
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        self._end_of_input()
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if exc is not None and self._is_busy and not self._is_complete and self._error is None:
            self._error = httpx2.ReadError(f"the upstream connection failed: {exc}")
        self._end_of_input()
        self._is_lost = True
        writable = self._writable
        if writable is not None and not writable.done():
            writable.set_exception(httpx2.WriteError("the connection closed mid-request"))

    def pause_writing(self) -> None:
        self._is_write_paused = True

    def resume_writing(self) -> None:
        self._is_write_paused = False
        writable = self._writable
        if writable is not None and not writable.done():
            writable.set_result(None)

    def _end_of_input(self) -> None:
        """The upstream closed its side: the end of a close-delimited body, else an error."""
        if self._is_busy and not self._is_complete and self._error is None:
            if self._has_head and not self._has_framing:
                self._is_complete = True
            elif self._has_head:
                self._error = httpx2.RemoteProtocolError(
                    "the upstream closed the connection before the body's end"
                )
            else:
                self._error = httpx2.RemoteProtocolError(
                    "the upstream closed the connection without answering"
                )
        self._is_lost = True
        self._wake()

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        if self._transport is not None:
            self._transport.close()
        self._is_lost = True
        self._wake()

    # -- httptools callbacks ----------------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        self._reason += status
        self._head_size += len(status)
        if self._head_size > MAX_HEAD_BYTES:
            raise _HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD_BYTES:
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
            self._reason = b""
            self._headers = []
            self._head_size = 0
            return
        self._status = status
        self._has_head = True
        self._is_keep_alive = self._parser.should_keep_alive()  # known once the head is read
        self._has_framing = (
            status in (204, 304)
            or _is_chunked(self._headers)
            or any(name.lower() == b"content-length" for name, _ in self._headers)
        )

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._buffered += len(body)

    def on_message_complete(self) -> None:
        if self._has_head:
            self._is_complete = True


class _HeadTooLarge(Exception):
    """Raised in a parser callback; llhttp stops and ``feed_data`` reports it."""


def _request_head(request: httpx2.Request) -> bytes:
    """The request line and headers, refusing anything that would split the message."""
    target = request.url.raw_path
    lines = [b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), target)]
    for name, value in request.headers.raw:
        lines.append(b"%s: %s\r\n" % (name, value))
    lines.append(b"\r\n")
    head = b"".join(lines)
    if head.count(b"\n") != len(lines) or b"\r" in head.replace(b"\r\n", b"") or b"\0" in head:
        raise httpx2.LocalProtocolError("a request header holds CR, LF or NUL")
    return head


def _is_chunked(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(
        name.lower() == b"transfer-encoding" and b"chunked" in value.lower()
        for name, value in headers
    )
