"""Partial updates (PATCH bodies): only the fields sent change, some may not be null."""

from __future__ import annotations

from typing import Any

from pydantic import field_validator


def _not_null(value: object) -> object:
    if value is None:
        raise ValueError("may not be null")
    return value


def refuse_nulls(*fields: str) -> Any:
    """A field validator refusing null for each of ``fields`` when it is sent (a field left
    out is not validated, so it keeps its value): the 422 names the field, as ``body.name``.

    Decision: a field validator, not a model validator, because a model validator's error
    has no field and was answered as 'invalid fields: body'."""
    return field_validator(*fields)(_not_null)
