"""Choosing the interaction: method, path, normalised body, recorded order, nearest on mismatch."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from streamproxy.cassette import Cassette, Interaction, Player, RecordedRequest, match_turn
from streamproxy.cassette.match import conversation_turn, match_messages, normalise_path
from streamproxy.errors import CassetteError

from .conftest import sse_cassette


def _request(
    body: object, path: str = "/chat/completions", method: str = "POST"
) -> RecordedRequest:
    return RecordedRequest(method=method, path=path, body=body)


BODIES = [{"model": "m", "messages": [{"role": "user", "content": text}]} for text in ("a", "b")]


def _cassette(bodies: list[object]) -> Cassette:
    return sse_cassette(
        [f"data: {i}\n\n".encode() for i in range(len(bodies))], request_bodies=bodies
    )


def _played(player: Player, request: RecordedRequest) -> int:
    return player.cassette.interactions.index(player.select(request))


def test_matches_method_path_and_body_as_json_values() -> None:
    player = Player(_cassette(BODIES))
    assert _played(player, _request(BODIES[1])) == 1
    reordered = {"messages": [{"content": "a", "role": "user"}], "model": "m"}
    assert _played(player, _request(reordered, path="/v1/chat/completions/")) == 0


@pytest.mark.parametrize(
    ("path", "normal"),
    [
        ("/v1/chat/completions", "/chat/completions"),
        ("/chat/completions/", "/chat/completions"),
        ("/v1", "/"),
        ("/v1beta/x", "/v1beta/x"),
        ("/chat/completions?x=1", "/chat/completions"),
    ],
)
def test_normalise_path(path: str, normal: str) -> None:
    assert normalise_path(path) == normal


def test_repeats_are_answered_in_recorded_order_then_cycle() -> None:
    player = Player(_cassette([BODIES[0], BODIES[1], BODIES[0]]))
    assert [_played(player, _request(BODIES[0])) for _ in range(4)] == [0, 2, 0, 2]
    assert _played(player, _request(BODIES[1])) == 1


def test_a_mismatch_names_the_nearest_interaction_and_the_first_difference() -> None:
    player = Player(_cassette(BODIES))
    body = {"model": "m", "messages": [{"role": "user", "content": "b"}], "temperature": 0}
    with pytest.raises(CassetteError) as caught:
        player.select(_request(body))
    assert str(caught.value) == (
        "no recorded interaction matches POST /chat/completions; nearest is interaction 1: "
        "body.temperature not in the recording"
    )
    with pytest.raises(CassetteError, match="nearest is interaction 0: method POST != GET"):
        player.select(_request(BODIES[0], method="GET"))
    with pytest.raises(CassetteError, match=r"path /chat/completions != /embeddings"):
        player.select(_request(BODIES[0], path="/embeddings"))


def test_one_interaction_answers_anything_unless_strict() -> None:
    cassette = _cassette(BODIES[:1])
    assert _played(Player(cassette), _request({"anything": True}, path="/x")) == 0
    with pytest.raises(CassetteError, match="nearest is interaction 0"):
        Player(cassette, is_strict=True).select(_request({"anything": True}))


def test_a_request_less_interaction_is_a_fallback_after_exact_matches() -> None:
    cassette = _cassette(BODIES)
    cassette.interactions.append(sse_cassette([b"data: any\n\n"]).interactions[0])
    player = Player(cassette)
    assert _played(player, _request(BODIES[1])) == 1
    assert _played(player, _request({"other": 1})) == 2


def test_an_empty_cassette_says_so() -> None:
    with pytest.raises(CassetteError, match="the cassette is empty"):
        Player(Cassette()).select(_request({}))


TOOL_ROUND = [
    {"role": "user", "content": "q"},
    {"role": "assistant", "content": "", "tool_calls": []},
    {"role": "tool", "tool_call_id": "1", "content": "r"},
]


@pytest.mark.parametrize(
    ("messages", "turn"),
    [
        ([], ()),
        (TOOL_ROUND[:1], ()),
        (TOOL_ROUND, ("assistant", "tool")),
        ([{"role": "system", "content": "s"}], ("system",)),
    ],
)
def test_conversation_turn(messages: list[object], turn: tuple[str, ...]) -> None:
    assert conversation_turn({"messages": messages}) == turn


def test_match_turn_ignores_the_text_and_picks_the_round() -> None:
    cassette = _cassette([{"messages": TOOL_ROUND[:1]}, {"messages": TOOL_ROUND}])
    player = Player(cassette, matcher=match_turn)
    other_text = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "weather?"},
    ]
    assert _played(player, _request({"messages": other_text})) == 0
    second = [*other_text, *TOOL_ROUND[1:]]
    assert _played(player, _request({"messages": second, "temperature": 1})) == 1


def test_a_custom_matcher_gets_the_interactions_in_play_order() -> None:
    orders: list[list[int]] = []
    cassette = _cassette([BODIES[0], BODIES[1], BODIES[0]])

    def first_unplayed(
        request: RecordedRequest, interactions: Sequence[Interaction]
    ) -> Interaction:
        orders.append([cassette.interactions.index(item) for item in interactions])
        return interactions[0]

    player = Player(cassette, matcher=first_unplayed)
    assert [_played(player, _request({})) for _ in range(4)] == [0, 1, 2, 0]
    assert orders[:2] == [[0, 1, 2], [1, 2, 0]]


def test_match_messages_ignores_other_fields_but_not_the_conversation() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    conversation = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "result 1"},
    ]
    cassette = _cassette([{"model": "m", "messages": conversation[:1]}, {"messages": conversation}])
    player = Player(cassette, matcher=match_messages)
    # a proxy in between adds tools and options, and writes content "" for null: still a match
    sent = [conversation[0], {**conversation[1], "content": ""}, conversation[2]]
    extra = {"model": "other", "tools": [{"type": "function"}], "stream_options": {}}
    assert _played(player, _request({**extra, "messages": sent})) == 1
    assert _played(player, _request({"messages": conversation[:1], "stream": True})) == 0
    wrong_result = [*sent[:2], {**conversation[2], "content": "result 2"}]
    wrong_arguments = [
        sent[0],
        {**sent[1], "tool_calls": [{**call, "function": {"name": "f", "arguments": "{}"}}]},
        sent[2],
    ]
    for messages in (wrong_result, wrong_arguments):
        with pytest.raises(CassetteError):
            player.select(_request({"messages": messages}))
