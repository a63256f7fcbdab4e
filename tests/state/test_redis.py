"""What only the redis store does: separate hosts racing, and a server that is down or silent.

Uses the session's real redis-server (``conftest.py``); the unreachable cases need none.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
import redis.asyncio

from streamproxy.errors import StateUnavailableError
from streamproxy.proxy.state import StateStore, open_state_store
from tests.services import free_port

pytestmark = pytest.mark.anyio

KEYS = 50
# A hang guard, not a speed check: each operation must give up on its own well before this.
HANG_GUARD = 30.0


async def test_two_hosts_racing_claims_win_each_key_once(redis_url: str) -> None:
    hosts = [open_state_store(redis_url), open_state_store(redis_url)]
    names = [f"spw1.{number}" for number in range(KEYS)]
    try:
        claims = [host.claim("alice", name, 600) for name in names for host in hosts]
        results = await asyncio.gather(*claims)
        secrets = await asyncio.gather(*(host.secret() for host in hosts))
    finally:
        for host in hosts:
            await host.aclose()

    won = [
        name for (name, _), result in zip(_pairs(names), results, strict=True) if result.is_claimed
    ]
    assert sorted(won) == sorted(names)
    assert secrets[0] == secrets[1]


def _pairs(names: list[str]) -> Iterator[tuple[str, int]]:
    for name in names:
        for host in range(2):
            yield name, host


async def _every_operation(store: StateStore) -> list[StateUnavailableError]:
    operations = [
        store.put("alice", "key", [], 60),
        store.get("alice", "key"),
        store.claim("alice", "call", 60),
        store.record("alice", "call", {"status": "ok"}, 60),
        store.secret(),
    ]
    errors = []
    async with asyncio.timeout(HANG_GUARD):
        for operation in operations:
            with pytest.raises(StateUnavailableError) as raised:
                await operation
            errors.append(raised.value)
    return errors


async def test_a_closed_port_raises_state_unavailable_on_every_operation() -> None:
    store = open_state_store(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    try:
        errors = await _every_operation(store)
    finally:
        await store.aclose()

    assert {error.status_hint for error in errors} == {503}
    assert all("ConnectionError" in error.reason for error in errors)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


async def test_a_silent_server_raises_state_unavailable_after_the_timeout(
    silent_port: int,
) -> None:
    store = open_state_store(f"redis://127.0.0.1:{silent_port}/0", timeout=0.2)
    try:
        errors = await _every_operation(store)
    finally:
        await store.aclose()

    assert len(errors) == 5


async def test_the_password_never_reaches_the_error() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    store = open_state_store(url, timeout=0.5)
    try:
        with pytest.raises(StateUnavailableError) as raised:
            await store.get("alice", "key")
    finally:
        await store.aclose()

    error = raised.value
    assert "hunter2" not in f"{error} {error.store} {error.reason} {error.to_openai_error()}"
    assert error.store.startswith("redis://:***@127.0.0.1:")


async def test_a_dropped_pooled_connection_is_replaced_without_an_error(redis_url: str) -> None:
    store = open_state_store(redis_url)
    try:
        await store.put("alice", "key", ["before"], 60)
        admin = redis.asyncio.Redis.from_url(redis_url)
        await admin.client_kill_filter(_type="normal", skipme=True)
        await admin.aclose()

        assert await store.get("alice", "key") == ["before"]
    finally:
        await store.aclose()
