"""The replay server's control endpoints check what they are given, and stay off when remote."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2
import orjson
import pytest

from streamproxy.cassette import Faults, Replayer, create_replay_app
from streamproxy.cassette import replay as replay_module
from streamproxy.cassette import server as server_module
from streamproxy.cassette.faults import MAX_HUGE_EVENT
from streamproxy.cassette.replay import PLAN_LIMIT, RECEIVED_LIMIT
from streamproxy.cli import main
from streamproxy.commands.replay import is_loopback

from .conftest import sse_cassette

BODY = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\ndata: [DONE]\n\n'


def _replayer() -> Replayer:
    return Replayer(sse_cassette([BODY]))


async def _call(
    replayer: Replayer, method: str, path: str, *, allow_control: bool = True, **kwargs: Any
) -> httpx2.Response:
    app = create_replay_app(replayer, allow_control=allow_control)
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://replay") as client:
        return await client.request(method, path, **kwargs)


def _post_plan(replayer: Replayer, content: bytes) -> httpx2.Response:
    return asyncio.run(_call(replayer, "POST", "/_streamproxy/plan", content=content))


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"huge_event": 400 * 1024 * 1024}, f"huge_event must be in [128, {MAX_HUGE_EVENT}]"),
        ({"huge_event": "big"}, "huge_event must be an integer, not str"),
        ({"cut_at": True}, "cut_at must be an integer, not bool"),
        ({"cut_at": 1.5}, "cut_at must be an integer, not float"),
        ({"drop_at": -1}, "drop_at must be >= 0, not -1"),
        ({"resplit": 0}, "resplit must be >= 1, not 0"),
        ({"keepalive": "often"}, "keepalive must be a number, not str"),
        ({"keepalive": 2}, "keepalive must be a probability in [0, 1], not 2"),
        ({"stall_seconds": 1e9}, "stall_seconds must be in [0, 3600]"),
        ({"retry_after": -1}, "retry_after must be in [0, 3600]"),
        ({"status": "429"}, "status must be an integer, not str"),
        ({"status": 700}, "status must be an HTTP status, not 700"),
        ({"garbage_size": 10**9}, "garbage_size must be in [1, 1048576]"),
        ({"error_message": 5}, "error_message must be a string, not int"),
        ({"error_message": "x" * 5000}, "error_message must be at most 4096 characters"),
        ({"seed": None}, "seed must be an integer, not null"),
        ({"interaction": True}, "interaction must be an index >= 0, not True"),
        ({"interaction": 5}, "plan names interaction 5; the cassette has 1"),
        ({"nonsense": 1}, "unknown plan fields: nonsense"),
        ("drop", "a plan is a JSON object, not str"),
    ],
)
def test_a_bad_plan_entry_gets_400_with_a_clear_message(entry: object, message: str) -> None:
    replayer = _replayer()
    response = _post_plan(replayer, orjson.dumps([{}, entry]))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert message in error["message"]
    assert not replayer.plan  # nothing added, not even the good first entry


def test_plan_bodies_that_are_not_a_list_of_json_objects_get_400() -> None:
    for content, message in [(b"{", "the plan is not JSON"), (b"{}", "a JSON list of objects")]:
        response = _post_plan(_replayer(), content)
        assert response.status_code == 400
        assert message in response.json()["error"]["message"]


def test_a_plan_body_over_the_limit_gets_413(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "MAX_CONTROL_BODY", 100)
    response = _post_plan(_replayer(), orjson.dumps([{}] * 100))
    assert response.status_code == 413
    assert response.json()["error"]["message"] == "the request body is larger than 100 bytes"


def test_a_replayed_request_body_over_the_limit_gets_413(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "MAX_REQUEST_BODY", 1000)
    replayer = _replayer()
    response = asyncio.run(_call(replayer, "POST", "/chat/completions", content=b"x" * 1001))
    assert response.status_code == 413
    assert not replayer.received


def test_the_waiting_plans_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay_module, "PLAN_LIMIT", 3)
    replayer = _replayer()
    assert _post_plan(replayer, b"[{}, {}]").status_code == 200
    response = _post_plan(replayer, b"[{}, {}]")
    assert response.status_code == 400
    assert "at most 3 plans can wait; 2 are waiting" in response.json()["error"]["message"]
    assert len(replayer.plan) == 2
    assert PLAN_LIMIT == 10_000


def test_received_requests_are_a_ring_of_the_newest() -> None:
    replayer = _replayer()
    assert RECEIVED_LIMIT == 1000

    async def scenario() -> list[object]:
        app = create_replay_app(replayer)
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://r") as client:
            for number in range(RECEIVED_LIMIT + 5):
                await client.post("/chat/completions", json={"n": number, "stream": True})
            response = await client.get("/_streamproxy/requests")
            return response.json()

    seen = asyncio.run(scenario())
    assert len(seen) == RECEIVED_LIMIT
    assert [item["body"]["n"] for item in seen] == list(range(5, RECEIVED_LIMIT + 5))


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/_streamproxy/requests"),
        ("DELETE", "/_streamproxy/requests"),
        ("POST", "/_streamproxy/plan"),
        ("GET", "/_streamproxy/responses"),
    ],
)
def test_control_endpoints_answer_403_when_off(method: str, path: str) -> None:
    replayer = _replayer()
    response = asyncio.run(_call(replayer, method, path, allow_control=False, content=b"[{}]"))
    assert response.status_code == 403
    assert "--allow-remote-control" in response.json()["error"]["message"]
    assert not replayer.plan


def test_replay_still_answers_when_control_is_off() -> None:
    response = asyncio.run(
        _call(_replayer(), "POST", "/chat/completions", allow_control=False, json={"stream": True})
    )
    assert response.status_code == 200
    assert response.content == BODY


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


@pytest.mark.parametrize(
    ("extra", "allowed", "said"),
    [
        ([], False, "control endpoints are off (403); give --allow-remote-control"),
        (["--allow-remote-control"], True, "control endpoints are ON and reachable"),
    ],
)
def test_replay_on_a_remote_host_turns_control_off_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path,
    extra: list[str],
    allowed: bool,
    said: str,
) -> None:
    seen: dict[str, object] = {}

    def fake_create(replayer: Replayer, *, allow_control: bool) -> object:
        seen["allow_control"] = allow_control
        return object()

    def fake_serve(app: object, **options: object) -> None:  # no socket is opened
        seen.update(options)

    monkeypatch.setattr(server_module, "create_replay_app", fake_create)
    monkeypatch.setattr(server_module, "serve", fake_serve)
    source = tmp_path / "body.sse"
    source.write_bytes(BODY)
    assert main(["replay", str(source), "--host", "0.0.0.0", *extra]) == 0
    assert seen["allow_control"] is allowed
    assert seen["host"] == "0.0.0.0"
    assert said in capsys.readouterr().err


def test_replay_on_loopback_keeps_control_on_silently(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    seen: dict[str, object] = {}
    monkeypatch.setattr(
        server_module,
        "create_replay_app",
        lambda replayer, *, allow_control: seen.update(allow_control=allow_control),
    )
    monkeypatch.setattr(server_module, "serve", lambda app, **options: None)
    source = tmp_path / "body.sse"
    source.write_bytes(BODY)
    assert main(["replay", str(source)]) == 0
    assert seen["allow_control"] is True
    assert "control endpoints" not in capsys.readouterr().err


def test_faults_check_types_when_built_in_python() -> None:
    with pytest.raises(ValueError, match="huge_event must be in"):
        Faults(huge_event=MAX_HUGE_EVENT + 1)
    assert Faults(huge_event=MAX_HUGE_EVENT).huge_event == MAX_HUGE_EVENT
