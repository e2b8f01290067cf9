"""Who may act on a charger because of a work order: a technician on their own orders;
which order a command to a charger may say it serves; and whether open orders keep a
charger from being removed from the registry."""

from __future__ import annotations

from sqlalchemy import and_, exists, or_, select

from services.api_auth import Principal
from services.db import Database, table_of
from ticketing.tables import ChargerAsset, Technician
from ticketing.work_orders.faults import site_of
from ticketing.work_orders.states import ASSIGNED
from ticketing.work_orders.timeline import WORK_ORDERS, open_orders_in_the_way

TECHNICIANS = table_of(Technician)
ASSETS = table_of(ChargerAsset)


class TechnicianCommandAccess:
    """A technician may send commands to the charger of an open order assigned to them,
    and to the chargers of the site of a site-level order (no charger: a site-power order)
    assigned to them: the chargers that order is about (as :class:`CommandOrderCheck`
    lets a command to them serve it)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def __call__(self, principal: Principal, charger_id: str) -> bool:
        if principal.role != "technician":
            return False
        site = select(ASSETS.c.site_id).where(ASSETS.c.charger_id == charger_id).scalar_subquery()
        query = select(
            exists().where(
                or_(
                    WORK_ORDERS.c.charger_id == charger_id,
                    and_(WORK_ORDERS.c.charger_id.is_(None), WORK_ORDERS.c.site_id == site),
                ),
                WORK_ORDERS.c.state.in_(ASSIGNED),
                WORK_ORDERS.c.assignee_id
                == select(TECHNICIANS.c.id)
                .where(TECHNICIANS.c.user_name == principal.name)
                .scalar_subquery(),
            )
        )
        async with self.db.engine.connect() as conn:
            return bool((await conn.execute(query)).scalar())


class CommandOrderCheck:
    """A command to a charger may name the work order it serves (it is then listed on it)
    when that order exists and is the charger's, or a site-level order (no charger) of the
    charger's site; otherwise the reason it may not."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def __call__(self, order_id: int, charger_id: str) -> str | None:
        query = select(WORK_ORDERS.c.charger_id, WORK_ORDERS.c.site_id).where(
            WORK_ORDERS.c.id == order_id
        )
        async with self.db.engine.connect() as conn:
            order = (await conn.execute(query)).first()
            if order is None:
                return f"no work order {order_id}"
            if order.charger_id == charger_id:
                return None
            if order.charger_id is None and order.site_id is not None:
                site = await conn.run_sync(lambda sync: site_of(sync, charger_id))
                if site == order.site_id:
                    return None
        return f"work order {order_id} is not for charger {charger_id!r} nor for its site"


class ChargerInUse:
    """A charger with open work orders (resolved-but-unverified included) may not be deleted
    from the registry: they would name a charger that no longer exists, their remote fixes
    and verification could not reach it, and nothing would close them. Same rule as a site's
    (ticketing.sites.delete_site). Returns the reason, or None."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def __call__(self, charger_id: str) -> str | None:
        async with self.db.engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: open_orders_in_the_way(sync, "charger_id", charger_id)
            )
