"""Events as ``bus_outbox`` rows: the one place that knows the row shape.

The embedded bus stages every event this way; the NATS bus stages only what a domain
operation decides inside its own transaction (``Bus.stage_on``) and relays the rows to
JetStream (:mod:`services.bus.relay`).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from services.bus.contracts import Event
from services.bus.tables import OutboxEvent
from services.db import table_of

OUTBOX = table_of(OutboxEvent)


def outbox_row(event: Event) -> dict[str, object]:
    return {
        "event_id": event.event_id,
        "type": event.type,
        "charger_id": event.charger_id,
        "received_at": event.received_at,
        "payload": event.model_dump_json(),
    }


def history_row(event: Event) -> dict[str, object]:
    """An event its producer publishes itself, kept as history (the relay skips it)."""
    return {**outbox_row(event), "published": True}


def write_outbox(conn: Connection, events: Sequence[Event]) -> None:
    """Insert ``events`` on ``conn`` in its open transaction; an event id already there is
    skipped (events a charger may cause twice carry a deterministic id)."""
    if not events:
        return
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    conn.execute(insert(OUTBOX).on_conflict_do_nothing(), [outbox_row(e) for e in events])
