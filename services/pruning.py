"""Deleting old rows of an append-only table: find the last row before a time, then delete
up to it in chunks.

Shared by the raw message log retention (``csms/retention.py``) and the event retention
(``services/bus/retention.py``). Chunks keep a large backlog from holding a long write
lock (SQLite) or a long transaction (PostgreSQL).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from sqlalchemy import Column, delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


async def last_key_before(
    conn: AsyncConnection, key: Column[Any], at: Column[Any], older_than: datetime
) -> int:
    """The highest ``key`` whose ``at`` is before ``older_than`` (0 if none).

    Keys grow with time, so bisecting over the key range with primary-key lookups finds it
    without an index on the time (which would cost every insert on the hot path)."""
    lo = (await conn.execute(select(func.min(key)))).scalar()
    hi = (await conn.execute(select(func.max(key)))).scalar()
    if lo is None or hi is None:
        return 0
    first = select(key, at).order_by(key).limit(1)
    found, lo_i, hi_i = 0, int(lo), int(hi)
    while lo_i <= hi_i:
        mid = (lo_i + hi_i) // 2
        row = (await conn.execute(first.where(key >= mid))).first()
        if row is None:
            hi_i = mid - 1
        elif row[1] < older_than:
            found = max(found, int(row[0]))
            lo_i = int(row[0]) + 1
        else:
            hi_i = mid - 1
    return found


async def delete_through(engine: AsyncEngine, key: Column[Any], last: int, chunk: int) -> int:
    """Delete the rows of ``key``'s table whose key is at most ``last``, ``chunk`` rows per
    transaction; returns how many were deleted."""
    table = key.table
    total = 0
    while last > 0:
        async with engine.begin() as conn:
            keys = (
                (await conn.execute(select(key).where(key <= last).order_by(key).limit(chunk)))
                .scalars()
                .all()
            )
            if not keys:
                return total
            await conn.execute(delete(table).where(key.in_(keys)))
        total += len(keys)
        await asyncio.sleep(0)
    return total
