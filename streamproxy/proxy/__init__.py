"""The proxy: an OpenAI-compatible chat endpoint that runs server tools mid-stream.

One protocol per module (``docs/architecture.md`` draws them and how a request flows):

- ``app.py``: routes, authentication, limits and the one error helper (``create_app``);
- ``request.py``: checking the client's request; ``conversation.py``: rebuilding the upstream
  conversation from what the client sends back;
- ``turn.py``: the tool loop as a state machine (no I/O); ``runner.py``: its asyncio driver;
- ``frames.py``: the chat wire format; ``responses/``: the Responses API's; ``response.py``: the
  event-stream response (keep-alives, coalesced writes);
- ``approval.py``: the whole approval protocol; ``state/``: the store behind the stash, the
  ledger and the secret; ``audit.py``: the audit log;
- ``tools.py``, ``strict_schema.py``, ``mcp/``: server tools (Python functions, MCP servers);
- ``upstream.py``: the upstream client with retries; ``content_encoding.py``: bounded decoding;
- ``guard.py``: head/body deadlines and the connection cap in front of uvicorn;
- ``telemetry.py`` (``metrics.py``, ``tracing.py``), ``diagnostics.py``, ``playground.py``,
  ``usage.py``.

See ``docs/proxy.md`` for the behaviour in prose.
"""

from __future__ import annotations

from streamproxy.proxy.app import create_app

__all__ = ["create_app"]
