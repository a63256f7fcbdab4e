"""One redaction layer: secrets never leave the process, in any encoding. Pure: no I/O.

A :class:`Redactor` is built from the secrets to hide (the upstream key, the client keys, values
of credential headers seen in a request) and replaces every occurrence with :data:`REDACTED`, a
marker that tells nothing of the secret (not its length, not its first characters)::

    redactor = Redactor({upstream_key, *client_keys})
    redactor.redact_text(message)         # str -> str
    redactor.redact_bytes(body)           # bytes -> bytes
    redactor.redact_bytes(body[:65536], is_cut=True)   # also a secret's prefix at the cut

    stream = redactor.stream()            # bytes arriving in pieces
    for piece in pieces:
        send(stream.feed(piece))          # holds back at most stream.holdback bytes
    send(stream.flush())                  # the rest, at the end

    logging.getLogger("streamproxy").addFilter(RedactingFilter(redactor))

What is found, for each secret (each character matched in any of its forms, mixed freely):

- the raw text (its UTF-8 bytes, for bytes);
- JSON string escapes: ``\\uXXXX`` (either hex case) for any character, ``\\/`` for ``/``, the
  short escapes (``\\"``, ``\\\\``, ``\\n``...), with 1 to 4 backslashes (JSON text quoted once
  more inside JSON, and again) — so ``\\u0073k-...`` is caught on the raw text, before decoding;
- URL encoding: ``%XX`` (either hex case) for any UTF-8 byte, ``+`` for a space;
- with ``is_cut=True`` (text that was cut, such as an error body kept to 64 KiB): a trailing
  *prefix* of a secret of at least :data:`MIN_CUT_PREFIX` characters (in any of the forms above,
  a half-written escape at the very end included) is redacted too. Fewer characters than that are
  left alone: three characters (``sk-``) are public, and short tails of ordinary text would match.

Secrets shorter than :data:`MIN_SECRET_LENGTH` characters are ignored (listed in
:attr:`Redactor.ignored`): a two-letter "key" would match ordinary text everywhere, and no real
API key is that short. A caller that configures client keys should refuse or warn on those.

Where it must run: at every egress, after the last byte is known and before it leaves — each
frame sent to a client (one :class:`StreamRedactor` per response), each error body and error
message (``is_cut=True`` for a body kept only to a limit), every log record
(:func:`install_log_redaction`, audit lines included), and every cassette (the recorder and the
importers use it through :mod:`streamproxy.cassette.redact`). Scrubbing decoded JSON only is not
enough (an escape such as ``\\u0073k-`` decodes *into* the key), and scrubbing raw text only is
not enough either unless the escaped forms are matched too: this module matches them all on the
raw text.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import AnyStr, Final

__all__ = [
    "MIN_CUT_PREFIX",
    "MIN_SECRET_LENGTH",
    "REDACTED",
    "RedactingFilter",
    "Redactor",
    "StreamRedactor",
    "TextStreamRedactor",
    "install_log_redaction",
    "uninstall_log_redaction",
]

REDACTED: Final = "<redacted>"
"""What a secret is replaced by: the same marker for every secret and every encoding."""

MIN_SECRET_LENGTH: Final = 8
"""Shorter secrets are ignored (they would match ordinary text; real keys are 20+ characters)."""

MIN_CUT_PREFIX: Final = 4
"""At a cut, a trailing prefix of a secret this long or longer is redacted (``sk-`` is public)."""

_MAX_BACKSLASHES = 4
_SHORT_ESCAPES = {'"': '"', "\\": "\\\\", "/": "/", "\b": "b", "\f": "f", "\n": "n", "\r": "r"}
_SHORT_ESCAPES["\t"] = "t"
# A half-written escape at the very end of cut text: backslashes, "\u" and up to three hex digits,
# or "%" and up to one hex digit.
_PARTIAL_ESCAPE = r"(?:\\{1,4}(?:u[0-9a-fA-F]{0,3})?|%[0-9a-fA-F]?)?"


def _hex_pattern(value: int, width: int) -> str:
    """``value`` as hex digits of ``width``, each letter matching either case."""
    return "".join(
        f"[{digit}{digit.upper()}]" if digit.isalpha() else digit for digit in f"{value:0{width}x}"
    )


# Every form starts with a literal character, so the regex engine can skip ahead to the places
# where a form may start instead of trying every alternative at every byte (about 4x faster).
_BACKSLASHES = rf"\\\\{{0,{_MAX_BACKSLASHES - 1}}}"
"""1 to 4 backslashes: one, then up to three more."""


def _json_unit_pattern(code: int) -> str:
    """``\\uXXXX`` for one UTF-16 code unit, with 1 to 4 backslashes."""
    return _BACKSLASHES + "u" + _hex_pattern(code, 4)


def _character_pattern(character: str) -> tuple[str, int]:
    """A regex matching ``character`` in any supported form, and that form's longest length."""
    code = ord(character)
    raw = character.encode()
    forms = [re.escape(character)]
    if code < 0x10000:
        forms.append(_json_unit_pattern(code))
        json_length = _MAX_BACKSLASHES + 5
    else:
        high = 0xD800 + ((code - 0x10000) >> 10)
        low = 0xDC00 + ((code - 0x10000) & 0x3FF)
        forms.append(_json_unit_pattern(high) + _json_unit_pattern(low))
        json_length = 2 * (_MAX_BACKSLASHES + 5)
    if character in _SHORT_ESCAPES:
        forms.append(_BACKSLASHES + re.escape(_SHORT_ESCAPES[character]))
    forms.append("".join("%" + _hex_pattern(byte, 2) for byte in raw))
    if character == " ":
        forms.append(r"\+")
    longest = max(json_length, 3 * len(raw))
    return "(?:" + "|".join(forms) + ")", longest


