"""Server tools: plain Python functions the proxy runs on the model's behalf.

A tool is a sync or async function with type hints and a docstring::

    @tool(read_only=True, timeout=5)
    def get_weather(city: str, unit: Literal["c", "f"] = "c") -> dict[str, object]:
        '''Current weather in a city.

        Args:
            city: The city name, e.g. "Paris".
            unit: Celsius or Fahrenheit.
        '''

Its argument schema comes from the hints through a pydantic model, cut down to the form
DeepSeek's strict mode accepts (``strict_schema``): every property required,
``additionalProperties: false`` on every object, ``$ref`` written out, and only the supported
keywords (type, properties, required, additionalProperties, items, enum, anyOf, description).
Constraints strict mode cannot express (``ge``, ``max_length``, ``pattern``...) are dropped from
the schema sent upstream but still enforced: arguments are validated against the full pydantic
model before the function runs. A tool whose schema strict mode cannot express at all (a
``dict[str, X]`` map, ``Any``, a recursive model) is sent without ``strict``.

A tool is read-only or writes. Read-only tools run as soon as their call is sealed; write tools
run only after the client approves the exact call (see ``streamproxy.proxy.approval``). A plain
function with no ``@tool`` declaration is treated as a write tool, the safe default.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib
import inspect
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_type_hints, overload

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from streamproxy.errors import ToolDefinitionError

__all__ = [
    "Tool",
    "ToolDefinitionError",
    "ToolOutcome",
    "ToolSet",
    "arguments_digest",
    "load_tools",
    "strict_schema",
    "tool",
]

ToolFunction = Callable[..., Any]
_F = TypeVar("_F", bound=Callable[..., Any])
OutcomeStatus = Literal["ok", "error", "timeout", "too_large"]

# OpenAI and DeepSeek accept function names of 1-64 letters, digits, underscores and hyphens.
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEFAULT_TOOL_TIMEOUT = 30.0
# An error text sent back to the model is cut to this size: enough to correct a call.
_MAX_ERROR_TEXT = 2000
_DECLARATION_ATTRIBUTE = "__streamproxy_tool__"

# Keywords DeepSeek's strict mode accepts; every other keyword is dropped or refused.
_KEPT_KEYWORDS = frozenset(
    {"type", "properties", "required", "additionalProperties", "items", "enum", "anyOf"}
)
# Validation keywords strict mode does not support: dropped from the schema sent upstream
# (pydantic still enforces them before the tool runs).
_DROPPED_KEYWORDS = frozenset(
    {
        "title",
        "default",
        "examples",
        "format",
        "pattern",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minProperties",
        "maxProperties",
        "deprecated",
        "readOnly",
        "writeOnly",
    }
)


class _StrictUnsupportedError(ValueError):
    """A schema uses something DeepSeek's strict mode cannot express."""


@dataclass(frozen=True, slots=True)
class _Declaration:
    name: str | None
    description: str | None
    is_read_only: bool
    timeout: float


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """What running a tool produced; ``content`` is the text the model gets as the result."""

    status: OutcomeStatus
    content: str
    duration: float

    @property
    def is_ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True, slots=True, kw_only=True)
