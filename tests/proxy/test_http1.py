"""``Http1Transport`` against raw loopback servers that write exactly the bytes each test gives.

The oracle is the HTTP/1.1 wire format itself (what each server wrote) and httpx2's own transport
reading the same bytes (the differential property): status, headers and body must agree for any
framing and any way the server splits its writes.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
import trustme
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamproxy.proxy.http1 import MAX_HEAD_BYTES, Http1Transport

pytestmark = pytest.mark.anyio

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


@pytest.fixture(params=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """The proxy serves on uvloop; the library may run on plain asyncio: both, every test."""
    if request.param == "uvloop":
        return ("asyncio", {"loop_factory": uvloop.new_event_loop})
    return ("asyncio", {})


class Server:
    """A loopback server running ``handler`` per connection; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client left, or the test ended
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        """One request's head and its content-length body."""
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await reader.readexactly(length) if length else b""
        self.requests.append(head + body)
        return head + body

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"


@asynccontextmanager
async def serving(
    handler: Handler, *, context: ssl.SSLContext | None = None
) -> AsyncIterator[Server]:
    server = Server(handler)
    listener = await asyncio.start_server(server._handle, "127.0.0.1", 0, ssl=context)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()


def answering(
    *responses: bytes, pause: float = 0.0, then_close: bool = False
) -> Callable[[Server], Handler]:
    """A handler answering each request on a connection with the next response, whole; then
    waiting for the client to close, or closing the connection itself (``then_close``)."""

    def make(server: Server) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            for response in responses:
                await server.read_request(reader)
                if pause:
                    await asyncio.sleep(pause)
                writer.write(response)
                await writer.drain()
            if not then_close:
                await reader.read()  # until the client closes

        return handle

    return make


@asynccontextmanager
async def server_for(make: Callable[[Server], Handler]) -> AsyncIterator[Server]:
    holder: list[Server] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await make(holder[0])(reader, writer)

    async with serving(handler) as server:
        holder.append(server)
        yield server


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


def client(**options: Any) -> httpx2.AsyncClient:
    timeout = options.pop("timeout", httpx2.Timeout(5.0))
    return httpx2.AsyncClient(transport=Http1Transport(**options), timeout=timeout)


# -- what comes through -------------------------------------------------------------------


