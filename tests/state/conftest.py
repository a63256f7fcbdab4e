"""Fixtures for the state store tests: each backend behind one ``Backend`` handle, and a real
``redis-server`` on 127.0.0.1 (started once per session, flushed before each test).

When ``redis-server`` is not installed the redis tests skip with the command that installs it,
except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
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

INSTALL_REDIS = "apt-get install -y redis-server"


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


def require_redis_server() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        message = f"redis-server is not installed: {INSTALL_REDIS}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis://127.0.0.1:PORT``: a private redis-server for this session, always stopped."""
    binary = require_redis_server()
    directory = tmp_path_factory.mktemp("redis")
    for _ in range(3):  # another process may take the free port before redis binds it
        port = free_port()
        log = (directory / f"redis-{port}.log").open("wb")
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(directory),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            if _wait_for_redis(port, process):
                yield f"redis://127.0.0.1:{port}"
                return
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()
    output = "\n".join(p.read_text(errors="replace") for p in directory.glob("*.log"))
    pytest.fail(f"redis-server did not start:\n{output}")


def _wait_for_redis(port: int, process: subprocess.Popen[bytes]) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                if client.ping():
                    return True
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        return False
    finally:
        client.close()


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
