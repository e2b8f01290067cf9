"""Tables of the embedded bus: the outbox, per-consumer cursors, dead letters, inboxes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Index, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base, UTCDateTime

SeqId = BigInteger().with_variant(Integer(), "sqlite")


class OutboxEvent(Base):
    """Every event published, in order; also the per-charger event history."""

    __tablename__ = "bus_outbox"

    seq: Mapped[int] = mapped_column(SeqId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    type: Mapped[str] = mapped_column(String(64))
    charger_id: Mapped[str] = mapped_column(String(48))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    payload: Mapped[str] = mapped_column(Text)
    #: already published by its producer (NATS mode keeps the row as the charger's event
    #: history only): the outbox relay skips it
    published: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    __table_args__ = (Index("ix_bus_outbox_charger_seq", "charger_id", "seq"),)


class ConsumerCursor(Base):
    """How far each durable consumer has handled the outbox."""

    __tablename__ = "bus_cursors"

    consumer: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DeadLetter(Base):
    """An event a consumer failed to handle ``max_attempts`` times."""

    __tablename__ = "bus_dead_letters"

    id: Mapped[int] = mapped_column(SeqId, primary_key=True, autoincrement=True)
    consumer: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(36))
    type: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer)
    error: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class InboxEntry(Base):
    """Event ids a consumer has already applied (idempotency across redeliveries)."""

    __tablename__ = "bus_inbox"

    consumer: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    handled_at: Mapped[datetime] = mapped_column(UTCDateTime())
