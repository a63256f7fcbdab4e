"""Choosing which recorded interaction answers a request.

The default, :func:`match_request`, wants the same method, the same path (a leading ``/v1`` and a
trailing ``/`` ignored, so ``/v1/chat/completions`` matches a DeepSeek ``/chat/completions``) and
the same body once normalised (JSON compared as values, so key order and whitespace do not
matter). An interaction recorded with no request (a bare ``.sse`` body) matches anything, and so
does the only interaction of a one-interaction cassette.

:func:`match_turn` ignores the text of the conversation and matches on its shape: the roles of
the messages after the last user message. It lets a demo answer whatever the user typed, with
round 1 for the first request and round 2 once a tool result follows.

:func:`match_messages` matches on the conversation alone (roles, texts, reasoning, tool calls and
results) and ignores every other field, for a cassette that answers a proxy which adds its own
``tools`` and ``stream_options`` to what the client sent.

A matcher is any callable ``(request, interactions) -> Interaction | None``. The
:class:`Player` hands it the interactions in play order (those not played yet, in recorded order,
then those already played, least recently played first), so returning the first acceptable one
plays repeats in recorded order. ``None`` means "no match": the player raises
``CassetteError`` naming the nearest interaction.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import orjson

from streamproxy.cassette.format import Cassette, Interaction, RecordedRequest
from streamproxy.errors import CassetteError

Matcher = Callable[[RecordedRequest, Sequence[Interaction]], Interaction | None]


def normalise_path(path: str) -> str:
    """The path without its query, trailing ``/`` and a leading ``/v1`` segment."""
    path = path.split("?", 1)[0].rstrip("/") or "/"
    if path == "/v1" or path.startswith("/v1/"):
        path = path[3:] or "/"
    return path


def normalise_body(request: RecordedRequest) -> bytes:
    """The body as canonical bytes: sorted-key JSON, or the raw bytes when it is not JSON."""
    if request.raw_body is not None:
        return request.raw_body
    return orjson.dumps(request.body, option=orjson.OPT_SORT_KEYS)


def is_same_request(recorded: RecordedRequest, request: RecordedRequest) -> bool:
    """Same method, normalised path and normalised body."""
    return (
        recorded.method == request.method
        and normalise_path(recorded.path) == normalise_path(request.path)
        and normalise_body(recorded) == normalise_body(request)
    )


def match_request(
    request: RecordedRequest, interactions: Sequence[Interaction]
) -> Interaction | None:
    """The default matcher: method, path and normalised body (see the module docstring).

    An exact match wins over an interaction recorded without a request.
    """
    for interaction in interactions:
        if interaction.request is not None and is_same_request(interaction.request, request):
            return interaction
    return next((item for item in interactions if item.request is None), None)


def conversation_turn(body: object) -> tuple[str, ...]:
    """The roles of the messages after the last user message (``()`` for a first request)."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        return ()
    roles = [message.get("role") if isinstance(message, dict) else None for message in messages]
    last_user = max((i for i, role in enumerate(roles) if role == "user"), default=-1)
    return tuple(str(role) for role in roles[last_user + 1 :])


def match_turn(request: RecordedRequest, interactions: Sequence[Interaction]) -> Interaction | None:
    """Match on method, path and the conversation's turn shape, ignoring the message text."""
    turn = conversation_turn(request.body)
    return _first_with(
        request, interactions, lambda recorded: conversation_turn(recorded.body) == turn
    )


def conversation(body: object) -> bytes | None:
    """The conversation in a request body, as canonical bytes (None when there is none).

    Per message: its role, text (``null`` and absent count as ``""``), reasoning, the call it
    answers, and its tool calls as (id, name, arguments). Every other field is left out.
    """
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        return None
    shape: list[object] = []
    for message in messages:
        if not isinstance(message, dict):
            shape.append(message)
            continue
        calls = []
        for call in message.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, dict) else None
            function = function if isinstance(function, dict) else {}
            identifier = call.get("id") if isinstance(call, dict) else None
            calls.append([identifier, function.get("name"), function.get("arguments")])
        shape.append(
            [
                message.get("role"),
                message.get("content") or "",
                message.get("reasoning_content") or "",
                message.get("tool_call_id"),
                calls,
            ]
        )
    return orjson.dumps(shape, option=orjson.OPT_SORT_KEYS)


def match_messages(
    request: RecordedRequest, interactions: Sequence[Interaction]
) -> Interaction | None:
    """Match on method, path and the conversation only (see :func:`conversation`).

    Every other body field (``model``, ``tools``, ``stream_options``...) is ignored, so a
    cassette written for the conversation answers a proxy that adds its own tools and options,
    while a wrong tool result or a changed argument still finds no match.
    """
    wanted = conversation(request.body)
    return _first_with(
        request, interactions, lambda recorded: _recorded_conversation(recorded) == wanted
    )


