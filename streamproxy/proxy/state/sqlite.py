"""``sqlite:///PATH``: the state store in one file, shared by the worker processes of one host.

The stdlib ``sqlite3`` runs on one thread per store object (so the event loop never blocks on
disk or locks), in WAL mode: readers never wait for the writer, and writers across processes
take turns, each waiting at most ``timeout`` for the lock. Every write is one ``BEGIN
IMMEDIATE`` transaction, which takes the database's write lock before it reads, so a claim's
"is it taken? then take it" cannot interleave with another process's.

Durability: a claim commits with ``synchronous=FULL``, so once ``claim`` says "claimed" that
survives a power cut, not only a crash of the proxy (about 1.5 ms for the fsync). Everything
else commits with ``NORMAL`` (no fsync; durable across a crash of the proxy): a stash entry lost
to a power cut only makes the next conversation less complete, and a lost ``record`` leaves its
claim "running", which still runs nothing twice.

The file holds the secret, so it is created readable by its owner only (0600; SQLite gives its
``-wal`` and ``-shm`` files the same mode), in a directory created 0700.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from streamproxy.errors import StateUnavailableError
from streamproxy.proxy.state import (
    DEFAULT_LIMITS,
    DEFAULT_TIMEOUT,
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

__all__ = ["SCHEMA_VERSION", "SqliteStateStore"]

T = TypeVar("T")

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS stash (
    client TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    size INTEGER NOT NULL,
    expires REAL NOT NULL,
    UNIQUE (client, key)
);
CREATE INDEX IF NOT EXISTS stash_by_client ON stash (client, expires, size);
CREATE INDEX IF NOT EXISTS stash_by_expiry ON stash (expires);
CREATE TABLE IF NOT EXISTS ledger (
    client TEXT NOT NULL,
    key TEXT NOT NULL,
    outcome BLOB,
    expires REAL NOT NULL,
    UNIQUE (client, key)
);
CREATE INDEX IF NOT EXISTS ledger_by_client ON ledger (client, expires);
CREATE INDEX IF NOT EXISTS ledger_by_expiry ON ledger (expires);
CREATE TABLE IF NOT EXISTS secret (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    value BLOB NOT NULL
);
"""


# How long opening may keep trying a file that other workers hold locked while they open it.
_OPEN_PATIENCE = 10.0


