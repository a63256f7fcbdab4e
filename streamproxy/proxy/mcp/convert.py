"""Pure translations between MCP and the proxy: a tool's mode, its public name, a result's text.

No I/O here and no SDK import: the inputs are plain values (``mcp_types`` models duck-type in).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

from streamproxy.errors import McpToolError
from streamproxy.proxy.tools import ToolMode

__all__ = ["PREFIX_SEPARATOR", "call_result_text", "public_name", "tool_mode"]

PREFIX_SEPARATOR = "__"
_MAX_NAME = 64
_INVALID = re.compile(r"[^A-Za-z0-9_-]")


class Annotations(Protocol):
    @property
    def read_only_hint(self) -> bool | None: ...
    @property
    def destructive_hint(self) -> bool | None: ...


def tool_mode(annotations: Annotations | None) -> ToolMode:
    """``readOnlyHint`` -> ``read_only``; else ``destructiveHint`` -> ``needs_approval``; else
    ``auto``.

    The spec says ``destructiveHint`` only means something when ``readOnlyHint`` is false, so a
    tool marked both is read-only. An unmarked tool is ``auto`` (the spec's default for
    ``destructiveHint`` is true; here only an explicit ``true`` asks for approval).
    """
    if annotations is None:
        return "auto"
    if annotations.read_only_hint is True:
        return "read_only"
    if annotations.destructive_hint is True:
        return "needs_approval"
    return "auto"


def public_name(server: str, tool: str, taken: Collection[str]) -> str:
    """The name the model sees for ``tool`` of ``server``, given the names already ``taken``.

    The tool's own name when it is free (characters outside ``[A-Za-z0-9_-]`` become ``_``);
    else ``SERVER__tool``; a name past 64 characters, or still taken, is cut and given an
    8-character hash of ``server`` and ``tool`` so it stays unique and stable.
    """
    plain = _INVALID.sub("_", tool)
    if plain and len(plain) <= _MAX_NAME and plain not in taken:
        return plain
    prefixed = f"{_INVALID.sub('_', server)}{PREFIX_SEPARATOR}{plain}"
    if len(prefixed) <= _MAX_NAME and prefixed not in taken:
        return prefixed
    digest = hashlib.sha256(f"{server}\0{tool}".encode()).hexdigest()
    for length in range(8, 65, 8):
        hashed = f"{prefixed[: _MAX_NAME - length - 1]}_{digest[:length]}"
        if hashed not in taken:
            return hashed
    raise ValueError(f"no free name for tool {tool!r} of server {server!r}")  # pragma: no cover


def call_result_text(
    content: Sequence[Any], structured: Mapping[str, Any] | None, is_error: bool
) -> str:
    """A ``tools/call`` result as the text the model gets.

    Text blocks are joined by newlines; other blocks become a short bracketed note (an image's
    bytes are no use to a text model). The structured content is sent as JSON only when there
    is no text block: the spec asks servers to send its JSON as text too, so a text block
    already says it (often better, a tool returning ``5`` says ``5``, not ``{"result": 5}``).

    Raises:
        McpToolError: ``isError`` was set; its message is the text above.
    """
    parts = [_block_text(block) for block in content]
    has_text = any(getattr(block, "type", None) == "text" for block in content)
    if structured is not None and not has_text:
        parts.append(json.dumps(structured, ensure_ascii=False, separators=(",", ":")))
    text = "\n".join(part for part in parts if part)
    if is_error:
        raise McpToolError(text or "the tool reported an error and said nothing more")
    return text


def _block_text(block: Any) -> str:
    kind = getattr(block, "type", None)
    if kind == "text":
        return str(block.text)
    if kind in ("image", "audio"):
        return f"[{kind} {getattr(block, 'mime_type', '')}, not shown]"
    if kind == "resource_link":
        return f"[resource {block.uri}]"
    if kind == "resource":
        resource = block.resource
        text = getattr(resource, "text", None)
        if isinstance(text, str):
            return text
        return f"[resource {resource.uri} {getattr(resource, 'mime_type', '') or ''}, binary]"
    return f"[{kind} content, not shown]"
