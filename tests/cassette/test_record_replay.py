"""Record through RecordTransport, replay through ReplayTransport: same bytes and events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx2
import openai
import orjson
import pytest

from streamproxy.cassette import (
    Cassette,
    RecordTransport,
    ReplayTransport,
    dumps,
    loads,
    replay_into,
)
from streamproxy.cassette import replay as replay_module
from streamproxy.core import ChatStream, ToolCallReady
from streamproxy.errors import CassetteError
from tests.helpers import of_type

KEY = "sk-live-0123456789abcdefSECRET"


def _upstream(chunks: list[bytes], seen: list[httpx2.Request]) -> httpx2.MockTransport:
    """A fake upstream that streams ``chunks`` as separate reads, sync or async."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        headers = {"content-type": "text/event-stream", "x-request-id": "req-1"}

        def sync_body() -> Iterator[bytes]:
            yield from chunks

        async def async_body() -> AsyncIterator[bytes]:
            for data in chunks:
                yield data

        is_async = request.extensions.get("test_async", False)
        return httpx2.Response(
            200, headers=headers, content=async_body() if is_async else sync_body()
        )

    return httpx2.MockTransport(handler)


def _events(chunks: list[bytes]) -> list[object]:
    stream = ChatStream()
    events = []
    for data in chunks:
        events += stream.receive_data(data)
    return events + stream.receive_eof()


REQUEST_BODY = {
    "model": "deepseek-v4-flash",
    "messages": [{"role": "user", "content": "hi"}],
    "stream": True,
}


def test_record_then_replay_gives_the_same_bytes_boundaries_and_events(thinking_cassette) -> None:
    original = [chunk.data for chunk in thinking_cassette.interactions[0].response.chunks]
    seen: list[httpx2.Request] = []
    recorder = RecordTransport(_upstream(original, seen))
    with (
        httpx2.Client(transport=recorder, base_url="https://api.deepseek.com") as client,
        client.stream(
            "POST",
            "/chat/completions",
            json=REQUEST_BODY,
            headers={"authorization": f"Bearer {KEY}"},
        ) as response,
    ):
        passed_through = list(response.iter_raw())
    assert passed_through == original
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"

    recorded = loads(dumps(recorder.cassette))  # through the file format, as a user would
    (interaction,) = recorded.interactions
    assert [chunk.data for chunk in interaction.response.chunks] == original
    offsets = [chunk.offset_ms for chunk in interaction.response.chunks]
    assert offsets == sorted(offsets) and offsets[0] >= 0
    assert interaction.request is not None
    assert interaction.request.body == REQUEST_BODY
    assert interaction.request.headers["authorization"] == "<redacted>"
    assert interaction.response.headers["x-request-id"] == "req-1"

    with (
        httpx2.Client(transport=ReplayTransport(recorded), base_url="http://replay") as client,
        client.stream("POST", "/v1/chat/completions", json=REQUEST_BODY) as response,
    ):
        replayed = list(response.iter_raw())
        assert response.headers["content-type"] == "text/event-stream"
    assert replayed == original
    assert _events(replayed) == _events(original)
    assert replay_into(ChatStream(), recorded) == _events(original)


def test_async_record_then_replay_gives_the_same_bytes(thinking_cassette) -> None:
    original = [chunk.data for chunk in thinking_cassette.interactions[0].response.chunks]

    async def scenario() -> tuple[list[bytes], list[bytes], Cassette]:
        recorder = RecordTransport(_upstream(original, []))
        async with httpx2.AsyncClient(transport=recorder, base_url="https://x") as client:
            request = client.build_request("POST", "/chat/completions", json=REQUEST_BODY)
            request.extensions["test_async"] = True
            response = await client.send(request, stream=True)
            passed = [data async for data in response.aiter_raw()]
            await response.aclose()
        async with (
            httpx2.AsyncClient(transport=ReplayTransport(recorder.cassette)) as client,
            client.stream("POST", "https://x/chat/completions", json=REQUEST_BODY) as reply,
        ):
            replayed = [data async for data in reply.aiter_raw()]
        return passed, replayed, recorder.cassette

    passed, replayed, cassette = asyncio.run(scenario())
    assert passed == replayed == original
    assert len(cassette.interactions) == 1


def test_a_response_closed_early_is_recorded_as_far_as_it_got(thinking_cassette) -> None:
    original = [chunk.data for chunk in thinking_cassette.interactions[0].response.chunks]
    recorder = RecordTransport(_upstream(original, []))
    with (
        httpx2.Client(transport=recorder) as client,
        client.stream("POST", "https://x/chat/completions", json=REQUEST_BODY) as response,
    ):
        first = next(response.iter_raw())
    (interaction,) = recorder.cassette.interactions
    assert [chunk.data for chunk in interaction.response.chunks] == [first]


def test_record_transport_saves_the_file_after_each_interaction(tmp_path) -> None:
    path = tmp_path / "out.cassette.json"
    recorder = RecordTransport(_upstream([b"data: [DONE]\n\n"], []), path=path, source="test run")
    with httpx2.Client(transport=recorder) as client:
        client.post("https://x/chat/completions", json=REQUEST_BODY)
        assert len(loads(path.read_bytes()).interactions) == 1
        client.post("https://x/chat/completions", json={**REQUEST_BODY, "n": 2})
    saved = loads(path.read_bytes())
    assert saved.source == "test run"
    assert [item.request.body["messages"] for item in saved.interactions if item.request] == [
        REQUEST_BODY["messages"]
    ] * 2


