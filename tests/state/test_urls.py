"""``open_state_store``: which URL opens which store, and the ones it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamproxy.proxy.state import default_sqlite_path, open_state_store, redact_url
from streamproxy.proxy.state.memory import MemoryStateStore
from streamproxy.proxy.state.redis import RedisStateStore
from streamproxy.proxy.state.sqlite import SqliteStateStore

pytestmark = pytest.mark.anyio


async def test_each_scheme_opens_its_store(tmp_path: Path) -> None:
    stores = [
        open_state_store("memory://"),
        open_state_store(f"sqlite://{tmp_path / 'a.db'}"),
        open_state_store("redis://127.0.0.1:6379/0"),  # connects only when used
        open_state_store("rediss://:secret@127.0.0.1:6380"),
    ]
    try:
        kinds = [type(store) for store in stores]
    finally:
        for store in stores:
            await store.aclose()

    assert kinds == [MemoryStateStore, SqliteStateStore, RedisStateStore, RedisStateStore]


async def test_a_relative_sqlite_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_state_store("sqlite:data/state.db")
    await store.aclose()

    assert (tmp_path / "data" / "state.db").is_file()


async def test_sqlite_without_a_path_uses_the_default_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    store = open_state_store("sqlite://")
    await store.aclose()

    assert default_sqlite_path() == tmp_path / "xdg" / "streamproxy" / "state.db"
    assert default_sqlite_path().is_file()


@pytest.mark.parametrize("xdg_state_home", [None, "", "relative/ignored"])
def test_the_default_path_falls_back_to_local_state_in_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, xdg_state_home: str | None
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    if xdg_state_home is None:
        monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_STATE_HOME", xdg_state_home)

    assert default_sqlite_path() == tmp_path / ".local" / "state" / "streamproxy" / "state.db"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param("sqlite:///:memory:", "use memory://", id="sqlite-memory"),
        pytest.param("sqlite::memory:", "use memory://", id="sqlite-memory-short"),
        pytest.param("sqlite://host/state.db", "three slashes", id="sqlite-host"),
        pytest.param("sqlite:///x.db?mode=ro", "no query", id="sqlite-query"),
        pytest.param("memory://somewhere", "takes no path", id="memory-path"),
        pytest.param("redis:///0", "needs a host", id="redis-no-host"),
        pytest.param("redis://host:port/0", "port", id="redis-bad-port"),
        pytest.param("redis://host:6379/zero", "must be a number", id="redis-bad-db"),
        pytest.param("postgres://db/state", "unsupported", id="unknown-scheme"),
        pytest.param("/var/lib/state.db", "unsupported", id="no-scheme"),
    ],
)
def test_a_bad_url_is_refused_with_a_clear_error(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_state_store(url)


def test_a_bad_url_error_never_shows_the_password() -> None:
    with pytest.raises(ValueError) as raised:
        open_state_store("postgres://user:hunter2@db/state")

    assert "hunter2" not in str(raised.value)


def test_a_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout"):
        open_state_store("memory://", timeout=0)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:pw@host/1", "redis://user:***@host/1"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("rediss://:pw@[::1]:6380", "rediss://:***@[::1]:6380"),
    ],
)
def test_redact_url_hides_only_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown
