"""Node clients of a real ``streamproxy serve`` (the offline demo): the openai npm SDK (chat
completions and Responses) and the Vercel AI SDK (its default ``openai("...")`` provider speaks
the Responses API; ``openai.chat("...")`` chat completions). ``.ci/run`` installs the packages
(``npm ci`` in ``tests/e2e/node``); without them these tests skip, except under ``CI=true``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.processes import Process

pytestmark = pytest.mark.e2e

NODE = Path(__file__).parent / "node"
INSTALL = f"cd {NODE} && npm ci"
DEMO_ANSWER = (
    "It is sunny in Paris right now, at 24 °C. (The offline demo: a recorded answer, not a model.)"
)


@pytest.fixture(scope="module")
def node() -> str:
    path = shutil.which("node")
    missing = None
    if path is None:
        missing = "node is absent (apt-get install nodejs)"
    elif not (NODE / "node_modules" / "ai").is_dir():
        missing = f"the node clients are not installed ({INSTALL})"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    assert path is not None
    return path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {key: value for key, value in os.environ.items() if key != "DEEPSEEK_API_KEY"}
    directory = tmp_path_factory.mktemp("node_demo")
    with Process(["serve", "--port", "0"], cwd=directory, env=env) as process:
        yield f"{process.url}/v1"


def run(node: str, kind: str, url: str) -> dict[str, object]:
    result = subprocess.run(
        [node, str(NODE / "clients.mjs"), kind, url], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout.splitlines()[-1]))


def test_the_ai_sdk_default_provider_speaks_responses(node: str, demo: str) -> None:
    result = run(node, "ai-sdk", demo)
    assert result["text"] == DEMO_ANSWER
    assert result["finishReason"] == "stop"
    usage = result["usage"]
    assert isinstance(usage, dict) and usage["outputTokens"] > 0


def test_the_ai_sdk_chat_provider(node: str, demo: str) -> None:
    result = run(node, "ai-sdk-chat", demo)
    assert result["text"] == DEMO_ANSWER and result["finishReason"] == "stop"


def test_the_openai_npm_sdk_chat_completions(node: str, demo: str) -> None:
    assert run(node, "openai", demo) == {"text": DEMO_ANSWER, "finishReasons": ["stop"]}


def test_the_openai_npm_sdk_responses(node: str, demo: str) -> None:
    result = run(node, "openai-responses", demo)
    assert result["text"] == DEMO_ANSWER and result["status"] == "completed"
    types = result["types"]
    assert isinstance(types, list) and types[-1] == "response.completed"
