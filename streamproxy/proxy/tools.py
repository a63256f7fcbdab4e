"""Server tools: the functions (and MCP tools) the proxy runs on the model's behalf.

A tool is a sync or async function with type hints and a docstring::

    @tool(read_only=True, timeout=5)
    def get_weather(city: str, unit: Literal["c", "f"] = "c") -> dict[str, object]:
        '''Current weather in a city.

        Args:
            city: The city name, e.g. "Paris".
            unit: Celsius or Fahrenheit.
        '''

Its argument schema comes from the hints through a pydantic model; the schema sent upstream is
its strict form (``strict_schema.py``); the full model is still enforced before the function runs.

Every tool has a **mode**, which says when it runs:

- ``auto`` (a plain function, or ``@tool``): runs on the server, automatically, once its call is
  sealed and the model's round ended cleanly (a round cut by ``length`` runs nothing);
- ``read_only`` (``@tool(read_only=True)``): starts the moment its call is sealed, while the model
  may still be streaming: only for tools that change nothing, since the round may still fail;
- ``needs_approval`` (``@tool(needs_approval=True)``): never runs without the user's approval of
  the exact call (``approval.py``).

``Tool.from_schema`` builds a tool from a JSON Schema and an async callable (MCP tools).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, TypeVar, get_type_hints, overload

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from streamproxy.core.schema import SchemaSource
from streamproxy.errors import ToolDefinitionError
from streamproxy.proxy.strict_schema import upstream_parameters

__all__ = [
    "TOOL_TRACE_CONTEXT",
    "Tool",
    "ToolMode",
    "ToolOutcome",
    "ToolSet",
    "load_tools",
    "result_text",
    "tool",
]

ToolFunction = Callable[..., Any]
ToolInvoker = Callable[[Mapping[str, object]], Awaitable[object]]
"""Runs a tool on arguments already validated against its schema."""
_F = TypeVar("_F", bound=Callable[..., Any])
ToolMode = Literal["auto", "read_only", "needs_approval"]
OutcomeStatus = Literal["ok", "error", "timeout", "too_large"]

TOOL_TRACE_CONTEXT: ContextVar[Mapping[str, str]] = ContextVar(
    "streamproxy_tool_trace", default=MappingProxyType({})
)
"""The W3C trace context (``traceparent``...) of the tool call running in this task, for tools
that call out: an MCP server gets it as its ``tools/call`` ``_meta``. Empty when tracing is off."""

MODE_DESCRIPTIONS: dict[ToolMode, str] = {
    "auto": "runs when its round ends cleanly",
    "read_only": "starts mid-stream as soon as its call is sealed",
    "needs_approval": "runs only after the user approves the call",
}

# OpenAI and DeepSeek accept function names of 1-64 letters, digits, underscores and hyphens.
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEFAULT_TOOL_TIMEOUT = 30.0
# An error text sent back to the model is cut to this size: enough to correct a call.
_MAX_ERROR_TEXT = 2000
_DECLARATION_ATTRIBUTE = "__streamproxy_tool__"


@dataclass(frozen=True, slots=True)
class _Declaration:
    name: str | None
    description: str | None
    mode: ToolMode
    timeout: float


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """What running a tool produced; ``content`` is the text the model gets as the result."""

    status: OutcomeStatus
    content: str
    duration: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Tool:
    """One server tool: how to call it, the schema it is checked against, and when it runs."""

    name: str
    description: str
    parameters: dict[str, object]
    """The argument schema sent upstream: DeepSeek's strict form when ``is_strict``."""
    is_strict: bool
    """False when strict mode cannot express the schema; the tool is then sent non-strict."""
    schema: SchemaSource
    """What a sealed call's arguments must validate against (``ChatStream(tools=...)``)."""
    invoke: ToolInvoker
    mode: ToolMode = "auto"
    timeout: float = DEFAULT_TOOL_TIMEOUT
    origin: str = "python"
    """Where the tool comes from, for logs: ``python`` or ``mcp:SERVER``."""

    @classmethod
    def from_function(
        cls,
        function: ToolFunction,
        *,
        name: str | None = None,
        description: str | None = None,
        mode: ToolMode | None = None,
        timeout: float | None = None,
    ) -> Tool:
        """Build a tool from ``function``; arguments override its ``@tool`` declaration."""
        declaration: _Declaration | None = getattr(function, _DECLARATION_ATTRIBUTE, None)
        tool_name = name or (declaration.name if declaration else None) or function.__name__
        summary, argument_docs = _parse_docstring(inspect.getdoc(function) or "")
        model = _arguments_model(function, _checked_name(tool_name), argument_docs)
        parameters, is_strict = upstream_parameters(model.model_json_schema())
        return cls(
            name=tool_name,
            description=description
            or (declaration.description if declaration else None)
            or summary,
            parameters=parameters,
            is_strict=is_strict,
            schema=model,
            invoke=_function_invoker(function, model),
            mode=mode or (declaration.mode if declaration else "auto"),
            timeout=_checked_timeout(
                tool_name,
                timeout or (declaration.timeout if declaration else DEFAULT_TOOL_TIMEOUT),
            ),
        )

    @classmethod
    def from_schema(
        cls,
        name: str,
        invoke: ToolInvoker,
        *,
        parameters: Mapping[str, object],
        description: str = "",
        mode: ToolMode = "auto",
        timeout: float = DEFAULT_TOOL_TIMEOUT,
        origin: str = "python",
    ) -> Tool:
        """A tool from a JSON Schema and an async callable (an MCP server's tool, say)."""
        upstream, is_strict = upstream_parameters(parameters)
        return cls(
            name=_checked_name(name),
            description=description,
            parameters=upstream,
            is_strict=is_strict,
            schema=dict(parameters),
            invoke=invoke,
            mode=mode,
            timeout=_checked_timeout(name, timeout),
            origin=origin,
        )

    @property
    def is_read_only(self) -> bool:
        return self.mode == "read_only"

    @property
    def needs_approval(self) -> bool:
        return self.mode == "needs_approval"

    def describe(self) -> str:
        """One line for the start-up log: name, origin and mode."""
        return f"tool {self.name} ({self.origin}): {self.mode}, {MODE_DESCRIPTIONS[self.mode]}"

    def openai_tool(self, *, strict: bool) -> dict[str, object]:
        """The ``{"type": "function", ...}`` entry for a request's ``tools`` list."""
        function: dict[str, object] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            function["description"] = self.description
        if strict and self.is_strict:
            function["strict"] = True
        return {"type": "function", "function": function}

    async def run(self, arguments: Mapping[str, object], *, max_result_size: int) -> ToolOutcome:
        """Call the tool with its timeout; every failure becomes an outcome the model can read.

        ``CancelledError`` is never swallowed: a cancelled run propagates.
        """
        started = time.perf_counter()
        status: OutcomeStatus
        try:
            async with asyncio.timeout(self.timeout):
                result = await self.invoke(arguments)
            content = result_text(result)
        except TimeoutError:
            status = "timeout"
            content = f"error: tool {self.name} timed out after {self.timeout:g} s"
        except ValidationError as error:
            status = "error"
            content = f"error: invalid arguments for {self.name}: {_validation_summary(error)}"
        except Exception as error:  # a tool's own failure (or its result's) goes to the model
            status = "error"
            content = f"error: {type(error).__name__}: {_safe_text(error)}"[:_MAX_ERROR_TEXT]
        else:
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
    needs_approval: bool = False,
    timeout: float = DEFAULT_TOOL_TIMEOUT,
) -> Callable[[_F], _F]: ...


