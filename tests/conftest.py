"""Test-wide setup: the state store's default path points into a fresh directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import redis_server  # noqa: F401  (a session fixture for any test)


@pytest.fixture(autouse=True, scope="session")
def fresh_state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``Config()``'s default ``sqlite:///`` store lives under ``XDG_STATE_HOME``: never the
    user's own, and never one an earlier run left behind."""
    home = tmp_path_factory.mktemp("state-home")
    previous = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = previous
