"""The cassette format (version 1): one JSON document a person can read and diff.

A cassette keeps one or more HTTP interactions. The response body is kept as the sequence of byte
chunks exactly as they were read from the socket, each with its time offset, so a replay has the
provider's real chunk boundaries and pacing::

    {
      "streamproxy_cassette": 1,
      "source": "recorded with streamproxy record from https://api.deepseek.com on 2026-01-02",
      "interactions": [
        {
          "request": {
            "method": "POST",
            "path": "/chat/completions",
            "headers": {"authorization": "<redacted>", "content-type": "application/json"},
            "body": {"model": "deepseek-chat", "messages": [...], "stream": true}
          },
          "response": {
            "status": 200,
            "headers": {"content-type": "text/event-stream; charset=utf-8"},
            "chunks": [
              {"t": 412.052, "text": "data: {...}\\n\\n"},
              {"t": 431.9, "base64": "ZGF0YTog..."}
            ]
          }
        }
      ]
    }

- ``t`` is milliseconds since the request was sent (so the first ``t`` is the time to first byte).
- A chunk is ``text`` when its bytes are valid UTF-8, else ``base64`` (a chunk boundary can fall
  inside a multi-byte character, or the body can be compressed).
- ``request`` is ``null`` for a cassette made from a bare response body: it answers any request.
- A request body that is JSON is kept as JSON under ``body``; any other body goes under
  ``body_text`` or ``body_base64``. A non-empty query string goes under ``query``.
- The file is written with two-space indentation and one chunk per line, so a diff shows which
  chunks changed.

Reading is bounded, so a hostile file fails fast with a ``CassetteError`` naming the field: at
most :data:`MAX_INTERACTIONS` interactions, :data:`MAX_CHUNKS` chunks a response, offsets from 0
to :data:`MAX_OFFSET_MS` (finite), a status in 100-599, strict types everywhere (``"200"`` is not
a status, ``true`` is not a time), base64 values of at most
:data:`~streamproxy.cassette.decoding.MAX_BODY_BYTES` decoded bytes.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pydantic

from streamproxy.cassette.decoding import MAX_BODY_BYTES, decode_base64
from streamproxy.errors import CassetteError

FORMAT_VERSION = 1
FORMAT_KEY = "streamproxy_cassette"
SUFFIX = ".cassette.json"

MAX_INTERACTIONS = 10_000
"""The most interactions a cassette may hold."""
MAX_CHUNKS = 200_000
"""The most chunks one response may have (a long real stream has a few thousand)."""
MAX_OFFSET_MS = 2 * 60 * 60 * 1000.0
"""The latest chunk offset accepted: two hours (DeepSeek holds a stream for up to 30 minutes)."""
MAX_FILE_BYTES = 256 * 1024 * 1024
"""The largest cassette file :func:`load` reads: 256 MiB."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """Bytes read from the socket in one read, ``offset_ms`` after the request was sent."""

    offset_ms: float
    data: bytes


@dataclass(slots=True, kw_only=True)
class RecordedRequest:
    """The request side of an interaction (headers already redacted)."""

    method: str
    path: str
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: object = None
    """The request body parsed as JSON; ``None`` when it was empty or not JSON."""
    raw_body: bytes | None = None
    """The request body when it was not JSON (``None`` when it was JSON or empty)."""


@dataclass(slots=True, kw_only=True)
class RecordedResponse:
    """The response side: status, headers and the body as the chunks that arrived."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[Chunk] = field(default_factory=list)

    @property
    def body(self) -> bytes:
        """The whole body, the chunks joined."""
        return b"".join(chunk.data for chunk in self.chunks)

    @property
    def is_event_stream(self) -> bool:
        """Whether the body is an SSE stream (by content type, or by its first bytes)."""
        content_type = self.headers.get("content-type", "")
        if content_type:
            return content_type.split(";")[0].strip().lower() == "text/event-stream"
        start = self.body[:64].lstrip()
        return start.startswith((b"data:", b"event:", b":", b"id:"))


@dataclass(slots=True, kw_only=True)
class Interaction:
    """One request and the response it got. ``request is None`` matches any request."""

    request: RecordedRequest | None
    response: RecordedResponse


@dataclass(slots=True, kw_only=True)
class Cassette:
    """A list of interactions plus a line on where they came from."""

    interactions: list[Interaction] = field(default_factory=list)
    source: str | None = None

    def __iter__(self) -> Iterator[Interaction]:
        return iter(self.interactions)

    def __len__(self) -> int:
        return len(self.interactions)


# --- the file schema, validated with pydantic so a bad file gets a precise message -------------


class _StrictModel(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True)


class _ChunkModel(_StrictModel):
    t: float = pydantic.Field(ge=0, le=MAX_OFFSET_MS, allow_inf_nan=False)
    text: str | None = None
    base64: str | None = None


class _RequestModel(_StrictModel):
    method: str
    path: str
    query: str = ""
    headers: dict[str, str] = {}
    body: Any = None
    body_text: str | None = None
    body_base64: str | None = None


class _ResponseModel(_StrictModel):
    status: int = pydantic.Field(ge=100, le=599)
    headers: dict[str, str] = {}
    chunks: list[_ChunkModel] = pydantic.Field(max_length=MAX_CHUNKS)


class _InteractionModel(_StrictModel):
    request: _RequestModel | None
    response: _ResponseModel


class _CassetteModel(_StrictModel):
    streamproxy_cassette: int
    source: str | None = None
    interactions: list[_InteractionModel] = pydantic.Field(max_length=MAX_INTERACTIONS)


