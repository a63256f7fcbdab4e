"""Hostile cassettes fail fast with a clear CassetteError: bombs, aliases, wrong types, sizes."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import zlib
from collections.abc import AsyncIterator, Iterator

import httpx2
import orjson
import pytest

from streamproxy.cassette import RecordTransport, decoding, dumps, format, loads, read_cassette
from streamproxy.cassette.decoding import ChunkDecoder, decode_base64, decode_body
from streamproxy.cassette.passthrough import create_record_app
from streamproxy.cassette.record import TRUNCATED_HEADER
from streamproxy.errors import CassetteError
from streamproxy.redaction import Redactor

KEY = "sk-live-0123456789abcdefSECRET"
SSE = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\ndata: [DONE]\n\n'


def _bomb(size: int) -> bytes:
    """A gzip body of ``size`` zero bytes: about a thousandth of that compressed."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1024 * 1024)
    parts = [compressor.compress(block) for _ in range(size // len(block))]
    return b"".join(parts) + compressor.flush()


# --- content decoding ---------------------------------------------------------------------------


def test_a_gzip_bomb_stops_at_the_cap() -> None:
    bomb = _bomb(64 * 1024 * 1024)
    assert len(bomb) < 100_000
    with pytest.raises(CassetteError, match="decodes to more than 1048576 bytes"):
        decode_body(bomb, "gzip", limit=1024 * 1024)


@pytest.mark.parametrize(
    ("encoded", "header"),
    [
        (gzip.compress(SSE), "gzip"),
        (gzip.compress(SSE), "x-gzip"),
        (zlib.compress(SSE), "deflate"),
        (zlib.compress(SSE)[2:-4], "deflate"),  # raw deflate, no zlib header
        (gzip.compress(zlib.compress(SSE)), "deflate, gzip"),
        (SSE, "identity"),
    ],
    ids=["gzip", "x-gzip", "zlib", "raw-deflate", "two-layers", "identity"],
)
def test_supported_encodings_decode_whole_and_piece_by_piece(encoded: bytes, header: str) -> None:
    assert decode_body(encoded, header) == SSE
    decoder = ChunkDecoder(header)
    pieces = [decoder.decode(encoded[i : i + 3]) for i in range(0, len(encoded), 3)]
    assert b"".join(pieces) + decoder.flush() == SSE


@pytest.mark.parametrize(
    ("body", "header", "message"),
    [
        (b"not gzip at all", "gzip", "the gzip body is corrupt"),
        (b"\x00\x01", "br", "content-encoding br is not supported"),
        (b"", "zstd, gzip", "content-encoding zstd is not supported"),
    ],
)
def test_bad_encodings_are_refused(body: bytes, header: str, message: str) -> None:
    with pytest.raises(CassetteError, match=message):
        decode_body(body, header)


def test_base64_is_capped_before_it_is_decoded() -> None:
    assert decode_base64(base64.b64encode(b"x" * 30), limit=30) == b"x" * 30
    with pytest.raises(CassetteError, match="longer than 30 bytes"):
        decode_base64(base64.b64encode(b"x" * 40), limit=30)
    with pytest.raises(CassetteError, match="invalid base64 in a body"):
        decode_base64("!!")


def test_a_cassette_chunk_of_huge_base64_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(format, "MAX_BODY_BYTES", 100)
    chunk = base64.b64encode(b"x" * 200).decode()
    text = _cassette([{"t": 0, "base64": chunk}])
    with pytest.raises(CassetteError, match="longer than 100 bytes"):
        loads(text, name="big.cassette.json")


# --- VCR YAML -----------------------------------------------------------------------------------


def _vcr(body: object, headers: object = None, status: object = 200, uri: object = None) -> str:
    interaction = {
        "request": {
            "method": "POST",
            "uri": uri if uri is not None else "https://api.example.com/v1/chat/completions",
            "headers": {"Authorization": [f"Bearer {KEY}"]},
            "body": '{"stream": true}',
        },
        "response": {
            "status": {"code": status, "message": "x"},
            "headers": headers if headers is not None else {},
            "body": body,
        },
    }
    return json.dumps({"interactions": [interaction], "version": 1})  # JSON is YAML


def test_a_vcr_gzip_bomb_fails_fast(tmp_path) -> None:
    assert decoding.MAX_BODY_BYTES < 64 * 1024 * 1024
    body = {"base64_string": base64.b64encode(_bomb(64 * 1024 * 1024)).decode()}
    path = tmp_path / "bomb.yaml"
    path.write_text(_vcr(body, headers={"Content-Encoding": ["gzip"]}))
    with pytest.raises(CassetteError, match=r"bomb\.yaml: interaction 0: .*decodes to more than"):
        read_cassette(path)


def test_a_vcr_gzip_error_body_is_decoded_and_scrubbed(tmp_path) -> None:
    echoed = orjson.dumps({"error": {"message": f"bad key {KEY}"}}).replace(b"s", b"\\u0073", 1)
    body = {"base64_string": base64.b64encode(gzip.compress(echoed)).decode()}
    path = tmp_path / "error.yaml"
    path.write_text(_vcr(body, headers={"Content-Encoding": ["gzip"]}, status=401))
    (interaction,) = read_cassette(path).interactions
    assert interaction.response.status == 401
    assert interaction.response.body == b'{"error":{"me\\u0073sage":"bad key <redacted>"}}'
    assert "content-encoding" not in interaction.response.headers


ALIAS_BOMB = """
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
interactions:
- request: {uri: *g, method: POST}
  response: {status: 200, body: x}
"""


def test_a_yaml_alias_bomb_is_refused(tmp_path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(ALIAS_BOMB)
    with pytest.raises(CassetteError, match=r"laughs\.yaml: YAML alias \*a to a mapping or list"):
        read_cassette(path)


def test_a_scalar_alias_is_accepted(tmp_path) -> None:
    path = tmp_path / "scalar.yaml"
    path.write_text(
        "interactions:\n"
        "- request: {uri: &u 'https://x/chat/completions', method: POST}\n"
        "  response: {status: 200, body: {string: *u}}\n"
    )
    (interaction,) = read_cassette(path).interactions
    assert interaction.response.body == b"https://x/chat/completions"


def test_deeply_nested_yaml_is_refused(tmp_path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("interactions: " + "[" * 5000 + "]" * 5000)
    with pytest.raises(CassetteError, match=r"deep\.yaml: "):
        read_cassette(path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"body": "x", "status": "two hundred"}, "status must be an HTTP status"),
        ({"body": "x", "status": 999}, "status must be an HTTP status"),
        ({"body": "x", "status": [200]}, "status must be an HTTP status"),
        ({"body": "x", "uri": ["a", "b"]}, "request uri must be a string, not list"),
        ({"body": 12}, "a body must be text or bytes, not int"),
        ({"body": "x", "headers": ["a"]}, "headers must be a mapping, not list"),
        ({"body": "x", "headers": {"a": [{"b": 1}]}}, "header 'a' must be text, not dict"),
        ({"body": {"base64_string": 5}}, "base64_string must be a string, not int"),
        ({"body": {"base64_string": "!!"}}, "invalid base64 in a VCR body"),
    ],
)
def test_vcr_fields_of_the_wrong_type_get_a_clear_error(
    tmp_path, kwargs: dict[str, object], message: str
) -> None:
    path = tmp_path / "wrong.yaml"
    path.write_text(_vcr(**kwargs))
    with pytest.raises(CassetteError, match=r"wrong\.yaml: interaction 0") as caught:
        read_cassette(path)
    assert message in str(caught.value)


def test_a_vcr_interaction_that_is_not_a_mapping_is_refused(tmp_path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("interactions:\n- [1, 2]\n")
    with pytest.raises(CassetteError, match="interaction 0 is malformed"):
        read_cassette(path)


# --- .sse metadata ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ([1, 2], "the metadata must be a JSON object"),
        ({"response_status": "abc"}, "status must be an HTTP status"),
        ({"response_status": 1000}, "status must be an HTTP status"),
        ({"response_status": True}, "status must be an HTTP status"),
        ({"response_content_type": 7}, "response_content_type must be a string"),
        ({"request": "hi"}, "'request' must be an object"),
        ({"request": {}, "endpoint": 5}, "endpoint must be a string"),
    ],
)
def test_sse_metadata_of_the_wrong_type_gets_a_clear_error(
    tmp_path, metadata: object, message: str
) -> None:
    (tmp_path / "x.sse").write_bytes(SSE)
    (tmp_path / "x.json").write_text(json.dumps(metadata))
    with pytest.raises(CassetteError, match=r"x\.json: ") as caught:
        read_cassette(tmp_path / "x.sse")
    assert message in str(caught.value)


