"""When an order's SLA clocks start, pause, resume, stop and retarget.

Targets and their conditions (Jira Service Management style):

| target     | starts          | pauses  | stops (met unless breached)                      |
|------------|-----------------|---------|--------------------------------------------------|
| response   | order created   | on_hold | accepted, en_route, on_site or resolved          |
| on_site    | order created   | on_hold | on_site or resolved (remote or self recovery)    |
| resolution | order created   | on_hold | resolved                                         |

Cancelling or closing unresolved stops every clock as ``cancelled``. A reopened order
starts a new cycle of all three clocks (the timeline keeps the earlier cycle). A change
of SLA policy (priority raised, order escalated to a vendor team) retargets the running
clocks and keeps the time already consumed. The math lives in :mod:`ticketing.sla`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.engine import Connection

from services.db import table_of
from ticketing.sla import clock as sla
from ticketing.sla.calendar import Calendar
from ticketing.sla.policies import PolicyRow, get_policy
from ticketing.tables import SlaClock
from ticketing.work_orders.context import OpContext

CLOCKS = table_of(SlaClock)
TARGETS = ("response", "on_site", "resolution")
FINAL = frozenset({"met", "cancelled"})
#: Statements built once, their values given as execute parameters (see store.py).
_OF_ORDER = select(CLOCKS).where(CLOCKS.c.order_id == bindparam("b_order"))
_DELETE_OF_ORDER = delete(CLOCKS).where(CLOCKS.c.order_id == bindparam("b_order"))
#: one clock's columns (``b_order``, ``b_target``; the columns set come from the parameters)
UPDATE_CLOCK = CLOCKS.update().where(
    CLOCKS.c.order_id == bindparam("b_order"), CLOCKS.c.target == bindparam("b_target")
)
_STOPS: dict[str, frozenset[str]] = {
    "response": frozenset({"accepted", "en_route", "on_site", "resolved", "verified", "closed"}),
    "on_site": frozenset({"on_site", "resolved", "verified", "closed"}),
    "resolution": frozenset({"resolved", "verified", "closed"}),
}


def load(conn: Connection, order_id: int) -> dict[str, sla.Clock]:
    rows = conn.execute(_OF_ORDER, {"b_order": order_id}).mappings()
    return {row["target"]: sla.Clock.from_row(row) for row in rows}


def _save(conn: Connection, order_id: int, clock: sla.Clock) -> None:
    conn.execute(UPDATE_CLOCK, {**clock.to_row(), "b_order": order_id, "b_target": clock.target})


def _stopped(clock: sla.Clock) -> bool:
    return clock.stopped_at is not None


def start_all(conn: Connection, ctx: OpContext, order: Mapping[str, Any]) -> None:
    """Start (or restart, on reopen) every target the order's policy defines."""
    conn.execute(_DELETE_OF_ORDER, {"b_order": order["id"]})
    policy = _policy(conn, order)
    if policy is None:
        return
    cal = policy.calendar()
    rows = []
    for target in TARGETS:
        seconds = policy.target_seconds(target)
        if seconds is None:
            continue
        clock = sla.start(target, seconds, policy.id, cal, policy.warn_fraction, ctx.now)
        rows.append({"order_id": order["id"], **clock.to_row()})
    if rows:
        conn.execute(CLOCKS.insert(), rows)


def follow(
    conn: Connection, ctx: OpContext, before: Mapping[str, Any], after: Mapping[str, Any]
) -> None:
    """Move the clocks of an order from ``before`` to ``after``."""
    state_changed = before["state"] != after["state"]
    policy_changed = before["sla_policy_id"] != after["sla_policy_id"]
    if not (state_changed or policy_changed):
        return
    if state_changed and before["state"] in ("resolved", "verified") and after["state"] == "new":
        start_all(conn, ctx, after)
        return
    clocks = load(conn, int(after["id"]))
    if not clocks:
        return
    policy = _policy(conn, after)
    if policy is None:
        return
    cal = policy.calendar()
    for target, clock in clocks.items():
        updated = clock
        if _stopped(clock):
            continue
        if policy_changed:
            seconds = policy.target_seconds(target)
            if seconds is not None:
                ran_on = _calendar_of(conn, clock.policy_id, policy)
                updated = sla.retarget(
                    updated, seconds, policy.id, cal, policy.warn_fraction, ctx.now, ran_on=ran_on
                )
        if state_changed:
            updated = _on_state(updated, before, after, policy, ctx)
        if updated != clock:
            _save(conn, int(after["id"]), updated)


def _on_state(
    clock: sla.Clock,
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    policy: PolicyRow,
    ctx: OpContext,
) -> sla.Clock:
    cal = policy.calendar()
    new_state = after["state"]
    if new_state in ("cancelled",) or (new_state == "closed" and before["state"] != "verified"):
        return sla.stop(clock, cal, ctx.now, cancelled=True)
    if new_state == "on_hold":
        return sla.pause(clock, cal, ctx.now) if clock.running_since is not None else clock
    if before["state"] == "on_hold" and clock.running_since is None:
        clock = sla.resume(clock, cal, policy.warn_fraction, ctx.now)
    if new_state in _STOPS[clock.target]:
        return sla.stop(clock, cal, ctx.now)
    return clock


def _calendar_of(conn: Connection, policy_id: int | None, current: PolicyRow) -> Calendar:
    """The calendar of the policy a clock ran under (``current`` if it is that one)."""
    if policy_id is None or policy_id == current.id:
        return current.calendar()
    before = get_policy(conn, policy_id)
    return (before or current).calendar()


def _policy(conn: Connection, order: Mapping[str, Any]) -> PolicyRow | None:
    policy_id = order.get("sla_policy_id")
    return get_policy(conn, int(policy_id)) if policy_id is not None else None
