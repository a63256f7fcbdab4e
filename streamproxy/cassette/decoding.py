"""Bounded decoding of what a cassette or a recording holds: content encodings and base64.

Every decoder here stops at a limit on the bytes it produces, so a gzip bomb (a few hundred KB
that inflate to gigabytes) or a huge base64 string fails fast with a ``CassetteError`` instead
of filling memory. Decompression is streamed: at most one step's worth of output is produced
past what has been counted.

Content encodings decoded: ``gzip``, ``x-gzip`` and ``deflate`` (zlib-wrapped or raw), and
``identity``; a list such as ``gzip, deflate`` is undone right to left. Brotli and zstd are not
decoded (no such module is a dependency): a body in them is refused, and the recorder asks the
upstream only for the encodings listed in :data:`ACCEPTED_ENCODINGS`.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Iterator

from streamproxy.errors import CassetteError

__all__ = [
    "ACCEPTED_ENCODINGS",
    "MAX_BODY_BYTES",
    "ChunkDecoder",
    "Inflater",
    "decode_base64",
    "decode_body",
    "encodings_of",
]

MAX_BODY_BYTES = 32 * 1024 * 1024
"""The most bytes one decoded body (or one base64 value) may have: 32 MiB.

A long real stream is a few MB; anything past this is a bomb or a mistake."""

ACCEPTED_ENCODINGS = "gzip, deflate"
"""The ``accept-encoding`` a recorder sends: only what :class:`ChunkDecoder` can undo."""

_STEP = 64 * 1024
_INPUT_STEP = 16 * 1024
_GZIP_OR_ZLIB = 47  # zlib's wbits: detect a gzip or a zlib header
_RAW_DEFLATE = -15


def encodings_of(header: str) -> list[str]:
    """The content codings named in a ``content-encoding`` value, in the order applied."""
    names = [name.strip().lower() for name in header.split(",")]
    return [name for name in names if name and name != "identity"]


class Inflater:
    """One zlib stream; ``deflate`` that is not zlib-wrapped is retried as raw deflate.

    Raises ``CassetteError`` as soon as its output passes ``limit`` bytes.
    """

    def __init__(self, coding: str, limit: int) -> None:
        self.coding = coding
        self.limit = limit
        self.produced = 0
        self.is_deflate = coding == "deflate"
        self.started = False
        self.engine = zlib.decompressobj(_GZIP_OR_ZLIB)

    def decode(self, data: bytes) -> Iterator[bytes]:
        """Output pieces for ``data``, at most one step (64 KiB) produced at a time."""
        if self.is_deflate and not self.started and data:
            self.started = True
            if data[0] & 0x0F != 8:  # no zlib header: raw deflate, as some servers send
                self.engine = zlib.decompressobj(_RAW_DEFLATE)
        # Input goes in small slices: zlib copies the unconsumed input on every call.
        for start in range(0, max(len(data), 1), _INPUT_STEP):
            pending = data[start : start + _INPUT_STEP]
            while True:
                try:
                    piece = self.engine.decompress(pending, _STEP)
                except zlib.error as error:
                    raise CassetteError(f"the {self.coding} body is corrupt ({error})") from None
                pending = self.engine.unconsumed_tail
                if piece:
                    yield self._counted(piece)
                if self.engine.eof or (not pending and len(piece) < _STEP):
                    break
            if self.engine.eof:
                return

    def flush(self) -> bytes:
        try:
            return self._counted(self.engine.flush())
        except zlib.error as error:
            raise CassetteError(f"the {self.coding} body is corrupt ({error})") from None

    def _counted(self, output: bytes) -> bytes:
        self.produced += len(output)
        if self.produced > self.limit:
            raise CassetteError(
                f"the body decodes to more than {self.limit} bytes (a compression bomb?)"
            )
        return output


class ChunkDecoder:
    """Undoes a ``content-encoding`` chunk by chunk, refusing to produce more than ``limit`` bytes.

    Raises:
        CassetteError: an encoding that is not supported, a corrupt body, or more than ``limit``
            decoded bytes (raised from :meth:`decode` or :meth:`flush`).
    """

    def __init__(self, header: str, *, limit: int = MAX_BODY_BYTES) -> None:
        codings = encodings_of(header)
        unsupported = [name for name in codings if name not in ("gzip", "x-gzip", "deflate")]
        if unsupported:
            raise CassetteError(
                f"content-encoding {', '.join(unsupported)} is not supported "
                "(gzip and deflate are decoded)"
            )
        self.limit = limit
        # Applied left to right, so undone right to left; each stage is bounded on its own.
        self.stages = [Inflater(name, limit) for name in reversed(codings)]

    def decode(self, data: bytes) -> bytes:
        """The decoded bytes ``data`` gives (possibly empty)."""
        pieces = [data]
        for stage in self.stages:
            pieces = [output for piece in pieces for output in stage.decode(piece)]
        return b"".join(pieces)

    def flush(self) -> bytes:
        """Whatever the decoders still hold, at the end of the body."""
        tail = b""
        for stage in self.stages:
            tail = b"".join(stage.decode(tail)) + stage.flush()
        return tail


def decode_body(body: bytes, header: str, *, limit: int = MAX_BODY_BYTES) -> bytes:
    """``body`` with its ``content-encoding`` undone, at most ``limit`` bytes.

    Raises:
        CassetteError: see :class:`ChunkDecoder`.
    """
    decoder = ChunkDecoder(header, limit=limit)
    return decoder.decode(body) + decoder.flush()


def decode_base64(text: str, *, limit: int = MAX_BODY_BYTES, what: str = "a body") -> bytes:
    """Strict base64 of at most ``limit`` decoded bytes.

    Raises:
        CassetteError: invalid base64, or longer than ``limit``.
    """
    if len(text) // 4 * 3 > limit:
        raise CassetteError(f"base64 in {what} is longer than {limit} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CassetteError(f"invalid base64 in {what}") from None
