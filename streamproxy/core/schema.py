"""Which tools a stream may call, and the schema each one's arguments must satisfy.

A ``ToolSchemas`` maps a tool name to a pydantic model, a JSON Schema (a dict, validated with
the ``jsonschema`` reference implementation, Draft 2020-12 unless ``$schema`` says otherwise), or
``None`` (a known tool whose arguments are not checked). A name that is not in the map is an
unknown tool, unless ``allow_unknown`` is set. Validation never coerces: the value the caller gets
in ``ToolCallReady.parsed`` is the JSON object exactly as sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
from pydantic import BaseModel, ValidationError

SchemaSource = type[BaseModel] | Mapping[str, object] | None

_MAX_REASON_ERRORS = 3


@dataclass(frozen=True, slots=True)
class SchemaVerdict:
    """Why arguments were refused: ``kind`` is ``unknown_tool`` or ``schema``."""

    kind: str
    reason: str


class ToolSchemas:
    """An allowlist of tool names, each with an optional argument schema."""

    def __init__(
        self, tools: Mapping[str, SchemaSource] | None = None, *, allow_unknown: bool = False
    ) -> None:
        self.allow_unknown = allow_unknown
        self._models: dict[str, type[BaseModel]] = {}
        self._validators: dict[str, jsonschema.protocols.Validator] = {}
        self._names: set[str] = set()
        for name, source in (tools or {}).items():
            self.add(name, source)

    def add(self, name: str, source: SchemaSource) -> None:
        """Allow ``name``, validated against ``source`` when it is not None."""
        self._names.add(name)
        if isinstance(source, type) and issubclass(source, BaseModel):
            self._models[name] = source
        elif isinstance(source, Mapping):
            schema = dict(source)
            validator_class = jsonschema.validators.validator_for(
                schema, default=jsonschema.Draft202012Validator
            )
            validator_class.check_schema(schema)
            self._validators[name] = validator_class(schema)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    @property
    def names(self) -> frozenset[str]:
        """The allowed tool names."""
        return frozenset(self._names)

    def check(self, name: str, value: dict[str, Any]) -> SchemaVerdict | None:
        """None when ``name`` is allowed and ``value`` valid; otherwise the verdict."""
        if name not in self._names:
            if self.allow_unknown:
                return None
            return SchemaVerdict("unknown_tool", f"no tool named {name!r} is available")
        model = self._models.get(name)
        if model is not None:
            try:
                model.model_validate(value, strict=False)
            except ValidationError as error:
                details = "; ".join(
                    f"{'.'.join(str(part) for part in item['loc']) or '(root)'}: {item['msg']}"
                    for item in error.errors()[:_MAX_REASON_ERRORS]
                )
                return SchemaVerdict("schema", f"arguments do not match {name}: {details}")
            return None
        validator = self._validators.get(name)
        if validator is not None:
            errors = sorted(validator.iter_errors(value), key=lambda error: list(error.path))
            if errors:
                details = "; ".join(
                    f"{'.'.join(str(part) for part in error.path) or '(root)'}: {error.message}"
                    for error in errors[:_MAX_REASON_ERRORS]
                )
                return SchemaVerdict("schema", f"arguments do not match {name}: {details}")
        return None
