"""The arguments buffer: completeness, duplicates and partial previews."""

from __future__ import annotations

import json
import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproxy.core.arguments import PREVIEW_FIRST_SIZE, PREVIEW_GROWTH, ArgumentsBuffer


def buffer_of(*fragments: str) -> ArgumentsBuffer:
    buffer = ArgumentsBuffer()
    for fragment in fragments:
        buffer.append(fragment)
    return buffer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param('{"a": "hel', {"a": "hel"}, id="open-value-string"),
        pytest.param('{"a": "x\\', {"a": "x"}, id="dangling-escape"),
        pytest.param('{"a": "x\\u00', {"a": "x"}, id="partial-unicode-escape"),
        pytest.param('{"a": 1, "b', {"a": 1}, id="open-key"),
        pytest.param('{"a": 1, "b":', {"a": 1}, id="after-colon"),
        pytest.param('{"a": [1, 2', {"a": [1, 2]}, id="open-array"),
        pytest.param('{"a": {"b": [true, {"c": "d', {"a": {"b": [True, {"c": "d"}]}}, id="deep"),
        pytest.param('{"a": 1,', {"a": 1}, id="trailing-comma"),
        pytest.param("{", {}, id="just-open"),
    ],
)
def test_preview_closes_incomplete_text(text: str, expected: object) -> None:
    is_parsed, value = buffer_of(text).preview()
    assert is_parsed and value == expected


def test_preview_of_text_split_anywhere_matches_the_whole() -> None:
    text = '{"path": "a\\"b.txt", "lines": [1, 2, 3], "meta": {"x": "\\u00e9"}}'
    for cut in range(1, len(text)):
        prefix = text[:cut]
        whole = buffer_of(prefix).preview()
        pieces = buffer_of(*[prefix[i : i + 3] for i in range(0, cut, 3)])
        pieces.preview()  # an earlier preview must not disturb a later one
        assert pieces.preview() == whole, cut


def test_previews_are_spaced_geometrically() -> None:
    buffer = ArgumentsBuffer()
    buffer.append('{"content": "')
    previews = 0
    for _ in range(100_000):
        buffer.append("abcd")
        if buffer.size >= buffer.next_preview:  # as the assembler decides
            buffer.preview()
            previews += 1
    # 400 KB of text: the first preview at PREVIEW_FIRST_SIZE, then one each time the text grew
    # by PREVIEW_GROWTH, so about log(400000 / first, growth) + 1 of them: logarithmic in size
    expected = math.log(400_000 / PREVIEW_FIRST_SIZE, PREVIEW_GROWTH) + 1
    assert expected - 2 <= previews <= expected + 2


@pytest.mark.parametrize(
    ("fragments", "is_complete"),
    [
        (['{"a": 1}'], True),
        (['{"a": "}"', "}"], True),
        (['{"a": "\\"}"'], False),
        (['{"a": 1}', " "], True),
        (['{"a": 1}', "{"], False),
        (["[1, 2]"], True),
        (['{"a": {"b": 1}'], False),
    ],
)
def test_one_complete_value(fragments: list[str], is_complete: bool) -> None:
    assert buffer_of(*fragments).is_one_complete_value() is is_complete


def test_duplicate_detection_by_bytes_or_by_value() -> None:
    buffer = buffer_of('{"a": 1,', ' "b": [2]}')
    assert buffer.is_duplicate('{"a": 1, "b": [2]}')
    assert buffer.is_duplicate('{"b":[2],"a":1}')
    assert not buffer.is_duplicate('{"a": 2}')


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)  # any JSON value, with keys and strings that need escaping


@settings(max_examples=200, deadline=None)
@given(value=st.dictionaries(st.text(max_size=5), JSON_VALUES, max_size=4), data=st.data())
def test_a_complete_object_split_anywhere_is_complete_and_previews_to_itself(
    value: dict[str, object], data: st.DataObject
) -> None:
    text = json.dumps(value, ensure_ascii=data.draw(st.booleans()))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    buffer = ArgumentsBuffer()
    for piece in pieces:
        buffer.append(piece)
        buffer.preview()  # previews on every piece must not change the verdict
    assert buffer.is_one_complete_value()
    # a preview is orjson's reading (integers past 64 bits become floats, for display); the
    # final parse at the seal keeps them exact (test_quirks: integers beyond 64 bits)
    assert buffer.preview() == (True, orjson.loads(text))