# --- the cassette format ------------------------------------------------------------------------


def _cassette(chunks: list[dict[str, object]], status: object = 200) -> str:
    response = {"status": status, "chunks": chunks}
    document = {
        "streamproxy_cassette": 1,
        "interactions": [{"request": None, "response": response}],
    }
    return json.dumps(document)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (_cassette([{"t": "0", "text": "a"}]), "chunks.0.t"),
        (_cassette([{"t": True, "text": "a"}]), "chunks.0.t"),
        (_cassette([{"t": 1e300, "text": "a"}]), "chunks.0.t"),
        (_cassette([{"t": 7_200_001, "text": "a"}]), "chunks.0.t"),
        (_cassette([{"t": -0.5, "text": "a"}]), "chunks.0.t"),
        (_cassette([{"t": 0, "text": 5}]), "chunks.0.text"),
        (_cassette([], status="200"), "response.status"),
        (_cassette([], status=200.5), "response.status"),
        (_cassette([], status=1000), "response.status"),
        ('{"streamproxy_cassette": 1, "interactions": {}}', "interactions"),
        ('{"streamproxy_cassette": 1, "source": 5, "interactions": []}', "source"),
    ],
)
def test_wrong_types_and_out_of_range_values_are_named(text: str, where: str) -> None:
    with pytest.raises(CassetteError, match=r"^hostile: ") as caught:
        loads(text, name="hostile")
    assert where in str(caught.value)


