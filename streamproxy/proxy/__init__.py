"""The proxy: an OpenAI-compatible chat endpoint that runs server tools mid-stream.

- ``app.py``: ``create_app(config)``, the Starlette adapter;
- ``loop.py``: ``Turn`` (the tool-loop state machine, no I/O) and ``TurnRunner`` (its driver);
- ``request.py``: checking the client's request and rebuilding the upstream conversation;
- ``approval.py``: signed write calls; ``stash.py``: what is kept between requests;
- ``response.py``: the event-stream response with keep-alives; ``usage.py``: usage over rounds.

See ``docs/proxy.md`` for the behaviour in prose.
"""

from __future__ import annotations

from streamproxy.proxy.app import create_app
from streamproxy.proxy.loop import Turn, TurnRunner

__all__ = ["Turn", "TurnRunner", "create_app"]
