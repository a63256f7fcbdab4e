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

One deliberate leniency: at end of input, an event whose last line was complete but which lacks
the final blank line is dispatched (many servers close right after ``data: [DONE]\\n``). A last line
cut in the middle is reported as ``is_truncated``.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamproxy.core.errors import LimitExceededError
from streamproxy.core.limits import DEFAULT_MAX_EVENT_SIZE

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class SSEMessage:
    """One dispatched event: its type (``""`` when no ``event:`` field), data, id and retry."""

    event: str
    data: str
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Incremental SSE decoder; feed bytes with ``feed``, finish with ``close``."""

    def __init__(self, *, max_event_size: int = DEFAULT_MAX_EVENT_SIZE) -> None:
        self._max_event_size = max_event_size
        self._partial: list[bytes] = []  # pieces of the current unfinished line
        self._partial_size = 0
        self._skip_leading_lf = False  # the previous piece ended in "\r"
        self._at_start = True  # a BOM may still come
        self._data: list[str] = []
        self._data_size = 0
        self._event = ""
        self._id: str | None = None
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
        if not data:
            return []
        self.bytes_received += len(data)
        if self._skip_leading_lf:
            self._skip_leading_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        if self._at_start:
            head = b"".join(self._partial) + data
            if len(head) < len(_BOM) and _BOM.startswith(head):
                self._partial, self._partial_size = [head], len(head)
                return []
            self._at_start = False
            if self._partial:
                data, self._partial, self._partial_size = head, [], 0
            if data.startswith(_BOM):
                data = data[len(_BOM) :]
        messages: list[SSEMessage] = []
        lines = data.splitlines(keepends=True)
        last = len(lines) - 1
        for number, line in enumerate(lines):
            if number == last and not line.endswith((b"\n", b"\r")):
                self._partial.append(line)
                self._partial_size += len(line)
                if self._partial_size > self._max_event_size:
                    raise LimitExceededError("an SSE line", self._max_event_size)
                break
            if self._partial:
                self._partial.append(line)
                line = b"".join(self._partial)
                self._partial, self._partial_size = [], 0
            if line.endswith(b"\r\n"):
                line = line[:-2]
            else:
                if line.endswith(b"\r"):
                    self._skip_leading_lf = number == last
                line = line[:-1]
            message = self._process_line(line)
            if message is not None:
                messages.append(message)
        return messages

    def close(self) -> tuple[list[SSEMessage], bool]:
        """End of input: the events still to dispatch, and whether the input was cut mid-line."""
        is_truncated = bool(self._partial)
        self._partial, self._partial_size = [], 0
        messages: list[SSEMessage] = []
        if not is_truncated and self._data:
            message = self._dispatch()
            if message is not None:
                messages.append(message)
        self._data, self._data_size = [], 0
        return messages, is_truncated

    def _process_line(self, raw: bytes) -> SSEMessage | None:
        if not raw:
            return self._dispatch()
        if raw[:1] == b":":
            self.comments_received += 1
            return None
        line = raw.decode("utf-8", errors="replace")
        field, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._data_size += len(value) + 1
            if self._data_size > self._max_event_size:
                raise LimitExceededError("an SSE event", self._max_event_size)
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\x00" not in value:
                self._last_id = value
        elif field == "retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> SSEMessage | None:
        data = "\n".join(self._data)
        self._data, self._data_size = [], 0
        event, self._event = self._event, ""
        if not data:
            return None
        message = SSEMessage(event, data, self._last_id, self._retry)
        self._retry = None
        return message
