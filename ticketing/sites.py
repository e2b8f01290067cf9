"""Sites and which site each charger stands at: the records and their writes.

Decisions:

- A site id is a slug (:data:`SLUG_PATTERN`); regions, skills and technician coverage
  lists use the same shape, so they compare as plain strings.
- A site with chargers cannot be deleted (409): its chargers would silently lose their
  site and the dispatch coverage that comes with it. Unassign them first. Nor can a site
  with open work orders (they would name a site that no longer exists).
- Assigning a charger upserts its ``ticketing_chargers`` row and sets only ``site_id``;
  the other columns belong to the event projection. A missing row is created offline,
  stamped now. Assigning moves a charger from any other site.
- Site rows are locked (``FOR UPDATE`` to delete, ``FOR SHARE`` to assign a charger) so a
  charger never lands on a site being deleted by another replica (SQLite has a single
  writer and ignores the locks).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from services.db import table_of
from ticketing.dispatch.unique import execute_unique
from ticketing.tables import ChargerAsset, Site
from ticketing.tx import Conflict, NotFound
from ticketing.work_orders.timeline import open_orders_in_the_way

SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
SITE_FIELDS = frozenset({"name", "region", "timezone", "address"})

_sites = table_of(Site)
_chargers = table_of(ChargerAsset)


@dataclass(frozen=True)
class SiteRecord:
    id: str
    name: str
    region: str | None
    timezone: str
    address: str | None
    created_at: datetime
    charger_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChargerPlacement:
    charger_id: str
    site_id: str | None


def _record(row: Any, charger_ids: tuple[str, ...] = ()) -> SiteRecord:
    return SiteRecord(
        id=row.id,
        name=row.name,
        region=row.region,
        timezone=row.timezone,
        address=row.address,
        created_at=row.created_at,
        charger_ids=charger_ids,
    )


def _charger_ids(conn: Connection, site_id: str) -> tuple[str, ...]:
    query = (
        select(_chargers.c.charger_id)
        .where(_chargers.c.site_id == site_id)
        .order_by(_chargers.c.charger_id)
    )
    return tuple(conn.execute(query).scalars())


def _locked_site(conn: Connection, site_id: str, *, share: bool) -> Any:
    row = conn.execute(
        select(_sites).where(_sites.c.id == site_id).with_for_update(read=share)
    ).first()
    if row is None:
        raise NotFound(f"no site {site_id!r}")
    return row


# ---------------------------------------------------------------- reads
def site_region(conn: Connection, site_id: str) -> str | None:
    """The region of a site; None when the site has none or is unknown."""
    region: str | None = conn.execute(
        select(_sites.c.region).where(_sites.c.id == site_id)
    ).scalar()
    return region


def site_exists(conn: Connection, site_id: str) -> bool:
    return conn.execute(select(_sites.c.id).where(_sites.c.id == site_id)).first() is not None


def get_site(conn: Connection, site_id: str) -> SiteRecord:
    row = conn.execute(select(_sites).where(_sites.c.id == site_id)).first()
    if row is None:
        raise NotFound(f"no site {site_id!r}")
    return _record(row, _charger_ids(conn, site_id))


def list_sites(
    conn: Connection, *, region: str | None = None, limit: int = 100, offset: int = 0
) -> list[SiteRecord]:
    """Sites by id (without their charger ids: see :func:`get_site`)."""
    query = select(_sites).order_by(_sites.c.id).limit(limit).offset(offset)
    if region is not None:
        query = query.where(_sites.c.region == region)
    return [_record(row) for row in conn.execute(query)]


# ---------------------------------------------------------------- writes
def create_site(
    conn: Connection, site_id: str, values: Mapping[str, Any], now: datetime
) -> SiteRecord:
    fields = {k: v for k, v in values.items() if k in SITE_FIELDS}
    row = {"id": site_id, "timezone": "UTC", **fields, "created_at": now}
    if execute_unique(conn, insert(_sites).values(row)) is None:
        raise Conflict(f"site {site_id!r} already exists")
    return get_site(conn, site_id)


def update_site(conn: Connection, site_id: str, changes: Mapping[str, Any]) -> SiteRecord:
    _locked_site(conn, site_id, share=False)
    fields = {k: v for k, v in changes.items() if k in SITE_FIELDS}
    if fields:
        conn.execute(update(_sites).where(_sites.c.id == site_id).values(fields))
    return get_site(conn, site_id)


def delete_site(conn: Connection, site_id: str) -> None:
    _locked_site(conn, site_id, share=False)
    count = conn.execute(
        select(func.count()).select_from(_chargers).where(_chargers.c.site_id == site_id)
    ).scalar_one()
    if count:
        raise Conflict(f"site {site_id!r} still has {count} charger(s); unassign them first")
    reason = open_orders_in_the_way(conn, "site_id", site_id)
    if reason is not None:
        raise Conflict(reason)
    conn.execute(delete(_sites).where(_sites.c.id == site_id))


def assign_charger(
    conn: Connection, site_id: str, charger_id: str, now: datetime
) -> ChargerPlacement:
    """Put a charger at a site (moving it from any other); creates its row if missing."""
    _locked_site(conn, site_id, share=True)
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = (
        dialect_insert(_chargers)
        .values(charger_id=charger_id, site_id=site_id, online=False, updated_at=now)
        .on_conflict_do_update(index_elements=[_chargers.c.charger_id], set_={"site_id": site_id})
    )
    conn.execute(statement)
    return ChargerPlacement(charger_id, site_id)


def unassign_charger(conn: Connection, site_id: str, charger_id: str) -> None:
    """Take a charger off a site; 404 unless it stands there."""
    result = conn.execute(
        update(_chargers)
        .where(_chargers.c.charger_id == charger_id, _chargers.c.site_id == site_id)
        .values(site_id=None)
    )
    if not result.rowcount:
        raise NotFound(f"charger {charger_id!r} is not at site {site_id!r}")
