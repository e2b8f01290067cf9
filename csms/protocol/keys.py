"""camelCase <-> snake_case key conversion, with each key's conversion cached.

The ``ocpp`` library re-runs two regexes per key per message; the mapping of a given
key never changes, so we reuse the library's own conversion once per distinct key.
"""

from __future__ import annotations

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
