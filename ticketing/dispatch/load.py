"""A technician's load: how many open orders they hold and when the most urgent is due.

Decision: the orders that count are those whose ``assignee_id`` is the technician and
whose state is dispatched, accepted, en_route, on_site or on_hold (an order on hold
counts only while it keeps its assignee, which the assignee match already says). The
clocks that make an order urgent are the running and warning ones: a paused clock is not
ticking, and breached, met or cancelled clocks are over.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, bindparam, func, select
from sqlalchemy.engine import Connection

from services.db import table_of
from ticketing.tables import SlaClock, WorkOrder

LOAD_STATES = ("dispatched", "accepted", "en_route", "on_site", "on_hold")
TICKING_CLOCK_STATES = ("running", "warning")

_orders = table_of(WorkOrder)
_clocks = table_of(SlaClock)


@dataclass(frozen=True)
class Load:
    open_orders: int
    earliest_due: datetime | None


NO_LOAD = Load(0, None)


#: Built once (values as execute parameters): every technician's load, or some's.
_LOADS = (
    select(
        _orders.c.assignee_id,
        func.count(_orders.c.id.distinct()),
        func.min(_clocks.c.due_at),
    )
    .select_from(
        _orders.outerjoin(
            _clocks,
            and_(_clocks.c.order_id == _orders.c.id, _clocks.c.state.in_(TICKING_CLOCK_STATES)),
        )
    )
    .where(_orders.c.assignee_id.is_not(None), _orders.c.state.in_(LOAD_STATES))
    .group_by(_orders.c.assignee_id)
)
_LOADS_OF = _LOADS.where(_orders.c.assignee_id.in_(bindparam("b_ids", expanding=True)))


def loads(conn: Connection, technician_ids: Collection[int] | None = None) -> dict[int, Load]:
    """Load per technician, one query; technicians without open orders are left out
    (read them as :data:`NO_LOAD`). ``None`` reads every technician's load."""
    if technician_ids is not None and not technician_ids:
        return {}
    if technician_ids is None:
        rows = conn.execute(_LOADS)
    else:
        rows = conn.execute(_LOADS_OF, {"b_ids": list(technician_ids)})
    return {row[0]: Load(int(row[1]), row[2]) for row in rows}


def open_order_counts(
    conn: Connection, technician_ids: Collection[int] | None = None
) -> dict[int, int]:
    """Open orders per technician, one query. Every id asked for is in the answer (0 when
    idle); with ``None``, only technicians holding at least one open order are."""
    if technician_ids is not None and not technician_ids:
        return {}
    query = (
        select(_orders.c.assignee_id, func.count())
        .where(_orders.c.assignee_id.is_not(None), _orders.c.state.in_(LOAD_STATES))
        .group_by(_orders.c.assignee_id)
    )
    counts: dict[int, int] = {}
    if technician_ids is not None:
        query = query.where(_orders.c.assignee_id.in_(list(technician_ids)))
        counts = dict.fromkeys(technician_ids, 0)
    counts.update({row[0]: int(row[1]) for row in conn.execute(query)})
    return counts
