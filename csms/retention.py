"""Raw message log retention: frames older than the retention period are deleted.

Runs in small chunks so a large backlog never holds a long write lock (SQLite) or a
long transaction (PostgreSQL).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from csms.context import CsmsContext
from csms.state import MESSAGE_LOG
from services.db import Database
from services.tasks import cancel_and_wait

log = logging.getLogger(__name__)


async def _cutoff_id(conn: AsyncConnection, older_than: datetime) -> int:
    """The highest id logged before ``older_than`` (0 if none).

    Ids grow with time, so bisecting over the id range with primary-key lookups finds it
    without an index on the timestamp (which would cost every insert on the hot path)."""
    lo = (await conn.execute(select(func.min(MESSAGE_LOG.c.id)))).scalar()
    hi = (await conn.execute(select(func.max(MESSAGE_LOG.c.id)))).scalar()
    if lo is None or hi is None:
        return 0
    first = select(MESSAGE_LOG.c.id, MESSAGE_LOG.c.at).order_by(MESSAGE_LOG.c.id).limit(1)
    found = 0
    lo_i, hi_i = int(lo), int(hi)
    while lo_i <= hi_i:
        mid = (lo_i + hi_i) // 2
        row = (await conn.execute(first.where(MESSAGE_LOG.c.id >= mid))).first()
        if row is None:
            hi_i = mid - 1
        elif row.at < older_than:
            found = max(found, int(row.id))
            lo_i = int(row.id) + 1
        else:
            hi_i = mid - 1
    return found


async def prune_message_log(db: Database, older_than: datetime, chunk: int = 5000) -> int:
    """Delete frames logged before ``older_than``; returns how many were deleted."""
    async with db.engine.connect() as conn:
        cutoff = await _cutoff_id(conn, older_than)
    total = 0
    while cutoff:
        async with db.engine.begin() as conn:
            ids = (
                (
                    await conn.execute(
                        select(MESSAGE_LOG.c.id)
                        .where(MESSAGE_LOG.c.id <= cutoff)
                        .order_by(MESSAGE_LOG.c.id)
                        .limit(chunk)
                    )
                )
                .scalars()
                .all()
            )
            if not ids:
                return total
            await conn.execute(delete(MESSAGE_LOG).where(MESSAGE_LOG.c.id.in_(ids)))
        total += len(ids)
        await asyncio.sleep(0)
    return total


class RetentionJob:
    def __init__(self, ctx: CsmsContext, every: float = 3600.0, first_after: float = 60.0) -> None:
        self.ctx = ctx
        self.every = every
        self.first_after = first_after
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.ctx.settings.message_log_retention_days > 0:
            self._task = asyncio.create_task(self._run(), name="message-log-retention")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def run_once(self) -> int:
        days = self.ctx.settings.message_log_retention_days
        cutoff = self.ctx.clock() - timedelta(days=days)
        deleted = await prune_message_log(self.ctx.db, cutoff)
        if deleted:
            log.info(
                "message log retention: deleted %d frames older than %s",
                deleted,
                cutoff.isoformat(),
            )
        return deleted

    async def _run(self) -> None:
        await asyncio.sleep(self.first_after)
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("message log retention failed")
            await asyncio.sleep(self.every)
