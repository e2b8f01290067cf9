"""What a new work order does first: a remote fix, a lockout beside dispatch, or dispatch.

Called in the transaction that opens the order. With a ``remote_first`` playbook the
order goes to ``remote_fix`` and waits for the runner; with ``lockout`` (S1 safety) it is
dispatched at once and the lockout steps run beside it; without a playbook it is
dispatched.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from services.db import PerDialect, table_of
from ticketing.remediation.playbooks import Playbook, playbook
from ticketing.tables import Remediation
from ticketing.work_orders import dispatching, store
from ticketing.work_orders.context import OpContext

REMEDIATIONS = table_of(Remediation)
_INSERT = PerDialect(
    lambda dialect: (pg_insert if dialect == "postgresql" else sqlite_insert)(
        REMEDIATIONS
    ).on_conflict_do_nothing()
)
_LOCKED = (
    select(REMEDIATIONS).where(REMEDIATIONS.c.order_id == bindparam("b_order")).with_for_update()
)
_REARM = REMEDIATIONS.update().where(REMEDIATIONS.c.order_id == bindparam("b_order"))


def begin(conn: Connection, ctx: OpContext, order: store.Order) -> store.Order:
    book = playbook(order["playbook"])
    if book is None or order["charger_id"] is None or order["state"] != "new":
        return dispatching.auto_assign(conn, ctx, order)
    _insert(conn, ctx, order, book)
    if book.mode == "lockout":
        return dispatching.auto_assign(conn, ctx, order)
    return store.change(
        conn,
        ctx.as_actor("system:remediation"),
        order,
        kind="transition",
        to_state="remote_fix",
        note=f"remote fix first: playbook {book.name} ({len(book.steps)} steps)",
        data={"playbook": book.name, "steps": [s.command for s in book.steps]},
    )


def _insert(conn: Connection, ctx: OpContext, order: store.Order, book: Playbook) -> None:
    conn.execute(
        _INSERT.on(conn),
        {
            "order_id": order["id"],
            "charger_id": order["charger_id"],
            "connector": order["connector"],
            "playbook": book.name,
            "mode": book.mode,
            "state": "running",
            "step": 0,
            "next_at": ctx.now,
            "attempts": [],
            "started_at": ctx.now,
            "updated_at": ctx.now,
        },
    )


def rearm(conn: Connection, ctx: OpContext, order: store.Order) -> dict[str, Any] | None:
    """A person moves ``order`` into ``remote_fix`` (back from hold, or to try again): its
    remote-first remediation runs again if it had stopped (the runner stops it when it
    finds the order elsewhere, e.g. on hold), from the step it stopped at, or from the
    first if it had run to its end, or from the first if it never ran. Returns what runs
    (for the timeline), None if it is still running.

    Decision: without this, an order released from hold back to ``remote_fix`` had no
    remediation running, no assignee and was not in the dispatcher queue: nothing moved
    it again."""
    book = playbook(order["playbook"])
    if book is None or book.mode != "remote_first" or order["charger_id"] is None:
        return None  # refused before: see playbooks.remote_fixable
    row = conn.execute(_LOCKED, {"b_order": order["id"]}).mappings().first()
    if row is None:  # never started (e.g. the order was dispatched at once): from the first
        _insert(conn, ctx, order, book)
        return {"playbook": book.name, "step": 0, "steps": [s.command for s in book.steps]}
    if row["state"] == "running":
        return None
    step = int(row["step"]) if int(row["step"]) < len(book.steps) else 0
    conn.execute(
        _REARM,
        {
            "b_order": order["id"],
            "state": "running",
            "step": step,
            "next_at": ctx.now,
            "finished_at": None,
            "updated_at": ctx.now,
        },
    )
    return {"playbook": book.name, "step": step, "steps": [s.command for s in book.steps]}


_ATTEMPTS = select(REMEDIATIONS.c.attempts).where(REMEDIATIONS.c.order_id == bindparam("b_order"))


def reached_the_charger(conn: Connection, order_id: int) -> bool:
    """Did a remote fix of this order reach the charger (a command it answered)? Only then
    is a recovery ``resolved_remotely``: a charger recovering before the first step was
    sent recovered by itself (it was counted a remote-fix success)."""
    attempts = conn.execute(_ATTEMPTS, {"b_order": order_id}).scalar() or []
    return any(a.get("outcome") == "answered" for a in attempts if isinstance(a, dict))
