from __future__ import annotations

import asyncio
import sys
import textwrap
import threading
from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from streamproxy.core.schema import ToolSchemas
from streamproxy.errors import ToolDefinitionError
from streamproxy.proxy.audit import arguments_digest
from streamproxy.proxy.strict_schema import strict_schema
from streamproxy.proxy.tools import Tool, ToolSet, load_tools, tool

pytestmark = pytest.mark.anyio


class Point(BaseModel):
    lat: float = Field(ge=-90, le=90)
    lon: float


@tool(read_only=True, timeout=5)
def get_weather(
    city: Annotated[str, Field(min_length=1)],
    unit: Literal["c", "f"] = "c",
    near: Point | None = None,
    tags: list[str] | None = None,
) -> dict[str, object]:
    """Current weather in a city.

    Longer text that is not the summary.

    Args:
        city: The city name,
            e.g. "Paris".
        unit (str): Celsius or Fahrenheit.
    Returns:
        The weather.
    """
    return {"city": city, "unit": unit, "near": near, "tags": tags}


def write_file(path: str, content: str) -> str:
    """Write a file.

    :param path: Where to write.
    :param content: What to write.
    """
    return "ok"


def _walk(node: object) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found.extend(_walk(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_walk(item))
    return found


def test_schema_is_in_deepseek_strict_form() -> None:
    entry = Tool.from_function(get_weather)
    parameters = entry.parameters
    assert entry.is_strict
    assert parameters["required"] == ["city", "unit", "near", "tags"]
    for node in _walk(parameters):
        if node.get("type") == "object":
            assert node["additionalProperties"] is False
            assert node["required"] == list(node["properties"])  # type: ignore[call-overload]
        unsupported = {"minLength", "minimum", "maximum", "title", "default", "$ref", "$defs"}
        assert not (unsupported & node.keys()), node
    near = parameters["properties"]["near"]  # type: ignore[index]
    assert near["anyOf"][0]["properties"]["lat"] == {"type": "number"}
    assert near["anyOf"][1] == {"type": "null"}
    assert parameters["properties"]["unit"]["enum"] == ["c", "f"]  # type: ignore[index]


def test_description_and_argument_docs_come_from_the_docstring() -> None:
    entry = Tool.from_function(get_weather)
    assert entry.description == "Current weather in a city."
    properties = entry.parameters["properties"]
    assert properties["city"]["description"] == 'The city name, e.g. "Paris".'  # type: ignore[index]
    assert properties["unit"]["description"] == "Celsius or Fahrenheit."  # type: ignore[index]
    sphinx = Tool.from_function(write_file)
    assert sphinx.parameters["properties"]["path"]["description"] == "Where to write."  # type: ignore[index]
    assert sphinx.description == "Write a file."


def test_declaration_read_only_and_timeout() -> None:
    declared = Tool.from_function(get_weather)
    assert declared.is_read_only is True
    assert declared.timeout == 5
    plain = Tool.from_function(write_file)
    assert plain.is_read_only is False  # undeclared tools are write tools: the safe default


def test_openai_tool_entry_marks_strict_only_when_asked() -> None:
    entry = Tool.from_function(get_weather)
    strict = entry.openai_tool(strict=True)
    assert strict["type"] == "function"
    assert strict["function"]["strict"] is True  # type: ignore[index]
    assert "strict" not in entry.openai_tool(strict=False)["function"]  # type: ignore[operator]


def test_open_maps_fall_back_to_non_strict() -> None:
    def count(words: dict[str, int]) -> int:
        """Count."""
        return len(words)

    entry = Tool.from_function(count)
    assert entry.is_strict is False
    assert "strict" not in entry.openai_tool(strict=True)["function"]  # type: ignore[operator]


class Node(BaseModel):
    name: str
    children: list[Node]


def test_recursive_models_fall_back_to_non_strict() -> None:
    def walk(tree: Node) -> int:
        """Walk."""
        return 0

    assert Tool.from_function(walk).is_strict is False


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        pytest.param(
            {"type": "object", "properties": {"a": {"const": "x", "type": "string"}}},
            {
                "type": "object",
                "properties": {"a": {"enum": ["x"], "type": "string"}},
                "required": ["a"],
                "additionalProperties": False,
            },
            id="const-becomes-enum",
        ),
        pytest.param(
            {
                "type": "object",
                "properties": {"a": {"allOf": [{"$ref": "#/$defs/P"}], "description": "d"}},
                "$defs": {"P": {"type": "object", "properties": {"x": {"type": "integer"}}}},
            },
            {
                "type": "object",
                "properties": {
                    "a": {
                        "type": "object",
                        "properties": {"x": {"type": "integer"}},
                        "description": "d",
                        "required": ["x"],
                        "additionalProperties": False,
                    }
                },
                "required": ["a"],
                "additionalProperties": False,
            },
            id="single-allOf-ref-inlined",
        ),
        pytest.param(
            {"type": "object", "properties": {"a": {"oneOf": [{"type": "integer"}]}}},
            {
                "type": "object",
                "properties": {"a": {"anyOf": [{"type": "integer"}]}},
                "required": ["a"],
                "additionalProperties": False,
            },
            id="oneOf-becomes-anyOf",
        ),
    ],
)
def test_strict_schema_rewrites(schema: dict[str, object], expected: dict[str, object]) -> None:
    assert strict_schema(schema) == expected


