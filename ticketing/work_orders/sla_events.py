"""SLA warnings and breaches: fired exactly once per order and target.

The gate is a conditional update (``warned_at IS NULL`` / ``breached_at IS NULL``) in
the same transaction as the effects, so a warning or breach fires once whether the
scanner finds it, a state change finds it first (an order resolved after its deadline
but before the next scan is breached, not met), the process restarted in between, or
several replicas scan at once (rows claimed ``FOR UPDATE SKIP LOCKED`` on PostgreSQL).
A breach escalates: priority one step up (and the SLA policy of the new priority), the
escalation contact notified (webhook ``escalated`` + timeline), a ``breached`` event,
a metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, or_, select
from sqlalchemy.engine import Connection

from services.db import table_of
from services.observability import metrics
from ticketing.sla import clock as sla
from ticketing.sla.policies import get_policy
from ticketing.tables import Team
from ticketing.work_orders import store
from ticketing.work_orders.context import OpContext
from ticketing.work_orders.policy import policy_for_order, raised
from ticketing.work_orders.sla_clocks import CLOCKS, UPDATE_CLOCK
from ticketing.work_orders.states import TERMINAL

BATCH = 100
TEAMS = table_of(Team)
SLA_KINDS = frozenset({"sla_warning", "sla_breached", "escalation"})


#: A running clock whose warning or breach is due at ``b_now`` (statements below are built
#: once, their values given as execute parameters: see store.py).
_DUE = and_(
    CLOCKS.c.stopped_at.is_(None),
    CLOCKS.c.running_since.isnot(None),
    or_(
        and_(CLOCKS.c.warned_at.is_(None), CLOCKS.c.warn_at <= bindparam("b_now")),
        and_(CLOCKS.c.breached_at.is_(None), CLOCKS.c.due_at <= bindparam("b_now")),
    ),
)
_DUE_ANY = (
    select(CLOCKS)
    .where(_DUE)
    .order_by(CLOCKS.c.due_at)
    .limit(BATCH)
    .with_for_update(skip_locked=True)
)
_DUE_OF_ORDER = select(CLOCKS).where(CLOCKS.c.order_id == bindparam("b_order"), _DUE)
_CLAIM = {
    column: CLOCKS.update().where(
        CLOCKS.c.order_id == bindparam("b_order"),
        CLOCKS.c.target == bindparam("b_target"),
        CLOCKS.c[column].is_(None),
    )
    for column in ("warned_at", "breached_at")
}


def due_clocks(conn: Connection, ctx: OpContext) -> list[Mapping[str, Any]]:
    """Clocks of any order whose warning or breach is due (claimed, skip-locked)."""
    rows = conn.execute(_DUE_ANY, {"b_now": ctx.now}).mappings()
    return [dict(row) for row in rows]


def _claim(conn: Connection, row: Mapping[str, Any], column: str, ctx: OpContext) -> bool:
    """Set ``column`` (warned_at / breached_at) if nobody did: the exactly-once gate."""
    result = conn.execute(
        _CLAIM[column], {column: ctx.now, "b_order": row["order_id"], "b_target": row["target"]}
    )
    return bool(result.rowcount == 1)


@dataclass
class Fired:
    warnings: int = 0
    breaches: int = 0
    #: the orders as they are after the effects, by id
    orders: dict[int, store.Order] = field(default_factory=dict)


def fire(conn: Connection, ctx: OpContext, rows: Sequence[Mapping[str, Any]]) -> Fired:
    """Fire what is due among the clock ``rows``."""
    fired = Fired()
    for row in rows:
        clock = sla.Clock.from_row(row)
        breach = clock.breached_at is None and clock.due_at is not None and clock.due_at <= ctx.now
        warn = clock.warned_at is None and clock.warn_at is not None and clock.warn_at <= ctx.now
        order_id = int(row["order_id"])
        order = fired.orders.get(order_id) or store.load(conn, order_id)
        if order is None or order["state"] in TERMINAL:
            continue
        if warn and _claim(conn, row, "warned_at", ctx):
            clock = sla.mark_warned(clock, ctx.now)
            order = _warned(conn, ctx, order, clock)
            fired.warnings += 1
        if breach and _claim(conn, row, "breached_at", ctx):
            due_at = clock.due_at  # marking the breach clears it
            clock = sla.mark_breached(clock, ctx.now)
            order = _breached(conn, ctx, order, clock, due_at)
            fired.breaches += 1
        marked: dict[str, Any] = {
            "state": clock.state,
            "warned_at": clock.warned_at,
            "breached_at": clock.breached_at,
        }
        # what fired is no longer pending (the other instants may have been retargeted)
        if clock.warned_at is not None or clock.breached_at is not None:
            marked["warn_at"] = None
        if clock.breached_at is not None:
            marked["due_at"] = None
        conn.execute(UPDATE_CLOCK, {**marked, "b_order": order_id, "b_target": row["target"]})
        fired.orders[order_id] = order
    return fired


def fire_for_order(conn: Connection, ctx: OpContext, order: store.Order) -> store.Order:
    """Fire this order's due warnings/breaches before it changes state.

    Until nothing is due: a breach raises the priority, and the shorter targets of the
    new policy may make another clock overdue at once (as the next scan would find)."""
    for _ in range(2 * len(sla.TARGETS)):  # each target warns and breaches at most once
        rows = conn.execute(_DUE_OF_ORDER, {"b_order": order["id"], "b_now": ctx.now}).mappings()
        due = [dict(r) for r in rows]
        if not due:
            break
        order = fire(conn, ctx, due).orders.get(int(order["id"]), order)
    return order


def _contacts(conn: Connection, order: store.Order, policy_contact: str | None) -> str | None:
    """Who hears of a breach: the policy's escalation contact and, for an order handed to
    a team (vendor, partner), that team's contact too."""
    contacts = [policy_contact] if policy_contact else []
    if order["team_id"] is not None:
        team_contact = conn.execute(
            select(TEAMS.c.escalation_contact).where(TEAMS.c.id == order["team_id"])
        ).scalar()
        if team_contact and team_contact not in contacts:
            contacts.append(str(team_contact))
    return ", ".join(contacts) or None


