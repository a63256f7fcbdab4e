"""``POST /v1/responses`` end to end: a real ``streamproxy serve`` process, the ``openai`` SDK
(``responses.create`` streaming and not, and the ``responses.stream()`` helper), in front of
the offline demo (a server tool loop) and of a replay upstream (a client function tool, and
``previous_response_id`` checked on what the upstream received)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.e2e.processes import Process
from tests.e2e.test_approvals_e2e import write_cassette

pytestmark = pytest.mark.e2e

MODEL = "deepseek-v4-flash"
DEMO_ANSWER = (
    "It is sunny in Paris right now, at 24 °C. (The offline demo: a recorded answer, not a model.)"
)
SHOW_MAP = {
    "type": "function",
    "name": "show_map",
    "description": "Show a map of a place.",
    "parameters": {"type": "object", "properties": {"place": {"type": "string"}}},
}


def _env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key != "DEEPSEEK_API_KEY"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The offline demo: its sample read-only tool runs mid-stream."""
    directory = tmp_path_factory.mktemp("responses_demo")
    with Process(["serve", "--port", "0"], cwd=directory, env=_env()) as process:
        yield process.url


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(proxy URL, replay URL): the model calls the client's ``show_map``, then answers."""
    directory = tmp_path_factory.mktemp("responses_replay")
    cassette = directory / "map.json"
    write_cassette(cassette, "show_map", '{"place": "Paris"}', "Here |is Paris.")
    env = _env()
    with Process(
        ["replay", str(cassette), "--port", "0", "--match", "turn"], cwd=directory, env=env
    ) as replay:
        arguments = ["serve", "--upstream", f"{replay.url}/v1", "--port", "0"]
        with Process(arguments, cwd=directory, env=env) as proxy:
            yield proxy.url, replay.url


_CLIENTS: list[openai.OpenAI] = []


def client(url: str) -> openai.OpenAI:
    """An SDK client of ``url``, closed after the test (no socket left to the collector)."""
    made = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    _CLIENTS.append(made)
    return made


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


def test_streaming_create_runs_the_server_tool_and_streams_the_answer(demo: str) -> None:
    events = list(
        client(demo).responses.create(
            model=MODEL, input="What's the weather in Paris?", stream=True
        )
    )
    types = [event.type for event in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert "response.reasoning_summary_text.delta" in types  # DeepSeek's thinking, kept
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == DEMO_ANSWER
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response  # type: ignore[union-attr]
    assert final.usage is not None and final.usage.input_tokens > 0
    assert all(item.type != "function_call" for item in final.output)  # the server call hid


def test_the_stream_helper_and_the_non_streaming_form_agree(demo: str) -> None:
    with client(demo).responses.stream(model=MODEL, input="Weather?") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        streamed = stream.get_final_response()
    whole = client(demo).responses.create(model=MODEL, input="Weather?")
    assert "".join(deltas) == streamed.output_text == whole.output_text == DEMO_ANSWER
    assert whole.status == "completed" and whole.usage is not None


def test_a_client_function_tool_passes_through_and_previous_response_id_chains(
    replayed: tuple[str, str],
) -> None:
    proxy_url, replay_url = replayed
    httpx.delete(f"{replay_url}/_streamproxy/requests")
    sdk = client(proxy_url)
    first = sdk.responses.create(
        model=MODEL,
        instructions="Be brief.",
        input="Show me Paris.",
        tools=[SHOW_MAP],  # type: ignore[list-item]
    )
    [call] = [item for item in first.output if item.type == "function_call"]
    assert (call.name, call.arguments) == ("show_map", '{"place": "Paris"}')
    second = sdk.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "shown"}],
        tools=[SHOW_MAP],  # type: ignore[list-item]
    )
    assert second.output_text == "Here is Paris."
    received = httpx.get(f"{replay_url}/_streamproxy/requests").json()
    messages = received[-1]["body"]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[0]["content"] == "Show me Paris."
    assert messages[1]["tool_calls"][0]["function"]["name"] == "show_map"
    assert messages[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "shown"}
    assert received[0]["body"]["messages"][0] == {"role": "system", "content": "Be brief."}


def test_an_unknown_previous_response_is_a_clear_400(demo: str) -> None:
    with pytest.raises(openai.BadRequestError, match="not known"):
        client(demo).responses.create(
            model=MODEL, input="Hi", previous_response_id="resp_does_not_exist"
        )


def test_an_unknown_route_is_an_openai_shaped_404(demo: str) -> None:
    response = httpx.post(f"{demo}/v1/embeddings", json={})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
