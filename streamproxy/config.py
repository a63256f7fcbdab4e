"""The proxy's configuration: one frozen dataclass, built by ``streamproxy serve`` or by hand.

``Config`` holds everything ``create_app`` needs. The upstream key is a field (so the app can
be built without touching the environment) but it never shows in ``repr`` or logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

StrictMode = Literal["auto", "on", "off"]
"""Send server tools with ``strict: true``: ``auto`` does so when the upstream is DeepSeek."""

LogLevel = Literal["critical", "error", "warning", "info", "debug"]

ApprovalMode = Literal["chat", "client"]
"""How a ``needs_approval`` call asks the user: a yes/no question in the chat, or a signed tool
call for an SDK client (``streamproxy.proxy.approval``)."""

DEEPSEEK_BASE_URL = "https://api.deepseek.com"
DEFAULT_API_KEY_ENV = "DEEPSEEK_API_KEY"
DEFAULT_STATE_URL = "sqlite://"

# A chat request carries the whole conversation; DeepSeek's 1M-token context is about 4 MB of
# text, so 16 MiB leaves room for JSON escaping and images sent as data URLs.
DEFAULT_MAX_REQUEST_SIZE = 16 * 1024 * 1024
# One server tool call's arguments. Server tools take small, typed arguments; 1 MiB is generous
# and keeps one runaway call from holding much memory (the core default, 8 MiB, covers client
# tools, which may carry whole files).
DEFAULT_MAX_ARGUMENTS_SIZE = 1024 * 1024
# One tool result sent back to the model. 256 KiB is about 64k tokens: more would crowd the
# context window; a larger result becomes an error the model can read.
DEFAULT_MAX_TOOL_RESULT_SIZE = 256 * 1024
# Upstream requests per client request (the first one included).
DEFAULT_MAX_ROUNDS = 8


# A client sends its request head in one write; 10 s covers a slow link's retransmissions and
# closes a connection that dribbles its head (slowloris) long before it matters. The body gets
# 60 s: a 16 MiB request at 2 Mbit/s.
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 60.0
# Open client connections per process. Each idle one costs a few KiB; at the cap the one that
# has waited longest for a request head is closed first, so slow clients cannot lock others out.
DEFAULT_MAX_CONNECTIONS = 2048


# Load balancers close connections idle for 60 s (ALB, nginx); 15 s is the interval Anthropic's
# endpoint uses for its own pings.
DEFAULT_KEEPALIVE_INTERVAL = 15.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Everything the proxy app needs; the defaults are the documented behaviour."""

    upstream_url: str = DEEPSEEK_BASE_URL
    api_key: str | None = field(default=None, repr=False)
    tools: str | None = None
    """``module:attr`` naming a list of functions or a ``ToolSet``."""
    mcp_config: str | None = None
    """An ``{"mcpServers": ...}`` file whose servers' tools join the server tools
    (``streamproxy.proxy.mcp``)."""
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_rounds: int = DEFAULT_MAX_ROUNDS
    client_keys: frozenset[str] = field(default=frozenset(), repr=False)
    max_request_size: int = DEFAULT_MAX_REQUEST_SIZE
    max_arguments_size: int = DEFAULT_MAX_ARGUMENTS_SIZE
    max_tool_result_size: int = DEFAULT_MAX_TOOL_RESULT_SIZE
    keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL
    upstream_timeout: float = 600.0
    """The longest the upstream may stay silent: before its 2xx head (every attempt and backoff
    together), and mid-stream between events (keep-alive comments are silence)."""
    upstream_connect_timeout: float = 10.0
    retries: int = 2
    retry_base_delay: float = 0.5
    """The first retry's backoff in seconds (doubling, with jitter), when no Retry-After."""
    max_retry_wait: float = 30.0
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    """A client's request head must arrive within this many seconds (``408`` otherwise)."""
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    """A client's request body must arrive within this many seconds of its head."""
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    """Open client connections per process; beyond them, ``503`` (``streamproxy.proxy.guard``)."""
    strict_tools: StrictMode = "auto"
    approval_secret: bytes | None = field(default=None, repr=False)
    """Signs write-tool calls; shared by all workers. None: a random one per process."""
    approval_ttl: float = 3600.0
    """How long an approval request (and what the next request needs from this one) is kept."""
    approvals: ApprovalMode = "chat"
    state_url: str = DEFAULT_STATE_URL
    """Where the stash, the approval ledger and the approval secret live: ``sqlite:///PATH``,
    ``redis://HOST:PORT/DB`` or ``memory://`` (one process). The default, ``sqlite://``, is
    ``$XDG_STATE_HOME/streamproxy/state.db`` (``~/.local/state/...``): shared by the workers of
    one host and kept across restarts (``streamproxy.proxy.state``)."""
    is_offline_demo: bool = False
    log_level: LogLevel = "info"
    diagnostics: bool = False
    """Serve ``GET /_streamproxy/diagnostics`` (``streamproxy.proxy.diagnostics``)."""
    playground: bool = True
    """Serve the playground page at ``GET /`` (``streamproxy.proxy.playground``)."""

    def __post_init__(self) -> None:
        if self.max_rounds < 1:
            raise ValueError("max_rounds must be at least 1")
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        for name in (
            "max_request_size",
            "max_arguments_size",
            "max_tool_result_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.keepalive_interval <= 0:
            raise ValueError("keepalive_interval must be positive")
        if self.upstream_timeout <= 0:
            raise ValueError("upstream_timeout must be positive")
        if self.header_timeout <= 0 or self.body_timeout <= 0:
            raise ValueError("header_timeout and body_timeout must be positive")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if self.retries < 0 or self.retry_base_delay < 0 or self.max_retry_wait < 0:
            raise ValueError("retries, retry_base_delay and max_retry_wait must be >= 0")


def read_client_keys(variable: str | None) -> frozenset[str]:
    """The comma-separated client keys in environment ``variable`` (empty when unset)."""
    if not variable:
        return frozenset()
    raw = os.environ.get(variable)
    if raw is None:
        raise ValueError(f"--client-keys-env: environment variable {variable} is not set")
    keys = frozenset(key.strip() for key in raw.split(",") if key.strip())
    if not keys:
        raise ValueError(f"--client-keys-env: environment variable {variable} holds no key")
    return keys