def _first_with(
    request: RecordedRequest,
    interactions: Sequence[Interaction],
    is_same_body: Callable[[RecordedRequest], bool],
) -> Interaction | None:
    """The first interaction recorded without a request, or with the same method, path and body."""
    for interaction in interactions:
        recorded = interaction.request
        if recorded is None:
            return interaction
        if (
            recorded.method == request.method
            and normalise_path(recorded.path) == normalise_path(request.path)
            and is_same_body(recorded)
        ):
            return interaction
    return None


# A recorded request's conversation, computed once (a cassette of a thousand interactions is
# scanned on every request). Keyed by identity, checked against the object itself, bounded.
_RECORDED: dict[int, tuple[RecordedRequest, bytes | None]] = {}
_MAX_RECORDED = 100_000


def _recorded_conversation(recorded: RecordedRequest) -> bytes | None:
    entry = _RECORDED.get(id(recorded))
    if entry is not None and entry[0] is recorded:
        return entry[1]
    if len(_RECORDED) >= _MAX_RECORDED:
        _RECORDED.clear()
    key = conversation(recorded.body)
    _RECORDED[id(recorded)] = (recorded, key)
    return key


MATCHERS: dict[str, Matcher] = {
    "request": match_request,
    "turn": match_turn,
    "messages": match_messages,
}


class Player:
    """Hands out a cassette's interactions to requests, keeping the play order; thread-safe."""

    def __init__(
        self, cassette: Cassette, *, matcher: Matcher | None = None, is_strict: bool = False
    ) -> None:
        self.cassette = cassette
        self.matcher = matcher or match_request
        self.is_strict = is_strict
        """When true, a one-interaction cassette is matched like any other (vcrpy-style)."""
        self._last_played = [-1] * len(cassette.interactions)
        self._plays = 0
        self._lock = threading.Lock()

    def select(self, request: RecordedRequest) -> Interaction:
        """The interaction that answers ``request``.

        Raises:
            CassetteError: nothing matches; the message names the nearest interaction.
        """
        interactions = self.cassette.interactions
        with self._lock:
            self._last_played.extend([-1] * (len(interactions) - len(self._last_played)))
            if len(interactions) == 1 and not self.is_strict:
                chosen: Interaction | None = interactions[0]
            else:
                order = sorted(range(len(interactions)), key=lambda i: (self._last_played[i], i))
                chosen = self.matcher(request, [interactions[i] for i in order])
            if chosen is None:
                raise CassetteError(describe_mismatch(request, interactions))
            index = next(i for i, item in enumerate(interactions) if item is chosen)
            self._last_played[index] = self._plays
            self._plays += 1
            return chosen


def describe_mismatch(request: RecordedRequest, interactions: Sequence[Interaction]) -> str:
    """A message naming the recorded interaction nearest to ``request`` and how it differs."""
    best: tuple[int, int, str] | None = None
    for index, interaction in enumerate(interactions):
        recorded = interaction.request
        if recorded is None:
            continue
        differences: list[str] = []
        if recorded.method != request.method:
            differences.append(f"method {recorded.method} != {request.method}")
        if normalise_path(recorded.path) != normalise_path(request.path):
            differences.append(f"path {recorded.path} != {request.path}")
        body_differences = _json_differences(
            recorded.body if recorded.raw_body is None else recorded.raw_body,
            request.body if request.raw_body is None else request.raw_body,
            "body",
        )
        score = 1000 * len(differences) + len(body_differences)
        differences.extend(body_differences[:1])
        if best is None or score < best[0]:
            best = (score, index, "; ".join(differences) or "already played")
    head = f"no recorded interaction matches {request.method} {request.path}"
    if not interactions:
        return f"{head}: the cassette is empty"
    if best is None:
        return head
    return f"{head}; nearest is interaction {best[1]}: {best[2]}"


def _json_differences(recorded: object, actual: object, where: str) -> list[str]:
    """Every leaf where two JSON values differ, as ``where: recorded != actual`` lines."""
    if isinstance(recorded, dict) and isinstance(actual, dict):
        out: list[str] = []
        for key in sorted(recorded.keys() | actual.keys(), key=str):
            if key not in actual:
                out.append(f"{where}.{key} missing from the request")
            elif key not in recorded:
                out.append(f"{where}.{key} not in the recording")
            else:
                out.extend(_json_differences(recorded[key], actual[key], f"{where}.{key}"))
        return out
    if isinstance(recorded, list) and isinstance(actual, list):
        out = []
        for i, (left, right) in enumerate(zip(recorded, actual, strict=False)):
            out.extend(_json_differences(left, right, f"{where}[{i}]"))
        if len(recorded) != len(actual):
            out.append(f"{where} has {len(actual)} items, the recording {len(recorded)}")
        return out
    if recorded == actual and type(recorded) is type(actual):
        return []
    return [f"{where}: recorded {_short(recorded)} != {_short(actual)}"]


def _short(value: object) -> str:
    text = orjson.dumps(value).decode() if not isinstance(value, bytes) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
