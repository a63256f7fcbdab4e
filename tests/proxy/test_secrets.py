"""The upstream key and the client keys never reach a client or a log line, whatever the
upstream echoes and however: raw, JSON-escaped, URL-encoded, split across reads or across
deltas, cut at any size, in an error body, an in-band error event, a garbage line or a non-JSON
``data:`` line, streaming and not.

The checks here are independent of ``streamproxy.redaction``: every JSON value the client gets is
decoded and its strings searched for the key, raw and URL-decoded, and the raw bytes too.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from urllib.parse import quote, unquote_plus

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamproxy.config import Config
from streamproxy.proxy import create_app

from .helpers import MODEL, ScriptedUpstream, chunk, sse

pytestmark = pytest.mark.anyio

UPSTREAM_KEY = "sk-live-9f8e7d6c5b4a39281706f5e4"
CLIENT_KEY = "client-key-0123456789abcdef"
# A prefix this long names the key well enough to be a leak (the first characters, "sk-", are
# public; a cut may leave a few more).
LEAK_PREFIX = 12


def json_escaped(text: str, mask: list[bool]) -> str:
    """``text`` as a JSON string body, with the characters under ``mask`` as ``\\uXXXX``."""
    return "".join(
        f"\\u{ord(c):04x}" if escape else c for c, escape in zip(text, mask, strict=False)
    )


def encoded(form: str, mask: list[bool]) -> str:
    """The key as the upstream echoes it, as it would appear inside a JSON string."""
    if form == "raw":
        return UPSTREAM_KEY
    if form == "json":
        return json_escaped(UPSTREAM_KEY, mask + [True] * len(UPSTREAM_KEY))
    return quote(UPSTREAM_KEY, safe="")  # url


def strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def assert_no_secret(raw: bytes) -> None:
    for secret in (UPSTREAM_KEY, CLIENT_KEY):
        assert secret.encode() not in raw
        assert quote(secret, safe="").encode() not in raw
    texts: list[str] = [raw.decode(errors="replace")]
    for line in raw.decode(errors="replace").splitlines():
        data = line.removeprefix("data: ")
        try:
            texts.extend(strings(json.loads(data)))
        except ValueError:
            continue
    with contextlib.suppress(ValueError):
        texts.extend(strings(json.loads(raw)))
    joined_content = "".join(  # what a client assembles from the deltas
        str(choice.get("delta", {}).get("content") or "")
        for line in raw.decode(errors="replace").splitlines()
        if line.startswith("data: {")
        for choice in json.loads(line[6:]).get("choices", [])
    )
    texts.append(joined_content)
    for text in texts:
        for view in (text, unquote_plus(text)):
            for secret in (UPSTREAM_KEY, CLIENT_KEY):
                assert secret not in view
                assert secret[:LEAK_PREFIX] not in view, view[-200:]


def resplit(frames: list[bytes], sizes: list[int]) -> list[bytes]:
    data = b"".join(frames)
    pieces, position = [], 0
    for size in sizes:
        if position >= len(data):
            break
        pieces.append(data[position : position + size])
        position += size
    if position < len(data):
        pieces.append(data[position:])
    return pieces


def scenario_body(place: str, echoed: str) -> tuple[list[bytes] | httpx2.Response, bool]:
    """The upstream's answer echoing the key at ``place``; whether it is a stream."""
    start = [chunk({"role": "assistant", "content": ""})]
    if place == "content":  # split across two deltas
        half = len(echoed) // 2
        pieces = [chunk({"content": "key: " + echoed[:half]}), chunk({"content": echoed[half:]})]
        return sse([*start, *pieces, chunk({"content": ""}, finish="stop")]), True
    if place == "in_band_error":
        error = {"error": {"message": f"bad key {echoed}", "code": 401}}
        return sse([*start, chunk({"content": "a"}), error]), True
    if place == "garbage_line":
        frames = sse([*start, chunk({"content": "b"})], done=False)
        return [*frames, f"authorization: Bearer {echoed}\n".encode(), *sse([])], True
    if place == "non_json_data":
        frames = sse([*start], done=False)
        return [*frames, f"data: key={echoed} oops\n\n".encode()], True
    if place == "error_body":
        body = '{"error": {"message": "invalid key ' + echoed + '"}}'
        return httpx2.Response(401, content=body.encode()), False
    # error_body_cut: the key straddles the 64 KiB cut of a long error body
    filler = "x" * (64 * 1024 - 10)
    body = '{"error": {"message": "' + filler + echoed + '"}}'
    return httpx2.Response(500, content=body.encode()), False


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    place=st.sampled_from(
        [
            "content",
            "in_band_error",
            "garbage_line",
            "non_json_data",
            "error_body",
            "error_body_cut",
        ]
    ),
    form=st.sampled_from(["raw", "json", "url"]),
    mask=st.lists(st.booleans(), min_size=len(UPSTREAM_KEY), max_size=len(UPSTREAM_KEY)),
    sizes=st.lists(st.integers(1, 40), max_size=30),
    is_streaming=st.booleans(),
)
async def test_no_secret_reaches_a_client_or_a_log(
    place: str,
    form: str,
    mask: list[bool],
    sizes: list[int],
    is_streaming: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if form == "json" and place in ("garbage_line", "non_json_data", "content"):
        form = "raw"  # only JSON text carries JSON escapes; content is already decoded text
    echoed = encoded(form, mask)
    answer, is_stream = scenario_body(place, echoed)
    if is_stream:
        assert isinstance(answer, list)
        answer = resplit(answer, sizes)
    upstream = ScriptedUpstream([answer])
    config = Config(
        upstream_url="http://upstream.test/v1",
        api_key=UPSTREAM_KEY,
        client_keys=frozenset({CLIENT_KEY}),
        retries=0,
        state_url="memory://",
    )
    app = create_app(config, transport=upstream.transport())
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    async with app.router.lifespan_context(app):  # installs the log redaction, as serve does
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://proxy.test") as client:
            response = await client.post(
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                json={
                    "model": MODEL,
                    "stream": is_streaming,
                    "messages": [{"role": "user", "content": "hi"}],
                },
            )
    assert_no_secret(response.content)
    for record in caplog.records:
        line = logging.Formatter().format(record)
        assert UPSTREAM_KEY not in line and CLIENT_KEY not in line
        assert UPSTREAM_KEY[:LEAK_PREFIX] not in line
