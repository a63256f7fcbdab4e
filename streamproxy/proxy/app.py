"""The Starlette adapter: ``create_app(config)`` -> an ASGI app speaking OpenAI's chat API.

Routes (each also without the ``/v1`` prefix):

- ``POST /v1/chat/completions``: streaming and not, with server tools run in the loop;
- ``POST /v1/responses``: the same loop in the Responses API's format (``responses/``), with
  ``previous_response_id`` and ``item_reference`` served from the state store;
- ``GET /v1/models``: the upstream's model list;
- ``GET /healthz``: ``{"status": "ok"}``, no key needed;
- ``GET /metrics``: Prometheus metrics (``telemetry.py``, ``docs/observability.md``);
- ``GET /``: the playground page, unless ``Config(playground=False)`` (``playground.py``);
- ``GET /_streamproxy/diagnostics``: only with ``Config(diagnostics=True)`` (``diagnostics.py``).

Unknown routes and methods answer an OpenAI-shaped JSON error (404, 405). Every endpoint goes
through ``_answering_errors``: an error before the response starts gets its status and an
OpenAI-shaped body (an upstream error keeps the upstream's status and body), a
client that left before the response started gets 499 and its work is cancelled at once (no
retry is sent for a client that is gone). After the first byte, errors are one frame
(``frames.py``).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Sequence,
)
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import httpx2
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive

from streamproxy.config import Config
from streamproxy.core.limits import Limits
from streamproxy.errors import (
    AuthenticationError,
    InternalError,
    RequestTooLargeError,
    StateUnavailableError,
    StreamProxyError,
    UpstreamError,
)
from streamproxy.proxy.approval import ApprovalSigner, client_identity
from streamproxy.proxy.conversation import rebuild
from streamproxy.proxy.diagnostics import DIAGNOSTICS_PATH, RequestCounter, Requests, snapshot
from streamproxy.proxy.frames import ClientFrames
from streamproxy.proxy.interruption import StopWhenDone
from streamproxy.proxy.metrics import CONTENT_TYPE_LATEST
from streamproxy.proxy.playground import playground
from streamproxy.proxy.request import ChatRequest, parse_request
from streamproxy.proxy.response import EventStreamResponse
from streamproxy.proxy.responses import (
    ResponsesRequest,
    load_body,
    stored_items,
    translate_request,
)
from streamproxy.proxy.responses.frames import ResponsesFrames
from streamproxy.proxy.runner import TurnRunner
from streamproxy.proxy.state import open_state_store
from streamproxy.proxy.telemetry import RequestTelemetry, Telemetry
from streamproxy.proxy.tools import ToolSet, load_tools
from streamproxy.proxy.turn import Turn
from streamproxy.proxy.upstream import RetryPolicy, Upstream
from streamproxy.redaction import Redactor, install_log_redaction, uninstall_log_redaction

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider
    from prometheus_client import CollectorRegistry

__all__ = ["create_app", "error_response"]

logger = logging.getLogger("streamproxy.proxy")

T = TypeVar("T")
Endpoint = Callable[["_Proxy", Request], Awaitable[Response]]


# Store keys of what /v1/responses keeps for previous_response_id and item_reference.
_RESPONSE_KEY = "response:"
_ITEM_KEY = "item:"


class _ClientDisconnected(Exception):
    """The client went away before the response started."""


class Service(Protocol):
    """Something the app starts before it serves and stops after (``McpTools``)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def create_app(
    config: Config,
    *,
    tools: ToolSet | None = None,
    transport: httpx2.AsyncBaseTransport | None = None,
    services: Sequence[Service] = (),
    registry: CollectorRegistry | None = None,
    tracer_provider: TracerProvider | None = None,
) -> Starlette:
    """The proxy as an ASGI app; mount it anywhere.

    Args:
        config: the settings (``Config()`` proxies DeepSeek with no server tools).
        tools: the server tools; default: none, or ``config.tools`` loaded when set.
        transport: an httpx transport for the upstream (a cassette replay, a mock); default:
            the network.
        services: started in order in the app's lifespan before it serves, stopped in reverse
            after (the MCP servers that lend ``tools`` theirs).
        registry: where the metrics live; default: a new registry for this app.
        tracer_provider: the traces' provider; default: from the ``OTEL_*`` variables.
    """
    proxy = _Proxy(
        config,
        tools if tools is not None else _configured_tools(config),
        transport,
        telemetry=Telemetry(
            upstream_url=config.upstream_url, registry=registry, tracer_provider=tracer_provider
        ),
    )
    proxy.services = tuple(services)
    routes = [
        Route("/v1/chat/completions", proxy.chat_completions, methods=["POST"]),
        Route("/chat/completions", proxy.chat_completions, methods=["POST"]),
        Route("/v1/responses", proxy.responses, methods=["POST"]),
        Route("/responses", proxy.responses, methods=["POST"]),
        Route("/v1/models", proxy.models, methods=["GET"]),
        Route("/models", proxy.models, methods=["GET"]),
        Route("/healthz", proxy.healthz, methods=["GET"]),
        Route("/metrics", proxy.metrics, methods=["GET"]),
    ]
    if config.playground:
        routes.append(Route("/", playground, methods=["GET"]))
    middleware = []
    if config.diagnostics:
        routes.append(Route(DIAGNOSTICS_PATH, proxy.diagnostics, methods=["GET"]))
        middleware.append(Middleware(RequestCounter, requests=proxy.requests))
    proxy.route_paths = frozenset(route.path for route in routes)
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=proxy.lifespan,
        exception_handlers={HTTPException: _http_error},
    )
    app.router.redirect_slashes = False  # a wrong path is a JSON 404, not an empty 307
    return app


