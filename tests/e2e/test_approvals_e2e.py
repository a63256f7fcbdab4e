"""Tool modes and approvals end to end: real ``streamproxy serve`` processes in front of a real
``streamproxy replay``, real clients (the ``openai`` SDK, and plain HTTP for a chat UI that sends
only text), and the state store shared the ways users run it: ``--workers 2`` on one SQLite
file, two processes on one real ``redis-server``, and a restart between question and answer.

The upstream cassette is matched on the conversation's shape (``--match turn``): a first request
gets round 1 (the model calls a tool), a request whose tail is an assistant call and a ``tool``
result gets round 2 (the answer). The tool module writes one line per run (``pid tool args``) to
a log beside it, which is how each test counts runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.cassettes import answer, tool_call, two_rounds
from tests.e2e.processes import Process

pytestmark = pytest.mark.e2e

MODEL = "deepseek-v4-flash"
TOOLS_MODULE = '''
import os

from streamproxy.proxy.tools import tool


def _log(line: str) -> None:
    with open(os.environ["E2E_TOOL_LOG"], "a") as log:
        log.write(f"{os.getpid()} {line}\\n")


def count_words(text: str) -> int:
    """Count the words of a text."""
    _log(f"count_words {text}")
    return len(text.split())


@tool(needs_approval=True)
def save_note(title: str, text: str) -> str:
    """Save a note."""
    _log(f"save_note {title}")
    return f"saved {title}"


TOOLS = [count_words, save_note]
'''
SAVE_ARGUMENTS = '{"title": "groceries", "text": "milk, eggs"}'


def write_cassette(path: Path, tool: str, arguments: str, text: str) -> None:
    """Round 1 calls ``tool``; round 2 (once its result came back) answers ``text``."""
    two_rounds(path, tool_call(tool, arguments), answer(text), source=__name__)


@dataclass
class Setup:
    directory: Path
    env: dict[str, str]
    save_upstream: str
    count_upstream: str

    def serve(self, upstream: str, *extra: str) -> Process:
        arguments = ["serve", "--upstream", f"{upstream}/v1", "--tools", "e2e_tools:TOOLS"]
        return Process([*arguments, "--port", "0", *extra], cwd=self.directory, env=self.env)

    def runs(self, tool: str) -> list[int]:
        """The pids that ran ``tool``, one per run."""
        log = self.directory / "tool_runs.log"
        lines = log.read_text().splitlines() if log.exists() else []
        return [int(line.split()[0]) for line in lines if line.split()[1] == tool]

    def clear_runs(self) -> None:
        (self.directory / "tool_runs.log").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp("approvals_e2e")
    (directory / "e2e_tools.py").write_text(textwrap.dedent(TOOLS_MODULE))
    write_cassette(directory / "save.json", "save_note", SAVE_ARGUMENTS, "Saved |your note.")
    write_cassette(
        directory / "count.json", "count_words", '{"text": "one two three"}', "Three |words."
    )
    env = {
        **{key: value for key, value in os.environ.items() if key != "DEEPSEEK_API_KEY"},
        "E2E_TOOL_LOG": str(directory / "tool_runs.log"),
        "PYTHONUNBUFFERED": "1",
    }
    replays = [
        Process(
            ["replay", str(directory / name), "--port", "0", "--match", "turn"],
            cwd=directory,
            env=env,
        )
        for name in ("save.json", "count.json")
    ]
    try:
        yield Setup(directory, env, replays[0].url, replays[1].url)
    finally:
        for replay in replays:
            replay.terminate()


@pytest.fixture(autouse=True)
def fresh_runs(setup: Setup) -> None:
    setup.clear_runs()


_CLIENTS: list[openai.OpenAI] = []


def sdk(url: str) -> openai.OpenAI:
    """An SDK client of ``url``, closed after the test (no socket left to the collector)."""
    made = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    _CLIENTS.append(made)
    return made


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


def chat(url: str, messages: list[dict[str, object]], **body: object) -> str:
    """A chat UI's request: text messages in, the streamed content out."""
    with httpx.stream(
        "POST",
        f"{url}/v1/chat/completions",
        json={"model": MODEL, "messages": messages, "stream": True, **body},
        timeout=30,
    ) as response:
        assert response.status_code == 200, response.read()
        text = []
        for line in response.iter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:]).get("choices", []):
                    text.append(choice["delta"].get("content") or "")
    return "".join(text)


USER = {"role": "user", "content": "Save my groceries."}


def test_a_plain_function_runs_inside_a_tool_loop_driven_by_the_sdk(setup: Setup) -> None:
    with setup.serve(setup.count_upstream) as proxy:
        stream = sdk(proxy.url).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Count."}], stream=True
        )
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Three words."
    assert all(not c.choices or not c.choices[0].delta.tool_calls for c in chunks)
    assert len(setup.runs("count_words")) == 1


