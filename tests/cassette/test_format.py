"""The cassette format: round trip, layout, and a clear error for each kind of bad file."""

from __future__ import annotations

import orjson
import pytest

from streamproxy.cassette import (
    Cassette,
    Chunk,
    Interaction,
    RecordedRequest,
    RecordedResponse,
    dump,
    dumps,
    load,
    loads,
)
from streamproxy.errors import CassetteError

from .conftest import RECORDINGS


def _sample() -> Cassette:
    request = RecordedRequest(
        method="POST",
        path="/v1/chat/completions",
        query="api-version=2024-10-21",
        headers={"authorization": "<redacted>", "content-type": "application/json"},
        body={"model": "m", "messages": [{"role": "user", "content": "héllo"}], "stream": True},
    )
    chunks = [
        Chunk(412.052, b'data: {"a":1}\n\n'),
        Chunk(420.5, "data: °".encode()[:-1]),  # ends inside the two-byte "°"
        Chunk(431.0, "°\n\n".encode()[1:]),
    ]
    response = RecordedResponse(
        status=200, headers={"content-type": "text/event-stream"}, chunks=chunks
    )
    raw = RecordedRequest(method="POST", path="/upload", raw_body=b"\xff\x00binary")
    text = RecordedRequest(method="POST", path="/form", raw_body=b"a=1&b=2")
    return Cassette(
        source="unit test",
        interactions=[
            Interaction(request=request, response=response),
            Interaction(request=raw, response=RecordedResponse(status=204)),
            Interaction(request=text, response=RecordedResponse(status=201)),
            Interaction(
                request=None, response=RecordedResponse(status=200, chunks=[Chunk(0, b"x")])
            ),
        ],
    )


def test_dumps_then_loads_gives_the_same_cassette() -> None:
    cassette = _sample()
    assert loads(dumps(cassette)) == cassette


def test_each_chunk_is_one_line_and_undecodable_chunks_are_base64() -> None:
    lines = dumps(_sample()).splitlines()
    chunk_lines = [line.strip().rstrip(",") for line in lines if line.strip().startswith('{"t":')]
    assert [orjson.loads(line) for line in chunk_lines[:3]] == [
        {"t": 412.052, "text": 'data: {"a":1}\n\n'},
        {"t": 420.5, "base64": "ZGF0YTogwg=="},
        {"t": 431.0, "base64": "sAoK"},
    ]
    assert lines[1] == '  "streamproxy_cassette": 1,'
    assert '"body_base64": "/wBiaW5hcnk="' in dumps(_sample())
    assert '"body_text": "a=1&b=2"' in dumps(_sample())
    assert '"query": "api-version=2024-10-21"' in dumps(_sample())


def test_dump_writes_atomically_and_load_reads_it(tmp_path) -> None:
    path = tmp_path / "deep" / "x.cassette.json"
    dump(_sample(), path)
    assert load(path) == _sample()
    assert [p.name for p in path.parent.iterdir()] == ["x.cassette.json"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("not json", "not a JSON document", id="not-json"),
        pytest.param('{"interactions": []}', "not a streamproxy cassette", id="no-version-key"),
        pytest.param(
            '{"streamproxy_cassette": 2, "interactions": []}',
            "format 2 is not supported",
            id="newer",
        ),
        pytest.param(
            '{"streamproxy_cassette": 1, "interactions": '
            '[{"request": null, "response": {"chunks": []}}]}',
            "interactions.0.response.status: Field required",
            id="missing-status",
        ),
        pytest.param(
            '{"streamproxy_cassette": 1, "interactions": [{"request": null, "response": '
            '{"status": 200, "chunks": [{"t": 0, "text": "a", "base64": "YQ=="}]}}]}',
            "exactly one of 'text' and 'base64'",
            id="text-and-base64",
        ),
        pytest.param(
            '{"streamproxy_cassette": 1, "interactions": [{"request": null, "response": '
            '{"status": 200, "chunks": [{"t": 0, "base64": "!!"}]}}]}',
            "invalid base64",
            id="bad-base64",
        ),
        pytest.param(
            '{"streamproxy_cassette": 1, "interactions": [{"request": null, "response": '
            '{"status": 200, "chunks": [{"t": -1, "text": "a"}]}}]}',
            "interactions.0.response.chunks.0.t",
            id="negative-offset",
        ),
        pytest.param(
            '{"streamproxy_cassette": 1, "interactions": [], "extra": 1}',
            "extra: Extra inputs are not permitted",
            id="unknown-key",
        ),
    ],
)
def test_a_malformed_cassette_gets_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(CassetteError, match=r"^my\.cassette\.json: ") as caught:
        loads(text, name="my.cassette.json")
    assert message in str(caught.value)


def test_a_missing_file_is_a_cassette_error(tmp_path) -> None:
    with pytest.raises(CassetteError, match="cannot read cassette"):
        load(tmp_path / "absent.cassette.json")


@pytest.mark.parametrize("path", sorted(RECORDINGS.glob("*.cassette.json")), ids=lambda p: p.name)
def test_project_cassettes_are_in_canonical_form_with_a_source(path) -> None:
    """Each committed cassette re-dumps byte for byte (diffs stay minimal) and has a source."""
    cassette = load(path)
    assert cassette.source
    assert dumps(cassette) == path.read_text(encoding="utf-8")
