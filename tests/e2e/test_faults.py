"""The fault matrix: every fault through real processes on 127.0.0.1.

A real ``streamproxy serve`` runs in front of a real ``streamproxy replay`` (started once for the
module). Each case scripts the replay server's next answers (``POST /_streamproxy/plan``: which
interaction, with which fault), sends one request with a client that has a timeout, and asserts:

1. the outcome the client sees, as documented in docs/proxy.md ("Faults");
2. no hang: every client call has a timeout, so a hung proxy fails the case;
3. the upstream connection closed: the replay server has no response left open, and each
   scripted response ended the way the case implies (finished, dropped, or aborted because the
   proxy closed it);
4. the upstream requests: exactly the scripted number (retried or not), none left over;
5. nothing left running in the proxy: ``GET /_streamproxy/diagnostics`` returns to the idle
   baseline (no active request, no open upstream response, no tool task, the idle number of
   asyncio tasks);
6. the proxy still answers the next request with a clean stream.
"""

from __future__ import annotations

import os
import socket
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import openai
import orjson
import pytest

from streamproxy.cassette.format import (
    Cassette,
    Chunk,
    Interaction,
    RecordedRequest,
    RecordedResponse,
    dump,
)
from tests.e2e.processes import Process

pytestmark = pytest.mark.e2e

MODEL = "deepseek-v4-flash"
# Each client call's timeout: a proxy that hangs fails the case instead of the suite.
CLIENT_TIMEOUT = 10.0
# How long the proxy may take to clean up after a case (cancel, close) before it counts as a leak.
SETTLE_TIMEOUT = 5.0
# The main proxy's idle timeout (--upstream-timeout) is far longer than any case, so only a
# client's disconnect can close a stalled upstream early; the impatient proxy's is short.
PATIENT_TIMEOUT = 60.0
IDLE_TIMEOUT = 0.5
STALL_SECONDS = 20.0
# A Retry-After the proxy honours (under --max-retry-wait) but a case never waits for.
LONG_RETRY_AFTER = 20.0
MAX_TOOL_RESULT = 1024
RETRIES = 3
EVENT_LIMIT = 16 * 1024 * 1024  # the core's default max_event_size, which the proxy keeps

CONTENT = ["The ", "quick ", "brown ", "fox ", "jumps ", "over ", "the ", "lazy ", "dog."]
FINAL = ["The ", "tool ", "answered."]
TOOL_NAMES = ["get_weather", "explode", "hang", "hang_in_thread", "huge", "slow"]
# interaction indexes in the cassette
ANSWER = 0
AFTER_TOOL = 1
CALLS = {name: 2 + index for index, name in enumerate(TOOL_NAMES)}

TOOLS_MODULE = '''
import asyncio
import time
from pathlib import Path

from streamproxy.proxy.tools import tool

LOG = Path("tool_events.log")


def log(line):
    with LOG.open("a") as handle:
        handle.write(line + "\\n")


@tool(read_only=True, timeout=5)
def get_weather(city: str) -> dict:
    """Current weather in a city."""
    log("get_weather ran")
    return {"city": city, "temperature_c": 24}


@tool(read_only=True, timeout=5)
def explode(city: str) -> str:
    """A tool that raises."""
    raise RuntimeError(f"no weather station in {city}")


@tool(read_only=True, timeout=0.3)
async def hang(city: str) -> str:
    """An async tool that never answers."""
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        log("hang cancelled")
        raise
    return "never"


@tool(read_only=True, timeout=0.3)
def hang_in_thread(city: str) -> str:
    """A sync tool that answers far too late (its thread cannot be stopped)."""
    time.sleep(1.0)
    log("hang_in_thread returned")
    return "too late"


@tool(read_only=True, timeout=5)
def huge(city: str) -> str:
    """A tool whose result is over the size limit."""
    return "x" * 4096


@tool(read_only=True, timeout=30)
async def slow(city: str) -> str:
    """A tool that runs until cancelled."""
    log("slow started")
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        log("slow cancelled")
        raise
    return "slow done"


TOOLS = [get_weather, explode, hang, hang_in_thread, huge, slow]
'''


# ---------------------------------------------------------------------------------- the cassette


