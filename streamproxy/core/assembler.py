"""The assembler: dialect-neutral state of one streamed completion, and its events.

Theory of operation
===================

The dialect readers (``openai_chat.py``, ``anthropic.py``) turn each payload into calls on an
``Assembler``: ``start``, ``text``, ``tool_delta``, ``close_block``, ``finish``, ``usage``,
``error``, ``end_mark`` and finally ``end``. The assembler keeps, per choice, the message being
built and its tool calls, and appends events to ``self.events``, which the caller drains.

Stream states (``StreamState``): ``IDLE`` (nothing yet) -> ``STREAMING`` (first payload) ->
``ENDED_MARK`` (``[DONE]`` or ``message_stop``) -> ``CLOSED`` (``end``, which emits
``StreamEnded``); any open state goes to ``ERROR`` when the input breaks the protocol (the reader
or the decoder raised ``ProtocolError``). The inputs (``StreamInput``) are ``DATA`` (the caller
handed over bytes or a chunk), ``PAYLOAD``, ``END_MARK``, ``END`` and ``BROKEN``. Every move goes
through the table ``_TRANSITIONS`` (``move``); a pair that is not in it raises ``ProtocolError``
and leaves the stream in ``ERROR``, so a broken stream refuses all input but ``END`` (which still
delivers the closing events) and an ended one refuses everything (``CLOSED`` is final; ending
twice is a no-op). A payload after the end mark is a legal move that changes nothing: the payload
is ignored with a ``StreamWarning``.

One fast path: ``continue_arguments`` appends a plain fragment to the started, open call it
continues, when no matching rule below can apply. ``tool_delta`` tries it first, and the chunk
templates of ``template.py`` (which skip parsing a chunk that differs from the previous one in one
string) go through it too, so a rule added here is seen by every route.

Tool calls: matching a delta to a call
--------------------------------------
Providers disagree about ``index`` and ``id`` (ANCHORS B.1). A delta is matched, within its choice:

1. by a non-empty ``id`` already seen (ids repeated on every chunk are assigned, never joined);
   a non-empty id never seen before starts a new call, even at an index in use (Ollama's all-zero
   indexes, Bedrock's reused ones), unless the call at that index has no upstream id yet, in which
   case the id is adopted as an alias;
2. else by ``index`` (the latest call with that index);
3. else by the latest call of the choice (Gemini and Mistral send index-less continuations);

and a call already claimed by an earlier entry of the same delta is never claimed again, so two
index-less calls in one delta stay two calls. A matched call is left for a new one when the delta
starts a second JSON value after complete arguments (``}{``; Gemini through gateways sends whole
calls all at index 0), or names a different tool after the arguments began. A fragment that
re-sends the whole complete arguments is dropped (GPT-5.x, LiteLLM summary chunks), with a
``StreamWarning``. A name repeated whole is ignored; a name that continues (``"edit_ex"`` +
``"isting_file"``) is appended; ``""`` ids and names are not deltas. Arguments are exactly the
fragments joined; the first chunk's arguments count once. Fragments that arrive before the name
are buffered, and ``ToolCallStarted`` waits for the name. A call with no upstream id gets a stable
generated one (``call_`` + a digest of the completion id, choice and position).

When a call is ready (the sealing rule)
---------------------------------------
A call is *sealed* only by a structural boundary that says no more fragments can come:

- another call starts on its choice *and* the call's arguments are one complete JSON value
  (a call with incomplete arguments stays open, so interleaved calls are safe);
- its block stops (Anthropic ``content_block_stop``);
- its choice finishes (``finish_reason``), or the stream reaches its end mark (``[DONE]``,
  ``message_stop``).

A sealed call is ``ToolCallReady`` only when (a) it was sealed as above, (b) its arguments, joined
once, are one JSON object under a strict parse (blank arguments mean ``{}``: Anthropic's no-argument
tools and some OpenAI-compatible servers send ``""``), and (c) the tool is allowed and the object
validates against its schema when one was given. Parseability alone never seals a call:
``{"q":"x"}`` may be followed by ``, "limit": 10}`` (vercel/ai#13137). Everything else is
``ToolCallInvalid`` with a ``kind``:

- ``truncated``: the choice finished with ``length`` (or ``content_filter``), the stream ended with
  no end mark and no finish, or the arguments end inside a string or container. When the caller gave
  ``max_tokens``, a finish whose usage shows ``completion_tokens >= max_tokens`` counts as
  ``length`` whatever it says (vLLM says ``tool_calls``: vllm-project/vllm#53269), and calls are
  sealed at the end mark so the trailing usage chunk can be seen;
- ``invalid_json`` / ``not_an_object`` / ``schema`` / ``unknown_tool``: as named;
- ``too_large``: the arguments passed ``Limits.max_arguments_size`` (reported at once; the text
  is dropped);
- ``upstream_error``: an in-band error arrived while the call was open.

Incomplete versus invalid input: input that *stops* early (EOF without an end mark, a line cut
in the middle) is incomplete: the stream ends with ``StreamEnded(is_clean=False)`` and open calls
become ``truncated``. Input that *breaks the rules* (a payload that is not JSON, a chunk of the
wrong shape) is invalid: the reader raises ``ProtocolError`` and the state becomes ``ERROR``; what
was assembled so far stays readable, and ``end`` still closes the stream uncleanly.

Other rules: ``null`` and ``""`` are not deltas; a repeated ``finish_reason`` is reported once;
usage is cumulative, so the last non-null value is kept (never summed); a chunk may carry a
delta and its ``finish_reason`` together, and the delta is applied first; unknown fields are
ignored. Limits (``Limits``) bound every buffer.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from streamproxy.core.arguments import BLANK as _BLANK
from streamproxy.core.arguments import ArgumentsBuffer, parse_json
from streamproxy.core.events import (
    ChoiceFinished,
    ContentDelta,
    Dialect,
    Event,
    InvalidKind,
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
    positional_constructor,
)
from streamproxy.core.limits import Limits
from streamproxy.core.schema import ToolSchemas
from streamproxy.errors import LimitExceededError, ProtocolError

# The first characters after which a fragment may open a second JSON value (continue_arguments).
_OPENERS_AND_BLANKS = "{[" + _BLANK

# Finish reasons after which no tool call of the choice may run.
TRUNCATING_FINISH_REASONS = frozenset({"length", "content_filter", "max_tokens", "error", "abort"})


class StreamState(enum.Enum):
    """Where a stream is; see the module docstring."""

    IDLE = "idle"
    STREAMING = "streaming"
    ENDED_MARK = "ended_mark"
    CLOSED = "closed"
    ERROR = "error"

    # members are singletons: hash them by identity (Enum's own __hash__ is a Python function,
    # and the table below is consulted once per payload)
    __hash__ = object.__hash__


class StreamInput(enum.Enum):
    """What happened to a stream."""

    DATA = "data"  # the caller handed over input (bytes or a parsed chunk)
    PAYLOAD = "payload"  # one event's payload
    END_MARK = "end_mark"  # [DONE] or message_stop
    END = "end"  # end of input
    BROKEN = "broken"  # the input broke the protocol

    __hash__ = object.__hash__


# The legal moves. A pair that is not here raises ProtocolError and moves the stream to ERROR
# (CLOSED is final: StreamEnded was emitted, so it stays CLOSED). ERROR accepts only END (the
# caller still gets the closing events) and BROKEN (the reason is already kept).
_TRANSITIONS: dict[tuple[StreamState, StreamInput], StreamState] = {
    (StreamState.IDLE, StreamInput.DATA): StreamState.IDLE,
    (StreamState.IDLE, StreamInput.PAYLOAD): StreamState.STREAMING,
    (StreamState.IDLE, StreamInput.END_MARK): StreamState.ENDED_MARK,
    (StreamState.IDLE, StreamInput.END): StreamState.CLOSED,
    (StreamState.IDLE, StreamInput.BROKEN): StreamState.ERROR,
    (StreamState.STREAMING, StreamInput.DATA): StreamState.STREAMING,
    (StreamState.STREAMING, StreamInput.PAYLOAD): StreamState.STREAMING,
    (StreamState.STREAMING, StreamInput.END_MARK): StreamState.ENDED_MARK,
    (StreamState.STREAMING, StreamInput.END): StreamState.CLOSED,
    (StreamState.STREAMING, StreamInput.BROKEN): StreamState.ERROR,
    (StreamState.ENDED_MARK, StreamInput.DATA): StreamState.ENDED_MARK,
    # a payload after the end mark is ignored with a warning (payload_after_end)
    (StreamState.ENDED_MARK, StreamInput.PAYLOAD): StreamState.ENDED_MARK,
    (StreamState.ENDED_MARK, StreamInput.END_MARK): StreamState.ENDED_MARK,
    (StreamState.ENDED_MARK, StreamInput.END): StreamState.CLOSED,
    (StreamState.ENDED_MARK, StreamInput.BROKEN): StreamState.ERROR,
    (StreamState.ERROR, StreamInput.END): StreamState.CLOSED,
    (StreamState.ERROR, StreamInput.BROKEN): StreamState.ERROR,
    (StreamState.CLOSED, StreamInput.END): StreamState.CLOSED,  # ending twice is a no-op
}


class CallState(enum.Enum):
    """A tool call is open until sealed, then ready or invalid for good."""

    OPEN = "open"
    READY = "ready"
    INVALID = "invalid"


@dataclass(slots=True, eq=False)
class ToolCall:
    """One tool call being assembled."""

    choice: int
    position: int
    index: int | None
    id: str
    name: str
    arguments: ArgumentsBuffer = field(default_factory=ArgumentsBuffer)
    state: CallState = CallState.OPEN
    has_upstream_id: bool = False
    is_started: bool = False
    is_streaming: bool = False  # started and still open: fragments may take the fast path
    check_at: int = 0  # arguments size at which to check the limit or preview next
    final_arguments: str | None = None
    extra_content: dict[str, object] | None = None


@dataclass(slots=True, eq=False)
class Choice:
    """One choice's message being assembled."""

    index: int
    role: str | None = None
    content: list[str] | None = None
    reasoning: list[str] | None = None
    refusal: list[str] | None = None
    text_sizes: dict[str, int] = field(default_factory=dict)
    calls: list[ToolCall] = field(default_factory=list)
    calls_by_id: dict[str, ToolCall] = field(default_factory=dict)
    calls_by_index: dict[int, ToolCall] = field(default_factory=dict)
    finish_reason: str | None = None
    logprobs: dict[str, list[object]] | None = None
    reasoning_details: list[object] | None = None


