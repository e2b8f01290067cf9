"""The durable consumer that takes FaultRaised / FaultCleared events into ticketing.

Idempotent on the event id (the report's primary key: a redelivered event is skipped).
Writes go through the process's group committer, so on SQLite there is one writer
connection and no lock contention with the OCPP hot path.
"""

from __future__ import annotations

from services.bus.contracts import Event, FaultCleared, FaultRaised
from services.committer import GroupCommitter, WriteSet
from services.db import table_of, utcnow
from ticketing.tables import FaultReport

CONSUMER = "ticketing.fault-intake"
EVENT_TYPES = ("FaultRaised", "FaultCleared")
FAULT_REPORTS = table_of(FaultReport)


class FaultIntake:
    def __init__(self, committer: GroupCommitter) -> None:
        self.committer = committer

    async def handle(self, event: Event) -> None:
        if not isinstance(event, FaultRaised | FaultCleared):
            return
        writes = WriteSet()
        writes.insert_ignore(
            FAULT_REPORTS,
            {
                "event_id": event.event_id,
                "kind": "raised" if isinstance(event, FaultRaised) else "cleared",
                "charger_id": event.charger_id,
                "connector": event.connector.key,
                "source": event.source,
                "error_code": event.error_code,
                "vendor_id": event.vendor_id,
                "vendor_error_code": event.vendor_error_code,
                "tech_code": event.tech_code,
                "severity": event.severity.value,
                "info": event.info,
                "charger_time": event.charger_time,
                "received_at": event.received_at,
                "handled_at": utcnow(),
            },
        )
        await self.committer.commit(writes)
