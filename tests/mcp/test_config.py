"""The --mcp file: the Claude Desktop / Cursor / VS Code shape, and clear errors for the rest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamproxy.errors import ToolDefinitionError
from streamproxy.proxy.mcp.config import (
    HttpServer,
    StdioServer,
    load_mcp_config,
    parse_mcp_config,
)


def parse(data: object, **environ: str) -> object:
    return parse_mcp_config(data, source="mcp.json", environ=environ)


def test_the_desktop_shape_with_both_transports(tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "files": {
                        "command": "npx",
                        "args": ["-y", "server-filesystem", "${env:ROOT}"],
                        "env": {"TOKEN": "${TOKEN}"},
                        "timeout": 5,
                    },
                    "search": {
                        "type": "http",
                        "url": "http://127.0.0.1:9/mcp",
                        "headers": {"Authorization": "Bearer ${env:TOKEN}"},
                    },
                    "off": {"command": "nothing", "disabled": True},
                }
            }
        )
    )
    config = load_mcp_config(path, environ={"ROOT": "/data", "TOKEN": "t0k"})
    files, search = config.servers
    assert files == StdioServer(
        name="files",
        command="npx",
        args=("-y", "server-filesystem", "/data"),
        env={"TOKEN": "t0k"},
        timeout=5.0,
    )
    assert search == HttpServer(
        name="search", url="http://127.0.0.1:9/mcp", headers={"Authorization": "Bearer t0k"}
    )
    assert "t0k" not in repr(config)  # env and headers may hold secrets


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "expected an object with an 'mcpServers' key"),
        ({"servers": {}}, "VS Code's mcp.json calls it 'servers'"),
        ({"mcpServers": {}, "extra": 1}, "unknown top-level keys ['extra']"),
        ({"mcpServers": []}, "'mcpServers' must be an object"),
        ({"mcpServers": {"a": {}}}, "server 'a': needs 'command' (stdio) or 'url'"),
        (
            {"mcpServers": {"a": {"command": "x", "url": "http://h/"}}},
            "server 'a': has both 'command' and 'url'",
        ),
        (
            {"mcpServers": {"a": {"command": "x", "headers": {}}}},
            "server 'a': unknown keys ['headers'] for a stdio server",
        ),
        ({"mcpServers": {"a": {"command": "x", "cmd": "y"}}}, "unknown keys ['cmd']"),
        ({"mcpServers": {"a": {"command": ["x"]}}}, "server 'a': 'command' must be a string"),
        ({"mcpServers": {"a": {"command": "x", "args": "y"}}}, "'args' must be a list"),
        ({"mcpServers": {"a": {"command": "x", "env": {"A": 1}}}}, "'env' 'A' must be a string"),
        ({"mcpServers": {"a": {"command": "x", "timeout": 0}}}, "'timeout' must be in"),
        ({"mcpServers": {"a": {"command": "x", "timeout": "5"}}}, "'timeout' must be a number"),
        ({"mcpServers": {"a": {"url": "ftp://h/"}}}, "'url' must start with http://"),
        ({"mcpServers": {"a": {"url": "http://h/", "type": "sse"}}}, "SSE transport"),
        ({"mcpServers": {"a": {"url": "http://h/", "type": "stdio"}}}, "'type' is 'stdio'"),
        ({"mcpServers": {"a": {"command": "${env:MISSING}"}}}, "MISSING}, which is not set"),
        ({"mcpServers": {" ": {"command": "x"}}}, "non-empty name"),
    ],
)
def test_bad_files_say_what_is_wrong(data: object, message: str) -> None:
    with pytest.raises(ToolDefinitionError) as caught:
        parse(data)
    assert message in str(caught.value)
    assert "mcp.json" in str(caught.value)


def test_a_file_that_is_not_json_or_missing(tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    path.write_text("{mcpServers")
    with pytest.raises(ToolDefinitionError, match="not JSON"):
        load_mcp_config(path)
    with pytest.raises(ToolDefinitionError, match="cannot read it"):
        load_mcp_config(tmp_path / "absent.json")
