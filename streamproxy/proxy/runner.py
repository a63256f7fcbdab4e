"""The asyncio driver of a ``Turn``: upstream bytes in, client frames out, tools run on the side.

``TurnRunner`` owns every piece of I/O of one client request: the upstream responses, the tool
tasks, the state store and the audit log. ``Turn`` decides; the runner does what it says:

1. ``start``: settle the approvals the request answers (``conversation.Settlement``): an
   approved call runs through ``approval.run_once`` (claimed in the ledger first, so it runs at
   most once wherever the approval is sent), the others get their reason as the tool result;
   then open the first upstream response (errors here get a status, not a stream).
2. each round: feed the upstream's bytes to the round's ``ChatStream``, the events to the turn,
   the outputs to ``ChatFrames``; start read-only tools when the turn says so;
3. at the round's end: start the ``auto`` calls, wait for every server call, feed the results
   back, write what the decision keeps to the store, and continue or finish.

Cancelling the runner (the client left) cancels running tools and closes the upstream; an
approved call that already started is shielded, so its outcome is still recorded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Protocol

import orjson

from streamproxy.errors import (
    InternalError,
    ProtocolError,
    StateUnavailableError,
    StreamProxyError,
)
from streamproxy.proxy.approval import declined_text, run_once
from streamproxy.proxy.audit import audit
from streamproxy.proxy.conversation import Message, Settlement
from streamproxy.proxy.frames import ChatFrames, ClientFrames
from streamproxy.proxy.state import StateStore
from streamproxy.proxy.tools import TOOL_TRACE_CONTEXT, ToolOutcome
from streamproxy.proxy.turn import (
    Action,
    AwaitApproval,
    Call,
    Decision,
    Output,
    Refuse,
    StartTool,
    ToolProgress,
    Turn,
)
from streamproxy.proxy.upstream import IdleBoundedReads, Upstream, UpstreamResponse
from streamproxy.redaction import Redactor

__all__ = ["NO_OBSERVER", "TurnObserver", "TurnRunner"]

logger = logging.getLogger("streamproxy.proxy")


class TurnObserver(Protocol):
    """What the runner reports as it goes (metrics and traces, ``telemetry.py``); every method
    is called on the event loop and must not block."""

    def round_started(self, round_number: int, body: dict[str, object]) -> None: ...

    def round_first_chunk(self) -> None: ...

    def output_frames(self) -> None: ...

    def round_ended(
        self,
        finish_reason: str | None,
        usage: dict[str, object] | None,
        error: StreamProxyError | None,
    ) -> None: ...

    def tool_started(self, name: str, call_id: str) -> None: ...

    def tool_headers(self, call_id: str) -> dict[str, str]:
        """The W3C trace context a running tool passes on (an MCP server's ``_meta``)."""
        ...

    def tool_finished(self, name: str, call_id: str, status: str, duration: float) -> None: ...

    def approval_settled(self, name: str, outcome: str) -> None: ...

    def turn_ended(
        self, finish_reason: str | None, rounds: int, error: StreamProxyError | None
    ) -> None: ...


class _NoObserver:
    """The observer when telemetry is off: every report is dropped."""

    def round_started(self, round_number: int, body: dict[str, object]) -> None:
        pass

    def round_first_chunk(self) -> None:
        pass

    def output_frames(self) -> None:
        pass

    def round_ended(
        self,
        finish_reason: str | None,
        usage: dict[str, object] | None,
        error: StreamProxyError | None,
    ) -> None:
        pass

    def tool_started(self, name: str, call_id: str) -> None:
        pass

    def tool_headers(self, call_id: str) -> dict[str, str]:
        return {}

    def tool_finished(self, name: str, call_id: str, status: str, duration: float) -> None:
        pass

    def approval_settled(self, name: str, outcome: str) -> None:
        pass

    def turn_ended(
        self, finish_reason: str | None, rounds: int, error: StreamProxyError | None
    ) -> None:
        pass


NO_OBSERVER: TurnObserver = _NoObserver()
_SHIELDED: set[asyncio.Future[tuple[str, str]]] = set()
"""Approved runs that outlive a client that left: kept here until they recorded their outcome."""
# Audit outcomes of an approval itself (the others are the approved call's run).
_APPROVAL_OUTCOMES = frozenset(
    {"approved", "declined", "mismatch", "expired", "forged", "invalid", "already_ran", "running"}
)


class TurnRunner:
    """Drives a ``Turn`` against an upstream; yields the client's frames."""

    def __init__(
        self,
        turn: Turn,
        upstream: Upstream,
        *,
        store: StateStore,
        settlements: list[Settlement] | None = None,
        max_tool_result_size: int,
        state_ttl: float = 3600.0,
        request_id: str = "",
        observer: TurnObserver = NO_OBSERVER,
        frames: ClientFrames | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.turn = turn
        self.observer = observer
        self.redactor = redactor if redactor is not None else Redactor(())
        """Every byte the client gets passes it: no secret leaves, in any encoding."""
        self.frames: ClientFrames = frames or ChatFrames(turn, self.redactor)
        self.upstream = upstream
        self.store = store
        self.settlements = settlements or []
        self.max_tool_result_size = max_tool_result_size
        self.state_ttl = state_ttl
        self.request_id = request_id
        self._response: UpstreamResponse | None = None
        self._tasks: dict[str, asyncio.Task[ToolOutcome]] = {}
        self._running: dict[str, Call] = {}
        self._settled: list[Output] = []
        """Progress of the approvals settled by ``start``, sent first in the stream."""
        self._awaits_first_frame = True
        """No frame went to the client yet: reads are handled an event at a time (``_pieces``)."""

    async def start(self) -> None:
        """Settle the approvals, then open the first upstream response.

        Raises:
            UpstreamError: the upstream refused or failed before any byte (send its status).
            StateUnavailableError: the store is down and the request needs it.
        """
        kept: list[tuple[str, list[Message]]] = []
        for settlement in self.settlements:
            await self._settle(settlement)
            if settlement.keeps is not None and settlement.keeps not in kept:
                kept.append(settlement.keeps)
        for key, messages in kept:  # the settled round, now with its results
            await self.store.put(self.turn.client, key, messages, self.state_ttl)
        self._response = await self._open()

    async def stream(self) -> AsyncGenerator[bytes, None]:
        """Client frames; a failure after the start becomes one error frame, then the end."""
        redact = self.redactor.redact_bytes
        try:
            if self._settled:
                self._awaits_first_frame = False
                yield redact(b"".join(self.frames.encode(self._settled)))
            async for frames in self._rounds(streaming=True):
                self._awaits_first_frame = False
                yield redact(frames)
        except StreamProxyError as error:
            logger.warning("request %s failed mid-stream: %s", self.request_id, error.message)
            yield redact(self.frames.error(error))
        except Exception:
            # a bug, not bad input: the client is still told, once; the details go to the log
            logger.exception("request %s failed mid-stream on an internal error", self.request_id)
            failure = InternalError(f"the proxy failed (request {self.request_id})")
            yield redact(self.frames.error(failure))
        finally:
            await self.aclose()

    async def complete(self) -> dict[str, object]:
        """Run the whole turn for a non-streaming client and return the completion.

        Raises:
            StreamProxyError: the turn failed (the client gets its status and body).
        """
        self._awaits_first_frame = False  # no frames: reads are handled whole
        try:
            async for _ in self._rounds(streaming=False):
                pass
        finally:
            await self.aclose()
        completion = self.redactor.redact_json(self.frames.completion())
        assert isinstance(completion, dict)
        return completion

    async def aclose(self) -> None:
        """Cancel running tools and close the upstream response."""
        for call_id, task in self._tasks.items():
            if task.cancel():
                self._audit(self._running[call_id], "cancelled")
        self._tasks.clear()
        self._running.clear()
        if self._response is not None:
            response, self._response = self._response, None
            await response.aclose()

    # ---------------------------------------------------------------- rounds

    async def _open(self) -> UpstreamResponse:
        body = self.turn.upstream_body()
        self.observer.round_started(self.turn.round_number + 1, body)
        return await self.upstream.open_chat(body, is_strict=self.turn.is_strict)

    async def _rounds(self, *, streaming: bool) -> AsyncIterator[bytes]:
        turn = self.turn
        while True:
            if self._response is None:
                self._response = await self._open()
            stream = turn.begin_round()
            is_first = True
            try:
                # keep-alive comments complete no event: silence, bounded like no bytes at all
                reader = IdleBoundedReads(self._response, self.upstream.timeout)
                async for data in reader:
                    if is_first:
                        self.observer.round_first_chunk()
                        is_first = False
                    for piece in self._pieces(data):
                        try:
                            events = stream.receive_data(piece)
                        except ProtocolError as error:
                            turn.fail_round(error)
                            events = stream.receive_eof()
                        if events:
                            reader.progressed()
                        frames = self._act(*turn.handle(events))
                        if frames and streaming:
                            self.observer.output_frames()
                            yield b"".join(frames)
                        if stream.is_ended:
                            break
                    if stream.is_ended:
                        break
                if not stream.is_ended:
                    frames = self._act(*turn.handle(stream.receive_eof()))
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
            if not turn.is_round_cut:
                starts = [StartTool(call) for call in turn.calls_to_run()]
                frames = self._act([], list(starts))
                if frames and streaming:
                    yield b"".join(frames)
                async for frames in self._await_tools():
                    if streaming:
                        yield b"".join(frames)
            else:
                await self.aclose()  # a cut round's started tools are not waited for
            self.observer.round_ended(*turn.round_outcome)
            frames = self.frames.encode(turn.round_ended())
            if frames and streaming:
                yield b"".join(frames)
            decision = turn.decide()
            await self._keep(decision)
            if decision.kind == "fail":
                assert decision.error is not None
                self.observer.turn_ended(None, turn.round_number, decision.error)
                raise decision.error
            frames = self._act(list(decision.outputs), list(decision.actions))
            if frames and streaming:
                yield b"".join(frames)
            if decision.kind == "finish":
                self.observer.turn_ended(turn.finish_reason, turn.round_number, None)
                if streaming:
                    yield b"".join(self.frames.final())
                return

    def _pieces(self, data: bytes) -> Iterator[bytes]:
        """``data`` as it came; until the client has its first frame, cut after each event.

        A burst read at once (the role chunk, the first token and the next twenty) then sends
        the first token as soon as its own event is handled, not after the whole read is
        parsed. The stream's events are the same for any cut of its bytes.
        """
        start = 0
        while self._awaits_first_frame:
            end = data.find(b"\n\n", start) + 2  # after the blank line (1: none; CRLF framing)
            if end < 2 + start or end >= len(data):
                break
            yield data[start:end]
            start = end
        yield data[start:] if start else data

    def _act(self, outputs: list[Output], actions: list[Action]) -> list[bytes]:
        """Carry out the turn's actions; the frames for its outputs and the tool starts."""
        for action in actions:
            if isinstance(action, StartTool):
                self._start_tool(action.call)
                outputs.extend(self.turn.tool_started(action.call))
            elif isinstance(action, Refuse):
                self._audit(action.call, "refused", kind=action.kind)
            elif isinstance(action, AwaitApproval):
                self._audit(action.call, "awaiting_approval")
            else:
                logger.warning(
                    "request %s: the upstream stream: %s (%s)",
                    self.request_id,
                    action.detail,
                    action.kind,
                )
        return self.frames.encode(outputs) if outputs else []

    def _start_tool(self, call: Call) -> None:
        tool = self.turn.tools[call.name]
        self.observer.tool_started(call.name, call.id)
        # the task copies the context: the tool sees its own trace context (for MCP calls)
        token = TOOL_TRACE_CONTEXT.set(self.observer.tool_headers(call.id))
        try:
            self._tasks[call.id] = asyncio.create_task(
                tool.run(call.parsed or {}, max_result_size=self.max_tool_result_size),
                name=f"tool {call.name} {call.id}",
            )
        finally:
            TOOL_TRACE_CONTEXT.reset(token)
        self._running[call.id] = call
        self._audit(call, "started")

    async def _await_tools(self) -> AsyncIterator[list[bytes]]:
        """Wait for this round's server tools, yielding a progress frame as each ends."""
        calls = {call.id: call for call in self.turn.pending_server_calls()}
        pending = {self._tasks[call_id] for call_id in calls if call_id in self._tasks}
        by_task = {task: call_id for call_id, task in self._tasks.items()}
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            outputs: list[Output] = []
            for task in done:
                call = calls[by_task[task]]
                self._tasks.pop(call.id, None)
                self._running.pop(call.id, None)
                outcome = task.result()
                self._audit(call, outcome.status, outcome.duration)
                self.observer.tool_finished(call.name, call.id, outcome.status, outcome.duration)
                outputs.extend(self.turn.tool_finished(call, outcome))
            yield self.frames.encode(outputs)

    async def _keep(self, decision: Decision) -> None:
        """Write what the next request needs. A hand-off (tool calls, an approval question)
        cannot go on without it, so a store failure then fails the turn; a finished answer's
        transcript only makes the next request's conversation more complete, so there it is
        logged and the answer still ends cleanly."""
        is_hand_off = self.turn.finish_reason == "tool_calls" or bool(decision.outputs)
        for entry in decision.store:
            try:
                await self.store.put(self.turn.client, entry.key, entry.value, self.state_ttl)
            except StateUnavailableError as error:
                if is_hand_off:
                    raise
                logger.warning(
                    "request %s: the turn's transcript was not kept (%s)",
                    self.request_id,
                    error.reason,
                )

    # ---------------------------------------------------------------- approvals

    async def _settle(self, settlement: Settlement) -> None:
        """Run an approved call once, or put the reason it does not run in its tool message."""
        message = settlement.message
        tool = self.turn.tools.get(settlement.name)
        verdict = settlement.verdict
        if tool is None or not tool.needs_approval:
            message["content"] = (
                f"error: no tool that takes approvals is named {settlement.name!r}; not run"
            )
            self._audit_settlement(settlement, "refused", kind="unknown_tool")
            return
        if not verdict.is_approved or settlement.signed is None:
            message["content"] = declined_text(settlement.name, verdict)
            self._audit_settlement(settlement, verdict.kind)
            if settlement.is_answer:
                self._settled.append(
                    ToolProgress(settlement.upstream_id, settlement.name, "declined")
                )
            return
        self._audit_settlement(settlement, "approved")
        arguments = settlement.arguments
        max_size = self.max_tool_result_size

        async def run() -> tuple[str, str]:
            if not settlement.is_answer:
                return "not_run", f"The user approved this {settlement.name} call; it was not run."
            try:
                parsed = orjson.loads(arguments or "{}")
            except orjson.JSONDecodeError:
                parsed = None
            if not isinstance(parsed, dict):
                return "error", "error: the call was not run: its arguments are not an object"
            self._settled.append(ToolProgress(settlement.upstream_id, settlement.name, "started"))
            outcome = await tool.run(parsed, max_result_size=max_size)
            self._audit_settlement(settlement, outcome.status, outcome.duration)
            self._settled.append(
                ToolProgress(
                    settlement.upstream_id, settlement.name, outcome.status, outcome.duration
                )
            )
            return outcome.status, outcome.content

        # shielded: once claimed, the run and its record finish even if the client leaves
        task = asyncio.ensure_future(run_once(self.store, self.turn.client, settlement.signed, run))
        _SHIELDED.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(_SHIELDED.discard)
        status, content = await asyncio.shield(task)
        message["content"] = content
        if status in ("already_ran", "running"):
            self._audit_settlement(settlement, status)
            if settlement.is_answer:
                self._settled.append(
                    ToolProgress(settlement.upstream_id, settlement.name, "already_ran")
                )

    # ---------------------------------------------------------------- audit

    def _audit(self, call: Call, outcome: str, duration: float = 0.0, **details: object) -> None:
        audit(self.request_id, call.name, call.id, call.arguments, outcome, duration, **details)

    def _audit_settlement(
        self, settlement: Settlement, outcome: str, duration: float = 0.0, **details: object
    ) -> None:
        if outcome in (
            "approved",
            "declined",
            "mismatch",
            "expired",
            "forged",
            "invalid",
        ) or outcome in ("already_ran", "running"):
            self.observer.approval_settled(settlement.name, outcome)
        else:
            self.observer.tool_finished(settlement.name, settlement.upstream_id, outcome, duration)
        audit(
            self.request_id,
            settlement.name,
            settlement.upstream_id,
            settlement.arguments,
            outcome,
            duration,
            **details,
        )
