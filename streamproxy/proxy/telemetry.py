"""Metrics and traces for each client request: ``Telemetry.request`` -> a ``RequestTelemetry``.

One ``Telemetry`` per app holds the instruments (``metrics.py``) and the tracer
(``tracing.py``). Each request gets a ``RequestTelemetry``, which is at once:

- the runner's ``TurnObserver`` (rounds, first chunks, output frames, tools, approvals);
- the upstream's ``UpstreamHooks`` (headers to send, retries, failures, the response closed);
- the request's own span and timer, ended by ``failed``/``responded`` or, for an event
  stream, when ``watch``'s iterator ends.

Spans: ``POST /v1/chat/completions`` (SERVER, child of the client's ``traceparent``), under it
one ``chat {model}`` CLIENT span per upstream round and one ``execute_tool {name}`` span per
tool run. Token counts come from each round's usage, so their sum is the usage the client got.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Mapping
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry, Histogram

from streamproxy.errors import InternalError, StreamProxyError, UpstreamError
from streamproxy.proxy.metrics import Metrics, bounded
from streamproxy.proxy.tracing import context_from, headers_for, tracer_provider_from_environment

__all__ = ["RequestTelemetry", "Telemetry", "provider_name"]

CHAT = "chat"
EXECUTE_TOOL = "execute_tool"
# Tool outcomes that are a run of the tool (the others: refused, cancelled, not run).
_RUN_STATUSES = frozenset({"ok", "error", "timeout", "too_large"})


def provider_name(upstream_url: str) -> str:
    """``gen_ai.provider.name`` from the upstream's host (never from a model id)."""
    host = urlsplit(upstream_url).hostname or ""
    if host == "api.deepseek.com" or host.endswith(".deepseek.com"):
        return "deepseek"
    if host == "api.openai.com":
        return "openai"
    return "openai"  # an OpenAI-compatible server: the API the telemetry describes


