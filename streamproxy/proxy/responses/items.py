"""The pieces of a Responses ``output``: ids, usage, and the items the encoder builds.

An item is built from deltas (texts and argument fragments appended to lists, joined once) and
rendered with ``as_dict(status)`` in the shape of openai-python's ``ResponseOutputItem``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "FunctionCallItem",
    "Item",
    "ItemStatus",
    "MessageItem",
    "OutputItem",
    "PartKind",
    "ReasoningItem",
    "TextPart",
    "new_id",
    "responses_usage",
]

Item = dict[str, object]
ItemStatus = Literal["in_progress", "completed", "incomplete"]
PartKind = Literal["output_text", "refusal"]


def new_id(prefix: str) -> str:
    """A fresh id in OpenAI's style (``resp``, ``msg``, ``rs``, ``fc`` + ``_`` + 32 hex digits)."""
    return f"{prefix}_{uuid.uuid4().hex}"


def responses_usage(usage: Mapping[str, object] | None) -> dict[str, object] | None:
    """Chat usage (OpenAI or DeepSeek fields) -> Responses usage; None stays None."""
    if usage is None:
        return None
    input_tokens = _count(usage.get("prompt_tokens"))
    output_tokens = _count(usage.get("completion_tokens"))
    total = usage.get("total_tokens")
    prompt_details = usage.get("prompt_tokens_details")
    cached = prompt_details.get("cached_tokens") if isinstance(prompt_details, Mapping) else None
    if cached is None:
        cached = usage.get("prompt_cache_hit_tokens")  # DeepSeek
    completion_details = usage.get("completion_tokens_details")
    reasoning = (
        completion_details.get("reasoning_tokens")
        if isinstance(completion_details, Mapping)
        else None
    )
    return {
        "input_tokens": input_tokens,
        # openai-python 3.57 requires cache_write_tokens; chat usage has no such count
        "input_tokens_details": {"cached_tokens": _count(cached), "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": _count(reasoning)},
        "total_tokens": _count(total) if total is not None else input_tokens + output_tokens,
    }


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(slots=True)
class TextPart:
    kind: PartKind
    texts: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(self.texts)

    def as_dict(self) -> Item:
        if self.kind == "refusal":
            return {"type": "refusal", "refusal": self.text()}
        return {"type": "output_text", "text": self.text(), "annotations": [], "logprobs": []}


@dataclass(slots=True, kw_only=True)
class OutputItem:
    id: str
    output_index: int
    status: ItemStatus = "in_progress"
    """``in_progress`` while open; ``completed`` or ``incomplete`` once its done event is sent."""

    @property
    def is_open(self) -> bool:
        return self.status == "in_progress"

    def as_dict(self, status: ItemStatus) -> Item:
        raise NotImplementedError


@dataclass(slots=True, kw_only=True)
class MessageItem(OutputItem):
    parts: list[TextPart] = field(default_factory=list)

    def as_dict(self, status: ItemStatus) -> Item:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": [part.as_dict() for part in self.parts],
        }


@dataclass(slots=True, kw_only=True)
class ReasoningItem(OutputItem):
    texts: list[str] = field(default_factory=list)

    def as_dict(self, status: ItemStatus) -> Item:
        summary = [{"type": "summary_text", "text": "".join(self.texts)}] if self.texts else []
        return {"id": self.id, "type": "reasoning", "status": status, "summary": summary}


@dataclass(slots=True, kw_only=True)
class FunctionCallItem(OutputItem):
    call_id: str
    name: str
    arguments: list[str] = field(default_factory=list)

    def as_dict(self, status: ItemStatus) -> Item:
        return {
            "id": self.id,
            "type": "function_call",
            "status": status,
            "call_id": self.call_id,
            "name": self.name,
            "arguments": "".join(self.arguments),
        }
