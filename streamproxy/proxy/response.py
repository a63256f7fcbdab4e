"""An ASGI event-stream response with keep-alive comments, coalesced writes and disconnects.

Starlette's ``StreamingResponse`` cannot write while its body iterator is blocked, and the proxy
must: a thinking model or a running tool can leave the stream silent for minutes, and load
balancers close connections idle for 60 s. ``EventStreamResponse`` sends the frames of an async
iterator and, beside it, a ``: keep-alive`` comment whenever nothing was sent for
``keepalive_interval`` seconds. When the client disconnects, the iterator is cancelled (which
closes the upstream request and cancels running tools) and closed.

Two tasks share the work. The reader (the response's own task) pulls frames from the iterator
into a bounded buffer; the writer sends everything the buffer holds as one ASGI body message
(one write, one wake-up of the client) whenever it gets to run. When the upstream sends a burst
(one socket read holding many events), the frames of the burst leave in one message instead of
one each; when it sends one event at a time, each frame still leaves as soon as it is made. The
first frame of a response is always sent alone and at once: the reader sends it itself (unless
a keep-alive is on its way), so the time to the first token waits for no other task, no second
frame and not the rest of a burst. A third task watches for the client's disconnect. The bytes
the client receives are the same as frame-by-frame sending: the same frames, in the same order,
with keep-alives only where nothing was sent for ``keepalive_interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Mapping

from starlette.types import Message, Receive, Scope, Send

from streamproxy.core.encode import encode_comment
from streamproxy.proxy.interruption import StopWhenDone

logger = logging.getLogger("streamproxy.proxy")

KEEPALIVE_FRAME = encode_comment("keep-alive")
EVENT_STREAM_HEADERS = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",  # nginx: do not buffer the stream
}
# The reader waits when this many bytes are waiting to be sent (a slow client holds back the
# upstream instead of filling the proxy's memory).
MAX_PENDING_BYTES = 256 * 1024


class _Outbox:
    """Frames made and not yet sent, and the two signals between the reader and the writer."""

    __slots__ = ("_loop", "_room", "_wakeup", "frames", "is_finished", "size")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.frames: list[bytes] = []
        self.size = 0
        self.is_finished = False
        self._loop = loop
        self._wakeup: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None

    def put(self, frame: bytes) -> None:
        self.frames.append(frame)
        self.size += len(frame)
        self.wake()

    def finish(self) -> None:
        self.is_finished = True
        self.wake()

    def wake(self) -> None:
        """Wake the writer if it waits (a frame, the end, or a keep-alive is due)."""
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Until ``wake`` (the writer, with nothing to send)."""
        self._wakeup = self._loop.create_future()
        try:
            await self._wakeup
        finally:
            self._wakeup = None

    def take(self, *, count: int | None = None) -> bytes:
        """The body of one message: every pending frame (or the first ``count``)."""
        frames = self.frames
        if count is not None and count < len(frames):
            taken, self.frames = frames[:count], frames[count:]
        else:
            taken, self.frames = frames, []
        body = taken[0] if len(taken) == 1 else b"".join(taken)
        self.size -= len(body)
        room = self._room
        if room is not None and not room.done() and self.size < MAX_PENDING_BYTES:
            room.set_result(None)
        return body

    async def wait_for_room(self) -> None:
        """Until the writer took enough that the buffer is under its bound (the reader)."""
        while self.size >= MAX_PENDING_BYTES:
            self._room = self._loop.create_future()
            try:
                await self._room
            finally:
                self._room = None


class EventStreamResponse:
    """Send ``frames`` as ``text/event-stream`` with keep-alives (an ASGI app)."""

    coalesce = True
    """Send every frame that is ready in one body message; False: one message per frame."""

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
        outbox = _Outbox(loop)
        interval = self.keepalive_interval
        per_message = None if self.coalesce else 1
        last_sent = loop.time()
        timer: asyncio.TimerHandle | None = None
        count: int | None = 1  # the writer's next take: the first frame alone
        is_sending = False  # a body message is on its way (only one at a time)

        def keepalive_due() -> None:
            # one timer per interval, re-armed from the last write (not one per frame)
            nonlocal timer
            due = last_sent + interval
            if loop.time() >= due:
                timer = None
                outbox.wake()
            else:
                timer = loop.call_at(due, keepalive_due)

        async def send_body(body: bytes) -> None:
            nonlocal last_sent, is_sending
            is_sending = True
            try:
                await send({"type": "http.response.body", "body": body, "more_body": True})
            finally:
                is_sending = False
            last_sent = loop.time()

        async def read() -> None:
            """The frames into the outbox; the first one sent at once, unless a keep-alive is
            on its way (the time to the first token waits for no other task)."""
            nonlocal count
            is_first = True
            async for frame in self.frames:
                if not frame:
                    continue
                if is_first:
                    is_first = False
                    if not is_sending:
                        count = per_message
                        await send_body(frame)
                        continue
                outbox.put(frame)
                if outbox.size >= MAX_PENDING_BYTES:
                    await outbox.wait_for_room()

        async def write() -> None:
            nonlocal count, timer
            timer = loop.call_at(last_sent + interval, keepalive_due)
            while True:
                if not is_sending:  # else the reader is sending the first frame
                    if outbox.frames:
                        body = outbox.take(count=count)
                        count = per_message
                        await send_body(body)
                        continue
                    if outbox.is_finished:
                        return
                    if loop.time() - last_sent >= interval:
                        await send_body(KEEPALIVE_FRAME)
                        continue
                if timer is None:
                    timer = loop.call_at(last_sent + interval, keepalive_due)
                await outbox.wait()

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
        # this task reads; the writer (frames made while a send is on its way, keep-alives) and
        # the disconnect watcher run beside it, and either stops the reading if it ends first
        write_task = asyncio.create_task(write())
        disconnect_task = asyncio.create_task(wait_for_disconnect())
        tasks = {write_task, disconnect_task}
        failure: BaseException | None = None
        try:
            with StopWhenDone(write_task, disconnect_task) as stop:
                try:
                    await read()
                except Exception as error:  # the frames failed: what they made is still sent
                    failure = error
            outbox.finish()
            if stop.stopped_by is None:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            is_disconnected = not write_task.done()
            if timer is not None:
                timer.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
            await self.frames.aclose()
        if is_disconnected:
            logger.info("the client disconnected; the stream was cancelled")
            return
        if failure is None and not write_task.cancelled():
            failure = write_task.exception()
        if failure is not None:
            logger.error("the event stream failed", exc_info=failure)
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": b"", "more_body": False})
