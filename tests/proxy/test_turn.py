"""``Turn`` driven directly, without ASGI or sockets: events in; outputs, actions and decisions
out (the way h11 tests its ``Connection``)."""

from __future__ import annotations

import pytest

from streamproxy.core.events import Event, ToolCallReady
from streamproxy.errors import IncompleteStreamError, ToolRoundsExceededError, UpstreamError
from streamproxy.proxy.approval import ApprovalSigner
from streamproxy.proxy.request import ChatRequest, parse_request
from streamproxy.proxy.tools import ToolOutcome, ToolSet, tool
from streamproxy.proxy.turn import (
    ApprovalRequested,
    ClientCallArguments,
    ClientCallStarted,
    Phase,
    Refuse,
    ServerCallArguments,
    StartTool,
    TextDelta,
    ToolProgress,
    Turn,
)

from .helpers import MODEL, content_round, sse, tool_round
from .helpers import chunk as upstream_chunk


@tool(read_only=True)
def lookup(key: str) -> str:
    """Look up."""
    return key


def count(text: str) -> int:
    """Count (auto)."""
    return len(text)


@tool(needs_approval=True)
def delete(path: str) -> str:
    """Delete (needs approval)."""
    return path


TOOLS = ToolSet([lookup, count, delete])
SIGNER = ApprovalSigner(b"k" * 32)
CLIENT_TOOL = {"type": "function", "function": {"name": "show", "parameters": {}}}


def request(**body: object) -> ChatRequest:
    import json

    raw = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **body})
    return parse_request(raw.encode(), server_tools=TOOLS, is_deepseek=False, max_size=1 << 20)


def feed(turn: Turn, frames: list[bytes]) -> tuple[list[object], list[object]]:
    """One whole round: every frame, then EOF."""
    stream = turn.begin_round()
    outputs: list[object] = []
    actions: list[object] = []
    events: list[Event] = []
    for frame in frames:
        events.extend(stream.receive_data(frame))
    events.extend(stream.receive_eof())
    got_outputs, got_actions = turn.handle(events)
    outputs.extend(got_outputs)
    actions.extend(got_actions)
    return outputs, actions


def settle(turn: Turn, result: str = "done") -> None:
    for call in turn.calls_to_run() + turn.pending_server_calls():
        if call.result is None:
            turn.tool_finished(call, ToolOutcome("ok", result, 0.001))


def test_content_streams_as_text_outputs_and_the_turn_finishes_with_stop() -> None:
    turn = Turn(request(), tools=TOOLS, signer=SIGNER)
    outputs, actions = feed(turn, content_round("Hello| world", reasoning="hmm"))
    assert outputs == [
        TextDelta("reasoning_content", "hmm"),
        TextDelta("content", "Hello"),
        TextDelta("content", " world"),
    ]
    assert actions == []
    assert turn.phase is Phase.ROUND_ENDED
    decision = turn.decide()
    assert decision.kind == "finish" and decision.store == ()
    assert turn.finish_reason == "stop"
    assert turn.phase is Phase.FINISHED


def test_a_read_only_call_starts_at_its_seal_and_the_round_continues() -> None:
    turn = Turn(request(), tools=TOOLS, signer=SIGNER)
    outputs, actions = feed(turn, tool_round([("c1", "lookup", '{"key": "k"}')]))
    assert outputs == []  # server calls are hidden
    [start] = actions
    assert isinstance(start, StartTool) and start.call.name == "lookup"
    assert turn.calls_to_run() == []  # already started
    turn.tool_finished(start.call, ToolOutcome("ok", "k", 0.01))
    decision = turn.decide()
    assert decision.kind == "continue"
    body = turn.upstream_body()
    assert body["messages"][-1] == {"role": "tool", "tool_call_id": "c1", "content": "k"}  # type: ignore[index]