class Tool:
    """One server tool: the function, its argument model and the schema sent upstream."""

    name: str
    description: str
    function: ToolFunction
    arguments_model: type[BaseModel]
    parameters: dict[str, object]
    """The argument schema in DeepSeek's strict form (or pydantic's when ``is_strict``)."""
    is_strict: bool
    """False when strict mode cannot express the schema; the tool is then sent non-strict."""
    is_read_only: bool
    timeout: float

    @classmethod
    def from_function(
        cls,
        function: ToolFunction,
        *,
        name: str | None = None,
        description: str | None = None,
        read_only: bool | None = None,
        timeout: float | None = None,
    ) -> Tool:
        """Build a tool from ``function``; arguments override its ``@tool`` declaration."""
        declaration: _Declaration | None = getattr(function, _DECLARATION_ATTRIBUTE, None)
        tool_name = name or (declaration.name if declaration else None) or function.__name__
        if not _NAME_PATTERN.match(tool_name):
            raise ToolDefinitionError(
                f"tool name {tool_name!r} must be 1-64 letters, digits, '_' or '-'"
            )
        summary, argument_docs = _parse_docstring(inspect.getdoc(function) or "")
        text = description or (declaration.description if declaration else None) or summary
        if read_only is None:
            read_only = declaration.is_read_only if declaration else False
        if timeout is None:
            timeout = declaration.timeout if declaration else DEFAULT_TOOL_TIMEOUT
        if timeout <= 0:
            raise ToolDefinitionError(f"tool {tool_name}: timeout must be positive")
        model = _arguments_model(function, tool_name, argument_docs)
        plain = model.model_json_schema()
        try:
            parameters, is_strict = strict_schema(plain), True
        except _StrictUnsupportedError:
            parameters, is_strict = _strip_titles(plain), False
        return cls(
            name=tool_name,
            description=text,
            function=function,
            arguments_model=model,
            parameters=parameters,
            is_strict=is_strict,
            is_read_only=read_only,
            timeout=timeout,
        )

    def openai_tool(self, *, strict: bool) -> dict[str, object]:
        """The ``{"type": "function", ...}`` entry for a request's ``tools`` list."""
        function: dict[str, object] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            function["description"] = self.description
        if strict and self.is_strict:
            function["strict"] = True
        return {"type": "function", "function": function}

    async def call(self, arguments: Mapping[str, object]) -> object:
        """Validate ``arguments`` with the full model and call the function (no timeout)."""
        values = self.arguments_model.model_validate(dict(arguments))
        keywords = {field: getattr(values, field) for field in type(values).model_fields}
        if inspect.iscoroutinefunction(self.function):
            return await self.function(**keywords)
        result = await asyncio.to_thread(functools.partial(self.function, **keywords))
        if inspect.isawaitable(result):
            return await result
        return result

    async def run(self, arguments: Mapping[str, object], *, max_result_size: int) -> ToolOutcome:
        """Call the tool with its timeout; every failure becomes an outcome the model can read.

        ``CancelledError`` is never swallowed: a cancelled run propagates.
        """
        started = time.perf_counter()
        status: OutcomeStatus
        try:
            async with asyncio.timeout(self.timeout):
                result = await self.call(arguments)
        except TimeoutError:
            status = "timeout"
            content = f"error: tool {self.name} timed out after {self.timeout:g} s"
        except ValidationError as error:
            status = "error"
            content = f"error: invalid arguments for {self.name}: {_validation_summary(error)}"
        except Exception as error:  # a tool's own failure goes back to the model
            status = "error"
            content = f"error: {type(error).__name__}: {error}"[:_MAX_ERROR_TEXT]
        else:
            content = result_text(result)
            status = "ok"
            size = len(content.encode())
            if size > max_result_size:
                status = "too_large"
                content = (
                    f"error: the result of {self.name} is {size} bytes, over the limit of "
                    f"{max_result_size} bytes; ask for less"
                )
        return ToolOutcome(status, content, time.perf_counter() - started)


@overload
def tool(function: _F, /) -> _F: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    read_only: bool = False,
    timeout: float = DEFAULT_TOOL_TIMEOUT,
) -> Callable[[_F], _F]: ...


def tool(
    function: _F | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    read_only: bool = False,
    timeout: float = DEFAULT_TOOL_TIMEOUT,
) -> _F | Callable[[_F], _F]:
    """Declare a function as a tool: ``@tool(read_only=True, timeout=5)`` or ``@tool``.

    The function is returned unchanged (still callable as before); the declaration is read when
    it is added to a ``ToolSet``.
    """

    def declare(target: _F) -> _F:
        setattr(target, _DECLARATION_ATTRIBUTE, _Declaration(name, description, read_only, timeout))
        return target

    if function is not None:
        return declare(function)
    return declare


