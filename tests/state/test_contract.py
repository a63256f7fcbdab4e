"""The contract every state store keeps, run against memory://, sqlite:// and redis://."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from streamproxy.errors import StateLimitError, StateUnavailableError
from streamproxy.proxy.state import DEFAULT_LIMITS, StateStore
from tests.state.conftest import SMALL_LIMITS, Backend

pytestmark = pytest.mark.anyio

HOUR = 3600.0
# Ledger ttls that must run out during a test: redis stamps the ledger with its own clock, so
# these really pass there (Backend.advance).
SHORT = 0.2
LONGER_THAN_SHORT = 0.3
MESSAGES = [{"role": "assistant", "content": "hi", "tool_calls": [{"id": "call_1"}]}]


async def test_get_returns_what_was_put(store: StateStore) -> None:
    await store.put("alice", "calls:call_1", MESSAGES, HOUR)

    assert await store.get("alice", "calls:call_1") == MESSAGES
    assert await store.get("alice", "calls:call_2") is None


async def test_get_many_returns_each_keys_value_in_order(
    backend: Backend, store: StateStore
) -> None:
    await store.put("alice", "calls:call_1", MESSAGES, HOUR)
    await store.put("alice", "content:short", ["soon gone"], SHORT)
    await store.put("alice", "content:x", ["x"], HOUR)
    await store.put("bob", "content:y", ["bob's"], HOUR)
    await backend.advance(LONGER_THAN_SHORT)

    keys = ["content:x", "content:short", "content:y", "calls:call_1", "content:x"]
    assert await store.get_many("alice", keys) == [["x"], None, None, MESSAGES, ["x"]]
    assert await store.get_many("alice", []) == []
    assert await store.get_many("carol", ["content:x"]) == [None]


async def test_put_replaces_the_value_under_its_key(store: StateStore) -> None:
    await store.put("alice", "key", ["first"], HOUR)
    await store.put("alice", "key", ["second"], HOUR)

    assert await store.get("alice", "key") == ["second"]


async def test_a_client_cannot_read_another_clients_entry(store: StateStore) -> None:
    await store.put("alice", "key", ["alice's"], HOUR)

    assert await store.get("bob", "key") is None
    assert await store.get("", "key") is None


async def test_a_value_changed_after_put_is_stashed_as_it_was(store: StateStore) -> None:
    value = [{"role": "tool", "content": "before"}]
    await store.put("alice", "key", value, HOUR)
    value[0]["content"] = "after"

    assert await store.get("alice", "key") == [{"role": "tool", "content": "before"}]


async def test_a_stash_entry_expires_after_its_ttl(backend: Backend, store: StateStore) -> None:
    await store.put("alice", "short", ["x"], SHORT)
    await store.put("alice", "long", ["y"], HOUR)
    await backend.advance(LONGER_THAN_SHORT)

    assert await store.get("alice", "short") is None
    assert await store.get("alice", "long") == ["y"]


async def test_one_clients_puts_never_evict_another_clients_entry(
    backend: Backend, store: StateStore
) -> None:
    await store.put("bob", "calls:call_1", MESSAGES, HOUR)
    puts = 2000
    for number in range(puts):
        backend.clock.now += 0.001  # the clock moves on between requests
        await store.put("alice", f"calls:{number:04}", [number], HOUR)

    assert await store.get("bob", "calls:call_1") == MESSAGES
    kept = [n for n in range(puts) if await store.get("alice", f"calls:{n:04}") is not None]
    assert kept == list(range(puts - DEFAULT_LIMITS.max_stash_entries, puts))


async def test_over_its_byte_bound_a_client_loses_its_oldest_entries(backend: Backend) -> None:
    store = backend.open(limits=SMALL_LIMITS)
    try:
        text = "x" * 290  # each entry: 2-byte key plus a 294-byte JSON value
        for number in range(1, 5):
            backend.clock.now += 1
            await store.put("alice", f"k{number}", [text], HOUR)
        await store.put("bob", "k1", [text], HOUR)

        present = [n for n in range(1, 5) if await store.get("alice", f"k{n}") is not None]
        assert present == [2, 3, 4]
        assert await store.get("bob", "k1") == [text]
    finally:
        await store.aclose()


async def test_a_value_larger_than_the_share_is_refused_and_nothing_is_lost(
    backend: Backend,
) -> None:
    store = backend.open(limits=SMALL_LIMITS)
    try:
        await store.put("alice", "small", ["kept"], HOUR)
        with pytest.raises(StateLimitError) as raised:
            await store.put("alice", "big", ["x" * SMALL_LIMITS.max_stash_bytes], HOUR)

        assert raised.value.status_hint == 429
        assert await store.get("alice", "small") == ["kept"]
        assert await store.get("alice", "big") is None
    finally:
        await store.aclose()


async def test_expired_entries_leave_before_live_ones(backend: Backend) -> None:
    store = backend.open(limits=SMALL_LIMITS)
    try:
        await store.put("alice", "live", [1], HOUR)
        await store.put("alice", "expiring", [2], SHORT)
        await store.put("alice", "also-live", [3], HOUR)
        await backend.advance(LONGER_THAN_SHORT)
        await store.put("alice", "new", [4], HOUR)  # a fourth entry: one must go

        assert await store.get("alice", "live") == [1]
        assert await store.get("alice", "also-live") == [3]
        assert await store.get("alice", "new") == [4]
    finally:
        await store.aclose()


async def test_fifty_concurrent_claims_on_one_key_give_exactly_one_claimed(
    store: StateStore,
) -> None:
    results = await asyncio.gather(*(store.claim("alice", "spw1.x", HOUR) for _ in range(50)))

    assert Counter(result.status for result in results) == {"claimed": 1, "running": 49}
    assert sum(result.is_claimed for result in results) == 1


async def test_a_recorded_outcome_answers_every_later_claim(store: StateStore) -> None:
    outcome = {"status": "ok", "content": "wrote 3 rows"}
    first = await store.claim("alice", "call", HOUR)
    await store.record("alice", "call", outcome, HOUR)
    again = await store.claim("alice", "call", HOUR)
    once_more = await store.claim("alice", "call", HOUR)

    assert first.status == "claimed"
    assert first.outcome is None
    assert again.status == once_more.status == "recorded"
    assert again.outcome == once_more.outcome == outcome


async def test_a_claim_never_recorded_stays_running_until_its_ttl(
    backend: Backend, store: StateStore
) -> None:
    assert (await store.claim("alice", "call", SHORT)).status == "claimed"
    assert (await store.claim("alice", "call", SHORT)).status == "running"
    await backend.advance(LONGER_THAN_SHORT)

    assert (await store.claim("alice", "call", SHORT)).status == "claimed"


async def test_the_ledger_is_per_client(store: StateStore) -> None:
    assert (await store.claim("alice", "call", HOUR)).is_claimed
    assert (await store.claim("bob", "call", HOUR)).is_claimed


async def test_a_full_ledger_refuses_new_claims_and_keeps_every_entry(backend: Backend) -> None:
    store = backend.open(limits=SMALL_LIMITS)
    try:
        for number in range(SMALL_LIMITS.max_ledger_entries):
            assert (await store.claim("alice", f"call-{number}", SHORT)).is_claimed
        await store.record("alice", "call-1", {"status": "ok", "content": "done"}, SHORT)

        with pytest.raises(StateLimitError) as raised:
            await store.claim("alice", "call-new", SHORT)
        assert raised.value.status_hint == 429
        # the held keys still answer, and other clients are not affected
        assert (await store.claim("alice", "call-0", SHORT)).status == "running"
        assert (await store.claim("alice", "call-1", SHORT)).outcome == {
            "status": "ok",
            "content": "done",
        }
        assert (await store.claim("bob", "call-new", SHORT)).is_claimed

        await backend.advance(LONGER_THAN_SHORT)
        assert (await store.claim("alice", "call-new", SHORT)).is_claimed
    finally:
        await store.aclose()


async def test_the_secret_is_32_bytes_and_never_changes(store: StateStore) -> None:
    first = await store.secret()

    assert len(first) == 32
    assert await store.secret() == first


async def test_two_stores_on_one_url_share_stash_ledger_and_secret(
    shared_backend: Backend,
) -> None:
    one, two = shared_backend.open(), shared_backend.open()
    try:
        await one.put("alice", "key", MESSAGES, HOUR)
        claims = [await one.claim("alice", "call", HOUR), await two.claim("alice", "call", HOUR)]

        assert await two.get("alice", "key") == MESSAGES
        assert [claim.status for claim in claims] == ["claimed", "running"]
        assert await one.secret() == await two.secret()
    finally:
        await one.aclose()
        await two.aclose()


@pytest.mark.parametrize("ttl", [0.0, -1.0, float("nan")])
async def test_a_ttl_must_be_positive(store: StateStore, ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl"):
        await store.put("alice", "key", [], ttl)
    with pytest.raises(ValueError, match="ttl"):
        await store.claim("alice", "key", ttl)
    with pytest.raises(ValueError, match="ttl"):
        await store.record("alice", "key", {}, ttl)


async def test_a_closed_store_raises_state_unavailable(backend: Backend) -> None:
    store = backend.open()
    await store.aclose()

    with pytest.raises(StateUnavailableError) as raised:
        await store.get("alice", "key")
    assert raised.value.status_hint == 503
    with pytest.raises(StateUnavailableError):
        await store.claim("alice", "key", HOUR)
