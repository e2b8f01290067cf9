"""The append-only timeline of a work order and the projection derived from it.

Every change to an order is one ``ticketing_work_order_entries`` row holding the fields
it set (``changes``). The ``ticketing_work_orders`` row is the fold of those entries,
written in the same transaction; :func:`fold` rebuilds it from the entries alone, and the
tests check that the stored row and the fold agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from services.db import UTCDateTime, table_of
from ticketing.tables import WorkOrder, WorkOrderEntry
from ticketing.work_orders.states import OPEN

WORK_ORDERS = table_of(WorkOrder)
ENTRIES = table_of(WorkOrderEntry)

#: Columns of the order that are datetimes (ISO strings inside the JSON of an entry).
DATETIME_FIELDS = frozenset(c.name for c in WORK_ORDERS.columns if isinstance(c.type, UTCDateTime))
#: Columns the fold owns (everything but the key).
PROJECTED = frozenset(c.name for c in WORK_ORDERS.columns) - {"id"}


def to_json(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Entry-safe copy of ``changes`` (datetimes as ISO 8601)."""
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in changes.items()}


def from_json(changes: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in changes.items():
        if key in DATETIME_FIELDS and isinstance(value, str):
            out[key] = datetime.fromisoformat(value)
        else:
            out[key] = value
    return out


def fold(entries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The order's fields as its entries set them, in order (``version`` = last seq)."""
    state: dict[str, Any] = {}
    for entry in sorted(entries, key=lambda e: int(e["seq"])):
        state.update({k: v for k, v in from_json(entry["changes"]).items() if k in PROJECTED})
        state["version"] = int(entry["seq"])
        state["updated_at"] = entry["at"]
    return state


def open_orders_in_the_way(
    conn: Connection, key: Literal["site_id", "charger_id"], value: str
) -> str | None:
    """Why the site or charger ``value`` may not be deleted: it has open work orders
    (resolved but unverified included), which would name a row that no longer exists and
    that nothing could then close; None when it has none."""
    orders = conn.execute(
        select(func.count())
        .select_from(WORK_ORDERS)
        .where(WORK_ORDERS.c[key] == value, WORK_ORDERS.c.state.in_(OPEN))
    ).scalar_one()
    if not orders:
        return None
    what = "site" if key == "site_id" else "charger"
    return f"{what} {value!r} still has {orders} open work order(s); close or cancel them first"
