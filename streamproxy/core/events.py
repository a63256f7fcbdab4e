"""Typed events the core emits while it assembles a stream.

Every event is an immutable value. ``choice`` is the choice index (``n > 1`` streams interleave
choices); tool-call events carry the call's canonical ``id`` (the upstream's, or a stable
generated one when the upstream sent none), which never changes once ``ToolCallStarted`` named it.

The order of events for one tool call is always::

    ToolCallStarted, (ToolCallArgumentsDelta | ToolCallPreview)*, ToolCallReady | ToolCallInvalid

and ``StreamEnded`` is always the last event of a stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Literal, TypeVar

Dialect = Literal["openai-chat", "anthropic-messages"]
InvalidKind = Literal[
    "truncated",  # the stream, the choice or the turn stopped before the arguments were complete
    "invalid_json",  # the arguments are not one strict JSON value
    "not_an_object",  # the arguments are JSON, but not an object
    "schema",  # the arguments do not validate against the tool's schema
    "unknown_tool",  # the tool's name is not among the tools the stream was given
    "too_large",  # the arguments grew past Limits.max_arguments_size
    "upstream_error",  # the upstream reported an error before the call was sealed
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base class of every event."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamStarted(Event):
    """The first chunk arrived: the completion's id, model and creation time."""

    id: str
    model: str
    created: int
    dialect: Dialect


@dataclass(frozen=True, slots=True, kw_only=True)
class ContentDelta(Event):
    """A piece of the assistant's visible answer."""

    choice: int
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReasoningDelta(Event):
    """A piece of the model's reasoning (``reasoning_content``, ``reasoning`` or thinking)."""

    choice: int
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RefusalDelta(Event):
    """A piece of a refusal message."""

    choice: int
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallStarted(Event):
    """A tool call's name is known; ``position`` is its place in ``message.tool_calls``."""

    choice: int
    id: str
    name: str
    position: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallArgumentsDelta(Event):
    """A fragment of a tool call's arguments text, exactly as it will be joined."""

    choice: int
    id: str
    fragment: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallPreview(Event):
    """A best-effort parse of incomplete arguments, for display only: never act on it."""

    choice: int
    id: str
    value: object
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallReady(Event):
    """A sealed call whose arguments are one strict JSON object valid against its schema."""

    choice: int
    id: str
    name: str
    arguments: str
    parsed: dict[str, object]


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallInvalid(Event):
    """A sealed call that must not run; ``kind`` says why and ``reason`` says it in words."""

    choice: int
    id: str
    name: str
    arguments: str
    kind: InvalidKind
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChoiceFinished(Event):
    """A choice reported its ``finish_reason`` (the first one; repeats are dropped)."""

    choice: int
    finish_reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageReported(Event):
    """Token usage so far; cumulative, so the last one is the total (never sum them)."""

    usage: dict[str, object]


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamErrorReported(Event):
    """An error sent inside the stream (``event: error`` or an ``{"error": ...}`` payload)."""

    error: dict[str, object]
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamWarning(Event):
    """Input the core tolerated but did not use as sent (a duplicate, a late fragment...)."""

    kind: str
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamEnded(Event):
    """The last event: ``is_clean`` when the stream reached its end mark with no error."""

    is_clean: bool
    reason: str | None


E = TypeVar("E", bound=Event)


def positional_constructor(cls: type[E]) -> Callable[..., E]:
    """A constructor of ``cls`` taking its field values by position, about 2x faster.

    The assembler makes one event per chunk, and a frozen dataclass's ``__init__`` (keyword
    arguments, then ``object.__setattr__`` per field) is a fifth of a chunk's cost. This builds
    the same value without that frame: ``object.__new__`` and each slot's own descriptor, the
    storage the frozen ``__init__`` writes through too. The result is the public constructor's
    value in every respect (equal, same hash and repr, still frozen: ``tests/core/test_events.py``
    checks every event class); only ``__post_init__`` would be skipped, and events have none.
    """
    setters = [vars(cls)[field.name].__set__ for field in fields(cls)]
    new = object.__new__
    if len(setters) == 2:
        set_first, set_second = setters

        def construct_two(first: object, second: object) -> E:
            event = new(cls)
            set_first(event, first)
            set_second(event, second)
            return event

        return construct_two
    if len(setters) == 3:
        set_first, set_second, set_third = setters

        def construct_three(first: object, second: object, third: object) -> E:
            event = new(cls)
            set_first(event, first)
            set_second(event, second)
            set_third(event, third)
            return event

        return construct_three

    def construct(*values: object) -> E:
        event = new(cls)
        for setter, value in zip(setters, values, strict=True):
            setter(event, value)
        return event

    return construct
