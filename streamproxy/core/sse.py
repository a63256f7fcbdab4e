"""Server-Sent Events decoding: bytes in any pieces -> ``SSEMessage``.

Follows the WHATWG "event stream interpretation" rules
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):

- lines end in ``\\r\\n``, ``\\n`` or ``\\r``; a ``\\r`` at the end of one piece and a ``\\n``
  at the start of the next are one line end;
- a blank line dispatches the event; a line starting with ``:`` is a comment (keep-alives such as
  DeepSeek's ``: keep-alive`` or OpenRouter's ``: OPENROUTER PROCESSING``);
- ``field: value`` with one optional space stripped; ``data`` lines join with ``\\n``; ``event``,
  ``id`` and ``retry`` are kept; a line whose field name is anything else is ignored (stray text
  glued before ``data:``, a provider's own field, a body that is not SSE at all), as the openai
  SDK and httpx-sse ignore it;
- an event whose data buffer is empty is not dispatched (so ``id:`` followed by a blank line does
  not produce an empty event, the bug of openai/openai-python#2722);
- a leading UTF-8 byte order mark is dropped.

Lines are split on bytes before decoding, which is safe because line terminators are ASCII and
never occur inside a multi-byte UTF-8 sequence; a piece may end in the middle of a character.
Invalid UTF-8 decodes with U+FFFD, as the spec says.

Ignored lines are not silent: the first one is handed out, in its place among the events, as an
``IgnoredLine`` (once per decoder), so a caller can warn that input was dropped. With
``strict_fields=True`` such a line raises ``ProtocolError`` instead.

Cost: every byte is examined a bounded number of times. An unfinished line is kept as a list of
pieces and joined once, so one huge event split over many reads stays linear (the bug of
rexxars/eventsource-parser#28 and florimondmanca/httpx-sse#40). When nothing is pending at the
start of a piece, or after its first blank line, a run of complete one-line ``data: `` events is
cut out in one pass with no per-event work in Python: a piece that holds exactly one event (one
socket read per event, as a proxy sees the stream) takes that path too.

The size limit is on one event: its lines, counted from the line after the previous blank line,
including the line not finished yet, may hold at most ``max_event_size`` bytes (one per line end
counted). So whether a stream is over the limit, and the error that says so, do not depend on
where the input was cut.

One deliberate leniency: at end of input, an event whose last line was complete but which lacks
the final blank line is dispatched (many servers close right after ``data: [DONE]\\n``). A last line
cut in the middle is reported as ``is_truncated``.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamproxy.core.limits import DEFAULT_MAX_EVENT_SIZE
from streamproxy.errors import LimitExceededError, ProtocolError

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class SSEMessage:
    """One dispatched event: its type (``""`` when no ``event:`` field), data, id and retry."""

    event: str
    data: str
    id: str | None = None
    retry: int | None = None


@dataclass(frozen=True, slots=True)
class IgnoredLine:
    """The first line the decoder ignored: its field is not data, event, id or retry."""

    line: str


# A dispatched event before decoding: (event type, data as UTF-8 bytes, last event id, retry).
# ChatStream parses the bytes with orjson directly, which saves a decode per event.
RawEvent = tuple[str, bytes, str | None, int | None]
RawItem = bytes | RawEvent | IgnoredLine


class SSEDecoder:
    """Incremental SSE decoder; feed bytes with ``feed``, finish with ``close``.

    Args:
        max_event_size: the most bytes one event may hold (see the module docstring).
        strict_fields: raise ``ProtocolError`` on a line with an unknown field name instead of
            ignoring it as the spec says.
    """

    def __init__(
        self, *, max_event_size: int = DEFAULT_MAX_EVENT_SIZE, strict_fields: bool = False
    ) -> None:
        self._max_event_size = max_event_size
        self._strict_fields = strict_fields
        self._partial: list[bytes] = []  # pieces of the current unfinished line
        self._partial_size = 0
        self._skip_leading_lf = False  # the previous piece ended in "\r"
        self._at_start = True  # a BOM may still come
        self._data: list[bytes] = []
        self._event_size = 0  # bytes of the current event's complete lines
        self._completed: list[RawItem] = []  # dispatched, not yet handed out
        self._event = ""
        self._last_id: str | None = None
        self._retry: int | None = None
        self._has_ignored_line = False
        self.is_between_events = False
        """Nothing is pending, and no retry or id is to attach: a piece that is one whole
        one-line ``data: `` event gives that event's data alone (read only)."""

    def feed(self, data: bytes) -> list[SSEMessage]:
        """Decode ``data``; return the events it completed (often none)."""
        return _messages(self.feed_raw(data))

    def close(self) -> tuple[list[SSEMessage], bool]:
        """End of input: the events still to dispatch, and whether the input was cut mid-line."""
        raws, is_truncated = self.close_raw()
        return _messages(raws), is_truncated

    def feed_raw(self, data: bytes) -> list[RawItem]:
        """``feed``, with each event's data left as UTF-8 bytes, and the first ignored line.

        An event with no ``event:`` name, no ``retry:`` and no last event id is given as its data
        alone (``bytes``); any other as a ``RawEvent`` tuple. Chat streams send only the first
        kind, and splitting whole one-line events this way costs no Python work per event.

        Raises ``ProtocolError`` (``LimitExceededError``) at the first bad line; the events
        completed before it are kept for ``take_completed``, so nothing before an error is lost.
        """
        if (
            self.is_between_events
            and data[-2:] == b"\n\n"
            and data[:6] == b"data: "
            and data.find(b"\n") == len(data) - 2  # one line, then the blank line
            and len(data) <= self._max_event_size
            and b"\r" not in data
        ):
            # the piece is one whole one-line event, with nothing pending (a socket read per
            # event): the bulk cut below, for a block of one
            return [data[6:-2]] if len(data) > 8 else []
        self.is_between_events = False
        self._feed(data)
        self.is_between_events = not (
            self._partial
            or self._event_size
            or self._skip_leading_lf
            or self._at_start
            or self._retry is not None
            or self._last_id is not None
        )
        completed, self._completed = self._completed, []
        return completed

    def take_completed(self) -> list[RawItem]:
        """The events completed before ``feed_raw`` raised (then empty until it raises again)."""
        completed, self._completed = self._completed, []
        return completed

    def close_raw(self) -> tuple[list[RawItem], bool]:
        """``close``, with each event's data left as UTF-8 bytes."""
        is_truncated = bool(self._partial)
        self._partial, self._partial_size = [], 0
        events, self._completed = self._completed, []
        if not is_truncated and self._data:
            self._dispatch(events)
        self._data.clear()
        self._event_size = 0
        self.is_between_events = False
        return events, is_truncated

    # ----------------------------------------------------------------- decoding

    def _feed(self, data: bytes) -> None:
        if not data:
            return
        if self._skip_leading_lf:
            self._skip_leading_lf = False
            if data[:1] == b"\n":
                data = data[1:]
                if not data:
                    return
        if self._at_start:
            head = b"".join(self._partial) + data
            if len(head) < len(_BOM) and _BOM.startswith(head):
                self._partial, self._partial_size = [head], len(head)
                return
            self._at_start = False
            self._partial, self._partial_size = [], 0
            data = head[len(_BOM) :] if head.startswith(_BOM) else head
        if b"\r" in data:
            self._feed_lines(data)
            return
        if not (self._partial or self._data or self._event or self._event_size):
            remaining = data
        else:
            # up to the first blank line, the line-by-line path; after it no event is pending
            boundary = data.find(b"\n\n")
            if boundary < 0:
                self._feed_lines(data)
                return
            self._feed_lines(data[: boundary + 2])
            remaining = data[boundary + 2 :]
        end = remaining.rfind(b"\n\n")
        if end < 0:
            rest = remaining
        else:
            complete, rest = remaining[:end], remaining[end + 2 :]
            # every line feed belongs to a blank-line separator followed by "data: ": the block
            # is only one-line "data: " events, and each is smaller than the block
            if (
                complete.startswith(b"data: ")
                and complete.count(b"\n") == 2 * complete.count(b"\n\ndata: ")
                and len(complete) < self._max_event_size
                and self._retry is None
                and self._last_id is None
            ):
                payloads = complete[6:].split(b"\n\ndata: ")
                if b"" in payloads:
                    payloads = [payload for payload in payloads if payload]
                self._completed += payloads
            else:
                self._feed_lines(complete + b"\n\n")
        if rest:
            self._feed_lines(rest)

    def _feed_lines(self, data: bytes) -> None:
        """Decode ``data`` line by line (the general path: any line ends, any state)."""
        if b"\r" in data:
            lines = data.splitlines()
            if data.endswith(b"\r"):
                self._skip_leading_lf = True
            tail = b"" if data.endswith((b"\n", b"\r")) else lines.pop()
        else:
            lines = data.split(b"\n")
            tail = lines.pop()
        if self._partial and lines:
            self._partial.append(lines[0])
            lines[0] = b"".join(self._partial)
            self._partial, self._partial_size = [], 0
        limit = self._max_event_size
        size = self._event_size
        data_lines = self._data
        for line in lines:
            if not line:
                if data_lines:
                    self._dispatch(self._completed)
                self._event = ""
                size = 0
                continue
            size += len(line) + 1
            if size > limit:
                raise LimitExceededError("an SSE event", limit)
            if line.startswith(b"data:"):
                data_lines.append(line[6:] if line[5:6] == b" " else line[5:])
            elif line[0] != 58:  # ":" starts a comment
                self._process_field(line)
        self._event_size = size
        if tail:
            self._partial.append(tail)
            self._partial_size += len(tail)
            if size + self._partial_size > limit:
                raise LimitExceededError("an SSE event", limit)

    def _process_field(self, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace")
        field, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if field == "event":
            self._event = value
        elif field == "id":
            if "\x00" not in value:
                self._last_id = value
        elif field == "retry":
            if value.isascii() and value.isdigit():
                self._retry = int(value)
        elif field == "data":  # "data" with no colon: an empty data line
            self._data.append(b"")
        elif self._strict_fields:
            raise ProtocolError(f"an SSE line has an unknown field: {line[:80]!r}")
        elif not self._has_ignored_line:
            self._has_ignored_line = True
            self._completed.append(IgnoredLine(line[:200]))

    def _dispatch(self, events: list[RawItem]) -> None:
        data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        self._data.clear()
        event, self._event = self._event, ""
        if not data:
            return
        if event or self._retry is not None or self._last_id is not None:
            events.append((event, data, self._last_id, self._retry))
            self._retry = None
        else:
            events.append(data)


def _messages(raws: list[RawItem]) -> list[SSEMessage]:
    """``SSEMessage`` per dispatched event (an ignored line is not a message)."""
    messages = []
    for raw in raws:
        if isinstance(raw, bytes):
            messages.append(SSEMessage("", raw.decode("utf-8", errors="replace")))
        elif not isinstance(raw, IgnoredLine):
            event, data, id, retry = raw
            messages.append(SSEMessage(event, data.decode("utf-8", errors="replace"), id, retry))
    return messages