def frame(delta: dict[str, object], finish: str | None = None, usage: object = None) -> bytes:
    chunk = {
        "id": "faults",
        "object": "chat.completion.chunk",
        "created": 1780000000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        "usage": usage,
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


USAGE = {"prompt_tokens": 10, "completion_tokens": 9, "total_tokens": 19}
ROLE = frame({"role": "assistant", "content": ""})
DONE = b"data: [DONE]\n\n"
FINISH_STOP = frame({"content": ""}, "stop", USAGE)


def answer_frames(pieces: list[str]) -> list[bytes]:
    return [ROLE, *(frame({"content": text}) for text in pieces), FINISH_STOP, DONE]


def call_frames(name: str) -> list[bytes]:
    head = {
        "index": 0,
        "id": f"call_{name}",
        "type": "function",
        "function": {"name": name, "arguments": ""},
    }
    return [
        ROLE,
        frame({"tool_calls": [head]}),
        frame({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Pa'}}]}),
        frame({"tool_calls": [{"index": 0, "function": {"arguments": 'ris"}'}}]}),
        frame({"content": ""}, "tool_calls", USAGE),
        DONE,
    ]


ANSWER_BODY = b"".join(answer_frames(CONTENT))
CALL_BODY = b"".join(call_frames("get_weather"))
ARGUMENTS_TAIL = b'ris\\"}'  # the last arguments fragment, as escaped in the body


def write_cassette(path: Path) -> None:
    """Every answer the matrix needs; requests never match, so only scripted ones are answered."""
    unscripted = RecordedRequest(method="POST", path="/unscripted", body={"unscripted": True})

    def interaction(frames: list[bytes]) -> Interaction:
        chunks = [Chunk(float(index), data) for index, data in enumerate(frames)]
        response = RecordedResponse(
            status=200, headers={"content-type": "text/event-stream"}, chunks=chunks
        )
        return Interaction(request=unscripted, response=response)

    interactions = [interaction(answer_frames(CONTENT)), interaction(answer_frames(FINAL))]
    interactions += [interaction(call_frames(name)) for name in TOOL_NAMES]
    dump(Cassette(source="tests/e2e/test_faults.py", interactions=interactions), path)


def offset_in(body: bytes, marker: bytes, extra: int = 0) -> int:
    """The byte offset of ``marker`` in ``body`` (plus ``extra``)."""
    return body.index(marker) + extra


def end_of_event_with(body: bytes, marker: bytes) -> int:
    """The offset just after the event that holds ``marker``."""
    return body.index(b"\n\n", body.index(marker)) + 2


# ---------------------------------------------------------------------------------- the processes


@dataclass
class Servers:
    replay: Process
    proxy: Process
    """In front of the replay, with an idle timeout no case reaches."""
    impatient: Process
    """In front of the replay, with a short idle timeout."""
    refused: Process
    """In front of a port that refuses connections."""
    directory: Path
    http: httpx.Client
    """One client for the test aids and plain requests (a client per call costs a TLS setup)."""
    baselines: dict[str, int] = field(default_factory=dict)
    """Each proxy's idle number of asyncio tasks, by URL."""
    sdks: dict[str, openai.OpenAI] = field(default_factory=dict)

    def sdk(self, proxy_url: str) -> openai.OpenAI:
        """The official SDK pointed at ``proxy_url``, with a timeout and no retries."""
        if proxy_url not in self.sdks:
            self.sdks[proxy_url] = openai.OpenAI(
                base_url=f"{proxy_url}/v1",
                api_key="unused",
                max_retries=0,
                timeout=CLIENT_TIMEOUT,
                http_client=self.http,
            )
        return self.sdks[proxy_url]

    @property
    def proxy_url(self) -> str:
        return self.proxy.url

    @property
    def replay_url(self) -> str:
        return self.replay.url

    @property
    def proxies(self) -> list[Process]:
        return [self.proxy, self.impatient, self.refused]


def proxy_arguments(upstream: str, *, idle_timeout: float) -> list[str]:
    return [
        "serve",
        "--upstream",
        upstream,
        "--api-key-env",
        "FAULTS_UPSTREAM_KEY",
        "--tools",
        "fault_tools:TOOLS",
        "--port",
        "0",
        "--diagnostics",
        "--upstream-timeout",
        str(idle_timeout),
        "--retries",
        str(RETRIES),
        "--retry-delay",
        "0.01",
        "--max-tool-result-size",
        str(MAX_TOOL_RESULT),
        "--log-level",
        "warning",
    ]


def environment() -> dict[str, str]:
    return {**os.environ, "FAULTS_UPSTREAM_KEY": "sk-faults-upstream", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    directory = tmp_path_factory.mktemp("faults")
    cassette = directory / "faults.cassette.json"
    write_cassette(cassette)
    (directory / "fault_tools.py").write_text(textwrap.dedent(TOOLS_MODULE))
    env = environment()
    with (
        closed_port() as refusing_url,
        Process(["replay", str(cassette), "--port", "0"], cwd=directory, env=env) as replay,
        Process(
            proxy_arguments(refusing_url, idle_timeout=PATIENT_TIMEOUT), cwd=directory, env=env
        ) as refused,
    ):
        upstream = f"{replay.url}/v1"
        with (
            Process(
                proxy_arguments(upstream, idle_timeout=PATIENT_TIMEOUT), cwd=directory, env=env
            ) as proxy,
            Process(
                proxy_arguments(upstream, idle_timeout=IDLE_TIMEOUT), cwd=directory, env=env
            ) as impatient,
            httpx.Client(timeout=CLIENT_TIMEOUT) as http,
        ):
            setup = Servers(replay, proxy, impatient, refused, directory, http)
            for process in setup.proxies:
                if process is not refused:
                    assert_served(setup, process.url)  # warm up, then take the baseline
                setup.baselines[process.url] = wait_until_idle(setup, process.url)
            yield setup


@contextmanager
def closed_port() -> Iterator[str]:
    """A URL whose port refuses connections: bound (so nobody else takes it), not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


@pytest.fixture
def case(servers: Servers) -> Iterator[Servers]:
    """Clear the replay's script and counters; afterwards check what every case must hold."""
    for aid in ("plan", "requests", "responses"):
        servers.http.delete(f"{servers.replay_url}/_streamproxy/{aid}")
    tool_log = servers.directory / "tool_events.log"
    tool_log.unlink(missing_ok=True)
    yield servers
    # nothing left running in any proxy...
    for process in servers.proxies:
        wait_until_idle(servers, process.url, baseline=servers.baselines[process.url])
    # ...every scripted answer was asked for, and no upstream response is left open...
    assert servers.http.get(f"{servers.replay_url}/_streamproxy/plan").json() == []
    assert replay_responses(servers)["open"] == 0
    # ...and the next request gets a clean answer
    assert_served(servers, servers.proxy.url)
    assert_served(servers, servers.impatient.url)


# ---------------------------------------------------------------------------------- helpers


def script(servers: Servers, *entries: dict[str, object]) -> None:
    response = servers.http.post(f"{servers.replay_url}/_streamproxy/plan", json=list(entries))
    assert response.status_code == 200, response.text


def upstream_requests(servers: Servers) -> list[dict[str, object]]:
    response = servers.http.get(f"{servers.replay_url}/_streamproxy/requests")
    return [item["body"] for item in response.json()]


def replay_responses(servers: Servers) -> dict[str, int]:
    """The replay's response counts once none is open (a proxy that leaks one fails here)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        counts: dict[str, int] = servers.http.get(
            f"{servers.replay_url}/_streamproxy/responses"
        ).json()
        if counts["open"] == 0 or time.monotonic() > deadline:
            return counts
        time.sleep(0.02)


def diagnostics(servers: Servers, proxy_url: str) -> dict[str, object]:
    response = servers.http.get(f"{proxy_url}/_streamproxy/diagnostics")
    assert response.status_code == 200
    return dict(response.json())


def wait_until_idle(servers: Servers, proxy_url: str, *, baseline: int | None = None) -> int:
    """Wait until the proxy holds nothing; returns its idle number of asyncio tasks."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        state = diagnostics(servers, proxy_url)
        is_idle = (
            state["active_requests"] == 0
            and state["open_upstream_responses"] == 0
            and state["running_tools"] == 0
            and (baseline is None or state["asyncio_tasks"] == baseline)
        )
        if is_idle:
            return int(str(state["asyncio_tasks"]))
        if time.monotonic() > deadline:
            pytest.fail(f"the proxy did not return to idle (baseline {baseline} tasks): {state}")
        time.sleep(0.02)


@dataclass
class Seen:
    """What a streaming client received, frame by frame."""

    status: int
    content: str = ""
    finish_reasons: list[str] = field(default_factory=list)
    errors: list[dict[str, object]] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    tool_calls: list[object] = field(default_factory=list)
    is_done: bool = False
    body: bytes = b""
    is_after_done: bool = False
    """Something came after ``[DONE]`` (never allowed)."""


def request_body(**extra: object) -> dict[str, object]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Tell me something."}],
        **extra,
    }


def parse_stream(status: int, body: bytes) -> Seen:
    seen = Seen(status=status, body=body)
    for event in body.split(b"\n\n"):
        if not event:
            continue
        if seen.is_done:
            seen.is_after_done = True
        if event.startswith(b":"):
            seen.comments.append(event[1:].decode().strip())
            continue
        assert event.startswith(b"data: "), event[:200]
        data = event[len(b"data: ") :]
        if data == b"[DONE]":
            seen.is_done = True
            continue
        chunk = orjson.loads(data)
        if "error" in chunk:
            seen.errors.append(chunk["error"])
            continue
        for choice in chunk["choices"]:
            delta = choice["delta"]
            seen.content += delta.get("content") or ""
            seen.tool_calls.extend(delta.get("tool_calls") or [])
            if choice["finish_reason"] is not None:
                seen.finish_reasons.append(choice["finish_reason"])
    return seen


def stream(servers: Servers, proxy_url: str, **extra: object) -> Seen:
    """One streaming request with raw httpx (every frame visible); bounded by the timeout."""
    response = servers.http.post(
        f"{proxy_url}/v1/chat/completions", json=request_body(stream=True, **extra)
    )
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return parse_stream(response.status_code, response.content)
    return Seen(status=response.status_code, body=response.content)


def complete(servers: Servers, proxy_url: str) -> httpx.Response:
    """One non-streaming request with raw httpx."""
    return servers.http.post(f"{proxy_url}/v1/chat/completions", json=request_body())


def assert_served(servers: Servers, proxy_url: str) -> None:
    """The proxy answers a clean request with the whole answer (the official SDK as client)."""
    script(servers, {"interaction": ANSWER})
    chunks = servers.sdk(proxy_url).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Again?"}], stream=True
    )
    text, reasons = "", []
    for chunk in chunks:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            if choice.finish_reason is not None:
                reasons.append(choice.finish_reason)
    assert (text, reasons) == ("".join(CONTENT), ["stop"])


def assert_error_frame_ends_the_stream(seen: Seen, fragment: str) -> dict[str, object]:
    """The documented mid-stream failure: 200, one error frame last, no finish, no [DONE]."""
    assert seen.status == 200
    assert len(seen.errors) == 1, seen.body[-500:]
    assert seen.body.rstrip().endswith(b"}}")  # the error frame is the last thing sent
    assert not seen.is_done
    assert seen.finish_reasons == []
    [error] = seen.errors
    assert fragment in str(error["message"]), error
    assert set(error) >= {"message", "type", "code"}
    return error


def tool_events(servers: Servers) -> list[str]:
    path = servers.directory / "tool_events.log"
    return path.read_text().splitlines() if path.exists() else []


# ------------------------------------------------------------------------ before the first byte


def test_upstream_refuses_the_connection(case: Servers) -> None:
    url = case.refused.url
    seen = stream(case, url)
    assert seen.status == 502
    error = orjson.loads(seen.body)["error"]
    assert "cannot reach the upstream" in error["message"]
    assert "sk-faults-upstream" not in seen.body.decode()
    with pytest.raises(openai.InternalServerError, match="cannot reach the upstream"):
        case.sdk(url).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "?"}]
        )
    assert case.http.get(f"{url}/healthz").json() == {"status": "ok"}


