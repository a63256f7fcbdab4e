"""``request.check_depth``: the nesting limit, exactly at its edge, for lists and objects."""

from __future__ import annotations

import pytest

from streamproxy.errors import RequestError
from streamproxy.proxy.request import MAX_JSON_DEPTH, check_depth


def nested(levels: int, *, leaf: object, as_object: bool) -> object:
    """``levels`` containers, one inside the other, around ``leaf``."""
    value = leaf
    for _ in range(levels):
        value = {"k": value, "s": "text"} if as_object else ["text", value]
    return value


@pytest.mark.parametrize("as_object", [True, False])
@pytest.mark.parametrize("leaf", [1, "x", None, [], {}])
def test_the_limit_itself_passes_and_one_more_level_is_refused(
    as_object: bool, leaf: object
) -> None:
    extra = 1 if isinstance(leaf, list | dict) else 0  # an empty container is a level too
    check_depth(nested(MAX_JSON_DEPTH - extra, leaf=leaf, as_object=as_object))
    with pytest.raises(RequestError, match="nested deeper"):
        check_depth(nested(MAX_JSON_DEPTH + 1 - extra, leaf=leaf, as_object=as_object))


def test_a_wide_body_and_scalars_pass() -> None:
    check_depth({"messages": [{"role": "user", "content": "hi"}] * 1000, "n": 1})
    for scalar in (1, "text", None, 2.5, True):
        check_depth(scalar)


def test_a_deep_branch_beside_shallow_ones_is_found() -> None:
    body = {"a": [1, 2, {"b": "c"}], "z": nested(MAX_JSON_DEPTH, leaf=0, as_object=False)}
    with pytest.raises(RequestError):
        check_depth(body)