def test_an_auto_call_runs_only_after_a_clean_round() -> None:
    turn = Turn(request(), tools=TOOLS, signer=SIGNER)
    _, actions = feed(turn, tool_round([("c1", "count", '{"text": "abc"}')]))
    assert actions == []  # not at its seal
    [call] = turn.calls_to_run()
    assert call.name == "count"
    cut = Turn(request(), tools=TOOLS, signer=SIGNER)
    feed(cut, tool_round([("c1", "count", '{"text": "abc"}')], finish="length"))
    assert cut.calls_to_run() == []
    assert cut.decide().kind == "finish" and cut.finish_reason == "length"


def test_client_calls_stream_with_client_indexes_and_end_the_turn_with_tool_calls() -> None:
    turn = Turn(request(tools=[CLIENT_TOOL]), tools=TOOLS, signer=SIGNER)
    outputs, _ = feed(
        turn, tool_round([("c1", "lookup", '{"key": "k"}'), ("c2", "show", '{"a": 1}')])
    )
    started = [o for o in outputs if isinstance(o, ClientCallStarted)]
    assert started == [ClientCallStarted(0, "c2", "show")]
    fragments = "".join(o.fragment for o in outputs if isinstance(o, ClientCallArguments))
    assert fragments == '{"a": 1}'
    settle(turn)
    decision = turn.decide()
    assert decision.kind == "finish" and turn.finish_reason == "tool_calls"
    [entry] = decision.store
    assert entry.key.startswith("calls:")
    roles = [message["role"] for message in entry.value]  # type: ignore[attr-defined]
    assert roles == ["assistant", "tool"]  # the full upstream message, and the server result


def test_a_chat_approval_ends_the_turn_with_a_question_and_keeps_the_pending_call() -> None:
    turn = Turn(request(), tools=TOOLS, signer=SIGNER)
    outputs, actions = feed(turn, tool_round([("c1", "delete", '{"path": "/tmp/x"}')]))
    assert outputs == [] and actions == []
    assert turn.calls_to_run() == []  # never run in the turn that made it
    decision = turn.decide()
    assert decision.kind == "finish" and turn.finish_reason == "stop"
    [question, progress, request_output] = decision.outputs
    assert isinstance(question, TextDelta) and "**delete** needs your approval" in question.text
    assert progress == ToolProgress("c1", "delete", "awaiting_approval")
    assert isinstance(request_output, ApprovalRequested)
    assert SIGNER.verify(request_output.id, "delete", '{"path":"/tmp/x"}', client="").is_approved
    keys = [entry.key.split(":")[0] for entry in decision.store]
    assert keys == ["content", "pending"]


def test_a_client_approval_is_handed_over_signed_at_its_seal() -> None:
    turn = Turn(request(), tools=TOOLS, signer=SIGNER, approvals="client")
    outputs, _ = feed(turn, tool_round([("c1", "delete", '{"path": "/x"}')]))
    [handed] = outputs
    assert isinstance(handed, ClientCallStarted)
    assert handed.id.startswith("spw2.") and handed.arguments == '{"path": "/x"}'
    assert turn.decide().kind == "finish" and turn.finish_reason == "tool_calls"


def test_the_request_can_pick_client_approvals() -> None:
    turn = Turn(request(streamproxy={"approvals": "client"}), tools=TOOLS, signer=SIGNER)
    assert turn.approvals == "client"


def test_a_chat_approval_beside_a_client_call_is_refused_with_a_reason() -> None:
    turn = Turn(request(tools=[CLIENT_TOOL]), tools=TOOLS, signer=SIGNER)
    feed(turn, tool_round([("c1", "delete", '{"path": "/x"}'), ("c2", "show", "{}")]))
    decision = turn.decide()
    assert turn.finish_reason == "tool_calls"
    [entry] = decision.store
    [tool_message] = [m for m in entry.value if m["role"] == "tool"]  # type: ignore[attr-defined]
    assert "needs the user's approval and was not run" in tool_message["content"]


