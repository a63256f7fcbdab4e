"""The upstream's content-encoding is undone in bounded steps: a gzip bomb cannot fill memory
before the core's limits see the decoded bytes."""

from __future__ import annotations

import gzip
import zlib

import httpx2
import pytest

from streamproxy.proxy.content_encoding import BoundedDecoding

from .helpers import MODEL, ScriptedUpstream, content_round, post_stream, proxy_client

pytestmark = pytest.mark.anyio


def compressed(body: bytes, coding: str) -> bytes:
    if coding == "gzip":
        return gzip.compress(body)
    return zlib.compress(body)


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
async def test_a_compressed_stream_is_decoded_and_streams_as_usual(coding: str) -> None:
    body = compressed(b"".join(content_round("Hello| there.")), coding)
    response = httpx2.Response(
        200,
        headers={"content-type": "text/event-stream", "content-encoding": coding},
        content=body,
    )
    upstream = ScriptedUpstream([response])
    async with proxy_client(upstream) as client:
        result = await post_stream(client, {"model": MODEL, "messages": [{"role": "user"}]})
    assert result.content == "Hello there." and result.is_done
    assert upstream.requests[0].headers["accept-encoding"] == "identity"


async def test_a_gzip_bomb_is_cut_by_the_event_limit_with_memory_bounded() -> None:
    bomb = gzip.compress(b"data: " + b"a" * (200 * 1024 * 1024))  # 200 MiB in about 200 KB
    pieces: list[int] = []

    async def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-encoding": "gzip"}, content=bomb)

    transport = BoundedDecoding(httpx2.MockTransport(handler))
    async with (
        httpx2.AsyncClient(transport=transport) as client,
        client.stream("GET", "http://upstream.test/") as response,
    ):
        assert "content-encoding" not in response.headers
        total = 0
        async for piece in response.aiter_bytes():
            pieces.append(len(piece))
            total += len(piece)
            if total > 20 * 1024 * 1024:
                break
    assert max(pieces) <= 64 * 1024  # inflated one step at a time, never the whole body

    upstream = ScriptedUpstream(
        [httpx2.Response(200, headers={"content-encoding": "gzip"}, content=bomb)]
    )
    async with proxy_client(upstream) as client:
        result = await post_stream(client, {"model": MODEL, "messages": [{"role": "user"}]})
    [error] = result.errors
    assert error["error"]["code"] == "limit_exceeded"  # type: ignore[index]


async def test_an_encoding_the_proxy_cannot_undo_is_a_protocol_error() -> None:
    response = httpx2.Response(200, headers={"content-encoding": "br"}, content=b"\x1b\x00")
    async with proxy_client(ScriptedUpstream([response])) as client:
        result = await post_stream(client, {"model": MODEL, "messages": [{"role": "user"}]})
    [error] = result.errors
    assert "content-encoding br" in str(error["error"]["message"])  # type: ignore[index]
