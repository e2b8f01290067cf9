"""Putting a technician on an order: automatically, by hand, after a decline, on escalation.

Auto-assignment picks an on-duty technician with the order's skill who covers its site,
with the fewest open orders (ties: least SLA risk) — see :mod:`ticketing.dispatch.assign`.
When nobody fits, the order stays ``new`` without an assignee: that is the dispatcher
queue (``GET /api/v1/work-orders/queue``), swept again by the scanner.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.engine import Connection

from services.db import table_of
from ticketing import tx
from ticketing.dispatch.assign import Candidate, choose_technician
from ticketing.tables import Team, Technician
from ticketing.work_orders import sla_events, store
from ticketing.work_orders.context import OpContext
from ticketing.work_orders.policy import policy_for_order
from ticketing.work_orders.timeline import WORK_ORDERS

TECHNICIANS = table_of(Technician)
TEAMS = table_of(Team)
ASSIGNABLE = frozenset({"new", "remote_fix", "dispatched", "accepted"})
#: The dispatcher queue: orders waiting for a technician nobody could be found for.
IN_QUEUE = and_(WORK_ORDERS.c.state == "new", WORK_ORDERS.c.assignee_id.is_(None))


def best_candidate(conn: Connection, ctx: OpContext, order: Mapping[str, Any]) -> Candidate | None:
    return choose_technician(
        conn,
        site_id=order["site_id"],
        region=None,
        skill=order["skill"],
        exclude=tuple(order["declined_by"] or ()),
        team_id=order["team_id"],
        now=ctx.now,
    )


def _assign(
    conn: Connection,
    ctx: OpContext,
    order: store.Order,
    technician_id: int,
    team_id: int | None,
    *,
    note: str | None,
) -> store.Order:
    # what is already due fires first: a breach raises the priority, which the policy follows
    order = sla_events.fire_for_order(conn, ctx, order)
    changes: dict[str, Any] = {"assignee_id": technician_id}
    changes["sla_policy_id"] = policy_for_order(
        conn, order, assignee_id=technician_id, team_id=team_id
    )
    if team_id != order["team_id"]:
        changes["team_id"] = team_id
    return store.change(
        conn,
        ctx,
        order,
        kind="assigned",
        to_state="dispatched",
        changes=changes,
        note=note,
        notify="assigned",
        data={"technician_id": technician_id},
    )


def auto_assign(conn: Connection, ctx: OpContext, order: store.Order) -> store.Order:
    """Assign the best technician, or leave the order in the dispatcher queue."""
    if order["state"] != "new" or order["assignee_id"] is not None:
        return order
    candidate = best_candidate(conn, ctx, order)
    if candidate is None:
        return order
    return _assign(
        conn,
        ctx.as_actor("system:dispatch"),
        order,
        candidate.technician_id,
        order["team_id"],
        note=f"auto-assigned to {candidate.name} ({candidate.open_orders} open orders)",
    )


def assign(
    conn: Connection, ctx: OpContext, order: store.Order, technician_id: int, note: str | None
) -> store.Order:
    if order["state"] not in ASSIGNABLE:
        raise tx.Conflict(
            f"an order in state {order['state']!r} cannot be assigned",
            legal_states=sorted(ASSIGNABLE),
        )
    row = conn.execute(select(TECHNICIANS).where(TECHNICIANS.c.id == technician_id)).first()
    if row is None:
        raise tx.Invalid(f"technician {technician_id} does not exist")
    return _assign(conn, ctx, order, technician_id, order["team_id"], note=note)


def decline(conn: Connection, ctx: OpContext, order: store.Order, note: str | None) -> store.Order:
    """The assignee declines: the next candidate gets it, or it goes back to the queue."""
    if order["state"] not in ("dispatched", "accepted") or order["assignee_id"] is None:
        raise tx.Conflict(
            f"only a dispatched or accepted order can be declined (state {order['state']!r})"
        )
    declined = [*(order["declined_by"] or []), int(order["assignee_id"])]
    order = store.change(
        conn,
        ctx,
        order,
        kind="declined",
        to_state="new",
        changes={"assignee_id": None, "declined_by": declined},
        note=note,
    )
    return auto_assign(conn, ctx, order)


def escalate(
    conn: Connection, ctx: OpContext, order: store.Order, team_id: int, reason: str
) -> store.Order:
    """Hand the order to another team (vendor or partner), with a reason."""
    if order["state"] not in ASSIGNABLE:
        raise tx.Conflict(f"an order in state {order['state']!r} cannot be escalated")
    team = conn.execute(select(TEAMS).where(TEAMS.c.id == team_id)).mappings().first()
    if team is None:
        raise tx.Invalid(f"team {team_id} does not exist")
    order = sla_events.fire_for_order(conn, ctx, order)  # see _assign
    changes: dict[str, Any] = {
        "team_id": team_id,
        "assignee_id": None,
        "declined_by": [],
        "sla_policy_id": policy_for_order(conn, order, team_id=team_id, assignee_id=None),
    }
    order = store.change(
        conn,
        ctx,
        order,
        kind="escalated",
        to_state="new",
        changes=changes,
        note=reason,
        notify="escalated",
        data={"team_id": team_id, "team": team["name"], "contract_type": team["contract_type"]},
    )
    return auto_assign(conn, ctx, order)
