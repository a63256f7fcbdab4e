"""Read cassettes, and turn other people's recordings into cassettes.

:func:`read_cassette` accepts, by content (the name only breaks ties):

- a streamproxy cassette (``*.cassette.json``);
- a raw SSE body (``*.sse``): one interaction with no request, so it answers any request. When a
  ``<stem>.json`` metadata file sits beside it (the layout of ``../shared/recordings``), its
  ``request``, ``endpoint``, ``response_status`` and ``response_content_type`` are used;
- a VCR YAML cassette, as written by vcrpy / pytest-recording (``interactions:``) or Ruby's VCR
  (``http_interactions:``). Headers are redacted again on the way in; gzip/deflate bodies are
  decompressed (and ``content-encoding`` dropped) so the cassette stays readable. YAML aliases
  to mappings or lists are refused (an alias bomb expands exponentially); scalars may be aliased;
- a fixture of one JSON chunk per line (vercel/ai's ``*.chunks.txt``): each line becomes a
  ``data:`` event (``event: <type>`` added for Anthropic events) and an OpenAI-style stream gets
  ``data: [DONE]``;
- a directory: every ``*.cassette.json``, ``*.sse``, ``*.yaml``/``*.yml`` and ``*.jsonl``/
  ``*.chunks.txt`` in it, in name order, merged into one cassette.

Sources that kept only the whole body lose the chunk boundaries: the body is cut after each SSE
event, every chunk at offset 0.

Hostile input fails fast with a ``CassetteError`` naming the file: a file over
:data:`~streamproxy.cassette.format.MAX_FILE_BYTES`, a body that decodes (gzip, deflate,
base64) to more than :data:`~streamproxy.cassette.decoding.MAX_BODY_BYTES`, a field of the
wrong type, a status outside 100-599, more than
:data:`~streamproxy.cassette.format.MAX_INTERACTIONS` interactions.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson

from streamproxy.cassette.decoding import MAX_BODY_BYTES, decode_base64, decode_body
from streamproxy.cassette.format import (
    FORMAT_KEY,
    MAX_FILE_BYTES,
    MAX_INTERACTIONS,
    Cassette,
    Chunk,
    Interaction,
    RecordedRequest,
    RecordedResponse,
    loads,
)
from streamproxy.cassette.http import recorded_request
from streamproxy.cassette.redact import redact_headers, scrub_bytes
from streamproxy.core.anthropic import EVENT_TYPES
from streamproxy.errors import CassetteError

SourceFormat = Literal["cassette", "sse", "vcr", "json-lines"]

DIRECTORY_PATTERNS = ("*.cassette.json", "*.sse", "*.yaml", "*.yml", "*.jsonl", "*.chunks.txt")

_EVENT_END = re.compile(rb"(?<=\r\n\r\n)|(?<=\n\n)|(?<=\r\r)(?!\n)")

# Anthropic Messages event types, to frame a JSON-lines fixture with its `event:` names.
_ANTHROPIC_TYPES = EVENT_TYPES | {"error"}


def read_cassette(path: str | os.PathLike[str]) -> Cassette:
    """Read a cassette, a recording in another format, or a directory of them.

    Raises:
        CassetteError: unreadable, unrecognised or malformed input (the message names the file).
    """
    path = Path(path)
    if path.is_dir():
        return _read_directory(path)
    data = _read_bounded(path)
    kind = detect_format(data, path.name)
    if kind == "cassette":
        return loads(data, name=str(path))
    if kind == "vcr":
        return from_vcr_yaml(data, name=str(path))
    if kind == "json-lines":
        return from_json_lines(data, source=f"imported from the JSON-lines fixture {path.name}")
    return _from_sse_file(path, data)


def _read_bounded(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(limit + 1)
    except OSError as error:
        raise CassetteError(f"cannot read {path}: {error.strerror}") from None
    if len(data) > limit:
        raise CassetteError(f"{path}: larger than {limit} bytes; not read")
    return data


def detect_format(data: bytes, name: str = "") -> SourceFormat:
    """Which importer reads ``data``."""
    head = data.lstrip()[:4096]
    if head.startswith(b"{") and FORMAT_KEY.encode() in head[:200]:
        return "cassette"
    if re.search(rb"^(http_)?interactions:", data, re.MULTILINE) or name.endswith(
        (".yaml", ".yml")
    ):
        return "vcr"
    if head.startswith((b"data:", b"event:", b":", b"id:", b"retry:")) or name.endswith(".sse"):
        return "sse"
    if head.startswith(b"{"):
        return "json-lines"
    raise CassetteError(f"{name or 'input'}: not a cassette, SSE body, VCR YAML or JSON lines")


def split_events(body: bytes) -> list[bytes]:
    """A body cut after each SSE event's blank line (the pieces join back to ``body``)."""
    return [piece for piece in _EVENT_END.split(body) if piece]


