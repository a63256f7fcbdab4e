"""The client's request: parse and check it, and rebuild the conversation sent upstream.

Fields the proxy does not use pass through unchanged. The proxy consumes only its own extension
field, ``streamproxy`` (``{"tool_progress": true}`` asks for tool progress chunks), and rewrites:

- ``messages``: stashed turns are expanded (``stash.py``), signed write-call ids are mapped back
  to the upstream's ids, approvals at the end of the conversation are verified and become
  pending write runs, and every assistant message gets a ``content`` key (DeepSeek rejects one
  without it);
- ``tools``: the server's tools are added to the client's (a client tool with a server tool's
  name is refused: the two owners would be ambiguous);
- ``tool_choice``: ``"required"`` is dropped in DeepSeek's thinking mode, which rejects it;
- ``stream`` / ``stream_options``: the upstream request always streams and always asks for usage
  (the proxy sums it); the client gets usage only when it asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import orjson

from streamproxy.errors import RequestError, RequestTooLargeError
from streamproxy.proxy.approval import ApprovalError, ApprovalSigner, approval_verdict
from streamproxy.proxy.stash import Message, TranscriptStash, calls_key, content_key
from streamproxy.tools import ToolSet

EXTENSION_FIELD = "streamproxy"
WriteVerdict = Literal["approved", "declined", "forged", "done"]


@dataclass(slots=True, kw_only=True)
class PendingWrite:
    """A write call found at the end of the conversation, with the client's verdict."""

    upstream_id: str
    name: str
    arguments: str
    verdict: WriteVerdict
    message: Message
    """The ``tool`` message (already in ``messages``) whose content receives the result."""
    reason: str | None = None


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
    pending_writes: list[PendingWrite] = field(default_factory=list)


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
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    if not isinstance(body.get("model"), str):
        raise RequestError("'model' is required and must be a string")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' is required and must be a non-empty list")
    if not all(isinstance(message, dict) for message in messages):
        raise RequestError("every message must be an object")
    if body.get("n") not in (None, 1):
        raise RequestError("the tool-running proxy supports n = 1 only")
    extension = body.pop(EXTENSION_FIELD, None)
    wants_progress = isinstance(extension, dict) and extension.get("tool_progress") is True
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
        wants_tool_progress=wants_progress,
        client_tools=list(client_tools),
        client_tool_names=frozenset(names),
        is_thinking=is_thinking_mode(body, is_deepseek=is_deepseek),
        has_strict_client_tools=has_strict,
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
        messages=[dict(message) for message in messages],
    )


def is_thinking_mode(body: Mapping[str, object], *, is_deepseek: bool) -> bool:
    """Whether the request runs in thinking mode.

    An explicit ``thinking: {"type": ...}`` decides; otherwise DeepSeek's default (enabled,
    except on the non-thinking ``deepseek-chat`` alias), and elsewhere only when
    ``reasoning_effort`` is set.
    """
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") in ("enabled", "disabled"):
        return bool(thinking["type"] == "enabled")
    if is_deepseek:
        return body.get("model") != "deepseek-chat"
    return body.get("reasoning_effort") not in (None, "none")


def rebuild_messages(
    request: ChatRequest,
    *,
    stash: TranscriptStash,
    signer: ApprovalSigner,
    client: str,
    server_tools: ToolSet,
) -> None:
    """Turn the client's messages into the upstream conversation (in place on ``request``).

    Expands stashed turns, maps signed write ids back, finds the write calls answered at the end
    of the conversation, and gives every assistant message a ``content`` key.
    """
    calls: dict[str, tuple[str, str]] = {}  # signed id -> (name, arguments), as the client sent
    expanded: list[Message] = []
    for message in request.messages:
        if message.get("role") == "assistant":
            _with_upstream_ids(message, calls)  # records the client's signed calls
        replacement = _stashed(message, stash, client)
        expanded.extend(replacement if replacement is not None else [message])
    tail_start = _tail_start(expanded)
    messages: list[Message] = []
    for position, message in enumerate(expanded):
        role = message.get("role")
        if role == "assistant":
            message = _with_upstream_ids(message, calls)
            if message.get("content") is None:
                message["content"] = ""
        elif role == "tool" and isinstance(message.get("tool_call_id"), str):
            call_id = str(message["tool_call_id"])
            signed = ApprovalSigner.parse(call_id)
            if signed is not None:
                message = dict(message, tool_call_id=signed.upstream_id)
                name, arguments = calls.get(call_id, ("", ""))
                pending = _write_verdict(call_id, name, arguments, message, signer, client, stash)
                if name not in server_tools and pending.verdict != "forged":
                    message["content"] = f"error: no server tool is named {name!r}; not run"
                elif position >= tail_start:
                    request.pending_writes.append(pending)
                else:
                    message["content"] = _earlier_write_text(pending, stash, client)
        messages.append(message)
    request.messages = messages


