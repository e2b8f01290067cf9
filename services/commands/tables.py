"""The command log: every command sent to a charger, its outcome and its progress."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base, UTCDateTime

SeqId = BigInteger().with_variant(Integer(), "sqlite")


class CommandLogEntry(Base):
    """One command: written before it is sent, completed with its outcome after.

    ``outcome`` is null while the command is in flight. ``request_id`` is the OCPP
    requestId of long-running operations; ``progress`` is the list of statuses they
    reported (``{"status", "at"}``), ``progress_status``/``progress_at`` the latest."""

    __tablename__ = "command_log"

    id: Mapped[int] = mapped_column(SeqId, primary_key=True, autoincrement=True)
    command_id: Mapped[str] = mapped_column(String(64), unique=True)
    charger_id: Mapped[str] = mapped_column(String(48))
    name: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    requested_by: Mapped[str] = mapped_column(String(120))
    order_id: Mapped[int | None] = mapped_column(Integer)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime())
    timeout_s: Mapped[float] = mapped_column(Float)
    forbid_during_transaction: Mapped[bool] = mapped_column(Boolean)
    request_id: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str | None] = mapped_column(String(64))
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    detail: Mapped[str | None] = mapped_column(Text)
    node_id: Mapped[str | None] = mapped_column(String(64))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    duration_ms: Mapped[float | None] = mapped_column(Float)
    progress: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    progress_status: Mapped[str | None] = mapped_column(String(64))
    progress_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_command_log_charger", "charger_id", "id"),
        Index("ix_command_log_order", "order_id", "id"),
        Index("ix_command_log_request", "charger_id", "request_id"),
    )
