"""Embedded bus: events committed to the ``bus_outbox`` table, delivered in-process.

Publishing adds outbox rows to the caller's group commit, so an event is durable in
the same transaction as the state change it describes. One dispatcher task per
consumer reads the outbox after its cursor, calls the handler, and advances the
cursor; after a crash, whatever the cursor had not passed is delivered again.

Commands (request/reply) are an in-process call of the executor this process's csms
registered with ``serve_commands``; without one every command is ``offline``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from services.bus.base import BatchHandler, Bus, CommandHandler, EventHandler
from services.bus.command_call import call_executor
from services.bus.contracts import Event, parse_event
from services.bus.staging import OUTBOX, outbox_row, write_outbox
from services.bus.tables import ConsumerCursor, DeadLetter
from services.commands.contracts import CommandReply, CommandRequest
from services.committer import GroupCommitter, WriteSet
from services.db import table_of, utcnow
from services.observability import metrics

log = logging.getLogger(__name__)

CURSORS = table_of(ConsumerCursor)
DEAD_LETTERS = table_of(DeadLetter)


@dataclass
class _Consumer:
    name: str
    types: frozenset[str]
    handler: EventHandler
    wake: asyncio.Event
    task: asyncio.Task[None] | None = None
    saved: int = 0
    batch: BatchHandler | None = None


class OutboxBus(Bus):
    transactional_outbox = True
    supports_stage_on = True

    def __init__(
        self,
        committer: GroupCommitter,
        *,
        engine: AsyncEngine | None = None,
        page_size: int = 500,
        batch_size: int = 50,
        max_attempts: int = 8,
        retry_delay: float = 0.25,
        max_retry_delay: float = 30.0,
        idle_poll: float = 1.0,
    ) -> None:
        self._committer = committer
        self._engine = engine if engine is not None else committer.engine
        self._page_size = page_size
        #: events per batch-handler call: one transaction each, kept small so the
        #: writer is never held long while chargers wait for their answers
        self._batch_size = batch_size
        self._max_attempts = max_attempts
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._idle_poll = idle_poll
        self._consumers: dict[str, _Consumer] = {}
        self._started = False
        self._staged_types: set[str] = set()
        self._command_handler: CommandHandler | None = None
        committer.on_commit(self._wake_interested)

    def stage(self, events: Sequence[Event], writes: WriteSet) -> None:
        for event in events:
            # insert_ignore: events a charger may cause twice carry a deterministic id.
            writes.insert_ignore(OUTBOX, outbox_row(event))
            metrics.child(metrics.EVENTS_PUBLISHED, event.type).inc()
            self._staged_types.add(event.type)

    def stage_on(self, conn: Connection, events: Sequence[Event]) -> None:
        write_outbox(conn, events)
        for event in events:
            metrics.child(metrics.EVENTS_PUBLISHED, event.type).inc()
            self._staged_types.add(event.type)

    async def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        writes = WriteSet()
        self.stage(events, writes)
        await self._committer.commit(writes)

    def subscribe(self, consumer: str, types: Iterable[str], handler: EventHandler) -> None:
        if consumer in self._consumers:
            raise ValueError(f"consumer {consumer!r} is already subscribed")
        self._consumers[consumer] = _Consumer(consumer, frozenset(types), handler, asyncio.Event())
        if self._started:
            self._start_consumer(self._consumers[consumer])

    def subscribe_batch(
        self,
        consumer: str,
        types: Iterable[str],
        handler: EventHandler,
        batch_handler: BatchHandler,
    ) -> None:
        self.subscribe(consumer, types, handler)
        self._consumers[consumer].batch = batch_handler

    async def start(self) -> None:
        self._started = True
        for consumer in self._consumers.values():
            self._start_consumer(consumer)

    def _start_consumer(self, consumer: _Consumer) -> None:
        consumer.task = asyncio.create_task(self._dispatch(consumer), name=f"bus:{consumer.name}")

    async def close(self) -> None:
        self._started = False
        for consumer in self._consumers.values():
            if consumer.task is not None:
                consumer.task.cancel()
        for consumer in self._consumers.values():
            if consumer.task is not None:
                try:
                    await consumer.task
                except asyncio.CancelledError:
                    pass
                consumer.task = None

    async def ping(self) -> None:
        async with self._engine.connect() as conn:
            await conn.execute(select(func.count()).select_from(CURSORS))

    def serve_commands(self, handler: CommandHandler) -> None:
        if self._command_handler is not None:
            raise ValueError("a command executor is already registered")
        self._command_handler = handler

    async def request_command(self, request: CommandRequest) -> CommandReply:
        return await call_executor(self._command_handler, request)

    async def backlog(self) -> dict[str, int]:
        async with self._engine.connect() as conn:
            head = (await conn.execute(select(func.max(OUTBOX.c.seq)))).scalar() or 0
            rows = (await conn.execute(select(CURSORS.c.consumer, CURSORS.c.position))).all()
        positions = dict(rows)
        return {name: head - positions.get(name, 0) for name in self._consumers}

    def _wake_interested(self) -> None:
        """After a commit, wake the consumers of the event types staged since the last one.

        A write set staged now but committed in a later batch may miss its wake-up; the
        consumer's idle poll (``idle_poll`` seconds) picks such events up."""
        staged = self._staged_types
        if not staged:
            return
        for consumer in self._consumers.values():
            if not consumer.types.isdisjoint(staged):
                consumer.wake.set()
        self._staged_types = set()

    async def _dispatch(self, consumer: _Consumer) -> None:
        while True:
            # Retried like a read: a database that does not answer at start must not end
            # the consumer for the life of the process.
            try:
                position = await self._load_cursor(consumer.name)
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("bus consumer %s: reading its cursor failed", consumer.name)
                await asyncio.sleep(self._idle_poll)
        consumer.saved = position
        while True:
            consumer.wake.clear()
            try:
                position = await self._drain(consumer, position)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("bus consumer %s: reading the outbox failed", consumer.name)
            try:
                await asyncio.wait_for(consumer.wake.wait(), self._idle_poll)
            except TimeoutError:
                pass

    async def _load_cursor(self, name: str) -> int:
        async with self._engine.begin() as conn:
            pos = (
                await conn.execute(select(CURSORS.c.position).where(CURSORS.c.consumer == name))
            ).scalar()
            if pos is None:
                await conn.execute(
                    CURSORS.insert().values(consumer=name, position=0, updated_at=utcnow())
                )
                pos = 0
        return int(pos)

    async def _drain(self, consumer: _Consumer, position: int) -> int:
        """Deliver this consumer's events after ``position``; returns the new position.

        Only the consumer's event types are read; the cursor then moves to the newest
        event seen, and is stored after each page that delivered something (or that
        skipped far), so a crash redelivers at most one page."""
        types = sorted(consumer.types)
        while True:
            async with self._engine.connect() as conn:
                newest = (await conn.execute(select(func.max(OUTBOX.c.seq)))).scalar() or 0
                if newest <= position:
                    metrics.child(metrics.OUTBOX_BACKLOG, consumer.name).set(0)
                    return position
                rows = (
                    await conn.execute(
                        select(OUTBOX.c.seq, OUTBOX.c.type, OUTBOX.c.event_id, OUTBOX.c.payload)
                        .where(
                            OUTBOX.c.seq > position,
                            OUTBOX.c.seq <= newest,
                            OUTBOX.c.type.in_(types),
                        )
                        .order_by(OUTBOX.c.seq)
                        .limit(self._page_size)
                    )
                ).all()
            metrics.child(metrics.OUTBOX_BACKLOG, consumer.name).set(newest - position)
            for start in range(0, len(rows), self._batch_size):
                chunk = rows[start : start + self._batch_size]
                if consumer.batch is None or not await self._deliver_batch(consumer, chunk):
                    for row in chunk:
                        await self._deliver(consumer, row.event_id, row.type, row.payload)
            full_page = len(rows) == self._page_size
            new_position = rows[-1].seq if full_page else newest
            if rows or new_position - consumer.saved >= self._page_size * 20:
                await self._save_cursor(consumer.name, new_position)
                consumer.saved = new_position
            position = new_position
            metrics.child(metrics.OUTBOX_BACKLOG, consumer.name).set(newest - position)
            if not full_page:
                return position

    async def _deliver_batch(self, consumer: _Consumer, rows: Sequence[Any]) -> bool:
        """Hand ``rows`` to the consumer's batch handler; False (deliver one by one, with
        retries and dead letters) if it raised."""
        assert consumer.batch is not None
        try:
            await consumer.batch([parse_event(row.payload) for row in rows])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "bus consumer %s: a batch of %d failed (%s: %s); delivering one by one",
                consumer.name,
                len(rows),
                type(exc).__name__,
                exc,
            )
            return False
        metrics.EVENTS_DELIVERED.labels(consumer.name, "ok").inc(len(rows))
        return True

    async def _deliver(self, consumer: _Consumer, event_id: str, type_: str, payload: str) -> None:
        error = ""
        for attempt in range(1, self._max_attempts + 1):
            try:
                event = parse_event(payload)
                await consumer.handler(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "bus consumer %s: event %s (%s) failed, attempt %d/%d: %s",
                    consumer.name,
                    event_id,
                    type_,
                    attempt,
                    self._max_attempts,
                    error,
                )
                metrics.EVENTS_DELIVERED.labels(consumer.name, "retry").inc()
                if attempt < self._max_attempts:
                    delay = self._retry_delay * 2 ** (attempt - 1)
                    await asyncio.sleep(min(delay, self._max_retry_delay))
                continue
            metrics.EVENTS_DELIVERED.labels(consumer.name, "ok").inc()
            return
        metrics.EVENTS_DELIVERED.labels(consumer.name, "dead_letter").inc()
        # Through the group committer, like every other embedded-mode write, and awaited:
        # the cursor must not pass this event before its dead letter is durable.
        writes = WriteSet()
        writes.insert(
            DEAD_LETTERS,
            {
                "consumer": consumer.name,
                "event_id": event_id,
                "type": type_,
                "attempts": self._max_attempts,
                "error": error[:4000],
                "created_at": utcnow(),
            },
        )
        await self._committer.commit(writes)

    async def _save_cursor(self, name: str, position: int) -> None:
        """Queue the cursor for the next group commit: one writer connection, no waiting.
        A cursor stored a little late only means a little redelivery after a crash."""
        writes = WriteSet()
        writes.upsert(CURSORS, {"consumer": name, "position": position, "updated_at": utcnow()})
        self._committer.submit(writes)