def test_unknown_and_invalid_calls_are_refused_never_started() -> None:
    turn = Turn(request(), tools=TOOLS, signer=SIGNER)
    _, actions = feed(turn, tool_round([("c1", "nope", "{}"), ("c2", "lookup", '{"wrong": 1}')]))
    assert {(type(a), a.kind) for a in actions if isinstance(a, Refuse)} == {
        (Refuse, "unknown_tool"),
        (Refuse, "schema"),
    }
    assert not any(isinstance(action, StartTool) for action in actions)
    assert turn.decide().kind == "continue"


def test_previews_of_server_arguments_only_when_asked() -> None:
    frames = tool_round([("c1", "lookup", '{"key": "abc"}')])
    quiet = Turn(request(), tools=TOOLS, signer=SIGNER)
    assert feed(quiet, frames)[0] == []
    asked = Turn(request(streamproxy={"tool_previews": True}), tools=TOOLS, signer=SIGNER)
    outputs, _ = feed(asked, frames)
    assert all(isinstance(o, ServerCallArguments) for o in outputs)
    assert "".join(o.fragment for o in outputs) == '{"key": "abc"}'  # type: ignore[union-attr]


def test_a_broken_round_fails_the_turn() -> None:
    turn = Turn(request(), tools=TOOLS, signer=SIGNER)
    feed(turn, sse([upstream_chunk({"content": "par"})], done=False))
    decision = turn.decide()
    assert decision.kind == "fail" and isinstance(decision.error, IncompleteStreamError)
    assert turn.phase is Phase.FAILED


def test_an_in_band_error_fails_the_turn_with_the_upstream_status() -> None:
    turn = Turn(request(), tools=TOOLS, signer=SIGNER)
    error = {"error": {"message": "overloaded", "code": 503}}
    feed(turn, sse([upstream_chunk({"content": "x"}), error]))
    decision = turn.decide()
    assert isinstance(decision.error, UpstreamError) and decision.error.status_hint == 503


def test_the_last_allowed_round_forbids_tools_and_a_model_that_insists_fails() -> None:
    turn = Turn(request(), tools=TOOLS, signer=SIGNER, max_rounds=2)
    feed(turn, tool_round([("c1", "lookup", '{"key": "a"}')]))
    settle(turn)
    assert turn.decide().kind == "continue"
    assert turn.upstream_body()["tool_choice"] == "none"
    _, actions = feed(turn, tool_round([("c2", "lookup", '{"key": "b"}')]))
    assert actions == []  # no tool runs in the last allowed round
    decision = turn.decide()
    assert decision.kind == "fail" and isinstance(decision.error, ToolRoundsExceededError)


def test_later_rounds_text_is_set_apart_and_the_finished_tool_turn_is_kept() -> None:
    turn = Turn(request(), tools=TOOLS, signer=SIGNER)
    outputs, _ = feed(turn, tool_round([("c1", "lookup", '{"key": "a"}')], content="Looking."))
    assert outputs == [TextDelta("content", "Looking.")]
    settle(turn)
    turn.decide()
    outputs, _ = feed(turn, content_round("Found."))
    assert outputs == [TextDelta("content", "\n\nFound.")]
    decision = turn.decide()
    [entry] = decision.store
    assert entry.key.startswith("content:")
    assert [m["role"] for m in entry.value] == ["assistant", "tool", "assistant"]  # type: ignore[attr-defined]


def test_a_round_cannot_begin_while_one_streams() -> None:
    turn = Turn(request(), tools=TOOLS, signer=SIGNER)
    turn.begin_round()
    with pytest.raises(RuntimeError, match="streaming"):
        turn.begin_round()


def test_ready_events_for_calls_never_started_are_ignored() -> None:
    turn = Turn(request(), tools=TOOLS, signer=SIGNER)
    turn.begin_round()
    stray = ToolCallReady(choice=0, id="ghost", name="lookup", arguments="{}", parsed={})
    assert turn.handle([stray]) == ([], [])
