"""An opt-in diagnostics endpoint: what one proxy process holds right now.

``GET /_streamproxy/diagnostics`` exists only when turned on (``streamproxy serve
--diagnostics``, ``STREAMPROXY_DIAGNOSTICS=1`` in the environment, or
``Config(diagnostics=True)``), and needs a client key like every other route when keys are set.
It answers::

    {"active_requests": 0, "open_upstream_responses": 0, "running_tools": 0,
     "asyncio_tasks": 2, "tasks": ["Task-1", "Task-2"]}

- ``active_requests``: HTTP requests in flight, streams until their last byte (this one excluded);
- ``open_upstream_responses``: upstream responses opened and not closed yet;
- ``running_tools``: server tool runs not finished (asyncio tasks named ``tool NAME ID``; a sync
  tool's thread that outlived its timeout or a disconnect is not counted: it cannot be stopped);
- ``asyncio_tasks`` and ``tasks``: the event loop's live tasks (this request's excluded), which
  return to their idle number once every request has ended.

The numbers are per process: with ``--workers`` > 1 each answer comes from the worker that took
the request. The fault tests use it to assert that nothing is left running after each case.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["DIAGNOSTICS_PATH", "RequestCounter", "Requests", "snapshot"]

DIAGNOSTICS_PATH = "/_streamproxy/diagnostics"
TOOL_TASK_PREFIX = "tool "


@dataclass(slots=True)
class Requests:
    """The number of HTTP requests in flight."""

    active: int = 0


class RequestCounter:
    """ASGI middleware counting requests in flight (the diagnostics request itself excluded)."""

    def __init__(self, app: ASGIApp, *, requests: Requests) -> None:
        self.app = app
        self.requests = requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == DIAGNOSTICS_PATH:
            await self.app(scope, receive, send)
            return
        self.requests.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.requests.active -= 1


def snapshot(requests: Requests, *, open_upstream_responses: int) -> dict[str, object]:
    """The diagnostics document (see the module docstring); call it on the event loop."""
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    names = sorted(task.get_name() for task in tasks)
    return {
        "active_requests": requests.active,
        "open_upstream_responses": open_upstream_responses,
        "running_tools": sum(name.startswith(TOOL_TASK_PREFIX) for name in names),
        "asyncio_tasks": len(tasks),
        "tasks": names,
    }
