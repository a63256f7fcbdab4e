"""The proxy's state store: what every worker process and every host behind one load balancer
must agree on.

Three things live here, each with an expiry:

- the **stash** (``put``/``get``/``get_many``): the upstream messages a client's next request
  stands for (``streamproxy.proxy.stash`` says which). JSON values, keyed by ``(client, key)``.
  Each client has its own bounded share (``StateLimits.max_stash_entries`` and
  ``max_stash_bytes``): when a ``put`` overfills it, that client's expired entries go first,
  then its entries nearest their expiry (its oldest, since the proxy stashes with one ttl).
  Nothing one client does can evict another client's entries;
- the **approval ledger** (``claim``/``record``): exactly-once for approved write calls.
  ``claim`` is atomic across processes and hosts: one caller gets ``"claimed"`` and runs the
  call, every other gets ``"running"`` (claimed, no outcome yet) or ``"recorded"`` with the
  outcome the winner stored with ``record``. Ledger entries are never evicted: when a client
  holds ``max_ledger_entries`` unexpired ones, its new claims raise ``StateLimitError``
  (its existing keys still answer). A claim whose holder crashed before ``record`` stays
  ``"running"`` until its ttl, so the call is never run a second time; give ``claim`` a ttl
  that outlives the approval's signature, and once it expires the signature has too;
- the **secret** (``secret``): 32 random bytes, created once per store and shared by everyone
  on it, so a write call signed before a restart, or by another host, still verifies.

Stores, chosen with ``--state URL`` and built by ``open_state_store``::

    memory://                     this process only (tests, one worker)
    sqlite:///ABSOLUTE/PATH       one host: worker processes share one file; survives restarts
    sqlite:RELATIVE/PATH          the same, relative to the working directory
    sqlite://                     the same, at default_sqlite_path()
    redis://[:PASSWORD@]HOST:PORT/DB   several hosts (rediss:// for TLS); Redis 5 or later

Every operation either finishes within ``timeout`` seconds or raises
``StateUnavailableError`` (503), and never hangs a request on a store that is down. Expired
entries are dropped lazily and by a bounded sweep every ``SWEEP_INTERVAL`` operations (redis
expires them itself). Times are wall-clock seconds (``time.time``; redis stamps ledger entries
with its own clock), since they are shared between processes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import SplitResult, urlsplit

import orjson

from streamproxy.errors import StateLimitError, StateUnavailableError

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_TIMEOUT",
    "ClaimResult",
    "ClaimStatus",
    "Clock",
    "Outcome",
    "StateLimits",
    "StateStore",
    "default_sqlite_path",
    "open_state_store",
    "redact_url",
]

Clock = Callable[[], float]
Outcome = dict[str, object]
"""A write call's recorded outcome: JSON-able, e.g. ``{"status": "ok", "content": "..."}``."""
ClaimStatus = Literal["claimed", "running", "recorded"]

