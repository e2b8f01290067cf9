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

import asyncio
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.bus.staging import OUTBOX
from services.bus.tables import ConsumerCursor
from services.db import table_of

CURSORS = table_of(ConsumerCursor)


async def _cutoff_seq(conn: AsyncConnection, older_than: datetime) -> int:
    """The highest seq received before ``older_than`` (0 if none), by bisection over
    the primary key (no index on the time on the hot path)."""
    lo = (await conn.execute(select(func.min(OUTBOX.c.seq)))).scalar()
    hi = (await conn.execute(select(func.max(OUTBOX.c.seq)))).scalar()
    if lo is None or hi is None:
        return 0
    first = select(OUTBOX.c.seq, OUTBOX.c.received_at).order_by(OUTBOX.c.seq).limit(1)
    found, lo_i, hi_i = 0, int(lo), int(hi)
    while lo_i <= hi_i:
        mid = (lo_i + hi_i) // 2
        row = (await conn.execute(first.where(OUTBOX.c.seq >= mid))).first()
        if row is None:
            hi_i = mid - 1
        elif row.received_at < older_than:
            found = max(found, int(row.seq))
            lo_i = int(row.seq) + 1
        else:
            hi_i = mid - 1
    return found


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
        limit = await _cutoff_seq(conn, older_than)
        floor = await _consumer_floor(conn, older_than)
    if floor is not None:
        limit = min(limit, floor)
    total = 0
    while limit > 0:
        async with engine.begin() as conn:
            seqs = (
                (
                    await conn.execute(
                        select(OUTBOX.c.seq)
                        .where(OUTBOX.c.seq <= limit)
                        .order_by(OUTBOX.c.seq)
                        .limit(chunk)
                    )
                )
                .scalars()
                .all()
            )
            if not seqs:
                return total
            await conn.execute(delete(OUTBOX).where(OUTBOX.c.seq.in_(seqs)))
        total += len(seqs)
        await asyncio.sleep(0)
    return total


def cutoff(now: datetime, days: int) -> datetime:
    return now - timedelta(days=days)