def test_nan_and_infinity_are_not_json() -> None:
    for value in ("NaN", "Infinity", "-Infinity"):
        text = _cassette([]).replace('"chunks": []', f'"chunks": [{{"t": {value}, "text": "a"}}]')
        with pytest.raises(CassetteError, match="not a JSON document"):
            loads(text, name="nan")


def test_huge_chunk_and_interaction_counts_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    too_many = [{"t": 0, "text": "a"}] * (format.MAX_CHUNKS + 1)
    with pytest.raises(CassetteError, match="chunks: List should have at most 200000 items"):
        loads(_cassette(too_many), name="many")
    document = {
        "streamproxy_cassette": 1,
        "interactions": [{"request": None, "response": {"status": 200, "chunks": []}}]
        * (format.MAX_INTERACTIONS + 1),
    }
    with pytest.raises(CassetteError, match="interactions: List should have at most 10000"):
        loads(json.dumps(document), name="many")


def test_an_oversized_file_is_not_read(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.cassette.json"
    path.write_text(_cassette([{"t": 0, "text": "a" * 2000}]))
    monkeypatch.setattr(format, "MAX_FILE_BYTES", 1000)
    with pytest.raises(CassetteError, match="larger than 1000 bytes; not read"):
        format.load(path)


# --- recording compressed bodies ----------------------------------------------------------------


def _compressed_upstream(body: bytes, pieces: int = 4) -> httpx2.MockTransport:
    def handler(request: httpx2.Request) -> httpx2.Response:
        assert request.headers["accept-encoding"] == "gzip, deflate"

        def stream() -> Iterator[bytes]:
            step = max(1, len(body) // pieces)
            for start in range(0, len(body), step):
                yield body[start : start + step]

        return httpx2.Response(
            401,
            headers={"content-type": "application/json", "content-encoding": "gzip"},
            content=stream(),
        )

    return httpx2.MockTransport(handler)


def test_record_stores_a_gzip_error_body_decoded_and_scrubbed() -> None:
    echoed = orjson.dumps({"error": {"message": f"Incorrect API key provided: {KEY}"}})
    recorder = RecordTransport(_compressed_upstream(gzip.compress(echoed)))
    with httpx2.Client(transport=recorder) as client:
        response = client.post(
            "https://upstream/chat/completions",
            json={"stream": True},
            headers={"authorization": f"Bearer {KEY}", "accept-encoding": "gzip, br, zstd"},
        )
        assert response.json()["error"]["message"].endswith(KEY)  # the client gets it as sent
    (interaction,) = recorder.cassette.interactions
    assert interaction.response.body == (
        b'{"error":{"message":"Incorrect API key provided: <redacted>"}}'
    )
    assert "content-encoding" not in interaction.response.headers
    assert TRUNCATED_HEADER not in interaction.response.headers
    assert KEY not in dumps(recorder.cassette)
    assert b"\x1f\x8b" not in interaction.response.body


def test_record_keeps_a_bomb_only_as_far_as_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamproxy.cassette import record

    monkeypatch.setattr(record, "MAX_BODY_BYTES", 1024 * 1024)
    recorder = RecordTransport(_compressed_upstream(_bomb(8 * 1024 * 1024), pieces=64))
    with (
        httpx2.Client(transport=recorder) as client,
        client.stream("POST", "https://upstream/chat/completions", json={}) as response,
    ):
        for _ in response.iter_raw():
            pass
    (interaction,) = recorder.cassette.interactions
    assert len(interaction.response.body) <= 1024 * 1024
    assert "longer than 1048576 bytes" in interaction.response.headers[TRUNCATED_HEADER]


def test_streamproxy_record_stores_a_gzip_error_body_scrubbed(tmp_path) -> None:
    """The probe: an upstream that ignores ``accept-encoding: identity`` and echoes the key,
    JSON-escaped, in a gzip 401 body; the cassette file holds it in no form."""
    echoed = b'{"error":{"message":"bad key \\u0073' + KEY[1:].encode() + b'"}}'

    def upstream(request: httpx2.Request) -> httpx2.Response:
        async def pieces() -> AsyncIterator[bytes]:
            compressed = gzip.compress(echoed)
            yield compressed[:10]
            yield compressed[10:]

        headers = {"content-type": "application/json", "content-encoding": "gzip"}
        return httpx2.Response(401, headers=headers, content=pieces())

    path = tmp_path / "rec.cassette.json"
    app = create_record_app(
        "https://api.deepseek.com", RecordTransport(httpx2.MockTransport(upstream), path=path)
    )

    async def scenario() -> httpx2.Response:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://rec") as client:
            return await client.post(
                "/chat/completions", json={}, headers={"authorization": f"Bearer {KEY}"}
            )

    response = asyncio.run(scenario())
    assert response.status_code == 401
    assert response.content == echoed  # the client gets the upstream's answer, decoded by httpx2
    text = path.read_text()
    assert not Redactor({KEY}).contains_secret(text)
    (interaction,) = format.load(path).interactions
    assert interaction.response.body == b'{"error":{"message":"bad key <redacted>"}}'
    assert "content-encoding" not in interaction.response.headers
