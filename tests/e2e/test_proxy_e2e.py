"""End to end: a real ``streamproxy serve`` in front of a real ``streamproxy replay``, on
127.0.0.1, with the official ``openai`` SDK as the client.

The replay cassette is a DeepSeek thinking-mode tool loop with recorded pacing: round 1 reasons
and calls ``get_weather``; round 2 (matched by the conversation's shape) reasons and answers in
ten slow pieces, with a long pause before the end, so a proxy that buffered would show it.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from streamproxy.cassette.format import (
    Cassette,
    Chunk,
    Interaction,
    RecordedRequest,
    RecordedResponse,
    dump,
)
from tests.e2e.processes import Process

pytestmark = pytest.mark.e2e

MODEL = "deepseek-v4-flash"
UPSTREAM_KEY = "sk-e2e-upstream-key-must-not-leak"
CLIENT_KEY = "client-e2e-key"
ANSWER = ["It ", "is ", "sunny ", "in ", "Paris, ", "24 ", "°C. ", "Enjoy ", "the ", "day!"]
# The answer's pieces come 30 ms apart, then the upstream pauses this long before finishing.
FINAL_PAUSE_MS = 800.0
TOOLS_MODULE = '''
from streamproxy.proxy.tools import tool


@tool(read_only=True, timeout=5)
def get_weather(city: str) -> dict:
    """Current weather in a city."""
    with open("tool_runs.log", "a") as log:
        log.write(city + "\\n")
    return {"city": city, "condition": "sunny", "temperature_c": 24}


TOOLS = [get_weather]
'''


def _payload(delta: dict[str, object], finish: str | None = None, usage: object = None) -> bytes:
    chunk = {
        "id": "e2e",
        "object": "chat.completion.chunk",
        "created": 1780000000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        "usage": usage,
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _usage(prompt: int, completion: int, hit: int, reasoning: int) -> dict[str, object]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": hit},
        "prompt_cache_hit_tokens": hit,
        "prompt_cache_miss_tokens": prompt - hit,
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def _response(pieces: list[tuple[float, bytes]]) -> RecordedResponse:
    return RecordedResponse(
        status=200,
        headers={"content-type": "text/event-stream"},
        chunks=[Chunk(offset, data) for offset, data in pieces],
    )


def write_cassette(path: Path) -> None:
    call_head = {
        "index": 0,
        "id": "call_00_e2e",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    first = _response(
        [
            (20.0, _payload({"role": "assistant", "content": "", "reasoning_content": ""})),
            (40.0, _payload({"reasoning_content": "The user wants the weather."})),
            (60.0, _payload({"tool_calls": [call_head]})),
            (
                80.0,
                _payload({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
            ),
            (90.0, _payload({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]})),
            (100.0, _payload({"content": ""}, "tool_calls", _usage(100, 20, 64, 9))),
            (101.0, b"data: [DONE]\n\n"),
        ]
    )
    answer = [(60.0 + 30.0 * i, _payload({"content": text})) for i, text in enumerate(ANSWER)]
    end = 60.0 + 30.0 * len(ANSWER) + FINAL_PAUSE_MS
    second = _response(
        [
            (20.0, _payload({"role": "assistant", "content": "", "reasoning_content": ""})),
            (40.0, _payload({"reasoning_content": "Sunny, 24 °C."})),
            *answer,
            (end, _payload({"content": ""}, "stop", _usage(150, 30, 100, 5))),
            (end + 1, b"data: [DONE]\n\n"),
        ]
    )
    user = {"role": "user", "content": "Weather in Paris?"}

    def request(messages: list[dict[str, object]]) -> RecordedRequest:
        return RecordedRequest(
            method="POST",
            path="/chat/completions",
            body={"model": MODEL, "messages": messages, "stream": True},
        )

    dump(
        Cassette(
            source="tests/e2e/test_proxy_e2e.py (synthetic)",
            interactions=[
                Interaction(request=request([user]), response=first),
                Interaction(
                    request=request([user, {"role": "assistant"}, {"role": "tool"}]),
                    response=second,
                ),
            ],
        ),
        path,
    )


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path, Process]]:
    """(proxy URL, replay URL, the proxy's directory, the proxy process)."""
    directory = tmp_path_factory.mktemp("proxy_e2e")
    cassette = directory / "tool-loop.cassette.json"
    write_cassette(cassette)
    (directory / "e2e_weather_tools.py").write_text(textwrap.dedent(TOOLS_MODULE))
    env = {
        **os.environ,
        "E2E_UPSTREAM_KEY": UPSTREAM_KEY,
        "E2E_CLIENT_KEYS": CLIENT_KEY,
        "PYTHONUNBUFFERED": "1",
    }
    replay = Process(
        [
            "replay",
            str(cassette),
            "--port",
            "0",
            "--timing",
            "recorded",
            "--match",
            "turn",
        ],
        cwd=directory,
        env=env,
    )
    try:
        proxy = Process(
            [
                "serve",
                "--upstream",
                f"{replay.url}/v1",
                "--api-key-env",
                "E2E_UPSTREAM_KEY",
                "--client-keys-env",
                "E2E_CLIENT_KEYS",
                "--tools",
                "e2e_weather_tools:TOOLS",
                "--port",
                "0",
            ],
            cwd=directory,
            env=env,
        )
        try:
            yield proxy.url, replay.url, directory, proxy
        finally:
            proxy.terminate()
    finally:
        replay.terminate()


def received(replay_url: str) -> list[dict[str, object]]:
    response = httpx.get(f"{replay_url}/_streamproxy/requests")
    bodies = [item["body"] for item in response.json()]
    httpx.delete(f"{replay_url}/_streamproxy/requests")
    return bodies


def client_for(proxy_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{proxy_url}/v1", api_key=CLIENT_KEY, max_retries=0)


def test_streaming_tool_loop_through_real_processes(
    servers: tuple[str, str, Path, Process],
) -> None:
    proxy_url, replay_url, directory, _ = servers
    received(replay_url)
    started = time.monotonic()
    stream = client_for(proxy_url).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"thinking": {"type": "enabled"}},
    )
    contents: list[tuple[float, str]] = []
    finish_reasons: list[str] = []
    usages = []
    reasoning: list[str] = []
    for chunk in stream:
        if chunk.usage is not None:
            usages.append(chunk.usage)
        for choice in chunk.choices:
            assert not choice.delta.tool_calls  # the server call never leaks
            if choice.delta.content:
                contents.append((time.monotonic() - started, choice.delta.content))
            extra = choice.delta.model_extra or {}
            if extra.get("reasoning_content"):
                reasoning.append(extra["reasoning_content"])
            if choice.finish_reason is not None:
                finish_reasons.append(choice.finish_reason)
    finished = time.monotonic() - started
    # content in order, and streamed: the first piece came long before the upstream's end
    assert "".join(text for _, text in contents) == "".join(ANSWER)
    assert contents[0][0] < finished - FINAL_PAUSE_MS / 1000 * 0.6
    assert finish_reasons == ["stop"]
    assert "The user wants the weather." in "".join(reasoning)
    # the tool ran in the proxy process, and the loop continued upstream
    assert (directory / "tool_runs.log").read_text().splitlines()[-1] == "Paris"
    first, second = received(replay_url)
    assert first["stream"] is True
    assert [tool["function"]["name"] for tool in first["tools"]] == ["get_weather"]
    assistant, tool_result = second["messages"][1], second["messages"][2]
    # thinking mode: the reasoning of the tool-calling turn goes back upstream
    assert assistant["reasoning_content"] == "The user wants the weather."
    assert assistant["content"] == ""
    assert assistant["tool_calls"][0]["id"] == "call_00_e2e"
    assert tool_result["tool_call_id"] == "call_00_e2e"
    assert json.loads(tool_result["content"])["temperature_c"] == 24
    # usage: both rounds summed, DeepSeek's cache and reasoning counts included
    [usage] = usages
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (250, 50, 300)
    extra = usage.model_extra or {}
    assert extra["prompt_cache_hit_tokens"] == 164
    assert extra["prompt_cache_miss_tokens"] == 86
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 14