def test_429_500_503_then_success_is_one_clean_stream(case: Servers) -> None:
    script(
        case,
        {"status": 429, "retry_after": 0},
        {"status": 500},
        {"status": 503},
        {"interaction": ANSWER},
    )
    seen = stream(case, case.proxy_url)
    assert (seen.status, seen.content, seen.finish_reasons) == (200, "".join(CONTENT), ["stop"])
    assert seen.is_done and not seen.errors and not seen.is_after_done
    bodies = upstream_requests(case)
    assert len(bodies) == 4 and all(body == bodies[0] for body in bodies)
    assert replay_responses(case) == {"open": 0, "finished": 4, "dropped": 0, "aborted": 0}


def test_retries_give_up_with_the_upstream_status(case: Servers) -> None:
    script(case, *[{"status": 503}] * (RETRIES + 1))
    seen = stream(case, case.proxy_url)
    assert seen.status == 503
    assert orjson.loads(seen.body)["error"]["type"] == "service_unavailable"
    assert len(upstream_requests(case)) == RETRIES + 1


def test_a_retry_after_past_the_ceiling_is_not_waited_for(case: Servers) -> None:
    script(case, {"status": 429, "retry_after": 3600})  # over --max-retry-wait (30 s)
    seen = stream(case, case.proxy_url)  # the client's timeout (10 s) bounds the wait
    assert seen.status == 429
    assert orjson.loads(seen.body)["error"]["type"] == "rate_limit_error"
    assert len(upstream_requests(case)) == 1


