"""The durable consumer that takes FaultRaised / FaultCleared events into ticketing."""

from __future__ import annotations

from services.bus.contracts import Event, FaultCleared, FaultRaised
from services.bus.inbox import first_delivery
from services.db import Database, utcnow
from ticketing.tables import FaultReport

CONSUMER = "ticketing.fault-intake"
EVENT_TYPES = ("FaultRaised", "FaultCleared")


class FaultIntake:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def handle(self, event: Event) -> None:
        if not isinstance(event, FaultRaised | FaultCleared):
            return
        async with self.db.session() as session:
            if not await first_delivery(session, CONSUMER, event.event_id):
                return
            session.add(
                FaultReport(
                    event_id=event.event_id,
                    kind="raised" if isinstance(event, FaultRaised) else "cleared",
                    charger_id=event.charger_id,
                    connector=event.connector.key,
                    source=event.source,
                    error_code=event.error_code,
                    vendor_id=event.vendor_id,
                    vendor_error_code=event.vendor_error_code,
                    tech_code=event.tech_code,
                    severity=event.severity.value,
                    info=event.info,
                    charger_time=event.charger_time,
                    received_at=event.received_at,
                    handled_at=utcnow(),
                )
            )
            await session.commit()
