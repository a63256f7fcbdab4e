"""The record/replay/cassette subcommands: flag mapping and refusals (no servers started)."""

from __future__ import annotations

import pytest

from streamproxy.cassette import Faults
from streamproxy.cli import build_parser, main
from streamproxy.commands.replay import faults_from_arguments

from .conftest import RECORDINGS


def test_fault_flags_map_to_faults() -> None:
    args = build_parser().parse_args(
        [
            "replay",
            "x.sse",
            "--seed",
            "9",
            "--cut-at",
            "10",
            "--error-after",
            "2",
            "--error-message",
            "boom",
            "--stall-at",
            "5",
            "--stall",
            "1.5",
            "--keepalive",
            "0.25",
            "--resplit",
            "7",
            "--coalesce",
            "3",
            "--drop-at",
            "20",
        ]
    )
    assert faults_from_arguments(args) == Faults(
        seed=9,
        cut_at=10,
        drop_at=20,
        error_after=2,
        error_message="boom",
        stall_at=5,
        stall_seconds=1.5,
        keepalive=0.25,
        resplit=7,
        coalesce=3,
    )
    assert faults_from_arguments(build_parser().parse_args(["replay", "x.sse"])) is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["replay", "missing.cassette.json"], "cannot read"),
        (
            ["replay", str(RECORDINGS / "demo-tool-loop.cassette.json"), "--timing", "fast"],
            "timing",
        ),
        (["replay", str(RECORDINGS / "demo-tool-loop.cassette.json"), "--resplit", "0"], "resplit"),
        (["record", "--upstream", "api.deepseek.com", "--out", "x.cassette.json"], "http://"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(argv: list[str], message: str, capsys) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_cassette_show_summarises(capsys) -> None:
    assert main(["cassette", "show", str(RECORDINGS / "demo-tool-loop.cassette.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("source: hand-written for streamproxy")
    assert lines[1].startswith("[0] POST /chat/completions -> 200, 26 chunks")
    assert lines[2].startswith("[1] POST /chat/completions -> 200, 19 chunks")
