"""The loopback replay server: an OpenAI-compatible upstream made of a cassette.

Routes:

- ``POST /v1/chat/completions`` and ``POST /chat/completions`` (in fact any POST path): the
  matching interaction, replayed with its recorded status, headers, chunks, timing and faults.
  A request that matches nothing gets ``400`` and ``{"error": {"message", "type", "code"}}``
  naming the nearest interaction (400, not 500, so SDKs report it at once instead of retrying).
- ``GET /v1/models`` (and ``/models``): the models named in the cassette's requests.
- ``GET /_streamproxy/requests``: a test aid, the requests received so far, oldest first, as
  ``[{"method", "path", "query", "body"}]`` (``body`` is the JSON body, or ``null``);
  ``DELETE`` clears the list. Headers are not exposed. It is a ring: only the newest
  :data:`~streamproxy.cassette.replay.RECEIVED_LIMIT` (1000) requests are kept.
- ``POST /_streamproxy/plan``: a test aid that scripts the next requests, one per entry, in
  arrival order (a proxy in front cannot pass a header through, so the fault is chosen here):
  a JSON list of objects ``{"interaction": INDEX, ...}`` with any ``Faults`` field
  (``{"status": 429, "retry_after": 0}``, ``{"interaction": 1, "drop_at": 700}``, ``{}`` for the
  clean recording). An entry's faults replace the command line's for its request; requests
  beyond the plan are matched as usual. ``GET`` shows what is left, ``DELETE`` clears it. A bad
  entry (an unknown field, a wrong type, a value out of bounds such as a ``huge_event`` over
  32 MiB) is refused with ``400`` and ``{"error": {"message", "type"}}``, and nothing is added.
  A body over :data:`MAX_CONTROL_BODY` gets ``413``; at most
  :data:`~streamproxy.cassette.replay.PLAN_LIMIT` plans wait at once.
- ``GET /_streamproxy/responses``: a test aid counting the replayed responses:
  ``{"open", "finished", "dropped", "aborted"}``: still sending; sent to the end; cut by a
  ``drop_at`` fault; ended because the client went away first (the upstream connection a proxy
  closed). ``DELETE`` resets the finished, dropped and aborted counts.

The three ``/_streamproxy/`` routes are the *control endpoints*. With ``allow_control=False``
(what ``streamproxy replay`` does when bound to an address other than loopback, unless given
``--allow-remote-control``) they answer ``403``: anyone who can reach the port could otherwise
script faults and read the request bodies.

A request body over :data:`MAX_REQUEST_BODY` gets ``413``.

A ``drop_at`` fault sends its bytes and then aborts the response, so the client sees the
connection close without the end of the chunked body.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass

import anyio
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from streamproxy.cassette.faults import Faults
from streamproxy.cassette.format import RecordedRequest
from streamproxy.cassette.http import recorded_request
from streamproxy.cassette.replay import Answer, Plan, Replayer
from streamproxy.errors import CassetteError

MISMATCH_STATUS = 400
INSPECTION_PATH = "/_streamproxy/requests"
PLAN_PATH = "/_streamproxy/plan"
RESPONSES_PATH = "/_streamproxy/responses"
CONTROL_PREFIX = "/_streamproxy/"
_ALL_METHODS = ["POST", "PUT", "PATCH", "GET", "DELETE"]
MAX_CONTROL_BODY = 1024 * 1024
"""The largest body the plan endpoint reads: 1 MiB."""
MAX_REQUEST_BODY = 32 * 1024 * 1024
"""The largest request body the replay routes read: 32 MiB."""


@dataclass(slots=True)
class ResponseCounts:
    """How the replayed responses ended (see the module docstring)."""

    open: int = 0
    finished: int = 0
    dropped: int = 0
    aborted: int = 0


class ReplayConnectionDropped(Exception):
    """Raised inside the response body to abort the connection (the ``drop_at`` fault)."""


class _BodyTooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused once it passes ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise _BodyTooLarge
    return bytes(body)


def _error(message: str, status: int, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


def _too_large(limit: int) -> JSONResponse:
    return _error(f"the request body is larger than {limit} bytes", 413, "request_too_large")


def create_replay_app(replayer: Replayer, *, allow_control: bool = True) -> Starlette:
    """A Starlette app that answers from ``replayer`` (see the module docstring).

    Args:
        allow_control: serve the ``/_streamproxy/`` control endpoints; when false they answer
            ``403`` (for a server reachable from other machines).
    """

    counts = ResponseCounts()

    async def refused(request: Request) -> Response:
        return _error(
            "the control endpoints are off on a non-loopback address; "
            "start streamproxy replay with --allow-remote-control to use them",
            403,
            "permission_error",
        )

    async def requests_received(request: Request) -> Response:
        if request.method == "DELETE":
            replayer.received.clear()
            return Response(status_code=204)
        return JSONResponse([_summary(item) for item in replayer.received])

    async def plan(request: Request) -> Response:
        if request.method == "DELETE":
            replayer.plan.clear()
            return Response(status_code=204)
        if request.method == "POST":
            try:
                entries = orjson.loads(await _read_body(request, MAX_CONTROL_BODY))
                if not isinstance(entries, list):
                    raise ValueError("the plan is a JSON list of objects")
                plans = []
                for index, entry in enumerate(entries):
                    try:
                        plans.append(Plan.from_json(entry))
                    except ValueError as error:
                        raise ValueError(f"plan entry {index}: {error}") from None
                replayer.add_plan(plans)
            except _BodyTooLarge:
                return _too_large(MAX_CONTROL_BODY)
            except orjson.JSONDecodeError:
                return _error("the plan is not JSON", 400)
            except (ValueError, CassetteError) as error:
                message = error.message if isinstance(error, CassetteError) else str(error)
                return _error(message, 400)
        return JSONResponse([_plan_summary(item) for item in replayer.plan])

    async def responses(request: Request) -> Response:
        if request.method == "DELETE":
            counts.finished = counts.dropped = counts.aborted = 0
            return Response(status_code=204)
        return JSONResponse(asdict(counts))

    async def models(request: Request) -> Response:
        names = sorted(
            {
                str(interaction.request.body["model"])
                for interaction in replayer.cassette.interactions
                if interaction.request is not None
                and isinstance(interaction.request.body, dict)
                and "model" in interaction.request.body
            }
            or {"streamproxy-replay"}
        )
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "replay"} for name in names
        ]
        return JSONResponse({"object": "list", "data": data})

    async def replay(request: Request) -> Response:
        started = time.monotonic()
        try:
            content = await _read_body(request, MAX_REQUEST_BODY)
        except _BodyTooLarge:
            return _too_large(MAX_REQUEST_BODY)
        recorded = recorded_request(
            request.method,
            request.url.path,
            request.url.query,
            request.headers.items(),
            content,
            set(),
        )
        try:
            answer = replayer.answer(recorded)
        except CassetteError as error:
            return JSONResponse(error.to_openai_error(), status_code=MISMATCH_STATUS)
        return _CountedResponse(answer, started, counts)

    if allow_control:
        control = [
            Route(INSPECTION_PATH, requests_received, methods=["GET", "DELETE"]),
            Route(PLAN_PATH, plan, methods=["GET", "POST", "DELETE"]),
            Route(RESPONSES_PATH, responses, methods=["GET", "DELETE"]),
        ]
    else:
        control = [Route(CONTROL_PREFIX + "{path:path}", refused, methods=_ALL_METHODS)]
    return Starlette(
        routes=[
            *control,
            Route("/v1/models", models, methods=["GET"]),
            Route("/models", models, methods=["GET"]),
            Route("/{path:path}", replay, methods=_ALL_METHODS),
        ]
    )


class _CountedResponse(StreamingResponse):
    """The replayed body, counted in ``ResponseCounts`` by how it ended."""

    def __init__(self, answer: Answer, started: float, counts: ResponseCounts) -> None:
        self.answer = answer
        self.started = started
        self.counts = counts
        self.is_sent = False
        super().__init__(self._body(), status_code=answer.status, headers=dict(answer.headers))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.counts.open += 1
        try:
            await super().__call__(scope, receive, send)
        except ReplayConnectionDropped:
            self.counts.dropped += 1
            raise
        except BaseException:
            self.counts.aborted += 1
            raise
        else:
            # Starlette returns normally when the client disconnected mid-body.
            if self.is_sent:
                self.counts.finished += 1
            else:
                self.counts.aborted += 1
        finally:
            self.counts.open -= 1

    async def _body(self) -> AsyncIterator[bytes]:
        answer = self.answer
        for piece in answer.delivery.pieces:
            wait = self.started + answer.due_seconds(piece) - time.monotonic()
            if wait > 0:
                await anyio.sleep(wait)
            yield piece.data
        if answer.delivery.is_dropped:
            raise ReplayConnectionDropped(
                f"replay fault: connection dropped after {len(answer.delivery.body)} bytes"
            )
        self.is_sent = True


def _plan_summary(plan: Plan) -> dict[str, object]:
    default = asdict(Faults())
    faults = {key: value for key, value in asdict(plan.faults).items() if value != default[key]}
    return {"interaction": plan.interaction, **faults}


def _summary(request: RecordedRequest) -> dict[str, object]:
    body = request.body if request.raw_body is None else None
    return {"method": request.method, "path": request.path, "query": request.query, "body": body}


def serve(app: Starlette, *, host: str, port: int, name: str, log_level: str = "warning") -> None:
    """Run ``app`` with uvicorn on ``host:port`` until interrupted.

    The socket is bound before serving, so port 0 works: the bound URL is printed (and flushed)
    as the first line on stdout, ``<name>: listening on http://HOST:PORT``; connections made
    after that line wait in the listen backlog until uvicorn accepts them.
    """
    import socket
    import sys

    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    bound_port = sock.getsockname()[1]
    shown_host = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"{name}: listening on http://{shown_host}:{bound_port}", flush=True)
    sys.stdout.flush()
    config = uvicorn.Config(app, log_level=log_level, lifespan="auto", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