@pytest.mark.parametrize(
    ("status", "kind", "error_type"),
    [
        (400, openai.BadRequestError, "invalid_request_error"),
        (401, openai.AuthenticationError, "authentication_error"),
        (402, openai.APIStatusError, "insufficient_balance"),
    ],
)
def test_client_errors_are_passed_on_not_retried(
    case: Servers, status: int, kind: type[openai.APIStatusError], error_type: str
) -> None:
    script(case, {"status": status})
    seen = stream(case, case.proxy_url)
    assert seen.status == status
    error = orjson.loads(seen.body)["error"]
    assert error["type"] == error_type
    assert error["message"] == f"injected fault: the upstream answered {status}"
    assert len(upstream_requests(case)) == 1
    script(case, {"status": status})
    with pytest.raises(kind) as raised:  # the SDK, not streaming: the same error
        case.sdk(case.proxy_url).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "?"}]
        )
    assert raised.value.status_code == status


def test_a_json_error_body_under_200_is_a_502_with_the_upstream_message(case: Servers) -> None:
    script(case, {"status": 200})
    seen = stream(case, case.proxy_url)
    assert seen.status == 502
    assert orjson.loads(seen.body)["error"]["message"] == (
        "injected fault: the upstream answered 200"
    )
    assert len(upstream_requests(case)) == 1


