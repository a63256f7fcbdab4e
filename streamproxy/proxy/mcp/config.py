"""The ``--mcp FILE`` file: which MCP servers to start or reach, checked before anything runs.

The shape is the one Claude Desktop, Cursor and VS Code use (VS Code's ``"servers"`` key aside)::

    {
      "mcpServers": {
        "files": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "."],
                  "env": {"LOG_LEVEL": "warn"}, "timeout": 30},
        "search": {"url": "https://mcp.example.com/mcp",
                   "headers": {"Authorization": "Bearer ${env:SEARCH_TOKEN}"}}
      }
    }

A server has either ``command`` (stdio: ``args``, ``env``, ``cwd``) or ``url`` (streamable HTTP:
``headers``); both take ``timeout`` (seconds per tool call, default 30), ``disabled`` (skip it)
and ``type`` (``stdio`` or ``http``, as VS Code writes it). ``${env:NAME}`` (or ``${NAME}``) in
``args``, ``env``, ``url`` and ``headers`` is replaced by that environment variable, so a token
need not be written in the file. Anything else is an error that names the server and the key.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from streamproxy.errors import ToolDefinitionError
from streamproxy.proxy.tools import DEFAULT_TOOL_TIMEOUT

__all__ = ["HttpServer", "McpConfig", "McpServer", "StdioServer", "load_mcp_config"]

# A config file is a few kilobytes; anything near this is not one.
MAX_CONFIG_SIZE = 1024 * 1024
MAX_TIMEOUT = 3600.0
_COMMON_KEYS = frozenset({"timeout", "disabled", "type"})
_STDIO_KEYS = _COMMON_KEYS | {"command", "args", "env", "cwd"}
_HTTP_KEYS = _COMMON_KEYS | {"url", "headers"}
_TYPES = {"stdio": "stdio", "http": "http", "streamable-http": "http", "streamableHttp": "http"}
_VARIABLE = re.compile(r"\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True, kw_only=True)
class StdioServer:
    """A server the proxy starts as a subprocess and talks to over its stdin and stdout."""

    name: str
    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Added to the SDK's small safe environment (PATH, HOME, ...): the proxy's own variables,
    its upstream key among them, are not passed on."""
    cwd: str | None = None
    timeout: float = DEFAULT_TOOL_TIMEOUT


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpServer:
    """A server reached over streamable HTTP."""

    name: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeout: float = DEFAULT_TOOL_TIMEOUT


McpServer = StdioServer | HttpServer


@dataclass(frozen=True, slots=True)
class McpConfig:
    """The enabled servers, in the file's order (which decides name collisions)."""

    servers: tuple[McpServer, ...]
    source: str = "<config>"


