"""The Starlette adapter: ``create_app(config)`` -> an ASGI app speaking OpenAI's chat API.

Routes (each also without the ``/v1`` prefix):

- ``POST /v1/chat/completions``: streaming and not, with server tools run in the loop;
- ``GET /v1/models``: the upstream's model list;
- ``GET /healthz``: ``{"status": "ok"}``, no key needed;
- ``GET /_streamproxy/diagnostics``: only with ``Config(diagnostics=True)`` (``diagnostics.py``).

A client that disconnects while the proxy still waits for the upstream (a retry's backoff, a
non-streaming turn) cancels the work at once: no retry is sent for a client that is gone.

Errors before the first byte get the upstream's (or the proxy's) status and an OpenAI-shaped
body; after it, one ``data: {"error": ...}`` frame and the stream closes (``loop.py``).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import uuid
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx2 as httpx  # the maintained continuation of httpx: same API
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive

from streamproxy.config import Config
from streamproxy.core.limits import Limits
from streamproxy.errors import (
    AuthenticationError,
    RequestTooLargeError,
    StreamProxyError,
    UpstreamError,
)
from streamproxy.proxy.approval import ApprovalSigner, client_identity
from streamproxy.proxy.diagnostics import DIAGNOSTICS_PATH, RequestCounter, Requests, snapshot
from streamproxy.proxy.loop import Turn, TurnRunner
from streamproxy.proxy.request import parse_request, rebuild_messages
from streamproxy.proxy.response import EventStreamResponse
from streamproxy.proxy.stash import TranscriptStash
from streamproxy.tools import ToolSet
from streamproxy.upstream import RetryPolicy, Upstream

__all__ = ["create_app"]

logger = logging.getLogger("streamproxy.proxy")

T = TypeVar("T")


class ClientDisconnectedError(Exception):
    """The client went away before the response started."""


def create_app(
    config: Config,
    *,
    tools: ToolSet | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Starlette:
    """The proxy as an ASGI app; mount it anywhere.

    Args:
        config: the settings (``Config()`` proxies DeepSeek with no server tools).
        tools: the server tools; default: none, or ``config.tools`` loaded when set.
        transport: an httpx transport for the upstream (a cassette replay, a mock); default:
            the network.
    """
    if tools is None:
        from streamproxy.tools import load_tools

        tools = load_tools(config.tools) if config.tools else ToolSet()
    upstream = Upstream(
        config.upstream_url,
        api_key=config.api_key,
        transport=transport,
        timeout=config.upstream_timeout,
        connect_timeout=config.upstream_connect_timeout,
        retry=RetryPolicy(
            retries=config.retries,
            base_delay=config.retry_base_delay,
            max_retry_after=config.max_retry_wait,
        ),
    )
    use_strict = config.strict_tools == "on" or (
        config.strict_tools == "auto" and upstream.is_deepseek
    )
    signer = ApprovalSigner(config.approval_secret, ttl=config.approval_ttl)
    stash = TranscriptStash(ttl=config.approval_ttl)
    limits = Limits(max_arguments_size=config.max_arguments_size)

    def authenticate(request: Request) -> str:
        """The client's identity; raises ``AuthenticationError`` when keys are required."""
        if not config.client_keys:
            return ""
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key:
            raise AuthenticationError("a client key is required (Authorization: Bearer ...)")
        for allowed in config.client_keys:
            if hmac.compare_digest(key.encode(), allowed.encode()):
                return client_identity(key)
        raise AuthenticationError("the client key is not valid")

    async def chat_completions(request: Request) -> Response:
        request_id = f"req_{uuid.uuid4().hex[:16]}"
        headers = {"x-request-id": request_id}
        try:
            client = authenticate(request)
            raw = await _read_body(request, config.max_request_size)
            chat = parse_request(
                raw,
                server_tools=tools,
                is_deepseek=upstream.is_deepseek,
                max_size=config.max_request_size,
            )
            rebuild_messages(chat, stash=stash, signer=signer, client=client, server_tools=tools)
        except StreamProxyError as error:
            return error_response(error, headers)
        turn = Turn(
            chat,
            tools=tools,
            signer=signer,
            stash=stash,
            client=client,
            max_rounds=config.max_rounds,
            use_strict=use_strict,
            limits=limits,
        )
        runner = TurnRunner(
            turn,
            upstream,
            max_tool_result_size=config.max_tool_result_size,
            request_id=request_id,
        )
        try:
            await _while_connected(request.receive, runner.start())
        except StreamProxyError as error:
            await runner.aclose()
            logger.warning("request %s: upstream refused: %s", request_id, error.message)
            return error_response(error, headers)
        except ClientDisconnectedError:
            await runner.aclose()
            logger.info("request %s: the client left before the upstream answered", request_id)
            return Response(status_code=499, headers=headers)
        except BaseException:
            await runner.aclose()
            raise
        if chat.is_streaming:
            return EventStreamResponse(  # type: ignore[return-value]
                runner.stream(), keepalive_interval=config.keepalive_interval, headers=headers
            )
        try:
            completion = await _while_connected(request.receive, runner.complete())
        except StreamProxyError as error:
            logger.warning("request %s failed: %s", request_id, error.message)
            return error_response(error, headers)
        except ClientDisconnectedError:
            await runner.aclose()
            logger.info("request %s: the client left; the turn was cancelled", request_id)
            return Response(status_code=499, headers=headers)
        return JSONResponse(completion, headers=headers)

    async def models(request: Request) -> Response:
        try:
            authenticate(request)
            if config.is_offline_demo:
                from streamproxy.demo import demo_models

                return JSONResponse(demo_models())
            return JSONResponse(await upstream.list_models())
        except StreamProxyError as error:
            return error_response(error, {})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    requests = Requests()

    async def diagnostics(request: Request) -> Response:
        try:
            authenticate(request)
        except StreamProxyError as error:
            return error_response(error, {})
        return JSONResponse(snapshot(requests, open_upstream_responses=upstream.open_responses))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await upstream.aclose()

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/models", models, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    middleware = []
    if config.diagnostics:
        routes.append(Route(DIAGNOSTICS_PATH, diagnostics, methods=["GET"]))
        middleware.append(Middleware(RequestCounter, requests=requests))
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.config = config
    app.state.tools = tools
    app.state.upstream = upstream
    app.state.stash = stash
    return app


def error_response(error: StreamProxyError, headers: dict[str, str]) -> JSONResponse:
    """The status and OpenAI-shaped body for an error before the first byte.

    An upstream error keeps the upstream's status and, when it was OpenAI-shaped, its body.
    """
    body: object = error.to_openai_error()
    if isinstance(error, UpstreamError) and isinstance(error.body, dict):
        upstream_error = error.body.get("error")
        if isinstance(upstream_error, dict) and "message" in upstream_error:
            body = {"error": upstream_error}
    return JSONResponse(body, status_code=error.status_hint, headers=headers)


async def _while_connected(receive: Receive, work: Coroutine[Any, Any, T]) -> T:
    """Await ``work``, cancelling it if the client disconnects first.

    Only for before the response starts (the request body already read): once streaming,
    ``EventStreamResponse`` watches for the disconnect itself.

    Raises:
        ClientDisconnectedError: the client went away; ``work`` was cancelled and awaited.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
        await asyncio.wait({task, watcher})
    if task.cancelled() and watcher.done() and not watcher.cancelled():
        raise ClientDisconnectedError
    return task.result()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing it as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLargeError(f"the request is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLargeError(f"the request is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
