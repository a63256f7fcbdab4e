"""The HTTP client libraries the cassette transports plug into: httpx2 always, httpx if installed.

httpx2 is the maintained continuation of httpx (same design and API, imported as ``httpx2``); the
``openai`` SDK 3.x takes an ``httpx2.Client`` as ``http_client``, the 2.x SDK an ``httpx.Client``.
A client of either library calls its transport with its own ``Request`` and checks that the
``Response`` it gets back, and that response's byte stream, are its own library's types. So the
transports here:

- derive from both libraries' ``BaseTransport`` / ``AsyncBaseTransport`` and their byte streams
  derive from both ``SyncByteStream`` / ``AsyncByteStream`` (:data:`BaseTransport` and friends
  are those joined classes; with httpx absent they are httpx2's own);
- answer with the ``Response`` class, and raise the exceptions, of the library the request came
  from (:func:`library_of`).

An inner transport (what :class:`~streamproxy.cassette.record.RecordTransport` records through)
must belong to the same library as the client.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeGuard

import httpx2

__all__ = [
    "LIBRARIES",
    "AsyncBaseTransport",
    "AsyncByteStream",
    "BaseTransport",
    "SyncByteStream",
    "is_async_byte_stream",
    "is_async_transport",
    "is_sync_byte_stream",
    "is_sync_transport",
    "library_of",
]


def _installed() -> tuple[ModuleType, ...]:
    try:
        import httpx
    except ImportError:
        return (httpx2,)
    return (httpx2, httpx)


LIBRARIES: tuple[ModuleType, ...] = _installed()
"""httpx2, then httpx when it is installed."""


def _joined(name: str) -> Any:
    """One class deriving from ``name`` in every installed library."""
    bases = tuple(getattr(library, name) for library in LIBRARIES)
    return bases[0] if len(bases) == 1 else type(name, bases, {"__module__": __name__})


if TYPE_CHECKING:
    from httpx2 import AsyncBaseTransport, AsyncByteStream, BaseTransport, SyncByteStream
else:
    BaseTransport = _joined("BaseTransport")
    AsyncBaseTransport = _joined("AsyncBaseTransport")
    SyncByteStream = _joined("SyncByteStream")
    AsyncByteStream = _joined("AsyncByteStream")


def library_of(request: object) -> ModuleType:
    """The library (``httpx2`` or ``httpx``) whose ``Request`` this is.

    Raises:
        TypeError: ``request`` is neither library's request.
    """
    for library in LIBRARIES:
        if isinstance(request, library.Request):
            return library
    raise TypeError(f"not an httpx2 or httpx request: {type(request).__name__}")


def _is_any(value: object, name: str) -> bool:
    return any(isinstance(value, getattr(library, name)) for library in LIBRARIES)


def is_sync_transport(transport: object) -> TypeGuard[httpx2.BaseTransport]:
    """Whether ``transport`` is a sync transport of either library."""
    return _is_any(transport, "BaseTransport")


def is_async_transport(transport: object) -> TypeGuard[httpx2.AsyncBaseTransport]:
    """Whether ``transport`` is an async transport of either library."""
    return _is_any(transport, "AsyncBaseTransport")


def is_sync_byte_stream(stream: object) -> TypeGuard[httpx2.SyncByteStream]:
    """Whether ``stream`` is a sync byte stream of either library."""
    return _is_any(stream, "SyncByteStream")


def is_async_byte_stream(stream: object) -> TypeGuard[httpx2.AsyncByteStream]:
    """Whether ``stream`` is an async byte stream of either library."""
    return _is_any(stream, "AsyncByteStream")
