"""Who may act on a charger because of a work order: a technician on their own orders."""

from __future__ import annotations

from sqlalchemy import exists, select

from services.api_auth import Principal
from services.db import Database, table_of
from ticketing.tables import Technician
from ticketing.work_orders.states import ASSIGNED
from ticketing.work_orders.timeline import WORK_ORDERS

TECHNICIANS = table_of(Technician)


class TechnicianCommandAccess:
    """A technician may send commands to the charger of an open order assigned to them."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def __call__(self, principal: Principal, charger_id: str) -> bool:
        if principal.role != "technician":
            return False
        query = select(
            exists().where(
                WORK_ORDERS.c.charger_id == charger_id,
                WORK_ORDERS.c.state.in_(ASSIGNED),
                WORK_ORDERS.c.assignee_id
                == select(TECHNICIANS.c.id)
                .where(TECHNICIANS.c.user_name == principal.name)
                .scalar_subquery(),
            )
        )
        async with self.db.engine.connect() as conn:
            return bool((await conn.execute(query)).scalar())
