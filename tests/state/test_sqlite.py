"""What only the sqlite store does: several processes on one file, restarts, a file it cannot
open or lock, and its bounded sweep."""

from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from streamproxy.errors import StateUnavailableError
from streamproxy.proxy.state import SWEEP_INTERVAL, open_state_store
from tests.state.conftest import FakeClock

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
KEYS = 50


def test_processes_racing_claims_on_one_file_win_each_key_once(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'state.db'}"
    go_file = tmp_path / "go"
    racers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.state.racer", url, str(go_file), str(KEYS)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for racer in racers:
            assert racer.stdout is not None
            line = racer.stdout.readline().strip()
            assert line == "ready", racer.stderr.read() if racer.stderr else ""
        go_file.touch()
        reports = []
        for racer in racers:
            output, errors = racer.communicate(timeout=120)
            assert racer.returncode == 0, errors
            reports.append(json.loads(output))
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
                racer.wait()
            for pipe in (racer.stdout, racer.stderr):  # closed even when an assert failed
                if pipe is not None:
                    pipe.close()

    won = [key for report in reports for key in report["won"]]
    assert sorted(won) == sorted(f"key-{number}" for number in range(KEYS))
    assert reports[0]["secret"] == reports[1]["secret"]


async def test_stash_ledger_and_secret_survive_reopening(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'state.db'}"
    before = open_state_store(url)
    await before.put("alice", "key", [{"role": "tool", "content": "x"}], 3600)
    await before.claim("alice", "running", 3600)
    await before.claim("alice", "done", 3600)
    await before.record("alice", "done", {"status": "ok", "content": "y"}, 3600)
    secret = await before.secret()
    await before.aclose()

    after = open_state_store(url)
    try:
        assert await after.get("alice", "key") == [{"role": "tool", "content": "x"}]
        assert (await after.claim("alice", "running", 3600)).status == "running"
        done = await after.claim("alice", "done", 3600)
        assert done.outcome == {"status": "ok", "content": "y"}
        assert await after.secret() == secret
    finally:
        await after.aclose()


async def test_the_file_and_its_directory_are_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "state.db"
    store = open_state_store(f"sqlite://{path}")
    try:
        await store.secret()
        modes = [stat.S_IMODE(p.stat().st_mode) for p in (path, path.parent)]
    finally:
        await store.aclose()
    assert modes == [0o600, 0o700]


def test_a_path_that_cannot_be_created_raises_state_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")

    with pytest.raises(StateUnavailableError) as raised:
        open_state_store(f"sqlite://{blocker / 'state.db'}")
    assert "cannot open" in raised.value.reason
    assert str(blocker) in raised.value.store


def test_a_file_from_another_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version=99")
    connection.close()

    with pytest.raises(StateUnavailableError) as raised:
        open_state_store(f"sqlite://{path}")
    assert "schema version 99" in raised.value.reason


async def test_a_locked_file_raises_state_unavailable_after_the_timeout(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = open_state_store(f"sqlite://{path}", timeout=0.05)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StateUnavailableError) as raised:
            await store.claim("alice", "call", 60)
        assert "locked" in raised.value.reason
        holder.execute("ROLLBACK")
        # the lock released, the store works again and the refused claim left nothing behind
        assert (await store.claim("alice", "call", 60)).is_claimed
    finally:
        holder.close()
        await store.aclose()


async def test_the_sweep_deletes_expired_rows(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    clock = FakeClock()
    store = open_state_store(f"sqlite://{path}", clock=clock)
    try:
        for number in range(10):
            await store.put(f"client-{number}", "key", [number], 1)
            await store.claim(f"client-{number}", "call", 1)
        clock.now += 2
        for _ in range(SWEEP_INTERVAL):
            await store.get("someone", "key")
    finally:
        await store.aclose()

    with sqlite3.connect(path) as connection:
        counts = [
            connection.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("stash", "ledger")
        ]
    connection.close()
    assert counts == [0, 0]
