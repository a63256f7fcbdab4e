"""The proxy: an OpenAI-compatible chat endpoint that runs server tools mid-stream.

One protocol per module (``docs/architecture.md`` draws them and how a request flows):

- ``app.py``: routes, authentication, limits and the one error helper (``create_app``);
- ``request.py``: checking the client's request; ``conversation.py``: rebuilding the upstream
  conversation from what the client sends back;
- ``turn.py``: the tool loop as a state machine (no I/O); ``runner.py``: its asyncio driver;
- ``frames.py``: the client's wire format; ``response.py``: the event-stream response;
- ``approval.py``: the whole approval protocol; ``audit.py``: the audit log;
- ``tools.py`` and ``strict_schema.py``: server tools and their schemas; ``upstream.py``: the
  upstream client with retries; ``usage.py``: usage over rounds; ``diagnostics.py``.
"""

from __future__ import annotations

from streamproxy.proxy.app import create_app

__all__ = ["create_app"]
