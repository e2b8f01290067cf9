"""The embedded bus: at-least-once delivery, retries, dead letters, catch-up after restart."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from services.bus.contracts import ChargerOnline, Event
from services.bus.inbox import first_delivery
from services.bus.outbox import OutboxBus
from services.bus.tables import DeadLetter
from services.committer import GroupCommitter
from services.db import Database
from tests.conftest import eventually

AT = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def online(n: int) -> ChargerOnline:
    return ChargerOnline(charger_id=f"CP-{n}", received_at=AT, ocpp_version="1.6")


async def _bus(db: Database) -> tuple[GroupCommitter, OutboxBus]:
    committer = GroupCommitter(db.engine)
    committer.start()
    return committer, OutboxBus(committer, retry_delay=0.01, max_attempts=3, idle_poll=0.05)


async def _stop(committer: GroupCommitter, bus: OutboxBus) -> None:
    await bus.close()
    await committer.close()


async def test_failing_handler_is_retried_then_acked(db: Database) -> None:
    committer, bus = await _bus(db)
    calls: list[str] = []

    async def flaky(event: Event) -> None:
        calls.append(event.event_id)
        if len(calls) < 3:
            raise RuntimeError("transient")

    bus.subscribe("flaky", {"ChargerOnline"}, flaky)
    await bus.start()
    event = online(1)
    await bus.publish([event])
    await eventually(lambda: _value(len(calls) >= 3))
    await _stop(committer, bus)
    assert calls == [event.event_id] * 3
    async with db.session() as session:
        assert (await session.execute(select(func.count()).select_from(DeadLetter))).scalar() == 0


async def test_a_consumer_whose_cursor_cannot_be_read_at_start_retries(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    committer, bus = await _bus(db)
    original = bus._load_cursor
    failures = {"left": 2}

    async def flaky(name: str) -> int:
        if failures["left"]:
            failures["left"] -= 1
            raise OSError("database not answering")
        return await original(name)

    monkeypatch.setattr(bus, "_load_cursor", flaky)
    got: list[str] = []

    async def handler(event: Event) -> None:
        got.append(event.event_id)

    bus.subscribe("late-cursor", {"ChargerOnline"}, handler)
    await bus.start()
    event = online(7)
    await bus.publish([event])
    await eventually(lambda: _value(got == [event.event_id]))
    await _stop(committer, bus)
    assert failures["left"] == 0


async def test_poison_event_is_dead_lettered_and_later_events_flow(db: Database) -> None:
    committer, bus = await _bus(db)
    seen: list[str] = []
    poison = online(1)

    async def handler(event: Event) -> None:
        if event.event_id == poison.event_id:
            raise ValueError("cannot handle this one")
        seen.append(event.event_id)

    bus.subscribe("picky", {"ChargerOnline"}, handler)
    await bus.start()
    after = online(2)
    await bus.publish([poison, after])
    await eventually(lambda: _value(after.event_id in seen))
    await _stop(committer, bus)
    async with db.session() as session:
        [letter] = (await session.execute(select(DeadLetter))).scalars().all()
    assert letter.event_id == poison.event_id
    assert letter.consumer == "picky"
    assert letter.attempts == 3
    assert "cannot handle this one" in letter.error


async def test_restarted_bus_delivers_what_was_committed_but_not_handled(db: Database) -> None:
    # First life: events are published while the consumer is not running (e.g. crashed).
    committer, bus = await _bus(db)
    events = [online(n) for n in range(5)]
    await bus.publish(events)
    await _stop(committer, bus)

    # Second life: the durable consumer catches up from its cursor, in order, exactly once
    # in effect (the inbox makes a redelivery a no-op).
    committer, bus = await _bus(db)
    applied: list[str] = []

    async def idempotent(event: Event) -> None:
        async with db.session() as session:
            if await first_delivery(session, "catch-up", event.event_id):
                applied.append(event.event_id)
            await session.commit()

    bus.subscribe("catch-up", {"ChargerOnline"}, idempotent)
    await bus.start()
    await eventually(lambda: _value(len(applied) == 5))
    await _stop(committer, bus)
    assert applied == [e.event_id for e in events]

    # A third life redelivering the same events (cursor reset) changes nothing.
    async with db.engine.begin() as conn:
        from services.bus.tables import ConsumerCursor

        await conn.execute(ConsumerCursor.__table__.update().values(position=0))
    committer, bus = await _bus(db)
    replays: list[str] = []

    async def counting(event: Event) -> None:
        replays.append(event.event_id)
        await idempotent(event)

    bus.subscribe("catch-up", {"ChargerOnline"}, counting)
    await bus.start()
    await eventually(lambda: _value(len(replays) == 5))
    await _stop(committer, bus)
    assert applied == [e.event_id for e in events]


async def test_consumer_only_gets_its_types(db: Database) -> None:
    from services.bus.contracts import ChargerOffline

    committer, bus = await _bus(db)
    got: list[str] = []

    async def handler(event: Event) -> None:
        got.append(event.type)

    bus.subscribe("offline-only", {"ChargerOffline"}, handler)
    await bus.start()
    await bus.publish(
        [online(1), ChargerOffline(charger_id="CP-1", received_at=AT, since=AT, reason="test")]
    )
    await eventually(lambda: _value(got == ["ChargerOffline"]))
    await _stop(committer, bus)


async def _value(value: bool) -> bool:
    return value


async def test_batch_handler_gets_pages_and_a_failing_batch_goes_one_by_one(
    db: Database,
) -> None:
    committer = GroupCommitter(db.engine)
    committer.start()
    bus = OutboxBus(committer, retry_delay=0.01, max_attempts=3, idle_poll=0.05, batch_size=4)
    batches: list[list[str]] = []
    singles: list[str] = []
    poison = online(3)

    async def one(event: Event) -> None:
        if event.event_id == poison.event_id:
            raise ValueError("poison")
        singles.append(event.event_id)

    async def batch(events: Sequence[Event]) -> None:
        ids = [e.event_id for e in events]
        if poison.event_id in ids:
            raise ValueError("a bad event in the batch")
        batches.append(ids)

    bus.subscribe_batch("paged", {"ChargerOnline"}, one, batch)
    events = [poison if n == 3 else online(n) for n in range(10)]
    await bus.publish(events)  # committed before the consumer starts: one page of 10
    await bus.start()
    ids = [e.event_id for e in events]
    await eventually(lambda: _value(len(singles) == 3 and len(batches) == 2))
    await _stop(committer, bus)
    # Pages of at most 4: [0-3] holds the poison -> delivered one by one (3 good, 1 dead
    # letter); [4-7] and [8-9] as batches.
    assert batches == [ids[4:8], ids[8:10]]
    assert singles == [i for i in ids[0:4] if i != poison.event_id]
    async with db.session() as session:
        [letter] = (await session.execute(select(DeadLetter))).scalars().all()
    assert letter.event_id == poison.event_id
