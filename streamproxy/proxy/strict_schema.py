"""Tool parameter schemas in the form DeepSeek's strict mode accepts.

Strict mode (``"strict": true`` on a function, DeepSeek's ``/beta`` endpoint) takes a subset of
JSON Schema: every property required, ``additionalProperties: false`` on every object, ``$ref``
written out, and only the keywords type, properties, required, additionalProperties, items,
enum, anyOf and description. ``strict_schema`` rewrites a pydantic (or MCP) schema into that
form; validation keywords strict mode lacks (``minimum``, ``pattern``...) are dropped from the
schema sent upstream, and the full schema is still enforced before a tool runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["StrictSchemaUnsupportedError", "strict_schema", "upstream_parameters"]

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


class StrictSchemaUnsupportedError(ValueError):
    """A schema uses something strict mode cannot express (the tool is then sent non-strict)."""


def upstream_parameters(schema: Mapping[str, object]) -> tuple[dict[str, object], bool]:
    """``(parameters, is_strict)``: the strict form, or the schema without titles if none."""
    try:
        return strict_schema(schema), True
    except StrictSchemaUnsupportedError:
        return _strip_titles(schema), False


def strict_schema(schema: Mapping[str, object]) -> dict[str, object]:
    """Rewrite a pydantic JSON Schema into the form DeepSeek's strict mode accepts.

    Raises:
        StrictSchemaUnsupportedError: the schema needs something strict mode lacks (an open map,
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
            raise StrictSchemaUnsupportedError(f"recursive or unknown $ref {reference}")
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _strict_node(merged, defs, (*seen, name))
    all_of = node.get("allOf")
    if isinstance(all_of, list):
        if len(all_of) != 1 or not isinstance(all_of[0], Mapping):
            raise StrictSchemaUnsupportedError("allOf with more than one schema")
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
                raise StrictSchemaUnsupportedError(f"{key} is not a list")
            result["anyOf"] = [_strict_node(item, defs, seen) for item in value]
        elif key == "properties":
            if not isinstance(value, Mapping):
                raise StrictSchemaUnsupportedError("properties is not an object")
            result[key] = {
                name: _strict_node(_as_mapping(sub), defs, seen) for name, sub in value.items()
            }
        elif key == "items":
            result[key] = _strict_node(_as_mapping(value), defs, seen)
        elif key == "additionalProperties":
            if value not in (False, None):
                raise StrictSchemaUnsupportedError("an open map (additionalProperties)")
        elif key in _KEPT_KEYWORDS:
            result[key] = value
        else:
            raise StrictSchemaUnsupportedError(f"keyword {key!r}")
    if isinstance(result.get("type"), list):
        raise StrictSchemaUnsupportedError("a list of types")
    if result.get("type") == "object" or "properties" in result:
        properties = result.setdefault("properties", {})
        assert isinstance(properties, Mapping)
        result["required"] = list(properties)
        result["additionalProperties"] = False
    if not ({"type", "enum", "anyOf"} & result.keys()):
        raise StrictSchemaUnsupportedError("an untyped value")
    return result


def _as_mapping(value: object) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise StrictSchemaUnsupportedError(f"a schema that is not an object: {value!r}")
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