def test_chat_approval_with_a_client_that_sends_only_text(setup: Setup) -> None:
    with setup.serve(setup.save_upstream) as proxy:
        question = chat(proxy.url, [USER])
        assert "save_note" in question and "groceries" in question
        assert setup.runs("save_note") == []
        asked = [USER, {"role": "assistant", "content": question}]
        # no declines it: nothing runs, and the answer streams on
        assert chat(proxy.url, [*asked, {"role": "user", "content": "no"}]) == "Saved your note."
        assert setup.runs("save_note") == []
        # ask again (a new question: a new approval), yes runs it once
        question = chat(proxy.url, [USER])
        approved = [
            USER,
            {"role": "assistant", "content": question},
            {"role": "user", "content": "yes"},
        ]
        assert chat(proxy.url, approved) == "Saved your note."
        assert len(setup.runs("save_note")) == 1
        # the same answer sent again (a retry, a reload) does not run it twice
        assert chat(proxy.url, approved) == "Saved your note."
        assert len(setup.runs("save_note")) == 1


def _handed_call(url: str) -> dict[str, object]:
    completion = sdk(url).chat.completions.create(model=MODEL, messages=[USER])  # type: ignore[list-item]
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.type == "function"
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.function.name, "arguments": call.function.arguments},
    }


def _approval(call: dict[str, object], *, compact: bool = True) -> list[dict[str, object]]:
    function = dict(call["function"])  # type: ignore[call-overload]
    if compact:  # what the AI SDK and Open WebUI send back: the same value, other bytes
        function["arguments"] = json.dumps(json.loads(function["arguments"]), separators=(",", ":"))
    return [
        USER,
        {"role": "assistant", "content": None, "tool_calls": [dict(call, function=function)]},
        {"role": "tool", "tool_call_id": call["id"], "content": '{"approved": true}'},
    ]


def test_sdk_approval_with_compactly_re_serialised_arguments(setup: Setup) -> None:
    with setup.serve(setup.save_upstream, "--approvals", "client") as proxy:
        call = _handed_call(proxy.url)
        assert setup.runs("save_note") == []
        messages = _approval(call)
        completion = sdk(proxy.url).chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
        assert completion.choices[0].message.content == "Saved your note."
        # the same approval three times in one request, then five at once: still one run
        tripled = [*messages, messages[-1], messages[-1]]
        sdk(proxy.url).chat.completions.create(model=MODEL, messages=tripled)  # type: ignore[arg-type]

        async def concurrently() -> list[int]:
            async with httpx.AsyncClient(timeout=30) as client:
                body = {"model": MODEL, "messages": messages}
                responses = await asyncio.gather(
                    *(client.post(f"{proxy.url}/v1/chat/completions", json=body) for _ in range(5))
                )
            return [response.status_code for response in responses]

        assert asyncio.run(concurrently()) == [200] * 5
    assert len(setup.runs("save_note")) == 1


def test_an_approval_sent_to_both_of_two_workers_runs_once(setup: Setup) -> None:
    with setup.serve(setup.save_upstream, "--approvals", "client", "--workers", "2") as proxy:
        call = _handed_call(proxy.url)
        messages = _approval(call)

        async def on_fresh_connections() -> list[str]:
            async def one() -> str:
                async with httpx.AsyncClient(timeout=30) as client:  # a new connection each
                    response = await client.post(
                        f"{proxy.url}/v1/chat/completions",
                        json={"model": MODEL, "messages": messages},
                    )
                    assert response.status_code == 200, response.text
                    return str(response.json()["choices"][0]["message"]["content"])

            return await asyncio.gather(*(one() for _ in range(12)))

        assert asyncio.run(on_fresh_connections()) == ["Saved your note."] * 12
    assert len(setup.runs("save_note")) == 1


def test_two_serve_processes_share_one_redis_server(setup: Setup, redis_server: str) -> None:
    state = f"{redis_server}/3"
    with (
        setup.serve(setup.save_upstream, "--state", state, "--approvals", "client") as first,
        setup.serve(setup.save_upstream, "--state", state) as second,
    ):
        call = _handed_call(first.url)  # signed on the first host...
        messages = _approval(call)
        for url in (second.url, first.url, second.url):  # ...approved on both
            completion = sdk(url).chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
            assert completion.choices[0].message.content == "Saved your note."
        assert len(setup.runs("save_note")) == 1
        # a chat approval asked by one host and answered on the other
        question = chat(first.url, [USER], streamproxy={"approvals": "chat"})
        answer = [
            USER,
            {"role": "assistant", "content": question},
            {"role": "user", "content": "ok"},
        ]
        assert chat(second.url, answer) == "Saved your note."
        assert len(setup.runs("save_note")) == 2


def test_an_approval_survives_a_restart_with_the_sqlite_store(setup: Setup) -> None:
    state = f"sqlite://{setup.directory / 'restart.db'}"
    with setup.serve(setup.save_upstream, "--state", state) as before:
        question = chat(before.url, [USER])
    answer = [USER, {"role": "assistant", "content": question}, {"role": "user", "content": "y"}]
    with setup.serve(setup.save_upstream, "--state", state) as after:
        assert chat(after.url, answer) == "Saved your note."
        assert chat(after.url, answer) == "Saved your note."
    assert len(setup.runs("save_note")) == 1


def test_serve_logs_each_tool_with_its_mode(setup: Setup) -> None:
    with setup.serve(setup.save_upstream) as proxy:
        assert httpx.get(f"{proxy.url}/healthz").status_code == 200
        log = proxy.log()
    assert "tool count_words (python): auto, runs when its round ends cleanly" in log
    assert "tool save_note (python): needs_approval" in log