def _stashed(message: Message, stash: TranscriptStash, client: str) -> list[Message] | None:
    if message.get("role") != "assistant":
        return None
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list) and tool_calls:
        ids = [str(call.get("id")) for call in tool_calls if isinstance(call, dict)]
        found = stash.get(client, calls_key(ids))
    elif isinstance(message.get("content"), str) and message["content"]:
        found = stash.get(client, content_key(str(message["content"])))
    else:
        return None
    return [dict(item) for item in found] if found is not None else None


def _tail_start(messages: list[Message]) -> int:
    """Index of the first ``tool`` message answering the last assistant message."""
    for position in range(len(messages) - 1, -1, -1):
        if messages[position].get("role") != "tool":
            return position + 1
    return 0


def _with_upstream_ids(message: Message, calls: dict[str, tuple[str, str]]) -> Message:
    tool_calls = message.get("tool_calls")
    if not isinstance(tool_calls, list):
        return dict(message)
    rewritten: list[object] = []
    for call in tool_calls:
        if isinstance(call, dict) and isinstance(call.get("id"), str):
            signed = ApprovalSigner.parse(call["id"])
            if signed is not None:
                function = call.get("function")
                name = arguments = ""
                if isinstance(function, dict):
                    name = str(function.get("name", ""))
                    arguments = str(function.get("arguments", ""))
                calls[call["id"]] = (name, arguments)
                call = dict(call, id=signed.upstream_id)
        rewritten.append(call)
    return dict(message, tool_calls=rewritten)


def _write_verdict(
    call_id: str,
    name: str,
    arguments: str,
    message: Message,
    signer: ApprovalSigner,
    client: str,
    stash: TranscriptStash,
) -> PendingWrite:
    try:
        upstream_id = signer.verify(call_id, name, arguments, client=client)
    except ApprovalError as error:
        return PendingWrite(
            upstream_id=str(message["tool_call_id"]),
            name=name,
            arguments=arguments,
            verdict="forged",
            message=message,
            reason=str(error),
        )
    if stash.get(client, write_result_key(upstream_id)) is not None:
        verdict: WriteVerdict = "done"
        reason = None
    else:
        is_approved, reason = approval_verdict(message.get("content"))
        verdict = "approved" if is_approved else "declined"
    return PendingWrite(
        upstream_id=upstream_id,
        name=name,
        arguments=arguments,
        verdict=verdict,
        message=message,
        reason=reason,
    )


def write_result_key(upstream_id: str) -> str:
    """The stash key under which a write call's result is kept (so it runs once)."""
    return "write:" + upstream_id


def write_result_text(pending: PendingWrite, stash: TranscriptStash, client: str) -> str | None:
    """The stored result of a write call that already ran, if this process has it."""
    found = stash.get(client, write_result_key(pending.upstream_id))
    if found:
        content = found[0].get("content")
        return content if isinstance(content, str) else None
    return None


def declined_text(pending: PendingWrite) -> str:
    """The tool result the model gets for a write call that did not run."""
    if pending.verdict == "forged":
        return f"error: the call was not run: {pending.reason}"
    text = f"The user declined this {pending.name} call; it was not run."
    return f"{text} Reason: {pending.reason}" if pending.reason else text


def _earlier_write_text(pending: PendingWrite, stash: TranscriptStash, client: str) -> str:
    if pending.verdict in ("forged", "declined"):
        return declined_text(pending)
    stored = write_result_text(pending, stash, client)
    if stored is not None:
        return stored
    return f"The user approved this {pending.name} call and it ran; its result is not kept."
