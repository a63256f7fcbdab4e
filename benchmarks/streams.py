"""Synthetic DeepSeek-shaped SSE bodies for the benchmarks.

The chunks copy the shape of the real ``deepseek-v4-flash`` recordings in
``../shared/recordings`` (``deepseek__v4-flash-tool-call-fragmented-args.sse`` for tool calls,
``deepseek__reasoner-thinking-stream.sse`` for the ``reasoning_content: null`` content chunks):
same keys in the same order, a ``system_fingerprint``, ``logprobs: null``, ``usage: null`` on every
chunk but the last, which carries ``finish_reason`` and the usage, then ``data: [DONE]``.

The arguments are one JSON object whose ``content`` is realistic text: newlines, quotes, back
slashes and non-ASCII letters, so a string scanner meets escapes and multi-byte characters as it
would in a real ``write_file`` call. Fragments are 4 characters (4 bytes for ASCII text), one chunk
each, as DeepSeek streams a tool call token by token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

COMPLETION_ID = "4fdc4d8c-bc64-4776-8e72-13bf76a27cb3"
MODEL = "deepseek-v4-flash"
CREATED = 1780944532
SYSTEM_FINGERPRINT = "fp_8b330d02d0_prod0820_fp8_kvcache_20260402"
TOOL_CALL_ID = "call_00_MRi7F2sfOet5LgvlZL3W5236"
TOOL_NAME = "write_file"
FRAGMENT_SIZE = 4
READ_SIZE = 64 * 1024  # what one socket read typically hands over

# Text a model might write into a file: escapes (\n, \", \\) and non-ASCII in every paragraph.
PARAGRAPH = (
    "## Release notes — v2.3 (naïve café edition)\n\n"
    'The "streaming" mode now keeps résumé-style names, Zoë\'s 日本語 notes and emoji 🚀 intact.\n'
    'Install it with `pip install "streamproxy[bench]"`, then run:\n\n'
    '    if status == "ok":\n'
    '        print("done ✓", path="C:\\\\Users\\\\zoë\\\\notes.txt")\n\n'
    "Tabs\tand long lines are kept as sent; prices such as 12 € or £9 are not rounded.\n"
)
_TOKEN = re.compile(r"\s*\S+|\s+")


@dataclass(frozen=True, slots=True)
class SyntheticStream:
    """One SSE body and what a correct assembler must get out of it."""

    name: str
    body: bytes
    expected: str  # the tool call's arguments text, or the content text
    is_tool_call: bool
    chunk_count: int

    @property
    def payload_size(self) -> int:
        """The size in UTF-8 bytes of ``expected``: what "per byte" times are divided by."""
        return len(self.expected.encode())

    def pieces(self, read_size: int | None = READ_SIZE) -> list[bytes]:
        """The body cut as socket reads of ``read_size`` bytes (whole when None)."""
        if read_size is None:
            return [self.body]
        body = self.body
        return [body[start : start + read_size] for start in range(0, len(body), read_size)]

    def event_pieces(self) -> list[bytes]:
        """The body cut after each event: one SSE event per read, as a proxy reading a socket
        that the upstream writes one event at a time sees it."""
        return [event + b"\n\n" for event in self.body.split(b"\n\n") if event]

    def payloads(self) -> list[dict[str, Any]]:
        """The chunks as parsed JSON objects, in order (``[DONE]`` left out)."""
        return [
            orjson.loads(event[len(b"data: ") :])
            for event in self.body.split(b"\n\n")
            if event.startswith(b"data: {")
        ]


def tool_arguments(size: int) -> str:
    """A ``{"path": ..., "content": ...}`` arguments text of ``size`` UTF-8 bytes or just under."""
    head = {"path": "docs/release-notes.md", "content": ""}
    needed = size - len(orjson.dumps(head))
    if needed < 0:
        raise ValueError(f"{size} bytes is too small for the arguments object")
    text = PARAGRAPH * (needed // len(PARAGRAPH.encode()) + 2)
    low, high = 0, len(text)  # the longest prefix of text whose encoding fits
    while low < high:
        middle = (low + high + 1) // 2
        if len(_encode_arguments(head, text[:middle])) <= size:
            low = middle
        else:
            high = middle - 1
    return _encode_arguments(head, text[:low]).decode()


def _encode_arguments(head: dict[str, str], content: str) -> bytes:
    return orjson.dumps({**head, "content": content})


def split_fragments(text: str, size: int = FRAGMENT_SIZE) -> list[str]:
    """``text`` cut into pieces of ``size`` characters."""
    return [text[start : start + size] for start in range(0, len(text), size)]


def content_tokens(count: int) -> list[str]:
    """``count`` word-sized tokens of realistic text (leading space kept, as tokenisers do)."""
    words = _TOKEN.findall(PARAGRAPH)
    return [words[number % len(words)] for number in range(count)]


def chunk(
    delta: dict[str, Any],
    *,
    finish_reason: str | None = None,
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` with DeepSeek's keys, in DeepSeek's order."""
    return {
        "id": COMPLETION_ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage,
    }


def usage(completion_tokens: int) -> dict[str, Any]:
    """DeepSeek's usage object."""
    return {
        "prompt_tokens": 348,
        "completion_tokens": completion_tokens,
        "total_tokens": 348 + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
        "prompt_cache_hit_tokens": 0,
        "prompt_cache_miss_tokens": 348,
    }


def encode_body(chunks: list[dict[str, Any]]) -> bytes:
    """``data: {...}\\n\\n`` per chunk, then ``data: [DONE]\\n\\n``."""
    events = [b"data: " + orjson.dumps(item) + b"\n\n" for item in chunks]
    events.append(b"data: [DONE]\n\n")
    return b"".join(events)


def tool_call_stream(size: int, *, fragment_size: int = FRAGMENT_SIZE) -> SyntheticStream:
    """One ``write_file`` call whose arguments (``size`` bytes) come in 4-character fragments."""
    arguments = tool_arguments(size)
    fragments = split_fragments(arguments, fragment_size)
    chunks = [
        chunk({"role": "assistant", "content": ""}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": TOOL_CALL_ID,
                        "type": "function",
                        "function": {"name": TOOL_NAME, "arguments": ""},
                    }
                ]
            }
        ),
    ]
    chunks += [
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]})
        for fragment in fragments
    ]
    chunks.append(chunk({"content": ""}, finish_reason="tool_calls", usage=usage(len(fragments))))
    return SyntheticStream(
        name=f"tool call {_size_label(size)}",
        body=encode_body(chunks),
        expected=arguments,
        is_tool_call=True,
        chunk_count=len(chunks),
    )


def content_stream(token_count: int = 2000) -> SyntheticStream:
    """A plain answer of ``token_count`` tokens, one chunk each (``reasoning_content: null``)."""
    tokens = content_tokens(token_count)
    chunks = [chunk({"role": "assistant", "content": "", "reasoning_content": None})]
    chunks += [chunk({"content": token, "reasoning_content": None}) for token in tokens]
    chunks.append(
        chunk(
            {"content": "", "reasoning_content": None},
            finish_reason="stop",
            usage=usage(len(tokens)),
        )
    )
    return SyntheticStream(
        name=f"content {token_count} tokens",
        body=encode_body(chunks),
        expected="".join(tokens),
        is_tool_call=False,
        chunk_count=len(chunks),
    )


def _size_label(size: int) -> str:
    if size >= 1_000_000 and size % 1_000_000 == 0:
        return f"{size // 1_000_000} MB"
    if size >= 1000 and size % 1000 == 0:
        return f"{size // 1000} KB"
    return f"{size} B"
