"""Spans from the SDK's in-memory exporter, and the W3C trace context in and upstream."""

from __future__ import annotations

import re

import httpx2
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from streamproxy.config import Config
from streamproxy.proxy import create_app
from streamproxy.proxy.tools import ToolSet
from streamproxy.proxy.tracing import tracer_provider_from_environment
from tests.proxy.helpers import MODEL, ScriptedUpstream, content_round, post_stream
from tests.telemetry.helpers import UPSTREAM_URL, observed_proxy
from tests.telemetry.test_metrics import TOOLS, tool_loop

pytestmark = pytest.mark.anyio

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
BODY = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "weather and time in Paris?"}],
    "stream_options": {"include_usage": True},
}


async def test_a_tool_loop_makes_a_request_span_with_rounds_and_tools() -> None:
    upstream = tool_loop()
    observed = observed_proxy(upstream, tools=TOOLS)
    async with observed.client:
        result = await post_stream(observed.client, BODY, headers={"traceparent": TRACEPARENT})
    assert result.status == 200 and not result.errors

    server = observed.span("POST /v1/chat/completions")
    rounds = [span for span in observed.spans() if span.name == f"chat {MODEL}"]
    weather = observed.span("execute_tool get_weather")
    clock = observed.span("execute_tool get_time")
    assert server.kind == SpanKind.SERVER
    assert server.context is not None and server.parent is not None
    assert f"{server.context.trace_id:032x}" == CLIENT_TRACE  # continues the client's trace
    assert f"{server.parent.span_id:016x}" == CLIENT_SPAN
    assert server.attributes is not None
    assert server.attributes["gen_ai.response.finish_reasons"] == ("stop",)

    assert len(rounds) == 2
    for span in [*rounds, weather, clock]:
        assert span.parent is not None and span.parent.span_id == server.context.span_id
        assert span.context is not None and span.context.trace_id == server.context.trace_id
    first, second = sorted(rounds, key=lambda span: span.start_time or 0)
    assert first.kind == SpanKind.CLIENT
    assert first.attributes is not None and second.attributes is not None
    assert first.attributes["gen_ai.operation.name"] == "chat"
    assert first.attributes["gen_ai.provider.name"] == "deepseek"
    assert first.attributes["gen_ai.request.model"] == MODEL
    assert first.attributes["server.address"] == "api.deepseek.com"
    assert first.attributes["gen_ai.request.stream"] is True
    assert first.attributes["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert first.attributes["gen_ai.usage.input_tokens"] == 120
    assert first.attributes["gen_ai.usage.output_tokens"] == 30
    assert first.attributes["gen_ai.usage.cache_read.input_tokens"] == 100
    assert first.attributes["gen_ai.usage.reasoning.output_tokens"] == 12
    assert isinstance(first.attributes["gen_ai.response.time_to_first_chunk"], float)
    assert second.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert second.attributes["gen_ai.usage.input_tokens"] == 10

    assert weather.attributes is not None and clock.attributes is not None
    assert weather.attributes["gen_ai.tool.name"] == "get_weather"
    assert weather.attributes["gen_ai.tool.call.id"] == "call_1"
    assert weather.attributes["gen_ai.operation.name"] == "execute_tool"
    assert weather.status.status_code != StatusCode.ERROR
    assert clock.attributes["error.type"] == "error"
    assert clock.status.status_code == StatusCode.ERROR

    # each upstream request carries its own round span as the parent
    sent = [request.headers.get("traceparent") for request in upstream.requests]
    assert sent == [
        f"00-{CLIENT_TRACE}-{span.context.span_id:016x}-01"
        for span in (first, second)
        if span.context is not None
    ]


async def test_without_a_client_context_the_proxy_starts_a_trace() -> None:
    upstream = ScriptedUpstream([content_round("ok")])
    observed = observed_proxy(upstream)
    async with observed.client:
        assert (await post_stream(observed.client, BODY)).status == 200
    server = observed.span("POST /v1/chat/completions")
    assert server.parent is None and server.context is not None
    traceparent = upstream.requests[0].headers["traceparent"]
    assert re.fullmatch(rf"00-{server.context.trace_id:032x}-[0-9a-f]{{16}}-0[13]", traceparent)


async def test_an_upstream_failure_marks_the_round_and_the_request() -> None:
    import httpx2

    refused = httpx2.Response(400, json={"error": {"message": "bad model"}})
    observed = observed_proxy(ScriptedUpstream([refused]))
    async with observed.client:
        assert (await post_stream(observed.client, BODY)).status == 400
    server = observed.span("POST /v1/chat/completions")
    round_span = observed.span(f"chat {MODEL}")
    for span in (server, round_span):
        assert span.attributes is not None
        assert span.attributes["error.type"] == "upstream_error"
        assert span.status.status_code == StatusCode.ERROR
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 400


async def test_with_no_sdk_the_client_context_is_passed_through() -> None:
    """The API's no-op tracer (telemetry off): no spans, but the context still goes upstream."""
    from prometheus_client import CollectorRegistry

    from streamproxy.proxy import create_app

    upstream = ScriptedUpstream([content_round("ok")])
    app = create_app(
        Config(upstream_url=UPSTREAM_URL, api_key="sk-up"),
        tools=ToolSet(),
        transport=upstream.transport(),
        registry=CollectorRegistry(),
        tracer_provider=tracer_provider_from_environment({}),
    )
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy.test") as client:
        result = await post_stream(client, BODY, headers={"traceparent": TRACEPARENT})
    assert result.status == 200
    assert upstream.requests[0].headers["traceparent"] == TRACEPARENT


def test_the_environment_chooses_the_exporter() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    assert not isinstance(tracer_provider_from_environment({}), TracerProvider)
    off = tracer_provider_from_environment({"OTEL_TRACES_EXPORTER": "none"})
    assert not isinstance(off, TracerProvider)
    console = tracer_provider_from_environment(
        {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "edge-proxy"}
    )
    assert isinstance(console, TracerProvider)
    console.shutdown()


async def test_a_running_tool_sees_its_own_trace_context_for_mcp_calls() -> None:
    """The runner puts the tool span's W3C context where a tool that calls out reads it (an MCP
    server gets it as ``_meta``); with tracing off it is empty."""
    from streamproxy.proxy.tools import TOOL_TRACE_CONTEXT, tool
    from tests.proxy.helpers import tool_round

    seen: list[dict[str, str]] = []

    @tool(read_only=True)
    def traced(x: str) -> str:
        """Record the trace context."""
        seen.append(dict(TOOL_TRACE_CONTEXT.get()))
        return x

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    upstream = ScriptedUpstream(
        [tool_round([("call_t", "traced", '{"x": "a"}')]), content_round("done")]
    )
    app = create_app(
        Config(upstream_url="http://upstream.test/v1", state_url="memory://"),
        tools=ToolSet([traced]),
        transport=upstream.transport(),
        tracer_provider=provider,
    )
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://proxy.test") as client:
        await post_stream(client, {"model": "m", "messages": [{"role": "user", "content": "?"}]})
    [context] = seen
    [span] = [s for s in exporter.get_finished_spans() if s.name == "execute_tool traced"]
    assert context["traceparent"].split("-")[2] == format(span.context.span_id, "016x")
    assert TOOL_TRACE_CONTEXT.get() == {}  # only inside the tool's task
