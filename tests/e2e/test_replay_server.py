"""Real `streamproxy replay` / `streamproxy record` processes on 127.0.0.1 with real clients."""

from __future__ import annotations

import re
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import openai
import pytest

from streamproxy.cassette import load

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "recordings" / "demo-tool-loop.cassette.json"
READY_TIMEOUT = 20.0
LISTENING = re.compile(r"listening on (http://\S+)")


@contextmanager
def running(*args: str) -> Iterator[str]:
    """Start ``python -m streamproxy ARGS --port 0``; yield its URL; always terminate it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "streamproxy", *args, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert process.stdout is not None
        line = ""
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + READY_TIMEOUT
            while not line and time.monotonic() < deadline and process.poll() is None:
                if selector.select(timeout=0.1):
                    line = process.stdout.readline()
        match = LISTENING.search(line)
        if match is None:
            process.kill()
            _, errors = process.communicate(timeout=5)
            pytest.fail(f"streamproxy {args[0]} did not start: {line!r} {errors[-2000:]}")
        yield match.group(1)
    finally:
        process.terminate()
        try:
            process.communicate(timeout=10)  # reaps it and closes the pipes
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def test_openai_sdk_runs_the_demo_tool_loop_against_a_replay_process() -> None:
    with running("replay", str(DEMO), "--match", "turn") as url:
        client = openai.OpenAI(api_key="sk-test", base_url=f"{url}/v1", max_retries=0)
        messages: list[dict[str, object]] = [{"role": "user", "content": "Weather, please?"}]
        first = client.chat.completions.create(model="deepseek-v4-flash", messages=messages)  # type: ignore[arg-type]
        message = first.choices[0].message
        assert message.tool_calls is not None
        assert message.tool_calls[0].function.name == "get_weather"
        messages.append(message.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "18"})
        stream = client.chat.completions.create(
            model="deepseek-v4-flash",
            messages=messages,  # type: ignore[arg-type]
            stream=True,
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        assert text == "It's currently **18 °C** and partly cloudy in Paris."

        received = httpx2.get(f"{url}/_streamproxy/requests").json()
        assert [r["path"] for r in received] == ["/v1/chat/completions"] * 2
        assert received[1]["body"]["messages"][1]["reasoning_content"].startswith("The user asks")
        models = client.models.list()
        assert [model.id for model in models.data] == ["deepseek-v4-flash"]


def test_a_mismatch_is_a_400_the_sdk_reports_at_once() -> None:
    with running("replay", str(DEMO)) as url:
        client = openai.OpenAI(api_key="sk-test", base_url=f"{url}/v1", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="nearest is interaction 0"):
            client.chat.completions.create(
                model="deepseek-v4-flash", messages=[{"role": "user", "content": "unrecorded"}]
            )


def test_drop_at_closes_the_connection_mid_body() -> None:
    body = load(DEMO).interactions[0].response.body
    with running("replay", str(DEMO), "--match", "turn", "--drop-at", "700") as url:
        received = b""
        with (
            httpx2.Client() as client,
            client.stream("POST", f"{url}/v1/chat/completions", json={"stream": True}) as reply,
            pytest.raises(httpx2.RemoteProtocolError),
        ):
            for data in reply.iter_raw():
                received += data
        assert received == body[:700]


def test_record_process_records_a_replay_process_without_the_key(tmp_path) -> None:
    key = "sk-e2e-0f1e2d3c4b5a69788796"
    out = tmp_path / "recorded.cassette.json"
    source = load(DEMO).interactions[0]
    assert source.request is not None
    with (
        running("replay", str(DEMO), "--match", "turn") as upstream,
        running("record", "--upstream", upstream, "--out", str(out)) as recorder,
    ):
        client = openai.OpenAI(api_key=key, base_url=f"{recorder}/v1", max_retries=0)
        stream = client.chat.completions.create(
            model="deepseek-v4-flash", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        names = [
            call.function.name
            for chunk in stream
            for call in (chunk.choices[0].delta.tool_calls or [] if chunk.choices else [])
            if call.function and call.function.name
        ]
        assert names == ["get_weather"]
        deadline = time.monotonic() + 5
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert key not in out.read_text()
    (interaction,) = load(out).interactions
    assert interaction.response.body == source.response.body
    assert interaction.request is not None
    assert interaction.request.headers["authorization"] == "<redacted>"
    assert interaction.request.body["messages"] == [{"role": "user", "content": "hi"}]


def test_a_replay_process_refuses_a_huge_event_plan_and_keeps_serving() -> None:
    with running("replay", str(DEMO), "--match", "turn") as url:
        refused = httpx2.post(f"{url}/_streamproxy/plan", json=[{"huge_event": 400 * 2**20}])
        assert refused.status_code == 400
        assert "huge_event must be in [128, 33554432]" in refused.json()["error"]["message"]
        assert httpx2.get(f"{url}/_streamproxy/plan").json() == []
        reply = httpx2.post(f"{url}/v1/chat/completions", json={"stream": True})
        assert reply.status_code == 200
        assert reply.content == load(DEMO).interactions[0].response.body
