"""Record what passes through any httpx2 (or httpx) transport.

::

    recorder = RecordTransport(httpx2.HTTPTransport(), path="tests/cassettes/weather.cassette.json")
    client = openai.OpenAI(http_client=httpx2.Client(transport=recorder))
    ...  # every finished response is now in recorder.cassette, and saved to path

The same class works inside an ``httpx.Client`` (the ``openai`` 2.x SDK) when it wraps an httpx
transport (see :mod:`streamproxy.cassette.http_libraries`).

The wrapper sits below httpx's decoders, so it sees the body as the socket delivered it: each
chunk the inner transport yields is stored with its offset in milliseconds since the request was
sent. An interaction is added when its body has been read to the end or the response closed
(a body cut short by an error is kept as far as it got, which is itself worth replaying).
Credentials in headers and the query are redacted, and their values scrubbed from everything
else (raw, JSON-escaped or URL-encoded, with :class:`~streamproxy.redaction.Redactor`; a prefix
of one at the end of a body cut short too), before anything is stored.

A compressed body (``content-encoding: gzip`` or ``deflate``; an error body most often) is stored
**decoded**, chunk by chunk with the same offsets, and the ``content-encoding`` header dropped:
compressed bytes cannot be scrubbed, and a replay then sends plain bytes with headers that say
so. Decoding is bounded (:data:`~streamproxy.cassette.decoding.MAX_BODY_BYTES`); the request's
``accept-encoding`` is narrowed to what can be decoded (:data:`ACCEPTED_ENCODINGS`). A body that
cannot be decoded (corrupt, a bomb) or that is larger than the limit is kept only as far as it
was decoded, with an ``x-streamproxy-truncated`` header saying why: nothing unscrubbed is kept.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx2

from streamproxy.cassette import http_libraries
from streamproxy.cassette.decoding import (
    ACCEPTED_ENCODINGS,
    MAX_BODY_BYTES,
    ChunkDecoder,
    encodings_of,
)
from streamproxy.cassette.format import Cassette, Chunk, Interaction, RecordedResponse, dump
from streamproxy.cassette.http import HOP_BY_HOP, recorded_request
from streamproxy.cassette.http_libraries import (
    AsyncBaseTransport,
    AsyncByteStream,
    BaseTransport,
    SyncByteStream,
    library_of,
)
from streamproxy.cassette.redact import redact_headers, scrub_bytes, scrub_chunks
from streamproxy.errors import CassetteError

TRUNCATED_HEADER = "x-streamproxy-truncated"
"""Set on a recorded response whose body was not kept whole, with the reason."""


class RecordTransport(BaseTransport, AsyncBaseTransport):
    """Wraps a sync or async httpx2 (or httpx) transport and records through it.

    Args:
        inner: the transport that really sends requests.
        cassette: the cassette to append to (a new one by default).
        path: when given, the cassette is written there after every finished interaction.
        source: the provenance line of a new cassette.
    """

    def __init__(
        self,
        inner: httpx2.BaseTransport | httpx2.AsyncBaseTransport,
        *,
        cassette: Cassette | None = None,
        path: str | os.PathLike[str] | None = None,
        source: str | None = None,
    ) -> None:
        self.inner = inner
        self.cassette = cassette if cassette is not None else Cassette(source=source)
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        inner = self.inner
        if not http_libraries.is_sync_transport(inner):
            raise TypeError("RecordTransport wraps an async transport; use an AsyncClient")
        started = time.monotonic()
        content = request.read()
        _narrow_accept_encoding(request)
        response = inner.handle_request(request)
        entry = _Entry(self, request, content, response, started)
        if not http_libraries.is_sync_byte_stream(response.stream):
            raise TypeError("the inner transport returned a response without a sync stream")
        response_class: type[httpx2.Response] = library_of(request).Response
        return response_class(
            response.status_code,
            headers=response.headers,
            stream=_RecordingSyncStream(response.stream, entry),
            request=request,
            extensions=response.extensions,
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        inner = self.inner
        if not http_libraries.is_async_transport(inner):
            raise TypeError("RecordTransport wraps a sync transport; use a Client")
        started = time.monotonic()
        content = await request.aread()
        _narrow_accept_encoding(request)
        response = await inner.handle_async_request(request)
        entry = _Entry(self, request, content, response, started)
        if not http_libraries.is_async_byte_stream(response.stream):
            raise TypeError("the inner transport returned a response without an async stream")
        response_class: type[httpx2.Response] = library_of(request).Response
        return response_class(
            response.status_code,
            headers=response.headers,
            stream=_RecordingAsyncStream(response.stream, entry),
            request=request,
            extensions=response.extensions,
        )

    def close(self) -> None:
        if http_libraries.is_sync_transport(self.inner):
            self.inner.close()

    async def aclose(self) -> None:
        if http_libraries.is_async_transport(self.inner):
            await self.inner.aclose()

    def add(self, interaction: Interaction) -> None:
        """Append a finished interaction and save the cassette if it has a path."""
        with self._lock:
            self.cassette.interactions.append(interaction)
            if self.path is not None:
                dump(self.cassette, self.path)


def _narrow_accept_encoding(request: httpx2.Request) -> None:
    """Ask only for encodings the recording can decode (and so scrub)."""
    asked = request.headers.get("accept-encoding")
    if asked is not None and any(
        name not in ("gzip", "x-gzip", "deflate") for name in encodings_of(asked.split(";")[0])
    ):
        request.headers["accept-encoding"] = ACCEPTED_ENCODINGS


class _Entry:
    """One interaction being recorded: the request now, the chunks as they are read."""

    def __init__(
        self,
        recorder: RecordTransport,
        request: httpx2.Request,
        content: bytes,
        response: httpx2.Response,
        started: float,
    ) -> None:
        self.recorder = recorder
        self.started = started
        self.secrets: set[str] = set()
        self.request = recorded_request(
            request.method,
            request.url.path,
            request.url.query.decode("ascii", "replace"),
            request.headers.multi_items(),
            content,
            self.secrets,
        )
        self.status = response.status_code
        self.headers = [
            (name, value)
            for name, value in response.headers.multi_items()
            if name.lower() != "content-encoding"
        ]
        self.chunks: list[Chunk] = []
        self.stored = 0
        self.truncated: str | None = None
        self.is_complete = False
        self.is_finished = False
        self.decoder: ChunkDecoder | None = None
        encoding = ", ".join(response.headers.get_list("content-encoding"))
        if encodings_of(encoding):
            try:
                self.decoder = ChunkDecoder(encoding)
            except CassetteError as error:
                self.truncated = error.message

    def receive(self, data: bytes) -> None:
        if not data or self.truncated is not None:
            return
        offset_ms = (time.monotonic() - self.started) * 1000
        try:
            if self.decoder is not None:
                data = self.decoder.decode(data)
        except CassetteError as error:
            self.truncated = error.message
            return
        self._store(offset_ms, data)

    def _store(self, offset_ms: float, data: bytes) -> None:
        if self.stored + len(data) > MAX_BODY_BYTES:
            self.truncated = f"the body is longer than {MAX_BODY_BYTES} bytes"
            return
        self.stored += len(data)
        if data:
            self.chunks.append(Chunk(offset_ms, data))

    def finish(self) -> None:
        if self.is_finished:
            return
        self.is_finished = True
        if self.decoder is not None and self.truncated is None and self.is_complete:
            try:
                self._store((time.monotonic() - self.started) * 1000, self.decoder.flush())
            except CassetteError as error:
                self.truncated = error.message
        headers = {
            name: scrub_bytes(value.encode(), self.secrets).decode()
            for name, value in redact_headers(self.headers, self.secrets).items()
            if name not in HOP_BY_HOP
        }
        if self.truncated is not None:
            headers[TRUNCATED_HEADER] = self.truncated
        is_cut = self.truncated is not None or not self.is_complete
        chunks = scrub_chunks(self.chunks, self.secrets, is_cut=is_cut)
        response = RecordedResponse(status=self.status, headers=headers, chunks=chunks)
        self.recorder.add(Interaction(request=self.request, response=response))


class _RecordingSyncStream(SyncByteStream):
    def __init__(self, inner: httpx2.SyncByteStream, entry: _Entry) -> None:
        self.inner = inner
        self.entry = entry

    def __iter__(self) -> Iterator[bytes]:
        try:
            for data in self.inner:
                self.entry.receive(data)
                yield data
            self.entry.is_complete = True
        finally:
            self.entry.finish()

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self.entry.finish()


class _RecordingAsyncStream(AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, entry: _Entry) -> None:
        self.inner = inner
        self.entry = entry

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for data in self.inner:
                self.entry.receive(data)
                yield data
            self.entry.is_complete = True
        finally:
            self.entry.finish()

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        finally:
            self.entry.finish()
