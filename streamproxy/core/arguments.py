"""One tool call's argument text: fragments in, strict parse and partial previews out.

Appending a fragment is O(len(fragment)): the fragment goes on a list and two characters are
noted (its first and last non-blank ones). Nothing re-reads the text on every fragment.

The text is read in two lazy ways, each at most a constant number of times per byte:

- a lexical scan (``_scan``), resumed where it stopped, that tracks the open containers, whether
  it is inside a string (and whether that string is an object key), the end of the last complete
  element, and whether one complete top-level value has been read and something follows it. It runs
  only when a preview is due, when a new fragment could start a second value (the text ends in
  ``}``/``]`` and the fragment starts with ``{``/``[``), or when a strict parse failed and the
  reason is wanted;
- previews at geometrically spaced sizes (every time the text grows by ``PREVIEW_GROWTH``), each
  an ``orjson`` parse of the text closed off at the current point. The sizes form a geometric
  series, so all previews together parse O(n) bytes.

The final parse is strict (``orjson.loads`` on the whole text, once): a preview is for display and
never decides anything (langchain-ai/langchain#39275: a lenient final parse flipped flags).
"""

from __future__ import annotations

import json
import re

import orjson

# The first preview comes after this many characters: a call shorter than that is over in about
# a second at DeepSeek's token rate, before a UI could usefully show it; then one each time the
# text grew by PREVIEW_GROWTH (1.5: about every 0.4-0.6 of the time elapsed so far, and all
# previews together parse under 3n characters).
PREVIEW_FIRST_SIZE = 256
PREVIEW_GROWTH = 1.5

# orjson reads integers beyond 64 bits as floats, silently; a value with 19 digits or more in a
# row is read again by the standard library, which keeps integers exact.
_LONG_DIGITS = re.compile(r"[0-9]{19}")

_NEXT_TOKEN = re.compile(r'[{}\[\]",:]|[^\s{}\[\]",:]+')
_OPEN_ESCAPE_TAIL = re.compile(r"\\u[0-9a-fA-F]{0,3}$")
BLANK = " \t\r\n"  # JSON whitespace
_BLANK = BLANK


def parse_json(text: str) -> object:
    """Strict, exact JSON: one value, no NaN or trailing data; raises ``orjson.JSONDecodeError``."""
    value = orjson.loads(text)
    if _LONG_DIGITS.search(text) is None:
        return value
    return json.loads(text)