class ToolSet:
    """The registry of server tools: an allowlist by name."""

    def __init__(self, tools: Iterable[Tool | ToolFunction] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for item in tools:
            self.add(item)

    def add(self, item: Tool | ToolFunction) -> Tool:
        """Register a ``Tool`` or a function; a second tool with the same name is an error."""
        if isinstance(item, Tool):
            entry = item
        elif callable(item):
            entry = Tool.from_function(item)
        else:
            raise ToolDefinitionError(f"{item!r} is neither a function nor a Tool")
        if entry.name in self._tools:
            raise ToolDefinitionError(f"two tools are named {entry.name!r}")
        self._tools[entry.name] = entry
        return entry

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def __getitem__(self, name: str) -> Tool:
        return self._tools[name]

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._tools)

    def openai_tools(self, *, strict: bool) -> list[dict[str, object]]:
        """The tools as a request's ``tools`` entries."""
        return [entry.openai_tool(strict=strict) for entry in self._tools.values()]

    def schemas(self) -> dict[str, type[BaseModel]]:
        """Name -> argument model, the form ``ChatStream(tools=...)`` validates against."""
        return {entry.name: entry.arguments_model for entry in self._tools.values()}


def load_tools(spec: str) -> ToolSet:
    """Import ``module:attr`` (a ToolSet, a Tool, a function, or a list of them).

    The current directory is importable, as with ``uvicorn module:app``.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ToolDefinitionError(f"--tools expects module:attr, got {spec!r}")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ToolDefinitionError(f"--tools {spec}: cannot import {module_name}: {error}") from None
    value: object = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise ToolDefinitionError(f"--tools {spec}: {module_name} has no {attribute}") from None
    if isinstance(value, ToolSet):
        return value
    if isinstance(value, Tool) or callable(value):
        return ToolSet([value])
    if isinstance(value, list | tuple):
        return ToolSet(value)
    raise ToolDefinitionError(
        f"--tools {spec}: expected a ToolSet, a function or a list of functions, "
        f"got {type(value).__name__}"
    )


def result_text(result: object) -> str:
    """A tool's return value as the text sent to the model: strings as they are, else JSON."""
    if isinstance(result, str):
        return result
    if isinstance(result, BaseModel):
        return result.model_dump_json()
    try:
        return pydantic_core.to_json(result).decode()
    except pydantic_core.PydanticSerializationError:
        return str(result)


def arguments_digest(arguments: str) -> str:
    """A short digest of a call's arguments text, for audit lines (never the arguments)."""
    return hashlib.sha256(arguments.encode()).hexdigest()[:16]


def strict_schema(schema: Mapping[str, object]) -> dict[str, object]:
    """Rewrite a pydantic JSON Schema into the form DeepSeek's strict mode accepts.

    Raises:
        _StrictUnsupportedError: the schema needs something strict mode lacks (an open map,
            an untyped value, a tuple, a recursive ``$ref``).
    """
    definitions = schema.get("$defs")
    defs = dict(definitions) if isinstance(definitions, Mapping) else {}
    return _strict_node(schema, defs, ())


def _strict_node(
    node: Mapping[str, object], defs: Mapping[str, object], seen: tuple[str, ...]
) -> dict[str, object]:
    reference = node.get("$ref")
    if isinstance(reference, str):
        name = reference.rpartition("/")[2]
        target = defs.get(name)
        if name in seen or not isinstance(target, Mapping):
            raise _StrictUnsupportedError(f"recursive or unknown $ref {reference}")
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _strict_node(merged, defs, (*seen, name))
    all_of = node.get("allOf")
    if isinstance(all_of, list):
        if len(all_of) != 1 or not isinstance(all_of[0], Mapping):
            raise _StrictUnsupportedError("allOf with more than one schema")
        rest = {k: v for k, v in node.items() if k != "allOf"}
        return _strict_node({**all_of[0], **rest}, defs, seen)
    result: dict[str, object] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYWORDS or key == "$defs":
            continue
        if key == "description":
            result[key] = value
        elif key == "const":
            result["enum"] = [value]
        elif key in ("anyOf", "oneOf"):
            if not isinstance(value, list):
                raise _StrictUnsupportedError(f"{key} is not a list")
            result["anyOf"] = [_strict_node(item, defs, seen) for item in value]
        elif key == "properties":
            if not isinstance(value, Mapping):
                raise _StrictUnsupportedError("properties is not an object")
            result[key] = {
                name: _strict_node(_as_mapping(sub), defs, seen) for name, sub in value.items()
            }
        elif key == "items":
            result[key] = _strict_node(_as_mapping(value), defs, seen)
        elif key == "additionalProperties":
            if value not in (False, None):
                raise _StrictUnsupportedError("an open map (additionalProperties)")
        elif key in _KEPT_KEYWORDS:
            result[key] = value
        else:
            raise _StrictUnsupportedError(f"keyword {key!r}")
    if isinstance(result.get("type"), list):
        raise _StrictUnsupportedError("a list of types")
    if result.get("type") == "object" or "properties" in result:
        properties = result.setdefault("properties", {})
        assert isinstance(properties, Mapping)
        result["required"] = list(properties)
        result["additionalProperties"] = False
    if not ({"type", "enum", "anyOf"} & result.keys()):
        raise _StrictUnsupportedError("an untyped value")
    return result