def loads(text: str | bytes, *, name: str = "<cassette>") -> Cassette:
    """Parse a cassette document.

    Raises:
        CassetteError: the text is not JSON, is another format version, or breaks the schema.
    """
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise CassetteError(f"{name}: not a JSON document ({error})") from None
    if not isinstance(document, dict) or FORMAT_KEY not in document:
        raise CassetteError(f"{name}: not a streamproxy cassette (no {FORMAT_KEY!r} key)")
    version = document[FORMAT_KEY]
    if version != FORMAT_VERSION:
        raise CassetteError(
            f"{name}: cassette format {version!r} is not supported "
            f"(this streamproxy reads format {FORMAT_VERSION})"
        )
    try:
        model = _CassetteModel.model_validate(document)
    except pydantic.ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise CassetteError(f"{name}: {where}: {first['msg']}") from None
    return Cassette(
        interactions=[_interaction_from_model(item, name) for item in model.interactions],
        source=model.source,
    )


def load(path: str | os.PathLike[str]) -> Cassette:
    """Read a cassette file (see :func:`loads`)."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise CassetteError(f"cannot read cassette {path}: {error.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise CassetteError(f"{path}: larger than {MAX_FILE_BYTES} bytes; not read")
    return loads(data, name=str(path))


def dumps(cassette: Cassette) -> str:
    """The cassette as text: indented JSON with one chunk per line, ending in a newline."""
    document: dict[str, object] = {FORMAT_KEY: FORMAT_VERSION}
    if cassette.source is not None:
        document["source"] = cassette.source
    document["interactions"] = [_interaction_to_json(item) for item in cassette.interactions]
    return _render(document, 0) + "\n"


def dump(cassette: Cassette, path: str | os.PathLike[str]) -> None:
    """Write a cassette file atomically (a temporary file renamed over the target)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(dumps(cassette), encoding="utf-8")
    temporary.replace(path)


def parse_body(content: bytes) -> tuple[object, bytes | None]:
    """Split a request body into ``(json_value, None)`` or ``(None, raw_bytes)``."""
    if not content:
        return None, None
    try:
        return orjson.loads(content), None
    except orjson.JSONDecodeError:
        return None, content


def _interaction_from_model(item: _InteractionModel, name: str) -> Interaction:
    request = None
    if item.request is not None:
        raw_body: bytes | None = None
        if item.request.body_base64 is not None:
            raw_body = _decode_base64(item.request.body_base64, name)
        elif item.request.body_text is not None:
            raw_body = item.request.body_text.encode()
        request = RecordedRequest(
            method=item.request.method.upper(),
            path=item.request.path,
            query=item.request.query,
            headers={key.lower(): value for key, value in item.request.headers.items()},
            body=item.request.body,
            raw_body=raw_body,
        )
    chunks = []
    for chunk in item.response.chunks:
        if (chunk.text is None) == (chunk.base64 is None):
            raise CassetteError(f"{name}: a chunk needs exactly one of 'text' and 'base64'")
        data = chunk.text.encode() if chunk.text is not None else _decode_base64(chunk.base64, name)
        chunks.append(Chunk(chunk.t, data))
    response = RecordedResponse(
        status=item.response.status,
        headers={key.lower(): value for key, value in item.response.headers.items()},
        chunks=chunks,
    )
    return Interaction(request=request, response=response)


def _decode_base64(text: str | None, name: str) -> bytes:
    try:
        return decode_base64(text or "", limit=MAX_BODY_BYTES, what="a chunk or body")
    except CassetteError as error:
        raise CassetteError(f"{name}: {error.message}") from None


def _interaction_to_json(item: Interaction) -> dict[str, object]:
    request: dict[str, object] | None = None
    if item.request is not None:
        request = {"method": item.request.method, "path": item.request.path}
        if item.request.query:
            request["query"] = item.request.query
        request["headers"] = dict(sorted(item.request.headers.items()))
        if item.request.raw_body is not None:
            try:
                request["body_text"] = item.request.raw_body.decode()
            except UnicodeDecodeError:
                request["body_base64"] = base64.b64encode(item.request.raw_body).decode()
        else:
            request["body"] = item.request.body
    response = {
        "status": item.response.status,
        "headers": dict(sorted(item.response.headers.items())),
        "chunks": [_ChunkLine(chunk) for chunk in item.response.chunks],
    }
    return {"request": request, "response": response}


@dataclass(frozen=True, slots=True)
class _ChunkLine:
    """Marks a chunk so the renderer writes it on one line."""

    chunk: Chunk

    def render(self) -> str:
        offset = round(self.chunk.offset_ms, 3)
        try:
            value = {"t": offset, "text": self.chunk.data.decode()}
        except UnicodeDecodeError:
            value = {"t": offset, "base64": base64.b64encode(self.chunk.data).decode()}
        return _compact(value)


def _compact(value: object) -> str:
    text: str = orjson.dumps(value).decode()
    return text


def _render(value: object, depth: int) -> str:
    """JSON with two-space indentation; chunk lines and empty containers stay on one line."""
    if isinstance(value, _ChunkLine):
        return value.render()
    indent = "  " * (depth + 1)
    closing = "  " * depth
    if isinstance(value, Mapping) and value:
        items = [
            f"{indent}{_compact(str(key))}: {_render(item, depth + 1)}"
            for key, item in value.items()
        ]
        return "{\n" + ",\n".join(items) + "\n" + closing + "}"
    if isinstance(value, list) and value:
        items = [f"{indent}{_render(item, depth + 1)}" for item in value]
        return "[\n" + ",\n".join(items) + "\n" + closing + "]"
    return _compact(value)
