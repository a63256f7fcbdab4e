"""The offline demo's range: a plain answer, a server tool loop, a client tool call, an error;
every answer says it is a recording (``streamproxy.demo``), through the real app in process."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from streamproxy.config import Config
from streamproxy.demo import DEMO_UPSTREAM_URL, demo_tools, demo_transport
from streamproxy.proxy import create_app
from tests.proxy.helpers import parse_sse

pytestmark = pytest.mark.anyio

RECORDED = "a recorded answer, not a model"
SHOW_MAP = {"type": "function", "function": {"name": "show_map", "parameters": {"type": "object"}}}


def demo_client() -> httpx.AsyncClient:
    config = dataclasses.replace(
        Config(upstream_url=DEMO_UPSTREAM_URL, is_offline_demo=True), state_url="memory://"
    )
    app = create_app(config, tools=demo_tools(), transport=demo_transport())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://demo.test")


async def ask(text: str, **body: object) -> tuple[str, list[str], list[dict[str, object]]]:
    async with demo_client() as client:
        response = await client.post(
            "/v1/chat/completions",
            json={
                "model": "any-model",
                "stream": True,
                "messages": [{"role": "user", "content": text}],
                "streamproxy": {"tool_progress": True},
                **body,
            },
        )
    result = parse_sse(response.content)
    return result.content, result.comments, result.errors


async def test_a_plain_question_gets_the_demo_s_own_explanation() -> None:
    content, comments, _ = await ask("Hello")
    assert content.startswith("This is streamproxy's offline demo: " + RECORDED)
    assert not any("tool" in comment for comment in comments)


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("What's the weather in Paris?", "It is sunny in Paris right now, at 24 °C."),
        ("and in tokyo", "It is cloudy in Tokyo right now, at 21 °C."),
    ],
)
async def test_the_weather_runs_the_server_tool_mid_stream(question: str, expected: str) -> None:
    content, comments, _ = await ask(question)
    assert content.startswith(expected) and RECORDED in content
    assert "tool get_weather started" in comments


async def test_a_request_with_tools_gets_a_client_tool_call() -> None:
    async with demo_client() as client:
        response = await client.post(
            "/v1/chat/completions",
            json={
                "model": "my-model",
                "messages": [{"role": "user", "content": "Show Paris"}],
                "tools": [SHOW_MAP],
            },
        )
        choice = response.json()["choices"][0]
        assert response.json()["model"] == "my-model"  # model names pass through
        assert choice["finish_reason"] == "tool_calls"
        [call] = choice["message"]["tool_calls"]
        assert call["function"] == {"name": "show_map", "arguments": "{}"}
        answered = await client.post(
            "/v1/chat/completions",
            json={
                "model": "my-model",
                "tools": [SHOW_MAP],
                "messages": [
                    {"role": "user", "content": "Show Paris"},
                    choice["message"],
                    {"role": "tool", "tool_call_id": call["id"], "content": "shown"},
                ],
            },
        )
    text = answered.json()["choices"][0]["message"]["content"]
    assert text.startswith("Your show_map tool answered.") and RECORDED in text


async def test_asking_for_an_error_gets_one_mid_stream() -> None:
    content, _, errors = await ask("Show me an error please")
    assert content == "You asked for an error, so here is one: "
    [error] = errors
    assert "you asked for one" in str(error["error"]["message"])  # type: ignore[index]


async def test_the_demo_lists_its_model() -> None:
    async with demo_client() as client:
        listed = (await client.get("/v1/models")).json()
    assert [model["id"] for model in listed["data"]] == ["deepseek-v4-flash"]
