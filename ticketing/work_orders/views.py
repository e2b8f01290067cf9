"""Work orders as the API shows them: current fields, SLA targets, timeline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from ticketing.remediation.playbooks import remote_fixable
from ticketing.sla import clock as sla
from ticketing.sla.calendar import Calendar, always_on
from ticketing.sla.policies import get_policy
from ticketing.work_orders.sla_clocks import CLOCKS
from ticketing.work_orders.states import legal_targets
from ticketing.work_orders.timeline import ENTRIES


def sla_views(
    conn: Connection, orders: Sequence[Mapping[str, Any]], now: datetime
) -> dict[int, list[dict[str, Any]]]:
    """Each order's SLA targets: due time, remaining/overrun seconds and state."""
    ids = [int(o["id"]) for o in orders]
    if not ids:
        return {}
    calendars: dict[int | None, Calendar] = {}
    out: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    rows = conn.execute(
        select(CLOCKS).where(CLOCKS.c.order_id.in_(ids)).order_by(CLOCKS.c.order_id)
    ).mappings()
    for row in rows:
        clock = sla.Clock.from_row(row)
        policy_id = clock.policy_id
        if policy_id not in calendars:
            policy = get_policy(conn, policy_id) if policy_id is not None else None
            calendars[policy_id] = policy.calendar() if policy is not None else always_on()
        view = sla.view(clock, calendars[policy_id], now)
        out[int(row["order_id"])].append(
            {
                "target": view.target,
                "state": view.state,
                "due_at": view.due_at,
                "remaining_s": view.remaining_s,
                "overrun_s": view.overrun_s,
                "target_s": view.target_s,
                "paused": view.paused,
                "warned_at": view.warned_at,
                "breached_at": view.breached_at,
                "stopped_at": view.stopped_at,
            }
        )
    order_of_targets = {"response": 0, "on_site": 1, "resolution": 2}
    for targets in out.values():
        targets.sort(key=lambda t: order_of_targets.get(t["target"], 9))
    return out


def timeline(conn: Connection, order_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(ENTRIES).where(ENTRIES.c.order_id == order_id).order_by(ENTRIES.c.seq)
    ).mappings()
    return [
        {
            "seq": r["seq"],
            "at": r["at"],
            "actor": r["actor"],
            "kind": r["kind"],
            "from_state": r["from_state"],
            "to_state": r["to_state"],
            "note": r["note"],
            "changes": r["changes"],
        }
        for r in rows
    ]


def legal(order: Mapping[str, Any]) -> list[str]:
    return list(legal_targets(order["state"], order["held_from"], remote_fix=remote_fixable(order)))
