"""The tool loop as a state machine: one client request, one or more upstream rounds (no I/O).

``Turn`` is fed the ``ChatStream`` events of each upstream round and answers with *outputs*
(what the client should see, encoded by ``frames.py``) and *actions* (what the driver must do:
start a tool, audit a refusal). At the end of a round it runs nothing itself: ``calls_to_run``
names the server calls the driver runs, ``settle`` takes their results, and ``decide`` says
whether to continue, finish or fail, with what to keep in the state store. ``runner.py`` is the
asyncio driver; tests drive ``Turn`` directly with events (``tests/proxy/test_turn.py``).

Theory of operation
-------------------
Every call the model makes has an owner, fixed when ``ToolCallStarted`` names it:

- ``client``: a tool from the client's own ``tools``. Its deltas stream to the client as they
  arrive, unchanged except for a client-side ``index``.
- ``server``: a server tool that runs without asking (modes ``auto`` and ``read_only``). Hidden
  from the client. A ``read_only`` call starts the moment it is sealed (``ToolCallReady``), while
  the model may still be streaming; an ``auto`` call starts when its round ended cleanly.
- ``approval``: a server tool in mode ``needs_approval``. Never run in the turn that made it: the
  user approves it first (``approval.py``). With ``--approvals client`` it is handed to the client
  as one whole tool call with a signed id the moment it is sealed; with ``--approvals chat`` the
  turn ends with a short message asking the user yes or no.
- ``unknown``: a name nobody owns. Never run.

A call that is ``ToolCallInvalid`` never runs: the reason goes back to the model as the tool's
result, so it can correct itself (the client never sees it, unless the call was the client's).

At the end of a round (``StreamEnded``):

- an error (in-band, broken stream, no end mark) ends the turn with that error;
- ``finish_reason`` ``length`` or ``content_filter`` ends the turn with it: the model's turn was
  cut, so its calls are not trusted and nothing more runs (started read-only tools are cancelled);
- otherwise the server calls run (``calls_to_run``) and, once settled:
- if any call belongs to the client (or is an approval handed to it), the turn ends with
  ``finish_reason: "tool_calls"``; the full upstream message and the server results are kept
  under the client-visible call ids, so the next request restores them (``conversation.py``);
- else if approvals are asked in chat, the turn ends with the question as text, and the round's
  messages and the pending calls are kept under that visible text;
- else if server calls were made, their results are appended with the assistant message (with
  ``reasoning_content``) and the next round starts, up to ``max_rounds`` upstream requests. The
  last allowed round is sent with ``tool_choice: "none"``; a model that still calls a server tool
  then ends the turn with a ``tool_rounds_exceeded`` error;
- else the turn finishes with the upstream's ``finish_reason``.

The client sees one assistant message under one completion id and exactly one
``finish_reason``. Text of later rounds is set apart from earlier text by a blank line.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

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
    StreamProxyError,
    ToolRoundsExceededError,
    UpstreamError,
)
from streamproxy.proxy.approval import (
    ApprovalMode,
    ApprovalSigner,
    PendingCall,
    approval_prompt,
    approval_record_key,
)
from streamproxy.proxy.conversation import Message, calls_key, content_key
from streamproxy.proxy.request import ChatRequest
from streamproxy.proxy.tools import ToolOutcome, ToolSet
from streamproxy.proxy.usage import sum_usage

__all__ = [
    "ApprovalRequested",
    "AwaitApproval",
    "Call",
    "ClientCallArguments",
    "ClientCallStarted",
    "Decision",
    "Output",
    "Phase",
    "Refuse",
    "RoundEnded",
    "ServerCallArguments",
    "StartTool",
    "StoreEntry",
    "TextDelta",
    "ToolProgress",
    "Turn",
    "Warn",
]
# (Action, the union of the actions, is importable too.)

Owner = Literal["client", "server", "approval", "unknown"]
ToolStatus = Literal[
    "started",
    "ok",
    "error",
    "timeout",
    "too_large",
    "invalid",
    "cancelled",
    "awaiting_approval",
    "declined",
    "already_ran",
]
TextField = Literal["content", "reasoning_content", "refusal"]


class Phase(Enum):
    """Where the turn is: between rounds, inside one, or done."""

    ROUND_ENDED = "round_ended"
    STREAMING = "streaming"
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
    """The text sent upstream as the tool's result (calls the proxy answers)."""


