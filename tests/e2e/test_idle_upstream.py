"""An upstream that sends only keep-alive comments, through real processes.

``streamproxy replay --timing recorded`` plays a recording whose answer starts, then sends
``: keep-alive`` every 50 ms for 30 s (bytes keep flowing, no event completes). The proxy's
``--upstream-timeout`` (the longest the upstream may stay silent; comments are silence) ends
the round: the client gets the content so far and one error frame, and the upstream response is
closed by the proxy long before the comments would end.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
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
CLIENT_TIMEOUT = 15.0
IDLE_TIMEOUT = 0.5
COMMENT_EVERY_MS = 50.0
COMMENTS_FOR_MS = 30_000.0


def frame(delta: dict[str, object], finish: str | None = None) -> bytes:
    chunk = {
        "id": "idle",
        "object": "chat.completion.chunk",
        "created": 1780000000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def write_cassette(path: Path) -> None:
    chunks = [Chunk(0.0, frame({"role": "assistant", "content": ""}))]
    chunks.append(Chunk(1.0, frame({"content": "Thinking"})))
    offset = 1.0
    while offset < COMMENTS_FOR_MS:
        offset += COMMENT_EVERY_MS
        chunks.append(Chunk(offset, b": keep-alive\n\n"))
    chunks.append(Chunk(offset + 1, frame({"content": ""}, "stop")))
    chunks.append(Chunk(offset + 2, b"data: [DONE]\n\n"))
    response = RecordedResponse(
        status=200, headers={"content-type": "text/event-stream"}, chunks=chunks
    )
    request = RecordedRequest(method="POST", path="/unscripted", body={"unscripted": True})
    interaction = Interaction(request=request, response=response)
    dump(Cassette(source="tests/e2e/test_idle_upstream.py", interactions=[interaction]), path)


def test_only_comments_past_the_idle_bound_end_with_one_error_frame(tmp_path: Path) -> None:
    cassette = tmp_path / "idle.cassette.json"
    write_cassette(cassette)
    env = {**os.environ, "IDLE_UPSTREAM_KEY": "sk-idle-upstream", "PYTHONUNBUFFERED": "1"}
    replay_arguments = ["replay", str(cassette), "--port", "0", "--timing", "recorded"]
    with Process(replay_arguments, cwd=tmp_path, env=env) as replay:
        proxy_arguments = [
            "serve",
            "--upstream",
            f"{replay.url}/v1",
            "--api-key-env",
            "IDLE_UPSTREAM_KEY",
            "--port",
            "0",
            "--diagnostics",
            "--upstream-timeout",
            str(IDLE_TIMEOUT),
            "--log-level",
            "warning",
        ]
        with (
            Process(proxy_arguments, cwd=tmp_path, env=env) as proxy,
            httpx.Client(timeout=CLIENT_TIMEOUT) as http,
        ):
            plan = http.post(f"{replay.url}/_streamproxy/plan", json=[{"interaction": 0}])
            assert plan.status_code == 200
            body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "?"}]}
            response = http.post(f"{proxy.url}/v1/chat/completions", json=body)
            assert response.status_code == 200
            events = [event for event in response.content.split(b"\n\n") if event]
            data = [orjson.loads(event[6:]) for event in events if event.startswith(b"data: ")]
            errors = [item["error"] for item in data if "error" in item]
            content = "".join(
                choice["delta"].get("content") or ""
                for item in data
                if "choices" in item
                for choice in item["choices"]
            )
            assert content == "Thinking"
            [error] = errors
            assert "idle timeout" in error["message"]
            assert error["code"] == "upstream_error"
            assert events[-1].startswith(b'data: {"error"')  # the last thing sent
            assert b"[DONE]" not in response.content
            # the proxy closed the upstream response (the comments would go on for 30 s)
            assert wait_for_responses(http, replay.url) == {
                "open": 0,
                "finished": 0,
                "dropped": 0,
                "aborted": 1,
            }
            assert wait_for_idle(http, proxy.url) == (0, 0)


def wait_for_responses(http: httpx.Client, replay_url: str) -> dict[str, int]:
    deadline = time.monotonic() + 5.0
    while True:
        counts: dict[str, int] = http.get(f"{replay_url}/_streamproxy/responses").json()
        if counts["open"] == 0 or time.monotonic() > deadline:
            return counts
        time.sleep(0.02)


def wait_for_idle(http: httpx.Client, proxy_url: str) -> tuple[int, int]:
    """The proxy's active requests and open upstream responses, once both are 0 (or 5 s)."""
    deadline = time.monotonic() + 5.0
    while True:
        state = http.get(f"{proxy_url}/_streamproxy/diagnostics").json()
        counts = (state["active_requests"], state["open_upstream_responses"])
        if counts == (0, 0) or time.monotonic() > deadline:
            return counts
        time.sleep(0.02)
