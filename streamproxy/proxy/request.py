"""The client's request, checked: ``parse_request(raw) -> ChatRequest`` (validation only).

Fields the proxy does not use pass through unchanged (``turn.py`` builds the upstream body and
``conversation.py`` the upstream messages). The proxy consumes only its own extension field,
``streamproxy``::

    "streamproxy": {"tool_progress": true,     # tool progress chunks (frames.py)
                    "tool_previews": true,     # server calls' arguments as they stream
                    "approvals": "chat"}       # or "client": this request's approval mode

A request is refused with a ``RequestError`` (400) when it is not a JSON object, is nested
deeper than ``MAX_JSON_DEPTH``, has no ``model`` or ``messages``, asks for ``n`` other than the
integer 1, has a malformed extension field, or names a client tool like a server tool (the two
owners would be ambiguous).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson

from streamproxy.config import ApprovalMode
from streamproxy.errors import RequestError, RequestTooLargeError
from streamproxy.proxy.tools import ToolSet

Message = dict[str, object]

EXTENSION_FIELD = "streamproxy"
# orjson reads JSON nested up to 1024 levels but writes only up to 254: a body that parses must
# also be sent upstream. Real chat requests nest a few levels (messages, content parts, schemas).
MAX_JSON_DEPTH = 128


@dataclass(slots=True, kw_only=True)
class ChatRequest:
    """A checked client request."""

    body: dict[str, object]
    is_streaming: bool
    include_usage: bool
    wants_tool_progress: bool
    client_tools: list[dict[str, object]]
    client_tool_names: frozenset[str]
    is_thinking: bool
    has_strict_client_tools: bool
    max_tokens: int | None
    messages: list[Message] = field(default_factory=list)
    approvals: ApprovalMode | None = None
    """The approval mode the request asked for (``streamproxy.approvals``), else the server's."""
    wants_tool_previews: bool = False


def parse_request(
    raw: bytes, *, server_tools: ToolSet, is_deepseek: bool, max_size: int
) -> ChatRequest:
    """Parse and check a ``/v1/chat/completions`` body.

    Raises:
        RequestError: not a JSON object, no model or messages, ``n`` > 1, a tool name clash.
    """
    if len(raw) > max_size:
        raise RequestTooLargeError(f"the request is {len(raw)} bytes; the limit is {max_size}")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise RequestError(f"the request body is not JSON: {error}") from None
    check_depth(body)
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    if not isinstance(body.get("model"), str):
        raise RequestError("'model' is required and must be a string")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' is required and must be a non-empty list")
    if not all(isinstance(message, dict) for message in messages):
        raise RequestError("every message must be an object")
    n = body.get("n")
    if n is not None and (type(n) is not int or n != 1):
        raise RequestError("'n' must be the integer 1: the tool-running proxy answers one choice")
    extension = body.pop(EXTENSION_FIELD, None)
    if extension is None:
        extension = {}
    if not isinstance(extension, dict):
        raise RequestError(f"'{EXTENSION_FIELD}' must be an object")
    approvals = extension.get("approvals")
    if approvals not in (None, "chat", "client"):
        raise RequestError(f'\'{EXTENSION_FIELD}.approvals\' must be "chat" or "client"')
    client_tools = body.get("tools") or []
    if not isinstance(client_tools, list):
        raise RequestError("'tools' must be a list")
    names: set[str] = set()
    has_strict = False
    for entry in client_tools:
        function = entry.get("function") if isinstance(entry, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise RequestError("every tool needs a function with a name")
        name = function["name"]
        if name in server_tools:
            raise RequestError(f"the tool name {name!r} belongs to a server tool; rename yours")
        names.add(name)
        has_strict = has_strict or function.get("strict") is True
    stream_options = body.get("stream_options")
    include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    return ChatRequest(
        body=body,
        is_streaming=body.get("stream") is True,
        include_usage=include_usage,
        wants_tool_progress=extension.get("tool_progress") is True,
        wants_tool_previews=extension.get("tool_previews") is True,
        approvals=approvals,
        client_tools=list(client_tools),
        client_tool_names=frozenset(names),
        is_thinking=is_thinking_mode(body, is_deepseek=is_deepseek),
        has_strict_client_tools=has_strict,
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
        messages=[dict(message) for message in messages],
    )


def is_thinking_mode(body: Mapping[str, object], *, is_deepseek: bool) -> bool:
    """Whether the request runs in thinking mode (it decides only whether a
    ``tool_choice: "required"`` is dropped, which DeepSeek's thinking mode rejects).

    An explicit ``thinking: {"type": ...}`` decides; otherwise DeepSeek's default (on), and
    elsewhere only when ``reasoning_effort`` is set. Never the model's name: models are renamed.
    """
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") in ("enabled", "disabled"):
        return bool(thinking["type"] == "enabled")
    if is_deepseek:
        return True
    return body.get("reasoning_effort") not in (None, "none")


def content_text(content: object) -> str:
    """A message's ``content`` as text: a string as it is, the text of its parts otherwise."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def check_depth(body: object) -> None:
    """Refuse a body nested deeper than ``MAX_JSON_DEPTH`` (it could not be sent upstream).

    Raises:
        RequestError: too deep.
    """
    if _depth_exceeds(body, MAX_JSON_DEPTH):
        raise RequestError(f"the request body is nested deeper than {MAX_JSON_DEPTH} levels")


def _depth_exceeds(value: object, limit: int) -> bool:
    """Whether ``value`` nests lists and objects deeper than ``limit``. Only containers are
    visited (a body is mostly strings), and the recursion stops at ``limit`` + 1 levels."""
    if not isinstance(value, dict | list):
        return False
    if limit < 1:
        return True
    for child in value.values() if isinstance(value, dict) else value:
        if isinstance(child, dict | list) and _depth_exceeds(child, limit - 1):
            return True
    return False
