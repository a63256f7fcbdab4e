"""A failure nobody foresaw, mid-stream, still ends the stream with one error frame.

Found by ``fuzz/fuzz_core.py``: a first payload whose ``type`` is a list made the core raise
``TypeError`` (not a ``ProtocolError``); the proxy then closed the stream with a bare 200 and no
error frame, so the client could not tell a failure from an empty answer. The core now reads that
payload without raising; the second test keeps the proxy's guard covered with an injected failure.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import orjson
import pytest

from streamproxy.config import Config
from streamproxy.core import ChatStream, Event
from streamproxy.proxy import create_app
from streamproxy.proxy.tools import ToolSet

pytestmark = pytest.mark.anyio

CONTENT = b'data: {"id":"u","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
REQUEST = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}


async def _frames(*pieces: bytes) -> list[dict[str, object]]:
    """The ``data:`` payloads a streaming client gets when the upstream sends these reads."""

    async def body() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    transport = httpx2.MockTransport(
        lambda request: httpx2.Response(
            200, content=body(), headers={"content-type": "text/event-stream"}
        )
    )
    app = create_app(
        Config(upstream_url="http://upstream.test/v1"), tools=ToolSet(), transport=transport
    )
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app), base_url="http://proxy.test"
    ) as client:
        response = await client.post("/v1/chat/completions", json=REQUEST)
    assert response.status_code == 200
    return [
        orjson.loads(line[6:]) if line != "data: [DONE]" else {"done": True}
        for line in response.text.splitlines()
        if line.startswith("data: ")
    ]


async def test_a_payload_the_core_did_not_foresee_ends_with_one_error_frame() -> None:
    frames = await _frames(b'data: {"type": []}\n\n')
    assert len(frames) == 1
    assert frames[0].keys() == {"error"}


async def test_an_unexpected_exception_after_content_ends_with_one_error_frame(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    receive_data = ChatStream.receive_data

    def failing(self: ChatStream, data: bytes) -> list[Event]:
        if b"BOOM" in data:
            raise RuntimeError("an unforeseen failure")
        return receive_data(self, data)

    monkeypatch.setattr(ChatStream, "receive_data", failing)
    frames = await _frames(CONTENT, b"BOOM")
    # the content that came before reaches the client, then exactly one error frame, no [DONE]
    assert frames[0]["choices"][0]["delta"]["content"] == "hi"  # type: ignore[index]
    assert frames[-1].keys() == {"error"}
    assert sum("error" in frame for frame in frames) == 1
    assert {"done": True} not in frames
    error = frames[-1]["error"]
    assert isinstance(error, dict)
    assert "unforeseen" not in str(error["message"])  # internals stay in the log
    # the app keeps serving
    monkeypatch.undo()
    frames = await _frames(CONTENT, b'data: {"choices":[{"index":0,"finish_reason":"stop"}]}\n\n')
    assert frames[-1] == {"done": True}