class Assembler:
    """Dialect-neutral assembly state; the readers call its methods, events pile up."""

    def __init__(
        self,
        *,
        tools: ToolSchemas | None = None,
        previews: bool = True,
        limits: Limits | None = None,
        max_tokens: int | None = None,
    ) -> None:
        self.events: list[Event] = []
        self.state = StreamState.IDLE
        self.tools = tools
        self.previews = previews
        self.limits = limits or Limits()
        self.max_tokens = max_tokens
        self.dialect: Dialect | None = None
        self.id = ""
        self.model = ""
        self.created = 0
        self.system_fingerprint: str | None = None
        self.choices: dict[int, Choice] = {}
        self.last_usage: dict[str, object] | None = None
        self.errors: list[dict[str, object]] = []
        self.broken_reason: str | None = None
        self.is_started = False

    # ----------------------------------------------------------------- state machine

    def move(self, what: StreamInput) -> StreamState:
        """Apply one input to the stream state; return the state before it.

        Raises ``ProtocolError`` when the table has no such move, and the stream is then in
        ``ERROR`` (or stays ``CLOSED``, which is final).
        """
        previous = self.state
        try:
            self.state = _TRANSITIONS[(previous, what)]
        except KeyError:
            if previous is StreamState.CLOSED:
                raise ProtocolError("the stream has ended") from None
            self.state = StreamState.ERROR
            if previous is StreamState.ERROR:
                raise ProtocolError(
                    "the stream is broken: " + (self.broken_reason or "protocol error")
                ) from None
            reason = f"{what.value} is not allowed while the stream is {previous.value}"
            self.broken_reason = self.broken_reason or reason
            raise ProtocolError(reason) from None
        return previous

    def break_stream(self, reason: str) -> None:
        """The input broke the protocol: remember why and move to ``ERROR``."""
        if self.broken_reason is None:
            self.broken_reason = reason
        self.move(StreamInput.BROKEN)

    # ----------------------------------------------------------------- payloads

    def start(self, dialect: Dialect, id: str, model: str, created: int) -> None:
        """Note the completion's identity; emits ``StreamStarted`` once."""
        if self.is_started:
            return
        self.is_started = True
        self.dialect = dialect
        self.id, self.model, self.created = id, model, created
        self.events.append(StreamStarted(id=id, model=model, created=created, dialect=dialect))

    def choice(self, index: int) -> Choice:
        """The choice with this index, created on first use."""
        choice = self.choices.get(index)
        if choice is None:
            if len(self.choices) >= self.limits.max_choices:
                raise LimitExceededError("the number of choices", self.limits.max_choices)
            choice = self.choices[index] = Choice(index)
        return choice

    def text(self, index: int, kind: str, text: str) -> None:
        """Append content, reasoning or refusal text (``kind``) to a choice."""
        choice = self.choices.get(index) or self.choice(index)
        parts: list[str] | None = getattr(choice, kind)
        if parts is None:
            parts = []
            setattr(choice, kind, parts)
        if not text:
            return
        size = choice.text_sizes.get(kind, 0) + len(text)
        if size > self.limits.max_text_size:
            raise LimitExceededError(f"the {kind} of choice {index}", self.limits.max_text_size)
        choice.text_sizes[kind] = size
        parts.append(text)
        self.events.append(_TEXT_EVENTS[kind](index, text))

    def continue_arguments(
        self, index: int, call_index: int | None, fragment: str
    ) -> ToolCall | None:
        """Append ``fragment`` to the call it continues when no matching rule can apply.

        This is the one fast path of tool-call deltas: ``tool_delta`` tries it first, and the
        chunk templates (``template.py``) go through it. It applies only when the call the delta
        names (by ``call_index``, or the latest call) is started and open, and ``fragment`` is
        non-empty and does not open a JSON value (a duplicate or a second value); then the effect
        is exactly what the full rules would do. Otherwise it does nothing and returns None.
        """
        choice = self.choices.get(index)
        if choice is None or not fragment:
            return None
        if call_index is None:
            call = choice.calls[-1] if choice.calls else None
        else:
            call = choice.calls_by_index.get(call_index)
        if call is None or not call.is_streaming:
            return None
        if fragment[0] in _OPENERS_AND_BLANKS:
            head = fragment.lstrip(_BLANK)[:1]
            if head == "{" or head == "[":
                return None
        buffer = call.arguments
        buffer.append(fragment)
        self.events.append(_new_arguments_delta(index, call.id, fragment))
        if buffer.size >= call.check_at:
            self._check_arguments(call)
        return call

    def tool_delta(
        self,
        index: int,
        *,
        call_index: int | None,
        id: str | None,
        name: str | None,
        arguments: str | None,
        claimed: set[ToolCall],
        extra_content: dict[str, object] | None = None,
    ) -> None:
        """Apply one tool-call delta to choice ``index`` (see the matching rules above)."""
        if not (id or name or extra_content or claimed) and arguments:
            continued = self.continue_arguments(index, call_index, arguments)
            if continued is not None:
                claimed.add(continued)
                return
        choice = self.choice(index)
        call, follows = self._match(choice, call_index, id, name, arguments, claimed)
        if call is None:
            call = self._new_call(choice, call_index, id, follows)
        claimed.add(call)
        if id and not call.has_upstream_id:
            call.has_upstream_id = True
            if not call.is_started:
                call.id = id
            choice.calls_by_id[id] = call
        if name and not call.is_started:
            if not call.name:
                call.name = name
            elif name != call.name and not call.name.endswith(name):
                call.name += name  # a name split across chunks (continuedev/continue#5849)
        if extra_content:
            call.extra_content = {**(call.extra_content or {}), **extra_content}
        if arguments:
            self._add_arguments(call, arguments)
        # the name is whole once the arguments begin: names never follow arguments
        if not call.is_started and call.name and call.arguments.size:
            self._start_call(call)

    def close_block(self, index: int, call_index: int) -> None:
        """A block stopped (Anthropic): the call at ``call_index`` can get no more fragments."""
        choice = self.choice(index)
        call = choice.calls_by_index.get(call_index)
        if call is not None:
            self._seal(call)

    def finish(self, index: int, reason: str) -> None:
        """A choice reported its finish reason; its open calls are sealed."""
        choice = self.choice(index)
        if choice.finish_reason is not None:
            if reason != choice.finish_reason:
                self.events.append(
                    StreamWarning(
                        kind="finish_reason_changed",
                        detail=f"choice {index}: {choice.finish_reason!r} then {reason!r}",
                    )
                )
            return
        choice.finish_reason = reason
        if self.max_tokens is None or self._finish_is_truncating(choice):
            for call in choice.calls:
                self._seal(call)
        self.events.append(ChoiceFinished(choice=index, finish_reason=reason))

    def usage(self, usage: dict[str, object]) -> None:
        """Cumulative usage: keep the last, report when it changed."""
        if usage != self.last_usage:
            self.last_usage = usage
            self.events.append(UsageReported(usage=usage))

    def error(self, error: dict[str, object]) -> None:
        """An in-band error: report it and invalidate every open call."""
        self.errors.append(error)
        self.events.append(UpstreamErrorReported(error=error, message=error_message(error)))
        for choice in self.choices.values():
            for call in choice.calls:
                self._seal(call)

    def end_mark(self) -> None:
        """``[DONE]`` or ``message_stop``: every open call is sealed."""
        if self.move(StreamInput.END_MARK) is not StreamState.ENDED_MARK:
            self._seal_all()

    def end(self, *, is_truncated: bool = False) -> None:
        """End of input: seal or invalidate what is open, then ``StreamEnded``."""
        previous = self.move(StreamInput.END)
        if previous is StreamState.CLOSED:
            return
        had_mark = previous is StreamState.ENDED_MARK
        all_finished = bool(self.choices) and all(
            choice.finish_reason is not None for choice in self.choices.values()
        )
        reason: str | None = None
        if self.broken_reason is not None:
            reason = self.broken_reason
        elif self.errors:
            reason = "upstream error: " + error_message(self.errors[-1])
        elif is_truncated:
            reason = "the stream was cut inside an event"
        elif not had_mark and not all_finished:
            if previous is StreamState.IDLE:
                reason = "the stream ended before any chunk"
            else:
                reason = "the stream ended with no finish_reason and no end mark"
        is_clean = reason is None
        if is_clean:
            self._seal_all()
        else:
            for choice in self.choices.values():
                for call in choice.calls:
                    self._seal(call, truncated_because=reason)
        self.events.append(StreamEnded(is_clean=is_clean, reason=reason))

    def extend_logprobs(self, index: int, logprobs: dict[str, object]) -> None:
        """Keep per-token logprobs (``content`` and ``refusal`` lists) for the final message."""
        choice = self.choice(index)
        for key in ("content", "refusal"):
            items = logprobs.get(key)
            if isinstance(items, list) and items:
                if choice.logprobs is None:
                    choice.logprobs = {}
                choice.logprobs.setdefault(key, []).extend(items)

    # ----------------------------------------------------------------- tool calls

    def _match(
        self,
        choice: Choice,
        call_index: int | None,
        id: str | None,
        name: str | None,
        arguments: str | None,
        claimed: set[ToolCall],
    ) -> tuple[ToolCall | None, ToolCall | None]:
        """The call this delta continues, or None and the call a new one follows on from."""
        if id:
            call = choice.calls_by_id.get(id)
            if call is not None:
                return (None, None) if call in claimed else (call, None)
            by_index = choice.calls_by_index.get(call_index) if call_index is not None else None
            if by_index is not None and not by_index.has_upstream_id and by_index not in claimed:
                return by_index, None
            return None, None
        if call_index is not None:
            call = choice.calls_by_index.get(call_index)
        else:
            call = choice.calls[-1] if choice.calls else None
        if call is None or call in claimed:
            return None, None
        buffer = call.arguments
        if name and call.name and name != call.name and buffer.first_char:
            return None, None  # a different tool after the arguments began
        if (
            arguments
            and buffer.could_start_new_value(arguments)
            and buffer.is_one_complete_value()
            and not buffer.is_duplicate(arguments)
        ):
            return None, call  # a second JSON value: a new call of the same tool
        return call, None

    def _new_call(
        self, choice: Choice, call_index: int | None, id: str | None, follows: ToolCall | None
    ) -> ToolCall:
        if len(choice.calls) >= self.limits.max_tool_calls:
            raise LimitExceededError(
                f"the number of tool calls of choice {choice.index}", self.limits.max_tool_calls
            )
        position = len(choice.calls)
        call = ToolCall(
            choice=choice.index,
            position=position,
            index=call_index,
            id=id or self._generated_id(choice.index, position),
            name=follows.name if follows is not None else "",
        )
        choice.calls.append(call)
        if call_index is not None:
            choice.calls_by_index[call_index] = call
        if self.max_tokens is None:
            # a new call is a structural boundary for earlier calls whose arguments are whole
            for earlier in choice.calls[:-1]:
                if earlier.state is CallState.OPEN and earlier.arguments.is_one_complete_value():
                    self._seal(earlier)
        return call

    def _generated_id(self, choice: int, position: int) -> str:
        seed = f"{self.id}\x00{self.model}\x00{self.created}\x00{choice}\x00{position}"
        return "call_" + hashlib.sha256(seed.encode()).hexdigest()[:24]

    def _start_call(self, call: ToolCall) -> None:
        call.is_started = True
        call.is_streaming = call.state is CallState.OPEN
        self.events.append(
            ToolCallStarted(choice=call.choice, id=call.id, name=call.name, position=call.position)
        )
        if call.arguments.size:
            self.events.append(
                ToolCallArgumentsDelta(
                    choice=call.choice, id=call.id, fragment=call.arguments.text()
                )
            )

    def _add_arguments(self, call: ToolCall, fragment: str) -> None:
        buffer = call.arguments
        if call.state is not CallState.OPEN:
            if call.state is CallState.READY and buffer.is_duplicate(fragment):
                self._warn_duplicate(call)
            elif fragment.strip():
                self.events.append(
                    StreamWarning(
                        kind="fragment_after_seal",
                        detail=f"call {call.id} was already sealed; dropped {fragment!r}",
                    )
                )
            return
        if (
            buffer.could_start_new_value(fragment)
            and buffer.is_one_complete_value()
            and buffer.is_duplicate(fragment)
        ):
            self._warn_duplicate(call)
            return
        buffer.append(fragment)
        if not call.is_started:
            if buffer.size > self.limits.max_arguments_size:
                self._check_arguments(call)
            return
        self.events.append(_new_arguments_delta(call.choice, call.id, fragment))
        if buffer.size >= call.check_at:
            self._check_arguments(call)

    def _check_arguments(self, call: ToolCall) -> None:
        """The arguments reached ``call.check_at``: enforce the size limit, or preview."""
        buffer = call.arguments
        limit = self.limits.max_arguments_size
        if buffer.size > limit:
            buffer.clear()
            self._invalidate(
                call, "too_large", f"the arguments exceed the limit of {limit} characters"
            )
            return
        if self.previews and buffer.size >= buffer.next_preview:
            is_parsed, value = buffer.preview()
            if is_parsed:
                self.events.append(
                    ToolCallPreview(choice=call.choice, id=call.id, value=value, size=buffer.size)
                )
        next_preview = buffer.next_preview if self.previews else limit + 1
        call.check_at = min(next_preview, limit + 1)

    def _warn_duplicate(self, call: ToolCall) -> None:
        self.events.append(
            StreamWarning(
                kind="duplicate_arguments",
                detail=f"call {call.id}: the complete arguments were sent again; dropped",
            )
        )

    def _seal_all(self) -> None:
        for choice in self.choices.values():
            truncated = self._finish_is_truncating(choice)
            for call in choice.calls:
                if truncated:
                    self._seal(call, truncated_because=f"finish_reason {choice.finish_reason}")
                else:
                    self._seal(call)

    def _finish_is_truncating(self, choice: Choice) -> bool:
        if choice.finish_reason in TRUNCATING_FINISH_REASONS:
            return True
        if self.max_tokens is not None and self.last_usage is not None:
            completion_tokens = self.last_usage.get("completion_tokens")
            if isinstance(completion_tokens, int) and completion_tokens >= self.max_tokens:
                return True
        return False

    def _seal(self, call: ToolCall, *, truncated_because: str | None = None) -> None:
        if call.state is not CallState.OPEN:
            return
        if not call.is_started:
            self._start_call(call)
        choice = self.choices[call.choice]
        if self.errors:
            self._invalidate(call, "upstream_error", "the upstream reported an error")
            return
        if truncated_because is None and self._finish_is_truncating(choice):
            truncated_because = f"finish_reason {choice.finish_reason}"
        if truncated_because is not None:
            self._invalidate(call, "truncated", f"the call was cut off: {truncated_because}")
            return
        if not call.name:
            self._invalidate(call, "unknown_tool", "the call never named its tool")
            return
        text = call.arguments.text()
        if not text.strip():
            text = "{}"
        try:
            value = parse_json(text)
        except orjson.JSONDecodeError as error:
            problem = call.arguments.describe_incomplete() or f"not valid JSON: {error}"
            kind: InvalidKind = "truncated" if call.arguments.is_cut_off() else "invalid_json"
            self._invalidate(call, kind, problem)
            return
        if not isinstance(value, dict):
            self._invalidate(call, "not_an_object", f"arguments are a {type(value).__name__}")
            return
        if self.tools is not None:
            verdict = self.tools.check(call.name, value)
            if verdict is not None:
                refusal: InvalidKind = (
                    "unknown_tool" if verdict.kind == "unknown_tool" else "schema"
                )
                self._invalidate(call, refusal, verdict.reason, arguments=text)
                return
        call.state = CallState.READY
        call.is_streaming = False
        call.final_arguments = text
        self.events.append(
            ToolCallReady(
                choice=call.choice, id=call.id, name=call.name, arguments=text, parsed=value
            )
        )

    def _invalidate(
        self, call: ToolCall, kind: InvalidKind, reason: str, *, arguments: str | None = None
    ) -> None:
        if not call.is_started:
            self._start_call(call)
        call.state = CallState.INVALID
        call.is_streaming = False
        text = arguments if arguments is not None else call.arguments.text()
        call.final_arguments = text
        self.events.append(
            ToolCallInvalid(
                choice=call.choice,
                id=call.id,
                name=call.name,
                arguments=text,
                kind=kind,
                reason=reason,
            )
        )


# The events made once per chunk, built by position (see events.positional_constructor).
_TEXT_EVENTS: dict[str, Callable[[int, str], Event]] = {
    "content": positional_constructor(ContentDelta),
    "reasoning": positional_constructor(ReasoningDelta),
    "refusal": positional_constructor(RefusalDelta),
}
_new_arguments_delta = positional_constructor(ToolCallArgumentsDelta)


def error_message(error: dict[str, object]) -> str:
    """The human message of an in-band error payload, whatever its shape."""
    inner = error.get("error", error)
    if isinstance(inner, dict):
        message = inner.get("message")
        if isinstance(message, str) and message:
            return message
    elif isinstance(inner, str) and inner:
        return inner
    message = error.get("message")
    if isinstance(message, str) and message:
        return message
    return orjson.dumps(error).decode()[:200]