class ArgumentsBuffer:
    """The growing arguments text of one tool call."""

    __slots__ = (
        "_closers",
        "_expect_key",
        "_extra_at",
        "_fragments",
        "_in_string",
        "_is_key",
        "_last_char",
        "_safe_end",
        "_scanned",
        "_value_done",
        "first_char",
        "next_preview",
        "size",
    )

    def __init__(self) -> None:
        self._fragments: list[str] = []
        self.size = 0
        self.first_char = ""  # first non-blank character of the text
        self._last_char = ""  # last non-blank character of the text
        self.next_preview = PREVIEW_FIRST_SIZE
        # scanner state, valid for text[:self._scanned]
        self._scanned = 0
        self._closers: list[str] = []
        self._in_string = False
        self._is_key = False
        self._expect_key = False
        self._value_done = False
        self._extra_at = -1
        self._safe_end = 0

    def append(self, fragment: str) -> None:
        """Add a fragment: O(1) unless it ends in blanks or is the first non-blank one."""
        self._fragments.append(fragment)
        self.size += len(fragment)
        if not fragment:
            return
        last = fragment[-1]
        if last in _BLANK or not self.first_char:
            stripped = fragment.strip(_BLANK)
            if not stripped:
                return
            if not self.first_char:
                self.first_char = stripped[0]
            last = stripped[-1]
        self._last_char = last

    def text(self) -> str:
        """The whole text so far (joined once, then kept joined)."""
        if len(self._fragments) > 1:
            self._fragments = ["".join(self._fragments)]
        return self._fragments[0] if self._fragments else ""

    def clear(self) -> None:
        """Drop the text (a call over its size limit keeps nothing)."""
        self._fragments = []

    def could_start_new_value(self, fragment: str) -> bool:
        """Cheap test: the text ends a container and ``fragment`` opens one (``}{``)."""
        if self._last_char not in ("}", "]"):
            return False
        head = fragment.lstrip(_BLANK)
        return head[:1] in ("{", "[")

    def is_one_complete_value(self) -> bool:
        """Whether the text is exactly one complete JSON value (scans only the new part)."""
        self._scan()
        return self._value_done and self._extra_at < 0 and not self._in_string

    def is_duplicate(self, fragment: str) -> bool:
        """Whether ``fragment`` re-sends the whole (complete) text: same bytes or same value."""
        text = self.text()
        if fragment.strip(_BLANK) == text.strip(_BLANK):
            return True
        try:
            return bool(parse_json(fragment) == parse_json(text))
        except orjson.JSONDecodeError:
            return False

    def is_cut_off(self) -> bool:
        """Whether the text stops inside a string or an open container (more was coming)."""
        self._scan()
        return self._extra_at < 0 and (self._in_string or bool(self._closers))

    def describe_incomplete(self) -> str | None:
        """Why the text is not one complete value, or None if the scan sees nothing wrong."""
        self._scan()
        if self._extra_at >= 0:
            return f"more than one JSON value (a second one starts at character {self._extra_at})"
        if self._in_string:
            return "the arguments end inside a string"
        if self._closers:
            return f"the arguments end with {len(self._closers)} unclosed container(s)"
        if not self._value_done:
            return "the arguments hold no complete JSON value"
        return None

    def preview(self) -> tuple[bool, object]:
        """A best-effort value of the text so far: ``(True, value)``, or ``(False, None)``.

        Tries, in order: the text with an open value string closed; the text closed as is; the
        text cut back to the end of its last complete element and closed.
        """
        self.next_preview = max(int(self.size * PREVIEW_GROWTH), self.size + 1)
        self._scan()
        text = self.text()
        if self._extra_at >= 0:
            return False, None
        closers = "".join(reversed(self._closers))
        candidates = []
        if self._in_string:
            if not self._is_key:
                body = text
                if (len(body) - len(body.rstrip("\\"))) % 2:  # a dangling escape
                    body = body[:-1]
                cut = _OPEN_ESCAPE_TAIL.search(body, max(len(body) - 6, 0))  # only the tail
                if cut is not None:
                    body = body[: cut.start()]
                candidates.append(body + '"' + closers)
        else:
            candidates.append(text + closers)
        if self._safe_end:
            candidates.append(text[: self._safe_end] + closers)
        for candidate in candidates:
            try:
                return True, orjson.loads(candidate)  # display only: no exactness pass
            except orjson.JSONDecodeError:
                continue
        return False, None

    def _scan(self) -> None:
        """Advance the lexical scan over the text not yet scanned."""
        text = self.text()
        position, end = self._scanned, len(text)
        if position >= end or self._extra_at >= 0:
            self._scanned = end
            return
        closers = self._closers
        while position < end:
            if self._in_string:
                # the next quote not escaped: a quote after an odd run of backslashes is
                # escaped (the run is counted back from the quote, so a run cut by an earlier
                # scan's end is counted whole); one Python step per quote, not per escape
                quote = text.find('"', position)
                if quote < 0:
                    position = end
                    break
                backslash = quote - 1
                while text[backslash] == "\\":
                    backslash -= 1
                position = quote + 1
                if (quote - 1 - backslash) % 2:
                    continue
                self._in_string = False
                if not self._is_key:
                    self._element_done(position)
                continue
            match = _NEXT_TOKEN.search(text, position)
            if match is None:
                position = end
                break
            if self._value_done:
                self._extra_at = match.start()
                position = end
                break
            token = match.group()
            position = match.end()
            first = token[0]
            if first == '"':
                self._in_string = True
                self._is_key = self._expect_key
            elif first == "{" or first == "[":
                closers.append("}" if first == "{" else "]")
                self._expect_key = first == "{"
                self._safe_end = position
            elif first == "}" or first == "]":
                if closers:
                    closers.pop()
                self._element_done(position)
            elif first == ",":
                self._expect_key = bool(closers) and closers[-1] == "}"
            elif first == ":":
                self._expect_key = False
            else:
                self._element_done(position)
        self._scanned = position

    def _element_done(self, position: int) -> None:
        self._expect_key = False
        if self._closers:
            self._safe_end = position
        else:
            self._value_done = True
            self._safe_end = position
