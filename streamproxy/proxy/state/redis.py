"""``redis://HOST:PORT/DB``: the state store on a Redis server, shared by several hosts.

Keys (``{c}`` is the client, percent-encoded so it holds no ``:``)::

    streamproxy:stash:{c}            hash   key -> JSON value
    streamproxy:stash-expiry:{c}     zset   key -> expiry (ms, the proxy's clock)
    streamproxy:stash-size:{c}       string the share's bytes (keys plus values)
    streamproxy:ledger:{c}:{key}     string JSON record, PX = its ttl (the server's clock)
    streamproxy:ledger-index:{c}     zset   key -> expiry, to count a client's unexpired records
    streamproxy:secret               string 32 bytes, no expiry

A put and a claim each run as one Lua script, so the bounds are checked and applied atomically
(Redis runs one script at a time); inside the claim, ``SET NX PX`` takes the key. A client's
three stash keys expire together after its last put's ttl, so an idle client leaves nothing.
Not for Redis Cluster: the scripts name keys they do not declare.

Each operation gets ``timeout`` seconds in all (connect, one retry on a dropped pooled
connection, the reply); the pool holds at most ``MAX_CONNECTIONS`` and a caller waits at most
``timeout`` for one.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Sequence
from typing import TypeVar
from urllib.parse import quote

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.typing import EncodableT

from streamproxy.errors import StateUnavailableError
from streamproxy.proxy.state import (
    DEFAULT_LIMITS,
    DEFAULT_TIMEOUT,
    SECRET_SIZE,
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
    redact_url,
)

__all__ = ["KEY_PREFIX", "MAX_CONNECTIONS", "RedisStateStore"]

T = TypeVar("T")

KEY_PREFIX = "streamproxy:"
# Per store object (one per worker process). Each operation holds a connection for one round
# trip, so 32 serve thousands of operations a second; more would only queue inside Redis.
MAX_CONNECTIONS = 32

# KEYS: values hash, expiry zset, size string. ARGV: key, value, expires, now (ms),
# max entries, max bytes, ttl (ms). Drops up to 128 expired entries, then the soonest-expiring
# while over a bound.
STASH_PUT = """
local values, expiry, size_key = KEYS[1], KEYS[2], KEYS[3]
local key, value = ARGV[1], ARGV[2]
local now, max_entries, max_bytes = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
-- the three keys expire together; caught between two of their expiries, start the share anew
local present = redis.call('EXISTS', values, expiry, size_key)
if present > 0 and present < 3 then redis.call('DEL', values, expiry, size_key) end
local total = tonumber(redis.call('GET', size_key) or '0')
local function drop(member)
  local size = redis.call('HSTRLEN', values, member)
  if size > 0 then total = total - size - #member end
  redis.call('HDEL', values, member)
  redis.call('ZREM', expiry, member)
end
drop(key)
for _, member in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'LIMIT', 0, 128)) do
  drop(member)
end
redis.call('HSET', values, key, value)
redis.call('ZADD', expiry, ARGV[3], key)
total = total + #value + #key
while redis.call('ZCARD', expiry) > max_entries or total > max_bytes do
  local soonest = redis.call('ZRANGE', expiry, 0, 0)[1]
  if not soonest then break end
  drop(soonest)
end
redis.call('SET', size_key, total)
for _, name in ipairs(KEYS) do
  if redis.call('PTTL', name) < tonumber(ARGV[7]) then redis.call('PEXPIRE', name, ARGV[7]) end
end
return total
"""

# KEYS: values hash, expiry zset. ARGV: key, now (ms).
STASH_GET = """
local expires = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not expires or tonumber(expires) <= tonumber(ARGV[2]) then return false end
return redis.call('HGET', KEYS[1], ARGV[1])
"""

# KEYS: values hash, expiry zset. ARGV: now (ms), then the keys. One value (or false) per key.
STASH_GET_MANY = """
local values = {}
for index = 2, #ARGV do
  local expires = redis.call('ZSCORE', KEYS[2], ARGV[index])
  if not expires or tonumber(expires) <= tonumber(ARGV[1]) then
    values[index - 1] = false
  else
    values[index - 1] = redis.call('HGET', KEYS[1], ARGV[index])
  end
end
return values
"""

# KEYS: record, client index. ARGV: ttl (ms), max entries, key, running record.
# Returns {0, record} when held or recorded, {1} when claimed, {2} when the client is full.
LEDGER_CLAIM = """
local current = redis.call('GET', KEYS[1])
if current then return {0, current} end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local ttl = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then return {2} end
redis.call('SET', KEYS[1], ARGV[4], 'NX', 'PX', ttl)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[3])
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return {1}
"""

# KEYS: record, client index. ARGV: ttl (ms), key, record.
LEDGER_RECORD = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local ttl = tonumber(ARGV[1])
redis.call('SET', KEYS[1], ARGV[3], 'PX', ttl)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[2])
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1
"""

RUNNING = b'{"status":"running"}'


