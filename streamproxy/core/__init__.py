"""The sans-I/O core: SSE bytes or parsed chunks in, typed events and a completion out.

Only the standard library, orjson, pydantic and jsonschema are imported here: no httpx,
starlette, asyncio, sockets or files (``tests/core/test_no_io.py`` walks the imports).
"""

from streamproxy.core.events import (
    ChoiceFinished,
    ContentDelta,
    Event,
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
)
from streamproxy.core.limits import Limits
from streamproxy.core.schema import ToolSchemas
from streamproxy.core.sse import SSEDecoder, SSEMessage
from streamproxy.core.stream import ChatStream, assemble
from streamproxy.errors import (
    CassetteError,
    IncompleteStreamError,
    LimitExceededError,
    ProtocolError,
    StreamProxyError,
    UpstreamError,
)

__all__ = [
    "CassetteError",
    "ChatStream",
    "ChoiceFinished",
    "ContentDelta",
    "Event",
    "IncompleteStreamError",
    "LimitExceededError",
    "Limits",
    "ProtocolError",
    "ReasoningDelta",
    "RefusalDelta",
    "SSEDecoder",
    "SSEMessage",
    "StreamEnded",
    "StreamProxyError",
    "StreamStarted",
    "StreamWarning",
    "ToolCallArgumentsDelta",
    "ToolCallInvalid",
    "ToolCallPreview",
    "ToolCallReady",
    "ToolCallStarted",
    "ToolSchemas",
    "UpstreamError",
    "UpstreamErrorReported",
    "UsageReported",
    "assemble",
]
