"""``ChatStream``: the core's one entry point, driven like h2's connection.

Feed it bytes as they come off the socket (any split: one byte at a time, inside a UTF-8
character, between ``\\r`` and ``\\n``) with ``receive_data``, or chunks another client already
parsed with ``receive_chunk``; each call returns the events it completed (``[]`` means "need
more"). ``receive_eof`` ends the stream and always returns ``StreamEnded`` last. The caller owns
all I/O; nothing here reads a socket or a file.

Errors: malformed input raises ``ProtocolError`` (``LimitExceededError`` past a limit) and puts
the stream in its ``ERROR`` state: later ``receive_data``/``receive_chunk`` calls raise again,
and ``receive_eof`` returns the events completed before the error (none is lost, whatever the
read size), then the closing events (open calls invalid, ``StreamEnded(is_clean=False)``).
Everything assembled before the error stays readable through ``completion()`` and ``message()``.

The pipeline: ``SSEDecoder`` (``sse.py``) cuts events out of the bytes; a chunk that matches
the stream's current chunk template (``template.py``) is applied from its one varying string;
any other is parsed with orjson and read by its dialect's reader (``openai_chat.py``,
``anthropic.py``) into the ``Assembler`` (``assembler.py``), which holds the state, applies the
sealing rule and emits the events. A template hit makes the same assembler calls the reader
would, so each dialect has one decoding path; the template only skips parsing the bytes. A
read that is one whole event of the template's shape, with nothing pending in the decoder (what
a proxy reads when its upstream writes event by event), is matched as it is, before the decoder:
the decoder would give that one event's data and stay as it was.

SSE lines whose field is not ``data``, ``event``, ``id`` or ``retry`` (stray bytes glued before
``data:``, a provider's own field name) are ignored, as the WHATWG rules and every spec-following
client (the openai SDK, httpx-sse) ignore them; the first one is reported with a
``StreamWarning(kind="sse_line_ignored")``, once per stream. ``ChatStream(strict_sse=True)``
makes such a line a ``ProtocolError`` instead, for callers who would rather stop than lose a
chunk that a corrupted line might have carried.

The dialect is detected from the first payload when not given: an Anthropic event type (or an
``event:`` name that is one) means ``anthropic-messages``; anything else ``openai-chat``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson

from streamproxy.core.anthropic import EVENT_TYPES, AnthropicReader
from streamproxy.core.assembler import _TRANSITIONS, Assembler, StreamInput, StreamState
from streamproxy.core.events import Dialect, Event, StreamWarning
from streamproxy.core.limits import Limits
from streamproxy.core.openai_chat import read_chunk
from streamproxy.core.result import build_completion, build_message
from streamproxy.core.schema import SchemaSource, ToolSchemas
from streamproxy.core.sse import IgnoredLine, RawItem, SSEDecoder
from streamproxy.core.template import MAX_FRUITLESS_TEMPLATES, ChunkTemplate, learn
from streamproxy.errors import ProtocolError

DONE_MARK = b"[DONE]"
_STREAMING = StreamState.STREAMING
_ENDED_MARK = StreamState.ENDED_MARK
_DATA = StreamInput.DATA
_PAYLOAD = StreamInput.PAYLOAD
_SLICE_SIZE = 256 * 1024

# A template hit is a payload while STREAMING, and skips Assembler.move: that is only right while
# the table keeps a streaming stream streaming.
if _TRANSITIONS[(_STREAMING, _PAYLOAD)] is not _STREAMING:  # pragma: no cover
    raise AssertionError("template hits assume (STREAMING, PAYLOAD) -> STREAMING")


class ChatStream:
    """Assembles one streamed chat completion into events and a final ``chat.completion``.

    Args:
        dialect: ``"openai-chat"`` or ``"anthropic-messages"``; detected from the first payload
            when None.
        tools: the tools the model may call, each with an optional schema; a call to any other
            tool is ``ToolCallInvalid(kind="unknown_tool")``. None: every call is allowed.
        previews: emit ``ToolCallPreview`` events while arguments stream.
        limits: the sizes past which input is refused (``Limits``).
        max_tokens: the request's ``max_tokens``, so a finish at that many completion tokens
            counts as truncated whatever ``finish_reason`` says.
        strict_sse: raise ``ProtocolError`` on an SSE line with an unknown field name instead
            of ignoring it (and warning once) as the SSE standard says.
    """

    def __init__(
        self,
        *,
        dialect: Dialect | None = None,
        tools: ToolSchemas | Mapping[str, SchemaSource] | None = None,
        previews: bool = True,
        limits: Limits | None = None,
        max_tokens: int | None = None,
        strict_sse: bool = False,
    ) -> None:
        self.limits = limits or Limits()
        if tools is not None and not isinstance(tools, ToolSchemas):
            tools = ToolSchemas(tools)
        self._assembler = Assembler(
            tools=tools, previews=previews, limits=self.limits, max_tokens=max_tokens
        )
        self._decoder = SSEDecoder(
            max_event_size=self.limits.max_event_size, strict_fields=strict_sse
        )
        self._max_event_size = self.limits.max_event_size
        self.dialect: Dialect | None = dialect
        self._anthropic: AnthropicReader | None = None
        self._template: ChunkTemplate | None = None  # see template.py
        self._fruitless = 0  # templates learned since the last hit

    # ----------------------------------------------------------------- input

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed raw SSE bytes; return the events they completed.

        Raises ``ProtocolError`` at the first input that breaks the rules; the events completed
        before it in the same call are not lost: ``receive_eof`` returns them, then the closing
        events. Raises ``ProtocolError`` too once the stream is broken or ended.
        """
        assembler = self._assembler
        try:  # Assembler.move inlined: this runs once per socket read
            assembler.state = _TRANSITIONS[(assembler.state, _DATA)]
        except KeyError:
            assembler.move(_DATA)  # raises, naming why the stream takes no more input
        decoder = self._decoder
        template = self._template
        if (
            template is not None
            and decoder.is_between_events
            and assembler.state is _STREAMING
            and len(data) <= self._max_event_size
        ):
            # a socket read that is one whole event of the template's shape (the proxy's usual
            # read): what the decoder and _apply would do for it, without the lists between
            text = template.match_event(data)
            if text is not None:
                try:
                    if not template.is_arguments:
                        assembler.text(template.choice, template.kind, text)
                        self._fruitless = 0
                        return self._drain()
                    if assembler.continue_arguments(template.choice, template.call_index, text):
                        self._fruitless = 0
                        return self._drain()
                except ProtocolError as error:
                    assembler.break_stream(str(error))
                    raise
        # one huge piece (a whole body) is decoded a slice at a time, so the decoder's
        # intermediate lists stay small; the events are the same for any split
        pieces = (data,) if len(data) <= _SLICE_SIZE else _slices(data)
        for piece in pieces:
            failure: ProtocolError | None = None
            try:
                raws = decoder.feed_raw(piece)
            except ProtocolError as error:
                raws, failure = decoder.take_completed(), error
            try:
                self._apply(raws)
                if failure is not None:
                    raise failure
            except ProtocolError as error:
                assembler.break_stream(str(error))
                raise
        events = assembler.events
        assembler.events = []
        return events

    def receive_chunk(self, chunk: Mapping[str, Any], *, event: str = "") -> list[Event]:
        """Feed one already-parsed payload (``event`` is its SSE event name, if any)."""
        assembler = self._assembler
        assembler.move(_DATA)
        try:
            self._receive_payload(chunk if type(chunk) is dict else dict(chunk), event)
        except ProtocolError as error:
            assembler.break_stream(str(error))
            raise
        return self._drain()

    def receive_done(self) -> list[Event]:
        """The end mark arrived by other means (a client that already consumed ``[DONE]``)."""
        self._assembler.move(_DATA)
        self._assembler.end_mark()
        return self._drain()

    def receive_eof(self) -> list[Event]:
        """End of input: flush, seal or invalidate open calls, and end with ``StreamEnded``.

        Ending twice is a no-op (the second call returns ``[]``).
        """
        assembler = self._assembler
        is_truncated = False
        if assembler.state in (StreamState.IDLE, _STREAMING, _ENDED_MARK):
            try:
                raws, is_truncated = self._decoder.close_raw()
                self._apply(raws)
            except ProtocolError as error:
                assembler.break_stream(str(error))
        assembler.end(is_truncated=is_truncated)
        return self._drain()

    def _apply(self, raws: list[RawItem]) -> None:
        """Apply decoded events in order: through the template when it matches, else in full."""
        assembler = self._assembler
        for raw in raws:
            if isinstance(raw, bytes):
                template = self._template
                if template is not None and assembler.state is _STREAMING:
                    # a hit makes the reader's own call: Assembler.text, or continue_arguments
                    # (the fast path tool_delta tries first). A payload in STREAMING stays
                    # STREAMING (the table says so, checked when this module loads), so a hit
                    # needs no lookup.
                    text = template.match(raw)
                    if text is not None:
                        if not template.is_arguments:
                            assembler.text(template.choice, template.kind, text)
                            self._fruitless = 0
                            continue
                        call_index = template.call_index
                        if assembler.continue_arguments(template.choice, call_index, text):
                            self._fruitless = 0
                            continue
                self._receive_event("", raw)
            elif isinstance(raw, IgnoredLine):
                assembler.events.append(
                    StreamWarning(
                        kind="sse_line_ignored",
                        detail="a line that is no SSE field was ignored (reported once per "
                        f"stream): {raw.line[:80]!r}",
                    )
                )
            else:
                self._receive_event(raw[0], raw[1])

    # ----------------------------------------------------------------- output

    @property
    def is_ended(self) -> bool:
        """Whether ``StreamEnded`` was emitted."""
        return self._assembler.state is StreamState.CLOSED

    @property
    def state(self) -> StreamState:
        """The stream's state (see ``assembler.py``)."""
        return self._assembler.state

    @property
    def usage(self) -> dict[str, object] | None:
        """The last usage the upstream reported."""
        return self._assembler.last_usage

    @property
    def errors(self) -> list[dict[str, object]]:
        """In-band error payloads received so far."""
        return list(self._assembler.errors)

    def completion(self) -> dict[str, object]:
        """The ``chat.completion`` object the non-streaming API would have returned."""
        return build_completion(self._assembler)

    def message(self, choice: int = 0) -> dict[str, object]:
        """The assistant message of ``choice``, ready to append to ``messages`` as is."""
        state = self._assembler.choices.get(choice)
        if state is None:
            return {"role": "assistant", "content": None}
        return build_message(state)

    # ----------------------------------------------------------------- internals

    def _drain(self) -> list[Event]:
        events = self._assembler.events
        self._assembler.events = []
        return events

    def _receive_event(self, event: str, data: bytes) -> None:
        if data == DONE_MARK:
            self._assembler.end_mark()
            return
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            # WHATWG decodes invalid UTF-8 as U+FFFD before anything reads the data
            text = data.decode("utf-8", errors="replace")
            try:
                payload = orjson.loads(text)
            except orjson.JSONDecodeError:
                raise ProtocolError(f"an SSE event's data is not JSON: {text[:80]!r}") from None
        if type(payload) is not dict:
            raise ProtocolError(f"an SSE event's data is not a JSON object: {data[:80]!r}")
        self._receive_payload(payload, event)
        if (
            not event
            and self._fruitless < MAX_FRUITLESS_TEMPLATES
            and self.dialect == "openai-chat"
            and self._assembler.state is _STREAMING
        ):
            template = learn(data, payload)
            if template is not None:
                self._template = template
                self._fruitless += 1

    def _receive_payload(self, payload: dict[str, Any], event: str) -> None:
        assembler = self._assembler
        if assembler.move(_PAYLOAD) is _ENDED_MARK:
            if payload.get("type") != "message_stop":
                assembler.events.append(_late_payload_warning(payload))
            return
        if event:
            if event == "error":
                assembler.error(payload if "error" in payload else {"error": payload})
                return
        elif "type" in payload and payload["type"] == "error" and "choices" not in payload:
            assembler.error(payload if "error" in payload else {"error": payload})
            return
        if self.dialect is None:
            self.dialect = _detect_dialect(payload, event)
        if self.dialect == "openai-chat":
            read_chunk(assembler, payload)
        else:
            if self._anthropic is None:
                self._anthropic = AnthropicReader(assembler)
            self._anthropic.read(payload)


def _slices(data: bytes) -> Iterator[bytes]:
    for start in range(0, len(data), _SLICE_SIZE):
        yield data[start : start + _SLICE_SIZE]


def _detect_dialect(payload: Mapping[str, Any], event: str) -> Dialect:
    kind = payload.get("type")
    if event in EVENT_TYPES or (isinstance(kind, str) and kind in EVENT_TYPES):
        return "anthropic-messages"
    return "openai-chat"


def _late_payload_warning(payload: Mapping[str, Any]) -> Event:
    return StreamWarning(
        kind="payload_after_end",
        detail="a payload arrived after the end mark and was ignored: "
        + orjson.dumps(payload).decode()[:200],
    )


def assemble(
    data: bytes | Iterable[bytes], **options: Any
) -> tuple[list[Event], dict[str, object]]:
    """Assemble a whole body (or its pieces) at once: ``(events, completion)``."""
    stream = ChatStream(**options)
    events: list[Event] = []
    pieces = [data] if isinstance(data, bytes) else data
    for piece in pieces:
        events.extend(stream.receive_data(piece))
    events.extend(stream.receive_eof())
    return events, stream.completion()
