"""The upstream read path: CPU per HTTP chunk of the ways the proxy could read a stream.

An in-process asyncio server answers every request with N SSE events, one HTTP chunk each
(``Transfer-Encoding: chunked``, as real providers send), written in one burst; each reader
reads the whole body, on one kept-alive connection. CPU time per chunk (``time.process_time``;
server and reader share the process, so the server's share is the same in every row), best of
``--repeats`` after a warm-up, the readers taking turns:

- **httpx2 aiter_bytes**: ``Response.aiter_bytes()`` (what ``UpstreamResponse`` used);
- **httpx2 aiter_raw**: no content decoder, no chunker;
- **httpx2 stream**: iterating ``Response.stream`` (the transport's byte stream) directly;
- **httptools protocol**: a raw asyncio ``Protocol`` with httptools' C parser, one callback
  per chunk and no generator at all (the floor of a C-parser client, not a contender: no pool,
  no timeouts, no retries, no transport seam).

Run: ``python -m benchmarks.bench_read [--chunks 2000] [--repeats 15]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httptools
import httpx2

from streamproxy.proxy.http1 import Http1Transport

EVENT = (
    b'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":'
    b'[{"index":0,"delta":{"content":" word"},"logprobs":null,"finish_reason":null}]}\n\n'
)


def chunked_body(count: int) -> bytes:
    piece = b"%x\r\n%s\r\n" % (len(EVENT), EVENT)
    return piece * count + b"0\r\n\r\n"


async def serve(count: int) -> tuple[asyncio.Server, int]:
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    body = chunked_body(count)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()
                return
            writer.write(head + body)
            await writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


class Chunks(asyncio.Protocol):
    """A keep-alive HTTP/1.1 client on httptools: counts body callbacks (one per chunk)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done: asyncio.Future[int] | None = None
        self.count = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.count += len(body)

    def on_message_complete(self) -> None:
        assert self.done is not None
        self.done.set_result(self.count // len(EVENT))

    async def get(self, port: int) -> int:
        assert self.transport is not None
        self.count = 0
        self.done = asyncio.get_running_loop().create_future()
        self.parser = httptools.HttpResponseParser(self)
        self.transport.write(b"GET / HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n\r\n" % port)
        return await self.done


async def main(args: argparse.Namespace) -> None:
    server, port = await serve(args.chunks)
    url = f"http://127.0.0.1:{port}/"
    client = httpx2.AsyncClient()
    fast_client = httpx2.AsyncClient(transport=Http1Transport())
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(Chunks, "127.0.0.1", port)

    async def count(chunks: AsyncIterator[bytes]) -> int:
        size = 0
        async for piece in chunks:
            size += len(piece)
        return size // len(EVENT)

    async def aiter_bytes() -> int:
        async with client.stream("GET", url) as response:
            return await count(response.aiter_bytes())

    async def aiter_raw() -> int:
        async with client.stream("GET", url) as response:
            return await count(response.aiter_raw())

    async def stream() -> int:
        async with client.stream("GET", url) as response:
            return await count(response.stream)  # type: ignore[arg-type]

    async def http1() -> int:
        async with fast_client.stream("GET", url) as response:
            return await count(response.aiter_bytes())

    async def raw_protocol() -> int:
        return await protocol.get(port)

    readers: dict[str, Callable[[], Awaitable[int]]] = {
        "httpx2 aiter_bytes": aiter_bytes,
        "httpx2 aiter_raw": aiter_raw,
        "httpx2 stream": stream,
        "Http1Transport aiter_bytes": http1,
        "httptools protocol": raw_protocol,
    }
    best = dict.fromkeys(readers, float("inf"))
    for round_number in range(args.repeats + 2):
        for name, read in readers.items():
            gc.collect()
            started = time.process_time()
            got = await read()
            spent = time.process_time() - started
            assert got == args.chunks, (name, got)
            if round_number >= 2:
                best[name] = min(best[name], spent / args.chunks)
    await client.aclose()
    await fast_client.aclose()
    assert protocol.transport is not None
    protocol.transport.close()
    await asyncio.sleep(0.1)  # every handler sees its client leave (no reads cancelled at exit)
    server.close()
    base = best["httpx2 aiter_bytes"]
    print(f"loop: {type(loop).__module__}; {args.chunks} chunks, best of {args.repeats}")
    print("| reader | CPU per chunk (µs) | vs aiter_bytes |")
    print("|---|---|---|")
    for name, value in best.items():
        print(f"| {name} | {value * 1e6:.2f} | {value / base:.2f}x |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    arguments = parser.parse_args()
    if arguments.uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(main(arguments))
