"""The tool loop: one client request, one or more upstream rounds, one answer.

``Turn`` is the state machine and does no I/O: it turns ``ChatStream`` events into client
frames and actions, decides at the end of each round whether to continue, hand calls to the
client or finish, and builds the next upstream body. ``TurnRunner`` is the thin async driver:
it moves bytes from the upstream into the turn, runs tools, and yields frames.

Theory of operation
-------------------
Every call the model makes has an owner, fixed when ``ToolCallStarted`` names it:

- ``client``: a tool from the client's own ``tools``. Its deltas stream to the client as they
  arrive, unchanged except for a client-side ``index``.
- ``server``: a read-only server tool. Hidden from the client. It starts the moment its call is
  sealed (``ToolCallReady``), while the model may still be streaming; its result goes upstream.
- ``write``: a server tool that writes. Never run without approval: when sealed it is handed to
  the client as one whole tool call with a signed id (``approval.py``).
- ``unknown``: a name nobody owns. Never run.

A call that is ``ToolCallInvalid`` never runs: the reason goes back to the model as the tool's
result, so it can correct itself (the client never sees it, unless the call was the client's).

At the end of a round (``StreamEnded``):

- an error (in-band, broken stream, no end mark) ends the turn with that error;
- ``finish_reason`` ``length`` or ``content_filter`` ends the turn with it; started tools are
  cancelled (the model's turn was cut, so its calls are not trusted);
- if any call belongs to the client (``client`` or ``write``), the turn ends with
  ``finish_reason: "tool_calls"``, after the round's server tools finished; the full upstream
  message and the server results are stashed under the client-visible call ids, so the next
  request restores them (``stash.py``);
- else if server calls were made, their results are appended with the assistant message (with
  ``reasoning_content``) and the next round starts, up to ``max_rounds`` upstream requests. The
  last allowed round is sent with ``tool_choice: "none"``; a model that still calls a server tool
  then ends the turn with a ``tool_rounds_exceeded`` error;
- else the turn finishes with the upstream's ``finish_reason``.

The client sees one assistant message under one completion id and exactly one
``finish_reason``. Content of later rounds is separated from earlier content by a blank line.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

import orjson

from streamproxy.core.encode import encode_chunk, encode_comment, encode_done, encode_error
from streamproxy.core.events import (
    ChoiceFinished,
    ContentDelta,
    Event,
    ReasoningDelta,
    RefusalDelta,
    StreamEnded,
    StreamStarted,
    ToolCallArgumentsDelta,
    ToolCallInvalid,
    ToolCallReady,
    ToolCallStarted,
    UpstreamErrorReported,
    UsageReported,
)
from streamproxy.core.limits import Limits
from streamproxy.core.schema import SchemaSource
from streamproxy.core.stream import ChatStream
from streamproxy.errors import (
    IncompleteStreamError,
    InternalError,
    ProtocolError,
    StreamProxyError,
    ToolRoundsExceededError,
    UpstreamError,
)
from streamproxy.proxy.approval import ApprovalSigner
from streamproxy.proxy.request import (
    ChatRequest,
    PendingWrite,
    declined_text,
    write_result_key,
    write_result_text,
)
from streamproxy.proxy.stash import Message, TranscriptStash, calls_key, content_key
from streamproxy.proxy.usage import sum_usage
from streamproxy.tools import ToolOutcome, ToolSet, arguments_digest
from streamproxy.upstream import Upstream, UpstreamResponse

__all__ = ["Call", "Turn", "TurnRunner"]

Owner = Literal["client", "server", "write", "unknown"]
ToolStatus = Literal["started", "ok", "error", "timeout", "too_large", "invalid", "cancelled"]

audit_logger = logging.getLogger("streamproxy.audit")
logger = logging.getLogger("streamproxy.proxy")


class Phase(Enum):
    STREAMING = "streaming"
    ROUND_ENDED = "round_ended"
    FINISHED = "finished"
    FAILED = "failed"


@dataclass(slots=True, kw_only=True)
class Call:
    """One tool call of one round, as the proxy tracks it."""

    id: str
    name: str
    owner: Owner
    position: int
    client_index: int | None = None
    client_id: str | None = None
    arguments: str = ""
    parsed: dict[str, object] | None = None
    result: str | None = None
    """The text sent upstream as the tool's result (server calls only)."""


