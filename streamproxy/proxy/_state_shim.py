"""Temporary in-memory store with the state-store interface (replaced by ``state.py``)."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClaimResult:
    status: str
    outcome: dict[str, object] | None = None


class MemoryStore:
    def __init__(self) -> None:
        self._values: dict[tuple[str, str], tuple[float, object]] = {}
        self._ledger: dict[str, tuple[float, dict[str, object] | None]] = {}
        self._secret = secrets.token_bytes(32)

    async def get(self, client: str, key: str) -> object | None:
        entry = self._values.get((client, key))
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    async def put(self, client: str, key: str, value: object, ttl: float) -> None:
        self._values[(client, key)] = (time.monotonic() + ttl, value)

    async def claim(self, key: str, ttl: float) -> ClaimResult:
        entry = self._ledger.get(key)
        if entry is None or entry[0] < time.monotonic():
            self._ledger[key] = (time.monotonic() + ttl, None)
            return ClaimResult("claimed")
        return ClaimResult("running" if entry[1] is None else "done", entry[1])

    async def record(self, key: str, outcome: dict[str, object], ttl: float) -> None:
        self._ledger[key] = (time.monotonic() + ttl, outcome)

    async def secret(self) -> bytes:
        return self._secret

    async def aclose(self) -> None:
        pass
