"""The playground page in headless Chromium against real ``streamproxy serve`` processes.

One test chats with the offline demo (no key, no network): the answer streams in, the reasoning
sits in a collapsible block, the ``get_weather`` card fills in and completes, the usage shows. The
other puts ``serve`` (with client keys and a ``needs_approval`` tool) in front of a replay upstream:
the page asks for approval with buttons, Approve sends ``yes``, the tool runs once and the answer
streams. Screenshots go to the test's directory.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.browser import chromium_context, require_chromium
from tests.e2e.cassettes import answer, frame, one_answer, tool_call, two_rounds
from tests.e2e.processes import Process

pytestmark = pytest.mark.e2e

DEMO_ANSWER = (
    "It is sunny in Paris right now, at 24 °C. (The offline demo: a recorded answer, not a model.)"
)
MODEL = "deepseek-v4-flash"
CLIENT_KEY = "playground-client-key"
NOTE = {"title": "groceries", "text": "milk, eggs <b>and</b> bread"}
# Records what the page showed after every DOM change, so a test sees the intermediate states of a
# stream (text growing, a card's statuses) without timing anything; and any CSP violation.
WATCHER = """() => {
  window.seen = {contents: [], statuses: [], arguments: [], violations: []};
  document.addEventListener("securitypolicyviolation", (event) => {
    window.seen.violations.push(event.violatedDirective + " " + event.blockedURI);
  });
  new MutationObserver(() => {
    const turn = [...document.querySelectorAll("article.assistant")].pop();
    if (!turn) return;
    const text = [...turn.querySelectorAll(".content")].map((node) => node.textContent).join("");
    if (window.seen.contents.at(-1) !== text) window.seen.contents.push(text);
    for (const card of turn.querySelectorAll("section.tool")) {
      const status = card.dataset.callId + " " + (card.dataset.status || "streaming");
      if (window.seen.statuses.at(-1) !== status) window.seen.statuses.push(status);
      const shown = card.querySelector("pre.arguments").textContent;
      if (window.seen.arguments.at(-1) !== shown) window.seen.arguments.push(shown);
    }
  }).observe(document.body, {subtree: true, childList: true, characterData: true,
                             attributes: true});
}"""
TOOLS_MODULE = '''
from streamproxy.proxy.tools import tool


@tool(needs_approval=True)
def write_note(title: str, text: str) -> str:
    """Save a note."""
    with open("tool_runs.log", "a") as log:
        log.write(title + "\\n")
    return f"saved {title}"


TOOLS = [write_note]
'''


@pytest.fixture(autouse=True)
def chromium() -> None:
    require_chromium()


def _environment(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "DEEPSEEK_API_KEY"}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def _open(context: Any, url: str) -> Any:
    page = context.new_page()
    response = page.goto(url + "/")
    assert response.status == 200
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "'unsafe-inline'" not in policy
    page.evaluate(WATCHER)
    return page


def _ask(page: Any, text: str) -> None:
    page.fill("#prompt", text)
    page.click("#send")


def test_the_demo_streams_an_answer_and_a_tool_card(tmp_path: Path) -> None:
    with (
        Process(["serve", "--port", "0"], cwd=tmp_path, env=_environment()) as proxy,
        chromium_context(tmp_path) as context,
    ):
        page = _open(context, proxy.url)
        page.wait_for_selector(f"#model option[value='{MODEL}']", state="attached")
        _ask(page, "What's the weather in Paris?")
        page.wait_for_selector("article.assistant[data-finished]", timeout=30000)
        page.screenshot(path=str(tmp_path / "playground-demo.png"), full_page=True)
        seen = page.evaluate("window.seen")
        turn = page.locator("article.assistant")
        assert turn.get_attribute("data-finished") == "stop"
        assert turn.locator(".error").count() == 0
        # the answer, streamed: the page showed it growing piece by piece
        assert turn.locator(".content").all_text_contents() == [DEMO_ANSWER]
        growing = [text for text in seen["contents"] if text]
        assert len(growing) >= 4 and growing[-1] == DEMO_ANSWER  # reads may coalesce
        assert all(DEMO_ANSWER.startswith(text) for text in growing)
        # reasoning of both rounds, in collapsible blocks (closed until opened)
        reasoning = turn.locator("details.reasoning")
        assert "I will call get_weather" in reasoning.first.text_content()
        assert "sunny and 24 °C" in reasoning.last.text_content()
        assert reasoning.first.get_attribute("open") is None
        # the tool card: arguments filled in, then the call ran and says how long it took
        card = turn.locator("section.tool")
        assert card.count() == 1
        assert card.locator(".tool-name").text_content() == "get_weather"
        assert json.loads(card.locator("pre.arguments").text_content()) == {"city": "Paris"}
        assert card.get_attribute("data-status") == "ok"
        assert card.locator(".tool-duration").text_content().endswith(" ms")
        call_id = card.get_attribute("data-call-id")
        assert [status for status in seen["statuses"] if status.startswith(call_id)][-2:] == [
            f"{call_id} started",
            f"{call_id} ok",
        ]
        # usage summed over both rounds: 120 + 170 prompt, 24 + 30 completion
        usage = turn.locator(".usage.total").text_content()
        assert "prompt 290" in usage and "completion 54" in usage and "total 344" in usage
        # and per round, as each ended: 120 + 24, then 170 + 30
        rounds = turn.locator(".round-usage").all_text_contents()
        assert [line.split(":")[0] for line in rounds] == ["Round 1", "Round 2"]
        assert "prompt 120" in rounds[0] and "prompt 170" in rounds[1]
        assert seen["violations"] == []


def _approval_cassette(path: Path) -> None:
    first = tool_call(
        "write_note", json.dumps(NOTE), call_id="call_note", piece=6, text="I will save it."
    )
    second = answer("Saved |the |note |for |you.")
    two_rounds(path, first, second, source=__name__, step_ms=25.0)


def test_approve_runs_the_tool_once_and_the_answer_streams(tmp_path: Path) -> None:
    cassette = tmp_path / "approval.cassette.json"
    _approval_cassette(cassette)
    (tmp_path / "playground_tools.py").write_text(textwrap.dedent(TOOLS_MODULE))
    env = _environment(PLAYGROUND_UPSTREAM_KEY="sk-upstream", PLAYGROUND_CLIENT_KEYS=CLIENT_KEY)
    replay_arguments = ["replay", str(cassette), "--port", "0", "--match", "turn"]
    replay_arguments += ["--timing", "recorded"]
    with Process(replay_arguments, cwd=tmp_path, env=env) as replay:
        serve_arguments = [
            "serve",
            *("--upstream", f"{replay.url}/v1", "--api-key-env", "PLAYGROUND_UPSTREAM_KEY"),
            *("--client-keys-env", "PLAYGROUND_CLIENT_KEYS"),
            *("--tools", "playground_tools:TOOLS", "--port", "0"),
        ]
        with (
            Process(serve_arguments, cwd=tmp_path, env=env) as proxy,
            chromium_context(tmp_path) as context,
        ):
            page = _open(context, proxy.url)
            # without the key the model list is refused; with it, it fills the select
            page.wait_for_function("document.getElementById('status').textContent.includes('key')")
            page.fill("#key", CLIENT_KEY)
            page.press("#key", "Tab")
            page.wait_for_selector(f"#model option[value='{MODEL}']", state="attached")
            _ask(page, "Save a note.")
            page.wait_for_selector("article.assistant[data-finished]", timeout=30000)
            question = page.locator("article.assistant").first
            assert question.get_attribute("data-finished") == "stop"
            card = question.locator("section.tool")
            assert card.get_attribute("data-status") == "awaiting_approval"
            assert json.loads(card.locator("pre.arguments").text_content()) == NOTE
            # the arguments filled in as they streamed, each state shown as far as it parsed
            filling = [text for text in page.evaluate("window.seen.arguments") if text]
            assert len(filling) >= 2 and filling[0].startswith("{") and filling[0].endswith("…")
            shown = question.locator(".content").all_text_contents()
            assert shown[0] == "I will save it." and "needs your approval" in shown[1]
            assert card.locator("b").count() == 0  # the arguments' markup stays text
            approve = card.get_by_role("button", name="Approve")
            assert approve.is_enabled()
            assert not (tmp_path / "tool_runs.log").exists()
            page.screenshot(path=str(tmp_path / "playground-approval.png"), full_page=True)

            approve.click()
            page.wait_for_selector("article.assistant:nth-of-type(4)[data-finished]")
            answer = page.locator("article.assistant").nth(1)
            page.screenshot(path=str(tmp_path / "playground-approved.png"), full_page=True)
            seen = page.evaluate("window.seen")
            assert answer.get_attribute("data-finished") == "stop"
            assert answer.locator(".content").text_content() == "Saved the note for you."
            assert len([text for text in seen["contents"] if text]) >= 2  # it streamed
            assert page.locator("article.user").all_text_contents()[-1] == "youyes"
            assert card.locator(".answer").text_content() == "approved"
            assert not approve.is_enabled()
            assert seen["violations"] == []
        assert (tmp_path / "tool_runs.log").read_text().splitlines() == ["groceries"]
        sent = [item["body"] for item in httpx.get(f"{replay.url}/_streamproxy/requests").json()]
        roles = [message["role"] for message in sent[-1]["messages"]]
        assert roles == ["user", "assistant", "tool"]
        assert sent[-1]["messages"][2]["content"] == "saved groceries"


def test_an_error_frame_ends_the_turn_and_shows(tmp_path: Path) -> None:
    cassette = tmp_path / "error.cassette.json"
    pieces = [
        frame({"role": "assistant", "content": ""}),
        frame({"content": "Partial "}),
        b'data: {"error": {"message": "the model is overloaded", "type": "overloaded"}}\n\n',
    ]
    one_answer(cassette, pieces, step_ms=25.0)  # its model fills the page's list
    env = _environment(PLAYGROUND_UPSTREAM_KEY="sk-upstream")
    with Process(["replay", str(cassette), "--port", "0"], cwd=tmp_path, env=env) as replay:
        serve_arguments = ["serve", "--upstream", f"{replay.url}/v1", "--port", "0"]
        serve_arguments += ["--api-key-env", "PLAYGROUND_UPSTREAM_KEY", "--retries", "0"]
        with (
            Process(serve_arguments, cwd=tmp_path, env=env) as proxy,
            chromium_context(tmp_path) as context,
        ):
            page = _open(context, proxy.url)
            page.wait_for_selector(f"#model option[value='{MODEL}']", state="attached")
            _ask(page, "Hello?")
            page.wait_for_selector("article.assistant[data-finished]", timeout=30000)
            page.screenshot(path=str(tmp_path / "playground-error.png"), full_page=True)
            turn = page.locator("article.assistant")
            assert turn.get_attribute("data-finished") == "error"
            assert turn.locator(".content").text_content() == "Partial "
            alert = turn.get_by_role("alert").text_content()
            assert alert.startswith("Error: ") and "the model is overloaded" in alert
            assert page.locator("#send").is_enabled()
