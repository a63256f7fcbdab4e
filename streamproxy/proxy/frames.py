"""The client's wire format, all of it: a turn's outputs as chat-completion chunks, the final
frames, error frames, and the non-streaming ``chat.completion``.

Every chunk carries the turn's one completion id, ``created`` and ``model``; the first chunk
with a delta carries ``role: "assistant"``. Server tools show as comments for every client
(``: tool get_weather ok in 12 ms``); a client that asked (``streamproxy.tool_progress``) also
gets chunks with an empty delta and the extension field::

    {"streamproxy": {"tool_progress": {"id", "name", "status", "duration_ms"?}}}
    {"streamproxy": {"approval_request": {"id", "call_id", "name", "arguments"}}}
    {"streamproxy": {"round": {"number", "finish_reason", "usage"}}}      # each upstream round

and a client that asked for previews (``streamproxy.tool_previews``) gets each fragment of a
server call's arguments as it streams, to show the call filling in::

    {"streamproxy": {"tool_arguments": {"id", "name", "arguments"}}}

``status`` is ``started``, ``ok``, ``error``, ``timeout``, ``too_large``, ``awaiting_approval``,
and for an approval settled at the start of the next request ``declined`` or ``already_ran``
(an approved call shows ``started`` then its outcome, like any tool).
The stream ends with one chunk holding the one ``finish_reason``, a usage chunk when the client
asked (``stream_options.include_usage``), and ``data: [DONE]``; after an error, one
``data: {"error": ...}`` frame and no ``[DONE]`` (``core/encode.py``).
"""

from __future__ import annotations

from typing import Protocol

from streamproxy.core.encode import encode_chunk, encode_comment, encode_done, encode_error
from streamproxy.errors import StreamProxyError
from streamproxy.proxy.turn import (
    ApprovalRequested,
    ClientCallArguments,
    ClientCallStarted,
    Output,
    RoundEnded,
    ServerCallArguments,
    TextDelta,
    ToolProgress,
    Turn,
)
from streamproxy.redaction import Redactor, TextStreamRedactor

__all__ = ["ChatFrames", "ClientFrames"]

EXTENSION_FIELD = "streamproxy"


class ClientFrames(Protocol):
    """A client wire format the runner writes: chat completions here, Responses in
    ``responses/frames.py``."""

    def encode(self, outputs: list[Output]) -> list[bytes]: ...

    def final(self) -> list[bytes]: ...

    def error(self, error: StreamProxyError) -> bytes: ...

    def completion(self) -> dict[str, object]: ...


