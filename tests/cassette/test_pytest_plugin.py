"""The pytest plugin: the marker/fixture replays into openai and httpx clients; record modes."""

from __future__ import annotations

import openai  # noqa: F401  imported once here: in-process pytester runs then reuse it
import pytest

from streamproxy.cassette import load

pytest_plugins = ["pytester"]

CONFTEST = """
import json, pathlib
import httpx2
import pytest

LOG = pathlib.Path(__file__).parent / "upstream.log"

def answer(request):
    question = json.loads(request.content)["messages"][0]["content"]
    with LOG.open("a") as log:
        log.write(question + "\\n")
    chunk = {"choices": [{"index": 0, "delta": {"content": "echo: " + question}}]}
    body = b"data: " + json.dumps(chunk).encode() + b"\\n\\ndata: [DONE]\\n\\n"
    return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

@pytest.fixture
def streamproxy_upstream_transport():
    return httpx2.MockTransport(answer)
"""

TEST_MODULE = """
import asyncio, os
import pytest

QUESTION = os.environ["QUESTION"]

@pytest.mark.streamproxy_cassette("chat")
def test_chat(streamproxy_cassette):
    client = streamproxy_cassette.openai_client(base_url="https://api.deepseek.com")
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": QUESTION}], stream=True,
        extra_headers={"authorization": "Bearer sk-plugin-secret-000111"},
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "echo: " + QUESTION

def test_default_name_async(streamproxy_cassette):
    async def scenario():
        client = streamproxy_cassette.async_openai_client()
        reply = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": QUESTION}], stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in reply if c.choices])
    assert asyncio.run(scenario()) == "echo: " + QUESTION
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_chat_plugin=TEST_MODULE)
    monkeypatch.setenv("QUESTION", "hello")
    return pytester


def _run(project: pytest.Pytester, mode: str | None) -> pytest.RunResult:
    args = ["-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-q"]
    if mode:
        args.append(f"--streamproxy-record-mode={mode}")
    return project.runpytest(*args)


def _upstream_calls(project: pytest.Pytester) -> list[str]:
    log = project.path / "upstream.log"
    return log.read_text().splitlines() if log.exists() else []


def _questions(project: pytest.Pytester, name: str) -> list[str]:
    path = project.path / "cassettes" / "test_chat_plugin" / f"{name}.cassette.json"
    cassette = load(path)
    assert "sk-plugin-secret-000111" not in path.read_text()
    return [i.request.body["messages"][0]["content"] for i in cassette if i.request]  # type: ignore[index]


def test_none_without_a_cassette_fails_with_a_clear_message(project: pytest.Pytester) -> None:
    result = _run(project, None)
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*chat.cassette.json does not exist; record it with*"])
    assert _upstream_calls(project) == []


def test_once_records_then_replays_without_the_upstream(project: pytest.Pytester) -> None:
    _run(project, "once").assert_outcomes(passed=2)
    assert _upstream_calls(project) == ["hello", "hello"]
    assert _questions(project, "chat") == ["hello"]
    assert _questions(project, "test_default_name_async") == ["hello"]
    _run(project, "once").assert_outcomes(passed=2)
    _run(project, "none").assert_outcomes(passed=2)
    assert _upstream_calls(project) == ["hello", "hello"]  # replayed, not re-sent


def test_none_and_once_fail_a_request_the_cassette_lacks(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _run(project, "once").assert_outcomes(passed=2)
    monkeypatch.setenv("QUESTION", "different")
    for mode in ("none", "once"):
        result = _run(project, mode)
        result.assert_outcomes(failed=2)
        result.stdout.fnmatch_lines(
            ["*no recorded interaction matches POST*nearest is interaction 0*"]
        )
    assert _upstream_calls(project) == ["hello", "hello"]


def test_new_appends_only_unmatched_requests(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _run(project, "once").assert_outcomes(passed=2)
    monkeypatch.setenv("QUESTION", "second")
    _run(project, "new").assert_outcomes(passed=2)
    monkeypatch.setenv("QUESTION", "hello")
    _run(project, "new_episodes").assert_outcomes(passed=2)  # matched: replayed, nothing added
    assert _questions(project, "chat") == ["hello", "second"]
    assert _upstream_calls(project) == ["hello", "hello", "second", "second"]


def test_all_re_records_everything_and_replaces_the_cassette(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _run(project, "once").assert_outcomes(passed=2)
    monkeypatch.setenv("QUESTION", "fresh")
    _run(project, "all").assert_outcomes(passed=2)
    assert _questions(project, "chat") == ["fresh"]
    _run(project, "all").assert_outcomes(passed=2)
    assert _upstream_calls(project) == ["hello", "hello", "fresh", "fresh", "fresh", "fresh"]


def test_the_marker_can_set_the_mode_and_rejects_unknown_arguments(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(
        test_marker="""
import pytest

@pytest.mark.streamproxy_cassette("m", record_mode="once")
def test_marker_mode(streamproxy_cassette):
    assert streamproxy_cassette.mode == "once"
    assert streamproxy_cassette.path.name == "m.cassette.json"

@pytest.mark.streamproxy_cassette("m", colour="red")
def test_unknown(streamproxy_cassette):
    pass
"""
    )
    result = project.runpytest(
        "-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "test_marker.py"
    )
    result.assert_outcomes(passed=1, errors=1)
    assert "TypeError: unknown streamproxy_cassette marker arguments: ['colour']" in (
        result.stdout.str()
    )


def test_the_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.streamproxy_cassette(*"])
