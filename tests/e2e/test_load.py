"""Load: 500 concurrent streams through one real proxy process, then through ``--workers 4``.

The proxy (``streamproxy serve``) stands in front of a real ``streamproxy replay`` process
(instant timing, ``--match messages``) serving the mix of ``benchmarks/bench_load.py``: plain
content streams and tool loops whose second round is matched on the exact tool result. Every
client stream is compared with the cassette (content and reasoning exactly, each piece unique,
so a lost, repeated or reordered piece fails; one ``finish_reason``; ``[DONE]``; no leaked
server call; tool progress ``started`` then ``ok`` once), every tool result the proxy sent
upstream is checked against the tool's function of the arguments, and the tool's own log shows
it ran exactly once per tool loop.

With ``--workers 4`` every worker shares the state store (the default SQLite file): the
approval secret, the stash and the approval ledger. An approval verifies and runs once on
whichever worker receives it, and the follow-up of a mixed turn (a server call and an approval
in one turn) is the full conversation wherever it lands. The last test checks exactly that.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from benchmarks.bench_load import (
    MODEL,
    TOOLS_MODULE,
    Conversation,
    Mix,
    build_mix,
    check,
    lookup_result,
    run_load,
    sse_chunk,
)
from streamproxy.cassette.format import (
    Chunk,
    Interaction,
    RecordedRequest,
    RecordedResponse,
    dump,
)
from tests.e2e.test_proxy_e2e import Process

pytestmark = [pytest.mark.e2e, pytest.mark.load]

STREAMS = 500
MIXED_TURNS = 24
# Batches of mixed turns to try until one approval lands on another worker than the one that
# handed its call out (a worker's event loop may accept a whole burst of connections at once).
MIXED_BATCHES = 8


# ---------------------------------------------------------------- a mixed turn with a write call


def mixed_turn(index: int) -> tuple[dict[str, object], list[Interaction]]:
    """Round 1 calls the read-only ``lookup`` and the write tool ``save_note`` in one turn.

    The follow-up (the client approves the write) is recorded twice: as the worker that handed
    the call out rebuilds it from its stash (every call and result, with the reasoning) and as
    any other worker rebuilds it from the client's own messages (the write call only).
    """
    key, n = f"m{index}", 1000 + index
    text = f"note {index} " * 3
    lookup_call = {
        "id": f"call_l{index}",
        "type": "function",
        "function": {"name": "lookup", "arguments": orjson.dumps({"key": key, "n": n}).decode()},
    }
    write_call = {
        "id": f"call_w{index}",
        "type": "function",
        "function": {
            "name": "save_note",
            "arguments": orjson.dumps({"key": key, "text": text}).decode(),
        },
    }
    reasoning, opening = f"Look {key} up and save it.", f"Saving {key}."
    ident = f"chatcmpl-mixed-{index}"
    first = [
        sse_chunk(
            {"role": "assistant", "content": "", "reasoning_content": reasoning}, ident=ident
        ),
        sse_chunk({"content": opening}, ident=ident),
        sse_chunk({"tool_calls": [{"index": 0, **lookup_call}]}, ident=ident),
        sse_chunk({"tool_calls": [{"index": 1, **write_call}]}, ident=ident),
        sse_chunk({"content": ""}, "tool_calls", ident=ident),
        b"data: [DONE]\n\n",
    ]
    final = f"Saved {key}."
    second = [
        sse_chunk({"role": "assistant", "content": final}, ident=ident + "-2"),
        sse_chunk({"content": ""}, "stop", ident=ident + "-2"),
        b"data: [DONE]\n\n",
    ]
    user = {"role": "user", "content": f"mixed-{index:04d}"}
    written = {
        "role": "tool",
        "tool_call_id": write_call["id"],
        "content": f"saved {key}: {len(text)} characters",
    }
    full = [
        user,
        {
            "role": "assistant",
            "content": opening,
            "reasoning_content": reasoning,
            "tool_calls": [lookup_call, write_call],
        },
        {"role": "tool", "tool_call_id": lookup_call["id"], "content": lookup_result(key, n)},
        written,
    ]
    fallback = [
        user,
        {"role": "assistant", "content": opening, "tool_calls": [write_call]},
        written,
    ]

    def interaction(messages: list[dict[str, object]], frames: list[bytes]) -> Interaction:
        return Interaction(
            request=RecordedRequest(
                method="POST",
                path="/chat/completions",
                body={"model": MODEL, "messages": messages},
            ),
            response=RecordedResponse(
                status=200,
                headers={"content-type": "text/event-stream"},
                chunks=[Chunk(0.0, frame) for frame in frames],
            ),
        )

    expected = {"key": key, "user": user, "opening": opening, "final": final, "text": text}
    return expected, [
        interaction([user], first),
        interaction(full, second),
        interaction(fallback, second),
    ]


# ---------------------------------------------------------------- processes


class Setup:
    def __init__(self, directory: Path, mix: Mix, mixed: list[dict[str, object]]) -> None:
        self.directory = directory
        self.mix = mix
        self.mixed = mixed
        self.replay: Process | None = None
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.env.pop("DEEPSEEK_API_KEY", None)

    def start_proxy(self, log: str, *extra: str) -> Process:
        assert self.replay is not None
        env = {**self.env, "LOAD_TOOL_LOG": str(self.directory / log)}
        arguments = ["serve", "--upstream", f"{self.replay.url}/v1"]
        arguments += ["--tools", "load_tools:TOOLS", "--port", "0", "--log-level", "warning"]
        return Process([*arguments, *extra], cwd=self.directory, env=env)

    def tool_log(self, log: str) -> list[tuple[int, str, str]]:
        path = self.directory / log
        if not path.exists():
            return []
        lines = [line.split() for line in path.read_text().splitlines()]
        return [(int(pid), name, key) for pid, name, key in lines]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp("load")
    mix = build_mix(plain=40, tool=40)
    mixed: list[dict[str, object]] = []
    for index in range(MIXED_BATCHES * MIXED_TURNS):
        expected, interactions = mixed_turn(index)
        mixed.append(expected)
        mix.interactions.extend(interactions)
    dump(mix.cassette(), directory / "load.cassette.json")
    (directory / "load_tools.py").write_text(textwrap.dedent(TOOLS_MODULE))
    state = Setup(directory, mix, mixed)
    replay_arguments = ["replay", "load.cassette.json", "--port", "0", "--match", "messages"]
    state.replay = Process(replay_arguments, cwd=directory, env=state.env)
    try:
        yield state
    finally:
        state.replay.terminate()


def received(replay_url: str) -> list[dict[str, object]]:
    """The request bodies the replay server got since the last call (then forgotten)."""
    bodies = [item["body"] for item in httpx.get(f"{replay_url}/_streamproxy/requests").json()]
    httpx.delete(f"{replay_url}/_streamproxy/requests")
    return bodies


def workers_of(pid: int) -> list[int]:
    """The worker processes of a ``serve --workers`` parent (not multiprocessing's helpers)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(int(child))
    return found


def is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


# ---------------------------------------------------------------- checks


def assert_valid_conversations(bodies: list[dict[str, object]]) -> None:
    """Every tool call sent upstream is answered once, right after it; no orphan results."""
    for body in bodies:
        messages = body["messages"]
        assert isinstance(messages, list)
        open_calls: list[str] = []
        for message in messages:
            if message["role"] == "tool":
                assert message["tool_call_id"] in open_calls, body
                open_calls.remove(message["tool_call_id"])
                continue
            assert not open_calls, f"unanswered calls {open_calls} in {body}"
            if message["role"] == "assistant":
                assert "content" in message
                open_calls = [call["id"] for call in message.get("tool_calls") or []]
        assert not open_calls


def assert_tool_results(bodies: list[dict[str, object]]) -> int:
    """Every ``lookup`` result sent upstream is the tool's function of its arguments."""
    checked = 0
    for body in bodies:
        calls = {
            call["id"]: call["function"]
            for message in body["messages"]
            if message["role"] == "assistant"
            for call in message.get("tool_calls") or []
        }
        for message in body["messages"]:
            if message["role"] != "tool" or calls[message["tool_call_id"]]["name"] != "lookup":
                continue
            arguments = orjson.loads(calls[message["tool_call_id"]]["arguments"])
            assert message["content"] == lookup_result(arguments["key"], arguments["n"])
            checked += 1
    return checked


def run_mix(setup: Setup, proxy: Process, log: str) -> Counter[str]:
    """500 streams at once through ``proxy``, every one checked; returns tool runs per key."""
    assert setup.replay is not None
    received(setup.replay.url)
    conversations = setup.mix.alternating(STREAMS)
    results, _, _ = asyncio.run(run_load(proxy.url, conversations, progress=True))
    problems = {
        result.conversation.name: found
        for result in results
        if (found := check(result, through_proxy=True))
    }
    assert not problems, f"{len(problems)} streams wrong, e.g. {list(problems.items())[:3]}"
    tool_loops = [item for item in conversations if item.kind == "tool"]
    assert len(tool_loops) == STREAMS // 2
    assert all(result.progress for result in results if result.conversation.kind == "tool")
    bodies = received(setup.replay.url)
    # one upstream request per plain stream, two per tool loop, each a valid conversation
    assert len(bodies) == STREAMS + len(tool_loops)
    assert_valid_conversations(bodies)
    assert assert_tool_results(bodies) == len(tool_loops)
    # the tool ran exactly once per tool loop, with the arguments of that loop
    runs = Counter(
        key for _, name, key in setup.tool_log(log) if name == "lookup" and key.startswith("k")
    )
    wanted = Counter(_key(item) for item in tool_loops)
    assert runs == wanted
    return runs


def _key(conversation: Conversation) -> str:
    """The ``lookup`` key of a tool loop (``tool-0007`` calls it with ``k7``)."""
    return f"k{int(conversation.name.removeprefix('tool-'))}"


# ---------------------------------------------------------------- tests


def diagnostics(proxy: Process) -> dict[str, object]:
    return httpx.get(f"{proxy.url}/_streamproxy/diagnostics").json()


def test_500_concurrent_streams_through_one_proxy_process(setup: Setup) -> None:
    proxy = setup.start_proxy("single.log", "--diagnostics")
    try:
        idle = diagnostics(proxy)
        run_mix(setup, proxy, "single.log")
        # afterwards nothing is left open or running, and the proxy still serves
        deadline = time.monotonic() + 10
        while (after := diagnostics(proxy)) != idle and time.monotonic() < deadline:
            time.sleep(0.1)
        assert after == idle
        assert idle["open_upstream_responses"] == idle["running_tools"] == 0
        assert httpx.get(f"{proxy.url}/healthz").json() == {"status": "ok"}
    finally:
        log = proxy.terminate()
    assert "Traceback" not in log


@pytest.fixture(scope="module")
def workers(setup: Setup) -> Iterator[Process]:
    proxy = setup.start_proxy("workers.log", "--workers", "4", "--approvals", "client")
    try:
        yield proxy
    finally:
        pids = workers_of(proxy.process.pid)
        log = proxy.terminate()
        deadline = time.monotonic() + 10
        while any(map(is_running, pids)) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in pids:  # the workers went with the parent
            assert not is_running(pid), f"worker {pid} outlived the parent\n{log}"
        assert "Traceback" not in log


def test_500_concurrent_streams_through_four_workers(setup: Setup, workers: Process) -> None:
    deadline = time.monotonic() + 20
    while len(workers_of(workers.process.pid)) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(workers_of(workers.process.pid)) == 4
    run_mix(setup, workers, "workers.log")
    pids = {pid for pid, _, _ in setup.tool_log("workers.log")}
    # Every stream checked, whichever workers took them. The kernel decides the spread: under
    # uvloop one worker may accept a whole burst of connections, so it is not asserted here;
    # the mixed-turn test below requires approvals that really cross workers.
    assert pids <= set(workers_of(workers.process.pid))


async def _mixed_turns(url: str, batch: list[dict[str, object]]) -> list[tuple[str, str]]:
    """Hand each write call out, then approve it on a fresh connection; (content, final)."""
    limits = httpx.Limits(max_connections=len(batch) + 4)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        firsts = await asyncio.gather(
            *(
                client.post(
                    f"{url}/v1/chat/completions",
                    json={"model": MODEL, "messages": [expected["user"]]},
                )
                for expected in batch
            )
        )
    approvals = []
    for expected, response in zip(batch, firsts, strict=True):
        assert response.status_code == 200, response.text
        [choice] = response.json()["choices"]
        assert choice["finish_reason"] == "tool_calls"
        message = choice["message"]
        assert message["content"] == expected["opening"]
        [call] = message["tool_calls"]  # the write call only: the lookup ran on the server
        assert call["function"]["name"] == "save_note"
        assert call["id"].startswith("spw2.")
        messages = [
            expected["user"],
            {"role": "assistant", "content": message["content"], "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": '{"approved": true}'},
        ]
        approvals.append({"model": MODEL, "messages": messages})
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:  # new connections
        seconds = await asyncio.gather(
            *(client.post(f"{url}/v1/chat/completions", json=body) for body in approvals)
        )
    finals = []
    for expected, response in zip(batch, seconds, strict=True):
        assert response.status_code == 200, response.text
        [choice] = response.json()["choices"]
        assert choice["finish_reason"] == "stop"
        finals.append((str(expected["key"]), choice["message"]["content"]))
    return finals


def test_write_approvals_and_mixed_turns_across_four_workers(
    setup: Setup, workers: Process
) -> None:
    """What docs/proxy.md promises for ``--workers`` > 1, checked turn by turn.

    - an approval verifies and the write runs once, on whichever worker receives it;
    - the follow-up of a mixed turn sent upstream is the full conversation (the lookup call, its
      result and the reasoning), whichever worker answers: the stash is shared.
    """
    assert setup.replay is not None
    crossed = same = 0
    for start in range(0, len(setup.mixed), MIXED_TURNS):
        batch = setup.mixed[start : start + MIXED_TURNS]
        received(setup.replay.url)
        finals = asyncio.run(_mixed_turns(workers.url, batch))
        assert finals == [(item["key"], item["final"]) for item in batch]
        bodies = received(setup.replay.url)
        assert_valid_conversations(bodies)
        runs = setup.tool_log("workers.log")
        for expected in batch:
            key = expected["key"]
            [handed_out] = [pid for pid, name, run in runs if (name, run) == ("lookup", key)]
            [approved] = [pid for pid, name, run in runs if (name, run) == ("save_note", key)]
            [follow_up] = [
                body
                for body in bodies
                if body["messages"][0] == expected["user"] and len(body["messages"]) > 1
            ]
            names = [call["function"]["name"] for call in follow_up["messages"][1]["tool_calls"]]
            if handed_out == approved:
                same += 1
            else:
                crossed += 1
            assert names == ["lookup", "save_note"]  # restored from the shared stash
            assert follow_up["messages"][1]["reasoning_content"]
            # upstream sees its own ids, never the signed one
            assert follow_up["messages"][-1]["tool_call_id"] == f"call_w{key[1:]}"
        if crossed and same:
            break
    assert crossed, "no approval reached another worker than the one that handed it out"
