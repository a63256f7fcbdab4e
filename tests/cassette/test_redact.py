"""No credential reaches a cassette, wherever the upstream or client puts it."""

from __future__ import annotations

import httpx2
import pytest

from streamproxy.cassette import RecordTransport, dumps
from streamproxy.cassette.redact import REDACTED, is_secret_name, redact_headers, redact_query

KEY = "sk-proj-Zq81mN2vX7cR4tY6uI9oP0aS3dF5gH"
COOKIE_VALUE = "session=abcdef0123456789"


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "proxy-authorization",
        "api-key",
        "X-Api-Key",
        "x-goog-api-key",
        "Cookie",
        "set-cookie",
        "x-auth-token",
        "x-amz-security-token",
        "openai-secret",
        "x-session-id",
    ],
)
def test_credential_header_names_are_secret(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    ["content-type", "x-ratelimit-remaining-tokens", "openai-model", "x-request-id", "accept"],
)
def test_ordinary_header_names_are_kept(name: str) -> None:
    assert not is_secret_name(name)


def test_redact_headers_and_query_remember_the_values() -> None:
    secrets: set[str] = set()
    headers = redact_headers([("Authorization", f"Bearer {KEY}"), ("Accept", "*/*")], secrets)
    assert headers == {"authorization": REDACTED, "accept": "*/*"}
    assert redact_query(f"api-version=1&key={KEY}x&api_key=zzzzzzzzzz", secrets) == (
        "api-version=1&key=<redacted>&api_key=<redacted>"
    )
    assert {KEY, f"{KEY}x", "zzzzzzzzzz"} <= secrets


def test_no_key_reaches_a_cassette_even_when_the_upstream_echoes_it() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        assert request.headers["authorization"] == f"Bearer {KEY}"  # the key does go upstream
        echo = f'data: {{"error": {{"message": "bad key {KEY[:3]}...", "key": "{KEY}"}}}}\n\n'
        return httpx2.Response(
            200,
            headers=[
                ("content-type", "text/event-stream"),
                ("set-cookie", COOKIE_VALUE),
                ("x-echo", f"Bearer {KEY}"),
            ],
            content=iter([echo[:40].encode(), echo[40:].encode()]),
        )

    recorder = RecordTransport(httpx2.MockTransport(handler))
    with httpx2.Client(transport=recorder) as client:
        client.post(
            f"https://api.example.com/v1/chat/completions?key={KEY}&api-version=2",
            headers={
                "authorization": f"Bearer {KEY}",
                "api-key": KEY,
                "x-api-key": KEY,
                "cookie": COOKIE_VALUE,
            },
            json={"model": "m", "messages": [{"role": "user", "content": f"my key is {KEY}"}]},
        )
    text = dumps(recorder.cassette)
    assert KEY not in text
    assert KEY[5:25] not in text  # no fragment either
    assert COOKIE_VALUE not in text
    (interaction,) = recorder.cassette.interactions
    assert interaction.request is not None
    assert interaction.request.query == "key=<redacted>&api-version=2"
    for name in ("authorization", "api-key", "x-api-key", "cookie"):
        assert interaction.request.headers[name] == REDACTED
    assert interaction.response.headers["set-cookie"] == REDACTED
    assert interaction.request.body["messages"][0]["content"] == "my key is <redacted>"
    assert b'"key": "<redacted>"' in interaction.response.body


@pytest.mark.parametrize("split", [1, 10, len(KEY) - 1], ids=lambda n: f"split-{n}")
def test_a_key_split_across_chunks_is_scrubbed_and_other_boundaries_kept(split: int) -> None:
    from streamproxy.cassette.format import Chunk
    from streamproxy.cassette.redact import scrub_chunks

    body = f'data: {{"echo": "{KEY}"}}\n\n'.encode()
    at = body.index(KEY.encode()) + split
    chunks = [Chunk(0, b"data: 1\n\n"), Chunk(1, body[:at]), Chunk(2, body[at:]), Chunk(3, b"x")]
    scrubbed = scrub_chunks(chunks, {KEY})
    assert b"".join(c.data for c in scrubbed) == b'data: 1\n\ndata: {"echo": "<redacted>"}\n\nx'
    assert scrubbed[0] == chunks[0] and scrubbed[-1] == chunks[-1]
    assert scrubbed[1].data.endswith(b"<redacted>")
