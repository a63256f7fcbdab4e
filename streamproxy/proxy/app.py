"""The Starlette adapter: ``create_app(config)`` -> an ASGI app speaking OpenAI's chat API.

Routes (each also without the ``/v1`` prefix):

- ``POST /v1/chat/completions``: streaming and not, with server tools run in the loop;
- ``GET /v1/models``: the upstream's model list;
- ``GET /healthz``: ``{"status": "ok"}``, no key needed;
- ``GET /``: the playground page, unless ``Config(playground=False)`` (``playground.py``);
- ``GET /_streamproxy/diagnostics``: only with ``Config(diagnostics=True)`` (``diagnostics.py``).

Every endpoint goes through ``_answering_errors``: an error before the response starts gets its
status and an OpenAI-shaped body (an upstream error keeps the upstream's status and body), a
client that left before the response started gets 499 and its work is cancelled at once (no
retry is sent for a client that is gone). After the first byte, errors are one frame
(``frames.py``).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
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
from streamproxy.proxy._state_shim import MemoryStore
from streamproxy.proxy.approval import ApprovalSigner, client_identity
from streamproxy.proxy.conversation import rebuild
from streamproxy.proxy.diagnostics import DIAGNOSTICS_PATH, RequestCounter, Requests, snapshot
from streamproxy.proxy.playground import playground
from streamproxy.proxy.request import parse_request
from streamproxy.proxy.response import EventStreamResponse
from streamproxy.proxy.runner import TurnRunner
from streamproxy.proxy.tools import ToolSet, load_tools
from streamproxy.proxy.turn import Turn
from streamproxy.proxy.upstream import RetryPolicy, Upstream

__all__ = ["create_app", "error_response"]

logger = logging.getLogger("streamproxy.proxy")

T = TypeVar("T")
Endpoint = Callable[["_Proxy", Request], Awaitable[Response]]


class _ClientDisconnected(Exception):
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
    proxy = _Proxy(config, tools if tools is not None else _configured_tools(config), transport)
    routes = [
        Route("/v1/chat/completions", proxy.chat_completions, methods=["POST"]),
        Route("/chat/completions", proxy.chat_completions, methods=["POST"]),
        Route("/v1/models", proxy.models, methods=["GET"]),
        Route("/models", proxy.models, methods=["GET"]),
        Route("/healthz", proxy.healthz, methods=["GET"]),
    ]
    if config.playground:
        routes.append(Route("/", playground, methods=["GET"]))
    middleware = []
    if config.diagnostics:
        routes.append(Route(DIAGNOSTICS_PATH, proxy.diagnostics, methods=["GET"]))
        middleware.append(Middleware(RequestCounter, requests=proxy.requests))
    return Starlette(routes=routes, middleware=middleware, lifespan=proxy.lifespan)


def _configured_tools(config: Config) -> ToolSet:
    return load_tools(config.tools) if config.tools else ToolSet()


def _answering_errors(endpoint: Endpoint) -> Endpoint:
    """The one error helper: every endpoint's errors become an OpenAI-shaped response."""

    async def answer(proxy: _Proxy, request: Request) -> Response:
        request_id = f"req_{uuid.uuid4().hex[:16]}"
        request.state.request_id = request_id
        headers = {"x-request-id": request_id}
        try:
            response = await endpoint(proxy, request)
        except StreamProxyError as error:
            logger.warning("request %s: %s", request_id, error.message)
            return error_response(error, headers)
        except _ClientDisconnected:
            logger.info("request %s: the client left before the response started", request_id)
            return Response(status_code=499, headers=headers)
        response.headers.update(headers)
        return response

    return answer


class _Proxy:
    """The app's services (upstream, tools, store, signer) and its endpoints."""

    def __init__(
        self, config: Config, tools: ToolSet, transport: httpx.AsyncBaseTransport | None
    ) -> None:
        self.config = config
        self.tools = tools
        self.upstream = Upstream(
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
        self.use_strict = config.strict_tools == "on" or (
            config.strict_tools == "auto" and self.upstream.is_deepseek
        )
        self.store = MemoryStore()
        self.limits = Limits(max_arguments_size=config.max_arguments_size)
        self.requests = Requests()
        self._signer: ApprovalSigner | None = None

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await self.upstream.aclose()
            await self.store.aclose()

    async def signer(self) -> ApprovalSigner:
        """The approval signer, under the configured secret or the store's shared one."""
        if self._signer is None:
            secret = self.config.approval_secret or await self.store.secret()
            self._signer = ApprovalSigner(secret, ttl=self.config.approval_ttl)
        return self._signer

    def authenticate(self, request: Request) -> str:
        """The client's identity; raises ``AuthenticationError`` when keys are required."""
        if not self.config.client_keys:
            return ""
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key:
            raise AuthenticationError("a client key is required (Authorization: Bearer ...)")
        for allowed in self.config.client_keys:
            if hmac.compare_digest(key.encode(), allowed.encode()):
                return client_identity(key)
        raise AuthenticationError("the client key is not valid")

    @_answering_errors
    async def chat_completions(self, request: Request) -> Response:
        config = self.config
        request_id: str = request.state.request_id
        client = self.authenticate(request)
        raw = await _read_body(request, config.max_request_size)
        chat = parse_request(
            raw,
            server_tools=self.tools,
            is_deepseek=self.upstream.is_deepseek,
            max_size=config.max_request_size,
        )
        signer = await self.signer()
        chat.messages, settlements = await rebuild(
            chat.messages, stash=self.store, signer=signer, client=client
        )
        turn = Turn(
            chat,
            tools=self.tools,
            signer=signer,
            client=client,
            max_rounds=config.max_rounds,
            use_strict=self.use_strict,
            limits=self.limits,
            approvals=config.approvals,
        )
        runner = TurnRunner(
            turn,
            self.upstream,
            store=self.store,
            settlements=settlements,
            max_tool_result_size=config.max_tool_result_size,
            state_ttl=config.approval_ttl,
            request_id=request_id,
        )
        try:
            await _while_connected(request.receive, runner.start())
            if chat.is_streaming:
                return EventStreamResponse(  # type: ignore[return-value]
                    runner.stream(), keepalive_interval=config.keepalive_interval
                )
            completion = await _while_connected(request.receive, runner.complete())
        except BaseException:
            await runner.aclose()
            raise
        return JSONResponse(completion)

    @_answering_errors
    async def models(self, request: Request) -> Response:
        self.authenticate(request)
        if self.config.is_offline_demo:
            from streamproxy.demo import demo_models

            return JSONResponse(demo_models())
        return JSONResponse(await self.upstream.list_models())

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @_answering_errors
    async def diagnostics(self, request: Request) -> Response:
        self.authenticate(request)
        return JSONResponse(
            snapshot(self.requests, open_upstream_responses=self.upstream.open_responses)
        )


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
        _ClientDisconnected: the client went away; ``work`` was cancelled and awaited.
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
        raise _ClientDisconnected
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
