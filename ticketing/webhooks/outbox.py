"""The webhook outbox: one pending delivery row per subscribed webhook, written in the
transaction of the work-order change it announces.

Decision: :func:`enqueue` runs inside the caller's group-commit transaction (transactional
outbox), so a delivery exists if and only if the change committed; the deliverer sends
it later. ``(webhook_id, event_id)`` is unique and inserts ignore conflicts, so an event
the bus redelivers never sends twice.

Decision: the hooks are read with one small ``SELECT`` per call, with no cache: the
table holds a handful of rows, and a cache would need invalidation across replicas.

Wake-up: :func:`enqueue` bumps a process-wide generation number; the deliverer's commit
hook (``GroupCommitter.on_commit``) compares it with the last one it saw and wakes up.
The committer runs its hooks between batches (never while a batch's operations run), so
a bump seen by a hook belongs to a committed (or failed) batch; anything missed is found
by the deliverer's poll.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any, Literal, get_args

import orjson
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from services.db import table_of
from ticketing.tables import Webhook, WebhookDelivery

OrderEventType = Literal[
    "created",
    "assigned",
    "warning",
    "breached",
    "escalated",
    "resolved",
    "verified",
    "closed",
    "reopened",
    "cancelled",
]
#: Work-order events a webhook can subscribe to (``[]`` subscribes to all of them).
EVENT_TYPES: tuple[str, ...] = get_args(OrderEventType)
#: Sent only on request (``POST /webhooks/{id}/test``), to one webhook.
PING = "ping"
TYPE_PREFIX = "work_order."

WEBHOOKS = table_of(Webhook)
DELIVERIES = table_of(WebhookDelivery)

_JSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS


class _Generation:
    """A counter bumped by every enqueue that inserted rows (see the module docstring)."""

    value = 0


def generation() -> int:
    """The number of enqueues that inserted something in this process (wake-up signal)."""
    return _Generation.value


def mark_enqueued() -> None:
    """Tell the deliverer (at the next commit) that deliveries became due."""
    _Generation.value += 1


def iso(value: datetime) -> str:
    """A datetime as ISO 8601 UTC with a ``Z`` (naive values are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    text = value.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def payload(
    *,
    event_type: str,
    event_id: str,
    occurred_at: datetime,
    order: Mapping[str, Any] | None,
    data: Mapping[str, Any] | None,
) -> str:
    """The JSON body of a webhook request, keys sorted (the same input gives the same text)."""
    document = {
        "id": event_id,
        "type": TYPE_PREFIX + event_type,
        "occurred_at": occurred_at,
        "work_order": dict(order) if order is not None else None,
        "data": dict(data) if data is not None else None,
    }
    return orjson.dumps(document, default=_default, option=_JSON_OPTIONS).decode()


_ENABLED = select(WEBHOOKS.c.id, WEBHOOKS.c.events).where(WEBHOOKS.c.enabled.is_(True))


def _subscribed(events: list[str] | None, event_type: str) -> bool:
    return not events or event_type in events


def _insert(conn: Connection, rows: list[dict[str, Any]]) -> int:
    if not rows:
        return 0
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = (
        insert(DELIVERIES)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["webhook_id", "event_id"])
        .returning(DELIVERIES.c.id)
    )
    inserted = len(conn.execute(stmt).all())
    if inserted:
        mark_enqueued()
    return inserted


def _rows(
    webhook_ids: Iterable[int],
    *,
    event_type: str,
    event_id: str,
    order_id: int | None,
    body: str,
    now: datetime,
) -> list[dict[str, Any]]:
    return [
        {
            "webhook_id": webhook_id,
            "event_id": event_id,
            "event_type": event_type,
            "order_id": order_id,
            "payload": body,
            "state": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for webhook_id in webhook_ids
    ]


def enqueue(
    conn: Connection,
    *,
    event_type: str,
    event_id: str,
    order: Mapping[str, Any],
    now: datetime,
    data: Mapping[str, Any] | None = None,
) -> int:
    """Queue ``event_type`` of ``order`` for every enabled webhook subscribed to it.

    Call it inside the transaction that changes the order. ``order`` may hold datetimes
    (sent as ISO 8601 UTC); its ``id``, if any, is kept as the deliveries' ``order_id``.
    Returns how many deliveries were inserted (0 for an event id already queued)."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown work order event type {event_type!r}")
    hooks = conn.execute(_ENABLED).all()
    targets = [hook.id for hook in hooks if _subscribed(hook.events, event_type)]
    if not targets:
        return 0
    body = payload(
        event_type=event_type, event_id=event_id, occurred_at=now, order=order, data=data
    )
    order_id = order.get("id")
    rows = _rows(
        targets,
        event_type=event_type,
        event_id=event_id,
        order_id=order_id if isinstance(order_id, int) else None,
        body=body,
        now=now,
    )
    return _insert(conn, rows)


def enqueue_ping(conn: Connection, *, webhook_id: int, event_id: str, now: datetime) -> int:
    """Queue a ``ping`` to one webhook, whatever it subscribes to. Returns rows inserted."""
    body = payload(
        event_type=PING,
        event_id=event_id,
        occurred_at=now,
        order=None,
        data={"webhook_id": webhook_id},
    )
    rows = _rows(
        [webhook_id], event_type=PING, event_id=event_id, order_id=None, body=body, now=now
    )
    return _insert(conn, rows)
