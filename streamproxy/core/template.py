"""Chunk templates: decoding a run of chunks that differ in one string, without parsing each.

A provider sends most chunks of a completion as the same bytes but for one JSON string: the
argument fragment or the piece of text the chunk carries. After a chunk of that shape was parsed
and applied in full, ``learn`` cuts its bytes into the prefix before that string token and the
suffix after it. A later chunk that starts with the same prefix, ends with the same suffix, and
whose middle is exactly one JSON string (``orjson.loads`` of the middle gives a ``str``; anything
else, such as ``"a","x":"b"``, fails to parse as one value) is the same chunk with another string
in that place: JSON's grammar is context-free, so swapping one string token for another leaves
every other field as it was. The string is decoded alone and applied as the parsed chunk would
have been (the assembler still runs every rule on it; a fragment that opens a JSON value, or a
call that was sealed in between, falls back to the full parse). A chunk that differs anywhere
else (another ``created``, a changing ``obfuscation`` field, a finish, usage) misses the template
and is parsed in full.

Learning needs the key to occur exactly once in the chunk's bytes. The byte sequence
``"content":`` can only be a key there (inside a JSON string its quotes would be escaped), and
occurring once it must be the key the parsed chunk's text came from. A stream whose chunks never
repeat (per-chunk padding fields) stops learning after a few misses, so it pays almost nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

from streamproxy.core.assembler import Assembler, ToolCall
from streamproxy.core.openai_chat import TEXT_KINDS

_STRING_TOKEN = re.compile(rb'[ \t\r\n]*("(?:[^"\\]|\\.)*")')

# Templates learned in a row without one hit before learning stops for the stream.
MAX_FRUITLESS_TEMPLATES = 4


@dataclass(slots=True, eq=False)
class ChunkTemplate:
    """The bytes around the one string that varies, and where that string goes."""

    prefix: bytes
    suffix: bytes
    call: ToolCall | None  # the call a fragment goes to, or None for text
    choice: int
    kind: str  # "arguments", or the text kind
    start: int = 0  # where the string starts: len(prefix)
    stop: int = 0  # where it ends, counted from the end: -len(suffix)

    def __post_init__(self) -> None:
        self.start = len(self.prefix)
        self.stop = -len(self.suffix)

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

    def apply(self, assembler: Assembler, text: str) -> bool:
        """Apply the chunk's string as its full parse would; False when that needs the parse."""
        if self.call is not None:
            return assembler.append_fragment(self.call, text)
        assembler.text(self.choice, self.kind, text)
        return True


def learn(raw: bytes, fed: ToolCall | str, chunk: dict[str, object]) -> ChunkTemplate | None:
    """A template from a chunk just applied by the fast path (``fed`` as ``read_chunk`` says)."""
    if isinstance(fed, ToolCall):
        key, call, choice, kind = b'"arguments":', fed, fed.choice, "arguments"
    else:
        choices = chunk.get("choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        index = first.get("index", 0) if isinstance(first, dict) else None
        if not isinstance(index, int) or fed not in TEXT_KINDS:
            return None
        key, call, choice, kind = b'"' + fed.encode() + b'":', None, index, TEXT_KINDS[fed]
    if raw.count(key) != 1:
        return None
    match = _STRING_TOKEN.match(raw, raw.find(key) + len(key))
    if match is None:
        return None
    start, end = match.span(1)
    return ChunkTemplate(prefix=raw[:start], suffix=raw[end:], call=call, choice=choice, kind=kind)