# ---------------------------------------------------------------------------------- mid-stream


def test_connection_dropped_mid_content(case: Servers) -> None:
    script(case, {"interaction": ANSWER, "drop_at": offset_in(ANSWER_BODY, b'"fox', 2)})
    seen = stream(case, case.proxy_url)
    assert seen.content == "The quick brown "
    assert_error_frame_ends_the_stream(seen, "the upstream connection failed")
    assert replay_responses(case)["dropped"] == 1
    assert len(upstream_requests(case)) == 1  # never retried once bytes were read


def test_connection_dropped_mid_content_non_streaming(case: Servers) -> None:
    script(case, {"interaction": ANSWER, "drop_at": offset_in(ANSWER_BODY, b'"fox', 2)})
    response = complete(case, case.proxy_url)
    assert response.status_code == 502
    assert "the upstream connection failed" in response.json()["error"]["message"]


def test_connection_dropped_mid_arguments(case: Servers) -> None:
    script(
        case, {"interaction": CALLS["get_weather"], "drop_at": offset_in(CALL_BODY, ARGUMENTS_TAIL)}
    )
    seen = stream(case, case.proxy_url)
    assert_error_frame_ends_the_stream(seen, "the upstream connection failed")
    assert seen.content == "" and not seen.tool_calls
    assert tool_events(case) == []  # the cut call never ran
    assert replay_responses(case)["dropped"] == 1
    assert len(upstream_requests(case)) == 1


def test_a_stall_past_the_idle_timeout(case: Servers) -> None:
    stall_at = end_of_event_with(ANSWER_BODY, b'"brown')
    script(case, {"interaction": ANSWER, "stall_at": stall_at, "stall_seconds": STALL_SECONDS})
    seen = stream(case, case.impatient.url)
    assert seen.content == "The quick brown "
    error = assert_error_frame_ends_the_stream(seen, "read timeout")
    assert error["code"] is not None
    # the proxy closed the stalled upstream response (long before the stall ended)
    assert replay_responses(case) == {"open": 0, "finished": 0, "dropped": 0, "aborted": 1}


