"""The assembler benchmark measures what it says: every contender assembles the source text.

No timing here (speed lives in ``benchmarks/``): these checks only make sure a change to the
benchmark, the stream builders or the core cannot leave the benchmark timing a contender that
silently assembles the wrong thing, or timing inputs without the escapes and non-ASCII text the
benchmark claims.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from benchmarks.bench_core import (
    check_ours,
    openai_chunks,
    run_floor,
    run_openai,
    run_ours,
    write_readme,
)
from benchmarks.streams import FRAGMENT_SIZE, SyntheticStream, content_stream, tool_call_stream

Contender = Callable[[SyntheticStream, int | None], tuple[int, str]]

CONTENDERS: dict[str, Contender] = {
    "floor": lambda stream, read_size: run_floor(stream.pieces(read_size)),
    "ours, previews": lambda stream, read_size: run_ours(
        stream.pieces(read_size), previews=True, is_tool_call=stream.is_tool_call
    ),
    "ours, no previews": lambda stream, read_size: run_ours(
        stream.pieces(read_size), previews=False, is_tool_call=stream.is_tool_call
    ),
    "openai": lambda stream, _: run_openai(openai_chunks(stream), is_tool_call=stream.is_tool_call),
}


@pytest.fixture(scope="module")
def tool_call_1kb() -> SyntheticStream:
    return tool_call_stream(1000)


@pytest.fixture(scope="module")
def content_short() -> SyntheticStream:
    return content_stream(200)


def test_tool_call_arguments_are_honest_text(tool_call_1kb: SyntheticStream) -> None:
    arguments = tool_call_1kb.expected
    parsed = orjson.loads(arguments)
    assert set(parsed) == {"path", "content"}
    assert 1000 - 4 <= tool_call_1kb.payload_size <= 1000  # at most one character short
    for escape in ("\\n", '\\"', "\\\\"):
        assert escape in arguments, f"{escape} missing: the string scan would not meet escapes"
    assert not arguments.isascii()


def test_tool_call_body_has_one_chunk_per_fragment(tool_call_1kb: SyntheticStream) -> None:
    payloads = tool_call_1kb.payloads()
    fragment_count = math.ceil(len(tool_call_1kb.expected) / FRAGMENT_SIZE)
    assert len(payloads) == fragment_count + 3  # role chunk, head chunk, finish chunk
    head = payloads[1]["choices"][0]["delta"]["tool_calls"][0]
    assert head["id"] and head["function"] == {"name": "write_file", "arguments": ""}
    fragments = [
        payload["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
        for payload in payloads[2:-1]
    ]
    assert all(len(fragment) == FRAGMENT_SIZE for fragment in fragments[:-1])
    assert "".join(fragments) == tool_call_1kb.expected
    finish = payloads[-1]
    assert finish["choices"][0]["finish_reason"] == "tool_calls"
    assert finish["usage"]["completion_tokens"] == fragment_count
    assert tool_call_1kb.body.endswith(b"data: [DONE]\n\n")


def test_content_body_carries_deepseek_null_fields(content_short: SyntheticStream) -> None:
    payloads = content_short.payloads()
    deltas = [payload["choices"][0]["delta"] for payload in payloads[1:-1]]
    assert len(deltas) == 200
    assert all(delta["reasoning_content"] is None for delta in deltas)
    assert "".join(delta["content"] for delta in deltas) == content_short.expected


@pytest.mark.parametrize("read_size", [64 * 1024, 1000, None], ids=["64KiB", "1000B", "whole"])
@pytest.mark.parametrize("name", list(CONTENDERS))
def test_contender_assembles_the_source_arguments(
    tool_call_1kb: SyntheticStream, name: str, read_size: int | None
) -> None:
    count, text = CONTENDERS[name](tool_call_1kb, read_size)
    assert text == tool_call_1kb.expected
    assert count > 0


@pytest.mark.parametrize("name", list(CONTENDERS))
def test_contender_assembles_the_source_content(content_short: SyntheticStream, name: str) -> None:
    count, text = CONTENDERS[name](content_short, 1000)
    assert text == content_short.expected
    assert count > 0


def test_ours_is_checked_for_one_ready_call(tool_call_1kb: SyntheticStream) -> None:
    check_ours(tool_call_1kb)  # raises AssertionError when the check fails
    cut = SyntheticStream(
        name="cut",
        body=tool_call_1kb.body[: len(tool_call_1kb.body) // 2],
        expected=tool_call_1kb.expected,
        is_tool_call=True,
        chunk_count=tool_call_1kb.chunk_count,
    )
    with pytest.raises(AssertionError, match="did not end cleanly"):
        check_ours(cut)


def test_write_readme_replaces_only_the_assembler_section(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    write_readme("## Assembler\n\nfirst run\n", readme)
    created = readme.read_text()
    assert created.startswith("# Benchmarks\n")
    assert "first run" in created and "## Proxy" in created
    proxy_section = "## Proxy\n\nnumbers written by the proxy benchmark\n"
    readme.write_text(created.split("## Proxy")[0] + proxy_section)
    write_readme("## Assembler\n\n### Results\n\nsecond run\n", readme)
    updated = readme.read_text()
    assert "second run" in updated and "first run" not in updated
    assert updated.endswith(proxy_section)
    assert updated.count("## Assembler") == 1
