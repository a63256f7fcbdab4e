"""``memory://``: the state store in this process's memory (tests, a single worker).

Each operation runs without awaiting, so on one event loop it is atomic. Values are kept as
JSON bytes, as the other stores keep them: a caller that changes a value after ``put`` does not
change what is stashed. Each client's stash is a dict plus a heap ordered by expiry, so
expired and soonest-expiring entries leave first at O(log n).
"""

from __future__ import annotations

import heapq
import itertools
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from streamproxy.errors import StateUnavailableError
from streamproxy.proxy.state import (
    DEFAULT_LIMITS,
    SECRET_SIZE,
    SWEEP_BATCH,
    SWEEP_INTERVAL,
    ClaimResult,
    Clock,
    Outcome,
    StateLimits,
    check_stash_size,
    check_ttl,
    decode_outcome,
    decode_value,
    encode_value,
    ledger_full_error,
)

__all__ = ["MemoryStateStore"]

NAME = "memory://"


@dataclass(slots=True)
class _StashEntry:
    value: bytes
    size: int
    expires: float
    sequence: int


@dataclass(slots=True)
class _ClientStash:
    """One client's share: entries, and a heap of ``(expires, sequence, key)`` that may hold
    stale items (replaced or removed entries), skipped when they surface."""

    entries: dict[str, _StashEntry] = field(default_factory=dict)
    heap: list[tuple[float, int, str]] = field(default_factory=list)
    size: int = 0

    def add(self, key: str, entry: _StashEntry) -> None:
        self.remove(key)
        self.entries[key] = entry
        self.size += entry.size
        heapq.heappush(self.heap, (entry.expires, entry.sequence, key))
        if len(self.heap) > 2 * len(self.entries) + 64:
            self.heap = [(e.expires, e.sequence, k) for k, e in self.entries.items()]
            heapq.heapify(self.heap)

    def remove(self, key: str) -> None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            self.size -= entry.size

    def shrink(self, now: float, limits: StateLimits, budget: int) -> int:
        """Drop expired entries, then the soonest-expiring while over a bound; the count."""
        dropped = 0
        while self.heap and dropped < budget:
            expires, sequence, key = self.heap[0]
            entry = self.entries.get(key)
            if entry is None or entry.sequence != sequence:
                heapq.heappop(self.heap)
                continue
            is_over = len(self.entries) > limits.max_stash_entries or (
                self.size > limits.max_stash_bytes
            )
            if expires > now and not is_over:
                break
            heapq.heappop(self.heap)
            self.remove(key)
            dropped += 1
        return dropped


@dataclass(slots=True)
class _LedgerEntry:
    expires: float
    outcome: bytes | None = None


class MemoryStateStore:
    """The ``StateStore`` of one process."""

    def __init__(self, *, limits: StateLimits = DEFAULT_LIMITS, clock: Clock = time.time) -> None:
        self.limits = limits
        self._clock = clock
        self._stash: dict[str, _ClientStash] = {}
        self._ledger: dict[str, dict[str, _LedgerEntry]] = {}
        self._ledger_heap: list[tuple[float, str, str]] = []
        self._secret: bytes | None = None
        self._sequence = itertools.count()
        self._operations = 0
        self._is_closed = False

    async def put(self, client: str, key: str, value: object, ttl: float) -> None:
        now = self._begin()
        check_ttl(ttl)
        encoded = encode_value(value)
        size = check_stash_size(key, encoded, self.limits)
        share = self._stash.setdefault(client, _ClientStash())
        share.add(key, _StashEntry(encoded, size, now + ttl, next(self._sequence)))
        share.shrink(now, self.limits, budget=len(share.heap))

    async def get(self, client: str, key: str) -> object | None:
        now = self._begin()
        return self._get(client, key, now)

    async def get_many(self, client: str, keys: Sequence[str]) -> list[object | None]:
        now = self._begin()
        return [self._get(client, key, now) for key in keys]

    def _get(self, client: str, key: str, now: float) -> object | None:
        share = self._stash.get(client)
        entry = share.entries.get(key) if share is not None else None
        if entry is None or entry.expires <= now:
            return None
        return decode_value(entry.value, NAME)

    async def claim(self, client: str, key: str, ttl: float) -> ClaimResult:
        now = self._begin()
        check_ttl(ttl)
        entries = self._ledger.setdefault(client, {})
        entry = entries.get(key)
        if entry is not None and entry.expires > now:
            if entry.outcome is None:
                return ClaimResult(status="running")
            return ClaimResult(status="recorded", outcome=decode_outcome(entry.outcome, NAME))
        entries.pop(key, None)
        if len(entries) >= self.limits.max_ledger_entries:
            for name in [name for name, held in entries.items() if held.expires <= now]:
                del entries[name]
            if len(entries) >= self.limits.max_ledger_entries:
                raise ledger_full_error(self.limits)
        self._add_ledger_entry(client, key, _LedgerEntry(now + ttl))
        return ClaimResult(status="claimed")

    async def record(self, client: str, key: str, outcome: Outcome, ttl: float) -> None:
        now = self._begin()
        check_ttl(ttl)
        self._add_ledger_entry(client, key, _LedgerEntry(now + ttl, encode_value(outcome)))

    async def secret(self) -> bytes:
        self._begin()
        if self._secret is None:
            self._secret = secrets.token_bytes(SECRET_SIZE)
        return self._secret

    async def aclose(self) -> None:
        self._is_closed = True
        self._stash.clear()
        self._ledger.clear()
        self._ledger_heap.clear()

    def _add_ledger_entry(self, client: str, key: str, entry: _LedgerEntry) -> None:
        self._ledger.setdefault(client, {})[key] = entry
        heapq.heappush(self._ledger_heap, (entry.expires, client, key))

    def _begin(self) -> float:
        """The current time, after refusing a closed store and sweeping when one is due."""
        if self._is_closed:
            raise StateUnavailableError(NAME, "the store is closed")
        now = self._clock()
        self._operations += 1
        if self._operations % SWEEP_INTERVAL == 0:
            self._sweep(now)
        return now

    def _sweep(self, now: float) -> None:
        budget = SWEEP_BATCH
        for client, share in list(self._stash.items()):
            budget -= share.shrink(now, self.limits, budget)
            if not share.entries:
                del self._stash[client]
            if budget <= 0:
                break
        for _ in range(SWEEP_BATCH):
            if not self._ledger_heap or self._ledger_heap[0][0] > now:
                break
            expires, client, key = heapq.heappop(self._ledger_heap)
            entries = self._ledger.get(client, {})
            entry = entries.get(key)
            if entry is not None and entry.expires == expires:
                del entries[key]
                if not entries:
                    del self._ledger[client]