def load_mcp_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> McpConfig:
    """Read and check an ``mcpServers`` file.

    Raises:
        ToolDefinitionError: the file is missing, is not JSON, or does not have the shape above
            (the message names the server and the key).
    """
    source = str(path)
    try:
        with Path(path).open("rb") as file:
            raw = file.read(MAX_CONFIG_SIZE + 1)
    except OSError as error:
        raise ToolDefinitionError(f"--mcp {source}: cannot read it: {error.strerror}") from None
    if len(raw) > MAX_CONFIG_SIZE:
        raise ToolDefinitionError(f"--mcp {source}: over {MAX_CONFIG_SIZE} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise ToolDefinitionError(f"--mcp {source}: not JSON: {error}") from None
    return parse_mcp_config(data, source=source, environ=os.environ if environ is None else environ)


def parse_mcp_config(data: object, *, source: str, environ: Mapping[str, str]) -> McpConfig:
    """Check the parsed file; see ``load_mcp_config``."""
    where = f"--mcp {source}"
    if not isinstance(data, dict):
        raise ToolDefinitionError(f"{where}: expected an object with an 'mcpServers' key")
    if "mcpServers" not in data:
        hint = " (VS Code's mcp.json calls it 'servers': rename it)" if "servers" in data else ""
        raise ToolDefinitionError(f"{where}: no 'mcpServers' key{hint}")
    extra = sorted(set(data) - {"mcpServers"})
    if extra:
        raise ToolDefinitionError(f"{where}: unknown top-level keys {extra}; expected mcpServers")
    entries = data["mcpServers"]
    if not isinstance(entries, dict):
        raise ToolDefinitionError(f"{where}: 'mcpServers' must be an object of named servers")
    servers: list[McpServer] = []
    for name, entry in entries.items():
        server = _server(name, entry, f"{where}: server {name!r}", environ)
        if server is not None:
            servers.append(server)
    return McpConfig(tuple(servers), source)


def _server(name: str, entry: object, where: str, environ: Mapping[str, str]) -> McpServer | None:
    if not name.strip():
        raise ToolDefinitionError(f"{where}: a server needs a non-empty name")
    if not isinstance(entry, dict):
        raise ToolDefinitionError(f"{where}: expected an object with 'command' or 'url'")
    kind = _kind(entry, where)
    allowed = _STDIO_KEYS if kind == "stdio" else _HTTP_KEYS
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ToolDefinitionError(
            f"{where}: unknown keys {unknown} for a {kind} server; allowed: {sorted(allowed)}"
        )
    disabled = entry.get("disabled", False)
    if not isinstance(disabled, bool):
        raise ToolDefinitionError(f"{where}: 'disabled' must be true or false")
    timeout = _timeout(entry.get("timeout", DEFAULT_TOOL_TIMEOUT), where)
    if disabled:
        return None
    if kind == "stdio":
        command = _text(entry["command"], f"{where}: 'command'", environ)
        if not command:
            raise ToolDefinitionError(f"{where}: 'command' is empty")
        cwd = entry.get("cwd")
        if cwd is not None and not isinstance(cwd, str):
            raise ToolDefinitionError(f"{where}: 'cwd' must be a string")
        return StdioServer(
            name=name,
            command=command,
            args=tuple(_strings(entry.get("args", []), f"{where}: 'args'", environ)),
            env=_mapping(entry.get("env", {}), f"{where}: 'env'", environ),
            cwd=cwd,
            timeout=timeout,
        )
    url = _text(entry["url"], f"{where}: 'url'", environ)
    if not url.startswith(("http://", "https://")):
        raise ToolDefinitionError(f"{where}: 'url' must start with http:// or https://")
    return HttpServer(
        name=name,
        url=url,
        headers=_mapping(entry.get("headers", {}), f"{where}: 'headers'", environ),
        timeout=timeout,
    )


def _kind(entry: dict[str, object], where: str) -> str:
    has_command, has_url = "command" in entry, "url" in entry
    if has_command and has_url:
        raise ToolDefinitionError(f"{where}: has both 'command' and 'url'; give one")
    if not has_command and not has_url:
        raise ToolDefinitionError(f"{where}: needs 'command' (stdio) or 'url' (streamable HTTP)")
    kind = "stdio" if has_command else "http"
    declared = entry.get("type")
    if declared is None:
        return kind
    if declared == "sse":
        raise ToolDefinitionError(
            f"{where}: the SSE transport is not supported; use the server's streamable HTTP URL"
        )
    if not isinstance(declared, str) or declared not in _TYPES:
        raise ToolDefinitionError(f"{where}: 'type' must be 'stdio' or 'http', got {declared!r}")
    if _TYPES[declared] != kind:
        raise ToolDefinitionError(
            f"{where}: 'type' is {declared!r} but the server has "
            f"{'command' if has_command else 'url'}"
        )
    return kind


def _timeout(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolDefinitionError(f"{where}: 'timeout' must be a number of seconds")
    if not 0 < value <= MAX_TIMEOUT:
        raise ToolDefinitionError(f"{where}: 'timeout' must be in (0, {MAX_TIMEOUT:g}] seconds")
    return float(value)


def _text(value: object, where: str, environ: Mapping[str, str]) -> str:
    if not isinstance(value, str):
        raise ToolDefinitionError(f"{where} must be a string")

    def substitute(match: re.Match[str]) -> str:
        variable = match.group(1)
        if variable not in environ:
            raise ToolDefinitionError(f"{where} names ${{env:{variable}}}, which is not set")
        return environ[variable]

    return _VARIABLE.sub(substitute, value)


def _strings(value: object, where: str, environ: Mapping[str, str]) -> list[str]:
    if not isinstance(value, list):
        raise ToolDefinitionError(f"{where} must be a list of strings")
    return [_text(item, f"{where} item {index}", environ) for index, item in enumerate(value)]


def _mapping(value: object, where: str, environ: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ToolDefinitionError(f"{where} must be an object of strings")
    return {str(key): _text(item, f"{where} {key!r}", environ) for key, item in value.items()}