class Telemetry:
    """An app's instruments and tracer; ``request`` starts one request's telemetry."""

    def __init__(
        self,
        *,
        upstream_url: str = "",
        registry: CollectorRegistry | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self.metrics = Metrics(registry)
        provider = tracer_provider or tracer_provider_from_environment()
        self.tracer = provider.get_tracer("streamproxy")
        self.provider_name = provider_name(upstream_url)
        parts = urlsplit(upstream_url)
        self.server_address = parts.hostname or ""
        self.server_port = parts.port or (443 if parts.scheme == "https" else 80)
        self.models: set[str] = set()
        self.tool_names: set[str] = set()

    def request(self, method: str, route: str, headers: Mapping[str, str]) -> RequestTelemetry:
        """Start the span and timer of one client request (its context from ``headers``)."""
        return RequestTelemetry(self, f"{method} {route}", route, headers)

    def render(self) -> bytes:
        return self.metrics.render()


class _Round:
    __slots__ = (
        "closed_at",
        "closed_ns",
        "error",
        "first_chunk_at",
        "last_chunk_at",
        "span",
        "started_at",
    )

    def __init__(self, span: trace.Span, started_at: float) -> None:
        self.span = span
        self.started_at = started_at
        self.first_chunk_at: float | None = None
        self.last_chunk_at: float | None = None
        self.closed_at: float | None = None  # when the upstream response closed
        self.closed_ns: int | None = None  # the same, as the span's end time
        self.error: StreamProxyError | None = None


class RequestTelemetry:
    """One request's span, rounds and tool spans; a ``TurnObserver`` and ``UpstreamHooks``."""

    def __init__(
        self, telemetry: Telemetry, name: str, route: str, headers: Mapping[str, str]
    ) -> None:
        self.telemetry = telemetry
        self.metrics = telemetry.metrics
        self.is_chat = route.endswith("/chat/completions")
        self.started_at = time.perf_counter()
        self.span = telemetry.tracer.start_span(
            name,
            context=context_from(headers),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": name.split(" ", 1)[0], "http.route": route},
        )
        self._parent = trace.set_span_in_context(self.span)
        self.model = ""
        self._labels: tuple[str, str, str] = (CHAT, telemetry.provider_name, "")
        self._chunk_times: Histogram | None = None  # the labelled child, looked up once
        self._round: _Round | None = None
        self._tools: dict[str, trace.Span] = {}
        self._error: StreamProxyError | None = None
        self._rounds = 0
        self._is_turn_ended = False
        self._is_streaming = False
        self._is_finished = False

    def set_model(self, model: str) -> None:
        """The model the client asked for (a label, bounded in number)."""
        self.model = model
        self._labels = (CHAT, self.telemetry.provider_name, bounded(model, self.telemetry.models))
        self._chunk_times = None
        self.span.set_attribute("gen_ai.request.model", model)

    # ------------------------------------------------------------ the request

    def watch(self, frames: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
        """``frames`` as they are; the request ends (and is measured) when they end."""
        self._is_streaming = True
        return self._watched(frames)

    async def _watched(self, frames: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
        self.metrics.active_streams.inc()
        is_complete = False
        try:
            async for data in frames:
                yield data
            is_complete = True
        finally:
            self.metrics.active_streams.dec()
            await frames.aclose()
            if is_complete:
                self._finish(self._error if self._is_turn_ended else self._stream_error())
            else:
                self._finish(None, code="client_disconnected")

    def responded(self, status: int) -> None:
        """The endpoint returned a response (a stream ends later, in ``watch``)."""
        if not self._is_streaming:
            self.span.set_attribute("http.response.status_code", status)
            self._finish(None)

    def failed(self, error: StreamProxyError | None, status: int, *, code: str = "") -> None:
        """The request failed before its response started (``error_response`` was sent)."""
        self.span.set_attribute("http.response.status_code", status)
        self._finish(error, code=code)

    def _stream_error(self) -> StreamProxyError | None:
        # the stream ended with no turn end: an upstream failure, else the runner's internal error
        if self._error is not None:
            return self._error
        return InternalError("the stream ended without finishing its turn")

    def _finish(self, error: StreamProxyError | None, *, code: str = "") -> None:
        if self._is_finished:
            return
        self._is_finished = True
        if self._round is not None:
            self._end_round(None, None, error or self._error)
        for span in self._tools.values():
            span.set_attribute("error.type", "cancelled")
            span.end()
        self._tools.clear()
        code = code or (error.code if error is not None else "")
        if code:
            self.metrics.errors.labels(code).inc()
            self.span.set_attribute("error.type", code)
            self.span.set_status(Status(StatusCode.ERROR, error.message if error else code))
        if self.is_chat:
            self.metrics.request_duration.labels(*self._labels, code).observe(
                time.perf_counter() - self.started_at
            )
            if self._rounds:
                self.metrics.rounds.observe(self._rounds)
        self.span.end()

    # ------------------------------------------------------------ UpstreamHooks

    def request_headers(self) -> dict[str, str]:
        """Headers for the upstream request: the round span's W3C trace context."""
        current = self._round
        return headers_for(current.span if current is not None else self.span)

    def retrying(self, attempt: int, error: UpstreamError) -> None:
        status = str(error.status) if error.status else "error"
        self.metrics.upstream_retries.labels(self.telemetry.provider_name, status).inc()
        if self._round is not None:
            self._round.span.add_event(
                "retry", {"attempt": attempt, "http.response.status_code": error.status or 0}
            )

    def failed_upstream(self, error: UpstreamError) -> None:
        """Every attempt failed: the round (and, unless something else ends it, the request)."""
        self._error = error
        if self._round is not None:
            self._round.error = error

    def response_closed(self) -> None:
        current = self._round
        if current is not None and current.closed_at is None:
            current.closed_at = time.perf_counter()
            current.closed_ns = time.time_ns()

    def tool_headers(self, call_id: str) -> dict[str, str]:
        """The W3C trace context for a tool's own outgoing calls (an MCP server's, later)."""
        span = self._tools.get(call_id)
        return headers_for(span if span is not None else self.span)

    # ------------------------------------------------------------ TurnObserver

    def round_started(self, round_number: int, body: dict[str, object]) -> None:
        if self._round is not None:  # never ended (cannot happen today): end it now
            self._end_round(None, None, None)
        self._rounds = round_number
        model = body.get("model")
        if isinstance(model, str) and model != self.model:
            self.set_model(model)
        telemetry = self.telemetry
        span = telemetry.tracer.start_span(
            f"{CHAT} {self.model}".rstrip(),
            context=self._parent,
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": CHAT,
                "gen_ai.provider.name": telemetry.provider_name,
                "gen_ai.request.model": self.model,
                "server.address": telemetry.server_address,
                "server.port": telemetry.server_port,
                "gen_ai.request.stream": body.get("stream") is True,
                "streamproxy.round": round_number,
            },
        )
        self._round = _Round(span, time.perf_counter())

    def round_first_chunk(self) -> None:
        current = self._round
        if current is not None and current.first_chunk_at is None:
            now = time.perf_counter()
            current.first_chunk_at = current.last_chunk_at = now
            self.metrics.time_to_first_chunk.labels(*self._labels).observe(now - current.started_at)

    def output_frames(self) -> None:
        current = self._round
        if current is None or current.last_chunk_at is None:
            return
        now = time.perf_counter()
        chunk_times = self._chunk_times
        if chunk_times is None:
            chunk_times = self._chunk_times = self.metrics.time_per_output_chunk.labels(
                *self._labels
            )
        chunk_times.observe(now - current.last_chunk_at)
        current.last_chunk_at = now

    def round_ended(
        self,
        finish_reason: str | None,
        usage: dict[str, object] | None,
        error: StreamProxyError | None,
    ) -> None:
        self._end_round(finish_reason, usage, error)

    def _end_round(
        self,
        finish_reason: str | None,
        usage: dict[str, object] | None,
        error: StreamProxyError | None,
    ) -> None:
        current, self._round = self._round, None
        if current is None:
            return
        error = error or current.error
        span = current.span
        labels = self._labels
        if finish_reason is not None:
            span.set_attribute("gen_ai.response.finish_reasons", [finish_reason])
        if current.first_chunk_at is not None:
            span.set_attribute(
                "gen_ai.response.time_to_first_chunk", current.first_chunk_at - current.started_at
            )
        counts = token_counts(usage)
        if counts is not None:
            metrics = self.metrics
            input_tokens, output_tokens, cache_read, reasoning = counts
            metrics.input_tokens.labels(*labels, "text").inc(input_tokens)
            metrics.output_tokens.labels(*labels, "text").inc(output_tokens)
            metrics.cache_read_tokens.labels(*labels, "text").inc(cache_read)
            metrics.reasoning_tokens.labels(*labels, "text").inc(reasoning)
            span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
            span.set_attribute("gen_ai.usage.cache_read.input_tokens", cache_read)
            span.set_attribute("gen_ai.usage.reasoning.output_tokens", reasoning)
        error_type = error.code if error is not None else ""
        if error is not None:
            span.set_attribute("error.type", error_type)
            span.set_status(Status(StatusCode.ERROR, error.message))
        ended_at = current.closed_at or time.perf_counter()
        self.metrics.inference_duration.labels(*labels, error_type).observe(
            ended_at - current.started_at
        )
        span.end(end_time=current.closed_ns)

    def tool_started(self, name: str, call_id: str) -> None:
        self._tools[call_id] = self._tool_span(name, call_id, None)

    def tool_finished(self, name: str, call_id: str, status: str, duration: float) -> None:
        span = self._tools.pop(call_id, None)
        if span is None:  # an approved call, run before the first round: one span after the fact
            started = time.time_ns() - int(duration * 1e9)
            span = self._tool_span(name, call_id, started)
        label = bounded(name, self.telemetry.tool_names)
        self.metrics.tool_calls.labels(label, status).inc()
        if status in _RUN_STATUSES:
            error_type = "" if status == "ok" else status
            self.metrics.tool_duration.labels(EXECUTE_TOOL, label, error_type).observe(duration)
        if status != "ok":
            span.set_attribute("error.type", status)
            span.set_status(Status(StatusCode.ERROR, status))
        span.end()

    def approval_settled(self, name: str, outcome: str) -> None:
        label = bounded(name, self.telemetry.tool_names)
        self.metrics.approvals.labels(label, outcome).inc()
        self.span.add_event("approval", {"gen_ai.tool.name": name, "outcome": outcome})

    def turn_ended(
        self, finish_reason: str | None, rounds: int, error: StreamProxyError | None
    ) -> None:
        self._is_turn_ended = True
        self._rounds = rounds
        if error is not None:
            self._error = error
        if finish_reason is not None:
            self.span.set_attribute("gen_ai.response.finish_reasons", [finish_reason])

    def _tool_span(self, name: str, call_id: str, start_time: int | None) -> trace.Span:
        return self.telemetry.tracer.start_span(
            f"{EXECUTE_TOOL} {name}",
            context=self._parent,
            kind=SpanKind.INTERNAL,
            start_time=start_time,
            attributes={
                "gen_ai.operation.name": EXECUTE_TOOL,
                "gen_ai.tool.name": name,
                "gen_ai.tool.call.id": call_id,
                "gen_ai.tool.type": "function",
            },
        )


def token_counts(usage: Mapping[str, object] | None) -> tuple[int, int, int, int] | None:
    """Input, output, cache-read and reasoning tokens of one round's usage (OpenAI's fields,
    or DeepSeek's ``prompt_cache_hit_tokens`` when ``prompt_tokens_details`` is absent)."""
    if usage is None:
        return None
    input_details = usage.get("prompt_tokens_details")
    output_details = usage.get("completion_tokens_details")
    cache_read = _count(input_details, "cached_tokens")
    if cache_read is None:
        cache_read = _count(usage, "prompt_cache_hit_tokens")
    return (
        _count(usage, "prompt_tokens") or 0,
        _count(usage, "completion_tokens") or 0,
        cache_read or 0,
        _count(output_details, "reasoning_tokens") or 0,
    )


def _count(values: object, key: str) -> int | None:
    if not isinstance(values, Mapping):
        return None
    value = values.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value
