"""Event retention: old outbox rows go once every live consumer has passed them; a cursor
that has not moved for the whole period (a retired consumer) does not hold them back."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from services.bus.contracts import ChargerOnline
from services.bus.retention import CURSORS, cutoff, prune_outbox
from services.bus.staging import OUTBOX, outbox_row
from services.db import Database, utcnow


async def _seed(db: Database, ages_days: list[float]) -> None:
    now = utcnow()
    async with db.engine.begin() as conn:
        for seq, age in enumerate(ages_days, start=1):
            event = ChargerOnline(
                charger_id=f"CP-{seq}", received_at=now - timedelta(days=age), ocpp_version="1.6"
            )
            await conn.execute(OUTBOX.insert().values(seq=seq, **outbox_row(event)))


async def _cursor(db: Database, name: str, position: int, idle_days: float) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(
            CURSORS.insert().values(
                consumer=name,
                position=position,
                updated_at=utcnow() - timedelta(days=idle_days),
            )
        )


async def _left(db: Database) -> list[int]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(select(OUTBOX.c.seq).order_by(OUTBOX.c.seq))).scalars())


async def test_old_events_go_once_live_consumers_passed_them(db: Database) -> None:
    await _seed(db, [40, 39, 38, 37, 2, 1])  # seqs 1-4 are older than 30 days
    await _cursor(db, "live", position=2, idle_days=0)  # has read up to seq 2
    await _cursor(db, "retired", position=0, idle_days=90)  # gone for 90 days
    older_than = cutoff(utcnow(), 30)

    assert await prune_outbox(db.engine, older_than, chunk=1) == 2
    assert await _left(db) == [3, 4, 5, 6]  # 3 and 4 are old but "live" has not read them

    async with db.engine.begin() as conn:
        await conn.execute(CURSORS.update().where(CURSORS.c.consumer == "live").values(position=6))
    assert await prune_outbox(db.engine, older_than) == 2
    assert await _left(db) == [5, 6]  # recent events stay whatever the cursors say
    assert await prune_outbox(db.engine, older_than) == 0


async def test_without_cursors_only_age_counts(db: Database) -> None:
    await _seed(db, [31, 29])
    assert await prune_outbox(db.engine, cutoff(utcnow(), 30)) == 1
    assert await _left(db) == [2]
