"""The fault options a proxy's fault matrix needs: injected statuses, garbage bytes, a huge event,
and a per-request plan (in process; the real processes are in tests/e2e/test_faults.py)."""

from __future__ import annotations

import asyncio

import httpx2
import orjson
import pytest

from streamproxy.cassette import Faults, Replayer, create_replay_app, plan_delivery
from streamproxy.cassette.faults import huge_event_frame, status_error_body
from streamproxy.cassette.replay import Plan, ReplayTransport
from streamproxy.cli import build_parser
from streamproxy.commands.replay import faults_from_arguments, plans_from_arguments
from streamproxy.core import ChatStream, ContentDelta, StreamEnded
from streamproxy.core.limits import Limits
from streamproxy.errors import CassetteError, LimitExceededError

from .conftest import sse_cassette

BODY = (
    b'data: {"choices":[{"index":0,"delta":{"content":"Hello"}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{"content":" world"}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)
OTHER = b'data: {"choices":[{"index":0,"delta":{"content":"other"}}]}\n\ndata: [DONE]\n\n'


def _chunks() -> list:
    return sse_cassette([BODY]).interactions[0].response.chunks


def test_garbage_at_inserts_seeded_random_bytes_and_the_body_goes_on() -> None:
    at = BODY.index(b"world")
    delivery = plan_delivery(_chunks(), Faults(garbage_at=at, garbage_size=16, seed=3))
    body = delivery.body
    garbage = body[at : at + 16]
    assert body == BODY[:at] + garbage + BODY[at:]
    again = plan_delivery(_chunks(), Faults(garbage_at=at, garbage_size=16, seed=3)).body
    other = plan_delivery(_chunks(), Faults(garbage_at=at, garbage_size=16, seed=4)).body
    assert again == body and other != body


def test_huge_event_adds_one_well_formed_event_of_that_size_after_the_first() -> None:
    frame = huge_event_frame(4096)
    assert len(frame) == 4096
    delivery = plan_delivery(_chunks(), Faults(huge_event=4096))
    first_end = BODY.index(b"\n\n") + 2
    assert delivery.body == BODY[:first_end] + frame + BODY[first_end:]
    # the assembler reads it as content when the limit allows, and refuses it when not
    events = ChatStream().receive_data(delivery.body)
    text = [event.text for event in events if isinstance(event, ContentDelta)]
    assert text == ["Hello", "x" * (4096 - 77), " world"]
    stream = ChatStream(limits=Limits(max_event_size=1024))
    with pytest.raises(LimitExceededError):
        stream.receive_data(delivery.body)
    end = stream.receive_eof()[-1]
    assert isinstance(end, StreamEnded) and not end.is_clean
    assert "exceeds the limit of 1024 bytes" in str(end.reason)


@pytest.mark.parametrize(
    ("field", "value"),
    [("garbage_at", -1), ("garbage_size", 0), ("huge_event", 10), ("status", 99), ("status", 600)],
)
def test_out_of_range_values_are_refused(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=field):
        Faults(**{field: value})


def test_status_answers_an_openai_error_body_with_retry_after() -> None:
    cassette = sse_cassette([BODY])
    client = httpx2.Client(
        transport=ReplayTransport(cassette, faults=Faults(status=429, retry_after=1.5))
    )
    response = client.post("https://replay/v1/chat/completions", json={"stream": True})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1.5"
    assert response.headers["content-type"] == "application/json"
    assert response.json() == orjson.loads(status_error_body(429))
    assert response.json()["error"]["type"] == "rate_limit_error"
    # 200 is a JSON error body under a success status
    ok = ReplayTransport(cassette, faults=Faults(status=200))
    response = httpx2.Client(transport=ok).post("https://replay/chat/completions", json={})
    assert response.status_code == 200 and "error" in response.json()


def test_a_plan_scripts_the_next_requests_then_matching_resumes() -> None:
    transport = ReplayTransport(sse_cassette([BODY, OTHER]), faults=Faults(cut_at=10))
    replayer = transport.replayer
    replayer.add_plan(
        [
            Plan(faults=Faults(status=503)),
            Plan(interaction=1),  # the second interaction, with no faults at all
            Plan(interaction=0, faults=Faults(drop_at=5)),
        ]
    )
    client = httpx2.Client(transport=transport)
    statuses_bodies = []
    for _ in range(4):
        try:
            response = client.post("https://replay/chat/completions", json={"stream": True})
            statuses_bodies.append((response.status_code, response.content))
        except httpx2.RemoteProtocolError:
            statuses_bodies.append((0, b"dropped"))
    assert statuses_bodies == [
        (503, status_error_body(503)),
        (200, OTHER),
        (0, b"dropped"),
        (200, BODY[:10]),  # beyond the plan: matched, with the replayer's own faults
    ]
    assert not replayer.plan


def test_a_plan_naming_a_missing_interaction_is_refused() -> None:
    replayer = Replayer(sse_cassette([BODY]))
    with pytest.raises(CassetteError, match="interaction 3"):
        replayer.add_plan([Plan(), Plan(interaction=3)])
    assert not replayer.plan  # nothing was added


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ([], "JSON object"),
        ({"interaction": -1}, "interaction"),
        ({"bogus": 1}, "unknown plan fields: bogus"),
        ({"status": 1000}, "status"),
    ],
)
def test_bad_plan_entries_are_refused(entry: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Plan.from_json(entry)


def test_the_plan_endpoint_adds_shows_refuses_and_clears() -> None:
    replayer = Replayer(sse_cassette([BODY, OTHER]))
    app = create_replay_app(replayer)

    async def scenario() -> None:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://replay") as client:
            plan = [{"interaction": 1}, {"status": 429, "retry_after": 0}]
            assert (await client.post("/_streamproxy/plan", json=plan)).json() == [
                {"interaction": 1},
                {"interaction": None, "status": 429, "retry_after": 0},
            ]
            bad = await client.post("/_streamproxy/plan", json=[{"interaction": 9}])
            assert bad.status_code == 400
            assert "interaction 9" in bad.json()["error"]["message"]
            assert len((await client.get("/_streamproxy/plan")).json()) == 2
            response = await client.post("/chat/completions", json={"stream": True})
            assert response.content == OTHER
            counts = (await client.get("/_streamproxy/responses")).json()
            assert counts == {"open": 0, "finished": 1, "dropped": 0, "aborted": 0}
            assert (await client.delete("/_streamproxy/plan")).status_code == 204
            assert (await client.get("/_streamproxy/plan")).json() == []
            assert (await client.delete("/_streamproxy/responses")).status_code == 204
            counts = (await client.get("/_streamproxy/responses")).json()
            assert counts["finished"] == 0

    asyncio.run(scenario())


def test_new_fault_flags_map_to_faults_and_plans() -> None:
    args = build_parser().parse_args(
        [
            "replay",
            "x.sse",
            "--garbage-at",
            "12",
            "--garbage-size",
            "5",
            "--huge-event",
            "2048",
            "--status",
            "200",
            "--retry-after",
            "2",
            "--statuses",
            "429,500",
        ]
    )
    assert faults_from_arguments(args) == Faults(
        garbage_at=12, garbage_size=5, huge_event=2048, status=200, retry_after=2.0
    )
    assert plans_from_arguments(args) == [
        Plan(faults=Faults(status=429, retry_after=2.0)),
        Plan(faults=Faults(status=500, retry_after=2.0)),
    ]
    bad = build_parser().parse_args(["replay", "x.sse", "--statuses", "429,soon"])
    with pytest.raises(ValueError, match="'soon' is not a status code"):
        plans_from_arguments(bad)
