from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import httpx2
import pytest

from streamproxy.errors import UpstreamError
from streamproxy.proxy.http1 import Http1Transport
from streamproxy.proxy.upstream import (
    RetryPolicy,
    Upstream,
    connection_transport,
    is_deepseek_url,
)

KEY = "sk-test-secret-0123456789"
FAST = RetryPolicy(retries=2, base_delay=0.001, max_delay=0.002)

pytestmark = pytest.mark.anyio


class ChunkedStream(httpx2.AsyncByteStream):
    """A response body delivered in the given pieces; records whether it was closed."""

    def __init__(self, pieces: list[bytes], *, fail_after: int | None = None) -> None:
        self.pieces = pieces
        self.fail_after = fail_after
        self.is_closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for number, piece in enumerate(self.pieces):
            if self.fail_after is not None and number == self.fail_after:
                raise httpx2.ReadError("connection reset")
            yield piece

    async def aclose(self) -> None:
        self.is_closed = True


def make_upstream(
    handler: Callable[[httpx2.Request], httpx2.Response],
    *,
    base_url: str = "http://upstream.test/v1",
    retry: RetryPolicy = FAST,
) -> Upstream:
    return Upstream(base_url, api_key=KEY, transport=httpx2.MockTransport(handler), retry=retry)


async def test_streams_raw_bytes_unchanged_and_sends_key_and_body() -> None:
    pieces = [b'data: {"a"', b":1}\n\n", b"data: [DONE]\n\n"]
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, stream=ChunkedStream(pieces))

    upstream = make_upstream(handler)
    async with await upstream.open_chat({"model": "m", "stream": True}) as response:
        received = [piece async for piece in response.aiter_bytes()]
    assert received == pieces
    assert str(seen[0].url) == "http://upstream.test/v1/chat/completions"
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert json.loads(seen[0].content) == {"model": "m", "stream": True}
    await upstream.aclose()


class TracingHooks:
    """Hooks that add a trace header (as telemetry does) and record nothing else."""

    def request_headers(self) -> dict[str, str]:
        return {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}

    def retrying(self, attempt: int, error: UpstreamError) -> None:
        pass

    def failed_upstream(self, error: UpstreamError) -> None:
        pass

    def response_closed(self) -> None:
        pass


@pytest.mark.parametrize("hooks", [None, TracingHooks()], ids=["plain", "hooked"])
@pytest.mark.parametrize("is_strict", [False, True], ids=["chat", "strict"])
async def test_chat_request_is_the_one_httpx2s_client_would_send(
    hooks: TracingHooks | None, is_strict: bool
) -> None:
    """The chat POST bypasses the client's send(): it still goes out exactly as the client
    would build it (same method, URL, raw headers in order, body), with the configured
    timeouts."""
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, stream=ChunkedStream([b"data: [DONE]\n\n"]))

    base_url = "https://api.deepseek.com:8443/v1"
    upstream = Upstream(
        base_url,
        api_key=KEY,
        transport=httpx2.MockTransport(handler),
        timeout=42.0,
        connect_timeout=3.0,
    )
    body = {"model": "m", "messages": [{"role": "user", "content": "héllo"}]}
    async with await upstream.open_chat(body, is_strict=is_strict, hooks=hooks) as response:
        assert response.status_code == 200
    (request,) = seen
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if hooks is not None:
        headers.update(hooks.request_headers())
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as client:
        expected = client.build_request(
            "POST",
            upstream.chat_url(is_strict=is_strict),
            content=json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(),
            headers=headers,
        )
    expected.headers["accept-encoding"] = "identity"  # BoundedDecoding undoes codings itself
    assert (request.method, request.url) == (expected.method, expected.url)
    assert request.headers.raw == expected.headers.raw
    assert request.content == expected.content
    assert request.extensions["timeout"] == {
        "connect": 3.0,
        "read": 42.0,
        "write": 42.0,
        "pool": 42.0,
    }
    await upstream.aclose()


@pytest.mark.parametrize(
    ("base_url", "is_strict", "expected"),
    [
        ("https://api.deepseek.com", True, "https://api.deepseek.com/beta/chat/completions"),
        ("https://api.deepseek.com/v1", True, "https://api.deepseek.com/beta/chat/completions"),
        ("https://api.deepseek.com/beta", True, "https://api.deepseek.com/beta/chat/completions"),
        ("https://api.deepseek.com", False, "https://api.deepseek.com/chat/completions"),
        ("http://127.0.0.1:9/v1", True, "http://127.0.0.1:9/v1/chat/completions"),
    ],
)
def test_strict_requests_go_to_deepseek_beta(base_url: str, is_strict: bool, expected: str) -> None:
    assert Upstream(base_url).chat_url(is_strict=is_strict) == expected


def test_is_deepseek_url() -> None:
    assert is_deepseek_url("https://api.deepseek.com/v1")
    assert not is_deepseek_url("https://deepseek.com.evil.example/v1")
    assert not is_deepseek_url("http://127.0.0.1:8000")


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_retries_retryable_statuses_then_succeeds(status: int) -> None:
    attempts: list[int] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        attempts.append(1)
        if len(attempts) < 3:
            return httpx2.Response(status, json={"error": {"message": "busy"}})
        return httpx2.Response(200, content=b"data: [DONE]\n\n")

    upstream = make_upstream(handler)
    async with await upstream.open_chat({}) as response:
        assert b"".join([piece async for piece in response.aiter_bytes()]) == b"data: [DONE]\n\n"
    assert len(attempts) == 3


