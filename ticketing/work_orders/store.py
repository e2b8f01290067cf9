"""Reading and changing work orders: every change is a timeline entry plus its projection.

``create`` and ``change`` are the only writers of ``ticketing_work_orders``. A change
that others must hear of (``notify``) also queues the webhook deliveries and a
``WorkOrderChanged`` bus event in the same transaction (transactional outbox), and SLA
clocks follow every change of state, priority or contract.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection

from services.bus.contracts import WorkOrderChanged
from services.committer import GroupCommitter
from services.observability import metrics
from ticketing import tx
from ticketing.webhooks.outbox import enqueue as enqueue_webhooks
from ticketing.work_orders import sla_clocks, sla_events
from ticketing.work_orders.context import OpContext
from ticketing.work_orders.timeline import ENTRIES, WORK_ORDERS, to_json

T = TypeVar("T")

Order = dict[str, Any]


#: Resolutions reached without a person.
AUTOMATIC = frozenset({"self_recovered", "resolved_remotely"})


#: Statements built once (Decision: building a Core statement per call — coercing every
#: value into a bind parameter, then computing its cache key — cost more CPU than running
#: it; these take their values as execute parameters, and SQLAlchemy's compiled cache
#: keeps one compiled form per set of columns).
_BY_ID = select(WORK_ORDERS).where(WORK_ORDERS.c.id == bindparam("b_id"))
_BY_ID_LOCKED = _BY_ID.with_for_update()
_BY_KEY_LOCKED = (
    select(WORK_ORDERS).where(WORK_ORDERS.c.dedupe_key == bindparam("b_key")).with_for_update()
)
_INSERT_ORDER = WORK_ORDERS.insert()
_INSERT_ENTRY = ENTRIES.insert()
#: the columns an execution sets come from its parameters; ``b_id``/``b_version`` match
_UPDATE_ORDER = WORK_ORDERS.update().where(
    WORK_ORDERS.c.id == bindparam("b_id"), WORK_ORDERS.c.version == bindparam("b_version")
)


class ConcurrentChange(RuntimeError):
    """The order changed under this transaction (retried by the committer/bus)."""


async def run(
    committer: GroupCommitter,
    ctx: OpContext,
    fn: Callable[[Connection, OpContext], T],
    *,
    background: bool = False,
) -> T:
    """Run ``fn`` in a group-committed transaction, then its after-commit effects.
    ``background``: see :meth:`~services.committer.GroupCommitter.commit`."""

    def op(conn: Connection) -> T:
        ctx.after_commit.clear()  # a retried batch runs the op again: keep one run's effects
        return fn(conn, ctx)

    result = await tx.transact(committer, op, background=background)
    ctx.run_after_commit()
    return result


def load(conn: Connection, order_id: int, *, lock: bool = True) -> Order | None:
    query = _BY_ID_LOCKED if lock else _BY_ID
    row = conn.execute(query, {"b_id": order_id}).mappings().first()
    return dict(row) if row is not None else None


def get(conn: Connection, order_id: int) -> Order:
    order = load(conn, order_id)
    if order is None:
        raise tx.NotFound(f"work order {order_id} does not exist")
    return order


def open_by_key(conn: Connection, key: str) -> Order | None:
    row = conn.execute(_BY_KEY_LOCKED, {"b_key": key}).mappings().first()
    return dict(row) if row is not None else None


def create(
    conn: Connection,
    ctx: OpContext,
    fields: Mapping[str, Any],
    *,
    note: str | None = None,
    event_id: str | None = None,
) -> Order:
    """Insert a new order (state ``new``) with its first timeline entry and SLA clocks."""
    values: Order = {
        "type": "corrective",
        "state": "new",
        "occurrences": 1,
        "first_seen": ctx.now,
        "last_seen": ctx.now,
        "declined_by": [],
        **fields,
        "created_at": ctx.now,
        "updated_at": ctx.now,
        "version": 1,
    }
    inserted = conn.execute(_INSERT_ORDER, values).inserted_primary_key
    assert inserted is not None
    order_id = int(inserted[0])
    order: Order = {c.name: None for c in WORK_ORDERS.columns} | values | {"id": order_id}
    conn.execute(
        _INSERT_ENTRY,
        {
            "order_id": order_id,
            "seq": 1,
            "at": ctx.now,
            "actor": ctx.actor,
            "kind": "created",
            "from_state": None,
            "to_state": "new",
            "note": note,
            "changes": to_json({k: v for k, v in values.items() if k != "version"}),
            "event_id": event_id,
        },
    )
    sla_clocks.start_all(conn, ctx, order)
    publish(conn, ctx, order, "created", seq=1)
    labels = (str(order["category"]), str(order["source"]))
    ctx.later(lambda: metrics.WORK_ORDERS_CREATED.labels(*labels).inc())
    return order


def change(
    conn: Connection,
    ctx: OpContext,
    order: Order,
    *,
    kind: str,
    changes: Mapping[str, Any] | None = None,
    to_state: str | None = None,
    note: str | None = None,
    event_id: str | None = None,
    notify: str | None = None,
    data: Mapping[str, Any] | None = None,
) -> Order:
    """Append one timeline entry and apply its ``changes`` to the order row.

    Before a change of state, SLA targets already due fire (so an order resolved after
    its deadline, before the scanner ran, is breached rather than met)."""
    if to_state is not None and kind not in sla_events.SLA_KINDS:
        order = sla_events.fire_for_order(conn, ctx, order)
    fields: Order = dict(changes or {})
    if to_state is not None:
        fields["state"] = to_state
    seq = int(order["version"]) + 1
    conn.execute(
        _INSERT_ENTRY,
        {
            "order_id": order["id"],
            "seq": seq,
            "at": ctx.now,
            "actor": ctx.actor,
            "kind": kind,
            "from_state": order["state"] if to_state is not None else None,
            "to_state": to_state,
            "note": note,
            "changes": to_json({**fields, **({"data": dict(data)} if data else {})}),
            "event_id": event_id,
        },
    )
    result = conn.execute(
        _UPDATE_ORDER,
        {
            **fields,
            "version": seq,
            "updated_at": ctx.now,
            "b_id": order["id"],
            "b_version": order["version"],
        },
    )
    if result.rowcount != 1:
        raise ConcurrentChange(f"work order {order['id']} changed concurrently")
    updated: Order = {**order, **fields, "version": seq, "updated_at": ctx.now}
    sla_clocks.follow(conn, ctx, order, updated)
    if to_state is not None:
        ctx.later(lambda: metrics.WORK_ORDER_TRANSITIONS.labels(to_state).inc())
        resolution = fields.get("resolution")
        # a person may record a recovery they found (self_recovered): not "without a person"
        if to_state == "resolved" and resolution in AUTOMATIC and ctx.actor.startswith("system"):
            ctx.later(lambda: metrics.WORK_ORDERS_AUTO_RESOLVED.labels(resolution).inc())
    if notify is not None:
        publish(conn, ctx, updated, notify, seq=seq, data=data)
    return updated


def publish(
    conn: Connection,
    ctx: OpContext,
    order: Order,
    change_kind: str,
    *,
    seq: int,
    data: Mapping[str, Any] | None = None,
) -> None:
    """Queue webhooks and a bus event for ``change_kind`` in this transaction."""
    event_id = f"wo-{order['id']}-{seq}"
    enqueue_webhooks(
        conn,
        event_type=change_kind,
        event_id=event_id,
        order=public_fields(order),
        now=ctx.now,
        data=data,
    )
    if ctx.bus is not None and ctx.bus.supports_stage_on:
        ctx.bus.stage_on(
            conn,
            [
                WorkOrderChanged(
                    event_id=event_id,
                    charger_id=order["charger_id"] or "",
                    received_at=ctx.now,
                    order_id=order["id"],
                    change=change_kind,
                    state=order["state"],
                    priority=order["priority"],
                    severity=order["severity"],
                    category=order["category"],
                    site_id=order["site_id"],
                    connector=order["connector"],
                    playbook=order["playbook"],
                    sla_target=(data or {}).get("target"),
                )
            ],
        )


PUBLIC = (
    "id",
    "source",
    "type",
    "state",
    "title",
    "charger_id",
    "connector",
    "site_id",
    "category",
    "severity",
    "priority",
    "assignee_id",
    "team_id",
    "occurrences",
    "resolution",
    "created_at",
    "updated_at",
)


def public_fields(order: Mapping[str, Any]) -> dict[str, Any]:
    """The summary of an order sent to webhook receivers."""
    return {key: order.get(key) for key in PUBLIC}
