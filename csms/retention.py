"""Raw message log retention: frames older than the retention period are deleted.

Runs in small chunks so a large backlog never holds a long write lock (SQLite) or a
long transaction (PostgreSQL).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from csms.context import CsmsContext
from csms.state import MESSAGE_LOG
from services.db import Database
from services.pruning import delete_through, last_key_before
from services.tasks import cancel_and_wait

log = logging.getLogger(__name__)


async def prune_message_log(db: Database, older_than: datetime, chunk: int = 5000) -> int:
    """Delete frames logged before ``older_than``; returns how many were deleted."""
    async with db.engine.connect() as conn:
        cutoff = await last_key_before(conn, MESSAGE_LOG.c.id, MESSAGE_LOG.c.at, older_than)
    return await delete_through(db.engine, MESSAGE_LOG.c.id, cutoff, chunk)


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