async def test_gives_up_after_the_retry_budget_with_the_upstream_status() -> None:
    attempts: list[int] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        attempts.append(1)
        return httpx2.Response(503, json={"error": {"message": "overloaded", "type": "x"}})

    with pytest.raises(UpstreamError) as caught:
        await make_upstream(handler).open_chat({})
    assert len(attempts) == 3  # the first try and two retries
    assert caught.value.status == 503
    assert caught.value.status_hint == 503
    assert "overloaded" in caught.value.message
    assert caught.value.body == {"error": {"message": "overloaded", "type": "x"}}


@pytest.mark.parametrize("status", [400, 401, 404, 422, 502])
async def test_other_statuses_are_not_retried(status: int) -> None:
    attempts: list[int] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        attempts.append(1)
        return httpx2.Response(status, text="plain failure")

    with pytest.raises(UpstreamError) as caught:
        await make_upstream(handler).open_chat({})
    assert attempts == [1]
    assert caught.value.status == status
    assert "plain failure" in caught.value.message


async def test_retry_after_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr("streamproxy.proxy.upstream.asyncio.sleep", fake_sleep)
    attempts: list[int] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        attempts.append(1)
        if len(attempts) == 1:
            return httpx2.Response(429, headers={"Retry-After": "7"}, json={})
        return httpx2.Response(200, content=b"")

    await (await make_upstream(handler).open_chat({})).aclose()
    assert waits == [7.0]


async def test_retry_after_beyond_the_ceiling_is_not_waited_for() -> None:
    attempts: list[int] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        attempts.append(1)
        return httpx2.Response(429, headers={"Retry-After": "3600"}, json={})

    with pytest.raises(UpstreamError) as caught:
        await make_upstream(handler).open_chat({})
    assert attempts == [1]
    assert caught.value.status == 429


async def test_connection_errors_are_retried_then_mapped_to_502() -> None:
    attempts: list[int] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        attempts.append(1)
        raise httpx2.ConnectError("refused")

    with pytest.raises(UpstreamError) as caught:
        await make_upstream(handler).open_chat({})
    assert len(attempts) == 3
    assert caught.value.status == 502


async def test_timeouts_map_to_504() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectTimeout("slow")

    with pytest.raises(UpstreamError) as caught:
        await make_upstream(handler, retry=RetryPolicy(retries=0)).open_chat({})
    assert caught.value.status == 504


async def test_a_failure_mid_body_is_an_upstream_error_and_not_retried() -> None:
    attempts: list[int] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        attempts.append(1)
        return httpx2.Response(200, stream=ChunkedStream([b"data: 1\n\n", b"x"], fail_after=1))

    response = await make_upstream(handler).open_chat({})
    received: list[bytes] = []
    with pytest.raises(UpstreamError) as caught:
        async for piece in response.aiter_bytes():
            received.append(piece)
    assert received == [b"data: 1\n\n"]
    assert caught.value.status == 502
    assert attempts == [1]


async def test_closing_the_response_closes_the_upstream_body() -> None:
    stream = ChunkedStream([b"a", b"b", b"c"])

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, stream=stream)

    response = await make_upstream(handler).open_chat({})
    async for _ in response.aiter_bytes():
        break
    await response.aclose()
    assert stream.is_closed


async def test_the_key_is_scrubbed_from_error_bodies() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(401, json={"error": {"message": f"key {KEY} is invalid"}})

    with pytest.raises(UpstreamError) as caught:
        await make_upstream(handler).open_chat({})
    assert KEY not in caught.value.message
    assert KEY not in json.dumps(caught.value.body)
    assert "<redacted>" in caught.value.message


async def test_list_models() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/models"
        return httpx2.Response(200, json={"object": "list", "data": [{"id": "m"}]})

    assert await make_upstream(handler).list_models() == {
        "object": "list",
        "data": [{"id": "m"}],
    }

    def failing(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(500, text="nope")

    with pytest.raises(UpstreamError) as caught:
        await make_upstream(failing).list_models()
    assert caught.value.status == 500


def test_the_connection_is_http1_unless_the_environment_names_a_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    limits = httpx2.Limits()
    assert isinstance(connection_transport("https://api.deepseek.com", limits), Http1Transport)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    through = connection_transport("https://api.deepseek.com", limits)
    assert isinstance(through, httpx2.AsyncHTTPTransport)
    assert isinstance(connection_transport("http://127.0.0.1:8000/v1", limits), Http1Transport)
    monkeypatch.setenv("NO_PROXY", "deepseek.com")
    assert isinstance(connection_transport("https://api.deepseek.com", limits), Http1Transport)


async def test_an_http_proxy_from_the_environment_carries_the_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """httpx2 ignores proxy variables once a transport is given; the upstream honours them."""
    seen: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head.split(b"\r\n", 1)[0])
        body = b'data: {"ok":1}\n\n'
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    for name in ("http_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{port}")
    upstream = Upstream("http://upstream.example/v1", api_key=KEY, retry=FAST)
    try:
        async with await upstream.open_chat({"model": "m", "stream": True}) as response:
            body = b"".join([piece async for piece in response.aiter_bytes()])
    finally:
        await upstream.aclose()
        server.close()
    assert body == b'data: {"ok":1}\n\n'
    assert seen == [b"POST http://upstream.example/v1/chat/completions HTTP/1.1"]
