"""The client's wire format, all of it: a turn's outputs as chat-completion chunks, the final
frames, error frames, and the non-streaming ``chat.completion``.

Every chunk carries the turn's one completion id, ``created`` and ``model``; the first chunk
with a delta carries ``role: "assistant"``. Server tools show as comments for every client
(``: tool get_weather ok in 12 ms``); a client that asked (``streamproxy.tool_progress``) also
gets chunks with an empty delta and the extension field::

    {"streamproxy": {"tool_progress": {"id", "name", "status", "duration_ms"?}}}
    {"streamproxy": {"approval_request": {"id", "name", "arguments"}}}

and a client that asked for previews (``streamproxy.tool_previews``) gets each fragment of a
server call's arguments as it streams, to show the call filling in::

    {"streamproxy": {"tool_arguments": {"id", "name", "arguments"}}}

``status`` is ``started``, ``ok``, ``error``, ``timeout``, ``too_large``, ``awaiting_approval``.
The stream ends with one chunk holding the one ``finish_reason``, a usage chunk when the client
asked (``stream_options.include_usage``), and ``data: [DONE]``; after an error, one
``data: {"error": ...}`` frame and no ``[DONE]`` (``core/encode.py``).
"""

from __future__ import annotations

from streamproxy.core.encode import encode_chunk, encode_comment, encode_done, encode_error
from streamproxy.errors import StreamProxyError
from streamproxy.proxy.turn import (
    ApprovalRequested,
    ClientCallArguments,
    ClientCallStarted,
    Output,
    ServerCallArguments,
    TextDelta,
    ToolProgress,
    Turn,
)

__all__ = ["ChatFrames"]

EXTENSION_FIELD = "streamproxy"


class ChatFrames:
    """Encodes one turn for a chat-completions client."""

    def __init__(self, turn: Turn) -> None:
        self.turn = turn
        self._has_role = False

    def encode(self, outputs: list[Output]) -> list[bytes]:
        """The frames for a batch of the turn's outputs."""
        frames: list[bytes] = []
        for output in outputs:
            if isinstance(output, TextDelta):
                frames.append(encode_chunk(self.chunk({output.field: output.text})))
            elif isinstance(output, ClientCallArguments):
                call = {"index": output.index, "function": {"arguments": output.fragment}}
                frames.append(encode_chunk(self.chunk({"tool_calls": [call]})))
            elif isinstance(output, ClientCallStarted):
                entry = {
                    "index": output.index,
                    "id": output.id,
                    "type": "function",
                    "function": {"name": output.name, "arguments": output.arguments},
                }
                frames.append(encode_chunk(self.chunk({"tool_calls": [entry]})))
            elif isinstance(output, ServerCallArguments):
                delta = {"id": output.call_id, "name": output.name, "arguments": output.fragment}
                frames.append(self._extension({"tool_arguments": delta}))
            elif isinstance(output, ToolProgress):
                frames.extend(self._progress(output))
            elif isinstance(output, ApprovalRequested) and self.turn.request.wants_tool_progress:
                request = {"id": output.id, "name": output.name, "arguments": output.arguments}
                frames.append(self._extension({"approval_request": request}))
        return frames

    def _progress(self, output: ToolProgress) -> list[bytes]:
        timing = f" in {output.duration * 1000:.0f} ms" if output.duration is not None else ""
        frames = [encode_comment(f"tool {output.name} {output.status}{timing}")]
        if self.turn.request.wants_tool_progress:
            progress: dict[str, object] = {
                "id": output.call_id,
                "name": output.name,
                "status": output.status,
            }
            if output.duration is not None:
                progress["duration_ms"] = round(output.duration * 1000, 1)
            frames.append(self._extension({"tool_progress": progress}))
        return frames

    def _extension(self, value: dict[str, object]) -> bytes:
        chunk = self.chunk({})
        chunk[EXTENSION_FIELD] = value
        return encode_chunk(chunk)

    def final(self) -> list[bytes]:
        """The closing chunk with the one ``finish_reason``, usage if asked, ``[DONE]``."""
        turn = self.turn
        frames = [encode_chunk(self.chunk({}, finish_reason=turn.finish_reason or "stop"))]
        if turn.request.include_usage:
            usage_chunk = {
                "id": turn.id,
                "object": "chat.completion.chunk",
                "created": turn.created,
                "model": turn.model,
                "choices": [],
                "usage": turn.usage,
            }
            frames.append(encode_chunk(usage_chunk))
        frames.append(encode_done())
        return frames

    @staticmethod
    def error(error: StreamProxyError) -> bytes:
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
