"""Webhook configuration writes and operator actions on deliveries (group-commit ops).

Each function runs inside ``ticketing.tx.transact`` and raises ``NotFound``/``Conflict``
only before writing. Rows come back as plain dicts; the secret is returned only by the
functions that make a new one (:func:`create`, :func:`rotate_secret`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection

from ticketing.tx import Conflict, NotFound
from ticketing.webhooks import outbox, queue, signing
from ticketing.webhooks.outbox import DELIVERIES, WEBHOOKS

#: Columns of a webhook that may be shown (everything but the secret).
PUBLIC_COLUMNS = tuple(c for c in WEBHOOKS.c if c.name != "secret")


def _get(conn: Connection, webhook_id: int) -> dict[str, Any]:
    row = conn.execute(select(*PUBLIC_COLUMNS).where(WEBHOOKS.c.id == webhook_id)).first()
    if row is None:
        raise NotFound(f"webhook {webhook_id} does not exist")
    return dict(row._mapping)


def create(
    conn: Connection,
    *,
    url: str,
    events: Sequence[str],
    description: str | None,
    enabled: bool,
    now: datetime,
) -> tuple[dict[str, Any], str]:
    """A new webhook and its secret (to show once)."""
    secret = signing.new_secret()
    row = conn.execute(
        WEBHOOKS.insert()
        .values(
            url=url,
            secret=secret,
            events=list(events),
            enabled=enabled,
            description=description,
            created_at=now,
        )
        .returning(*PUBLIC_COLUMNS)
    ).one()
    return dict(row._mapping), secret


def change(conn: Connection, webhook_id: int, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Set ``changes`` (url, events, description, enabled) on a webhook."""
    current = _get(conn, webhook_id)
    allowed = {"url", "events", "description", "enabled"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"cannot change {sorted(unknown)}")
    if not changes:
        return current
    row = conn.execute(
        update(WEBHOOKS)
        .where(WEBHOOKS.c.id == webhook_id)
        .values(**changes)
        .returning(*PUBLIC_COLUMNS)
    ).one()
    if changes.get("enabled") and not current["enabled"]:
        outbox.mark_enqueued()  # its paused deliveries are due again
    return dict(row._mapping)


def remove(conn: Connection, webhook_id: int) -> None:
    """Delete a webhook and its delivery log."""
    _get(conn, webhook_id)
    conn.execute(delete(DELIVERIES).where(DELIVERIES.c.webhook_id == webhook_id))
    conn.execute(delete(WEBHOOKS).where(WEBHOOKS.c.id == webhook_id))


def rotate_secret(conn: Connection, webhook_id: int) -> tuple[dict[str, Any], str]:
    """Replace a webhook's secret; deliveries not yet sent are signed with the new one."""
    current = _get(conn, webhook_id)
    secret = signing.new_secret()
    conn.execute(update(WEBHOOKS).where(WEBHOOKS.c.id == webhook_id).values(secret=secret))
    return current, secret


def delivery(conn: Connection, webhook_id: int, delivery_id: int) -> dict[str, Any]:
    """One delivery of a webhook (without its payload)."""
    row = conn.execute(
        select(*(c for c in DELIVERIES.c if c.name != "payload")).where(
            DELIVERIES.c.id == delivery_id, DELIVERIES.c.webhook_id == webhook_id
        )
    ).first()
    if row is None:
        raise NotFound(f"webhook {webhook_id} has no delivery {delivery_id}")
    return dict(row._mapping)


def redeliver(
    conn: Connection, webhook_id: int, delivery_id: int, *, now: datetime
) -> dict[str, Any]:
    """Send a delivered or failed delivery again, from scratch (attempts reset)."""
    current = delivery(conn, webhook_id, delivery_id)
    if current["state"] == queue.PENDING:
        raise Conflict(f"delivery {delivery_id} is still pending")
    conn.execute(
        update(DELIVERIES)
        .where(DELIVERIES.c.id == delivery_id)
        .values(state=queue.PENDING, attempts=0, next_attempt_at=now, delivered_at=None)
    )
    outbox.mark_enqueued()
    return delivery(conn, webhook_id, delivery_id)


def ping(conn: Connection, webhook_id: int, *, now: datetime) -> dict[str, Any]:
    """Queue a ``ping`` event to one enabled webhook; returns its delivery."""
    if not _get(conn, webhook_id)["enabled"]:
        raise Conflict(f"webhook {webhook_id} is disabled")
    event_id = str(uuid.uuid4())
    outbox.enqueue_ping(conn, webhook_id=webhook_id, event_id=event_id, now=now)
    row_id = conn.execute(
        select(DELIVERIES.c.id).where(
            DELIVERIES.c.webhook_id == webhook_id, DELIVERIES.c.event_id == event_id
        )
    ).scalar_one()
    return delivery(conn, webhook_id, row_id)
