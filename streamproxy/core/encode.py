"""Events and chunks -> SSE bytes for clients (the h11 ``_writers`` role).

Frames follow the OpenAI wire format: ``data: <json>\\n\\n``, ``data: [DONE]\\n\\n`` at the end, and
comments (``: text\\n\\n``) for keep-alives and progress. No ``id:`` field is ever written (a
comment after an ``id:`` makes openai-python and httpx-sse dispatch an empty event,
openai/openai-python#2722). After an error frame a stream closes without ``[DONE]``; the OpenAI
SDK raises ``APIError`` on it.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from streamproxy.errors import StreamProxyError

DONE_FRAME = b"data: [DONE]\n\n"


def encode_chunk(chunk: Mapping[str, object]) -> bytes:
    """One ``data:`` frame holding ``chunk`` as compact JSON."""
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def encode_comment(text: str) -> bytes:
    """One comment frame; line breaks in ``text`` become spaces so it stays one comment."""
    clean = text.replace("\r", " ").replace("\n", " ")
    return b": " + clean.encode() + b"\n\n"


def encode_done() -> bytes:
    """The ``data: [DONE]`` frame."""
    return DONE_FRAME


def encode_error(error: StreamProxyError | Mapping[str, object]) -> bytes:
    """One ``data: {"error": {...}}`` frame."""
    body = error.to_openai_error() if isinstance(error, StreamProxyError) else error
    if "error" not in body:
        body = {"error": dict(body)}
    return encode_chunk(body)
