"""The same RecordTransport and ReplayTransport work in httpx2 clients and in plain httpx ones."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from types import ModuleType

import httpx
import httpx2
import openai
import pytest

from streamproxy.cassette import Faults, RecordTransport, ReplayTransport, dumps
from streamproxy.cassette.http_libraries import LIBRARIES, library_of
from tests.cassette.conftest import sse_cassette

KEY = "sk-live-0123456789abcdefSECRET"
BODY = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)
REQUEST = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}

library_parameter = pytest.mark.parametrize("library", [httpx2, httpx], ids=["httpx2", "httpx"])


def test_both_libraries_are_served_when_httpx_is_installed() -> None:
    assert LIBRARIES[0] is httpx2
    assert LIBRARIES[1:] == (httpx,)
    assert library_of(httpx.Request("GET", "http://x")) is httpx
    assert library_of(httpx2.Request("GET", "http://x")) is httpx2
    with pytest.raises(TypeError, match="not an httpx2 or httpx request"):
        library_of(object())


@library_parameter
def test_replay_in_a_sync_client(library: ModuleType) -> None:
    transport = ReplayTransport(sse_cassette([BODY]))
    with library.Client(transport=transport) as client:
        response = client.post("http://replay/chat/completions", json=REQUEST)
        assert isinstance(response, library.Response)
        assert response.read() == BODY


@library_parameter
def test_replay_in_an_async_client(library: ModuleType) -> None:
    async def main() -> bytes:
        transport = ReplayTransport(sse_cassette([BODY]))
        async with (
            library.AsyncClient(transport=transport) as client,
            client.stream("POST", "http://replay/chat/completions", json=REQUEST) as response,
        ):
            return b"".join([piece async for piece in response.aiter_raw()])

    assert asyncio.run(main()) == BODY


@library_parameter
def test_a_dropped_connection_is_the_clients_own_transport_error(library: ModuleType) -> None:
    transport = ReplayTransport(sse_cassette([BODY]), faults=Faults(drop_at=20))
    with (
        library.Client(transport=transport) as client,
        pytest.raises(library.RemoteProtocolError, match="dropped after 20 bytes"),
    ):
        client.post("http://replay/chat/completions", json=REQUEST)


def _mock_upstream(library: ModuleType) -> object:
    def handler(request: object) -> object:
        def sync_body() -> Iterator[bytes]:
            yield BODY[:30]
            yield BODY[30:]

        async def async_body() -> AsyncIterator[bytes]:
            yield BODY[:30]
            yield BODY[30:]

        is_async = getattr(request, "extensions", {}).get("test_async", False)
        return library.Response(
            200,
            headers={"content-type": "text/event-stream", "x-echo": KEY},
            content=async_body() if is_async else sync_body(),
        )

    return library.MockTransport(handler)


@library_parameter
def test_record_in_a_sync_client(library: ModuleType) -> None:
    recorder = RecordTransport(_mock_upstream(library))  # type: ignore[arg-type]
    with library.Client(transport=recorder) as client:
        response = client.post(
            "http://upstream/chat/completions",
            json=REQUEST,
            headers={"authorization": f"Bearer {KEY}"},
        )
        assert response.read() == BODY
    (interaction,) = recorder.cassette.interactions
    assert [chunk.data for chunk in interaction.response.chunks] == [BODY[:30], BODY[30:]]
    assert KEY not in dumps(recorder.cassette)


@library_parameter
def test_record_in_an_async_client(library: ModuleType) -> None:
    async def main() -> RecordTransport:
        recorder = RecordTransport(_mock_upstream(library))  # type: ignore[arg-type]
        async with library.AsyncClient(transport=recorder) as client:
            request = client.build_request(
                "POST",
                "http://upstream/chat/completions",
                json=REQUEST,
                headers={"authorization": f"Bearer {KEY}"},
                extensions={"test_async": True},
            )
            response = await client.send(request)
            assert response.content == BODY
        return recorder

    recorder = asyncio.run(main())
    assert recorder.cassette.interactions[0].response.body == BODY
    assert KEY not in dumps(recorder.cassette)


@library_parameter
def test_the_openai_sdk_takes_either_client(library: ModuleType) -> None:
    transport = ReplayTransport(sse_cassette([BODY]))
    client = openai.OpenAI(
        api_key="unused",
        base_url="http://replay",
        max_retries=0,
        http_client=library.Client(transport=transport),
    )
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert text == "Hello"
    client.close()