class ChatFrames:
    """Encodes one turn for a chat-completions client."""

    def __init__(self, turn: Turn, redactor: Redactor | None = None) -> None:
        self.turn = turn
        self._has_role = False
        self._redactor = redactor if redactor else None
        self._text_streams: dict[tuple[str, int], TextStreamRedactor] = {}
        """Per text field (and per client call's arguments): a secret split across deltas is
        caught here; the runner redacts each whole frame too."""

    def encode(self, outputs: list[Output]) -> list[bytes]:
        """The frames for a batch of the turn's outputs."""
        return [
            item if isinstance(item, bytes) else encode_chunk(item) for item in self.items(outputs)
        ]

    def items(self, outputs: list[Output]) -> list[dict[str, object] | bytes]:
        """The turn's outputs as chunk dicts, and comments as encoded frames."""
        items: list[dict[str, object] | bytes] = []
        for output in outputs:
            if isinstance(output, TextDelta):
                text = self._redacted(output.field, 0, output.text)
                if text:
                    items.append(self.chunk({output.field: text}))
            elif isinstance(output, ClientCallArguments):
                fragment = self._redacted("arguments", output.index, output.fragment)
                if fragment:
                    items.append(self._arguments_chunk(output.index, fragment))
            elif isinstance(output, ClientCallStarted):
                entry = {
                    "index": output.index,
                    "id": output.id,
                    "type": "function",
                    "function": {"name": output.name, "arguments": output.arguments},
                }
                items.append(self.chunk({"tool_calls": [entry]}))
            elif isinstance(output, ServerCallArguments):
                delta = {"id": output.call_id, "name": output.name, "arguments": output.fragment}
                items.append(self._extension({"tool_arguments": delta}))
            elif isinstance(output, ToolProgress):
                items.extend(self._progress(output))
            elif isinstance(output, RoundEnded) and self.turn.request.wants_tool_progress:
                report = {
                    "number": output.number,
                    "finish_reason": output.finish_reason,
                    "usage": output.usage,
                }
                items.append(self._extension({"round": report}))
            elif isinstance(output, ApprovalRequested) and self.turn.request.wants_tool_progress:
                request = {
                    "id": output.id,
                    "call_id": output.call_id,
                    "name": output.name,
                    "arguments": output.arguments,
                }
                items.append(self._extension({"approval_request": request}))
        return items

    def _redacted(self, field: str, index: int, text: str) -> str:
        if self._redactor is None:
            return text
        stream = self._text_streams.get((field, index))
        if stream is None:
            stream = self._text_streams[(field, index)] = TextStreamRedactor(self._redactor)
        return stream.feed(text)

    def _arguments_chunk(self, index: int, fragment: str) -> dict[str, object]:
        call = {"index": index, "function": {"arguments": fragment}}
        return self.chunk({"tool_calls": [call]})

    def _held_back(self) -> list[dict[str, object]]:
        """What the text redactors still hold (ordinary text that ended like a secret's start)."""
        chunks = []
        for (field, index), stream in self._text_streams.items():
            text = stream.flush()
            if not text:
                continue
            if field == "arguments":
                chunks.append(self._arguments_chunk(index, text))
            else:
                chunks.append(self.chunk({field: text}))
        return chunks

    def _progress(self, output: ToolProgress) -> list[dict[str, object] | bytes]:
        timing = f" in {output.duration * 1000:.0f} ms" if output.duration is not None else ""
        items: list[dict[str, object] | bytes] = [
            encode_comment(f"tool {output.name} {output.status}{timing}")
        ]
        if self.turn.request.wants_tool_progress:
            progress: dict[str, object] = {
                "id": output.call_id,
                "name": output.name,
                "status": output.status,
            }
            if output.duration is not None:
                progress["duration_ms"] = round(output.duration * 1000, 1)
            items.append(self._extension({"tool_progress": progress}))
        return items

    def _extension(self, value: dict[str, object]) -> dict[str, object]:
        chunk = self.chunk({})
        chunk[EXTENSION_FIELD] = value
        return chunk

    def final(self) -> list[bytes]:
        """The closing chunk with the one ``finish_reason``, usage if asked, ``[DONE]``."""
        return [*(encode_chunk(item) for item in self.final_chunks()), encode_done()]

    def final_chunks(self) -> list[dict[str, object]]:
        """The closing chunk, and the usage chunk when the client asked for it."""
        turn = self.turn
        chunks = self._held_back()
        chunks.append(self.chunk({}, finish_reason=turn.finish_reason or "stop"))
        if turn.request.include_usage:
            chunks.append(
                {
                    "id": turn.id,
                    "object": "chat.completion.chunk",
                    "created": turn.created,
                    "model": turn.model,
                    "choices": [],
                    "usage": turn.usage,
                }
            )
        return chunks

    def error(self, error: StreamProxyError) -> bytes:
        """The one error frame that ends a stream that already started."""
        return encode_error(error)

    def chunk(
        self, delta: dict[str, object], finish_reason: str | None = None
    ) -> dict[str, object]:
        """A ``chat.completion.chunk`` of this turn with one choice."""
        if not self._has_role and (delta or finish_reason):
            delta = {"role": "assistant", **delta}
            self._has_role = True
        turn = self.turn
        return {
            "id": turn.id,
            "object": "chat.completion.chunk",
            "created": turn.created,
            "model": turn.model,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }

    def completion(self) -> dict[str, object]:
        """The ``chat.completion`` object for a non-streaming client."""
        turn = self.turn
        content = turn.sent["content"]
        message: dict[str, object] = {
            "role": "assistant",
            "content": "".join(content) if content else None,
        }
        if turn.sent["reasoning_content"]:
            message["reasoning_content"] = "".join(turn.sent["reasoning_content"])
        if turn.sent["refusal"]:
            message["refusal"] = "".join(turn.sent["refusal"])
        if turn.handed and turn.finish_reason == "tool_calls":
            message["tool_calls"] = [
                {
                    "id": call.client_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": turn.handed_arguments(call)},
                }
                for call in turn.handed
            ]
        return {
            "id": turn.id,
            "object": "chat.completion",
            "created": turn.created,
            "model": turn.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": turn.finish_reason or "stop",
                }
            ],
            "usage": turn.usage,
        }