def test_an_in_band_error(case: Servers) -> None:
    script(case, {"interaction": ANSWER, "error_after": 3, "error_message": "overloaded, sorry"})
    seen = stream(case, case.proxy_url)
    assert seen.content == "The quick "
    assert_error_frame_ends_the_stream(seen, "overloaded, sorry")
    assert replay_responses(case)["finished"] == 1


def test_arguments_cut_off(case: Servers) -> None:
    script(
        case, {"interaction": CALLS["get_weather"], "cut_at": offset_in(CALL_BODY, ARGUMENTS_TAIL)}
    )
    seen = stream(case, case.proxy_url)
    assert_error_frame_ends_the_stream(seen, "ended early")
    assert not seen.tool_calls and tool_events(case) == []
    assert len(upstream_requests(case)) == 1  # no round 2 with a half call


def test_no_finish_and_no_done(case: Servers) -> None:
    script(case, {"interaction": ANSWER, "cut_at": ANSWER_BODY.index(FINISH_STOP)})
    seen = stream(case, case.proxy_url)
    assert seen.content == "".join(CONTENT)  # everything the model sent arrived...
    assert_error_frame_ends_the_stream(
        seen, "ended early"
    )  # ...and the client knows it ended badly


def test_one_event_larger_than_the_limit(case: Servers) -> None:
    script(case, {"interaction": ANSWER, "huge_event": EVENT_LIMIT + 1024})
    seen = stream(case, case.proxy_url)
    assert seen.content == ""
    assert_error_frame_ends_the_stream(seen, "exceeds the limit")


def test_garbage_bytes(case: Servers) -> None:
    at = offset_in(ANSWER_BODY, b'"quick', 3)
    script(case, {"interaction": ANSWER, "garbage_at": at, "seed": 1})
    seen = stream(case, case.proxy_url)
    assert seen.content == "The "
    assert_error_frame_ends_the_stream(seen, "not JSON")


def content_a_spec_following_client_reads(body: bytes) -> str:
    """The content httpx-sse (the WHATWG rules) reads from ``body``: the differential oracle."""
    from httpx_sse._decoders import SSEDecoder, SSELineDecoder

    lines, decoder, content = SSELineDecoder(), SSEDecoder(), ""
    text = body.decode("utf-8", errors="replace")
    for line in [*lines.decode(text), *lines.flush()]:
        event = decoder.decode(line)
        if event is not None and event.data and event.data != "[DONE]":
            for choice in orjson.loads(event.data)["choices"]:
                content += choice["delta"].get("content") or ""
    return content


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_garbage_bytes_between_events(case: Servers, seed: int) -> None:
    # garbage glued to the start of "data:" turns the line into one with an unknown field name,
    # which the SSE standard ignores (with the chunk it carried, when the garbage holds no line
    # end), as the openai SDK and httpx-sse do: the stream completes with what such a client
    # reads from the same bytes, and no error
    from streamproxy.cassette.faults import Faults, plan_delivery

    at = end_of_event_with(ANSWER_BODY, b'"quick')
    script(case, {"interaction": ANSWER, "garbage_at": at, "seed": seed})
    seen = stream(case, case.proxy_url)
    chunks = [Chunk(float(index), data) for index, data in enumerate(answer_frames(CONTENT))]
    delivered = b"".join(
        piece.data for piece in plan_delivery(chunks, Faults(garbage_at=at, seed=seed)).pieces
    )
    assert seen.status == 200 and not seen.errors
    assert seen.is_done and seen.finish_reasons == ["stop"]
    assert seen.content == content_a_spec_following_client_reads(delivered)
    assert "".join(CONTENT).startswith(seen.content[: len("The quick ")])


# ---------------------------------------------------------------------------------- server tools


