"""Fixtures for the state store tests: each backend behind one ``Backend`` handle, and a real
``redis-server`` on 127.0.0.1 (started once per session, flushed before each test).

When ``redis-server`` is not installed the redis tests skip with the command that installs it,
except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from streamproxy.proxy.state import (
    DEFAULT_LIMITS,
    DEFAULT_TIMEOUT,
    StateLimits,
    StateStore,
    open_state_store,
)


@pytest.fixture
def anyio_backend() -> str:
    """Async tests here (``pytestmark = pytest.mark.anyio``) run on asyncio only."""
    return "asyncio"


@dataclass
class FakeClock:
    """A wall clock that moves only when told; starts at the real time."""

    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    """One store kind under test: how to open it, and how to let time pass for it."""

    name: str
    url: str
    clock: FakeClock = field(default_factory=FakeClock)

    def open(
        self, *, limits: StateLimits = DEFAULT_LIMITS, timeout: float = DEFAULT_TIMEOUT
    ) -> StateStore:
        return open_state_store(self.url, limits=limits, timeout=timeout, clock=self.clock)

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass. Redis stamps ledger entries with its own clock, so for redis
        the time also really passes (tests keep such ttls short)."""
        self.clock.now += seconds
        if self.name == "redis":
            await asyncio.sleep(seconds)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's redis-server, database 0, emptied for this test."""
    client = redis.Redis.from_url(redis_server)
    try:
        client.flushdb()
    finally:
        client.close()
    return f"{redis_server}/0"


@pytest.fixture(params=["memory", "sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return _backend(request, tmp_path)


@pytest.fixture(params=["sqlite", "redis"])
def shared_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """The stores that several processes or hosts share (memory:// is one process's)."""
    return _backend(request, tmp_path)


def _backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "memory":
        return Backend("memory", "memory://")
    if request.param == "sqlite":
        return Backend("sqlite", f"sqlite://{tmp_path / 'state.db'}")
    return Backend("redis", request.getfixturevalue("redis_url"))


@pytest.fixture
async def store(backend: Backend, anyio_backend: str) -> AsyncIterator[StateStore]:
    opened = backend.open()
    try:
        yield opened
    finally:
        await opened.aclose()


SMALL_LIMITS = StateLimits(max_stash_entries=3, max_stash_bytes=1000, max_ledger_entries=3)
"""Bounds small enough to reach in a few calls."""
