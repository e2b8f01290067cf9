"""The outbox relay: publishes ``bus_outbox`` rows past a cursor to a non-SQL bus.

Domain operations that decide what to publish inside their own transaction
(``Bus.stage_on``) write outbox rows; with the NATS bus this relay publishes them to
JetStream and then advances its cursor (a ``bus_cursors`` row, ``relay:nats``).
At-least-once: a crash between the publish and the cursor update publishes the rows
again, and JetStream drops the repeat by its message id (the event id). The cursor
starts at 0, so rows written before the first relay ever ran are published too.

Decisions:
- Several processes run the relay against one PostgreSQL: a round holds the cursor row
  ``FOR UPDATE SKIP LOCKED`` from reading the page to moving the cursor, so one relay
  works at a time and the others skip the round. On SQLite (one host, one writer) the
  row is read plainly and the cursor is moved through the group committer (a write on
  the reading connection could fail on SQLite's lock), with a compare-and-set so that a
  cursor never moves backwards.
- Sequence gaps: on PostgreSQL a row with a lower ``seq`` can commit after a higher one
  is visible (concurrent transactions), and some numbers are never used (rollbacks).
  The cursor stops before a gap until ``gap_wait`` seconds after the row beyond it was
  first seen (a transaction that allocated the missing number commits by then or never);
  rows beyond a young gap are published already, and not again by this process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from services.bus.staging import OUTBOX
from services.bus.tables import ConsumerCursor
from services.committer import GroupCommitter, WriteSet
from services.db import table_of, utcnow
from services.observability import metrics
from services.tasks import cancel_and_wait

log = logging.getLogger(__name__)

CURSORS = table_of(ConsumerCursor)
RELAY_CURSOR = "relay:nats"


@dataclass(frozen=True)
class StagedEvent:
    seq: int
    event_id: str
    type: str
    payload: str


#: publishes the rows durably; raises if any of them was not taken
PublishStaged = Callable[[Sequence[StagedEvent]], Awaitable[None]]


class OutboxRelay:
    def __init__(
        self,
        committer: GroupCommitter,
        publish: PublishStaged,
        *,
        name: str = RELAY_CURSOR,
        page_size: int = 500,
        poll: float = 1.0,
        gap_wait: float = 10.0,
        max_backoff: float = 30.0,
    ) -> None:
        self._committer = committer
        self._publish = publish
        self._name = name
        self._page_size = page_size
        self._poll = poll
        self._gap_wait = gap_wait
        self._max_backoff = max_backoff
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._cursor_ready = False
        #: seqs past the cursor this process has published (beyond a young gap)
        self._sent: set[int] = set()
        #: rows this relay published so far (history rows are never among them)
        self.published_rows = 0
        #: first row after a gap -> when it was first seen (monotonic)
        self._gaps: dict[int, float] = {}

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"bus:{self._name}")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        failures = 0
        while True:
            self._wake.clear()
            more = False
            try:
                more = await self.relay_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                if failures == 1 or failures % 50 == 0:
                    log.warning("outbox relay: round failed (%d): %s", failures, exc)
            if more:
                continue
            wait = self._poll if not failures else min(self._max_backoff, 0.5 * 2**failures)
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass

    async def relay_once(self) -> bool:
        """One round: publish a page past the cursor and move it. True if there is more."""
        if not self._cursor_ready:
            writes = WriteSet()
            writes.insert_ignore(
                CURSORS, {"consumer": self._name, "position": 0, "updated_at": utcnow()}
            )
            await self._committer.commit(writes)
            self._cursor_ready = True
        engine = self._committer.engine
        locking = engine.dialect.name == "postgresql"
        async with engine.begin() as conn:
            position = await self._claim(conn, locking)
            if position is None:
                return False  # another relay holds the cursor this round
            page = (
                await conn.execute(
                    select(
                        OUTBOX.c.seq,
                        OUTBOX.c.event_id,
                        OUTBOX.c.type,
                        OUTBOX.c.payload,
                        OUTBOX.c.published,
                    )
                    .where(OUTBOX.c.seq > position)
                    .order_by(OUTBOX.c.seq)
                    .limit(self._page_size)
                )
            ).all()
            rows = [StagedEvent(r.seq, r.event_id, r.type, r.payload) for r in page]
            # History rows (published by their producer) only move the cursor.
            history = {r.seq for r in page if r.published}
            fresh = [row for row in rows if row.seq not in self._sent | history]
            if fresh:
                await self._publish(fresh)
                self._sent.update(row.seq for row in fresh)
                self.published_rows += len(fresh)
            new = self._safe_position(position, [row.seq for row in rows])
            newest = (await conn.execute(select(func.max(OUTBOX.c.seq)))).scalar() or 0
            metrics.child(metrics.OUTBOX_BACKLOG, self._name).set(max(0, newest - new))
            if new > position and locking:
                await conn.run_sync(self._advance(position, new))
        if new > position and not locking:
            writes = WriteSet()
            writes.then(self._advance(position, new))
            await self._committer.commit(writes)
        self._sent = {seq for seq in self._sent if seq > new}
        return len(rows) == self._page_size and new > position

    async def _claim(self, conn: AsyncConnection, locking: bool) -> int | None:
        query = select(CURSORS.c.position).where(CURSORS.c.consumer == self._name)
        if locking:
            query = query.with_for_update(skip_locked=True)
        position = (await conn.execute(query)).scalar()
        return None if position is None else int(position)

    def _advance(self, old: int, new: int) -> Callable[[Connection], None]:
        def advance(conn: Connection) -> None:
            conn.execute(
                CURSORS.update()
                .where(CURSORS.c.consumer == self._name, CURSORS.c.position == old)
                .values(position=new, updated_at=utcnow())
            )

        return advance

    def _safe_position(self, position: int, seqs: list[int]) -> int:
        """The furthest the cursor may move: up to the first gap that is still young."""
        now = time.monotonic()
        pos = position
        for seq in seqs:
            if seq != pos + 1:
                first_seen = self._gaps.setdefault(seq, now)
                if now - first_seen < self._gap_wait:
                    break
            pos = seq
        self._gaps = {seq: at for seq, at in self._gaps.items() if seq > pos}
        return pos
