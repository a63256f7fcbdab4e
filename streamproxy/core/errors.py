"""The project's error hierarchy.

Every error streamproxy raises on bad input is one of these; nothing else escapes the core on
malformed bytes, chunks or arguments::

    StreamProxyError           base; class attributes status_hint (HTTP) and code
      ProtocolError            the upstream broke the SSE or chunk rules            502
        LimitExceededError     one event, text or stream is larger than a limit     502
      IncompleteStreamError    EOF inside an event or before the stream's end mark  502
      UpstreamError            transport failure, timeout or non-2xx status   502 or the upstream's
      ToolError                a tool raised, timed out or returned too much        500
      CassetteError            a cassette is malformed or nothing in it matches     500

The message is built in ``__init__`` from fields, so a handler can read the fields instead of
parsing text. The core raises ``ProtocolError`` and ``LimitExceededError`` only; the others belong
to the adapters.
"""

from __future__ import annotations


class StreamProxyError(Exception):
    """Base class of every error streamproxy raises on purpose."""

    status_hint: int = 500
    code: str = "streamproxy_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_openai_error(self) -> dict[str, object]:
        """The OpenAI-shaped error body (``{"error": {message, type, code}}``)."""
        return {"error": {"message": self.message, "type": self.code, "code": self.code}}


class ProtocolError(StreamProxyError):
    """The upstream broke the SSE framing or the chat-completion chunk schema."""

    status_hint = 502
    code = "upstream_protocol_error"

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        where = f" (at byte {offset})" if offset is not None else ""
        super().__init__(message + where)
        self.offset = offset


class LimitExceededError(ProtocolError):
    """One SSE event, one text field or one stream grew past its configured limit."""

    code = "limit_exceeded"

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"{what} exceeds the limit of {limit} bytes")
        self.what = what
        self.limit = limit


class IncompleteStreamError(StreamProxyError):
    """The stream ended inside an event or before its end mark."""

    status_hint = 502
    code = "incomplete_stream"


class UpstreamError(StreamProxyError):
    """The upstream could not be reached, timed out, or answered with a non-2xx status."""

    status_hint = 502
    code = "upstream_error"

    def __init__(
        self, message: str, *, status: int | None = None, body: object | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        if status is not None and status >= 400:
            self.status_hint = status


class ToolError(StreamProxyError):
    """A server tool raised, timed out, or returned a result larger than the limit."""

    status_hint = 500
    code = "tool_error"


class CassetteError(StreamProxyError):
    """A cassette is malformed, or no recorded interaction matches a request."""

    status_hint = 500
    code = "cassette_error"