class SqliteStateStore:
    """The ``StateStore`` in a SQLite file (created, with its directory, when missing)."""

    def __init__(
        self,
        path: Path,
        *,
        limits: StateLimits = DEFAULT_LIMITS,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Clock = time.time,
    ) -> None:
        self.path = path
        self.limits = limits
        self._clock = clock
        self._name = f"sqlite://{path}"
        self._secret: bytes | None = None
        self._operations = 0
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="streamproxy-state"
        )
        try:
            self._connection = self._executor.submit(self._connect, timeout).result()
        except BaseException:
            self._executor.shutdown()
            raise

    async def put(self, client: str, key: str, value: object, ttl: float) -> None:
        check_ttl(ttl)
        encoded = encode_value(value)
        size = check_stash_size(key, encoded, self.limits)
        await self._run(self._put, client, key, encoded, size, ttl)

    async def get(self, client: str, key: str) -> object | None:
        value = await self._run(self._get, client, key)
        return None if value is None else decode_value(value, self._name)

    async def get_many(self, client: str, keys: Sequence[str]) -> list[object | None]:
        values = await self._run(self._get_many, client, list(keys))
        return [None if value is None else decode_value(value, self._name) for value in values]

    async def claim(self, client: str, key: str, ttl: float) -> ClaimResult:
        check_ttl(ttl)
        return await self._run(self._claim, client, key, ttl)

    async def record(self, client: str, key: str, outcome: Outcome, ttl: float) -> None:
        check_ttl(ttl)
        await self._run(self._record, client, key, encode_value(outcome), ttl)

    async def secret(self) -> bytes:
        if self._secret is None:
            self._secret = await self._run(self._get_or_create_secret)
        return self._secret

    async def aclose(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(executor, self._connection.close)
            executor.shutdown()

    async def _run(self, operation: Callable[..., T], *arguments: object) -> T:
        """``operation(*arguments)`` on the store's thread, sqlite errors made one error class.

        A cancelled caller does not cancel the thread's work: a claim it made stays made (and
        so "running" until its ttl), which is the safe side.
        """
        if self._executor is None:
            raise StateUnavailableError(self._name, "the store is closed")
        call = functools.partial(self._with_sweep, operation, *arguments)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, call)
        except sqlite3.Error as error:
            raise StateUnavailableError(self._name, f"{type(error).__name__}: {error}") from error

    def _with_sweep(self, operation: Callable[..., T], *arguments: object) -> T:
        result = operation(*arguments)
        self._operations += 1
        if self._operations % SWEEP_INTERVAL == 0:
            # best effort: the operation's result stands; the next sweep tries again
            with contextlib.suppress(sqlite3.Error):
                self._sweep()
        return result

    # Everything below runs on the store's thread.

    def _connect(self, timeout: float) -> sqlite3.Connection:
        """Open the file and its schema. Workers start together: switching to WAL and creating
        the schema can find the file locked by another worker doing the same (SQLite does not
        always wait its busy timeout for that), so a locked open is tried again, briefly."""
        deadline = time.monotonic() + max(timeout, _OPEN_PATIENCE)
        while True:
            try:
                return self._connect_once(timeout)
            except StateUnavailableError as error:
                cause = error.__cause__
                is_locked = isinstance(cause, sqlite3.OperationalError) and (
                    "locked" in str(cause) or "busy" in str(cause)
                )
                if not is_locked or time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def _connect_once(self, timeout: float) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            connection = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as error:
            raise StateUnavailableError(self._name, f"cannot open: {error}") from error
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            with _transaction(connection):
                (version,) = connection.execute("PRAGMA user_version").fetchone()
                if version not in (0, SCHEMA_VERSION):
                    raise StateUnavailableError(
                        self._name, f"schema version {version} is not {SCHEMA_VERSION}"
                    )
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        connection.execute(statement)
                connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as error:
            connection.close()
            raise StateUnavailableError(self._name, f"cannot open: {error}") from error
        except BaseException:
            connection.close()
            raise
        return connection

    def _put(self, client: str, key: str, value: bytes, size: int, ttl: float) -> None:
        now = self._clock()
        limits = self.limits
        with _transaction(self._connection) as connection:
            connection.execute("DELETE FROM stash WHERE client = ? AND expires <= ?", (client, now))
            connection.execute(
                "INSERT INTO stash (client, key, value, size, expires) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (client, key) DO UPDATE SET value = excluded.value,"
                " size = excluded.size, expires = excluded.expires",
                (client, key, value, size, now + ttl),
            )
            entries, total = connection.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM stash WHERE client = ?", (client,)
            ).fetchone()
            if entries <= limits.max_stash_entries and total <= limits.max_stash_bytes:
                return
            doomed: list[int] = []
            rows = connection.execute(
                "SELECT rowid, size FROM stash WHERE client = ? ORDER BY expires, rowid",
                (client,),
            )
            for rowid, row_size in rows:
                if entries <= limits.max_stash_entries and total <= limits.max_stash_bytes:
                    break
                doomed.append(rowid)
                entries -= 1
                total -= row_size
            connection.executemany("DELETE FROM stash WHERE rowid = ?", [(r,) for r in doomed])

    def _get(self, client: str, key: str) -> bytes | None:
        row = self._connection.execute(
            "SELECT value FROM stash WHERE client = ? AND key = ? AND expires > ?",
            (client, key, self._clock()),
        ).fetchone()
        return None if row is None else bytes(row[0])

    def _get_many(self, client: str, keys: list[str]) -> list[bytes | None]:
        return [self._get(client, key) for key in keys]  # one trip to this thread for them all

    def _claim(self, client: str, key: str, ttl: float) -> ClaimResult:
        now = self._clock()
        with _transaction(self._connection, is_durable=True) as connection:
            row = connection.execute(
                "SELECT outcome FROM ledger WHERE client = ? AND key = ? AND expires > ?",
                (client, key, now),
            ).fetchone()
            if row is not None:
                if row[0] is None:
                    return ClaimResult(status="running")
                outcome = decode_outcome(bytes(row[0]), self._name)
                return ClaimResult(status="recorded", outcome=outcome)
            (held,) = connection.execute(
                "SELECT count(*) FROM ledger WHERE client = ? AND expires > ?", (client, now)
            ).fetchone()
            if held >= self.limits.max_ledger_entries:
                raise ledger_full_error(self.limits)
            connection.execute(
                "INSERT INTO ledger (client, key, outcome, expires) VALUES (?, ?, NULL, ?)"
                " ON CONFLICT (client, key) DO UPDATE SET outcome = NULL,"
                " expires = excluded.expires",
                (client, key, now + ttl),
            )
            return ClaimResult(status="claimed")

    def _record(self, client: str, key: str, outcome: bytes, ttl: float) -> None:
        with _transaction(self._connection) as connection:
            connection.execute(
                "INSERT INTO ledger (client, key, outcome, expires) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (client, key) DO UPDATE SET outcome = excluded.outcome,"
                " expires = excluded.expires",
                (client, key, outcome, self._clock() + ttl),
            )

    def _get_or_create_secret(self) -> bytes:
        with _transaction(self._connection) as connection:
            connection.execute(
                "INSERT OR IGNORE INTO secret (id, value) VALUES (1, ?)",
                (secrets.token_bytes(SECRET_SIZE),),
            )
            (value,) = connection.execute("SELECT value FROM secret WHERE id = 1").fetchone()
        return bytes(value)

    def _sweep(self) -> None:
        now = self._clock()
        with _transaction(self._connection) as connection:
            for table in ("stash", "ledger"):
                connection.execute(
                    f"DELETE FROM {table} WHERE rowid IN"
                    f" (SELECT rowid FROM {table} WHERE expires <= ? LIMIT ?)",
                    (now, SWEEP_BATCH),
                )


@contextmanager
def _transaction(
    connection: sqlite3.Connection, *, is_durable: bool = False
) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (synced to disk when ``is_durable``), or ``ROLLBACK``
    on any exception."""
    if is_durable:
        connection.execute("PRAGMA synchronous=FULL")
    try:
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
    finally:
        if is_durable:
            connection.execute("PRAGMA synchronous=NORMAL")
