"""Timeouts before and after the response head: what is retried and what bounds the wait.

A scripted transport counts the attempts. Before the head: connect failures (refused, reset,
connect timeout) are retried; a read timeout waiting for the head is not (the upstream may be
computing; a retry pays twice); every attempt and backoff together stay within
``--upstream-timeout``. After the head: an upstream that sends only keep-alive comments is
silent, and is cut at the same bound with one error frame.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx2
import pytest

from streamproxy.config import Config
from streamproxy.errors import UpstreamError
from streamproxy.proxy.upstream import RetryPolicy, Upstream
from tests.proxy.helpers import MODEL, ScriptedUpstream, content_round, post_stream, proxy_client

pytestmark = pytest.mark.anyio

RETRIES = RetryPolicy(retries=3, base_delay=0.001, max_delay=0.002)


def counting_upstream(
    failure: Callable[[int], httpx2.Response], *, timeout: float = 600.0
) -> tuple[Upstream, list[int]]:
    """An upstream whose transport calls ``failure(attempt)``; the attempts are recorded."""
    attempts: list[int] = []

    async def handler(request: httpx2.Request) -> httpx2.Response:
        attempts.append(len(attempts) + 1)
        return failure(len(attempts))

    upstream = Upstream(
        "http://upstream.test/v1",
        transport=httpx2.MockTransport(handler),
        retry=RETRIES,
        timeout=timeout,
    )
    return upstream, attempts


def raising(error: Exception) -> Callable[[int], httpx2.Response]:
    def fail(attempt: int) -> httpx2.Response:
        raise error

    return fail


@pytest.mark.parametrize(
    "error",
    [
        httpx2.ReadTimeout("no head yet"),
        httpx2.WriteTimeout("body not taken"),
        httpx2.PoolTimeout("no connection free"),
    ],
)
async def test_a_timeout_after_the_request_was_sent_is_not_retried(error: Exception) -> None:
    upstream, attempts = counting_upstream(raising(error))
    with pytest.raises(UpstreamError) as caught:
        await upstream.open_chat({})
    assert attempts == [1]
    assert caught.value.status == 504
    assert "did not answer in time" in caught.value.message


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (httpx2.ConnectTimeout("no SYN-ACK"), 504),
        (httpx2.ConnectError("refused"), 502),
        (httpx2.ReadError("reset before the head"), 502),
        (httpx2.RemoteProtocolError("closed without a response"), 502),
    ],
)
async def test_connection_failures_are_retried(error: Exception, status: int) -> None:
    upstream, attempts = counting_upstream(raising(error))
    with pytest.raises(UpstreamError) as caught:
        await upstream.open_chat({})
    assert attempts == [1, 2, 3, 4]  # the first try and three retries
    assert caught.value.status == status
    assert "cannot reach the upstream" in caught.value.message


async def test_a_connect_timeout_then_success_is_one_answer() -> None:
    def fail_once(attempt: int) -> httpx2.Response:
        if attempt == 1:
            raise httpx2.ConnectTimeout("no SYN-ACK")
        return httpx2.Response(200, content=b"data: [DONE]\n\n")

    upstream, attempts = counting_upstream(fail_once)
    await (await upstream.open_chat({})).aclose()
    assert attempts == [1, 2]


async def test_an_upstream_that_never_answers_is_bounded_by_the_timeout() -> None:
    attempts: list[int] = []
    never = asyncio.Event()

    async def handler(request: httpx2.Request) -> httpx2.Response:
        attempts.append(1)
        await never.wait()  # no head, ever (the mock has no read timeout of its own)
        raise AssertionError("unreachable")

    upstream = Upstream(
        "http://upstream.test/v1",
        transport=httpx2.MockTransport(handler),
        retry=RETRIES,
        timeout=0.05,
    )
    with pytest.raises(UpstreamError) as caught:
        await upstream.open_chat({})
    assert attempts == [1]
    assert caught.value.status == 504
    assert "0.05 s, 1 attempt" in caught.value.message


async def test_retries_and_backoffs_together_stay_within_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the clock moves only by the backoffs: 503 with Retry-After 2 s, a 5 s bound, 3 retries
    loop = asyncio.get_running_loop()
    real_time, real_sleep = loop.time, asyncio.sleep
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(loop, "time", lambda: real_time() + sum(slept))
    monkeypatch.setattr("streamproxy.proxy.upstream.asyncio.sleep", fake_sleep)

    def busy(attempt: int) -> httpx2.Response:
        return httpx2.Response(
            503, headers={"Retry-After": "2"}, json={"error": {"message": "busy"}}
        )

    upstream, attempts = counting_upstream(busy, timeout=5.0)
    with pytest.raises(UpstreamError) as caught:
        await upstream.open_chat({})
    # t=0 try, wait 2, t=2 try, wait 2, t=4 try; a third wait would end past t=5: not made
    assert attempts == [1, 2, 3]
    assert slept == [2.0, 2.0]
    assert caught.value.status == 503  # the upstream's own last answer


# ------------------------------------------------------------------ after the head


def comments_forever(
    closed: list[int], *, first: list[bytes]
) -> Callable[[], AsyncIterator[bytes]]:
    """A body that sends ``first``, then a keep-alive comment every 10 ms, never an event."""

    async def body() -> AsyncIterator[bytes]:
        try:
            for piece in first:
                yield piece
            while True:
                await asyncio.sleep(0.01)
                yield b": keep-alive\n\n"
        finally:
            closed.append(1)

    return body


async def test_only_keep_alive_comments_past_the_idle_bound_end_the_round() -> None:
    answer = content_round("The |quick ")
    closed: list[int] = []
    upstream = ScriptedUpstream([comments_forever(closed, first=answer[:3])])
    config = Config(
        upstream_url="http://upstream.test/v1",
        api_key="sk-upstream-secret-key",
        upstream_timeout=0.2,
    )
    async with proxy_client(upstream, config=config) as client:
        result = await asyncio.wait_for(
            post_stream(client, {"model": MODEL, "messages": [{"role": "user", "content": "?"}]}),
            10,
        )
    assert result.status == 200
    assert result.content == "The quick "
    assert not result.is_done and result.finish_reasons == []
    [error] = result.errors
    assert "idle timeout" in error["error"]["message"]  # type: ignore[index]
    assert error["error"]["code"] == "upstream_error"  # type: ignore[index]
    assert result.raw.rstrip().endswith(b"}}")  # the error frame is the last thing sent
    assert closed == [1] and upstream.closed == 1  # the upstream response was closed
    assert len(upstream.requests) == 1


async def test_comments_between_events_do_not_end_a_stream_that_progresses() -> None:
    # events keep coming (each within the bound), with comments between them: no error
    pieces = content_round("a|b|c|d|e|f")

    async def body() -> AsyncIterator[bytes]:
        for piece in pieces:
            await asyncio.sleep(0.02)
            yield b": keep-alive\n\n"
            yield piece

    upstream = ScriptedUpstream([body])
    config = Config(
        upstream_url="http://upstream.test/v1",
        api_key="sk-upstream-secret-key",
        upstream_timeout=5.0,
    )
    async with proxy_client(upstream, config=config) as client:
        result = await post_stream(
            client, {"model": MODEL, "messages": [{"role": "user", "content": "?"}]}
        )
    assert (result.content, result.finish_reasons, result.errors) == ("abcdef", ["stop"], [])
    assert result.is_done
