"""The proxy app end to end in process: httpx2.ASGITransport in, a scripted upstream out."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import httpx2
import pytest

from streamproxy.config import Config
from streamproxy.proxy.tools import ToolSet, tool

from .helpers import (
    MODEL,
    AsgiClient,
    ScriptedUpstream,
    chat_scope,
    chunk,
    content_round,
    post_stream,
    proxy_client,
    sse,
    tool_round,
    usage,
)

pytestmark = pytest.mark.anyio

UPSTREAM_KEY = "sk-upstream-secret-key"
USER = [{"role": "user", "content": "What's the weather in Paris?"}]
runs: list[dict[str, object]] = []


@tool(read_only=True, timeout=2)
def get_weather(city: str) -> dict[str, object]:
    """Current weather in a city."""
    runs.append({"tool": "get_weather", "city": city})
    return {"city": city, "temperature_c": 24}


@tool(needs_approval=True)
def write_note(title: str, text: str) -> str:
    """Save a note."""
    runs.append({"tool": "write_note", "title": title, "text": text})
    return f"saved {title}"


TOOLS = ToolSet([get_weather, write_note])
CLIENT_TOOL = {
    "type": "function",
    "function": {
        "name": "show_map",
        "parameters": {"type": "object", "properties": {"place": {"type": "string"}}},
    },
}


@pytest.fixture(autouse=True)
def clear_runs() -> None:
    runs.clear()


async def test_content_streams_in_order_with_one_finish_and_done() -> None:
    upstream = ScriptedUpstream([content_round("Hello|, |world|.")])
    async with proxy_client(upstream, tools=TOOLS) as client:
        result = await post_stream(client, {"model": MODEL, "messages": USER})
    assert result.status == 200
    assert result.content == "Hello, world."
    assert result.finish_reasons == ["stop"]
    assert result.is_done and not result.errors
    assert len({item["id"] for item in result.chunks}) == 1
    assert result.usage_chunks == []  # the client did not ask for usage
    sent = upstream.bodies[0]
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert [tool["function"]["name"] for tool in sent["tools"]] == ["get_weather", "write_note"]


async def test_unused_request_fields_pass_through_unchanged() -> None:
    upstream = ScriptedUpstream([content_round("ok")])
    extra = {"temperature": 0.3, "reasoning_effort": "max", "user": "u1", "custom_field": [1, 2]}
    async with proxy_client(upstream, tools=TOOLS) as client:
        await post_stream(client, {"model": MODEL, "messages": USER, **extra})
    sent = upstream.bodies[0]
    for key, value in extra.items():
        assert sent[key] == value
    assert sent["messages"] == USER


async def test_server_tool_runs_and_the_loop_continues_invisibly() -> None:
    upstream = ScriptedUpstream(
        [
            tool_round(
                [("call_1", "get_weather", '{"city": "Paris"}')],
                reasoning="Need the weather.",
                round_usage=usage(100, 20, hit=40, reasoning=12),
            ),
            content_round("It is |24 °C.", reasoning="Answer now."),
        ]
    )
    async with proxy_client(upstream, tools=TOOLS) as client:
        result = await post_stream(
            client,
            {"model": MODEL, "messages": USER, "stream_options": {"include_usage": True}},
        )
    assert runs == [{"tool": "get_weather", "city": "Paris"}]
    assert result.content == "It is 24 °C."
    assert result.tool_call_deltas == []  # server calls never leak
    assert result.finish_reasons == ["stop"]
    assert "tool get_weather started" in result.comments
    # the second upstream request carries the assistant turn, its reasoning and the result
    second = upstream.bodies[1]["messages"]
    assert second[0] == USER[0]
    assert second[1]["role"] == "assistant"
    assert second[1]["content"] == ""
    assert second[1]["reasoning_content"] == "Need the weather."
    assert second[1]["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        }
    ]
    assert second[2] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": '{"city":"Paris","temperature_c":24}',
    }
    # usage: both rounds summed, DeepSeek's cache and reasoning fields included
    [usage_chunk] = result.usage_chunks
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {
        "prompt_tokens": 110,
        "completion_tokens": 25,
        "total_tokens": 135,
        "prompt_tokens_details": {"cached_tokens": 40},
        "prompt_cache_hit_tokens": 40,
        "prompt_cache_miss_tokens": 70,
        "completion_tokens_details": {"reasoning_tokens": 12},
    }
    assert result.chunks.index(usage_chunk) == len(result.chunks) - 1


async def test_read_only_tool_starts_while_the_model_is_still_streaming() -> None:
    started = asyncio.Event()

    @tool(read_only=True)
    async def lookup(key: str) -> str:
        """Look up."""
        started.set()
        return f"value of {key}"

    async def first_round() -> AsyncIterator[bytes]:
        head = [chunk({"role": "assistant", "content": ""})]
        calls = [
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "lookup", "arguments": '{"key": "a"}'},
                        }
                    ]
                }
            ),
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 1,
                            "id": "c2",
                            "type": "function",
                            "function": {"name": "lookup", "arguments": '{"key": "b"}'},
                        }
                    ]
                }
            ),
        ]
        for frame in sse(head + calls, done=False):
            yield frame
        # the first call was sealed by the second one starting: it must already be running
        await asyncio.wait_for(started.wait(), timeout=2)
        for frame in sse([chunk({}, finish="tool_calls", usage=usage(5, 5))]):
            yield frame

    upstream = ScriptedUpstream([first_round, content_round("done")])
    async with proxy_client(upstream, tools=ToolSet([lookup])) as client:
        result = await post_stream(client, {"model": MODEL, "messages": USER})
    assert result.content == "done"
    results = [m for m in upstream.bodies[1]["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in results] == ["value of a", "value of b"]


@pytest.mark.parametrize(
    ("name", "arguments", "expected"),
    [
        pytest.param("get_weather", '{"town": "Paris"}', "arguments do not match", id="schema"),
        pytest.param("get_weather", '{"city": ', "not", id="truncated-json"),
        pytest.param("launch_rockets", "{}", "launch_rockets", id="unknown-tool"),
    ],
)
async def test_invalid_calls_never_run_and_the_error_goes_to_the_model(
    name: str, arguments: str, expected: str
) -> None:
    upstream = ScriptedUpstream(
        [tool_round([("call_x", name, arguments)]), content_round("Sorry.")]
    )
    async with proxy_client(upstream, tools=TOOLS) as client:
        result = await post_stream(client, {"model": MODEL, "messages": USER})
    assert runs == []
    assert result.content == "Sorry."
    assert result.tool_call_deltas == []
    tool_message = upstream.bodies[1]["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == "call_x"
    assert tool_message["content"].startswith("error: the call was not run")
    assert expected in tool_message["content"]


async def test_client_tools_pass_through_untouched() -> None:
    upstream = ScriptedUpstream(
        [tool_round([("call_c", "show_map", '{"place": "Paris"}')], content="Here:")]
    )
    async with proxy_client(upstream, tools=TOOLS) as client:
        result = await post_stream(
            client, {"model": MODEL, "messages": USER, "tools": [CLIENT_TOOL]}
        )
    assert result.finish_reasons == ["tool_calls"]
    deltas = result.tool_call_deltas
    assert deltas[0] == {
        "index": 0,
        "id": "call_c",
        "type": "function",
        "function": {"name": "show_map", "arguments": ""},
    }
    arguments = "".join(d["function"]["arguments"] for d in deltas[1:])
    assert arguments == '{"place": "Paris"}'
    assert upstream.bodies[0]["tools"][0] == CLIENT_TOOL
    assert len(upstream.requests) == 1


async def test_mixed_turn_runs_server_tools_hands_client_tools_and_restores_history() -> None:
    upstream = ScriptedUpstream(
        [
            tool_round(
                [
                    ("call_s", "get_weather", '{"city": "Paris"}'),
                    ("call_c", "show_map", '{"place": "Paris"}'),
                ],
                reasoning="Both tools.",
            ),
            content_round("Map shown, 24 °C."),
        ]
    )
    async with proxy_client(upstream, tools=TOOLS) as client:
        first = await post_stream(
            client, {"model": MODEL, "messages": USER, "tools": [CLIENT_TOOL]}
        )
        assert runs == [{"tool": "get_weather", "city": "Paris"}]
        assert first.finish_reasons == ["tool_calls"]
        assert {d.get("id") for d in first.tool_call_deltas} == {"call_c", None}
        # the client sends back only what it saw: its own call, no reasoning
        history = [
            *USER,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_c",
                        "type": "function",
                        "function": {"name": "show_map", "arguments": '{"place": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_c", "content": "map shown"},
        ]
        second = await post_stream(
            client, {"model": MODEL, "messages": history, "tools": [CLIENT_TOOL]}
        )
    assert second.content == "Map shown, 24 °C."
    sent = upstream.bodies[1]["messages"]
    assistant = sent[1]
    assert assistant["reasoning_content"] == "Both tools."
    assert [call["id"] for call in assistant["tool_calls"]] == ["call_s", "call_c"]
    answered = {m["tool_call_id"]: m["content"] for m in sent if m["role"] == "tool"}
    assert answered == {
        "call_s": '{"city":"Paris","temperature_c":24}',
        "call_c": "map shown",
    }
    assert len(runs) == 1  # the server tool did not run again


async def test_mixed_turn_without_the_stash_still_sends_a_valid_conversation() -> None:
    upstream = ScriptedUpstream([content_round("ok")])
    history = [
        *USER,
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "unknown_call",
                    "type": "function",
                    "function": {"name": "show_map", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "unknown_call", "content": "map shown"},
    ]
    async with proxy_client(upstream, tools=TOOLS) as client:
        result = await post_stream(
            client, {"model": MODEL, "messages": history, "tools": [CLIENT_TOOL]}
        )
    assert result.content == "ok"
    sent = upstream.bodies[0]["messages"]
    assert sent[1]["content"] == ""  # DeepSeek rejects an assistant message without content
    assert [c["id"] for c in sent[1]["tool_calls"]] == ["unknown_call"]
    assert sent[2]["tool_call_id"] == "unknown_call"


async def test_client_keys_are_required_when_configured() -> None:
    config = Config(upstream_url="http://upstream.test/v1", client_keys=frozenset({"k1"}))
    upstream = ScriptedUpstream([content_round("ok")])
    async with proxy_client(upstream, config=config) as client:
        missing = await client.post("/v1/chat/completions", json={"model": MODEL, "messages": USER})
        wrong = await client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": USER},
            headers={"Authorization": "Bearer nope"},
        )
        models = await client.get("/v1/models")
        health = await client.get("/healthz")
        right = await client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": USER},
            headers={"Authorization": "Bearer k1"},
        )
    assert missing.status_code == wrong.status_code == models.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    assert health.status_code == 200
    assert right.status_code == 200
    assert len(upstream.requests) == 1


async def test_the_upstream_key_never_reaches_the_client_or_the_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    failing = httpx2.Response(401, json={"error": {"message": f"bad key {UPSTREAM_KEY}"}})
    upstream = ScriptedUpstream([tool_round([("c", "get_weather", '{"city": "x"}')]), failing])
    async with proxy_client(upstream, tools=TOOLS) as client:
        result = await post_stream(client, {"model": MODEL, "messages": USER})
        second = await client.post("/v1/chat/completions", json={"model": MODEL, "messages": USER})
    assert upstream.requests[0].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert UPSTREAM_KEY not in result.raw.decode()
    assert UPSTREAM_KEY not in second.text
    assert UPSTREAM_KEY not in caplog.text
    assert result.errors  # the mid-stream failure was reported, scrubbed


async def test_non_streaming_runs_the_loop_and_returns_one_completion() -> None:
    upstream = ScriptedUpstream(
        [
            tool_round([("call_1", "get_weather", '{"city": "Paris"}')], content="Checking."),
            content_round("It is 24 °C."),
        ]
    )
    async with proxy_client(upstream, tools=TOOLS) as client:
        response = await client.post(
            "/v1/chat/completions", json={"model": MODEL, "messages": USER}
        )
    assert response.status_code == 200
    completion = response.json()
    assert completion["object"] == "chat.completion"
    [choice] = completion["choices"]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == "Checking.\n\nIt is 24 °C."
    assert "tool_calls" not in choice["message"]
    assert completion["usage"]["total_tokens"] == 27 + 15
    assert upstream.bodies[0]["stream"] is True  # the upstream always streams


async def test_upstream_status_and_body_are_passed_through_before_the_first_byte() -> None:
    body = {"error": {"message": "Model Not Exist", "type": "invalid_request_error", "code": None}}
    upstream = ScriptedUpstream([httpx2.Response(400, json=body)])
    async with proxy_client(upstream) as client:
        response = await client.post(
            "/v1/chat/completions", json={"model": "nope", "messages": USER, "stream": True}
        )
    assert response.status_code == 400
    assert response.json() == body


async def test_retryable_failures_are_retried_before_the_first_byte() -> None:
    upstream = ScriptedUpstream(
        [
            httpx2.Response(503, json={"error": {"message": "busy"}}),
            httpx2.Response(429, headers={"Retry-After": "0"}, json={}),
            content_round("ok"),
        ]
    )
    async with proxy_client(upstream) as client:
        result = await post_stream(client, {"model": MODEL, "messages": USER})
    assert result.content == "ok"
    assert len(upstream.requests) == 3


async def test_a_failure_after_the_first_byte_is_one_error_frame_without_done() -> None:
    broken = sse([chunk({"role": "assistant", "content": "Hel"})], done=False)
    upstream = ScriptedUpstream([broken])  # ends without finish_reason or [DONE]
    async with proxy_client(upstream) as client:
        result = await post_stream(client, {"model": MODEL, "messages": USER})
    assert result.status == 200
    assert result.content == "Hel"
    assert len(result.errors) == 1
    assert result.errors[0]["error"]["code"] == "incomplete_stream"
    assert not result.is_done
    assert result.finish_reasons == []


async def test_an_in_band_upstream_error_ends_the_stream_with_an_error_frame() -> None:
    in_band = b'data: {"error": {"message": "overloaded", "code": 503}}\n\n'
    frames = [*sse([chunk({"content": "Hi"})], done=False), in_band]
    upstream = ScriptedUpstream([frames])
    async with proxy_client(upstream) as client:
        result = await post_stream(client, {"model": MODEL, "messages": USER})
    assert [e["error"]["message"] for e in result.errors] == [
        "the upstream reported an error: overloaded"
    ]
    assert not result.is_done


async def test_rounds_are_limited() -> None:
    looping = [tool_round([(f"c{i}", "get_weather", '{"city": "x"}')]) for i in range(3)]
    upstream = ScriptedUpstream(looping)
    config = Config(upstream_url="http://upstream.test/v1", max_rounds=2)
    async with proxy_client(upstream, tools=TOOLS, config=config) as client:
        result = await post_stream(client, {"model": MODEL, "messages": USER})
    assert len(upstream.requests) == 2
    assert "tool_choice" not in upstream.bodies[0]
    assert upstream.bodies[1]["tool_choice"] == "none"  # the last round must answer
    assert [e["error"]["code"] for e in result.errors] == ["tool_rounds_exceeded"]
    assert len(runs) == 1


async def test_tool_results_are_limited_in_size() -> None:
    @tool(read_only=True)
    def big() -> str:
        """Big."""
        return "x" * 5000

    upstream = ScriptedUpstream([tool_round([("c", "big", "{}")]), content_round("ok")])
    config = Config(upstream_url="http://upstream.test/v1", max_tool_result_size=1000)
    async with proxy_client(upstream, tools=ToolSet([big]), config=config) as client:
        await post_stream(client, {"model": MODEL, "messages": USER})
    content = upstream.bodies[1]["messages"][-1]["content"]
    assert content.startswith("error: the result of big is 5000 bytes, over the limit of 1000")


async def test_arguments_are_limited_in_size() -> None:
    huge = json.dumps({"city": "x" * 3000})
    upstream = ScriptedUpstream([tool_round([("c", "get_weather", huge)]), content_round("ok")])
    config = Config(upstream_url="http://upstream.test/v1", max_arguments_size=1000)
    async with proxy_client(upstream, tools=TOOLS, config=config) as client:
        await post_stream(client, {"model": MODEL, "messages": USER})
    assert runs == []
    assert upstream.bodies[1]["messages"][-1]["content"].startswith("error: the call was not run")


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        pytest.param(b"{not json", 400, "not JSON", id="bad-json"),
        pytest.param(b"[]", 400, "JSON object", id="not-object"),
        pytest.param(b'{"messages": []}', 400, "model", id="no-model"),
        pytest.param(
            json.dumps({"model": MODEL, "messages": USER, "n": 2}).encode(),
            400,
            "integer 1",
            id="n",
        ),
        pytest.param(
            json.dumps({"model": MODEL, "messages": USER, "n": True}).encode(),
            400,
            "integer 1",
            id="n-true",
        ),
        pytest.param(
            b'{"model": "m", "messages": [{"role": "user", "content": '
            + b"[" * 300
            + b"]" * 300
            + b"}]}",
            400,
            "nested deeper",
            id="too-deep",
        ),
        pytest.param(
            json.dumps({"model": MODEL, "messages": USER, "streamproxy": 1}).encode(),
            400,
            "must be an object",
            id="bad-extension",
        ),
        pytest.param(
            json.dumps(
                {
                    "model": MODEL,
                    "messages": USER,
                    "tools": [{"type": "function", "function": {"name": "get_weather"}}],
                }
            ).encode(),
            400,
            "belongs to a server tool",
            id="name-clash",
        ),
        pytest.param(b"x" * 3000, 413, "limit", id="too-large"),
    ],
)
async def test_bad_requests_get_a_clear_error(body: bytes, status: int, fragment: str) -> None:
    upstream = ScriptedUpstream([])
    config = Config(upstream_url="http://upstream.test/v1", max_request_size=2000)
    async with proxy_client(upstream, tools=TOOLS, config=config) as client:
        response = await client.post(
            "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
        )
        health = await client.get("/healthz")
    assert response.status_code == status
    assert fragment in response.json()["error"]["message"]
    assert upstream.requests == []
    assert health.status_code == 200  # the process keeps serving


async def test_deepseek_strict_tools_go_to_beta_and_thinking_drops_required() -> None:
    upstream = ScriptedUpstream([content_round("ok")])
    config = Config(upstream_url="https://api.deepseek.com", api_key=UPSTREAM_KEY)
    async with proxy_client(upstream, tools=TOOLS, config=config) as client:
        await post_stream(
            client,
            {
                "model": MODEL,
                "messages": USER,
                "tool_choice": "required",
                "reasoning_effort": "high",
                "thinking": {"type": "enabled"},
            },
        )
    request = upstream.requests[0]
    assert str(request.url) == "https://api.deepseek.com/beta/chat/completions"
    sent = upstream.bodies[0]
    assert "tool_choice" not in sent
    assert sent["reasoning_effort"] == "high"
    assert sent["thinking"] == {"type": "enabled"}
    assert all(tool["function"]["strict"] is True for tool in sent["tools"])


async def test_required_tool_choice_is_kept_when_thinking_is_off() -> None:
    upstream = ScriptedUpstream([content_round("ok")])
    config = Config(upstream_url="https://api.deepseek.com", api_key=UPSTREAM_KEY)
    async with proxy_client(upstream, tools=TOOLS, config=config) as client:
        await post_stream(
            client,
            {
                "model": MODEL,
                "messages": USER,
                "tool_choice": "required",
                "thinking": {"type": "disabled"},
            },
        )
    assert upstream.bodies[0]["tool_choice"] == "required"


async def test_tool_progress_extension_field_when_asked() -> None:
    upstream = ScriptedUpstream(
        [tool_round([("call_1", "get_weather", '{"city": "Paris"}')]), content_round("ok")]
    )
    async with proxy_client(upstream, tools=TOOLS) as client:
        result = await post_stream(
            client,
            {"model": MODEL, "messages": USER, "streamproxy": {"tool_progress": True}},
        )
    extensions = [item["streamproxy"] for item in result.chunks if "streamproxy" in item]
    progress = [item["tool_progress"] for item in extensions if "tool_progress" in item]
    assert [(p["name"], p["status"]) for p in progress] == [
        ("get_weather", "started"),
        ("get_weather", "ok"),
    ]
    assert "duration_ms" in progress[1]
    rounds = [item["round"] for item in extensions if "round" in item]
    assert [(r["number"], r["finish_reason"]) for r in rounds] == [(1, "tool_calls"), (2, "stop")]
    assert rounds[0]["usage"]["prompt_tokens"] == 20  # each round's own usage
    assert "streamproxy" not in upstream.bodies[0]  # the extension field is the proxy's own
    assert result.finish_reasons == ["stop"]


async def test_keepalive_comments_during_a_slow_tool() -> None:
    @tool(read_only=True)
    async def slow() -> str:
        """Slow."""
        await asyncio.sleep(0.3)
        return "done"

    upstream = ScriptedUpstream([tool_round([("c", "slow", "{}")]), content_round("ok")])
    config = Config(upstream_url="http://upstream.test/v1", keepalive_interval=0.05)
    async with proxy_client(upstream, tools=ToolSet([slow]), config=config) as client:
        result = await post_stream(client, {"model": MODEL, "messages": USER})
    assert result.comments.count("keep-alive") >= 3
    assert result.content == "ok"


async def test_audit_line_per_tool_run(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="streamproxy.audit")
    upstream = ScriptedUpstream(
        [
            tool_round([("call_1", "get_weather", '{"city": "Paris"}'), ("call_2", "nope", "{}")]),
            content_round("ok"),
        ]
    )
    async with proxy_client(upstream, tools=TOOLS) as client:
        await post_stream(client, {"model": MODEL, "messages": USER})
    lines = [r.getMessage() for r in caplog.records if r.name == "streamproxy.audit"]
    assert len(lines) == 3
    started, ran = (line for line in lines if "call_1" in line)
    assert "outcome=started" in started
    assert "tool=get_weather" in ran and "outcome=ok" in ran and "args_sha256=" in ran
    assert all(line.startswith("tool_call request_id=req_") for line in lines)
    assert "Paris" not in ran  # a digest, never the arguments
    refused = next(line for line in lines if "call_2" in line)
    assert "outcome=refused" in refused and "kind=unknown_tool" in refused


async def test_models_and_health() -> None:
    upstream = ScriptedUpstream([])

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json={"object": "list", "data": [{"id": MODEL}]})

    from streamproxy.proxy import create_app

    app = create_app(
        Config(upstream_url="http://upstream.test/v1"),
        tools=ToolSet(),
        transport=httpx2.MockTransport(handler),
    )
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app), base_url="http://proxy.test"
    ) as client:
        models = await client.get("/v1/models")
        health = await client.get("/healthz")
    assert models.json() == {"object": "list", "data": [{"id": MODEL}]}
    assert health.json() == {"status": "ok"}
    assert upstream.requests == []


async def test_client_disconnect_closes_the_upstream_and_cancels_tools() -> None:
    tool_started = asyncio.Event()
    tool_cancelled = asyncio.Event()

    @tool(read_only=True)
    async def forever() -> str:
        """Never ends."""
        tool_started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            tool_cancelled.set()
            raise
        return "never"

    async def first_round() -> AsyncIterator[bytes]:
        frames = sse(
            [
                chunk({"role": "assistant", "content": "Working"}),
                *[
                    chunk({"tool_calls": [call]})
                    for call in (
                        {
                            "index": 0,
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "forever", "arguments": "{}"},
                        },
                        {
                            "index": 1,
                            "id": "c2",
                            "type": "function",
                            "function": {"name": "forever", "arguments": "{}"},
                        },
                    )
                ],
            ],
            done=False,
        )
        for frame in frames:
            yield frame
        await asyncio.sleep(60)  # the model keeps "thinking"

    upstream = ScriptedUpstream([first_round])
    from streamproxy.proxy import create_app

    app = create_app(
        Config(upstream_url="http://upstream.test/v1"),
        tools=ToolSet([forever]),
        transport=upstream.transport(),
    )
    client = AsgiClient(json.dumps({"model": MODEL, "messages": USER, "stream": True}).encode())
    call = asyncio.create_task(app(chat_scope(), client.receive, client.send))
    await asyncio.wait_for(tool_started.wait(), timeout=2)
    client.leave.set()
    await asyncio.wait_for(call, timeout=2)
    await asyncio.wait_for(tool_cancelled.wait(), timeout=2)
    assert upstream.closed == 1
    bodies = client.body_bytes()
    assert b"Working" in bodies
    assert b"[DONE]" not in bodies


@pytest.mark.parametrize("stream", [True, False])
async def test_a_client_that_leaves_before_the_upstream_answers_is_a_499(stream: bool) -> None:
    asked = asyncio.Event()
    upstream_cancelled = asyncio.Event()

    async def silent(request: httpx2.Request) -> httpx2.Response:
        asked.set()
        try:
            await asyncio.sleep(60)  # the upstream never answers its head
        except asyncio.CancelledError:
            upstream_cancelled.set()
            raise
        raise AssertionError("not cancelled")

    from streamproxy.proxy import create_app

    app = create_app(
        Config(upstream_url="http://upstream.test/v1", state_url="memory://"),
        transport=httpx2.MockTransport(silent),
    )
    client = AsgiClient(json.dumps({"model": MODEL, "messages": USER, "stream": stream}).encode())
    call = asyncio.create_task(app(chat_scope(), client.receive, client.send))
    await asyncio.wait_for(asked.wait(), timeout=2)
    client.leave.set()
    await asyncio.wait_for(call, timeout=2)
    assert upstream_cancelled.is_set()
    sent = client.sent
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 499
    assert not call.cancelled()  # the cancellation stayed inside the request's work


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v1/nothing", 404, "not_found"),
        ("POST", "/v1/embeddings", 404, "not_found"),
        ("GET", "/v1/chat/completions", 405, "method_not_allowed"),
        ("DELETE", "/healthz", 405, "method_not_allowed"),
    ],
)
async def test_unknown_routes_and_methods_get_an_openai_shaped_error(
    method: str, path: str, status: int, code: str
) -> None:
    async with proxy_client(ScriptedUpstream([]), tools=TOOLS) as client:
        response = await client.request(method, path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code and path in error["message"]


async def test_a_responses_request_nested_too_deep_is_a_clear_400() -> None:
    body = (
        b'{"model": "m", "input": [{"role": "user", "content": ' + b"[" * 300 + b"]" * 300 + b"}]}"
    )
    async with proxy_client(ScriptedUpstream([]), tools=TOOLS) as client:
        response = await client.post(
            "/v1/responses", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert "nested deeper" in response.json()["error"]["message"]
