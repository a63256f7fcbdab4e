from __future__ import annotations

import pytest

from streamproxy.cli import build_parser, main
from streamproxy.commands.serve import config_from_arguments
from streamproxy.config import DEEPSEEK_BASE_URL, Config, read_client_keys


def parse(*argv: str) -> Config:
    return config_from_arguments(build_parser().parse_args(["serve", *argv]))


def test_no_key_and_no_upstream_is_the_offline_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    config = parse()
    assert config.is_offline_demo
    assert config.upstream_url == DEEPSEEK_BASE_URL


def test_a_key_means_deepseek(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-abc")
    config = parse()
    assert not config.is_offline_demo
    assert config.api_key == "sk-abc"
    assert "sk-abc" not in repr(config)


def test_flags_map_to_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    monkeypatch.setenv("OTHER_KEY", "sk-other")
    monkeypatch.setenv("CLIENT_KEYS", "a, b,,")
    config = parse(
        "--upstream", "http://127.0.0.1:9/v1",
        "--api-key-env", "OTHER_KEY",
        "--tools", "mod:TOOLS",
        "--host", "0.0.0.0",
        "--port", "0",
        "--workers", "3",
        "--max-rounds", "4",
        "--client-keys-env", "CLIENT_KEYS",
        "--max-request-size", "1000",
        "--max-arguments-size", "100",
        "--max-tool-result-size", "10",
        "--keepalive", "2.5",
        "--strict-tools", "off",
    )  # fmt: skip
    assert not config.is_offline_demo  # an explicit upstream never means the demo
    assert (config.upstream_url, config.api_key, config.tools) == (
        "http://127.0.0.1:9/v1",
        "sk-other",
        "mod:TOOLS",
    )
    assert (config.host, config.port, config.workers, config.max_rounds) == ("0.0.0.0", 0, 3, 4)
    assert config.client_keys == {"a", "b"}
    assert (config.max_request_size, config.max_arguments_size) == (1000, 100)
    assert (config.max_tool_result_size, config.keepalive_interval) == (10, 2.5)
    assert config.strict_tools == "off"


def test_a_missing_client_keys_variable_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("NO_SUCH_KEYS", raising=False)
    assert main(["serve", "--client-keys-env", "NO_SUCH_KEYS"]) == 2
    assert "NO_SUCH_KEYS is not set" in capsys.readouterr().err


def test_bad_numbers_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--max-rounds", "0"]) == 2
    assert "max_rounds" in capsys.readouterr().err


def test_read_client_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    assert read_client_keys(None) == frozenset()
    monkeypatch.setenv("KEYS", " , ")
    with pytest.raises(ValueError, match="holds no key"):
        read_client_keys("KEYS")
