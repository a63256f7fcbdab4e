"""The Responses wire format of one turn, with the runner's ``ClientFrames`` interface.

The turn's outputs go through ``ChatFrames`` to chat-completion chunk dicts, and those through
``ResponsesEncoder`` to Responses events; comments (tool progress, keep-alives) pass as they
are, since every SSE reader ignores them. The final frames end with ``response.completed`` (or
``response.incomplete``); an error ends with ``error`` and ``response.failed``.
"""

from __future__ import annotations

from streamproxy.errors import StreamProxyError
from streamproxy.proxy.frames import ChatFrames
from streamproxy.proxy.responses.events import ResponsesEncoder, response_from_completion
from streamproxy.proxy.responses.request import ResponsesRequest
from streamproxy.proxy.turn import Output, Turn
from streamproxy.redaction import Redactor

__all__ = ["ResponsesFrames"]


class ResponsesFrames:
    """Encodes one turn for a Responses client."""

    def __init__(
        self, turn: Turn, request: ResponsesRequest, redactor: Redactor | None = None
    ) -> None:
        self.chat = ChatFrames(turn, redactor)
        self.request = request
        self.encoder = ResponsesEncoder(request, created_at=turn.created)
        self.response: dict[str, object] | None = None
        """The finished ``response`` object, once the turn ended (what ``store`` keeps)."""

    def encode(self, outputs: list[Output]) -> list[bytes]:
        frames = self.encoder.start()
        for item in self.chat.items(outputs):
            frames.extend([item] if isinstance(item, bytes) else self.encoder.feed(item))
        return frames

    def final(self) -> list[bytes]:
        frames = self.encoder.start()
        for chunk in self.chat.final_chunks():
            frames.extend(self.encoder.feed(chunk))
        frames.extend(self.encoder.finish())
        self.response = self.encoder.response()
        return frames

    def error(self, error: StreamProxyError) -> bytes:
        return b"".join(self.encoder.error(error))

    def completion(self) -> dict[str, object]:
        self.response = response_from_completion(
            self.chat.completion(), self.request, response_id=self.encoder.id
        )
        return self.response