async def test_a_chunked_stream_arrives_whole_with_status_and_headers() -> None:
    body = chunked(b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n")
    async with (
        server_for(answering(SSE_HEAD + body)) as server,
        client() as http,
        http.stream("POST", server.url, content=b'{"a":1}') as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.extensions["http_version"] == b"HTTP/1.1"
        received = b"".join([piece async for piece in response.aiter_bytes()])
    assert received == b"data: 1\n\ndata: 2\n\ndata: [DONE]\n\n"
    request = server.requests[0]
    assert request.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\ncontent-length: 7\r\n" in request.lower()
    assert request.endswith(b'\r\n\r\n{"a":1}')


async def test_a_burst_of_chunks_comes_out_in_a_few_pieces_not_one_per_chunk() -> None:
    events = [b'data: {"n":%d}\n\n' % number for number in range(2000)]
    async with (
        server_for(answering(SSE_HEAD + chunked(*events))) as server,
        client() as http,
        http.stream("POST", server.url, content=b"{}") as response,
    ):
        pieces = [piece async for piece in response.aiter_bytes()]
    assert b"".join(pieces) == b"".join(events)
    assert len(pieces) < 100  # one per socket read (h11 hands on 2,000)


async def test_status_reason_and_repeated_headers_are_kept() -> None:
    answer = (
        b"HTTP/1.1 429 Slow Down Please\r\nretry-after: 2\r\nset-cookie: a=1\r\n"
        b"set-cookie: b=2\r\ncontent-length: 5\r\n\r\nslow!"
    )
    async with server_for(answering(answer)) as server, client() as http:
        response = await http.post(server.url, content=b"{}")
    assert response.status_code == 429
    assert response.reason_phrase == "Slow Down Please"
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert response.content == b"slow!"


async def test_a_body_ended_by_close_is_read_to_its_end() -> None:
    answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: x\n\n"
    async with server_for(answering(answer, then_close=True)) as server, client() as http:
        first = await http.post(server.url, content=b"{}")
        second = await http.post(server.url, content=b"{}")
    assert first.content == second.content == b"data: x\n\n"
    assert server.connections == 2  # a close-delimited body cannot leave the connection open


async def test_an_interim_100_answer_is_skipped() -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    async with server_for(answering(answer)) as server, client() as http:
        response = await http.post(server.url, content=b"{}")
    assert (response.status_code, response.content) == (200, b"ok")


async def test_a_streamed_request_body_is_sent_chunked() -> None:
    received: list[bytes] = []

    def make(server: Server) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            received.append(head)
            received.append(await reader.readuntil(b"0\r\n\r\n"))
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()
            await reader.read()

        return handle

    async def upload() -> AsyncIterator[bytes]:
        yield b"hello "
        yield b""
        yield b"world"

    async with server_for(make) as server, client() as http:
        response = await http.post(server.url, content=upload())
    assert response.status_code == 204
    assert b"transfer-encoding: chunked" in received[0].lower()
    assert received[1] == b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"


# -- the pool -----------------------------------------------------------------------------


async def test_a_finished_response_leaves_its_connection_for_the_next_request() -> None:
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    async with server_for(answering(answer, answer, answer)) as server, client() as http:
        for _ in range(3):
            assert (await http.post(server.url, content=b"{}")).content == b"ok"
    assert server.connections == 1


async def test_connection_close_and_an_unfinished_body_are_never_reused() -> None:
    closing = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"
    async with server_for(answering(closing)) as server, client() as http:
        await http.post(server.url, content=b"{}")
        await http.post(server.url, content=b"{}")
        assert server.connections == 2

    def make(server: Server) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            if server.connections == 1:
                writer.write(SSE_HEAD + b"3\r\nabc\r\n")  # and the rest never comes
            else:
                writer.write(SSE_HEAD + chunked(b"whole"))
            await reader.read()

        return handle

    async with server_for(make) as server, client() as http:
        async with http.stream("POST", server.url, content=b"{}") as response:
            async for _ in response.aiter_bytes():
                break  # the client left mid-body
        assert (await http.post(server.url, content=b"{}")).content == b"whole"
        assert server.connections == 2


async def test_an_idle_connection_the_server_closed_is_replaced_silently() -> None:
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    # then close, as a server whose keep-alive timed out
    async with server_for(answering(answer, then_close=True)) as server, client() as http:
        await http.post(server.url, content=b"{}")
        await asyncio.sleep(0.05)  # the close reaches the client
        assert (await http.post(server.url, content=b"{}")).content == b"ok"
    assert server.connections == 2


async def test_expired_idle_connections_are_not_reused() -> None:
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    limits = httpx2.Limits(keepalive_expiry=0.01)
    async with server_for(answering(answer, answer)) as server, client(limits=limits) as http:
        await http.post(server.url, content=b"{}")
        await asyncio.sleep(0.05)
        await http.post(server.url, content=b"{}")
    assert server.connections == 2


async def test_no_free_slot_in_time_is_a_pool_timeout_and_the_slot_comes_back() -> None:
    held = SSE_HEAD + b"5\r\nfirst\r\n"  # never finishes
    empty = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
    limits = httpx2.Limits(max_connections=1)
    timeout = httpx2.Timeout(5.0, pool=0.05)
    async with (
        server_for(answering(held)) as busy,
        server_for(answering(empty)) as free,
        client(limits=limits, timeout=timeout) as http,
    ):
        async with http.stream("POST", busy.url, content=b"{}"):
            with pytest.raises(httpx2.PoolTimeout):
                await http.post(free.url, content=b"{}")
        # the held response closed: its slot serves the next request
        assert (await http.post(free.url, content=b"{}")).status_code == 200
    assert free.connections == 1


# -- failures -----------------------------------------------------------------------------


async def test_a_refused_connection_is_a_connect_error() -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    async with client() as http:
        with pytest.raises(httpx2.ConnectError):
            await http.post(f"http://127.0.0.1:{port}/", content=b"{}")


async def test_a_slow_connect_is_a_connect_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()

    async def never(*args: object, **kwargs: object) -> None:
        await asyncio.sleep(10)

    monkeypatch.setattr(loop, "create_connection", never, raising=False)
    async with client(timeout=httpx2.Timeout(5.0, connect=0.05)) as http:
        with pytest.raises(httpx2.ConnectTimeout):
            await http.post("http://127.0.0.1:9/", content=b"{}")


async def test_silence_is_a_read_timeout_before_the_head_and_mid_body() -> None:
    timeout = httpx2.Timeout(5.0, read=0.1)
    async with server_for(answering(b"", pause=0)) as server, client(timeout=timeout) as http:
        with pytest.raises(httpx2.ReadTimeout):
            await http.post(server.url, content=b"{}")
    async with (
        server_for(answering(SSE_HEAD + b"3\r\nabc\r\n")) as server,
        client(timeout=timeout) as http,
        http.stream("POST", server.url, content=b"{}") as response,
    ):
        pieces: list[bytes] = []
        with pytest.raises(httpx2.ReadTimeout):
            async for piece in response.aiter_bytes():
                pieces.append(piece)
    assert pieces == [b"abc"]


async def test_a_trickle_faster_than_the_read_timeout_never_times_out() -> None:
    def make(server: Server) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            writer.write(SSE_HEAD)
            for _ in range(12):
                await asyncio.sleep(0.03)
                writer.write(b"1\r\nx\r\n")
            writer.write(b"0\r\n\r\n")
            await reader.read()

        return handle

    async with server_for(make) as server, client(timeout=httpx2.Timeout(5.0, read=0.1)) as http:
        response = await http.post(server.url, content=b"{}")  # 0.36 s in all, 0.03 s apart
    assert response.content == b"x" * 12


async def test_a_body_cut_short_hands_on_what_came_then_a_protocol_error() -> None:
    cut_short = SSE_HEAD + b"9\r\ndata: 1\n\n\r\n4\r\nda"
    async with (
        server_for(answering(cut_short, then_close=True)) as server,
        client() as http,
        http.stream("POST", server.url, content=b"{}") as response,
    ):
        pieces: list[bytes] = []
        with pytest.raises(httpx2.RemoteProtocolError, match="before the body's end"):
            async for piece in response.aiter_bytes():
                pieces.append(piece)
    assert b"".join(pieces) == b"data: 1\n\nda"


async def test_a_close_without_an_answer_and_garbage_are_protocol_errors() -> None:
    async with server_for(answering(b"", then_close=True)) as server, client() as http:
        with pytest.raises(httpx2.RemoteProtocolError, match="without answering"):
            await http.post(server.url, content=b"{}")
    async with server_for(answering(b"NOT HTTP AT ALL\r\n\r\n")) as server, client() as http:
        with pytest.raises(httpx2.RemoteProtocolError, match="malformed"):
            await http.post(server.url, content=b"{}")


async def test_an_endless_response_head_is_cut_at_its_bound() -> None:
    def make(server: Server) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\n")
            for number in range(100_000):  # 4 MB of headers, never ending them
                writer.write(b"x-filler-%06d: %s\r\n" % (number, b"y" * 24))
                if number % 1000 == 0:
                    await writer.drain()
            await reader.read()

        return handle

    async with server_for(make) as server, client() as http:
        with pytest.raises(httpx2.RemoteProtocolError, match=f"exceeds {MAX_HEAD_BYTES} bytes"):
            await http.post(server.url, content=b"{}")


async def test_a_header_that_would_split_the_request_is_refused_before_any_byte() -> None:
    async with server_for(answering()) as server, client() as http:
        with pytest.raises(httpx2.LocalProtocolError):
            await http.post(server.url, content=b"{}", headers={"x-a": "1\r\nx-b: 2"})
        await asyncio.sleep(0.01)
    assert server.connections == 0


async def test_a_slow_reader_bounds_the_buffer_and_loses_nothing() -> None:
    blob = bytes(range(256)) * 4096  # 1 MiB in 64 KiB chunks, written as fast as possible
    body = chunked(*[blob[start : start + 65536] for start in range(0, len(blob), 65536)])
    async with (
        server_for(answering(SSE_HEAD + body)) as server,
        client(max_buffered=32 * 1024) as http,
        http.stream("POST", server.url, content=b"{}") as response,
    ):
        pieces: list[bytes] = []
        async for piece in response.aiter_bytes():
            pieces.append(piece)
            await asyncio.sleep(0.005)
    assert b"".join(pieces) == blob
    # reading stops past the bound: a piece holds at most the bound plus one socket read
    assert max(len(piece) for piece in pieces) <= 32 * 1024 + 256 * 1024
    assert len(pieces) > 4


async def test_https_with_a_verified_certificate() -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecret"
    holder: list[Server] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answering(answer)(holder[0])(reader, writer)

    async with serving(handler, context=server_context) as server:
        holder.append(server)
        url = f"https://127.0.0.1:{server.port}/v1"
        async with client(ssl_context=client_context) as http:
            assert (await http.post(url, content=b"{}")).content == b"secret"
        async with client() as http:  # the system's roots do not know this authority
            with pytest.raises(httpx2.ConnectError):
                await http.post(url, content=b"{}")


# -- the same bytes as httpx2's own transport ---------------------------------------------


@st.composite
def responses(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    status = draw(st.sampled_from([200, 201, 400, 429, 500, 503]))
    body = draw(st.binary(max_size=3000))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    headers = [b"X-Request-Id: abc", b"content-type: text/event-stream; charset=utf-8"]
    if framing == "length":
        headers.append(b"content-length: %d" % len(body))
        payload = body
    elif framing == "chunked":
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=8)))
        bounds = [0, *cuts, len(body)]
        pieces = [body[a:b] for a, b in itertools.pairwise(bounds) if b > a]
        headers.append(b"transfer-encoding: chunked")
        payload = chunked(*pieces)
    else:
        headers.append(b"connection: close")
        payload = body
    wire = b"HTTP/1.1 %d Reason\r\n%s\r\n\r\n%s" % (status, b"\r\n".join(headers), payload)
    splits = sorted(draw(st.lists(st.integers(1, max(1, len(wire) - 1)), max_size=6)))
    return wire, splits


async def _fetch(transport: httpx2.AsyncBaseTransport, wire: bytes, splits: list[int]) -> object:
    def make(server: Server) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            bounds = [0, *splits, len(wire)]
            for start, end in itertools.pairwise(bounds):
                writer.write(wire[start:end])
                await writer.drain()
                await asyncio.sleep(0)

        return handle

    async with server_for(make) as server, httpx2.AsyncClient(transport=transport) as http:
        response = await http.post(server.url, content=b"{}")
        return response.status_code, response.headers.raw, response.content


def _both(wire: bytes, splits: list[int]) -> Iterator[object]:
    async def run() -> list[object]:
        return [
            await _fetch(httpx2.AsyncHTTPTransport(), wire, splits),
            await _fetch(Http1Transport(), wire, splits),
        ]

    yield from asyncio.run(run())


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(responses())
def test_any_framing_and_any_split_reads_as_httpx2_reads_it(case: tuple[bytes, list[int]]) -> None:
    theirs, ours = _both(*case)
    assert ours == theirs
