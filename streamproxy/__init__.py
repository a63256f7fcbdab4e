"""streamproxy: a streaming tool-call assembler and proxy for OpenAI-compatible chat APIs.

What a library user needs is here: the sans-I/O assembler (``ChatStream`` and its events), the
error tree, server tools (``tool``, ``ToolSet``) and the proxy app (``Config``, ``create_app``).
The subpackages hold the rest: ``streamproxy.core`` (the assembler), ``streamproxy.proxy`` (the
server), ``streamproxy.cassette`` (recordings).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamproxy.config import Config
from streamproxy.core import (
    ChatStream,
    ChoiceFinished,
    ContentDelta,
    Event,
    Limits,
    ReasoningDelta,
    RefusalDelta,
    StreamEnded,
    StreamStarted,
    StreamWarning,
    ToolCallArgumentsDelta,
    ToolCallInvalid,
    ToolCallPreview,
    ToolCallReady,
    ToolCallStarted,
    UpstreamErrorReported,
    UsageReported,
    assemble,
)
from streamproxy.errors import (
    AuthenticationError,
    CassetteError,
    IncompleteStreamError,
    InternalError,
    LimitExceededError,
    ProtocolError,
    RequestError,
    RequestTooLargeError,
    StreamProxyError,
    ToolDefinitionError,
    ToolRoundsExceededError,
    UpstreamError,
)
from streamproxy.proxy.tools import Tool, ToolSet, tool

if TYPE_CHECKING:
    from streamproxy.proxy.app import create_app

__version__ = "0.2.0"

__all__ = [
    "AuthenticationError",
    "CassetteError",
    "ChatStream",
    "ChoiceFinished",
    "Config",
    "ContentDelta",
    "Event",
    "IncompleteStreamError",
    "InternalError",
    "LimitExceededError",
    "Limits",
    "ProtocolError",
    "ReasoningDelta",
    "RefusalDelta",
    "RequestError",
    "RequestTooLargeError",
    "StreamEnded",
    "StreamProxyError",
    "StreamStarted",
    "StreamWarning",
    "Tool",
    "ToolCallArgumentsDelta",
    "ToolCallInvalid",
    "ToolCallPreview",
    "ToolCallReady",
    "ToolCallStarted",
    "ToolDefinitionError",
    "ToolRoundsExceededError",
    "ToolSet",
    "UpstreamError",
    "UpstreamErrorReported",
    "UsageReported",
    "__version__",
    "assemble",
    "create_app",
    "tool",
]


def __getattr__(name: str) -> Any:
    """``create_app`` is imported on first use: the assembler alone needs no web stack."""
    if name == "create_app":
        from streamproxy.proxy.app import create_app

        return create_app
    raise AttributeError(f"module 'streamproxy' has no attribute {name!r}")
