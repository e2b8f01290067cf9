"""JSON-schema validation of OCPP payloads, compiled once per action and cached.

Decision (PERFORMANCE.md): the ``ocpp`` library validates with ``jsonschema`` on every
message (a third of a StatusNotification's cost). We validate against the very same
schema files shipped with the library, compiled with ``fastjsonschema`` on first use.
Like the library we do not enforce ``format`` (chargers often send timestamps without
a zone; we parse those as UTC).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from typing import Any

import fastjsonschema

from csms.protocol.errors import ErrorKind, FrameError

Validator = Callable[[Any], Any]

_RULE_KIND = {
    "type": ErrorKind.type_constraint,
    "required": ErrorKind.occurrence_constraint,
    "minItems": ErrorKind.occurrence_constraint,
    "maxItems": ErrorKind.occurrence_constraint,
    "additionalProperties": ErrorKind.format_violation,
    "enum": ErrorKind.property_constraint,
    "maxLength": ErrorKind.property_constraint,
    "minLength": ErrorKind.property_constraint,
    "minimum": ErrorKind.property_constraint,
    "maximum": ErrorKind.property_constraint,
    "exclusiveMinimum": ErrorKind.property_constraint,
    "exclusiveMaximum": ErrorKind.property_constraint,
    "pattern": ErrorKind.property_constraint,
    "multipleOf": ErrorKind.property_constraint,
}

_cache: dict[tuple[str, str], Validator | None] = {}


def _schema_name(ocpp_version: str, action: str, response: bool) -> str:
    if response:
        return f"{action}Response"
    return action if ocpp_version == "1.6" else f"{action}Request"


def get_validator(ocpp_version: str, action: str, *, response: bool = False) -> Validator | None:
    """The compiled validator of an action's request (or response); None if no schema."""
    name = _schema_name(ocpp_version, action, response)
    key = (ocpp_version, name)
    if key in _cache:
        return _cache[key]
    folder = "v16" if ocpp_version == "1.6" else "v201"
    path = resources.files("ocpp") / folder / "schemas" / f"{name}.json"
    try:
        schema = json.loads(path.read_text(encoding="utf-8-sig"))
    except (FileNotFoundError, OSError):
        _cache[key] = None
        return None
    validator: Validator = fastjsonschema.compile(schema, use_formats=False)
    _cache[key] = validator
    return validator


def validate(ocpp_version: str, action: str, payload: Any, *, response: bool = False) -> None:
    validator = get_validator(ocpp_version, action, response=response)
    if validator is None:
        raise FrameError(ErrorKind.not_implemented, f"no schema for {action}")
    try:
        validator(payload)
    except fastjsonschema.JsonSchemaValueException as exc:
        kind = _RULE_KIND.get(exc.rule or "", ErrorKind.format_violation)
        field = (exc.name or "data").removeprefix("data").lstrip(".") or "payload"
        raise FrameError(
            kind,
            f"{action}: {exc.message}",
            details={"field": field, "rule": exc.rule},
        ) from None
