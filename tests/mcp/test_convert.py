"""Modes from annotations, public names and result text: pure functions."""

from __future__ import annotations

import mcp_types
import pytest

from streamproxy.errors import McpToolError
from streamproxy.proxy.mcp.convert import call_result_text, public_name, tool_mode


@pytest.mark.parametrize(
    ("annotations", "mode"),
    [
        (None, "auto"),
        (mcp_types.ToolAnnotations(), "auto"),
        (mcp_types.ToolAnnotations(read_only_hint=True), "read_only"),
        (mcp_types.ToolAnnotations(destructive_hint=True), "needs_approval"),
        (mcp_types.ToolAnnotations(read_only_hint=False, destructive_hint=False), "auto"),
        # destructiveHint only counts when the tool is not read-only (the spec)
        (mcp_types.ToolAnnotations(read_only_hint=True, destructive_hint=True), "read_only"),
    ],
)
def test_modes_from_annotations(annotations: mcp_types.ToolAnnotations | None, mode: str) -> None:
    assert tool_mode(annotations) == mode


def test_names_are_plain_when_free_and_prefixed_when_taken() -> None:
    assert public_name("github", "search", set()) == "search"
    assert public_name("github", "search", {"search"}) == "github__search"
    assert public_name("my server", "files.read", {"files_read"}) == "my_server__files_read"
    assert public_name("a", "tool/x", set()) == "tool_x"


def test_long_or_still_taken_names_get_a_stable_hash() -> None:
    long_tool = "t" * 70
    name = public_name("server", long_tool, set())
    assert len(name) == 64
    assert name == public_name("server", long_tool, set())
    assert name != public_name("other", long_tool, set())
    taken = {"x", "s__x"}
    hashed = public_name("s", "x", taken)
    assert hashed not in taken
    assert hashed.startswith("s__x_")


def text(value: str) -> mcp_types.TextContent:
    return mcp_types.TextContent(type="text", text=value)


def test_text_blocks_and_structured_content() -> None:
    assert call_result_text([text("one"), text("two")], None, False) == "one\ntwo"
    # a text block says it already (the spec asks servers to send both): not sent twice
    assert call_result_text([text('{"a": 1}')], {"a": 1}, False) == '{"a": 1}'
    assert call_result_text([text("5")], {"result": 5}, False) == "5"
    assert call_result_text([], {"a": "é"}, False) == '{"a":"é"}'
    link = mcp_types.ResourceLink(type="resource_link", uri="file:///a.txt", name="a")
    assert call_result_text([link], {"a": 1}, False) == '[resource file:///a.txt]\n{"a":1}'
    image = mcp_types.ImageContent(type="image", data="AAAA", mime_type="image/png")
    assert call_result_text([image], None, False) == "[image image/png, not shown]"


def test_is_error_raises_with_the_servers_text() -> None:
    with pytest.raises(McpToolError, match="disk full"):
        call_result_text([text("disk full")], None, True)
    with pytest.raises(McpToolError, match="said nothing more"):
        call_result_text([], None, True)
