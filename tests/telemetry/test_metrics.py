"""GET /metrics after known tool loops: names, labels and values against what the client got."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx2
import pytest

from streamproxy.config import Config
from streamproxy.proxy.tools import ToolSet, tool
from tests.proxy.helpers import (
    MODEL,
    ScriptedUpstream,
    content_round,
    post_stream,
    tool_round,
    usage,
)
from tests.telemetry.helpers import UPSTREAM_URL, observed_proxy

pytestmark = pytest.mark.anyio

GENAI = {
    "gen_ai_operation_name": "chat",
    "gen_ai_provider_name": "deepseek",
    "gen_ai_request_model": MODEL,
}
TEXT = {**GENAI, "gen_ai_token_modality": "text"}


@tool(read_only=True, timeout=5)
def get_weather(city: str) -> dict[str, object]:
    """Current weather in a city."""
    return {"city": city, "condition": "sunny"}


@tool(read_only=True, timeout=5)
def get_time(city: str) -> str:
    """The time in a city."""
    raise RuntimeError("the clock is broken")


TOOLS = ToolSet([get_weather, get_time])


def tool_loop() -> ScriptedUpstream:
    """Round 1 calls both tools (one fails), round 2 answers; DeepSeek's usage fields."""
    first = tool_round(
        [
            ("call_1", "get_weather", '{"city": "Paris"}'),
            ("call_2", "get_time", '{"city": "Paris"}'),
        ],
        round_usage=usage(120, 30, hit=100, reasoning=12),
    )
    final = content_round("It is |sunny.", tokens=9)  # usage(10, 9)
    return ScriptedUpstream([first, final])


def client_usage(chunks: list[dict[str, object]]) -> dict[str, object]:
    found = [item["usage"] for item in chunks if item.get("usage")]
    assert len(found) == 1
    value = found[0]
    assert isinstance(value, dict)
    return value


async def test_a_tool_loop_is_counted_as_the_client_saw_it() -> None:
    observed = observed_proxy(tool_loop(), tools=TOOLS)
    async with observed.client:
        result = await post_stream(
            observed.client,
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "weather and time in Paris?"}],
                "stream_options": {"include_usage": True},
            },
        )
        assert result.status == 200 and result.is_done and not result.errors
        scrape = await observed.scrape()

    got = client_usage(result.chunks)
    assert got["prompt_tokens"] == 130 and got["completion_tokens"] == 39  # the two rounds summed
    details = got["prompt_tokens_details"]
    assert isinstance(details, dict)
    reasoning = got["completion_tokens_details"]
    assert isinstance(reasoning, dict)
    value = scrape.value
    assert value("gen_ai_client_inference_usage_input_tokens_total", **TEXT) == got["prompt_tokens"]
    assert (
        value("gen_ai_client_inference_usage_output_tokens_total", **TEXT)
        == got["completion_tokens"]
    )
    assert (
        value("gen_ai_client_inference_usage_cache_read_input_tokens_total", **TEXT)
        == details["cached_tokens"]
        == 100
    )
    assert (
        value("gen_ai_client_inference_usage_reasoning_output_tokens_total", **TEXT)
        == reasoning["reasoning_tokens"]
        == 12
    )
    # two upstream rounds, one client request with no error
    assert value("gen_ai_client_inference_duration_seconds_count", **GENAI, error_type="") == 2
    assert value("gen_ai_server_request_duration_seconds_count", **GENAI, error_type="") == 1
    assert value("gen_ai_client_inference_time_to_first_chunk_seconds_count", **GENAI) == 2
    assert value("gen_ai_client_inference_time_per_output_chunk_seconds_count", **GENAI) > 0
    assert value("streamproxy_rounds_per_request_count") == 1
    assert value("streamproxy_rounds_per_request_sum") == 2
    assert value("streamproxy_rounds_per_request_bucket", le="1.0") == 0
    assert value("streamproxy_rounds_per_request_bucket", le="2.0") == 1
    # the tools: one ok, one failed, each one run
    tool_count = "gen_ai_execute_tool_duration_seconds_count"
    ok = {"gen_ai_operation_name": "execute_tool", "error_type": ""}
    assert value(tool_count, gen_ai_tool_name="get_weather", **ok) == 1
    assert value(tool_count, gen_ai_tool_name="get_time", error_type="error") == 1
    assert value("streamproxy_tool_calls_total", gen_ai_tool_name="get_weather", outcome="ok") == 1
    assert value("streamproxy_tool_calls_total", gen_ai_tool_name="get_time", outcome="error") == 1
    # the stream is over: nothing active, nothing failed, nothing retried
    assert value("streamproxy_active_streams") == 0
    assert scrape.total("streamproxy_errors_total") == 0
    assert scrape.total("streamproxy_upstream_retries_total") == 0