def _due_text(due_at: datetime | None) -> str:
    return due_at.isoformat() if due_at else "?"


def _warned(conn: Connection, ctx: OpContext, order: store.Order, clock: sla.Clock) -> store.Order:
    target = clock.target
    priority = str(order["priority"])
    ctx.later(lambda: metrics.SLA_WARNINGS.labels(target, priority).inc())
    return store.change(
        conn,
        ctx.as_actor("system:sla"),
        order,
        kind="sla_warning",
        note=f"{target} SLA at risk: due {_due_text(clock.due_at)}",
        notify="warning",
        data={"target": target, "due_at": clock.due_at.isoformat() if clock.due_at else None},
    )


def _breached(
    conn: Connection,
    ctx: OpContext,
    order: store.Order,
    clock: sla.Clock,
    due_at: datetime | None,
) -> store.Order:
    target = clock.target
    priority = str(order["priority"])  # the priority that was breached (before raising it)
    ctx.later(lambda: metrics.SLA_BREACHES.labels(target, priority).inc())
    policy = get_policy(conn, order["sla_policy_id"]) if order["sla_policy_id"] else None
    contact = _contacts(conn, order, policy.escalation_contact if policy is not None else None)
    new_priority = raised(order["priority"])
    changes: dict[str, Any] = {}
    if new_priority != order["priority"]:
        changes["priority"] = new_priority
        changes["sla_policy_id"] = policy_for_order(conn, order, priority=new_priority)
    actor = ctx.as_actor("system:sla")
    raised_note = f"; priority {order['priority']} -> {new_priority}" if changes else ""
    order = store.change(
        conn,
        actor,
        order,
        kind="sla_breached",
        changes=changes,
        note=f"{target} SLA breached (due {_due_text(due_at)}){raised_note}",
        notify="breached",
        data={
            "target": target,
            "due_at": due_at.isoformat() if due_at else None,
            "escalation_contact": contact,
        },
    )
    return store.change(
        conn,
        actor,
        order,
        kind="escalation",
        note=f"escalation contact notified: {contact}" if contact else "no escalation contact",
        notify="escalated",
        data={"target": target, "escalation_contact": contact, "priority": order["priority"]},
    )
