"""Tool modes and approvals through the app (no sockets): auto tools, chat and client approvals,
and each way of making one approval run a call twice."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest

from streamproxy.config import Config
from streamproxy.proxy.approval import APPROVING_ANSWERS, ApprovalSigner
from streamproxy.proxy.tools import ToolSet, tool

from .helpers import (
    MODEL,
    ScriptedUpstream,
    content_round,
    post_stream,
    proxy_client,
    tool_round,
)

pytestmark = pytest.mark.anyio

USER = [{"role": "user", "content": "Save a note."}]
runs: list[dict[str, object]] = []


@tool(needs_approval=True)
def write_note(title: str, text: str) -> str:
    """Save a note."""
    runs.append({"title": title, "text": text})
    return f"saved {title}"


def count_words(text: str) -> int:
    """Count the words of a text (a plain function: mode auto)."""
    runs.append({"count": text})
    return len(text.split())


TOOLS = ToolSet([write_note, count_words])
WRITE_ROUND = [("call_w", "write_note", '{"title": "t", "text": "hello"}')]
APPROVED = json.dumps({"approved": True})


def config(**changes: object) -> Config:
    return Config(upstream_url="http://upstream.test/v1", **changes)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def clear_runs() -> None:
    runs.clear()


# ------------------------------------------------------------------------------ modes


async def test_a_plain_function_runs_when_its_round_ends_and_the_loop_goes_on() -> None:
    upstream = ScriptedUpstream(
        [tool_round([("call_c", "count_words", '{"text": "a b c"}')]), content_round("Three.")]
    )
    async with proxy_client(upstream, tools=TOOLS) as client:
        result = await post_stream(client, {"model": MODEL, "messages": USER})
    assert runs == [{"count": "a b c"}]
    assert result.content == "Three."
    assert result.tool_call_deltas == []  # never handed to a client that did not define it
    assert upstream.bodies[1]["messages"][2] == {
        "role": "tool",
        "tool_call_id": "call_c",
        "content": "3",
    }


async def test_an_auto_tool_does_not_run_when_the_round_is_cut() -> None:
    upstream = ScriptedUpstream(
        [tool_round([("call_c", "count_words", '{"text": "a"}')], finish="length")]
    )
    async with proxy_client(upstream, tools=TOOLS) as client:
        result = await post_stream(client, {"model": MODEL, "messages": USER})
    assert runs == []
    assert result.finish_reasons == ["length"]
    assert len(upstream.requests) == 1


def test_modes_come_from_the_declaration() -> None:
    modes = {entry.name: entry.mode for entry in TOOLS}
    assert modes == {"write_note": "needs_approval", "count_words": "auto"}
    assert "runs only after the user approves" in TOOLS["write_note"].describe()


# ------------------------------------------------------------------------------ chat mode


async def _ask_in_chat(client: httpx.AsyncClient) -> str:
    result = await post_stream(client, {"model": MODEL, "messages": USER})
    assert result.finish_reasons == ["stop"]
    assert result.tool_call_deltas == []
    assert runs == []
    return result.content


async def test_chat_approval_asks_in_text_and_yes_runs_the_call_once() -> None:
    upstream = ScriptedUpstream(
        [tool_round(WRITE_ROUND, content="Let me save it."), content_round("Saved it.")]
    )
    async with proxy_client(upstream, tools=TOOLS) as client:
        question = await _ask_in_chat(client)
        assert question.startswith("Let me save it.\n\n**write_note** needs your approval")
        assert '"text": "hello"' in question and "yes" in question
        history = [*USER, {"role": "assistant", "content": question}]
        result = await post_stream(
            client, {"model": MODEL, "messages": [*history, {"role": "user", "content": "Yes!"}]}
        )
    assert runs == [{"title": "t", "text": "hello"}]
    assert result.content == "Saved it."
    sent = upstream.bodies[1]["messages"]
    assert [message["role"] for message in sent] == ["user", "assistant", "tool"]
    assert sent[1]["tool_calls"][0]["id"] == "call_w"
    assert sent[2] == {"role": "tool", "tool_call_id": "call_w", "content": "saved t"}


async def test_chat_approval_declines_on_any_other_answer() -> None:
    upstream = ScriptedUpstream([tool_round(WRITE_ROUND), content_round("Not saved.")])
    async with proxy_client(upstream, tools=TOOLS) as client:
        question = await _ask_in_chat(client)
        answer = {"role": "user", "content": "no, use another title"}
        history = [*USER, {"role": "assistant", "content": question}, answer]
        result = await post_stream(client, {"model": MODEL, "messages": history})
    assert runs == []
    assert result.content == "Not saved."
    assert upstream.bodies[1]["messages"][2]["content"] == (
        "The user declined this write_note call; it was not run. "
        "The user said: no, use another title"
    )


async def test_chat_approval_sent_again_does_not_run_twice() -> None:
    upstream = ScriptedUpstream(
        [tool_round(WRITE_ROUND), content_round("Saved."), content_round("Saved, again.")]
    )
    async with proxy_client(upstream, tools=TOOLS) as client:
        question = await _ask_in_chat(client)
        history = [
            *USER,
            {"role": "assistant", "content": question},
            {"role": "user", "content": "y"},
        ]
        await post_stream(client, {"model": MODEL, "messages": history})
        await post_stream(client, {"model": MODEL, "messages": history})
    assert len(runs) == 1
    assert upstream.bodies[2]["messages"][2]["content"] == "saved t"  # the recorded outcome


@pytest.mark.parametrize("word", sorted(APPROVING_ANSWERS))
def test_every_documented_answer_approves(word: str) -> None:
    from streamproxy.proxy.approval import chat_verdict

    assert chat_verdict(f"  {word.upper()}. ").is_approved
    assert not chat_verdict(f"{word} but later").is_approved


async def test_the_mode_can_be_picked_per_request() -> None:
    upstream = ScriptedUpstream([tool_round(WRITE_ROUND)])
    async with proxy_client(upstream, tools=TOOLS) as client:
        body = {"model": MODEL, "messages": USER, "streamproxy": {"approvals": "client"}}
        result = await post_stream(client, body)
    assert result.finish_reasons == ["tool_calls"]
    [call] = result.tool_call_deltas
    assert str(call["id"]).startswith("spw2.")


async def test_chat_approval_shows_a_request_in_the_extension_when_asked() -> None:
    upstream = ScriptedUpstream([tool_round(WRITE_ROUND)])
    async with proxy_client(upstream, tools=TOOLS) as client:
        body = {"model": MODEL, "messages": USER, "streamproxy": {"tool_progress": True}}
        result = await post_stream(client, body)
    extensions = [item["streamproxy"] for item in result.chunks if "streamproxy" in item]
    [request] = [item["approval_request"] for item in extensions if "approval_request" in item]
    assert request["name"] == "write_note"
    assert json.loads(request["arguments"]) == {"title": "t", "text": "hello"}
    statuses = [item["tool_progress"]["status"] for item in extensions if "tool_progress" in item]
    assert statuses == ["awaiting_approval"]


# ------------------------------------------------------------------------------ client mode

CLIENT_MODE = config(approvals="client")


def _history(call: dict[str, object], *verdicts: str) -> list[dict[str, object]]:
    return [
        *USER,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        *({"role": "tool", "tool_call_id": call["id"], "content": verdict} for verdict in verdicts),
    ]


async def _handed_call(client: httpx.AsyncClient, **headers: str) -> dict[str, object]:
    result = await post_stream(client, {"model": MODEL, "messages": USER}, headers=headers)
    assert result.finish_reasons == ["tool_calls"]
    [call] = result.tool_call_deltas
    return {"id": call["id"], "type": "function", "function": call["function"]}


async def test_client_approval_runs_the_exact_call_once() -> None:
    upstream = ScriptedUpstream([tool_round(WRITE_ROUND), content_round("Saved.")])
    async with proxy_client(upstream, tools=TOOLS, config=CLIENT_MODE) as client:
        call = await _handed_call(client)
        assert runs == []
        assert str(call["id"]).startswith("spw2.") and str(call["id"]).endswith(".call_w")
        result = await post_stream(client, {"model": MODEL, "messages": _history(call, APPROVED)})
    assert result.content == "Saved."
    assert runs == [{"title": "t", "text": "hello"}]
    sent = upstream.bodies[1]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == "call_w"  # the upstream sees its own id
    assert sent[2] == {"role": "tool", "tool_call_id": "call_w", "content": "saved t"}


async def test_arguments_sent_back_re_serialised_still_approve() -> None:
    upstream = ScriptedUpstream([tool_round(WRITE_ROUND), content_round("Saved.")])
    async with proxy_client(upstream, tools=TOOLS, config=CLIENT_MODE) as client:
        call = await _handed_call(client)
        compact = json.dumps({"text": "hello", "title": "t"}, separators=(",", ":"))
        call = dict(call, function={"name": "write_note", "arguments": compact})
        await post_stream(client, {"model": MODEL, "messages": _history(call, APPROVED)})
    assert runs == [{"title": "t", "text": "hello"}]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"title": "t", "text": "rm -rf"}', "differ from the ones approved"),
        ('{"title": "t", "text": "hello", "text": "rm -rf"}', "unique keys"),
    ],
    ids=["other-arguments", "duplicate-keys"],
)
async def test_changed_arguments_never_run(arguments: str, expected: str) -> None:
    upstream = ScriptedUpstream([tool_round(WRITE_ROUND), content_round("Not done.")])
    async with proxy_client(upstream, tools=TOOLS, config=CLIENT_MODE) as client:
        call = await _handed_call(client)
        call = dict(call, function={"name": "write_note", "arguments": arguments})
        await post_stream(client, {"model": MODEL, "messages": _history(call, APPROVED)})
    assert runs == []
    content = upstream.bodies[1]["messages"][2]["content"]
    assert content.startswith("error: the call was not run") and expected in content


async def test_a_made_up_id_is_a_forgery_and_an_old_one_expired(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="streamproxy.audit")
    arguments = '{"title": "a", "text": "b"}'
    made_up = {
        "id": "spw2.9999999999.AAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA.call_z",
        "type": "function",
        "function": {"name": "write_note", "arguments": arguments},
    }
    upstream = ScriptedUpstream([content_round("No."), content_round("No.")])
    secret = b"s" * 32
    expired_id = ApprovalSigner(secret, ttl=-10).sign("call_e", "write_note", arguments, client="")
    expired = dict(made_up, id=expired_id)
    async with proxy_client(
        upstream, tools=TOOLS, config=config(approvals="client", approval_secret=secret)
    ) as client:
        await post_stream(client, {"model": MODEL, "messages": _history(made_up, APPROVED)})
        await post_stream(client, {"model": MODEL, "messages": _history(expired, APPROVED)})
    assert runs == []
    assert "not issued by this proxy" in upstream.bodies[0]["messages"][2]["content"]
    assert "expired" in upstream.bodies[1]["messages"][2]["content"]
    outcomes = [r.getMessage().split("outcome=")[1].split()[0] for r in caplog.records]
    assert outcomes == ["forged", "expired"]


async def test_a_declined_call_tells_the_model_why() -> None:
    upstream = ScriptedUpstream([tool_round(WRITE_ROUND), content_round("OK, not saved.")])
    async with proxy_client(upstream, tools=TOOLS, config=CLIENT_MODE) as client:
        call = await _handed_call(client)
        verdict = json.dumps({"approved": False, "reason": "not now"})
        await post_stream(client, {"model": MODEL, "messages": _history(call, verdict)})
    assert runs == []
    assert upstream.bodies[1]["messages"][2]["content"] == (
        "The user declined this write_note call; it was not run. The user said: not now"
    )


async def test_approvals_are_bound_to_the_client_key() -> None:
    keys = frozenset({"alice-key", "bob-key"})
    upstream = ScriptedUpstream([tool_round(WRITE_ROUND), content_round("No.")])
    async with proxy_client(
        upstream, tools=TOOLS, config=config(approvals="client", client_keys=keys)
    ) as client:
        call = await _handed_call(client, Authorization="Bearer alice-key")
        await post_stream(
            client,
            {"model": MODEL, "messages": _history(call, APPROVED)},
            headers={"Authorization": "Bearer bob-key"},
        )
    assert runs == []


# ------------------------------------------------------------------------------ exactly once


async def test_the_same_approval_three_times_in_one_request_runs_once() -> None:
    upstream = ScriptedUpstream([tool_round(WRITE_ROUND), content_round("Saved.")])
    async with proxy_client(upstream, tools=TOOLS, config=CLIENT_MODE) as client:
        call = await _handed_call(client)
        history = _history(call, APPROVED, APPROVED, APPROVED)
        await post_stream(client, {"model": MODEL, "messages": history})
    assert len(runs) == 1
    tool_messages = [m for m in upstream.bodies[1]["messages"] if m["role"] == "tool"]
    assert tool_messages == [{"role": "tool", "tool_call_id": "call_w", "content": "saved t"}]


async def test_concurrent_identical_approvals_run_once() -> None:
    upstream = ScriptedUpstream(
        [tool_round(WRITE_ROUND)] + [content_round("Saved.") for _ in range(5)]
    )
    async with proxy_client(upstream, tools=TOOLS, config=CLIENT_MODE) as client:
        call = await _handed_call(client)
        body = {"model": MODEL, "messages": _history(call, APPROVED)}
        await asyncio.gather(*(post_stream(client, body) for _ in range(5)))
    assert len(runs) == 1


async def test_an_approval_replayed_after_other_clients_traffic_runs_once() -> None:
    keys = frozenset({"alice-key", "bob-key"})
    rounds = [tool_round(WRITE_ROUND), content_round("Saved.")]
    rounds += [tool_round(WRITE_ROUND) for _ in range(1100)]
    rounds += [content_round("Saved again?")]
    upstream = ScriptedUpstream(rounds)
    alice = {"Authorization": "Bearer alice-key"}
    bob = {"Authorization": "Bearer bob-key"}
    async with proxy_client(
        upstream, tools=TOOLS, config=config(approvals="client", client_keys=keys)
    ) as client:
        call = await _handed_call(client, **alice)
        body = {"model": MODEL, "messages": _history(call, APPROVED)}
        await post_stream(client, body, headers=alice)
        for _ in range(1100):  # another client's hand-offs fill the store
            await _handed_call(client, **bob)
        await post_stream(client, body, headers=alice)
    assert len(runs) == 1
    assert upstream.bodies[-1]["messages"][2]["content"] == "saved t"


async def test_a_new_call_that_reuses_an_upstream_id_is_a_new_approval() -> None:
    second_round = [("call_w", "write_note", '{"title": "u", "text": "again"}')]
    upstream = ScriptedUpstream(
        [
            tool_round(WRITE_ROUND),
            content_round("Saved."),
            tool_round(second_round),
            content_round("Saved too."),
        ]
    )
    async with proxy_client(upstream, tools=TOOLS, config=CLIENT_MODE) as client:
        first = await _handed_call(client)
        await post_stream(client, {"model": MODEL, "messages": _history(first, APPROVED)})
        second = await _handed_call(client)
        assert second["id"] != first["id"]
        await post_stream(client, {"model": MODEL, "messages": _history(second, APPROVED)})
    assert runs == [{"title": "t", "text": "hello"}, {"title": "u", "text": "again"}]


# ------------------------------------------------------------------------------ store down


def _unreachable_store() -> Config:
    from tests.services import free_port

    return config(state_url=f"redis://127.0.0.1:{free_port()}/0")


async def test_plain_chat_and_tool_loops_keep_working_when_the_store_is_down() -> None:
    upstream = ScriptedUpstream(
        [
            content_round("Hi there."),
            tool_round([("call_c", "count_words", '{"text": "a b"}')]),
            content_round("Two."),
        ]
    )
    async with proxy_client(upstream, tools=TOOLS, config=_unreachable_store()) as client:
        history = [*USER, {"role": "assistant", "content": "Earlier."}, *USER]
        plain = await post_stream(client, {"model": MODEL, "messages": history})
        loop = await post_stream(client, {"model": MODEL, "messages": USER})
    assert plain.content == "Hi there." and plain.is_done
    assert loop.content == "Two." and loop.is_done and loop.errors == []
    assert runs == [{"count": "a b"}]


async def test_an_approval_call_is_refused_with_the_reason_when_the_store_is_down() -> None:
    upstream = ScriptedUpstream([tool_round(WRITE_ROUND), content_round("Could not save.")])
    async with proxy_client(upstream, tools=TOOLS, config=_unreachable_store()) as client:
        result = await post_stream(client, {"model": MODEL, "messages": USER})
    assert runs == []
    assert result.content == "Could not save."
    told = upstream.bodies[1]["messages"][2]["content"]
    assert "approvals are unavailable" in told and "not run" in told


async def test_an_approval_answer_fails_clearly_when_the_store_is_down() -> None:
    upstream = ScriptedUpstream([tool_round(WRITE_ROUND), content_round("never")])
    async with proxy_client(upstream, tools=TOOLS, config=CLIENT_MODE) as client:
        call = await _handed_call(client)
    async with proxy_client(upstream, tools=TOOLS, config=_unreachable_store()) as client:
        response = await client.post(
            "/v1/chat/completions", json={"model": MODEL, "messages": _history(call, APPROVED)}
        )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "state_unavailable"
    assert runs == []
    assert len(upstream.requests) == 1  # nothing was sent upstream for the failed approval


async def test_a_hand_off_fails_with_a_clear_error_when_the_store_is_down() -> None:
    show = {"type": "function", "function": {"name": "show", "parameters": {"type": "object"}}}
    upstream = ScriptedUpstream(
        [tool_round([("call_c", "count_words", '{"text": "a"}'), ("call_s", "show", "{}")])]
    )
    async with proxy_client(upstream, tools=TOOLS, config=_unreachable_store()) as client:
        result = await post_stream(client, {"model": MODEL, "messages": USER, "tools": [show]})
    [error] = result.errors
    assert error["error"]["code"] == "state_unavailable"  # type: ignore[index]
    assert not result.is_done


async def test_a_settled_approval_shows_its_run_first_in_the_stream() -> None:
    upstream = ScriptedUpstream([tool_round(WRITE_ROUND), content_round("Saved.")])
    async with proxy_client(upstream, tools=TOOLS) as client:
        body = {"model": MODEL, "messages": USER, "streamproxy": {"tool_progress": True}}
        asked = await post_stream(client, body)
        [request] = [
            item["streamproxy"]["approval_request"]
            for item in asked.chunks
            if "approval_request" in item.get("streamproxy", {})
        ]
        assert request["call_id"] == "call_w"  # as in the call's tool_progress
        history = [
            *USER,
            {"role": "assistant", "content": asked.content},
            {"role": "user", "content": "yes"},
        ]
        result = await post_stream(client, {**body, "messages": history})
    progress = [
        item["streamproxy"]["tool_progress"]
        for item in result.chunks
        if "tool_progress" in item.get("streamproxy", {})
    ]
    assert [(p["id"], p["status"]) for p in progress] == [("call_w", "started"), ("call_w", "ok")]
    assert "duration_ms" in progress[1]
    assert result.content == "Saved."


@pytest.mark.parametrize("mode", ["chat", "client"])
async def test_the_audit_log_follows_an_approval(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="streamproxy.audit")
    upstream = ScriptedUpstream([tool_round(WRITE_ROUND), content_round("Saved.")])
    async with proxy_client(upstream, tools=TOOLS, config=config(approvals=mode)) as client:
        asked = await post_stream(client, {"model": MODEL, "messages": USER})
        if mode == "chat":
            history = [
                *USER,
                {"role": "assistant", "content": asked.content},
                {"role": "user", "content": "yes"},
            ]
        else:
            [delta] = asked.tool_call_deltas
            call = {"id": delta["id"], "type": "function", "function": delta["function"]}
            history = _history(call, APPROVED)
        await post_stream(client, {"model": MODEL, "messages": history})
    lines = [r.getMessage() for r in caplog.records if r.name == "streamproxy.audit"]
    outcomes = [line.split("outcome=")[1].split()[0] for line in lines]
    assert outcomes == ["awaiting_approval", "approved", "ok"]
    assert all("tool=write_note" in line and "request_id=req_" in line for line in lines)
    assert len({line.split("request_id=")[1].split()[0] for line in lines}) == 2  # two requests


async def test_after_a_chat_approval_the_next_turn_s_history_answers_every_call() -> None:
    upstream = ScriptedUpstream(
        [tool_round(WRITE_ROUND), content_round("Saved."), content_round("You are welcome.")]
    )
    async with proxy_client(upstream, tools=TOOLS) as client:
        question = await _ask_in_chat(client)
        history = [
            *USER,
            {"role": "assistant", "content": question},
            {"role": "user", "content": "yes"},
        ]
        answer = await post_stream(client, {"model": MODEL, "messages": history})
        later = [
            *history,
            {"role": "assistant", "content": answer.content},
            {"role": "user", "content": "Thanks!"},
        ]
        await post_stream(client, {"model": MODEL, "messages": later})
    sent = upstream.bodies[2]["messages"]
    calls = [c["id"] for m in sent if m["role"] == "assistant" for c in m.get("tool_calls") or []]
    results = [m["tool_call_id"] for m in sent if m["role"] == "tool"]
    assert calls == ["call_w"] and results == ["call_w"]  # the call, and its result
    assert sent[2] == {"role": "tool", "tool_call_id": "call_w", "content": "saved t"}
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "user", "assistant", "user"]
    assert len(runs) == 1