class RedisStateStore:
    """The ``StateStore`` on a Redis server (connections are made at the first operation)."""

    def __init__(
        self,
        url: str,
        *,
        limits: StateLimits = DEFAULT_LIMITS,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Clock = time.time,
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._timeout = timeout
        self._name = redact_url(url)
        self._secret: bytes | None = None
        self._is_closed = False
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=timeout,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
        )
        self._redis: Redis = Redis.from_pool(pool)
        self._stash_put = self._redis.register_script(STASH_PUT)
        self._stash_get = self._redis.register_script(STASH_GET)
        self._stash_get_many = self._redis.register_script(STASH_GET_MANY)
        self._ledger_claim = self._redis.register_script(LEDGER_CLAIM)
        self._ledger_record = self._redis.register_script(LEDGER_RECORD)

    async def put(self, client: str, key: str, value: object, ttl: float) -> None:
        check_ttl(ttl)
        encoded = encode_value(value)
        check_stash_size(key, encoded, self.limits)
        now = _milliseconds(self._clock())
        ttl_ms = _ttl_milliseconds(ttl)
        arguments: list[EncodableT] = [
            key,
            encoded,
            now + ttl_ms,
            now,
            self.limits.max_stash_entries,
            self.limits.max_stash_bytes,
            ttl_ms,
        ]
        await self._run(self._stash_put(keys=self._stash_keys(client), args=arguments))

    async def get(self, client: str, key: str) -> object | None:
        now = _milliseconds(self._clock())
        keys = self._stash_keys(client)[:2]
        value = await self._run(self._stash_get(keys=keys, args=[key, now]))
        return None if value is None else decode_value(value, self._name)

    async def get_many(self, client: str, keys: Sequence[str]) -> list[object | None]:
        if not keys:
            return []
        now = _milliseconds(self._clock())
        arguments: list[EncodableT] = [now, *keys]
        values = await self._run(
            self._stash_get_many(keys=self._stash_keys(client)[:2], args=arguments)
        )
        return [None if value is None else decode_value(value, self._name) for value in values]

    async def claim(self, client: str, key: str, ttl: float) -> ClaimResult:
        check_ttl(ttl)
        arguments: list[EncodableT] = [
            _ttl_milliseconds(ttl),
            self.limits.max_ledger_entries,
            key,
            RUNNING,
        ]
        reply = await self._run(
            self._ledger_claim(keys=self._ledger_keys(client, key), args=arguments)
        )
        if reply[0] == 1:
            return ClaimResult(status="claimed")
        if reply[0] == 2:
            raise ledger_full_error(self.limits)
        record = decode_outcome(reply[1], self._name)
        if record.get("status") == "running":
            return ClaimResult(status="running")
        outcome = record.get("outcome")
        if not isinstance(outcome, dict):
            raise StateUnavailableError(self._name, "a ledger record has no outcome")
        return ClaimResult(status="recorded", outcome=outcome)

    async def record(self, client: str, key: str, outcome: Outcome, ttl: float) -> None:
        check_ttl(ttl)
        record = encode_value({"status": "recorded", "outcome": outcome})
        arguments: list[EncodableT] = [_ttl_milliseconds(ttl), key, record]
        await self._run(self._ledger_record(keys=self._ledger_keys(client, key), args=arguments))

    async def secret(self) -> bytes:
        if self._secret is None:
            name = KEY_PREFIX + "secret"
            async with self._redis.pipeline(transaction=True) as pipeline:
                pipeline.set(name, secrets.token_bytes(SECRET_SIZE), nx=True)
                pipeline.get(name)
                _, value = await self._run(pipeline.execute())
            if not isinstance(value, bytes) or len(value) != SECRET_SIZE:
                raise StateUnavailableError(
                    self._name, f"{name} is not a {SECRET_SIZE}-byte secret"
                )
            self._secret = value
        return self._secret

    async def aclose(self) -> None:
        if not self._is_closed:
            self._is_closed = True
            await self._redis.aclose()

    async def _run(self, operation: Awaitable[T]) -> T:
        """Await ``operation`` for at most ``timeout``; any failure becomes one error class."""
        if self._is_closed:
            if asyncio.iscoroutine(operation):
                operation.close()
            raise StateUnavailableError(self._name, "the store is closed")
        try:
            async with asyncio.timeout(self._timeout):
                return await operation
        except TimeoutError:
            raise StateUnavailableError(self._name, f"no answer within {self._timeout} s") from None
        except (RedisError, OSError) as error:
            raise StateUnavailableError(self._name, f"{type(error).__name__}: {error}") from error

    @staticmethod
    def _stash_keys(client: str) -> list[str]:
        name = quote(client, safe="")
        return [f"{KEY_PREFIX}{kind}:{name}" for kind in ("stash", "stash-expiry", "stash-size")]

    @staticmethod
    def _ledger_keys(client: str, key: str) -> list[str]:
        name = quote(client, safe="")
        return [f"{KEY_PREFIX}ledger:{name}:{key}", f"{KEY_PREFIX}ledger-index:{name}"]


def _milliseconds(seconds: float) -> int:
    return int(seconds * 1000)


def _ttl_milliseconds(ttl: float) -> int:
    return max(1, round(ttl * 1000))