# ------------------------------------------------------------------------------ outputs


@dataclass(frozen=True, slots=True)
class TextDelta:
    """Text for the client's message: content, reasoning or refusal."""

    field: TextField
    text: str


@dataclass(frozen=True, slots=True)
class ClientCallStarted:
    """A tool call the client sees: its index, id and name (whole arguments when known)."""

    index: int
    id: str
    name: str
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class ClientCallArguments:
    """A fragment of a client-visible call's arguments."""

    index: int
    fragment: str


@dataclass(frozen=True, slots=True)
class ServerCallArguments:
    """A fragment of a hidden (server) call's arguments, for clients that asked for previews."""

    call_id: str
    name: str
    fragment: str


@dataclass(frozen=True, slots=True)
class ToolProgress:
    """A server call started, ended or waits for approval (a comment, and the extension)."""

    call_id: str
    name: str
    status: ToolStatus
    duration: float | None = None


@dataclass(frozen=True, slots=True)
class ApprovalRequested:
    """A call waits for the user's yes or no (the extension field, for UIs that show buttons)."""

    id: str
    """The signed call."""
    call_id: str
    """The upstream's id, as in the call's ``tool_progress``."""
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class RoundEnded:
    """An upstream round ended: its number, ``finish_reason`` and usage (the extension)."""

    number: int
    finish_reason: str | None
    usage: dict[str, object] | None


Output = (
    TextDelta
    | ClientCallStarted
    | ClientCallArguments
    | ServerCallArguments
    | ToolProgress
    | ApprovalRequested
    | RoundEnded
)

# ------------------------------------------------------------------------------ actions


@dataclass(frozen=True, slots=True)
class StartTool:
    """Action: run this server call now."""

    call: Call


@dataclass(frozen=True, slots=True)
class Refuse:
    """Action: this call is answered with an error and never runs (audit it)."""

    call: Call
    kind: str


@dataclass(frozen=True, slots=True)
class AwaitApproval:
    """Action: this call now waits for the user's approval (audit it)."""

    call: Call


@dataclass(frozen=True, slots=True)
class Warn:
    """Action: the upstream's stream was tolerated but not used as sent (log it)."""

    kind: str
    detail: str


Action = StartTool | Refuse | AwaitApproval | Warn


@dataclass(frozen=True, slots=True)
class StoreEntry:
    """Something the next request needs: ``value`` under ``key`` for this client."""

    key: str
    value: object


@dataclass(frozen=True, slots=True)
class Decision:
    """What the driver does after a round: ``continue``, ``finish`` or ``fail``."""

    kind: Literal["continue", "finish", "fail"]
    error: StreamProxyError | None = None
    outputs: tuple[Output, ...] = ()
    """Client outputs of the decision itself (an approval question)."""
    actions: tuple[Action, ...] = ()
    store: tuple[StoreEntry, ...] = ()


@dataclass(slots=True)
class _Round:
    stream: ChatStream
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: dict[str, Call] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: dict[str, object] | None = None
    error: StreamProxyError | None = None

    @property
    def is_cut(self) -> bool:
        """The model's round failed or was cut short: none of its calls may run."""
        return self.error is not None or self.finish_reason in ("length", "content_filter")


