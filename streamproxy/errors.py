"""Every error streamproxy raises on purpose, in one tree.

Nothing else escapes on bad input: malformed bytes, chunks, arguments, requests, cassettes or
tool definitions each raise one of these. The HTTP status a proxy answers with and the OpenAI
``type``/``code`` it reports are class attributes (``status_hint``, ``code``)::

    StreamProxyError            base                                                  500
      ProtocolError             the upstream broke the SSE or chunk rules             502
        LimitExceededError      one event, text or stream is larger than a limit      502
      IncompleteStreamError     EOF inside an event or before the stream's end mark   502
      UpstreamError             transport failure, timeout or non-2xx status  502 or the upstream's
      RequestError              the client's request is malformed or refused          400
        RequestTooLargeError    the request body is over the size limit               413
      AuthenticationError       no client key, or a wrong one                         401
      ToolRoundsExceededError   the model kept calling server tools past max_rounds   502
      InternalError             a bug in the proxy (details only in the log)          500
      StateUnavailableError     the state store (--state) cannot be reached in time   503
      StateLimitError           a client's share of the state store is full           429
      CassetteError             a cassette is malformed or nothing in it matches      500
      ToolDefinitionError       a function cannot be a tool, or a tools spec is wrong  (start-up)
      McpToolError              an MCP tool call failed (isError, server gone)   (a tool result)

The message is built in ``__init__`` from fields, so a handler can read the fields instead of
parsing text. The core (``streamproxy.core``) raises ``ProtocolError`` and
``LimitExceededError`` only; the others belong to the adapters.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "CassetteError",
    "IncompleteStreamError",
    "InternalError",
    "LimitExceededError",
    "McpToolError",
    "ProtocolError",
    "RequestError",
    "RequestTooLargeError",
    "StateLimitError",
    "StateUnavailableError",
    "StreamProxyError",
    "ToolDefinitionError",
    "ToolRoundsExceededError",
    "UpstreamError",
]


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


class RequestError(StreamProxyError):
    """The client's request is malformed or asks for something the proxy refuses."""

    status_hint = 400
    code = "invalid_request_error"


class RequestTooLargeError(RequestError):
    """The request body is larger than the configured limit."""

    status_hint = 413
    code = "request_too_large"


class AuthenticationError(StreamProxyError):
    """No client key, or a wrong one."""

    status_hint = 401
    code = "invalid_api_key"


class ToolRoundsExceededError(StreamProxyError):
    """The model kept calling server tools past ``max_rounds``."""

    status_hint = 502
    code = "tool_rounds_exceeded"


class InternalError(StreamProxyError):
    """An unexpected failure inside the proxy (a bug); the details are only in the log."""

    status_hint = 500
    code = "internal_error"


class StateUnavailableError(StreamProxyError):
    """The state store (stash, approval ledger, secret) did not answer in time, or failed.

    The message is the same for every cause, since it reaches clients; ``store`` (the store's
    URL without its password) and ``reason`` are for the log.
    """

    status_hint = 503
    code = "state_unavailable"

    def __init__(self, store: str, reason: str) -> None:
        super().__init__("the proxy's state store is unavailable; try again later")
        self.store = store
        self.reason = reason


class StateLimitError(StreamProxyError):
    """A client's share of the state store is full, or one value is larger than that share."""

    status_hint = 429
    code = "state_limit_exceeded"

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"{what} is over the limit of {limit}; try again later")
        self.what = what
        self.limit = limit


class CassetteError(StreamProxyError):
    """A cassette is malformed, or no recorded interaction matches a request."""

    status_hint = 500
    code = "cassette_error"


class ToolDefinitionError(StreamProxyError, ValueError):
    """A function cannot be a tool (no hints, bad name, duplicate) or a tools spec is wrong."""

    code = "tool_definition_error"


class McpToolError(StreamProxyError):
    """An MCP server's tool call failed: ``isError``, an error answer, or the server is gone.

    Never reaches a client as an HTTP error: ``Tool.run`` turns it into the tool result the model
    reads (``error: McpToolError: ...``), and the stream goes on.
    """

    code = "mcp_tool_error"
