"""Idempotent consumers: apply an event's effects once, however often it is delivered."""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.bus.tables import InboxEntry
from services.db import utcnow


async def first_delivery(session: AsyncSession, consumer: str, event_id: str) -> bool:
    """Record ``event_id`` for ``consumer`` in the session's transaction.

    Returns False when it was already recorded: the caller then skips its effects.
    Commit the session together with the effects so both happen or neither does.
    """
    values = {"consumer": consumer, "event_id": event_id, "handled_at": utcnow()}
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(InboxEntry).values(**values).on_conflict_do_nothing()
    result = await session.execute(stmt)
    return bool(result.rowcount)  # type: ignore[attr-defined]