async def test_openai_usage_fields_count_cache_reads_once() -> None:
    openai_usage = {
        "prompt_tokens": 50,
        "completion_tokens": 8,
        "total_tokens": 58,
        "prompt_tokens_details": {"cached_tokens": 32},
        "completion_tokens_details": {"reasoning_tokens": 4},
    }
    round_bytes = tool_round([], finish="stop", content="hi", round_usage=openai_usage)
    observed = observed_proxy(
        ScriptedUpstream([round_bytes]),
        config=Config(upstream_url="https://api.openai.com/v1", api_key="sk-upstream-secret"),
    )
    async with observed.client:
        response = await observed.client.post(
            "/v1/chat/completions",
            json={"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert response.status_code == 200
        scrape = await observed.scrape()
    labels = {
        "gen_ai_provider_name": "openai",
        "gen_ai_request_model": "gpt-test",
        "gen_ai_token_modality": "text",
    }
    assert response.json()["usage"]["prompt_tokens"] == 50
    assert scrape.value("gen_ai_client_inference_usage_input_tokens_total", **labels) == 50
    assert (
        scrape.value("gen_ai_client_inference_usage_cache_read_input_tokens_total", **labels) == 32
    )
    assert (
        scrape.value("gen_ai_client_inference_usage_reasoning_output_tokens_total", **labels) == 4
    )
    # the upstream call streams (its first chunk is timed), the client's does not (no frames)
    assert scrape.total("gen_ai_client_inference_time_to_first_chunk_seconds_count") == 1
    assert scrape.total("gen_ai_client_inference_time_per_output_chunk_seconds_count") == 0


async def test_retries_and_errors_by_code() -> None:
    busy = httpx2.Response(503, json={"error": {"message": "busy"}}, headers={"retry-after": "0"})
    refused = httpx2.Response(400, json={"error": {"message": "bad model"}})
    observed = observed_proxy(ScriptedUpstream([busy, content_round("ok"), refused]))
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    async with observed.client:
        assert (await post_stream(observed.client, body)).status == 200
        assert (await post_stream(observed.client, body)).status == 400
        no_model = await observed.client.post("/v1/chat/completions", json={"messages": []})
        assert no_model.status_code == 400
        scrape = await observed.scrape()
    retries = "streamproxy_upstream_retries_total"
    assert scrape.value(retries, gen_ai_provider_name="deepseek", status="503") == 1
    assert scrape.value("streamproxy_errors_total", code="upstream_error") == 1
    assert scrape.value("streamproxy_errors_total", code="invalid_request_error") == 1
    failed = {**GENAI, "error_type": "upstream_error"}
    assert scrape.value("gen_ai_client_inference_duration_seconds_count", **failed) == 1
    assert scrape.value("gen_ai_server_request_duration_seconds_count", **failed) == 1
    assert scrape.total("gen_ai_server_request_duration_seconds_count") == 3


async def test_metrics_need_a_client_key_when_keys_are_on() -> None:
    config = Config(upstream_url=UPSTREAM_URL, api_key="sk-up", client_keys=frozenset({"ck-1"}))
    observed = observed_proxy(ScriptedUpstream([]), config=config)
    async with observed.client:
        refused = await observed.client.get("/metrics")
        assert refused.status_code == 401
        scrape = await observed.scrape({"Authorization": "Bearer ck-1"})
    assert scrape.value("streamproxy_errors_total", code="invalid_api_key") == 1


async def test_an_open_stream_is_active_until_it_ends() -> None:
    release = asyncio.Event()
    started = asyncio.Event()
    pieces = content_round("slow |answer")

    async def slow_body() -> AsyncIterator[bytes]:
        yield pieces[0]
        started.set()
        await release.wait()
        for piece in pieces[1:]:
            yield piece

    observed = observed_proxy(ScriptedUpstream([slow_body]))
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    async with observed.client:
        request = asyncio.ensure_future(post_stream(observed.client, body))
        await asyncio.wait_for(started.wait(), 5)
        during = await observed.scrape()
        release.set()
        result = await request
        after = await observed.scrape()
    assert result.status == 200 and result.content == "slow answer"
    assert during.value("streamproxy_active_streams") == 1
    assert during.total("gen_ai_server_request_duration_seconds_count") == 0  # not over yet
    assert after.value("streamproxy_active_streams") == 0
    assert after.total("gen_ai_server_request_duration_seconds_count") == 1


async def test_model_labels_are_bounded() -> None:
    from streamproxy.proxy.metrics import MAX_LABEL_VALUES

    rounds = [content_round("ok") for _ in range(MAX_LABEL_VALUES + 2)]
    observed = observed_proxy(ScriptedUpstream(list(rounds)))
    async with observed.client:
        for number in range(MAX_LABEL_VALUES + 2):
            body = {"model": f"model-{number}", "messages": [{"role": "user", "content": "hi"}]}
            assert (await post_stream(observed.client, body)).status == 200
        scrape = await observed.scrape()
    models = {
        labels["gen_ai_request_model"]
        for labels in scrape.labels("gen_ai_server_request_duration_seconds_count")
    }
    assert len(models) == MAX_LABEL_VALUES + 1
    assert "_OTHER" in models
    other = scrape.value(
        "gen_ai_server_request_duration_seconds_count", gen_ai_request_model="_OTHER"
    )
    assert other == 2


async def test_an_upstream_failure_in_a_later_round_is_counted_once_by_its_code() -> None:
    first = tool_round([("call_1", "get_weather", '{"city": "Paris"}')])
    refused = httpx2.Response(400, json={"error": {"message": "context too long"}})
    observed = observed_proxy(ScriptedUpstream([first, refused]), tools=TOOLS)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "weather?"}]}
    async with observed.client:
        result = await post_stream(observed.client, body)
        scrape = await observed.scrape()
    assert result.status == 200 and len(result.errors) == 1  # the failure is a frame
    assert scrape.total("streamproxy_errors_total") == 1
    assert scrape.value("streamproxy_errors_total", code="upstream_error") == 1
    failed = {**GENAI, "error_type": "upstream_error"}
    assert scrape.value("gen_ai_server_request_duration_seconds_count", **failed) == 1
    assert scrape.value("gen_ai_client_inference_duration_seconds_count", **failed) == 1
    assert (
        scrape.value("gen_ai_client_inference_duration_seconds_count", **GENAI, error_type="") == 1
    )
    assert scrape.value("streamproxy_active_streams") == 0


