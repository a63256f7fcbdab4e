"""Bounded decoding of the upstream's ``content-encoding``.

httpx inflates a compressed chunk in one call, so a few hundred KB of gzip can become gigabytes
in memory before any limit looks at it (measured: a gzip bomb raised the proxy's peak RSS from
144 to 406 MB before the 16 MiB event limit applied). ``BoundedDecoding`` wraps the upstream
transport: it asks for ``identity`` and, when an upstream compresses anyway (``gzip``,
``deflate``), inflates the body itself in steps of at most 64 KiB, each handed on at once, so
the core's limits (one SSE event, one text field...) count decoded bytes as they are decoded.
The whole decoded body is capped at ``max_decoded`` (a ``LimitExceededError``); an encoding it
cannot undo (brotli, zstd) or a corrupt body is a ``ProtocolError``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx2

from streamproxy.cassette.decoding import Inflater, encodings_of
from streamproxy.errors import CassetteError, LimitExceededError, ProtocolError

__all__ = ["DEFAULT_MAX_DECODED", "BoundedDecoding"]

DEFAULT_MAX_DECODED = 256 * 1024 * 1024
"""The most bytes one upstream body may decode to: four times the core's largest text field
(64 MiB), far past any real stream, small enough that a bomb stops early."""

_SUPPORTED = ("gzip", "x-gzip", "deflate")


class BoundedDecoding(httpx2.AsyncBaseTransport):
    """An httpx2 transport that undoes ``content-encoding`` in bounded steps (module docstring)."""

    def __init__(
        self, transport: httpx2.AsyncBaseTransport, *, max_decoded: int = DEFAULT_MAX_DECODED
    ) -> None:
        self.transport = transport
        self.max_decoded = max_decoded

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        request.headers["accept-encoding"] = "identity"
        response = await self.transport.handle_async_request(request)
        codings = encodings_of(response.headers.get("content-encoding", ""))
        if not codings:
            return response
        headers = [
            (name, value)
            for name, value in response.headers.multi_items()
            if name.lower() not in ("content-encoding", "content-length")
        ]
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        stream = _DecodedStream(response.stream, codings, self.max_decoded)
        return httpx2.Response(
            response.status_code,
            headers=headers,
            stream=stream,
            extensions=response.extensions,
            request=request,
        )

    async def aclose(self) -> None:
        await self.transport.aclose()


class _DecodedStream(httpx2.AsyncByteStream):
    def __init__(self, raw: httpx2.AsyncByteStream, codings: list[str], limit: int) -> None:
        self.raw = raw
        self.codings = codings
        self.limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        unsupported = [name for name in self.codings if name not in _SUPPORTED]
        if unsupported:
            raise ProtocolError(
                f"the upstream sent content-encoding {', '.join(unsupported)}, which the proxy "
                "does not decode (it asks for identity; gzip and deflate are decoded)"
            )
        stages = [Inflater(name, self.limit) for name in reversed(self.codings)]
        try:
            async for chunk in self.raw:
                for piece in _through(stages, chunk):
                    yield piece
            tail = b""
            for stage in stages:
                tail = b"".join(stage.decode(tail)) + stage.flush()
            if tail:
                yield tail
        except CassetteError as error:
            if "more than" in error.message:
                raise LimitExceededError("the upstream body, decoded,", self.limit) from None
            raise ProtocolError(f"the upstream body does not decode: {error.message}") from None

    async def aclose(self) -> None:
        await self.raw.aclose()


def _through(stages: list[Inflater], chunk: bytes) -> Iterator[bytes]:
    """The pieces ``chunk`` decodes to through every stage, lazily: each at most one 64 KiB
    step, handed on before the next is inflated."""
    if not stages:
        yield chunk
        return
    for piece in stages[0].decode(chunk):
        yield from _through(stages[1:], piece)