async def _http_error(request: Request, error: Exception) -> Response:
    """Unknown routes and methods get an OpenAI-shaped JSON error with their status."""
    assert isinstance(error, HTTPException)
    if error.status_code == 404:
        message = f"no route {request.url.path}"
        code = "not_found"
    elif error.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
        code = "method_not_allowed"
    else:
        message, code = str(error.detail), "http_error"
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return JSONResponse(body, status_code=error.status_code, headers=error.headers)


def _configured_tools(config: Config) -> ToolSet:
    return load_tools(config.tools) if config.tools else ToolSet()


def _answering_errors(endpoint: Endpoint) -> Endpoint:
    """The one error helper: every endpoint's errors become an OpenAI-shaped response."""

    async def answer(proxy: _Proxy, request: Request) -> Response:
        request_id = f"req_{secrets.token_hex(8)}"
        request.state.request_id = request_id
        headers = {"x-request-id": request_id}
        path = _path(request, proxy.route_paths)
        telemetry = proxy.telemetry.request(request.method, path, request.headers)
        request.state.telemetry = telemetry
        try:
            response = await endpoint(proxy, request)
        except StreamProxyError as error:
            logger.warning("request %s: %s", request_id, error.message)
            telemetry.failed(error, error.status_hint)
            return error_response(error, headers, redactor=proxy.redactor)
        except _ClientDisconnected:
            logger.info("request %s: the client left before the response started", request_id)
            telemetry.failed(None, 499, code="client_disconnected")
            return Response(status_code=499, headers=headers)
        except Exception:
            telemetry.failed(InternalError("the proxy failed"), 500)
            raise
        except BaseException:  # cancelled: the client or the server went away
            telemetry.failed(None, 499, code="client_disconnected")
            raise
        telemetry.responded(getattr(response, "status_code", 200))
        response.headers.update(headers)
        return response

    return answer


def _path(request: Request, own_paths: frozenset[str]) -> str:
    """``request.url.path``, without building the whole URL for the app's own paths (a request
    under a root path, or with characters the URL escapes, gets the URL's own)."""
    path: str = request.scope["path"]
    return path if path in own_paths else request.url.path