@tool(needs_approval=True)
def save_note(title: str) -> str:
    """Save a note."""
    return f"saved {title}"


async def test_client_approvals_are_counted_by_outcome_and_the_run_as_a_tool() -> None:
    write_round = tool_round([("call_w", "save_note", '{"title": "t"}')])
    upstream = ScriptedUpstream([write_round, content_round("Saved."), content_round("Again.")])
    config = Config(upstream_url=UPSTREAM_URL, api_key="sk-up", approvals="client")
    observed = observed_proxy(upstream, tools=ToolSet([save_note]), config=config)
    user = [{"role": "user", "content": "Save a note."}]
    async with observed.client:
        handed = await post_stream(observed.client, {"model": MODEL, "messages": user})
        [delta] = handed.tool_call_deltas
        call = {"id": delta["id"], "type": "function", "function": delta["function"]}
        history = [
            *user,
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": '{"approved": true}'},
        ]
        for _ in range(2):  # the second time it already ran
            result = await post_stream(observed.client, {"model": MODEL, "messages": history})
            assert result.status == 200 and not result.errors
        scrape = await observed.scrape()
        spans = [span.name for span in observed.spans()]
    approvals = "streamproxy_approvals_total"
    assert scrape.value(approvals, gen_ai_tool_name="save_note", outcome="approved") == 2
    assert scrape.value(approvals, gen_ai_tool_name="save_note", outcome="already_ran") == 1
    assert scrape.value("streamproxy_tool_calls_total", gen_ai_tool_name="save_note") == 1
    assert spans.count("execute_tool save_note") == 1
