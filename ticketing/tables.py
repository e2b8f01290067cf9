"""Tables owned by ticketing."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base, UTCDateTime


class FaultReport(Base):
    """Every fault raised or cleared that reached ticketing, once per event id.

    The input that fault rules and work orders are built on.
    """

    __tablename__ = "ticketing_fault_reports"

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # raised | cleared
    charger_id: Mapped[str] = mapped_column(String(48))
    connector: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(32))
    error_code: Mapped[str] = mapped_column(String(64))
    vendor_id: Mapped[str | None] = mapped_column(String(255))
    vendor_error_code: Mapped[str | None] = mapped_column(String(64))
    tech_code: Mapped[str | None] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    info: Mapped[str | None] = mapped_column(Text)
    charger_time: Mapped[datetime | None] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    handled_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_ticketing_fault_reports_charger", "charger_id", "received_at"),)