def test_non_streaming_tool_loop_through_real_processes(
    servers: tuple[str, str, Path, Process],
) -> None:
    proxy_url, replay_url, _, _ = servers
    received(replay_url)
    completion = client_for(proxy_url).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}]
    )
    [choice] = completion.choices
    assert choice.finish_reason == "stop"
    assert choice.message.content == "".join(ANSWER)
    assert not choice.message.tool_calls
    assert completion.usage is not None and completion.usage.total_tokens == 300
    assert len(received(replay_url)) == 2


def test_wrong_client_key_and_models(servers: tuple[str, str, Path, Process]) -> None:
    proxy_url, _, _, _ = servers
    bad = openai.OpenAI(base_url=f"{proxy_url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    models = client_for(proxy_url).models.list()
    assert MODEL in [model.id for model in models.data]


def test_the_upstream_key_is_not_in_the_logs(servers: tuple[str, str, Path, Process]) -> None:
    proxy_url, _, _, proxy = servers
    assert httpx.get(f"{proxy_url}/healthz").json() == {"status": "ok"}
    log = proxy.log()
    assert "tool_call request_id=" in log  # the audit lines are there...
    assert UPSTREAM_KEY not in log  # ...the key is not


def test_offline_demo_is_the_default_without_key_or_upstream(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "DEEPSEEK_API_KEY"}
    process = Process(["serve", "--port", "0"], cwd=tmp_path, env=env)
    try:
        client = openai.OpenAI(base_url=f"{process.url}/v1", api_key="unused", max_retries=0)
        stream = client.chat.completions.create(
            model="deepseek-v4-flash",
            messages=[{"role": "user", "content": "What's the weather in Paris?"}],
            stream=True,
        )
        text = "".join(choice.delta.content or "" for chunk in stream for choice in chunk.choices)
    finally:
        log = process.terminate()
    assert "24 °C" in text
    first_log_line = log.splitlines()[0]
    assert "offline demo" in first_log_line
