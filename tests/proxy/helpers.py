"""Scripted upstreams and SSE builders for the proxy tests (no sockets)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import httpx2
import orjson

from streamproxy.config import DEFAULT_STATE_URL, Config
from streamproxy.proxy import create_app
from streamproxy.proxy.tools import ToolSet

MODEL = "deepseek-v4-flash"


def chunk(
    delta: dict[str, object] | None = None,
    *,
    finish: str | None = None,
    usage: dict[str, object] | None = None,
    completion_id: str = "up-1",
) -> dict[str, object]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": 1780000000,
        "model": MODEL,
        "choices": choices,
        "usage": usage,
    }


def call_chunks(index: int, call_id: str, name: str, arguments: str) -> list[dict[str, object]]:
    """A tool call the DeepSeek way: a head with id and name, then arguments in pieces."""
    head = {
        "index": index,
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": ""},
    }
    pieces = [arguments[i : i + 5] for i in range(0, len(arguments), 5)] or [""]
    return [chunk({"tool_calls": [head]})] + [
        chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        for piece in pieces
    ]


def usage(prompt: int, completion: int, *, hit: int = 0, reasoning: int = 0) -> dict[str, object]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": hit},
        "prompt_cache_hit_tokens": hit,
        "prompt_cache_miss_tokens": prompt - hit,
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def sse(chunks: Sequence[dict[str, object]], *, done: bool = True) -> list[bytes]:
    frames = [b"data: " + orjson.dumps(item) + b"\n\n" for item in chunks]
    if done:
        frames.append(b"data: [DONE]\n\n")
    return frames


def content_round(
    text: str, *, finish: str = "stop", reasoning: str = "", tokens: int = 5
) -> list[bytes]:
    chunks = [chunk({"role": "assistant", "content": ""})]
    if reasoning:
        chunks.append(chunk({"reasoning_content": reasoning, "content": None}))
    chunks += [chunk({"content": word}) for word in text.split("|")]
    chunks.append(chunk({"content": ""}, finish=finish, usage=usage(10, tokens)))
    return sse(chunks)


def tool_round(
    calls: Sequence[tuple[str, str, str]],
    *,
    reasoning: str = "",
    content: str = "",
    finish: str = "tool_calls",
    round_usage: dict[str, object] | None = None,
) -> list[bytes]:
    chunks = [chunk({"role": "assistant", "content": ""})]
    if reasoning:
        chunks.append(chunk({"reasoning_content": reasoning}))
    if content:
        chunks.append(chunk({"content": content}))
    for index, (call_id, name, arguments) in enumerate(calls):
        chunks += call_chunks(index, call_id, name, arguments)
    chunks.append(chunk({"content": ""}, finish=finish, usage=round_usage or usage(20, 7)))
    return sse(chunks)


Body = list[bytes] | Callable[[], AsyncIterator[bytes]]


class ScriptedStream(httpx2.AsyncByteStream):
    def __init__(self, body: Body, upstream: ScriptedUpstream) -> None:
        self.body = body
        self.upstream = upstream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if callable(self.body):
            async for piece in self.body():
                yield piece
        else:
            for piece in self.body:
                yield piece

    async def aclose(self) -> None:
        self.upstream.closed += 1


@dataclass
class ScriptedUpstream:
    """Answers each upstream request with the next scripted response; keeps what it got."""

    responses: list[httpx2.Response | Body]
    requests: list[httpx2.Request] = field(default_factory=list)
    closed: int = 0

    @property
    def bodies(self) -> list[dict[str, object]]:
        return [json.loads(request.content) for request in self.requests]

    def transport(self) -> httpx2.MockTransport:
        async def handler(request: httpx2.Request) -> httpx2.Response:
            await request.aread()
            self.requests.append(request)
            if not self.responses:
                return httpx2.Response(500, json={"error": {"message": "script exhausted"}})
            item = self.responses.pop(0)
            if isinstance(item, httpx2.Response):
                return item
            return httpx2.Response(
                200,
                headers={"content-type": "text/event-stream"},
                stream=ScriptedStream(item, self),
            )

        return httpx2.MockTransport(handler)


def proxy_client(
    upstream: ScriptedUpstream,
    *,
    tools: ToolSet | None = None,
    config: Config | None = None,
) -> httpx2.AsyncClient:
    config = config or Config(
        upstream_url="http://upstream.test/v1", api_key="sk-upstream-secret-key"
    )
    if config.state_url == DEFAULT_STATE_URL:
        # one store per app: tests share nothing through the default sqlite file
        config = dataclasses.replace(config, state_url="memory://")
    app = create_app(
        config,
        tools=tools or ToolSet(),
        transport=upstream.transport(),
    )
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://proxy.test")


@dataclass
class StreamResult:
    status: int
    raw: bytes
    chunks: list[dict[str, object]]
    comments: list[str]
    is_done: bool
    errors: list[dict[str, object]]

    @property
    def content(self) -> str:
        return "".join(
            str(choice["delta"].get("content") or "")  # type: ignore[union-attr]
            for item in self.chunks
            for choice in item.get("choices", [])  # type: ignore[union-attr]
        )

    @property
    def reasoning(self) -> str:
        return "".join(
            str(choice["delta"].get("reasoning_content") or "")  # type: ignore[union-attr]
            for item in self.chunks
            for choice in item.get("choices", [])  # type: ignore[union-attr]
        )

    @property
    def finish_reasons(self) -> list[str]:
        return [
            choice["finish_reason"]  # type: ignore[index]
            for item in self.chunks
            for choice in item.get("choices", [])  # type: ignore[union-attr]
            if choice.get("finish_reason") is not None  # type: ignore[union-attr]
        ]

    @property
    def tool_call_deltas(self) -> list[dict[str, object]]:
        return [
            call
            for item in self.chunks
            for choice in item.get("choices", [])  # type: ignore[union-attr]
            for call in choice["delta"].get("tool_calls") or []  # type: ignore[index]
        ]

    @property
    def usage_chunks(self) -> list[dict[str, object]]:
        return [item for item in self.chunks if item.get("usage")]


def parse_sse(raw: bytes) -> StreamResult:
    chunks: list[dict[str, object]] = []
    comments: list[str] = []
    errors: list[dict[str, object]] = []
    is_done = False
    for frame in raw.decode().split("\n\n"):
        if not frame:
            continue
        if frame.startswith(":"):
            comments.append(frame[1:].strip())
            continue
        assert frame.startswith("data: "), frame
        data = frame[len("data: ") :]
        assert not is_done, "a frame after [DONE]"
        if data == "[DONE]":
            is_done = True
            continue
        value = json.loads(data)
        if "error" in value:
            errors.append(value)
        else:
            chunks.append(value)
    return StreamResult(0, raw, chunks, comments, is_done, errors)


async def post_stream(
    client: httpx2.AsyncClient, body: dict[str, object], headers: dict[str, str] | None = None
) -> StreamResult:
    response = await client.post(
        "/v1/chat/completions", json={"stream": True, **body}, headers=headers
    )
    result = parse_sse(response.content) if response.status_code == 200 else parse_sse(b"")
    result.status = response.status_code
    result.raw = response.content
    return result


async def wait_for(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout)


AsyncBody = Callable[[], Awaitable[None]]


class AsgiClient:
    """One request's ``receive`` and ``send``, for tests that drive the app by hand: the body
    once, then ``http.disconnect`` when ``leave`` is set (by the test, or at the response's end
    with ``leave_at_end``); every message the app sends is kept in ``sent``."""

    def __init__(self, body: bytes, *, leave_at_end: bool = False) -> None:
        self.body = body
        self.leave = asyncio.Event()
        self.sent: list[dict[str, object]] = []
        self._leave_at_end = leave_at_end
        self._is_body_sent = False

    async def receive(self) -> dict[str, object]:
        if not self._is_body_sent:
            self._is_body_sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, object]) -> None:
        self.sent.append(message)
        is_end = message["type"] == "http.response.body" and not message.get("more_body", False)
        if self._leave_at_end and is_end:
            self.leave.set()

    def body_bytes(self) -> bytes:
        """Every body message's bytes, joined."""
        return b"".join(
            bytes(message.get("body", b""))  # type: ignore[arg-type]
            for message in self.sent
            if message["type"] == "http.response.body"
        )


def chat_scope(*headers: tuple[bytes, bytes]) -> dict[str, object]:
    """The ASGI scope of ``POST /v1/chat/completions`` with JSON and ``headers``, for tests that
    drive the app's ``receive``/``send`` by hand."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
