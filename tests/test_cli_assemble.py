"""``streamproxy assemble``: exit codes, output shapes, and the one-line reason on stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from streamproxy.cli import main
from tests.corpus import CORPUS, SKIP_REASON
from tests.helpers import call_delta, chunk, sse

TOOL_STREAM = sse(
    chunk({"role": "assistant", "content": ""}),
    chunk({"reasoning_content": "need weather"}),
    chunk({"tool_calls": [call_delta(index=0, id="call_1", name="weather", arguments='{"city":')]}),
    chunk({"tool_calls": [call_delta(index=0, arguments=' "Oslo"}')]}),
    chunk(
        {},
        finish="tool_calls",
        usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    ),
)


def run_cli(
    tmp_path: Path, body: bytes, *args: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    path = tmp_path / "body.sse"
    path.write_bytes(body)
    code = main(["assemble", str(path), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_prints_the_assembled_completion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(tmp_path, TOOL_STREAM, capsys=capsys)
    assert code == 0 and err == ""
    completion = json.loads(out)
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0] == {
        "index": 0,
        "message": {
            "role": "assistant",
            "content": "",
            "reasoning_content": "need weather",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        "logprobs": None,
        "finish_reason": "tool_calls",
    }
    assert completion["usage"]["total_tokens"] == 7


def test_events_prints_one_json_line_per_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(tmp_path, TOOL_STREAM, "--events", capsys=capsys)
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert lines[0]["event"] == "StreamStarted"
    assert lines[-1] == {"event": "StreamEnded", "is_clean": True, "reason": None}
    ready = [line for line in lines if line["event"] == "ToolCallReady"]
    assert ready == [
        {
            "event": "ToolCallReady",
            "choice": 0,
            "id": "call_1",
            "name": "weather",
            "arguments": '{"city": "Oslo"}',
            "parsed": {"city": "Oslo"},
        }
    ]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(TOOL_STREAM[:-40], "cut inside an event", id="cut-mid-event"),
        pytest.param(
            sse(chunk({"content": "partial"}), done=False),
            "no finish_reason and no end mark",
            id="no-end-mark",
        ),
        # the SSE standard ignores the line (not an SSE field), so nothing was streamed
        pytest.param(b"<html>oops</html>\n", "before any chunk", id="not-sse"),
        pytest.param(b"", "before any chunk", id="empty"),
        pytest.param(b"data: {nope\n\n", "not JSON", id="malformed"),
        pytest.param(sse({"error": {"message": "overloaded"}}), "overloaded", id="in-band-error"),
    ],
)
def test_bad_input_prints_what_was_assembled_and_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: bytes, reason: str
) -> None:
    code, out, err = run_cli(tmp_path, body, capsys=capsys)
    assert code == 1
    assert json.loads(out)["object"] == "chat.completion"
    assert err.startswith("streamproxy assemble: ") and reason in err
    assert err.count("\n") == 1


def test_reads_stdin_through_the_console_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streamproxy", "assemble", "-"],
        input=TOOL_STREAM,
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["choices"][0]["finish_reason"] == "tool_calls"


def test_anthropic_dialect_is_detected(capsys: pytest.CaptureFixture[str]) -> None:
    if not CORPUS.is_dir():
        pytest.skip(SKIP_REASON)
    code = main(["assemble", str(CORPUS / "anthropic__tool-use-stream.sse")])
    completion = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (
        completion["choices"][0]["message"]["tool_calls"][0]["function"]["name"]
        == "get_current_temperature"
    )
