"""Partial updates (PATCH bodies): only the fields sent change, some may not be null."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel


def refuse_nulls(body: BaseModel, required: Iterable[str]) -> None:
    """Raise ``ValueError`` naming every field of ``required`` sent as null."""
    nulls = [f for f in required if f in body.model_fields_set and getattr(body, f) is None]
    if nulls:
        raise ValueError(f"may not be null: {', '.join(nulls)}")
