"""The registry's answer to "is this charger registered?" (see :mod:`services.registry`)."""

from __future__ import annotations

from sqlalchemy import bindparam, exists, select

from csms.tables import Charger
from services.db import Database, table_of

CHARGERS = table_of(Charger)
_KNOWN = select(exists().where(CHARGERS.c.id == bindparam("b_id")))


class ChargerKnown:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def __call__(self, charger_id: str) -> bool:
        async with self.db.engine.connect() as conn:
            return bool((await conn.execute(_KNOWN, {"b_id": charger_id})).scalar())
