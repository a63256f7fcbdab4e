"""An ASGI event-stream response with keep-alive comments and disconnect handling.

Starlette's ``StreamingResponse`` cannot write while its body iterator is blocked, and the proxy
must: a thinking model or a running tool can leave the stream silent for minutes, and load
balancers close connections idle for 60 s. ``EventStreamResponse`` sends the frames of an async
iterator and, beside it, a ``: keep-alive`` comment whenever nothing was sent for
``keepalive_interval`` seconds. When the client disconnects, the iterator is cancelled (which
closes the upstream request and cancels running tools) and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Mapping

from starlette.types import Message, Receive, Scope, Send

from streamproxy.core.encode import encode_comment

logger = logging.getLogger("streamproxy.proxy")

KEEPALIVE_FRAME = encode_comment("keep-alive")
EVENT_STREAM_HEADERS = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",  # nginx: do not buffer the stream
}


class EventStreamResponse:
    """Send ``frames`` as ``text/event-stream`` with keep-alives (an ASGI app)."""

    def __init__(
        self,
        frames: AsyncGenerator[bytes, None],
        *,
        keepalive_interval: float,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.frames = frames
        self.keepalive_interval = keepalive_interval
        self.headers = {**EVENT_STREAM_HEADERS, **(headers or {})}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        lock = asyncio.Lock()
        last_sent = loop.time()

        async def send_body(body: bytes) -> None:
            nonlocal last_sent
            async with lock:
                await send({"type": "http.response.body", "body": body, "more_body": True})
                last_sent = loop.time()

        async def pump() -> None:
            async for data in self.frames:
                await send_body(data)

        async def keepalive() -> None:
            while True:
                await asyncio.sleep(max(0.0, last_sent + self.keepalive_interval - loop.time()))
                if loop.time() - last_sent >= self.keepalive_interval:
                    await send_body(KEEPALIVE_FRAME)

        async def wait_for_disconnect() -> None:
            while True:
                message: Message = await receive()
                if message["type"] == "http.disconnect":
                    return

        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(key.encode(), value.encode()) for key, value in self.headers.items()],
            }
        )
        pump_task = asyncio.create_task(pump())
        keepalive_task = asyncio.create_task(keepalive())
        disconnect_task = asyncio.create_task(wait_for_disconnect())
        tasks = {pump_task, keepalive_task, disconnect_task}
        try:
            await asyncio.wait({pump_task, disconnect_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            is_disconnected = not pump_task.done()
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
            await self.frames.aclose()
        if is_disconnected:
            logger.info("the client disconnected; the stream was cancelled")
            return
        if not pump_task.cancelled() and pump_task.exception() is not None:
            logger.error("the event stream failed", exc_info=pump_task.exception())
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": b"", "more_body": False})