def from_sse(
    body: bytes,
    *,
    source: str | None = None,
    request: RecordedRequest | None = None,
    status: int = 200,
    content_type: str = "text/event-stream",
) -> Cassette:
    """A one-interaction cassette whose response is ``body``, cut after each event."""
    chunks = [Chunk(0.0, piece) for piece in split_events(body)]
    response = RecordedResponse(
        status=status, headers={"content-type": content_type}, chunks=chunks
    )
    return Cassette(interactions=[Interaction(request=request, response=response)], source=source)


def from_json_lines(data: bytes, *, source: str | None = None) -> Cassette:
    """A cassette from a fixture holding one JSON chunk per line (blank lines ignored)."""
    events: list[bytes] = []
    is_anthropic = False
    for number, line in enumerate(data.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        try:
            chunk = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise CassetteError(f"line {number} of the JSON-lines fixture is not JSON") from None
        kind = chunk.get("type") if isinstance(chunk, dict) else None
        if kind in _ANTHROPIC_TYPES:
            is_anthropic = True
            events.append(b"event: " + str(kind).encode() + b"\ndata: " + line + b"\n\n")
        else:
            events.append(b"data: " + line + b"\n\n")
    if not events:
        raise CassetteError("the JSON-lines fixture has no chunks")
    if not is_anthropic:
        events.append(b"data: [DONE]\n\n")
    return from_sse(b"".join(events), source=source)


def from_vcr_yaml(data: bytes | str, *, name: str = "<vcr>") -> Cassette:
    """A cassette from a VCR YAML file (vcrpy, pytest-recording or Ruby VCR).

    Raises:
        CassetteError: not YAML, an alias to a mapping or list, or a malformed interaction.
    """
    import yaml

    try:
        document = yaml.load(data, Loader=_loader_class())
    except _AliasRefused as error:
        raise CassetteError(f"{name}: {error}") from None
    except yaml.YAMLError as error:
        raise CassetteError(f"{name}: not valid YAML ({error})") from None
    except RecursionError:
        raise CassetteError(f"{name}: YAML nested too deeply") from None
    if not isinstance(document, dict):
        raise CassetteError(f"{name}: not a VCR cassette")
    items = document.get("interactions", document.get("http_interactions"))
    if not isinstance(items, list):
        raise CassetteError(f"{name}: no 'interactions' list; not a VCR cassette")
    if len(items) > MAX_INTERACTIONS:
        raise CassetteError(f"{name}: more than {MAX_INTERACTIONS} interactions")
    interactions = []
    for index, item in enumerate(items):
        try:
            interactions.append(_vcr_interaction(item))
        except (KeyError, TypeError, ValueError) as error:
            raise CassetteError(f"{name}: interaction {index} is malformed ({error})") from None
        except CassetteError as error:
            raise CassetteError(f"{name}: interaction {index}: {error.message}") from None
    return Cassette(
        interactions=interactions, source=f"imported from the VCR cassette {Path(name).name}"
    )


class _AliasRefused(Exception):
    """A YAML alias to a mapping or a list (see :func:`_loader_class`)."""


def _loader_class() -> type[Any]:
    """A SafeLoader that refuses aliases to collections: a scalar alias cannot grow the
    document, but nine levels of lists of aliases are 10**9 nodes (the "billion laughs")."""
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()  # type: ignore[no-untyped-call]
                node = self.anchors.get(event.anchor)
                if node is not None and not isinstance(node, yaml.ScalarNode):
                    raise _AliasRefused(
                        f"YAML alias *{event.anchor} to a mapping or list is refused "
                        f"(line {event.start_mark.line + 1}); aliases can expand exponentially"
                    )
            return super().compose_node(parent, index)

    return BoundedLoader


def _vcr_interaction(item: object) -> Interaction:
    if not isinstance(item, dict):
        raise TypeError("an interaction must be a mapping")
    request = item["request"]
    response = item["response"]
    if not isinstance(request, dict) or not isinstance(response, dict):
        raise TypeError("request and response must be mappings")
    secrets: set[str] = set()
    uri = _string(request["uri"], "request uri")
    url = urlsplit(uri)
    recorded = recorded_request(
        _string(request.get("method", "POST"), "request method"),
        url.path or "/",
        url.query,
        _vcr_headers(request.get("headers")),
        _vcr_body(request.get("body")),
        secrets,
    )
    response_headers = _vcr_headers(response.get("headers"))
    body = _vcr_body(response.get("body"))
    encoding = ", ".join(v for k, v in response_headers if k.lower() == "content-encoding")
    if encoding:
        body = decode_body(body, encoding)
        response_headers = [(k, v) for k, v in response_headers if k.lower() != "content-encoding"]
    status = response.get("status", {})
    code = status.get("code", 200) if isinstance(status, dict) else status
    body = scrub_bytes(body, secrets)
    chunks = [Chunk(0.0, piece) for piece in split_events(body)]
    return Interaction(
        request=recorded,
        response=RecordedResponse(
            status=_status(code),
            headers=redact_headers(response_headers, secrets),
            chunks=chunks,
        ),
    )


def _string(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, not {type(value).__name__}")
    return value


def _status(value: object) -> int:
    """An HTTP status from an int or a numeric string, 100-599."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 100 <= value <= 599:
        raise ValueError(f"status must be an HTTP status (100-599), not {value!r:.40}")
    return value


def _vcr_headers(headers: object) -> list[tuple[str, str]]:
    if headers is None:
        return []
    if not isinstance(headers, dict):
        raise TypeError(f"headers must be a mapping, not {type(headers).__name__}")
    pairs = []
    for name, values in headers.items():
        for value in values if isinstance(values, list) else [values]:
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise TypeError(
                    f"header {str(name)[:40]!r} must be text, not {type(value).__name__}"
                )
            pairs.append((str(name), str(value)))
    return pairs


def _vcr_body(body: object) -> bytes:
    """vcrpy keeps ``body`` as a string/bytes or ``{"string": ...}``; Ruby VCR as a mapping."""
    if isinstance(body, dict):
        if "base64_string" in body:
            text = _string(body["base64_string"], "base64_string")
            return decode_base64("".join(text.split()), what="a VCR body")
        body = body.get("string")
    if body is None:
        return b""
    if isinstance(body, bytes):
        data = body
    elif isinstance(body, str):
        data = body.encode()
    else:
        raise TypeError(f"a body must be text or bytes, not {type(body).__name__}")
    if len(data) > MAX_BODY_BYTES:
        raise CassetteError(f"a body is longer than {MAX_BODY_BYTES} bytes")
    return data


def _from_sse_file(path: Path, data: bytes) -> Cassette:
    metadata_path = path.with_suffix(".json")
    if not metadata_path.is_file():
        return from_sse(data, source=f"imported from the raw SSE body {path.name}")
    try:
        metadata = orjson.loads(_read_bounded(metadata_path, 1024 * 1024))
    except orjson.JSONDecodeError:
        raise CassetteError(f"{metadata_path}: metadata beside {path.name} is not JSON") from None
    try:
        return _with_metadata(path, data, metadata)
    except (TypeError, ValueError) as error:
        raise CassetteError(f"{metadata_path}: {error}") from None


def _with_metadata(path: Path, data: bytes, metadata: object) -> Cassette:
    if not isinstance(metadata, dict):
        raise TypeError("the metadata must be a JSON object")
    request = None
    if metadata.get("request") is not None:
        if not isinstance(metadata["request"], dict):
            raise TypeError("'request' must be an object")
        endpoint = urlsplit(_string(metadata.get("endpoint") or "/chat/completions", "endpoint"))
        request = recorded_request(
            "POST",
            endpoint.path or "/chat/completions",
            endpoint.query,
            [("content-type", "application/json")],
            orjson.dumps(metadata["request"]),
            set(),
        )
    content_type = metadata.get("response_content_type") or "text/event-stream"
    provenance = [
        str(metadata.get(key))[:200] for key in ("source_repo", "source_path", "source_commit")
    ]
    source = (
        f"{provenance[0]}: {provenance[1]} @ {provenance[2]} "
        f"({str(metadata.get('license'))[:60]}), via {path.name}"
    )
    return from_sse(
        data,
        source=source,
        request=request,
        status=_status(metadata.get("response_status") or 200),
        content_type=_string(content_type, "response_content_type"),
    )


def _read_directory(path: Path) -> Cassette:
    files = sorted({file for pattern in DIRECTORY_PATTERNS for file in path.glob(pattern)})
    if not files:
        raise CassetteError(f"{path}: no cassettes or recordings in this directory")
    merged = Cassette(source=f"every recording in {path}")
    for file in files:
        merged.interactions.extend(read_cassette(file).interactions)
        if len(merged.interactions) > MAX_INTERACTIONS:
            raise CassetteError(f"{path}: more than {MAX_INTERACTIONS} interactions in all")
    return merged
