"""The loopback replay server: an OpenAI-compatible upstream made of a cassette.

Routes:

- ``POST /v1/chat/completions`` and ``POST /chat/completions`` (in fact any POST path): the
  matching interaction, replayed with its recorded status, headers, chunks, timing and faults.
  A request that matches nothing gets ``400`` and ``{"error": {"message", "type", "code"}}``
  naming the nearest interaction (400, not 500, so SDKs report it at once instead of retrying).
- ``GET /v1/models`` (and ``/models``): the models named in the cassette's requests.
- ``GET /_streamproxy/requests``: a test aid, the requests received so far, oldest first, as
  ``[{"method", "path", "query", "body"}]`` (``body`` is the JSON body, or ``null``);
  ``DELETE`` clears the list. Headers are not exposed.

A ``drop_at`` fault sends its bytes and then aborts the response, so the client sees the
connection close without the end of the chunked body.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from streamproxy.cassette.format import RecordedRequest
from streamproxy.cassette.http import recorded_request
from streamproxy.cassette.replay import Answer, Replayer
from streamproxy.core.errors import CassetteError

MISMATCH_STATUS = 400
INSPECTION_PATH = "/_streamproxy/requests"


class ReplayConnectionDropped(Exception):
    """Raised inside the response body to abort the connection (the ``drop_at`` fault)."""


def create_replay_app(replayer: Replayer) -> Starlette:
    """A Starlette app that answers from ``replayer`` (see the module docstring)."""

    async def requests_received(request: Request) -> Response:
        if request.method == "DELETE":
            replayer.received.clear()
            return Response(status_code=204)
        return JSONResponse([_summary(item) for item in replayer.received])

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
        recorded = recorded_request(
            request.method,
            request.url.path,
            request.url.query,
            request.headers.items(),
            await request.body(),
            set(),
        )
        try:
            answer = replayer.answer(recorded)
        except CassetteError as error:
            return JSONResponse(error.to_openai_error(), status_code=MISMATCH_STATUS)
        return StreamingResponse(
            _body(answer, started), status_code=answer.status, headers=dict(answer.headers)
        )

    return Starlette(
        routes=[
            Route(INSPECTION_PATH, requests_received, methods=["GET", "DELETE"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/models", models, methods=["GET"]),
            Route("/{path:path}", replay, methods=["POST", "PUT", "PATCH", "GET", "DELETE"]),
        ]
    )


async def _body(answer: Answer, started: float) -> AsyncIterator[bytes]:
    for piece in answer.delivery.pieces:
        wait = started + answer.due_seconds(piece) - time.monotonic()
        if wait > 0:
            await anyio.sleep(wait)
        yield piece.data
    if answer.delivery.is_dropped:
        raise ReplayConnectionDropped(
            f"replay fault: connection dropped after {len(answer.delivery.body)} bytes"
        )


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
