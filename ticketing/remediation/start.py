"""What a new work order does first: a remote fix, a lockout beside dispatch, or dispatch.

Called in the transaction that opens the order. With a ``remote_first`` playbook the
order goes to ``remote_fix`` and waits for the runner; with ``lockout`` (S1 safety) it is
dispatched at once and the lockout steps run beside it; without a playbook it is
dispatched.
"""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from services.db import PerDialect, table_of
from ticketing.remediation.playbooks import playbook
from ticketing.tables import Remediation
from ticketing.work_orders import dispatching, store
from ticketing.work_orders.context import OpContext

REMEDIATIONS = table_of(Remediation)
_INSERT = PerDialect(
    lambda dialect: (pg_insert if dialect == "postgresql" else sqlite_insert)(
        REMEDIATIONS
    ).on_conflict_do_nothing()
)


def begin(conn: Connection, ctx: OpContext, order: store.Order) -> store.Order:
    book = playbook(order["playbook"])
    if book is None or order["charger_id"] is None or order["state"] != "new":
        return dispatching.auto_assign(conn, ctx, order)
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