class _Proxy:
    """The app's services (upstream, tools, store, signer) and its endpoints."""

    def __init__(
        self,
        config: Config,
        tools: ToolSet,
        transport: httpx2.AsyncBaseTransport | None,
        *,
        telemetry: Telemetry | None = None,
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
        self.store = open_state_store(config.state_url)
        self.limits = Limits(max_arguments_size=config.max_arguments_size)
        self.requests = Requests()
        self.redactor = Redactor({config.api_key or "", *config.client_keys})
        """The secrets no client, log line or cassette may see: the upstream key, client keys."""
        self.telemetry = telemetry or Telemetry(upstream_url=config.upstream_url)
        self._signer: ApprovalSigner | None = None
        self.services: tuple[Service, ...] = ()
        self.route_paths: frozenset[str] = frozenset()
        """The paths of the app's routes (``create_app`` fills it in)."""

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # uvicorn has configured its loggers by now
        redacting = install_log_redaction(self.redactor) if self.redactor else None
        started: list[Service] = []
        try:
            for service in self.services:
                await service.start()
                started.append(service)
            yield
        finally:
            for service in reversed(started):
                await service.stop()
            await self.upstream.aclose()
            await self.store.aclose()
            if redacting is not None:
                uninstall_log_redaction(redacting)

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
        client = self.authenticate(request)
        raw = await _read_body(request, self.config.max_request_size)
        chat = self._parse(raw)
        runner = await self._runner(request, client, chat)
        if chat.is_streaming:
            return self._stream(request, runner.stream())
        completion = await self._complete(request, runner)
        return JSONResponse(completion)

    @_answering_errors
    async def responses(self, request: Request) -> Response:
        """``POST /v1/responses``: the same turn, in the Responses wire format."""
        client = self.authenticate(request)
        raw = await _read_body(request, self.config.max_request_size)
        body = load_body(raw, max_size=self.config.max_request_size)
        previous = None
        previous_id = body.get("previous_response_id")
        if isinstance(previous_id, str):
            found = await self.store.get(client, _RESPONSE_KEY + previous_id)
            previous = found if isinstance(found, list) else None
        references = await self._referenced_items(client, body.get("input"))
        translated = translate_request(body, previous_items=previous, find_item=references.get)
        chat = self._parse(orjson.dumps(translated.chat_body))
        runner = await self._runner(
            request, client, chat, lambda turn: ResponsesFrames(turn, translated, self.redactor)
        )
        frames = runner.frames
        assert isinstance(frames, ResponsesFrames)

        async def keep() -> None:
            if translated.store and frames.response is not None:
                await self._keep_response(client, translated, frames.response)

        if chat.is_streaming:

            async def stream_then_keep() -> AsyncGenerator[bytes, None]:
                async for piece in runner.stream():
                    yield piece
                await keep()

            return self._stream(request, stream_then_keep())
        response = await self._complete(request, runner)
        await keep()
        return JSONResponse(response)

    def _parse(self, raw: bytes) -> ChatRequest:
        return parse_request(
            raw,
            server_tools=self.tools,
            is_deepseek=self.upstream.is_deepseek,
            max_size=self.config.max_request_size,
        )

    async def _runner(
        self,
        request: Request,
        client: str,
        chat: ChatRequest,
        frames: Callable[[Turn], ClientFrames] | None = None,
    ) -> TurnRunner:
        """The conversation rebuilt, the turn and its runner, started (approvals settled and
        the first upstream response open)."""
        config = self.config
        telemetry: RequestTelemetry = request.state.telemetry
        telemetry.set_model(str(chat.body["model"]))
        try:
            signer: ApprovalSigner | None = await self.signer()
        except StateUnavailableError as error:  # plain chat goes on; approvals cannot
            logger.warning("the state store is unavailable (%s): %s", error.store, error.reason)
            signer = None
        chat.messages, settlements = await rebuild(
            chat.messages, stash=self.store, signer=signer, client=client
        )
        turn = Turn(
            chat,
            tools=ToolSet(self.tools),  # this request's tools, whatever an MCP server changes
            signer=signer,
            client=client,
            max_rounds=config.max_rounds,
            use_strict=self.use_strict,
            limits=self.limits,
            approvals=config.approvals,
        )
        runner = TurnRunner(
            turn,
            self.upstream.with_hooks(telemetry),
            store=self.store,
            settlements=settlements,
            max_tool_result_size=config.max_tool_result_size,
            state_ttl=config.approval_ttl,
            request_id=request.state.request_id,
            frames=frames(turn) if frames is not None else None,  # default: chat completions
            observer=telemetry,
            redactor=self.redactor,
        )
        try:
            await _while_connected(request.receive, runner.start())
        except BaseException:
            await runner.aclose()
            raise
        return runner

    def _stream(self, request: Request, frames: AsyncGenerator[bytes, None]) -> Response:
        telemetry: RequestTelemetry = request.state.telemetry
        return EventStreamResponse(  # type: ignore[return-value]
            telemetry.watch(frames), keepalive_interval=self.config.keepalive_interval
        )

    async def _complete(self, request: Request, runner: TurnRunner) -> dict[str, object]:
        try:
            return await _while_connected(request.receive, runner.complete())
        except BaseException:
            await runner.aclose()
            raise

    async def _referenced_items(self, client: str, items: object) -> dict[str, dict[str, object]]:
        """The stored items an input's ``item_reference`` entries name (unknown ones left out)."""
        found: dict[str, dict[str, object]] = {}
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and item.get("type") == "item_reference":
                item_id = item.get("id")
                if isinstance(item_id, str) and item_id not in found:
                    value = await self.store.get(client, _ITEM_KEY + item_id)
                    if isinstance(value, dict):
                        found[item_id] = value
        return found

    async def _keep_response(
        self, client: str, translated: ResponsesRequest, response: dict[str, object]
    ) -> None:
        """Keep a response for ``previous_response_id``, and its items for ``item_reference``."""
        ttl = self.config.approval_ttl
        await self.store.put(
            client, _RESPONSE_KEY + str(response["id"]), stored_items(translated, response), ttl
        )
        output = response.get("output")
        for item in output if isinstance(output, list) else []:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                await self.store.put(client, _ITEM_KEY + str(item["id"]), item, ttl)

    @_answering_errors
    async def models(self, request: Request) -> Response:
        self.authenticate(request)
        return JSONResponse(await self.upstream.list_models())

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @_answering_errors
    async def metrics(self, request: Request) -> Response:
        self.authenticate(request)
        return Response(self.telemetry.render(), media_type=CONTENT_TYPE_LATEST)

    @_answering_errors
    async def diagnostics(self, request: Request) -> Response:
        self.authenticate(request)
        return JSONResponse(
            snapshot(self.requests, open_upstream_responses=self.upstream.open_responses)
        )


def error_response(
    error: StreamProxyError, headers: dict[str, str], *, redactor: Redactor | None = None
) -> JSONResponse:
    """The status and OpenAI-shaped body for an error before the first byte.

    An upstream error keeps the upstream's status and, when it was OpenAI-shaped, its body
    (after redaction: an upstream may echo the key, in any encoding).
    """
    body: object = error.to_openai_error()
    if isinstance(error, UpstreamError) and isinstance(error.body, dict):
        upstream_error = error.body.get("error")
        if isinstance(upstream_error, dict) and "message" in upstream_error:
            body = {"error": upstream_error}
    if redactor:
        body = redactor.redact_json(body)
    return JSONResponse(body, status_code=error.status_hint, headers=headers)


async def _while_connected(receive: Receive, work: Coroutine[Any, Any, T]) -> T:
    """Await ``work``, cancelling it if the client disconnects first.

    Only for before the response starts (the request body already read): once streaming,
    ``EventStreamResponse`` watches for the disconnect itself. ``work`` runs in this task (one
    task fewer per request than running it beside the watcher): a disconnect cancels this task,
    and that cancellation becomes ``_ClientDisconnected`` here.

    Raises:
        _ClientDisconnected: the client went away; ``work`` was cancelled and awaited.
    """
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        with StopWhenDone(watcher):
            return await work
    finally:
        watcher.cancel()
    raise _ClientDisconnected  # the block ended because the client left


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
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestTooLargeError(f"the request is over the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise _ClientDisconnected from None
    return b"".join(chunks)
