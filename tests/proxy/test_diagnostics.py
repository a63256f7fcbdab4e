"""The opt-in diagnostics endpoint, the fault-tuning serve flags, and the upstream adapter's
answers to a JSON error under 200 and its count of open responses (in process, no sockets)."""

from __future__ import annotations

import asyncio

import httpx2
import pytest

from streamproxy.cli import build_parser
from streamproxy.commands.serve import DIAGNOSTICS_ENV, config_from_arguments
from streamproxy.config import Config
from streamproxy.errors import UpstreamError
from streamproxy.proxy import create_app
from streamproxy.proxy.tools import ToolSet
from streamproxy.proxy.upstream import RetryPolicy, Upstream

pytestmark = pytest.mark.anyio

SSE = b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\n'


def _app(config: Config, handler: httpx2.MockTransport | None = None) -> httpx2.AsyncClient:
    transport = handler or httpx2.MockTransport(lambda request: httpx2.Response(200, content=SSE))
    app = create_app(config, tools=ToolSet(), transport=transport)
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://proxy")


async def test_diagnostics_are_off_unless_asked_for() -> None:
    async with _app(Config(upstream_url="http://upstream.test/v1")) as client:
        assert (await client.get("/_streamproxy/diagnostics")).status_code == 404


async def test_diagnostics_report_an_idle_process_and_need_the_client_key() -> None:
    config = Config(
        upstream_url="http://upstream.test/v1", diagnostics=True, client_keys=frozenset({"k"})
    )
    async with _app(config) as client:
        assert (await client.get("/_streamproxy/diagnostics")).status_code == 401
        headers = {"Authorization": "Bearer k"}
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        answer = await client.post("/v1/chat/completions", json=body, headers=headers)
        assert answer.status_code == 200
        state = (await client.get("/_streamproxy/diagnostics", headers=headers)).json()
    assert state["active_requests"] == 0
    assert state["open_upstream_responses"] == 0
    assert state["running_tools"] == 0
    assert state["asyncio_tasks"] == len(state["tasks"])


async def test_diagnostics_count_a_request_in_flight() -> None:
    release = asyncio.Event()
    seen: dict[str, object] = {}

    async def slow_upstream(request: httpx2.Request) -> httpx2.Response:
        await release.wait()
        return httpx2.Response(200, content=SSE)

    config = Config(upstream_url="http://upstream.test/v1", diagnostics=True)
    async with _app(config, httpx2.MockTransport(slow_upstream)) as client:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        pending = asyncio.ensure_future(client.post("/v1/chat/completions", json=body))
        for _ in range(100):
            seen = (await client.get("/_streamproxy/diagnostics")).json()
            if seen["active_requests"]:
                break
            await asyncio.sleep(0.01)
        release.set()
        assert (await pending).status_code == 200
    assert seen["active_requests"] == 1


async def test_a_json_error_under_200_is_an_upstream_error_not_a_stream() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        error = {"error": {"message": "quota exceeded", "type": "rate_limit_error"}}
        return httpx2.Response(200, json=error)

    upstream = Upstream("http://upstream.test/v1", transport=httpx2.MockTransport(handler))
    with pytest.raises(UpstreamError) as raised:
        await upstream.open_chat({"model": "m"})
    assert raised.value.status == 502
    assert "quota exceeded" in raised.value.message
    assert upstream.open_responses == 0


async def test_open_responses_are_counted_until_closed() -> None:
    transport = httpx2.MockTransport(lambda request: httpx2.Response(200, content=SSE))
    upstream = Upstream("http://upstream.test/v1", transport=transport, retry=RetryPolicy())
    first = await upstream.open_chat({"model": "m"})
    second = await upstream.open_chat({"model": "m"})
    assert upstream.open_responses == 2
    await first.aclose()
    await first.aclose()  # closing twice counts once
    assert upstream.open_responses == 1
    async with second:
        pass
    assert upstream.open_responses == 0


def test_fault_tuning_flags_map_to_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DIAGNOSTICS_ENV, raising=False)
    argv = ["serve", "--upstream", "http://127.0.0.1:9/v1"]
    config = config_from_arguments(build_parser().parse_args(argv))
    assert (config.upstream_timeout, config.retries, config.retry_base_delay) == (600.0, 2, 0.5)
    assert (config.max_retry_wait, config.diagnostics) == (30.0, False)
    flags = [
        "--upstream-timeout", "1.5",
        "--retries", "4",
        "--retry-delay", "0.01",
        "--max-retry-wait", "3",
        "--diagnostics",
    ]  # fmt: skip
    config = config_from_arguments(build_parser().parse_args([*argv, *flags]))
    assert (config.upstream_timeout, config.retries, config.retry_base_delay) == (1.5, 4, 0.01)
    assert (config.max_retry_wait, config.diagnostics) == (3.0, True)
    monkeypatch.setenv(DIAGNOSTICS_ENV, "1")
    assert config_from_arguments(build_parser().parse_args(argv)).diagnostics


@pytest.mark.parametrize(
    "settings",
    [{"upstream_timeout": 0}, {"retries": -1}, {"retry_base_delay": -0.1}, {"max_retry_wait": -1}],
)
def test_out_of_range_settings_are_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Config(**settings)  # type: ignore[arg-type]