class _Secret:
    """One secret's patterns: the whole of it, and its prefixes for cut text."""

    def __init__(self, secret: str) -> None:
        parts = [_character_pattern(character) for character in secret]
        self.pattern = "".join(pattern for pattern, _ in parts)
        self.text = re.compile(self.pattern)
        self.bytes = re.compile(self.pattern.encode())
        self.longest = sum(length for _, length in parts)
        # A prefix of at least MIN_CUT_PREFIX characters: c1..cN (cN+1 (cN+2 (...)?)?)?
        tail = ""
        for pattern, _ in reversed(parts[MIN_CUT_PREFIX:]):
            tail = f"(?:{pattern}{tail})?"
        head = "".join(pattern for pattern, _ in parts[:MIN_CUT_PREFIX])
        self.prefix_pattern = head + tail


class Redactor:
    """Replaces the given secrets, in every encoding listed in the module docstring.

    Args:
        secrets: the values to hide; empty and short ones (see :data:`MIN_SECRET_LENGTH`) are
            ignored and listed in :attr:`ignored`.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        unique = {secret for secret in secrets if secret}
        self.secrets: frozenset[str] = frozenset(s for s in unique if len(s) >= MIN_SECRET_LENGTH)
        """The secrets redacted."""
        self.ignored: frozenset[str] = frozenset(unique - self.secrets)
        """The secrets too short to redact."""
        compiled = [_Secret(secret) for secret in sorted(self.secrets, key=lambda s: (-len(s), s))]
        self.longest_encoded = max((secret.longest for secret in compiled), default=0)
        """The most bytes one encoded secret can take (the stream hold-back is one less)."""
        self._compiled = compiled
        if compiled:
            prefix = "(?:" + "|".join(s.prefix_pattern for s in compiled) + ")" + _PARTIAL_ESCAPE
            self._text_prefix = re.compile(f"(?:{prefix})\\Z")
            self._bytes_prefix = re.compile(f"(?:{prefix})\\Z".encode())
        self._is_empty = not compiled

    def __bool__(self) -> bool:
        return not self._is_empty

    def redact_text(self, text: str, *, is_cut: bool = False) -> str:
        """``text`` with every secret replaced (with ``is_cut``, a prefix at the end too)."""
        if self._is_empty:
            return text
        text = _replace(text, self._text_spans(text), REDACTED)
        if is_cut:
            text = self._cut_tail_text(text)
        return text

    def redact_bytes(self, data: bytes, *, is_cut: bool = False) -> bytes:
        """``data`` with every secret replaced (with ``is_cut``, a prefix at the end too)."""
        if self._is_empty:
            return data
        data = _replace(data, self.spans(data), REDACTED.encode())
        if is_cut:
            data = self._cut_tail_bytes(data)
        return data

    def redact_json(self, value: object) -> object:
        """A copy of a decoded JSON value with secrets replaced in every string, keys included."""
        if self._is_empty:
            return value
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, list):
            return [self.redact_json(item) for item in value]
        if isinstance(value, dict):
            return {self.redact_json(key): self.redact_json(item) for key, item in value.items()}
        return value

    def contains_secret(self, data: str | bytes) -> bool:
        """Whether ``data`` holds a whole secret in any form (for asserts and audits)."""
        if self._is_empty:
            return False
        if isinstance(data, str):
            return any(secret.text.search(data) for secret in self._compiled)
        return any(secret.bytes.search(data) for secret in self._compiled)

    def stream(self) -> StreamRedactor:
        """A :class:`StreamRedactor` for data that arrives in pieces."""
        return StreamRedactor(self)

    def trailing_prefix_start(self, data: bytes) -> int | None:
        """Where a secret's prefix (:data:`MIN_CUT_PREFIX` characters or more) ends ``data``.

        ``None`` when ``data`` does not end in one. For cut data kept as pieces (a cassette's
        chunks), where :meth:`redact_bytes` would lose the boundaries.
        """
        if self._is_empty:
            return None
        start = max(0, len(data) - self.longest_encoded - 16)
        match = self._bytes_prefix.search(data, start)
        return None if match is None else match.start()

    def _cut_tail_text(self, text: str) -> str:
        start = max(0, len(text) - self.longest_encoded - 16)
        match = self._text_prefix.search(text, start)
        return text if match is None else text[: match.start()] + REDACTED

    def _cut_tail_bytes(self, data: bytes) -> bytes:
        start = self.trailing_prefix_start(data)
        return data if start is None else data[:start] + REDACTED.encode()

    def spans(self, data: bytes) -> list[tuple[int, int]]:
        """``(start, stop)`` of each whole secret in ``data``, left to right, not overlapping
        (two secrets that overlap give one span covering both)."""
        return _pick_spans(data, [secret.bytes for secret in self._compiled])

    def _text_spans(self, text: str) -> list[tuple[int, int]]:
        return _pick_spans(text, [secret.text for secret in self._compiled])


def _pick_spans(data: AnyStr, patterns: list[re.Pattern[AnyStr]]) -> list[tuple[int, int]]:
    """The spans of the patterns' matches, left to right; overlapping ones are merged, so two
    distinct secrets that overlap in the text are replaced together."""
    found = sorted(match.span() for pattern in patterns for match in pattern.finditer(data))
    merged: list[tuple[int, int]] = []
    for start, stop in found:
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(stop, merged[-1][1]))
        else:
            merged.append((start, stop))
    return merged


def _replace(data: AnyStr, spans: list[tuple[int, int]], marker: AnyStr) -> AnyStr:
    if not spans:
        return data
    pieces = []
    position = 0
    for start, stop in spans:
        pieces.append(data[position:start])
        pieces.append(marker)
        position = stop
    pieces.append(data[position:])
    return data[:0].join(pieces)


class StreamRedactor:
    """Redacts bytes that arrive in pieces; a secret split across pieces is still caught.

    :meth:`feed` returns what is safe to send now and holds back at most :attr:`holdback` bytes
    (the longest encoded secret's length minus one) that could still begin a secret;
    :meth:`flush` returns the rest at the end (``is_cut=True`` when the stream was cut short, so
    a secret's prefix at the end is redacted too).

    Nothing is held back past a line feed when no secret contains a line break (no encoded form
    of such a secret holds a raw ``\\n`` byte, so no match can span one): an SSE event, which ends
    with a blank line, is released whole as soon as it has arrived, with no added latency.

    A secret is caught when it is contiguous in the bytes, in one of the forms above. A secret
    split across two SSE events (two content deltas) is contiguous only in the text a client
    assembles; that text needs its own :meth:`Redactor.redact_text`.
    """

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self.holdback = max(0, redactor.longest_encoded - 1)
        self._release_at_line_feed = not any("\n" in s or "\r" in s for s in redactor.secrets)
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        """The redacted bytes that can be sent now (possibly empty)."""
        if not self.redactor:
            return data
        buffer = self._pending + data
        cutoff = len(buffer) - self.holdback
        if self._release_at_line_feed:
            cutoff = max(cutoff, buffer.rfind(b"\n") + 1)
        if cutoff <= 0:
            self._pending = buffer
            return b""
        # A match starting before ``cutoff`` lies wholly inside ``buffer`` (no encoded secret is
        # longer than holdback + 1, and none spans a line feed), so it is final; later ones are
        # looked at again next time.
        output = bytearray()
        position = 0
        for start, stop in self.redactor.spans(buffer):
            if start >= cutoff:
                break
            output += buffer[position:start]
            output += REDACTED.encode()
            position = stop
        end = max(cutoff, position)
        output += buffer[position:end]
        self._pending = buffer[end:]
        return bytes(output)

    def flush(self, *, is_cut: bool = False) -> bytes:
        """Everything held back, redacted; the stream redactor is then empty."""
        pending, self._pending = self._pending, b""
        return self.redactor.redact_bytes(pending, is_cut=is_cut)


class TextStreamRedactor:
    """Text that arrives as deltas (a model's content, a call's argument fragments): a secret
    split across two deltas is caught, and only a tail that could begin a secret waits.

    Unlike :class:`StreamRedactor`, which holds back a fixed window of bytes, this holds back
    only the longest end of the text that is the start of a secret (in its raw form: deltas are
    decoded text), so ordinary text streams on at once. ``flush`` gives what waited.
    """

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self._pending = ""
        self._starts = [(secret[0], secret) for secret in redactor.secrets]

    def feed(self, text: str) -> str:
        text = self._pending + text
        keep = self._possible_secret_start(text)
        ready, self._pending = text[: len(text) - keep], text[len(text) - keep :]
        return self.redactor.redact_text(ready)

    def flush(self) -> str:
        text, self._pending = self._pending, ""
        return self.redactor.redact_text(text)

    def _possible_secret_start(self, text: str) -> int:
        """How many characters at the end of ``text`` could begin a secret (0 if none)."""
        longest = 0
        for first, secret in self._starts:
            tail = text[-(len(secret) - 1) :]
            position = tail.find(first)
            while position != -1 and len(tail) - position > longest:
                if secret.startswith(tail[position:]):
                    longest = len(tail) - position
                    break
                position = tail.find(first, position + 1)
        return longest


class RedactingFilter(logging.Filter):
    """A logging filter that redacts every record: the message with its arguments, the
    exception text and the stack text. It never drops a record.

    Install it on the handlers as well as the loggers (a logger's filters do not see records
    that propagate up from its children); :func:`install_log_redaction` does both.
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.redactor:
            return True
        redact = self.redactor.redact_text
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what there is, redacted
            message = f"{record.msg!s} {record.args!r}"
        if self.redactor.contains_secret(message):
            self._redact_message(record, message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
            record.exc_info = None  # a formatter would render it again, unredacted
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True

    def _redact_message(self, record: logging.LogRecord, message: str) -> None:
        """Redact each argument, keeping ``args`` for formatters that read them (uvicorn's
        access log unpacks them); if the secret is still in the message (split across
        arguments, or in the format string), the formatted message replaces both."""
        redacted = self._redacted_arguments(record.args)
        if redacted is not None:
            candidate = logging.makeLogRecord(
                {"msg": self.redactor.redact_text(str(record.msg)), "args": redacted}
            )
            try:
                text = candidate.getMessage()
            except Exception:
                text = None
            if text is not None and not self.redactor.contains_secret(text):
                record.msg, record.args = candidate.msg, candidate.args
                return
        record.msg = self.redactor.redact_text(message)
        record.args = None

    def _redacted_arguments(self, args: object) -> tuple[object, ...] | dict[str, object] | None:
        if isinstance(args, tuple):
            return tuple(self._redacted_argument(value) for value in args)
        if isinstance(args, dict):
            return {key: self._redacted_argument(value) for key, value in args.items()}
        return None

    def _redacted_argument(self, value: object) -> object:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value  # numbers hold no secret, and %d needs a number
        text = value if isinstance(value, str) else str(value)
        redacted = self.redactor.redact_text(text)
        return value if redacted == text else redacted


LOGGERS: Final = ("streamproxy", "uvicorn", "uvicorn.error", "uvicorn.access", "starlette")
"""The loggers whose records :func:`install_log_redaction` covers by default."""


def install_log_redaction(redactor: Redactor, names: Iterable[str] = LOGGERS) -> RedactingFilter:
    """Add one :class:`RedactingFilter` to each named logger, its handlers and the root's handlers.

    Call it after logging is configured (uvicorn configures its loggers when it starts: call it
    from the app's lifespan, or pass ``log_config=None`` to uvicorn and configure first).
    """
    redacting = RedactingFilter(redactor)
    loggers = [logging.getLogger(name) for name in names] + [logging.getLogger()]
    for logger in loggers:
        if redacting not in logger.filters:
            logger.addFilter(redacting)
        for handler in logger.handlers:
            if redacting not in handler.filters:
                handler.addFilter(redacting)
    return redacting


def uninstall_log_redaction(redacting: RedactingFilter, names: Iterable[str] = LOGGERS) -> None:
    """Take away what :func:`install_log_redaction` added (an app that stops serving)."""
    loggers = [logging.getLogger(name) for name in names] + [logging.getLogger()]
    for logger in loggers:
        logger.removeFilter(redacting)
        for handler in logger.handlers:
            handler.removeFilter(redacting)