# A down store must not hold a request for long: 2 s covers a redis round trip across a busy
# network and a sqlite writer's longest transaction (a sweep of SWEEP_BATCH rows) many times over.
DEFAULT_TIMEOUT = 2.0
# How many operations (per store object) between two sweeps of expired entries, and how many
# entries one sweep drops at most: bounded work, amortised to under one row per operation.
SWEEP_INTERVAL = 256
SWEEP_BATCH = 512
SECRET_SIZE = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class StateLimits:
    """Per-client bounds; every client gets the whole of each."""

    max_stash_entries: int = 1024
    """One entry per turn that handed calls to the client or ran server tools."""
    max_stash_bytes: int = 32 * 1024 * 1024
    """Key plus JSON value. A turn is at most a few MiB (``max_rounds`` tool results of 256 KiB,
    plus reasoning), so 32 MiB holds many of the largest turns and thousands of usual ones."""
    max_ledger_entries: int = 4096
    """Unexpired approval records: over one approval a second for a one-hour ttl. Each holds one
    tool result, which the proxy already bounds (``max_tool_result_size``)."""

    def __post_init__(self) -> None:
        for name in ("max_stash_entries", "max_stash_bytes", "max_ledger_entries"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


DEFAULT_LIMITS = StateLimits()


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimResult:
    """What ``claim`` found: the key is now yours, someone else's, or already done."""

    status: ClaimStatus
    outcome: Outcome | None = None
    """The recorded outcome when ``status == "recorded"``, else None."""

    @property
    def is_claimed(self) -> bool:
        return self.status == "claimed"


class StateStore(Protocol):
    """The one interface of every backend. All ttls are in seconds and must be positive.

    Every method raises ``StateUnavailableError`` when the store cannot be reached in time (or
    after ``aclose``); ``put`` and ``claim`` raise ``StateLimitError`` as described above.
    """

    async def put(self, client: str, key: str, value: object, ttl: float) -> None:
        """Stash a JSON-able ``value`` (replacing any under the same key) for ``ttl`` seconds."""
        ...

    async def get(self, client: str, key: str) -> object | None:
        """The value ``client`` stashed under ``key``, decoded; None when missing or expired.

        Another process or host wrote it: check its shape before use."""
        ...

    async def get_many(self, client: str, keys: Sequence[str]) -> list[object | None]:
        """``get`` of each of ``keys``, in order, in one round trip to the store (a rebuilt
        conversation looks up every assistant message at once)."""
        ...

    async def claim(self, client: str, key: str, ttl: float) -> ClaimResult:
        """Atomically take ``key`` for ``ttl`` seconds unless someone holds or recorded it."""
        ...

    async def record(self, client: str, key: str, outcome: Outcome, ttl: float) -> None:
        """Store the outcome of the call claimed under ``key``; it answers claims for ``ttl``."""
        ...

    async def secret(self) -> bytes:
        """The store's 32-byte secret, created at the first call on a new store."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads; later calls raise ``StateUnavailableError``."""
        ...


def open_state_store(
    url: str,
    *,
    limits: StateLimits = DEFAULT_LIMITS,
    timeout: float = DEFAULT_TIMEOUT,
    clock: Clock = time.time,
) -> StateStore:
    """The store ``url`` names (forms in the module docstring).

    ``timeout`` bounds each operation (redis connect plus command; sqlite's wait for a lock).
    ``clock`` is for tests.

    Raises:
        ValueError: the URL is malformed or names no supported store.
        StateUnavailableError: a sqlite file cannot be created or opened.
    """
    if timeout <= 0:
        raise ValueError("the state store timeout must be positive")
    parts = urlsplit(url)
    if parts.scheme == "memory":
        if parts.netloc or parts.path:
            raise ValueError(f"the memory state store takes no path: {url!r} (use memory://)")
        from streamproxy.proxy.state.memory import MemoryStateStore

        return MemoryStateStore(limits=limits, clock=clock)
    if parts.scheme == "sqlite":
        from streamproxy.proxy.state.sqlite import SqliteStateStore

        return SqliteStateStore(_sqlite_path(parts), limits=limits, timeout=timeout, clock=clock)
    if parts.scheme in ("redis", "rediss"):
        _check_redis_url(parts)
        from streamproxy.proxy.state.redis import RedisStateStore

        return RedisStateStore(url, limits=limits, timeout=timeout, clock=clock)
    raise ValueError(
        f"unsupported state store {redact_url(url)!r}: use memory://, sqlite:///PATH "
        "or redis://HOST:PORT/DB"
    )


def default_sqlite_path() -> Path:
    """``$XDG_STATE_HOME/streamproxy/state.db``, or ``~/.local/state/streamproxy/state.db``.

    The XDG base directory spec's place for state that should survive a restart.
    """
    base = os.environ.get("XDG_STATE_HOME") or ""
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "streamproxy" / "state.db"


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: safe for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return parts._replace(netloc=f"{user}:***@{host}{port}").geturl()


def encode_value(value: object) -> bytes:
    """``value`` as JSON bytes; TypeError when it is not JSON-able."""
    return orjson.dumps(value)


def decode_value(data: bytes | str, store: str) -> object:
    """A stored JSON value; ``StateUnavailableError`` when the store returned something else."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise StateUnavailableError(store, "a stored value is not JSON") from None


def decode_outcome(data: bytes | str, store: str) -> Outcome:
    outcome = decode_value(data, store)
    if not isinstance(outcome, dict):
        raise StateUnavailableError(store, "a recorded outcome is not a JSON object")
    return outcome


def check_ttl(ttl: float) -> None:
    if not ttl > 0:
        raise ValueError(f"a state ttl must be positive seconds, not {ttl!r}")


def check_stash_size(key: str, encoded: bytes, limits: StateLimits) -> int:
    """The bytes an entry counts against its client's share; StateLimitError if over it."""
    size = len(key.encode()) + len(encoded)
    if size > limits.max_stash_bytes:
        raise StateLimitError("one stash entry's size in bytes", limits.max_stash_bytes)
    return size


def ledger_full_error(limits: StateLimits) -> StateLimitError:
    return StateLimitError(
        "this client's number of unexpired approval records", limits.max_ledger_entries
    )


def _sqlite_path(parts: SplitResult) -> Path:
    if parts.netloc:
        raise ValueError(
            f"sqlite state store URLs have no host: sqlite://{parts.netloc}{parts.path} "
            "(an absolute path takes three slashes: sqlite:///var/lib/streamproxy/state.db)"
        )
    if parts.query or parts.fragment:
        raise ValueError("sqlite state store URLs take no query or fragment")
    if parts.path in ("", "/"):
        return default_sqlite_path()
    if parts.path.lstrip("/") == ":memory:":
        raise ValueError(
            "a sqlite :memory: database is private to one connection; use memory:// instead"
        )
    return Path(parts.path).expanduser()


def _check_redis_url(parts: SplitResult) -> None:
    if not parts.hostname:
        raise ValueError("a redis state store URL needs a host: redis://HOST:PORT/DB")
    try:
        parts.port  # noqa: B018 (urlsplit validates the port lazily)
    except ValueError:
        raise ValueError("the redis state store URL's port is not a number") from None
    database = parts.path.lstrip("/")
    if database and not database.isdigit():
        raise ValueError(f"the redis database must be a number, not {database!r}")
