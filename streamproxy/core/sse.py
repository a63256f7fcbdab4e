"""Server-Sent Events decoding: bytes in any pieces -> ``SSEMessage``.

Follows the WHATWG "event stream interpretation" rules
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):

- lines end in ``\\r\\n``, ``\\n`` or ``\\r``; a ``\\r`` at the end of one piece and a ``\\n``
  at the start of the next are one line end;
- a blank line dispatches the event; a line starting with ``:`` is a comment (keep-alives such as
  DeepSeek's ``: keep-alive`` or OpenRouter's ``: OPENROUTER PROCESSING``);
- ``field: value`` with one optional space stripped; ``data`` lines join with ``\\n``; ``event``,
  ``id`` and ``retry`` are kept; other field names are ignored;
- an event whose data buffer is empty is not dispatched (so ``id:`` followed by a blank line does
  not produce an empty event, the bug of openai/openai-python#2722);
- a leading UTF-8 byte order mark is dropped.

Lines are split on bytes before decoding, which is safe because line terminators are ASCII and
never occur inside a multi-byte UTF-8 sequence; a piece may end in the middle of a character.
Invalid UTF-8 decodes with U+FFFD, as the spec says.

Cost: every byte is examined a bounded number of times. An unfinished line is kept as a list of
pieces and joined once, so one huge event split over many reads stays linear (the bug of
rexxars/eventsource-parser#28 and florimondmanca/httpx-sse#40).

``strict_fields=True`` makes a line with any other field name a ``ProtocolError`` instead of
ignoring it. The spec ignores such lines, but no chat-completion provider sends them, and bytes
that corrupt the start of a ``data:`` line turn it into one: ignoring it would drop a chunk
without a word (``ChatStream`` decodes strictly).

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


# A dispatched event before decoding: (event type, data as UTF-8 bytes, last event id, retry).
# ChatStream parses the bytes with orjson directly, which saves a decode per event.
RawEvent = tuple[str, bytes, str | None, int | None]


class SSEDecoder:
    """Incremental SSE decoder; feed bytes with ``feed``, finish with ``close``."""

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
        self._data_size = 0
        self._completed: list[bytes | RawEvent] = []  # dispatched, not yet handed out
        self._event = ""
        self._last_id: str | None = None
        self._retry: int | None = None
        self.bytes_received = 0
        self.comments_received = 0

    @property
    def has_pending_data(self) -> bool:
        """Whether part of an event (a line or data lines) is waiting for more input."""
        return bool(self._partial) or bool(self._data)

    def feed(self, data: bytes) -> list[SSEMessage]:
        """Decode ``data``; return the events it completed (often none)."""
        return [self._message(raw) for raw in self.feed_raw(data)]

    def close(self) -> tuple[list[SSEMessage], bool]:
        """End of input: the events still to dispatch, and whether the input was cut mid-line."""
        raw, is_truncated = self.close_raw()
        return [self._message(event) for event in raw], is_truncated

    def feed_raw(self, data: bytes) -> list[bytes | RawEvent]:
        """``feed``, with each event's data left as UTF-8 bytes.

        An event with no ``event:`` name is given as its data alone (``bytes``); any other as a
        ``RawEvent`` tuple. Splitting whole one-line events this way costs no Python work per
        event, which is most of the decoder's cost on a fast stream.

        Raises ``ProtocolError`` (``LimitExceededError``) at the first bad line; the events
        completed before it are kept for ``take_completed``, so nothing before an error is lost.
        """
        self._feed(data)
        completed, self._completed = self._completed, []
        return completed

    def take_completed(self) -> list[bytes | RawEvent]:
        """The events completed before ``feed_raw`` raised (then empty until it raises again)."""
        completed, self._completed = self._completed, []
        return completed

    def _feed(self, data: bytes) -> None:
        if not data:
            return
        self.bytes_received += len(data)
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
        boundary = -1 if b"\r" in data else data.find(b"\n\n")
        if boundary < 0:
            self._feed_lines(data)
            return
        # Up to the first blank line, the line-by-line path. After it no event is pending, so the
        # complete events that follow can be cut at blank lines; when every one of them is a
        # single "data: " line (each line feed belongs to a blank-line separator followed by
        # "data: "), their payloads are cut out in one pass, with no per-event work in Python.
        self._feed_lines(data[: boundary + 2])
        remaining = data[boundary + 2 :]
        end = remaining.rfind(b"\n\n")
        if end < 0:
            rest = remaining
        else:
            complete, rest = remaining[:end], remaining[end + 2 :]
            if (
                complete.startswith(b"data: ")
                and complete.count(b"\n") == 2 * complete.count(b"\n\ndata: ")
                and len(complete) < self._max_event_size
                and self._retry is None
            ):
                payloads = complete[6:].split(b"\n\ndata: ")
                if b"" in payloads:
                    payloads = [payload for payload in payloads if payload]
                self._completed += payloads
            else:
                for block in complete.split(b"\n\n"):
                    self._feed_lines(block + b"\n\n")
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
        events = self._completed
        data_lines = self._data
        for line in lines:
            if line.startswith(b"data:"):
                value = line[6:] if line[5:6] == b" " else line[5:]
                self._data_size += len(value) + 1
                if self._data_size > self._max_event_size:
                    raise LimitExceededError("an SSE event", self._max_event_size)
                data_lines.append(value)
            elif not line:
                if data_lines:
                    joined = data_lines[0] if len(data_lines) == 1 else b"\n".join(data_lines)
                    data_lines.clear()
                    self._data_size = 0
                    if joined:
                        events.append((self._event, joined, self._last_id, self._retry))
                        self._retry = None
                self._event = ""
            elif line[0] == 58:  # ":" starts a comment
                self.comments_received += 1
            else:
                self._process_field(line)
        if tail:
            self._partial.append(tail)
            self._partial_size += len(tail)
            if self._partial_size > self._max_event_size:
                raise LimitExceededError("an SSE line", self._max_event_size)

    def close_raw(self) -> tuple[list[bytes | RawEvent], bool]:
        """``close``, with each event's data left as UTF-8 bytes."""
        is_truncated = bool(self._partial)
        self._partial, self._partial_size = [], 0
        events, self._completed = self._completed, []
        if not is_truncated and self._data:
            self._dispatch(events)
        self._data.clear()
        self._data_size = 0
        return events, is_truncated

    def _message(self, raw: bytes | RawEvent) -> SSEMessage:
        if isinstance(raw, bytes):
            return SSEMessage("", raw.decode("utf-8", errors="replace"), self._last_id, None)
        event, data, id, retry = raw
        return SSEMessage(event, data.decode("utf-8", errors="replace"), id, retry)

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
        elif field == "retry" and value.isdigit():
            self._retry = int(value)
        elif field == "data":  # "data" with no colon: an empty data line
            self._data.append(b"")
            self._data_size += 1
        elif self._strict_fields and field not in ("retry", "id"):
            raise ProtocolError(f"an SSE line has an unknown field: {line[:80]!r}")

    def _dispatch(self, events: list[bytes | RawEvent]) -> None:
        data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        self._data.clear()
        self._data_size = 0
        event, self._event = self._event, ""
        if data:
            events.append((event, data, self._last_id, self._retry))
            self._retry = None