@dataclass(frozen=True, slots=True)
class StartTool:
    """Action: run this read-only server call now."""

    call: Call


@dataclass(slots=True)
class _Round:
    stream: ChatStream
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: dict[str, Call] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: dict[str, object] | None = None
    error: StreamProxyError | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """What the driver does after a round: ``continue``, ``finish`` or ``fail``."""

    kind: Literal["continue", "finish", "fail"]
    error: StreamProxyError | None = None


class Turn:
    """The state of one client request across its upstream rounds (no I/O)."""

    def __init__(
        self,
        request: ChatRequest,
        *,
        tools: ToolSet,
        signer: ApprovalSigner,
        stash: TranscriptStash,
        client: str = "",
        max_rounds: int = 8,
        use_strict: bool = False,
        limits: Limits | None = None,
    ) -> None:
        self.request = request
        self.tools = tools
        self.signer = signer
        self.stash = stash
        self.client = client
        self.max_rounds = max_rounds
        self.use_strict = use_strict
        self.limits = limits or Limits()
        self.phase = Phase.ROUND_ENDED
        self.rounds: list[_Round] = []
        self.transcript: list[Message] = []
        """Upstream messages this turn added (assistant + tool results per tool round)."""
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.model = str(request.body.get("model", ""))
        self.created = int(time.time())
        self.finish_reason: str | None = None
        self._has_role = False
        self._sent_content: list[str] = []
        self._sent_reasoning: list[str] = []
        self._sent_refusal: list[str] = []
        self._client_calls: list[dict[str, object]] = []
        self._client_call_count = 0
        self._schemas: dict[str, SchemaSource] = dict(tools.schemas())
        for name in request.client_tool_names:
            self._schemas[name] = None

    # ---------------------------------------------------------------- rounds

    @property
    def round_number(self) -> int:
        return len(self.rounds)

    @property
    def is_strict(self) -> bool:
        """Whether this request carries strict tools (DeepSeek routes it to ``/beta``)."""
        has_server_strict = self.use_strict and any(tool.is_strict for tool in self.tools)
        return has_server_strict or self.request.has_strict_client_tools

    def begin_round(self) -> ChatStream:
        """Start a round; feed the returned stream the upstream's bytes."""
        if self.phase is not Phase.ROUND_ENDED:
            raise RuntimeError(f"cannot start a round in phase {self.phase.value}")
        stream = ChatStream(
            tools=self._schemas,
            previews=False,
            limits=self.limits,
            max_tokens=self.request.max_tokens,
        )
        self.rounds.append(_Round(stream))
        self.phase = Phase.STREAMING
        return stream

    def upstream_body(self) -> dict[str, object]:
        """The body of the next upstream request."""
        body = dict(self.request.body)
        body["messages"] = [*self.request.messages, *self.transcript]
        body["stream"] = True
        options = body.get("stream_options")
        body["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
        server_tools = self.tools.openai_tools(strict=self.use_strict)
        if server_tools or self.request.client_tools:
            body["tools"] = [*self.request.client_tools, *server_tools]
        tool_choice = body.get("tool_choice")
        if self.request.is_thinking and tool_choice == "required":
            del body["tool_choice"]  # DeepSeek's thinking mode rejects "required"
        elif self.rounds and tool_choice is not None and tool_choice not in ("auto", "none"):
            del body["tool_choice"]  # a forced choice applies to the first round only
        if len(self.tools) and self.round_number + 1 >= self.max_rounds:
            body["tool_choice"] = "none"
        return body

    # ---------------------------------------------------------------- events

    def handle(self, events: list[Event]) -> tuple[list[bytes], list[StartTool]]:
        """Client frames and tool starts for a batch of events from the current round."""
        frames: list[bytes] = []
        starts: list[StartTool] = []
        current = self.rounds[-1]
        for event in events:
            if isinstance(event, ContentDelta | ReasoningDelta):
                if event.choice == 0 and event.text:
                    # a later round's first text is set apart from the earlier rounds' text
                    is_content = isinstance(event, ContentDelta)
                    parts = current.content if is_content else current.reasoning
                    sent = self._sent_content if is_content else self._sent_reasoning
                    text = event.text
                    if not parts and _needs_separator(sent):
                        text = "\n\n" + text
                    parts.append(event.text)
                    sent.append(text)
                    key = "content" if is_content else "reasoning_content"
                    frames.append(self._chunk({key: text}))
            elif isinstance(event, ToolCallArgumentsDelta):
                call = current.calls.get(event.id)
                if call is not None and call.owner == "client" and event.fragment:
                    delta_call = {
                        "index": call.client_index,
                        "function": {"arguments": event.fragment},
                    }
                    frames.append(self._chunk({"tool_calls": [delta_call]}))
            elif isinstance(event, ToolCallStarted):
                frames.extend(self._call_started(current, event))
            elif isinstance(event, ToolCallReady):
                frames.extend(self._call_ready(current, event, starts))
            elif isinstance(event, ToolCallInvalid):
                self._call_invalid(current, event)
            elif isinstance(event, RefusalDelta):
                if event.choice == 0 and event.text:
                    self._sent_refusal.append(event.text)
                    frames.append(self._chunk({"refusal": event.text}))
            elif isinstance(event, ChoiceFinished):
                if event.choice == 0:
                    current.finish_reason = event.finish_reason
            elif isinstance(event, UsageReported):
                current.usage = event.usage
            elif isinstance(event, UpstreamErrorReported):
                current.error = current.error or _in_band_error(event)
            elif isinstance(event, StreamStarted):
                if len(self.rounds) == 1 and event.model:
                    self.model = event.model
            elif isinstance(event, StreamEnded):
                if not event.is_clean and current.error is None:
                    current.error = IncompleteStreamError(
                        f"the upstream stream ended early: {event.reason or 'no end mark'}"
                    )
                self.phase = Phase.ROUND_ENDED
        return frames, starts

    def fail_round(self, error: StreamProxyError) -> None:
        """Record a transport or protocol failure of the current round."""
        current = self.rounds[-1]
        current.error = current.error or error

    def _call_started(self, current: _Round, event: ToolCallStarted) -> list[bytes]:
        owner: Owner
        if event.name in self.request.client_tool_names:
            owner = "client"
        elif event.name in self.tools:
            owner = "server" if self.tools[event.name].is_read_only else "write"
        else:
            owner = "unknown"
        call = Call(id=event.id, name=event.name, owner=owner, position=event.position)
        current.calls[event.id] = call
        if owner != "client":
            return []
        call.client_index = self._next_client_index()
        call.client_id = event.id
        entry = {
            "index": call.client_index,
            "id": event.id,
            "type": "function",
            "function": {"name": event.name, "arguments": ""},
        }
        return [self._chunk({"tool_calls": [entry]})]

    def _call_ready(
        self, current: _Round, event: ToolCallReady, starts: list[StartTool]
    ) -> list[bytes]:
        call = current.calls.get(event.id)
        if call is None:
            return []
        call.arguments = event.arguments
        call.parsed = event.parsed
        if call.owner == "server":
            if self.round_number < self.max_rounds:  # no tool runs in the last allowed round
                starts.append(StartTool(call))
        elif call.owner == "write":
            call.client_index = self._next_client_index()
            call.client_id = self.signer.sign(
                call.id, call.name, call.arguments, client=self.client
            )
            entry = {
                "index": call.client_index,
                "id": call.client_id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            return [self._chunk({"tool_calls": [entry]})]
        return []

    def _call_invalid(self, current: _Round, event: ToolCallInvalid) -> None:
        call = current.calls.get(event.id)
        if call is None or call.owner == "client":
            return  # the client got the call's deltas and judges it itself
        call.arguments = event.arguments
        call.result = f"error: the call was not run: {event.reason}"
        call.owner = "unknown"  # answered by the proxy with the error, like an unknown tool
        audit(call, "invalid", 0.0, kind=event.kind)

    def _next_client_index(self) -> int:
        index = self._client_call_count
        self._client_call_count += 1
        return index

    # ---------------------------------------------------------------- decisions

    def server_calls(self) -> list[Call]:
        """The current round's calls the proxy answers (run or refused)."""
        return [
            call for call in self.rounds[-1].calls.values() if call.owner in ("server", "unknown")
        ]

    def decide(self) -> Decision:
        """What happens after the current round ended (server results must all be known)."""
        current = self.rounds[-1]
        if current.error is not None:
            self.phase = Phase.FAILED
            return Decision("fail", current.error)
        calls = sorted(current.calls.values(), key=lambda call: call.position)
        handed = [call for call in calls if call.owner in ("client", "write")]
        answered = [call for call in calls if call.owner in ("server", "unknown")]
        reason = current.finish_reason
        if reason in ("length", "content_filter") or (not calls and reason is not None):
            return self._finish(reason or "stop")
        if handed:
            self._stash_handoff(current, calls, handed, answered)
            return self._finish("tool_calls")
        if answered:
            if self.round_number >= self.max_rounds:
                self.phase = Phase.FAILED
                return Decision(
                    "fail",
                    ToolRoundsExceededError(
                        f"the model still called tools after {self.max_rounds} rounds"
                    ),
                )
            self.transcript.append(_assistant_message(current, calls))
            self.transcript.extend(_tool_message(call) for call in answered)
            self.phase = Phase.ROUND_ENDED
            return Decision("continue")
        return self._finish(reason or "stop")

    def _finish(self, reason: str) -> Decision:
        self.finish_reason = reason
        self.phase = Phase.FINISHED
        if self.transcript and reason != "tool_calls":
            final = _assistant_message(self.rounds[-1], [])
            visible = "".join(self._sent_content)
            if visible:
                self.stash.put(self.client, content_key(visible), [*self.transcript, final])
        return Decision("finish")

    def _stash_handoff(
        self, current: _Round, calls: list[Call], handed: list[Call], answered: list[Call]
    ) -> None:
        ids = [str(call.client_id) for call in handed]
        messages = [
            *self.transcript,
            _assistant_message(current, calls),
            *(_tool_message(call) for call in answered),
        ]
        self.stash.put(self.client, calls_key(ids), messages)

    # ---------------------------------------------------------------- output

    def final_frames(self) -> list[bytes]:
        """The closing chunk with the one ``finish_reason``, usage if asked, ``[DONE]``."""
        frames = [self._chunk({}, finish_reason=self.finish_reason or "stop")]
        if self.request.include_usage:
            usage = self.usage()
            frames.append(
                encode_chunk(
                    {
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.model,
                        "choices": [],
                        "usage": usage,
                    }
                )
            )
        frames.append(encode_done())
        return frames

    def usage(self) -> dict[str, object] | None:
        """Usage summed over every round."""
        return sum_usage(current.usage for current in self.rounds)

    def progress_frames(
        self, call: Call, status: ToolStatus, duration: float | None = None
    ) -> list[bytes]:
        """A comment for everyone, and the extension chunk when the client asked for it."""
        timing = f" in {duration * 1000:.0f} ms" if duration is not None else ""
        frames = [encode_comment(f"tool {call.name} {status}{timing}")]
        if self.request.wants_tool_progress:
            progress: dict[str, object] = {"id": call.id, "name": call.name, "status": status}
            if duration is not None:
                progress["duration_ms"] = round(duration * 1000, 1)
            chunk = self._chunk_dict({})
            chunk["streamproxy"] = {"tool_progress": progress}
            frames.append(encode_chunk(chunk))
        return frames

    def completion(self) -> dict[str, object]:
        """The ``chat.completion`` object for a non-streaming client."""
        message: dict[str, object] = {
            "role": "assistant",
            "content": "".join(self._sent_content) if self._sent_content else None,
        }
        if self._sent_reasoning:
            message["reasoning_content"] = "".join(self._sent_reasoning)
        if self._sent_refusal:
            message["refusal"] = "".join(self._sent_refusal)
        handed = [
            call
            for call in self.rounds[-1].calls.values()
            if call.owner in ("client", "write") and call.client_id is not None
        ]
        if handed and self.finish_reason == "tool_calls":
            message["tool_calls"] = [
                {
                    "id": call.client_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": self._client_arguments(call)},
                }
                for call in sorted(handed, key=lambda call: call.client_index or 0)
            ]
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self.finish_reason or "stop",
                }
            ],
            "usage": self.usage(),
        }

    def _client_arguments(self, call: Call) -> str:
        if call.owner == "write":
            return call.arguments
        message = self.rounds[-1].stream.message()
        for entry in message.get("tool_calls", []) or []:  # type: ignore[attr-defined]
            if isinstance(entry, dict) and entry.get("id") == call.id:
                return str(entry["function"]["arguments"])
        return call.arguments

    def _chunk(self, delta: dict[str, object], finish_reason: str | None = None) -> bytes:
        return encode_chunk(self._chunk_dict(delta, finish_reason))

    def _chunk_dict(
        self, delta: dict[str, object], finish_reason: str | None = None
    ) -> dict[str, object]:
        if not self._has_role and (delta or finish_reason):
            delta = {"role": "assistant", **delta}
            self._has_role = True
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }


