"""End to end: a real ``streamproxy serve --mcp FILE`` in front of a real ``streamproxy replay``,
driven by the ``openai`` SDK. The scripted model calls the MCP server's ``weather`` tool; the
proxy runs it on the stdio MCP server process and sends the result back upstream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.cassettes import answer, tool_call, two_rounds
from tests.e2e.processes import Process
from tests.mcp.conftest import DEMO_SERVER

pytestmark = pytest.mark.e2e

MODEL = "deepseek-v4-flash"
ANSWER = "It is 21.5 °C in Oslo."


def write_cassette(path: Path) -> None:
    """Round 1 calls the MCP server's ``weather``; round 2 answers from its result."""
    first = tool_call("weather", '{"city": "Oslo"}', call_id="call_mcp_0")
    two_rounds(path, first, answer(ANSWER), source=__name__, step_ms=10.0)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Process]]:
    """(proxy URL, replay URL, the proxy process)."""
    directory = tmp_path_factory.mktemp("mcp_e2e")
    cassette = directory / "mcp-tool.cassette.json"
    write_cassette(cassette)
    config = directory / "mcp.json"
    config.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "demo": {"command": sys.executable, "args": [str(DEMO_SERVER)], "timeout": 10}
                }
            }
        )
    )
    env = {**os.environ, "E2E_UPSTREAM_KEY": "sk-mcp-e2e", "PYTHONUNBUFFERED": "1"}
    replay = Process(
        ["replay", str(cassette), "--port", "0", "--match", "turn"], cwd=directory, env=env
    )
    try:
        serve = Process(
            [
                "serve",
                "--upstream",
                f"{replay.url}/v1",
                "--api-key-env",
                "E2E_UPSTREAM_KEY",
                "--mcp",
                str(config),
                "--port",
                "0",
            ],
            cwd=directory,
            env=env,
        )
        try:
            yield serve.url, replay.url, serve
        finally:
            serve.terminate()
    finally:
        replay.terminate()


def test_the_models_call_runs_on_the_mcp_server(proxy: tuple[str, str, Process]) -> None:
    proxy_url, replay_url, serve = proxy
    client = openai.OpenAI(base_url=f"{proxy_url}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        stream=True,
    )
    content = []
    finish_reasons = []
    for chunk in stream:
        for choice in chunk.choices:
            assert not choice.delta.tool_calls  # the server-side call never reaches the client
            if choice.delta.content:
                content.append(choice.delta.content)
            if choice.finish_reason is not None:
                finish_reasons.append(choice.finish_reason)
    assert "".join(content) == ANSWER
    assert finish_reasons == ["stop"]
    first, second = [
        item["body"] for item in httpx.get(f"{replay_url}/_streamproxy/requests").json()
    ]
    offered = {tool["function"]["name"]: tool["function"] for tool in first["tools"]}
    assert {"echo", "weather", "add", "delete_file"} <= set(offered)
    assert offered["weather"]["description"] == "Current weather in a city."
    assistant, result = second["messages"][1], second["messages"][2]
    assert assistant["tool_calls"][0]["function"]["name"] == "weather"
    assert result["tool_call_id"] == "call_mcp_0"
    assert json.loads(result["content"]) == {"city": "Oslo", "temperature_c": 21.5}
    log = serve.log()
    assert "tool weather (mcp:demo): read_only" in log
    assert "MCP server demo: connected" in log


def test_a_bad_file_stops_serve_with_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"x": {"command": "a", "url": "http://h/"}}}))
    finished = subprocess.run(
        [
            *(sys.executable, "-m", "streamproxy", "serve"),
            *("--upstream", "http://127.0.0.1:9/v1", "--mcp", str(config), "--port", "0"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert finished.returncode == 2
    assert f"--mcp {config}: server 'x': has both 'command' and 'url'" in finished.stderr
    assert "listening" not in finished.stdout