def tool(
    function: _F | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    read_only: bool = False,
    needs_approval: bool = False,
    timeout: float = DEFAULT_TOOL_TIMEOUT,
) -> _F | Callable[[_F], _F]:
    """Declare a function as a tool: ``@tool``, ``@tool(read_only=True, timeout=5)`` or
    ``@tool(needs_approval=True)``.

    The function is returned unchanged (still callable as before); the declaration is read when
    it is added to a ``ToolSet``.
    """
    if read_only and needs_approval:
        raise ToolDefinitionError("a tool is read_only or needs_approval, not both")
    mode: ToolMode = "read_only" if read_only else "needs_approval" if needs_approval else "auto"

    def declare(target: _F) -> _F:
        setattr(target, _DECLARATION_ATTRIBUTE, _Declaration(name, description, mode, timeout))
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

    def remove(self, name: str) -> None:
        """Drop a tool (an MCP server's tool list changed); unknown names are ignored."""
        self._tools.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(list(self._tools.values()))

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

    def schemas(self) -> dict[str, SchemaSource]:
        """Name -> argument schema, the form ``ChatStream(tools=...)`` validates against."""
        return {entry.name: entry.schema for entry in self._tools.values()}


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
    """A tool's return value as the text sent to the model: strings as they are, else JSON.

    Raises:
        TypeError: the value has no JSON form and its ``str()`` fails too (``Tool.run`` turns
            that into an error result for the model).
    """
    if isinstance(result, str):
        return result
    if isinstance(result, BaseModel):
        return result.model_dump_json()
    try:
        return pydantic_core.to_json(result).decode()
    except (pydantic_core.PydanticSerializationError, ValueError, RecursionError):
        pass
    try:
        return str(result)
    except Exception as error:
        raise TypeError(
            f"the tool returned a {type(result).__name__} that cannot be turned into text"
        ) from error


def _safe_text(error: BaseException) -> str:
    try:
        return str(error)
    except Exception:
        return "(the error's message cannot be shown)"


def _checked_name(name: str) -> str:
    if not _NAME_PATTERN.match(name):
        raise ToolDefinitionError(f"tool name {name!r} must be 1-64 letters, digits, '_' or '-'")
    return name


def _checked_timeout(name: str, timeout: float) -> float:
    if timeout <= 0:
        raise ToolDefinitionError(f"tool {name}: timeout must be positive")
    return timeout


def _function_invoker(function: ToolFunction, model: type[BaseModel]) -> ToolInvoker:
    """Validate with the full model (constraints strict mode dropped) and call the function."""

    async def invoke(arguments: Mapping[str, object]) -> object:
        values = model.model_validate(dict(arguments))
        keywords = {field: getattr(values, field) for field in type(values).model_fields}
        if inspect.iscoroutinefunction(function):
            return await function(**keywords)
        result = await asyncio.to_thread(functools.partial(function, **keywords))
        if inspect.isawaitable(result):
            return await result
        return result

    return invoke


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
