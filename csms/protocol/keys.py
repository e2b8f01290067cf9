"""camelCase <-> snake_case key conversion, with each key's conversion cached.

The ``ocpp`` library re-runs two regexes per key per message; the mapping of a given
key never changes, so we reuse the library's own conversion once per distinct key.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from functools import lru_cache
from typing import Any

from ocpp.charge_point import camel_to_snake_case, snake_to_camel_case


@lru_cache(maxsize=4096)
def snake_key(key: str) -> str:
    return str(next(iter(camel_to_snake_case({key: None}))))


@lru_cache(maxsize=4096)
def camel_key(key: str) -> str:
    return str(next(iter(snake_to_camel_case({key: None}))))


def to_snake(data: Any) -> Any:
    if isinstance(data, dict):
        return {snake_key(k): to_snake(v) for k, v in data.items()}
    if isinstance(data, list):
        return [to_snake(v) for v in data]
    return data


def to_camel(data: Any) -> Any:
    if isinstance(data, dict):
        return {camel_key(k): to_camel(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [to_camel(v) for v in data if v is not None]
    return data


#: per type met in an answer: for a dataclass the (attribute, camelCase key) of each
#: field, None for any other type
_FIELDS: dict[type, tuple[tuple[str, str], ...] | None] = {}


def _fields_of(cls: type) -> tuple[tuple[str, str], ...] | None:
    try:
        return _FIELDS[cls]
    except KeyError:
        names = (
            tuple((f.name, camel_key(f.name)) for f in fields(cls)) if is_dataclass(cls) else None
        )
        _FIELDS[cls] = names
        return names


def payload_of(data: Any) -> Any:
    """A handler's answer (a ``call_result`` dataclass, a dict, or nested ones) as the
    camelCase JSON payload with ``None`` left out.

    The same result as the library's ``to_camel(remove_nones(serialize_as_dict(x)))``
    without ``dataclasses.asdict``'s deep copy and the per-call field introspection: each
    type met is looked at once."""
    if isinstance(data, dict):
        return {camel_key(k): payload_of(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [payload_of(v) for v in data if v is not None]
    names = _fields_of(type(data))
    if names is None:
        return data
    out = {}
    for name, key in names:
        value = getattr(data, name)
        if value is not None:
            out[key] = payload_of(value)
    return out