@pytest.mark.parametrize(
    "schema",
    [
        pytest.param({"type": "object", "properties": {"a": {}}}, id="untyped"),
        pytest.param({"type": ["string", "integer"]}, id="type-list"),
        pytest.param({"type": "array", "prefixItems": [{"type": "string"}]}, id="tuple"),
    ],
)
def test_strict_schema_refuses_what_strict_mode_cannot_express(schema: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        strict_schema(schema)


@pytest.mark.parametrize(
    ("function", "message"),
    [
        pytest.param(lambda x: x, "no type hint", id="no-hint"),
        pytest.param(lambda *args: None, "args", id="varargs"),
    ],
)
def test_functions_that_cannot_be_tools(function: object, message: str) -> None:
    with pytest.raises(ToolDefinitionError, match=message):
        Tool.from_function(function, name="bad")  # type: ignore[arg-type]


def test_bad_names_and_duplicates_are_refused() -> None:
    with pytest.raises(ToolDefinitionError, match="1-64"):
        Tool.from_function(write_file, name="has space")
    with pytest.raises(ToolDefinitionError, match="two tools"):
        ToolSet([write_file, write_file])


def test_toolset_schemas_validate_in_the_core() -> None:
    tools = ToolSet([get_weather])
    schemas = ToolSchemas(tools.schemas())
    assert schemas.check("get_weather", {"city": "Paris"}) is None
    verdict = schemas.check("get_weather", {"city": "Paris", "extra": 1})
    assert verdict is not None and verdict.kind == "schema"
    assert schemas.check("nope", {}) is not None


async def test_run_validates_with_the_full_model_before_calling() -> None:
    calls: list[object] = []

    @tool(read_only=True)
    def bounded(point: Point) -> str:
        """Take a point."""
        calls.append(point)
        return "done"

    entry = Tool.from_function(bounded)
    outcome = await entry.run({"point": {"lat": 100, "lon": 0}}, max_result_size=1000)
    assert outcome.status == "error"
    assert "less than or equal to 90" in outcome.content
    assert calls == []  # the constraint dropped from the strict schema still held
    outcome = await entry.run({"point": {"lat": 10, "lon": 0}}, max_result_size=1000)
    assert outcome.status == "ok" and outcome.content == "done"
    assert calls == [Point(lat=10, lon=0)]


async def test_run_serialises_results_as_json() -> None:
    outcome = await Tool.from_function(get_weather).run(
        {"city": "Paris", "near": {"lat": 1, "lon": 2}}, max_result_size=1000
    )
    assert outcome.status == "ok"
    assert outcome.content == (
        '{"city":"Paris","unit":"c","near":{"lat":1.0,"lon":2.0},"tags":null}'
    )


async def test_async_tools_time_out() -> None:
    @tool(read_only=True, timeout=0.05)
    async def slow() -> str:
        """Slow."""
        await asyncio.sleep(10)
        return "never"

    outcome = await Tool.from_function(slow).run({}, max_result_size=1000)
    assert outcome.status == "timeout"
    assert "timed out after 0.05 s" in outcome.content


async def test_sync_tools_run_off_the_event_loop() -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []

    @tool(read_only=True)
    def where() -> str:
        """Where."""
        seen.append(threading.get_ident())
        return "here"

    outcome = await Tool.from_function(where).run({}, max_result_size=1000)
    assert outcome.content == "here"
    assert seen and seen[0] != loop_thread


async def test_exceptions_and_oversized_results_become_error_text() -> None:
    def broken(x: int) -> str:
        """Broken."""
        raise RuntimeError(f"bad {x}")

    outcome = await Tool.from_function(broken).run({"x": 3}, max_result_size=1000)
    assert (outcome.status, outcome.content) == ("error", "error: RuntimeError: bad 3")

    def huge() -> str:
        """Huge."""
        return "x" * 2000

    outcome = await Tool.from_function(huge).run({}, max_result_size=1000)
    assert outcome.status == "too_large"
    assert "2000 bytes, over the limit of 1000" in outcome.content


async def test_cancellation_propagates() -> None:
    started = asyncio.Event()

    async def wait() -> str:
        """Wait."""
        started.set()
        await asyncio.sleep(10)
        return "never"

    task = asyncio.create_task(Tool.from_function(wait).run({}, max_result_size=10))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_arguments_digest_is_stable_and_short() -> None:
    assert arguments_digest('{"a":1}') == arguments_digest('{"a":1}')
    assert arguments_digest('{"a":1}') != arguments_digest('{"a":2}')
    assert len(arguments_digest("x")) == 16


def test_load_tools_from_module_attr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_tools_module.py").write_text(
        textwrap.dedent(
            '''
            from streamproxy.proxy.tools import ToolSet, tool

            @tool(read_only=True)
            def add(a: int, b: int) -> int:
                """Add two numbers."""
                return a + b

            def delete(path: str) -> str:
                """Delete a file."""
                return path

            TOOLS = [add, delete]
            REGISTRY = ToolSet([add])
            NOT_TOOLS = 3
            '''
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        listed = load_tools("my_tools_module:TOOLS")
        assert sorted(listed.names) == ["add", "delete"]
        assert listed["add"].is_read_only and not listed["delete"].is_read_only
        assert load_tools("my_tools_module:REGISTRY").names == {"add"}
        with pytest.raises(ToolDefinitionError, match="expected a ToolSet"):
            load_tools("my_tools_module:NOT_TOOLS")
        with pytest.raises(ToolDefinitionError, match="has no MISSING"):
            load_tools("my_tools_module:MISSING")
        with pytest.raises(ToolDefinitionError, match="cannot import"):
            load_tools("no_such_module_here:X")
        with pytest.raises(ToolDefinitionError, match="module:attr"):
            load_tools("just_a_module")
    finally:
        sys.modules.pop("my_tools_module", None)


async def test_a_result_that_cannot_become_text_is_an_error_result_for_the_model() -> None:
    class Hostile:
        def __str__(self) -> str:
            raise RuntimeError("no text for you")

    @tool(read_only=True)
    def hostile() -> object:
        """Return something without a text form."""
        return Hostile()

    outcome = await Tool.from_function(hostile).run({}, max_result_size=1000)
    assert outcome.status == "error"
    assert outcome.content.startswith("error: TypeError: the tool returned a Hostile")