@pytest.mark.parametrize(
    ("tool", "result", "status"),
    [
        ("explode", "error: RuntimeError: no weather station in Paris", "error"),
        ("hang", "error: tool hang timed out after 0.3 s", "timeout"),
        ("hang_in_thread", "error: tool hang_in_thread timed out after 0.3 s", "timeout"),
        (
            "huge",
            f"error: the result of huge is 4096 bytes, over the limit of {MAX_TOOL_RESULT} "
            "bytes; ask for less",
            "too_large",
        ),
    ],
)
def test_a_failing_tool_is_reported_to_the_model_and_the_stream_goes_on(
    case: Servers, tool: str, result: str, status: str
) -> None:
    script(case, {"interaction": CALLS[tool]}, {"interaction": AFTER_TOOL})
    seen = stream(case, case.proxy_url)
    assert (seen.content, seen.finish_reasons) == ("".join(FINAL), ["stop"])
    assert seen.is_done and not seen.errors and not seen.tool_calls
    assert any(comment.startswith(f"tool {tool} {status}") for comment in seen.comments)
    _, second = upstream_requests(case)
    tool_message = second["messages"][-1]
    assert tool_message == {"role": "tool", "tool_call_id": f"call_{tool}", "content": result}
    if tool == "hang":
        assert tool_events(case) == ["hang cancelled"]
    if tool == "hang_in_thread":  # its thread cannot be stopped: it ends later, and is ignored
        wait_for_tool_event(case, "hang_in_thread returned")
        assert len(upstream_requests(case)) == 2


# ------------------------------------------------------------------------ clients that leave


def test_client_disconnects_during_content(case: Servers) -> None:
    stall_at = end_of_event_with(ANSWER_BODY, b'"quick')
    script(case, {"interaction": ANSWER, "stall_at": stall_at, "stall_seconds": STALL_SECONDS})
    received = b""
    with (
        httpx.Client(timeout=CLIENT_TIMEOUT) as client,
        client.stream(
            "POST", f"{case.proxy_url}/v1/chat/completions", json=request_body(stream=True)
        ) as response,
    ):
        for data in response.iter_bytes():
            received += data
            if b"quick" in received:
                break  # leave mid-stream: the connection closes
    assert parse_stream(200, received.rsplit(b"\n\n", 1)[0]).content == "The quick "
    # the stalled upstream response was closed because the client left (the stall and the idle
    # timeout are both far longer than the settle time)
    assert replay_responses(case) == {"open": 0, "finished": 0, "dropped": 0, "aborted": 1}


def test_client_disconnects_during_a_running_tool(case: Servers) -> None:
    script(case, {"interaction": CALLS["slow"]})  # no round 2 may follow
    received = b""
    with (
        httpx.Client(timeout=CLIENT_TIMEOUT) as client,
        client.stream(
            "POST", f"{case.proxy_url}/v1/chat/completions", json=request_body(stream=True)
        ) as response,
    ):
        for data in response.iter_bytes():
            received += data
            if b": tool slow started" in received:
                break
    wait_for_tool_event(case, "slow cancelled")
    assert tool_events(case) == ["slow started", "slow cancelled"]
    assert len(upstream_requests(case)) == 1


def test_client_disconnects_during_a_running_tool_non_streaming(case: Servers) -> None:
    script(case, {"interaction": CALLS["slow"]})
    post_then_leave(case.proxy_url, request_body(), lambda: "slow started" in tool_events(case))
    wait_for_tool_event(case, "slow cancelled")
    assert tool_events(case) == ["slow started", "slow cancelled"]
    assert len(upstream_requests(case)) == 1


def test_client_disconnects_during_a_retry_backoff(case: Servers) -> None:
    script(case, {"status": 429, "retry_after": LONG_RETRY_AFTER})
    body = request_body(stream=True)
    post_then_leave(case.proxy_url, body, lambda: len(upstream_requests(case)) == 1)
    # the backoff is cancelled with the request: no task is left to send the retry (the case
    # fixture waits for idle far less than Retry-After), and only the first attempt was sent
    wait_until_idle(case, case.proxy_url, baseline=case.baselines[case.proxy_url])
    assert len(upstream_requests(case)) == 1


def post_then_leave(proxy_url: str, body: dict[str, object], is_time: Callable[[], bool]) -> None:
    """POST ``body`` on a raw socket, wait (bounded) until ``is_time()``, then close the socket."""
    address = urlsplit(proxy_url)
    payload = orjson.dumps(body)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {address.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    connection = (address.hostname or "127.0.0.1", address.port or 80)
    with socket.create_connection(connection, timeout=CLIENT_TIMEOUT) as sock:
        sock.sendall(head.encode() + payload)
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while not is_time():
            if time.monotonic() > deadline:
                pytest.fail("the moment to leave never came")
            time.sleep(0.02)


def wait_for_tool_event(servers: Servers, line: str) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while line not in tool_events(servers):
        if time.monotonic() > deadline:
            pytest.fail(f"no {line!r} in the tool log: {tool_events(servers)}")
        time.sleep(0.02)
