"""The connection flags of ``serve`` and the pieces around the guard (no sockets here; the
guard's behaviour is tested with real processes in ``tests/e2e/test_slow_clients.py``)."""

from __future__ import annotations

import pickle

import pytest

from streamproxy.cli import build_parser, main
from streamproxy.commands.serve import config_from_arguments, is_loopback
from streamproxy.config import Config
from streamproxy.proxy.guard import ConnectionLimits, GuardedProtocol, guarded_http


def test_the_connection_flags_map_to_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    args = build_parser().parse_args(
        ["serve", "--header-timeout", "3", "--body-timeout", "7.5", "--max-connections", "50"]
    )
    config = config_from_arguments(args)
    assert (config.header_timeout, config.body_timeout, config.max_connections) == (3, 7.5, 50)


def test_the_defaults_are_the_configs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    config = config_from_arguments(build_parser().parse_args(["serve"]))
    defaults = Config()
    assert config.header_timeout == defaults.header_timeout <= 30
    assert config.body_timeout == defaults.body_timeout
    assert config.max_connections == defaults.max_connections


@pytest.mark.parametrize(
    ("flag", "value", "field"),
    [
        ("--header-timeout", "0", "header_timeout"),
        ("--body-timeout", "-1", "body_timeout"),
        ("--max-connections", "0", "max_connections"),
    ],
)
def test_bad_connection_limits_are_refused(
    flag: str, value: str, field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", flag, value]) == 2
    assert field in capsys.readouterr().err


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("proxy.internal", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_the_guarded_protocol_survives_the_trip_to_a_worker() -> None:
    # uvicorn spawns --workers processes and pickles its config, the protocol factory included
    factory = guarded_http("h11", ConnectionLimits(header_timeout=2, max_connections=9))
    copy = pickle.loads(pickle.dumps(factory))
    assert copy.func is GuardedProtocol
    assert copy.keywords == {
        "http": "h11",
        "limits": ConnectionLimits(header_timeout=2, max_connections=9),
    }


def test_connection_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="positive"):
        ConnectionLimits(header_timeout=0)
    with pytest.raises(ValueError, match="at least 1"):
        ConnectionLimits(max_connections=0)
