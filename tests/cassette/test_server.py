"""The replay server and the recording pass-through, in process (ASGITransport, no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx2
import openai
import orjson
import pytest

from streamproxy.cassette import Faults, RecordTransport, Replayer, create_replay_app, load
from streamproxy.cassette.match import match_turn
from streamproxy.cassette.passthrough import create_record_app
from streamproxy.cassette.server import ReplayConnectionDropped

from .conftest import RECORDINGS

DEMO = RECORDINGS / "demo-tool-loop.cassette.json"


def _client(replayer: Replayer) -> httpx2.AsyncClient:
    app = create_replay_app(replayer)
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://replay")


def test_the_server_streams_the_recorded_bytes_and_records_requests() -> None:
    cassette = load(DEMO)
    first = cassette.interactions[0]
    assert first.request is not None

    async def scenario() -> tuple[bytes, list[object]]:
        async with _client(Replayer(cassette)) as client:
            response = await client.post("/v1/chat/completions", json=first.request.body)
            seen = (await client.get("/_streamproxy/requests")).json()
            assert (await client.delete("/_streamproxy/requests")).status_code == 204
            assert (await client.get("/_streamproxy/requests")).json() == []
            return response.content, seen

    content, seen = asyncio.run(scenario())
    assert content == first.response.body
    assert seen == [
        {"method": "POST", "path": "/v1/chat/completions", "query": "", "body": first.request.body}
    ]


def test_a_mismatch_gets_a_400_openai_error_naming_the_nearest() -> None:
    async def scenario() -> httpx2.Response:
        async with _client(Replayer(DEMO)) as client:
            return await client.post("/chat/completions", json={"model": "x", "messages": []})

    response = asyncio.run(scenario())
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "cassette_error"
    assert error["message"].startswith("no recorded interaction matches POST /chat/completions;")
    assert "nearest is interaction" in error["message"]


def test_models_lists_the_cassette_models() -> None:
    async def scenario() -> object:
        async with _client(Replayer(DEMO)) as client:
            return (await client.get("/v1/models")).json()

    assert asyncio.run(scenario()) == {
        "object": "list",
        "data": [
            {"id": "deepseek-v4-flash", "object": "model", "created": 0, "owned_by": "replay"}
        ],
    }


def test_the_openai_sdk_runs_the_demo_tool_loop_against_the_server_with_match_turn() -> None:
    """Any question gets round 1; sending the call back with a tool result gets round 2."""

    async def scenario() -> tuple[str, list[object]]:
        replayer = Replayer(DEMO, matcher=match_turn)
        client = openai.AsyncOpenAI(
            api_key="sk-test",
            base_url="http://replay/v1",
            max_retries=0,
            http_client=_client(replayer),
        )
        messages: list[dict[str, object]] = [{"role": "user", "content": "Anything at all?"}]
        first = await client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
        message = first.choices[0].message
        assert message.tool_calls is not None
        messages.append(message.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "18"})
        stream = await client.chat.completions.create(model="m", messages=messages, stream=True)  # type: ignore[arg-type]
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        return text, [request.body for request in replayer.received]

    text, bodies = asyncio.run(scenario())
    assert text == "It's currently **18 °C** and partly cloudy in Paris."
    sent_back = bodies[1]["messages"][1]  # type: ignore[index]
    assert sent_back["reasoning_content"].startswith("The user asks about the weather in Paris")


def test_drop_at_aborts_the_response_mid_body() -> None:
    """In process the app's exception reaches the client; over a socket (tests/e2e) the
    connection closes without the end of the chunked body."""

    async def scenario() -> None:
        replayer = Replayer(DEMO, faults=Faults(drop_at=500), matcher=match_turn)
        async with _client(replayer) as client:
            await client.post("/chat/completions", json={"stream": True})

    with pytest.raises(ReplayConnectionDropped, match="dropped after 500 bytes"):
        asyncio.run(scenario())


KEY = "sk-upstream-9f8e7d6c5b4a3210"


def test_the_record_pass_through_forwards_the_key_and_records_it_redacted(tmp_path) -> None:
    seen: list[httpx2.Request] = []
    body = b'data: {"choices":[{"index":0,"delta":{"content":"ok"}}]}\n\ndata: [DONE]\n\n'

    def upstream(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)

        async def pieces() -> AsyncIterator[bytes]:
            yield body[:20]
            yield body[20:]

        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=pieces())

    path = tmp_path / "rec.cassette.json"
    recorder = RecordTransport(httpx2.MockTransport(upstream), path=path)
    app = create_record_app("https://api.deepseek.com/beta", recorder)

    async def scenario() -> httpx2.Response:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://rec") as client:
            return await client.post(
                "/chat/completions?x=1",
                json={"model": "deepseek-chat", "stream": True},
                headers={"authorization": f"Bearer {KEY}"},
            )

    response = asyncio.run(scenario())
    assert response.content == body
    assert str(seen[0].url) == "https://api.deepseek.com/beta/chat/completions?x=1"
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert seen[0].headers["accept-encoding"] == "identity"
    text = path.read_text()
    assert KEY not in text
    (interaction,) = load(path).interactions
    assert interaction.response.body == body
    assert [c.data for c in interaction.response.chunks] == [body[:20], body[20:]]
    assert interaction.request is not None
    assert orjson.loads(orjson.dumps(interaction.request.body)) == {
        "model": "deepseek-chat",
        "stream": True,
    }


def test_the_record_pass_through_answers_502_when_the_upstream_is_down(tmp_path) -> None:
    def upstream(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused")

    app = create_record_app("https://down", RecordTransport(httpx2.MockTransport(upstream)))

    async def scenario() -> httpx2.Response:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://rec") as client:
            return await client.post("/chat/completions", json={})

    response = asyncio.run(scenario())
    assert response.status_code == 502
    assert "cannot reach the upstream https://down" in response.json()["error"]["message"]
