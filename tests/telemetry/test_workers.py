"""``serve --workers 2``: GET /metrics sums every worker's requests (prometheus multiprocess)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

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
MESSAGES = [{"role": "user", "content": "count me"}]
REQUESTS = 12


def _frame(delta: dict[str, object], finish: str | None = None, usage: object = None) -> bytes:
    chunk = {
        "id": "workers",
        "object": "chat.completion.chunk",
        "created": 1780000000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        "usage": usage,
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _cassette(path: Path) -> None:
    usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    frames = [
        _frame({"role": "assistant", "content": "counted"}),
        _frame({"content": ""}, finish="stop", usage=usage),
        b"data: [DONE]\n\n",
    ]
    interaction = Interaction(
        request=RecordedRequest(
            method="POST", path="/chat/completions", body={"model": MODEL, "messages": MESSAGES}
        ),
        response=RecordedResponse(
            status=200,
            headers={"content-type": "text/event-stream"},
            chunks=[Chunk(0.0, frame) for frame in frames],
        ),
    )
    dump(Cassette(source="tests/telemetry/test_workers.py", interactions=[interaction]), path)


def _value(text: str, name: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def test_two_workers_count_every_request_once(tmp_path: Path) -> None:
    _cassette(tmp_path / "workers.cassette.json")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(temporary)}
    env.pop("DEEPSEEK_API_KEY", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    replay = Process(
        ["replay", "workers.cassette.json", "--port", "0", "--match", "messages"],
        cwd=tmp_path,
        env=env,
    )
    with replay:
        proxy = Process(
            ["serve", "--upstream", f"{replay.url}/v1", "--port", "0", "--workers", "2"],
            cwd=tmp_path,
            env=env,
        )
        with proxy:
            body = {"model": MODEL, "messages": MESSAGES, "stream": True}
            for _ in range(REQUESTS):  # a new connection each: the workers share the socket
                response = httpx.post(f"{proxy.url}/v1/chat/completions", json=body, timeout=30)
                assert response.status_code == 200 and b"counted" in response.content
            assert [path.name for path in temporary.iterdir()]  # the metrics directory
            scrapes = [httpx.get(f"{proxy.url}/metrics", timeout=30).text for _ in range(6)]
        log = proxy.log()
    for text in scrapes:  # whichever worker answers, it reports both workers' counts
        assert _value(text, "gen_ai_server_request_duration_seconds_count") == REQUESTS, log
        assert _value(text, "gen_ai_client_inference_usage_input_tokens_total") == 7 * REQUESTS
        assert _value(text, "streamproxy_active_streams") == 0
    assert list(temporary.iterdir()) == []  # the parent removed the metrics directory