def _needs_separator(sent: list[str]) -> bool:
    """Whether a new round's text needs a blank line before it (text was sent before)."""
    return bool(sent) and not sent[-1].endswith("\n\n")


def _assistant_message(current: _Round, calls: list[Call]) -> Message:
    message: Message = {"role": "assistant", "content": "".join(current.content)}
    if current.reasoning:
        message["reasoning_content"] = "".join(current.reasoning)
    if calls:
        sent = {
            str(entry["id"]): entry
            for entry in current.stream.message().get("tool_calls", [])  # type: ignore[attr-defined]
            if isinstance(entry, dict)
        }
        message["tool_calls"] = [
            sent.get(
                call.id,
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                },
            )
            for call in calls
        ]
    return message


def _tool_message(call: Call) -> Message:
    return {"role": "tool", "tool_call_id": call.id, "content": call.result or ""}


def _in_band_error(event: UpstreamErrorReported) -> StreamProxyError:
    error = event.error.get("error", event.error)
    status = error.get("code") if isinstance(error, dict) else None
    return UpstreamError(
        f"the upstream reported an error: {event.message}",
        status=status if isinstance(status, int) and 400 <= status < 600 else 502,
        body=event.error,
    )


def audit(call: Call | PendingWrite, outcome: str, duration: float, **extra: object) -> None:
    """One audit line per tool call the proxy ran or refused (never the arguments)."""
    upstream_id = call.id if isinstance(call, Call) else call.upstream_id
    details = "".join(f" {key}={value}" for key, value in extra.items())
    audit_logger.info(
        "tool_run tool=%s call_id=%s args_sha256=%s duration_ms=%.1f outcome=%s%s",
        call.name,
        upstream_id,
        arguments_digest(call.arguments),
        duration * 1000,
        outcome,
        details,
    )