def _as_mapping(value: object) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise _StrictUnsupportedError(f"a schema that is not an object: {value!r}")
    return value


def _strip_titles(node: object) -> Any:
    if isinstance(node, Mapping):
        return {
            key: _strip_titles(value)
            for key, value in node.items()
            if not (key == "title" and isinstance(value, str))
        }
    if isinstance(node, list):
        return [_strip_titles(item) for item in node]
    return node


def _arguments_model(
    function: ToolFunction, tool_name: str, argument_docs: Mapping[str, str]
) -> type[BaseModel]:
    try:
        hints = get_type_hints(function, include_extras=True)
    except Exception as error:
        raise ToolDefinitionError(f"tool {tool_name}: cannot read type hints: {error}") from None
    fields: dict[str, Any] = {}
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ToolDefinitionError(f"tool {tool_name}: *args and **kwargs cannot be arguments")
        if parameter.kind is parameter.POSITIONAL_ONLY:
            raise ToolDefinitionError(f"tool {tool_name}: positional-only arguments are not named")
        if parameter.name not in hints:
            raise ToolDefinitionError(
                f"tool {tool_name}: argument {parameter.name!r} has no type hint"
            )
        default: Any = ... if parameter.default is parameter.empty else parameter.default
        doc = argument_docs.get(parameter.name)
        fields[parameter.name] = (hints[parameter.name], Field(default, description=doc))
    model: type[BaseModel] = create_model(
        f"{tool_name}_arguments", __config__=ConfigDict(extra="forbid"), **fields
    )
    return model


_SECTION_PATTERN = re.compile(r"^(Args|Arguments|Parameters|Returns|Raises|Yields|Examples?):$")
_ARGUMENT_PATTERN = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_SPHINX_PATTERN = re.compile(r"^:param\s+(?:[^:]*\s)?(\w+):\s*(.*)$")
_ARGUMENT_SECTIONS = ("Args", "Arguments", "Parameters")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The summary (first paragraph) and per-argument descriptions (Google or Sphinx style)."""
    lines = doc.splitlines()
    summary: list[str] = []
    for line in lines:
        stripped = line.strip()
        if not stripped or _SECTION_PATTERN.match(stripped) or stripped.startswith(":"):
            break
        summary.append(stripped)
    arguments: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    argument_indent: int | None = None
    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        heading = _SECTION_PATTERN.match(stripped)
        if heading:
            section, current, argument_indent = heading.group(1), None, None
            continue
        sphinx = _SPHINX_PATTERN.match(stripped)
        if sphinx:
            current = sphinx.group(1)
            arguments[current] = sphinx.group(2).strip()
            continue
        if section not in _ARGUMENT_SECTIONS or not stripped:
            continue
        match = _ARGUMENT_PATTERN.match(stripped)
        if match and (argument_indent is None or indent <= argument_indent):
            argument_indent = indent
            current = match.group(1)
            arguments[current] = match.group(2).strip()
        elif current is not None and argument_indent is not None and indent > argument_indent:
            arguments[current] = f"{arguments[current]} {stripped}".strip()
        else:
            section = None
    return " ".join(summary), arguments


def _validation_summary(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or '(root)'}: {item['msg']}"
        for item in error.errors()[:3]
    )
