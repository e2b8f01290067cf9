"""Writes that may break a unique constraint, turned into a value instead of a failure.

Decision: a uniqueness check followed by a write races between PostgreSQL replicas, so
the write itself is the check. On PostgreSQL a failed statement aborts the transaction,
so the statement runs in a savepoint that is rolled back on the violation; on SQLite a
failed statement is backed out alone and the transaction (the group commit's batch)
goes on. Either way the op has written nothing and may still raise a ``DomainError``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Executable
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.exc import IntegrityError


def execute_unique(conn: Connection, statement: Executable) -> CursorResult[Any] | None:
    """Execute ``statement``; None if it broke an integrity constraint (nothing written)."""
    try:
        if conn.dialect.name == "postgresql":
            with conn.begin_nested():
                return conn.execute(statement)
        return conn.execute(statement)
    except IntegrityError:
        return None
