"""The encoder's frames read by the Vercel AI SDK's OpenAI provider (``@ai-sdk/openai``).

Its zod schemas differ from openai-python's types: a ``function_call`` item needs an ``id``,
its ``output_item.done`` a ``status``, and reasoning is read from the summary events only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest

from streamproxy.errors import UpstreamError
from streamproxy.proxy.responses import ResponsesEncoder, translate_request
from tests.responses.helpers import call_arguments, call_head, chunk, encode, request, usage_chunk
from tests.responses.test_sdk import PLAIN, THINKING, TWO_CALLS

CHECK = Path(__file__).parent / "vercel"
INSTALL = f"cd {CHECK} && npm ci"


@pytest.fixture(scope="module")
def node() -> str:
    path = shutil.which("node")
    missing = (
        "node is absent (apt-get install nodejs)"
        if path is None
        else f"@ai-sdk/openai is absent ({INSTALL})"
        if not (CHECK / "node_modules" / "@ai-sdk" / "openai").is_dir()
        else None
    )
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    assert path is not None
    return path


def run_provider(
    node: str, raw: bytes, tmp_path: Path
) -> tuple[dict[str, object], list[dict[str, object]]]:
    """The request body the provider sent for read_stream.mjs's prompt (a tool round trip),
    and the stream parts ``doStream`` made of ``raw``."""
    frames = tmp_path / "frames.sse"
    frames.write_bytes(raw)
    result = subprocess.run(
        [node, str(CHECK / "read_stream.mjs"), str(frames)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    request, *parts = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert request["type"] == "request"
    return request["body"], parts


def read(node: str, raw: bytes, tmp_path: Path) -> list[dict[str, object]]:
    return run_provider(node, raw, tmp_path)[1]


def of_type(parts: list[dict[str, object]], kind: str) -> list[dict[str, object]]:
    return [part for part in parts if part["type"] == kind]


def test_plain_text(node: str, tmp_path: Path) -> None:
    parts = read(node, encode(PLAIN), tmp_path)
    assert [part["delta"] for part in of_type(parts, "text-delta")] == ["Hel", "lo."]
    (finish,) = of_type(parts, "finish")
    assert finish["finishReason"]["unified"] == "stop"  # type: ignore[index]
    usage = finish["usage"]
    assert usage["inputTokens"]["total"] == 12 and usage["inputTokens"]["cacheRead"] == 8  # type: ignore[index]
    assert usage["outputTokens"]["total"] == 3  # type: ignore[index]
    assert not of_type(parts, "error")


def test_reasoning_then_text(node: str, tmp_path: Path) -> None:
    parts = read(node, encode(THINKING), tmp_path)
    kinds = [part["type"] for part in parts]
    assert kinds.index("reasoning-end") < kinds.index("text-start")
    assert [part["delta"] for part in of_type(parts, "reasoning-delta")] == ["The user ", "greets."]
    assert [part["delta"] for part in of_type(parts, "text-delta")] == ["Hi!"]
    assert of_type(parts, "finish")[0]["usage"]["outputTokens"]["reasoning"] == 5  # type: ignore[index]


def test_two_function_calls(node: str, tmp_path: Path) -> None:
    parts = read(node, encode(TWO_CALLS), tmp_path)
    calls = [
        (part["toolCallId"], part["toolName"], part["input"])
        for part in of_type(parts, "tool-call")
    ]
    assert calls == [
        ("call_a", "weather", '{"city": "Paris"}'),
        ("call_b", "weather", '{"city": "Oslo"}'),
    ]
    assert of_type(parts, "finish")[0]["finishReason"]["unified"] == "tool-calls"  # type: ignore[index]
    assert not of_type(parts, "error")


def test_an_error_mid_stream_is_one_error_part(node: str, tmp_path: Path) -> None:
    encoder = ResponsesEncoder(request())
    frames = encoder.start() + encoder.feed(chunk({"content": "Partial"}))
    frames += encoder.error(UpstreamError("the upstream stream broke", status=502))
    parts = read(node, b"".join(frames), tmp_path)
    errors = of_type(parts, "error")
    assert len(errors) == 1 and "the upstream stream broke" in str(errors[0]["message"])
    assert of_type(parts, "finish")[0]["finishReason"]["unified"] == "error"  # type: ignore[index]
    assert [part["delta"] for part in of_type(parts, "text-delta")] == ["Partial"]


def test_an_error_before_output_is_thrown(node: str, tmp_path: Path) -> None:
    encoder = ResponsesEncoder(request())
    raw = b"".join(encoder.start() + encoder.error(UpstreamError("rate limited", status=429)))
    parts = read(node, raw, tmp_path)
    assert [part["type"] for part in parts] == ["thrown"]
    assert "rate limited" in str(parts[0]["message"])


def test_a_length_cut(node: str, tmp_path: Path) -> None:
    raw = encode([chunk({"content": "Once"}), chunk({}, finish="length"), usage_chunk(5, 2)])
    parts = read(node, raw, tmp_path)
    assert of_type(parts, "finish")[0]["finishReason"]["unified"] == "length"  # type: ignore[index]


def test_tool_progress_events_are_passed_over(node: str, tmp_path: Path) -> None:
    progress = {
        **chunk({}),
        "streamproxy": {"tool_progress": {"id": "c1", "name": "search", "status": "ok"}},
    }
    parts = read(
        node, encode([progress, call_head(0, "call_a", "f"), call_arguments(0, "{}")]), tmp_path
    )
    assert not of_type(parts, "error")
    assert [part["toolCallId"] for part in of_type(parts, "tool-call")] == ["call_a"]


def test_the_request_the_provider_sends_translates(node: str, tmp_path: Path) -> None:
    body, _ = run_provider(node, encode(PLAIN), tmp_path)
    chat_body = translate_request(body).chat_body
    assert chat_body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "18 C"},
    ]
    assert chat_body["tools"][0]["function"]["name"] == "weather"  # type: ignore[index]
    assert chat_body["stream"] is True
