"""Chunk templates: decoding a run of chunks that differ in one string, without parsing each.

A provider sends most chunks of a completion as the same bytes but for one JSON string: the
argument fragment or the piece of text the chunk carries. After a chunk of that shape was parsed
and applied in full, ``learn`` cuts its bytes into the prefix before that string token and the
suffix after it. A later chunk that starts with the same prefix, ends with the same suffix, and
whose middle is exactly one JSON string (``orjson.loads`` of the middle gives a ``str``; anything
else, such as ``"a","x":"b"``, fails to parse as one value) is the same chunk with another string
in that place: JSON's grammar is context-free, so swapping one string token for another leaves
every other field as it was. The string is decoded alone and ``ChatStream`` applies it with the
call the reader would have made for it: ``Assembler.text``, or ``Assembler.continue_arguments``,
the fast path ``tool_delta`` itself tries first, which resolves the call by the chunk's index at
each hit (a fragment that opens a JSON value, or a call sealed or replaced at that index in
between, falls back to the full parse). A chunk that differs anywhere
else (another ``created``, a changing ``obfuscation`` field, a finish, usage) misses the template
and is parsed in full. ``match_event`` does the same for a socket read framed as the one SSE
event ``data: <chunk>\\n\\n``: its middle must be the JSON string token alone, which holds no
raw line end, so with no line end in the prefix or suffix a hit is exactly one one-line event.

Learning needs the key to occur exactly once in the chunk's bytes. The byte sequence
``"content":`` can only be a key there (inside a JSON string its quotes would be escaped), and
occurring once it must be the key the parsed chunk's text came from. A stream whose chunks never
repeat (per-chunk padding fields) stops learning after a few misses, so it pays almost nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from streamproxy.core.openai_chat import TEXT_KINDS

_LINE_END = re.compile(rb"[\r\n]")
_QUOTE = ord('"')
_STRING_TOKEN = re.compile(rb'[ \t\r\n]*("(?:[^"\\]|\\.)*")')

# Templates learned in a row without one hit before learning stops for the stream.
MAX_FRUITLESS_TEMPLATES = 4


@dataclass(slots=True, eq=False)
class ChunkTemplate:
    """The bytes around the one string that varies, and where that string goes."""

    prefix: bytes
    suffix: bytes
    choice: int
    kind: str  # "arguments", or the text kind
    call_index: int | None = None  # for "arguments": the entry's index (None: the latest call)
    is_arguments: bool = False
    start: int = 0  # where the string starts: len(prefix)
    stop: int = 0  # where it ends, counted from the end: -len(suffix)
    # the same chunk as a whole one-line SSE event, or empty when the bytes hold a line end
    event_prefix: bytes = b""
    event_suffix: bytes = b""

    def __post_init__(self) -> None:
        self.start = len(self.prefix)
        self.stop = -len(self.suffix)
        self.is_arguments = self.kind == "arguments"
        if not _LINE_END.search(self.prefix + self.suffix):
            self.event_prefix = b"data: " + self.prefix
            self.event_suffix = self.suffix + b"\n\n"

    def match(self, raw: bytes) -> str | None:
        """The string ``raw`` carries in the template's place, or None when it is not that shape."""
        if (
            len(raw) <= self.start - self.stop
            or not raw.startswith(self.prefix)
            or not raw.endswith(self.suffix)
        ):
            return None
        try:
            value = orjson.loads(raw[self.start : self.stop or None])
        except orjson.JSONDecodeError:
            return None
        return value if type(value) is str else None

    def match_event(self, piece: bytes) -> str | None:
        """``match`` for the chunk framed as one whole SSE event: ``data: <chunk>\\n\\n``.

        A hit is exactly one one-line event: the prefix and suffix hold no line end, and the
        middle is one JSON string token and nothing else (it starts and ends with its quotes, so
        no whitespace around it, where orjson would allow a line end), and in a string token a
        line end can only be escaped. The caller makes sure no event was pending before
        ``piece`` (then the decoder would give this chunk alone).
        """
        prefix = self.event_prefix
        start = self.start + 6
        stop = self.stop - 2
        if (
            not prefix
            or len(piece) <= start - stop
            or not piece.startswith(prefix)
            or not piece.endswith(self.event_suffix)
            or piece[start] != _QUOTE
            or piece[stop - 1] != _QUOTE
        ):
            return None
        try:
            value = orjson.loads(piece[start:stop])
        except orjson.JSONDecodeError:
            return None
        return value if type(value) is str else None


def learn(raw: bytes, chunk: dict[str, Any]) -> ChunkTemplate | None:
    """A template from a chunk just applied in full, or None when it is not of that shape.

    The shape: one choice, no finish, logprobs, usage or error, and a delta whose one non-null
    field is a text string, or one ``tool_calls`` entry with no id, name or extra content whose
    arguments are a string. Every other field of such a chunk is either ignored by the reader or
    has an effect that repeating it does not change (the completion's id, the role).
    """
    if chunk.get("usage") or chunk.get("error") is not None:
        return None
    choices = chunk.get("choices")
    if type(choices) is not list or len(choices) != 1 or type(choices[0]) is not dict:
        return None
    choice = choices[0]
    index = choice.get("index", 0)
    delta = choice.get("delta")
    if (
        type(index) is not int
        or index < 0
        or type(delta) is not dict
        or choice.get("finish_reason")
        or choice.get("logprobs")
    ):
        return None
    fields = [(key, value) for key, value in delta.items() if value is not None]
    if len(fields) != 1:
        return None
    name, value = fields[0]
    call_index: int | None = None
    if name in TEXT_KINDS and type(value) is str:
        key, kind = b'"' + name.encode() + b'":', TEXT_KINDS[name]
    elif name == "tool_calls" and type(value) is list and len(value) == 1:
        entry = value[0]
        function = entry.get("function") if type(entry) is dict else None
        call_index = entry.get("index") if type(entry) is dict else None
        if (
            type(function) is not dict
            or type(function.get("arguments")) is not str
            or function.get("name")
            or entry.get("id")
            or entry.get("extra_content")
            or (call_index is not None and type(call_index) is not int)
        ):
            return None
        key, kind = b'"arguments":', "arguments"
    else:
        return None
    if raw.count(key) != 1:
        return None
    match = _STRING_TOKEN.match(raw, raw.find(key) + len(key))
    if match is None:
        return None
    start, end = match.span(1)
    return ChunkTemplate(
        prefix=raw[:start], suffix=raw[end:], choice=index, kind=kind, call_index=call_index
    )
