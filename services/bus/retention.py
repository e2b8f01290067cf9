"""Event retention: ``bus_outbox`` rows older than the retention period are deleted.

The outbox is both the embedded bus's queue and every charger's event history, so a row
goes only when it is old enough **and** every durable consumer (and the NATS relay) has
passed it. Decision: a cursor that has not moved for the whole retention period does not
hold rows back — a consumer saves its cursor whenever it delivers one of its events, so
such a cursor belongs to a retired consumer or to one that has had nothing to do (and lost
nothing by the rows going); a consumer stopped for longer than the retention period does
miss what it had not read. Deleting runs in chunks, like the message-log retention.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.bus.staging import OUTBOX
from services.bus.tables import ConsumerCursor
from services.db import table_of
from services.pruning import delete_through, last_key_before

CURSORS = table_of(ConsumerCursor)


async def _consumer_floor(conn: AsyncConnection, older_than: datetime) -> int | None:
    """The lowest position of the cursors that moved within the period (None: none did)."""
    floor = (
        await conn.execute(
            select(func.min(CURSORS.c.position)).where(CURSORS.c.updated_at >= older_than)
        )
    ).scalar()
    return int(floor) if floor is not None else None


async def prune_outbox(engine: AsyncEngine, older_than: datetime, chunk: int = 5000) -> int:
    """Delete events received before ``older_than`` that no live consumer still needs."""
    async with engine.connect() as conn:
        limit = await last_key_before(conn, OUTBOX.c.seq, OUTBOX.c.received_at, older_than)
        floor = await _consumer_floor(conn, older_than)
    if floor is not None:
        limit = min(limit, floor)
    return await delete_through(engine, OUTBOX.c.seq, limit, chunk)


def cutoff(now: datetime, days: int) -> datetime:
    return now - timedelta(days=days)
