"""Importing raw SSE bodies, VCR YAML cassettes and JSON-lines fixtures."""

from __future__ import annotations

import base64
import gzip
import json

import pytest

from streamproxy.cassette import load, read_cassette
from streamproxy.cassette.importers import detect_format, split_events
from streamproxy.cli import main
from streamproxy.errors import CassetteError

BODY = (
    b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
    b": keep-alive\n\n"
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)
KEY = "sk-ant-api03-verysecretvalue1234"


@pytest.mark.parametrize(
    "body",
    [BODY, BODY.replace(b"\n", b"\r\n"), BODY + b"data: tail-without-blank-line"],
    ids=["lf", "crlf", "unterminated"],
)
def test_split_events_cuts_after_each_blank_line_and_loses_nothing(body: bytes) -> None:
    pieces = split_events(body)
    assert b"".join(pieces) == body
    assert len(pieces) == 4 + body.endswith(b"line")


def test_a_raw_sse_body_answers_any_request(tmp_path) -> None:
    path = tmp_path / "plain.sse"
    path.write_bytes(BODY)
    cassette = read_cassette(path)
    (interaction,) = cassette.interactions
    assert interaction.request is None
    assert interaction.response.body == BODY
    assert [c.data for c in interaction.response.chunks] == split_events(BODY)
    assert cassette.source == "imported from the raw SSE body plain.sse"


def test_a_raw_sse_body_with_corpus_metadata_gets_its_request(tmp_path) -> None:
    (tmp_path / "x.sse").write_bytes(BODY)
    meta = {
        "request": {"model": "deepseek-chat", "messages": []},
        "endpoint": "https://api.deepseek.com/beta/chat/completions",
        "response_status": 200,
        "response_content_type": "text/event-stream; charset=utf-8",
        "source_repo": "o/r",
        "source_path": "p.yaml#interactions[0]",
        "source_commit": "abc",
        "license": "MIT",
    }
    (tmp_path / "x.json").write_text(json.dumps(meta))
    (interaction,) = read_cassette(tmp_path / "x.sse").interactions
    assert interaction.request is not None
    assert interaction.request.path == "/beta/chat/completions"
    assert interaction.request.body == meta["request"]
    assert interaction.response.headers["content-type"] == "text/event-stream; charset=utf-8"


VCRPY_YAML = f"""
interactions:
- request:
    body: '{{"model": "gpt-4o", "stream": true, "messages": []}}'
    headers:
      Authorization:
      - Bearer {KEY}
      Content-Type:
      - application/json
    method: POST
    uri: https://api.openai.com/v1/chat/completions?api_key={KEY}
  response:
    body:
      string: !!binary |
        {base64.b64encode(gzip.compress(BODY)).decode()}
    headers:
      Content-Encoding:
      - gzip
      Content-Type:
      - text/event-stream; charset=utf-8
      Set-Cookie:
      - __cf_bm=abcdefghijklmnop; path=/
    status:
      code: 200
      message: OK
version: 1
"""

RUBY_VCR_YAML = f"""---
http_interactions:
- request:
    method: post
    uri: https://api.deepseek.com/chat/completions
    body:
      encoding: UTF-8
      string: '{{"model":"deepseek-chat","stream":true}}'
    headers:
      Authorization:
      - Bearer {KEY}
  response:
    status:
      code: 200
      message: OK
    headers:
      Content-Type:
      - text/event-stream; charset=utf-8
    body:
      encoding: UTF-8
      string: {json.dumps(BODY.decode())}
  recorded_at: Mon, 01 Jan 2026 00:00:00 GMT
recorded_with: VCR 6.2.0
"""


@pytest.mark.parametrize("text", [VCRPY_YAML, RUBY_VCR_YAML], ids=["vcrpy", "ruby-vcr"])
def test_a_vcr_cassette_is_imported_decoded_and_redacted(tmp_path, text: str) -> None:
    path = tmp_path / "cassette.yaml"
    path.write_text(text)
    cassette = read_cassette(path)
    (interaction,) = cassette.interactions
    assert interaction.response.body == BODY
    assert [c.data for c in interaction.response.chunks] == split_events(BODY)
    assert "content-encoding" not in interaction.response.headers
    assert interaction.request is not None
    assert interaction.request.method == "POST"
    assert interaction.request.headers["authorization"] == "<redacted>"
    assert interaction.request.body["stream"] is True
    assert "set-cookie" not in interaction.response.headers or (
        interaction.response.headers["set-cookie"] == "<redacted>"
    )
    out = tmp_path / "out.cassette.json"
    assert main(["cassette", "import", str(path), "-o", str(out)]) == 0
    assert KEY not in out.read_text()
    assert load(out) == cassette


def test_vcrpy_query_keys_are_redacted(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(VCRPY_YAML)
    (interaction,) = read_cassette(path).interactions
    assert interaction.request is not None
    assert interaction.request.query == "api_key=<redacted>"


@pytest.mark.parametrize(
    ("lines", "framed"),
    [
        pytest.param(
            '{"choices":[{"delta":{"content":"a"}}]}\n\n{"choices":[]}\n',
            b'data: {"choices":[{"delta":{"content":"a"}}]}\n\ndata: {"choices":[]}\n\n'
            b"data: [DONE]\n\n",
            id="openai",
        ),
        pytest.param(
            '{"type":"message_start","message":{}}\n{"type":"message_stop"}\n',
            b'event: message_start\ndata: {"type":"message_start","message":{}}\n\n'
            b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
            id="anthropic",
        ),
    ],
)
def test_a_json_lines_fixture_is_framed_as_sse(tmp_path, lines: str, framed: bytes) -> None:
    path = tmp_path / "x.chunks.txt"
    path.write_text(lines)
    (interaction,) = read_cassette(path).interactions
    assert interaction.response.body == framed


def test_a_directory_merges_every_recording_in_name_order(tmp_path) -> None:
    (tmp_path / "b.sse").write_bytes(b"data: b\n\n")
    (tmp_path / "a.sse").write_bytes(b"data: a\n\n")
    (tmp_path / "notes.md").write_text("ignored")
    cassette = read_cassette(tmp_path)
    assert [i.response.body for i in cassette.interactions] == [b"data: a\n\n", b"data: b\n\n"]


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("x.bin", b"\x00\x01binary", "not a cassette, SSE body, VCR YAML or JSON lines"),
        ("x.yaml", b"interactions: [unclosed", "not valid YAML"),
        ("x.yaml", b"interactions: 3\n", "no 'interactions' list"),
        ("x.yaml", b"interactions:\n- request: {}\n", "interaction 0 is malformed"),
        ("x.jsonl", b'{"a": 1}\n{broken\n', "line 2 of the JSON-lines fixture is not JSON"),
    ],
)
def test_unreadable_sources_get_a_clear_error(
    tmp_path, name: str, data: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(CassetteError, match=message):
        read_cassette(path)
    assert main(["cassette", "import", str(path), "-o", str(tmp_path / "o.cassette.json")]) == 2


def test_an_empty_directory_is_an_error(tmp_path) -> None:
    with pytest.raises(CassetteError, match="no cassettes or recordings"):
        read_cassette(tmp_path)


def test_detect_format_prefers_content() -> None:
    assert detect_format(b'{"streamproxy_cassette": 1}', "x.json") == "cassette"
    assert detect_format(b"data: x\n\n", "x.txt") == "sse"
    assert detect_format(b'{"a": 1}\n', "x.txt") == "json-lines"