def test_record_transport_refuses_the_wrong_kind_of_client() -> None:
    recorder = RecordTransport(httpx2.AsyncHTTPTransport())
    with httpx2.Client(transport=recorder) as client, pytest.raises(TypeError, match="async"):
        client.get("http://127.0.0.1:9/")


def _openai(transport: ReplayTransport) -> openai.OpenAI:
    return openai.OpenAI(
        api_key="sk-unused",
        base_url="https://api.deepseek.com",
        http_client=httpx2.Client(transport=transport),
        max_retries=0,
    )


def test_openai_sdk_streams_from_the_replay_transport(thinking_cassette) -> None:
    client = _openai(ReplayTransport(thinking_cassette))
    stream = client.chat.completions.create(
        model="deepseek-v4-flash", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    reasoning, arguments, names, finish = "", "", [], None
    for chunk in stream:
        for choice in chunk.choices:
            reasoning += (choice.delta.model_extra or {}).get("reasoning_content") or ""
            for call in choice.delta.tool_calls or []:
                if call.function and call.function.name:
                    names.append(call.function.name)
                arguments += (call.function.arguments or "") if call.function else ""
            finish = choice.finish_reason or finish
    assert reasoning.startswith("The user wants the weather in Berlin.")
    assert "°C" in reasoning  # the chunk boundary inside "°" was reassembled
    assert names == ["get_weather"]
    assert orjson.loads(arguments) == {"city": "Berlin", "unit": "c"}
    assert finish == "tool_calls"


def test_openai_sdk_non_streaming_gets_the_assembled_completion(thinking_cassette) -> None:
    client = _openai(ReplayTransport(thinking_cassette))
    completion = client.chat.completions.create(
        model="deepseek-v4-flash", messages=[{"role": "user", "content": "hi"}]
    )
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls is not None
    assert message.tool_calls[0].function.name == "get_weather"
    assert orjson.loads(message.tool_calls[0].function.arguments) == {"city": "Berlin", "unit": "c"}
    assert (message.model_extra or {}).get("reasoning_content", "").startswith("The user wants")
    assert completion.usage is not None and completion.usage.total_tokens == 470


def test_async_openai_sdk_streams_from_the_same_transport_class(thinking_cassette) -> None:
    async def scenario() -> list[ToolCallReady]:
        client = openai.AsyncOpenAI(
            api_key="sk-unused",
            http_client=httpx2.AsyncClient(transport=ReplayTransport(thinking_cassette)),
            max_retries=0,
        )
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        assembler = ChatStream()
        events = []
        async for chunk in stream:
            events += assembler.receive_chunk(chunk.model_dump(exclude_unset=True))
        events += assembler.receive_eof()
        await client.close()
        return of_type(events, ToolCallReady)

    (ready,) = asyncio.run(scenario())
    assert ready.parsed == {"city": "Berlin", "unit": "c"}


def test_a_mismatch_raises_cassette_error_naming_the_nearest(thinking_cassette) -> None:
    two = Cassette(interactions=thinking_cassette.interactions * 2)
    with (
        httpx2.Client(transport=ReplayTransport(two)) as client,
        pytest.raises(CassetteError, match=r"nearest is interaction 0: body.messages\[0\].content"),
    ):
        client.post(
            "https://api.deepseek.com/chat/completions",
            json={
                **thinking_cassette.interactions[0].request.body,
                "messages": [{"role": "user", "content": "bye"}],
            },
        )


class _FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.mark.parametrize(("timing", "factor"), [("recorded", 1.0), (0.5, 0.5), ("instant", 0.0)])
def test_timing_waits_for_the_scaled_recorded_offsets(
    thinking_cassette, monkeypatch: pytest.MonkeyPatch, timing: object, factor: float
) -> None:
    clock = _FakeClock()
    monkeypatch.setattr(replay_module.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(replay_module.time, "sleep", clock.sleep)
    offsets = [chunk.offset_ms for chunk in thinking_cassette.interactions[0].response.chunks]
    transport = ReplayTransport(thinking_cassette, timing=timing)  # type: ignore[arg-type]
    with (
        httpx2.Client(transport=transport) as client,
        client.stream("POST", "https://x/chat/completions", json={"stream": True}) as response,
    ):
        for _ in response.iter_raw():
            pass
    if factor == 0:
        assert clock.sleeps == []
    else:
        assert clock.sleeps[0] == pytest.approx(offsets[0] * factor / 1000)
        assert sum(clock.sleeps) == pytest.approx(offsets[-1] * factor / 1000)


@pytest.mark.parametrize("timing", ["fast", -1.0, True])
def test_a_bad_timing_is_refused(thinking_cassette, timing: object) -> None:
    with pytest.raises(ValueError, match="timing must be"):
        ReplayTransport(thinking_cassette, timing=timing)  # type: ignore[arg-type]