class Turn:
    """The state of one client request across its upstream rounds (no I/O)."""

    def __init__(
        self,
        request: ChatRequest,
        *,
        tools: ToolSet,
        signer: ApprovalSigner | None,
        client: str = "",
        max_rounds: int = 8,
        use_strict: bool = False,
        limits: Limits | None = None,
        approvals: ApprovalMode = "chat",
    ) -> None:
        self.request = request
        self.tools = tools
        self.signer = signer
        self.client = client
        self.max_rounds = max_rounds
        self.use_strict = use_strict
        self.limits = limits or Limits()
        self.approvals: ApprovalMode = request.approvals or approvals
        self.phase = Phase.ROUND_ENDED
        self._rounds: list[_Round] = []
        self.transcript: list[Message] = []
        """Upstream messages this turn added (assistant + tool results per tool round)."""
        self.id = f"chatcmpl-{secrets.token_hex(16)}"
        self.model = str(request.body.get("model", ""))
        self.created = int(time.time())
        self.finish_reason: str | None = None
        self.sent: dict[TextField, list[str]] = {
            "content": [],
            "reasoning_content": [],
            "refusal": [],
        }
        """Text sent to the client, by field (the non-streaming completion is built from it)."""
        self.handed: list[Call] = []
        """Calls handed to the client in the final round, in client index order."""
        self._client_call_count = 0
        self._schemas: dict[str, SchemaSource] = dict(tools.schemas())
        for name in request.client_tool_names:
            self._schemas[name] = None

    # ---------------------------------------------------------------- rounds

    @property
    def round_number(self) -> int:
        return len(self._rounds)

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
        self._rounds.append(_Round(stream))
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
        elif self._rounds and tool_choice is not None and tool_choice not in ("auto", "none"):
            del body["tool_choice"]  # a forced choice applies to the first round only
        if len(self.tools) and self.round_number + 1 >= self.max_rounds:
            body["tool_choice"] = "none"
        return body

    @property
    def usage(self) -> dict[str, object] | None:
        """Usage summed over every round."""
        return sum_usage(current.usage for current in self._rounds)

    @property
    def round_outcome(
        self,
    ) -> tuple[str | None, dict[str, object] | None, StreamProxyError | None]:
        """The current round's ``finish_reason``, usage and error, as the upstream ended it."""
        current = self._rounds[-1]
        return current.finish_reason, current.usage, current.error

    # ---------------------------------------------------------------- events

    def handle(self, events: list[Event]) -> tuple[list[Output], list[Action]]:
        """Client outputs and actions for a batch of events from the current round."""
        outputs: list[Output] = []
        actions: list[Action] = []
        current = self._rounds[-1]
        for event in events:
            if isinstance(event, ContentDelta | ReasoningDelta):
                if event.choice == 0 and event.text:
                    is_content = isinstance(event, ContentDelta)
                    name: TextField = "content" if is_content else "reasoning_content"
                    parts = current.content if is_content else current.reasoning
                    text = event.text
                    if not parts and _needs_separator(self.sent[name]):
                        text = "\n\n" + text  # a later round's text is set apart
                    parts.append(event.text)
                    self.sent[name].append(text)
                    outputs.append(TextDelta(name, text))
            elif isinstance(event, ToolCallArgumentsDelta):
                call = current.calls.get(event.id)
                if call is None or not event.fragment:
                    continue
                if call.owner == "client":
                    assert call.client_index is not None
                    outputs.append(ClientCallArguments(call.client_index, event.fragment))
                elif self.request.wants_tool_previews:
                    outputs.append(ServerCallArguments(call.id, call.name, event.fragment))
            elif isinstance(event, ToolCallStarted):
                outputs.extend(self._call_started(current, event))
            elif isinstance(event, ToolCallReady):
                self._call_ready(current, event, outputs, actions)
            elif isinstance(event, ToolCallInvalid):
                self._call_invalid(current, event, actions)
            elif isinstance(event, RefusalDelta):
                if event.choice == 0 and event.text:
                    self.sent["refusal"].append(event.text)
                    outputs.append(TextDelta("refusal", event.text))
            elif isinstance(event, ChoiceFinished):
                if event.choice == 0:
                    current.finish_reason = event.finish_reason
            elif isinstance(event, UsageReported):
                current.usage = event.usage
            elif isinstance(event, UpstreamErrorReported):
                current.error = current.error or _in_band_error(event)
            elif isinstance(event, StreamStarted):
                if len(self._rounds) == 1 and event.model:
                    self.model = event.model
            elif isinstance(event, StreamWarning):
                actions.append(Warn(event.kind, event.detail))
            elif isinstance(event, StreamEnded):
                if not event.is_clean and current.error is None:
                    current.error = IncompleteStreamError(
                        f"the upstream stream ended early: {event.reason or 'no end mark'}"
                    )
                self.phase = Phase.ROUND_ENDED
        return outputs, actions

    def fail_round(self, error: StreamProxyError) -> None:
        """Record a transport or protocol failure of the current round."""
        current = self._rounds[-1]
        current.error = current.error or error

    def _call_started(self, current: _Round, event: ToolCallStarted) -> list[Output]:
        owner: Owner
        tool = self.tools.get(event.name)
        if event.name in self.request.client_tool_names:
            owner = "client"
        elif tool is None:
            owner = "unknown"
        elif tool.needs_approval:
            owner = "approval"
        else:
            owner = "server"
        call = Call(id=event.id, name=event.name, owner=owner, position=event.position)
        current.calls[event.id] = call
        if owner != "client":
            return []
        call.client_index = self._next_client_index()
        call.client_id = event.id
        return [ClientCallStarted(call.client_index, event.id, event.name)]

    def _call_ready(
        self, current: _Round, event: ToolCallReady, outputs: list[Output], actions: list[Action]
    ) -> None:
        call = current.calls.get(event.id)
        if call is None:
            return
        call.arguments = event.arguments
        call.parsed = event.parsed
        if call.owner == "approval" and self.signer is None:
            call.owner = "unknown"  # no secret, no approval: answered with the reason
            call.result = (
                f"error: {call.name} needs the user's approval, and approvals are unavailable "
                "now (the proxy's state store cannot be reached); the call was not run"
            )
            actions.append(Refuse(call, "state_unavailable"))
        elif call.owner == "unknown":
            call.result = f"error: no tool is named {call.name!r}; the call was not run"
            actions.append(Refuse(call, "unknown_tool"))
        elif call.owner == "server" and self.tools[call.name].is_read_only:
            if self.round_number < self.max_rounds:  # no tool runs in the last allowed round
                actions.append(StartTool(call))
        elif call.owner == "approval" and self.approvals == "client":
            assert self.signer is not None
            call.client_index = self._next_client_index()
            call.client_id = self.signer.sign(
                call.id, call.name, call.arguments, client=self.client
            )
            outputs.append(
                ClientCallStarted(call.client_index, call.client_id, call.name, call.arguments)
            )
            actions.append(AwaitApproval(call))

    def _call_invalid(self, current: _Round, event: ToolCallInvalid, actions: list[Action]) -> None:
        call = current.calls.get(event.id)
        if call is None or call.owner == "client":
            return  # the client got the call's deltas and judges it itself
        call.arguments = event.arguments
        call.result = f"error: the call was not run: {event.reason}"
        call.owner = "unknown"  # answered by the proxy with the error, like an unknown tool
        actions.append(Refuse(call, event.kind))

    def _next_client_index(self) -> int:
        index = self._client_call_count
        self._client_call_count += 1
        return index

    # ---------------------------------------------------------------- end of round

    def calls_to_run(self) -> list[Call]:
        """Server calls of the ended round that still have to start (``auto`` mode).

        Empty when the round failed or was cut: a cut round's calls are not trusted. Read-only
        calls already started at their seal; the driver waits for those too.
        """
        current = self._rounds[-1]
        if current.is_cut or self.round_number >= self.max_rounds:
            return []
        return [
            call
            for call in current.calls.values()
            if call.owner == "server"
            and call.parsed is not None
            and call.result is None
            and not self.tools[call.name].is_read_only
        ]

    def pending_server_calls(self) -> list[Call]:
        """The round's server calls that have no result yet."""
        return [
            call
            for call in self._rounds[-1].calls.values()
            if call.owner == "server" and call.result is None
        ]

    @property
    def is_round_cut(self) -> bool:
        return self._rounds[-1].is_cut

    def round_ended(self) -> list[Output]:
        """The ended round's report (shown to clients that asked for tool progress)."""
        current = self._rounds[-1]
        return [RoundEnded(self.round_number, current.finish_reason, current.usage)]

    def tool_started(self, call: Call) -> list[Output]:
        return [ToolProgress(call.id, call.name, "started")]

    def tool_finished(self, call: Call, outcome: ToolOutcome) -> list[Output]:
        """Record a server call's result; its progress output."""
        call.result = outcome.content
        return [ToolProgress(call.id, call.name, outcome.status, outcome.duration)]

    def decide(self) -> Decision:
        """What happens after the current round ended (server results must all be known)."""
        current = self._rounds[-1]
        if current.error is not None:
            self.phase = Phase.FAILED
            return Decision("fail", current.error)
        calls = sorted(current.calls.values(), key=lambda call: call.position)
        reason = current.finish_reason
        if current.is_cut or (not calls and reason is not None):
            return self._finish(reason or "stop")
        for call in calls:
            if call.result is None and call.owner == "server":
                call.result = "error: the call was not run"  # the last allowed round
        client_calls = [call for call in calls if call.owner == "client"]
        approvals = [call for call in calls if call.owner == "approval"]
        if approvals and self.approvals == "chat" and client_calls:
            for call in approvals:  # one message cannot both ask the user and hand calls over
                call.owner = "unknown"
                call.result = (
                    f"error: {call.name} needs the user's approval and was not run: call it "
                    "again on its own, without other tools, to ask for it"
                )
            approvals = []
        if approvals and any(call.parsed is None for call in approvals):
            for call in approvals:
                if call.parsed is None:
                    call.owner = "unknown"
            approvals = [call for call in approvals if call.parsed is not None]
        handed = client_calls + (approvals if self.approvals == "client" else [])
        answered = [call for call in calls if call.owner in ("server", "unknown")]
        if handed:
            self.handed = sorted(handed, key=lambda call: call.client_index or 0)
            key = calls_key([str(call.client_id) for call in self.handed])
            messages = self._round_messages(current, calls, answered)
            return self._finish("tool_calls", store=(StoreEntry(key, messages),))
        if approvals:
            return self._ask_in_chat(current, calls, answered, approvals)
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

    def _round_messages(
        self, current: _Round, calls: list[Call], answered: list[Call]
    ) -> list[Message]:
        return [
            *self.transcript,
            _assistant_message(current, calls),
            *(_tool_message(call) for call in answered),
        ]

    def _ask_in_chat(
        self, current: _Round, calls: list[Call], answered: list[Call], approvals: list[Call]
    ) -> Decision:
        assert self.signer is not None  # approval calls are refused without one
        pending = [
            PendingCall(
                signed_id=self.signer.sign(call.id, call.name, call.arguments, client=self.client),
                upstream_id=call.id,
                name=call.name,
                arguments=call.arguments,
            )
            for call in approvals
        ]
        question = approval_prompt(pending)
        if _needs_separator(self.sent["content"]):
            question = "\n\n" + question
        self.sent["content"].append(question)
        visible = "".join(self.sent["content"])
        outputs: list[Output] = [TextDelta("content", question)]
        for call, item in zip(approvals, pending, strict=True):
            outputs.append(ToolProgress(call.id, call.name, "awaiting_approval"))
            outputs.append(ApprovalRequested(item.signed_id, call.id, item.name, item.arguments))
        messages = self._round_messages(current, calls, answered)
        store = (
            StoreEntry(content_key(visible), messages),
            StoreEntry(approval_record_key(visible), [item.to_record() for item in pending]),
        )
        decision = self._finish("stop", store=store)
        return Decision(
            decision.kind,
            outputs=tuple(outputs),
            store=decision.store,
            actions=tuple(AwaitApproval(call) for call in approvals),
        )

    def _finish(self, reason: str, store: tuple[StoreEntry, ...] = ()) -> Decision:
        self.finish_reason = reason
        self.phase = Phase.FINISHED
        if not store and self.transcript and reason != "tool_calls":
            final = _assistant_message(self._rounds[-1], [])
            visible = "".join(self.sent["content"])
            if visible:
                store = (StoreEntry(content_key(visible), [*self.transcript, final]),)
        return Decision("finish", store=store)

    def handed_arguments(self, call: Call) -> str:
        """The arguments of a handed call as the client saw them."""
        if call.owner == "approval":
            return call.arguments
        message = self._rounds[-1].stream.message()
        for entry in message.get("tool_calls", []) or []:  # type: ignore[attr-defined]
            if isinstance(entry, dict) and entry.get("id") == call.id:
                return str(entry["function"]["arguments"])
        return call.arguments


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
