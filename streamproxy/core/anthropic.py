"""Reader for Anthropic's Messages stream (``message_start`` ... ``message_stop``).

Mapped onto the same assembler, and so the same events, as the OpenAI dialect: one choice (0);
``text`` blocks are content, ``thinking`` blocks reasoning, ``tool_use`` blocks tool calls keyed by
their block index, whose ``input_json_delta.partial_json`` pieces are the argument fragments.
``content_block_stop`` seals a tool call (the structural boundary Anthropic gives); ``stop_reason``
maps to OpenAI finish reasons; ``message_stop`` is the end mark (a later ``[DONE]``, which
OpenRouter adds, is harmless). ``content_block_start.input`` is ``{}`` for every tool_use block and
is not an argument fragment (BerriAI/litellm#4537 prefixed arguments with it); a non-empty one is.
Usage is ``message_start.message.usage`` updated by ``message_delta.usage``, reported in the OpenAI
shape (``prompt_tokens`` counts cache reads and writes too).
"""

from __future__ import annotations

from typing import Any

import orjson

from streamproxy.core.assembler import Assembler
from streamproxy.errors import ProtocolError

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "refusal": "content_filter",
    "pause_turn": "stop",
}

EVENT_TYPES = frozenset(
    {
        "message_start",
        "message_delta",
        "message_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "ping",
    }
)


class AnthropicReader:
    """Per-stream state of the Anthropic dialect (block types and raw usage)."""

    def __init__(self, assembler: Assembler) -> None:
        self._assembler = assembler
        self._block_types: dict[int, str] = {}
        self._usage: dict[str, Any] = {}

    def read(self, payload: dict[str, Any]) -> None:
        """Apply one event payload; raises ``ProtocolError`` when it has the wrong shape."""
        kind = payload.get("type")
        assembler = self._assembler
        if kind == "message_start":
            message = payload.get("message")
            if not isinstance(message, dict):
                raise ProtocolError("message_start has no message object")
            assembler.start(
                "anthropic-messages",
                str(message.get("id") or ""),
                str(message.get("model") or ""),
                0,
            )
            assembler.choice(0).role = str(message.get("role") or "assistant")
            self._update_usage(message.get("usage"))
        elif kind == "content_block_start":
            self._block_start(_block_index(payload), payload.get("content_block"))
        elif kind == "content_block_delta":
            self._block_delta(_block_index(payload), payload.get("delta"))
        elif kind == "content_block_stop":
            index = _block_index(payload)
            if self._block_types.get(index) == "tool_use":
                assembler.close_block(0, index)
        elif kind == "message_delta":
            delta = payload.get("delta") or {}
            if not isinstance(delta, dict):
                raise ProtocolError("message_delta.delta is not an object")
            self._update_usage(payload.get("usage"))
            stop_reason = delta.get("stop_reason")
            if isinstance(stop_reason, str) and stop_reason:
                assembler.finish(0, STOP_REASONS.get(stop_reason, stop_reason))
        elif kind == "message_stop":
            assembler.end_mark()
        elif kind == "error":
            error = payload.get("error")
            assembler.error({"error": error if error is not None else payload})
        # "ping" and unknown event types are ignored, as Anthropic's versioning policy asks

    def _block_start(self, index: int, block: object) -> None:
        if not isinstance(block, dict):
            raise ProtocolError("content_block_start has no content_block object")
        kind = str(block.get("type") or "")
        self._block_types[index] = kind
        assembler = self._assembler
        if kind == "text":
            assembler.text(0, "content", _text(block.get("text")))
        elif kind == "thinking":
            assembler.text(0, "reasoning", _text(block.get("thinking")))
        elif kind == "tool_use":
            start_input = block.get("input")
            arguments = orjson.dumps(start_input).decode() if start_input else None
            assembler.tool_delta(
                0,
                call_index=index,
                id=_text(block.get("id")) or None,
                name=_text(block.get("name")) or None,
                arguments=arguments,
                claimed=set(),
            )

    def _block_delta(self, index: int, delta: object) -> None:
        if not isinstance(delta, dict):
            raise ProtocolError("content_block_delta has no delta object")
        kind = delta.get("type")
        assembler = self._assembler
        if kind == "text_delta":
            assembler.text(0, "content", _text(delta.get("text")))
        elif kind == "thinking_delta":
            assembler.text(0, "reasoning", _text(delta.get("thinking")))
        elif kind == "input_json_delta":
            if self._block_types.get(index) != "tool_use":
                raise ProtocolError(f"input_json_delta for block {index}, which is not tool_use")
            assembler.tool_delta(
                0,
                call_index=index,
                id=None,
                name=None,
                arguments=_text(delta.get("partial_json")),
                claimed=set(),
            )

    def _update_usage(self, usage: object) -> None:
        if not isinstance(usage, dict):
            return
        self._usage.update({key: value for key, value in usage.items() if value is not None})
        raw = self._usage
        cache_read = _count(raw.get("cache_read_input_tokens"))
        cache_write = _count(raw.get("cache_creation_input_tokens"))
        prompt = _count(raw.get("input_tokens")) + cache_read + cache_write
        completion = _count(raw.get("output_tokens"))
        self._assembler.usage(
            {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": cache_read},
            }
        )


def _block_index(payload: dict[str, Any]) -> int:
    index = payload.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ProtocolError(f"content block index {index!r} is not a non-negative integer")
    return index


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
