"""The core is sans-I/O: it imports nothing that does I/O; its public names are sorted."""

from __future__ import annotations

import ast
from pathlib import Path

import streamproxy.core

CORE = Path(streamproxy.core.__file__).parent
ALLOWED_ROOTS = {
    "__future__",
    "collections",
    "dataclasses",
    "enum",
    "hashlib",
    "json",
    "re",
    "typing",
    "orjson",
    "pydantic",
    "jsonschema",
    "streamproxy",
}  # stdlib pieces without I/O, and the three libraries the core may use
FORBIDDEN_CALLS = {"open", "print", "input", "exec", "eval"}


def test_core_modules_import_only_allowed_roots() -> None:
    seen: dict[str, set[str]] = {}
    for path in sorted(CORE.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                seen.setdefault(name.split(".")[0], set()).add(path.name)
    assert set(seen) - ALLOWED_ROOTS == set(), {k: seen[k] for k in set(seen) - ALLOWED_ROOTS}
    assert "streamproxy" in seen  # the walk really read the modules


def test_core_modules_call_no_io_builtins() -> None:
    for path in sorted(CORE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in FORBIDDEN_CALLS, f"{path.name} calls {node.func.id}"


def test_public_names_are_sorted_and_complete() -> None:
    exported = streamproxy.core.__all__
    assert exported == sorted(exported)
    for name in exported:
        assert hasattr(streamproxy.core, name)
