"""The recording pass-through behind ``streamproxy record``.

Every request to the app is forwarded to ``upstream`` + the request's path (so with
``--upstream https://api.deepseek.com`` a client whose base URL is ``http://127.0.0.1:N`` reaches
``https://api.deepseek.com/chat/completions``), credentials included. The response streams back
chunk by chunk as it arrives, while the :class:`RecordTransport` underneath keeps a redacted copy.

The upstream is asked for ``accept-encoding: identity`` so the cassette holds readable text (SSE
bodies gain little from compression). An upstream that cannot be reached gets the client a 502
with an OpenAI-shaped error body.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx2
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from streamproxy.cassette.http import HOP_BY_HOP
from streamproxy.cassette.record import RecordTransport
from streamproxy.errors import UpstreamError

# Streams can pause for minutes while a model thinks (DeepSeek keeps the connection for up to
# 10-30 minutes with keep-alive comments); only connecting has a short limit.
UPSTREAM_TIMEOUT = httpx2.Timeout(connect=15.0, read=1800.0, write=60.0, pool=15.0)

_NOT_FORWARDED = HOP_BY_HOP | {"host", "accept-encoding"}


def create_record_app(upstream: str, recorder: RecordTransport) -> Starlette:
    """A Starlette app forwarding everything to ``upstream`` through ``recorder``."""
    client = httpx2.AsyncClient(transport=recorder, timeout=UPSTREAM_TIMEOUT)
    base = upstream.rstrip("/")

    async def forward(request: Request) -> Response:
        url = base + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        headers = [
            (name, value)
            for name, value in request.headers.items()
            if name.lower() not in _NOT_FORWARDED
        ]
        headers.append(("accept-encoding", "identity"))
        outgoing = client.build_request(
            request.method, url, headers=headers, content=await request.body()
        )
        try:
            response = await client.send(outgoing, stream=True)
        except httpx2.HTTPError as error:
            failure = UpstreamError(f"cannot reach the upstream {base}: {error!r}")
            return JSONResponse(failure.to_openai_error(), status_code=failure.status_hint)
        return StreamingResponse(
            _relay(response),
            status_code=response.status_code,
            headers={k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP},
            background=BackgroundTask(response.aclose),
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    return Starlette(
        routes=[Route("/{path:path}", forward, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])],
        lifespan=lifespan,
    )


async def _relay(response: httpx2.Response) -> AsyncIterator[bytes]:
    try:
        async for data in response.aiter_raw():
            yield data
    finally:
        await response.aclose()
