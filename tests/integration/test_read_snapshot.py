"""A read with ``read_snapshot`` sees one committed state across its statements (e.g. an
order and its timeline read for one API answer): a commit between them is not seen."""

from __future__ import annotations

from sqlalchemy import func, select

from csms.tables import Charger
from services.db import Database, read_snapshot, table_of, utcnow

CHARGERS = table_of(Charger)


async def _add(db: Database, charger_id: str) -> None:
    now = utcnow()
    async with db.engine.begin() as conn:
        await conn.execute(
            CHARGERS.insert().values(
                id=charger_id,
                security_profile=0,
                registration_status="accepted",
                enabled=True,
                created_at=now,
                updated_at=now,
            )
        )


async def test_statements_of_one_snapshot_read_see_the_same_state(db: Database) -> None:
    count = select(func.count()).select_from(CHARGERS)
    await _add(db, "CP-BEFORE")
    async with db.engine.connect() as reader:
        await read_snapshot(reader)
        first = (await reader.execute(count)).scalar_one()
        await _add(db, "CP-BETWEEN")
        assert (await reader.execute(count)).scalar_one() == first
    async with db.engine.connect() as reader:
        assert (await reader.execute(count)).scalar_one() == first + 1