class TurnRunner:
    """Drives a ``Turn``: upstream bytes in, client frames out, tools run on the side."""

    def __init__(
        self,
        turn: Turn,
        upstream: Upstream,
        *,
        max_tool_result_size: int,
        request_id: str = "",
    ) -> None:
        self.turn = turn
        self.upstream = upstream
        self.max_tool_result_size = max_tool_result_size
        self.request_id = request_id
        self._response: UpstreamResponse | None = None
        self._tasks: dict[str, asyncio.Task[ToolOutcome]] = {}

    async def start(self) -> None:
        """Run approved write calls, then open the first upstream response.

        Raises:
            UpstreamError: the upstream refused or failed before any byte (send its status).
        """
        await self._run_pending_writes()
        self._response = await self._open()

    async def stream(self) -> AsyncGenerator[bytes, None]:
        """Client frames; a failure after the start becomes one error frame, then the end."""
        try:
            async for frames in self._rounds(streaming=True):
                yield frames
        except StreamProxyError as error:
            logger.warning("request %s failed mid-stream: %s", self.request_id, error.message)
            yield encode_error(error)
        except Exception:
            # a bug, not bad input: the client is still told, once; the details go to the log
            logger.exception("request %s failed mid-stream on an internal error", self.request_id)
            yield encode_error(InternalError(f"the proxy failed (request {self.request_id})"))
        finally:
            await self.aclose()

    async def complete(self) -> dict[str, object]:
        """Run the whole turn for a non-streaming client and return the completion.

        Raises:
            StreamProxyError: the turn failed (the client gets its status and body).
        """
        try:
            async for _ in self._rounds(streaming=False):
                pass
        finally:
            await self.aclose()
        return self.turn.completion()

    async def aclose(self) -> None:
        """Cancel running tools and close the upstream response."""
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()
        if self._response is not None:
            response, self._response = self._response, None
            await response.aclose()

    async def _open(self) -> UpstreamResponse:
        return await self.upstream.open_chat(
            self.turn.upstream_body(), is_strict=self.turn.is_strict
        )

    async def _rounds(self, *, streaming: bool) -> AsyncIterator[bytes]:
        turn = self.turn
        while True:
            if self._response is None:
                self._response = await self._open()
            stream = turn.begin_round()
            try:
                async for data in self._response.aiter_bytes():
                    try:
                        events = stream.receive_data(data)
                    except ProtocolError as error:
                        turn.fail_round(error)
                        events = stream.receive_eof()
                    frames, starts = turn.handle(events)
                    for start in starts:
                        self._start_tool(start.call)
                        frames.extend(turn.progress_frames(start.call, "started"))
                    if frames and streaming:
                        yield b"".join(frames)
                    if stream.is_ended:
                        break
                if not stream.is_ended:
                    frames, starts = turn.handle(stream.receive_eof())
                    for start in starts:
                        self._start_tool(start.call)
                        frames.extend(turn.progress_frames(start.call, "started"))
                    if frames and streaming:
                        yield b"".join(frames)
            except StreamProxyError as error:
                turn.fail_round(error)
                if not stream.is_ended:
                    turn.handle(stream.receive_eof())
            finally:
                response, self._response = self._response, None
                if response is not None:
                    await response.aclose()
            current = turn.rounds[-1]
            if current.error is None and current.finish_reason not in ("length", "content_filter"):
                async for progress in self._await_tools(streaming):
                    yield progress
            decision = turn.decide()
            if decision.kind == "fail":
                assert decision.error is not None
                raise decision.error
            if decision.kind == "finish":
                if streaming:
                    yield b"".join(turn.final_frames())
                return

    def _start_tool(self, call: Call) -> None:
        tool = self.turn.tools[call.name]
        task = asyncio.create_task(
            tool.run(call.parsed or {}, max_result_size=self.max_tool_result_size),
            name=f"tool {call.name} {call.id}",
        )
        self._tasks[call.id] = task

    async def _await_tools(self, streaming: bool) -> AsyncIterator[bytes]:
        """Wait for this round's server tools, yielding a progress frame as each ends."""
        calls = {call.id: call for call in self.turn.server_calls() if call.result is None}
        pending = {self._tasks[call_id] for call_id in calls if call_id in self._tasks}
        by_task = {task: call_id for call_id, task in self._tasks.items()}
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            frames: list[bytes] = []
            for task in done:
                call = calls[by_task[task]]
                self._tasks.pop(call.id, None)
                outcome = task.result()
                call.result = outcome.content
                audit(call, outcome.status, outcome.duration, request_id=self.request_id)
                frames.extend(self.turn.progress_frames(call, outcome.status, outcome.duration))
            if streaming:
                yield b"".join(frames)
        for call in calls.values():
            if call.result is None:  # defensive: a server call that never started
                call.result = "error: the call was not run"

    async def _run_pending_writes(self) -> None:
        turn = self.turn
        for pending in turn.request.pending_writes:
            if pending.verdict == "done":
                stored = write_result_text(pending, turn.stash, turn.client)
                pending.message["content"] = stored or ""
                audit(pending, "already_ran", 0.0, request_id=self.request_id)
                continue
            if pending.verdict != "approved":
                pending.message["content"] = declined_text(pending)
                audit(pending, pending.verdict, 0.0, request_id=self.request_id)
                continue
            tool = turn.tools[pending.name]
            try:
                parsed = _parse_arguments(pending.arguments)
            except ValueError as error:
                pending.message["content"] = f"error: the call was not run: {error}"
                audit(pending, "invalid", 0.0, request_id=self.request_id)
                continue
            outcome = await tool.run(parsed, max_result_size=self.max_tool_result_size)
            pending.message["content"] = outcome.content
            turn.stash.put(
                turn.client,
                write_result_key(pending.upstream_id),
                [{"role": "tool", "content": outcome.content}],
            )
            audit(pending, outcome.status, outcome.duration, request_id=self.request_id)


def _parse_arguments(arguments: str) -> dict[str, object]:
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError as error:
        raise ValueError(f"the arguments are not JSON: {error}") from None
    if not isinstance(value, dict):
        raise ValueError("the arguments are not a JSON object")
    return value
