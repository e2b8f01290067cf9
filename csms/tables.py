"""Charger registry, live state, history and raw message log tables owned by csms."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    Float,
    ForeignKey,
    Index,
    Integer,
    SQLColumnExpression,
    String,
    Text,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base, UTCDateTime

SeqId = BigInteger().with_variant(Integer(), "sqlite")

CHARGER_ID_LEN = 48
#: the raw log's action and message_id columns (a charger may send longer ones)
LOG_KEY_LEN = 64


class Charger(Base):
    __tablename__ = "chargers"

    id: Mapped[str] = mapped_column(String(CHARGER_ID_LEN), primary_key=True)
    password_hash: Mapped[str | None] = mapped_column(String(200))
    security_profile: Mapped[int] = mapped_column(Integer, default=1)
    registration_status: Mapped[str] = mapped_column(String(16), default="accepted")
    site: Mapped[str | None] = mapped_column(String(100))
    vendor: Mapped[str | None] = mapped_column(String(100))
    model: Mapped[str | None] = mapped_column(String(100))
    notes: Mapped[str | None] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ChargerState(Base):
    """What csms knows live about a charger; kept current by the node holding its socket."""

    __tablename__ = "charger_state"

    charger_id: Mapped[str] = mapped_column(
        ForeignKey("chargers.id", ondelete="CASCADE"), primary_key=True
    )
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    connected: Mapped[bool] = mapped_column(Boolean, default=False)
    node_id: Mapped[str | None] = mapped_column(String(64))
    ocpp_version: Mapped[str | None] = mapped_column(String(8))
    connected_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_seen: Mapped[datetime | None] = mapped_column(UTCDateTime())
    offline_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    vendor: Mapped[str | None] = mapped_column(String(50))
    model: Mapped[str | None] = mapped_column(String(50))
    serial_number: Mapped[str | None] = mapped_column(String(50))
    firmware_version: Mapped[str | None] = mapped_column(String(50))
    last_boot_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    firmware_status: Mapped[str | None] = mapped_column(String(50))


class ConnectorState(Base):
    __tablename__ = "connector_state"

    charger_id: Mapped[str] = mapped_column(
        ForeignKey("chargers.id", ondelete="CASCADE"), primary_key=True
    )
    connector_key: Mapped[str] = mapped_column(String(16), primary_key=True)
    evse_id: Mapped[int | None] = mapped_column(Integer)
    connector_id: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    raw_status: Mapped[str] = mapped_column(String(32))
    error_code: Mapped[str | None] = mapped_column(String(64))
    vendor_id: Mapped[str | None] = mapped_column(String(255))
    vendor_error_code: Mapped[str | None] = mapped_column(String(64))
    info: Mapped[str | None] = mapped_column(String(255))
    charger_time: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: the FaultRaised id of the report that set this state: a retry of it keeps the id
    fault_event_id: Mapped[str | None] = mapped_column(String(36))


class ProblemState(Base):
    """2.0.1 problems a station reported with NotifyEvent, by component, variable, EVSE and
    techCode, so that a clearing that names only the component and variable (no techCode)
    is matched to the raise it clears (``csms/problems.py``). ``cleared_by`` is the
    FaultCleared id of the clearing that closed it (NULL while open): a retried clearing
    finds it again and keeps its ids."""

    __tablename__ = "problem_state"

    charger_id: Mapped[str] = mapped_column(
        ForeignKey("chargers.id", ondelete="CASCADE"), primary_key=True
    )
    problem_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    evse_id: Mapped[int | None] = mapped_column(Integer)
    connector_id: Mapped[int | None] = mapped_column(Integer)
    component: Mapped[str] = mapped_column(String(50))
    component_instance: Mapped[str | None] = mapped_column(String(50))
    variable: Mapped[str] = mapped_column(String(50))
    variable_instance: Mapped[str | None] = mapped_column(String(50))
    error_code: Mapped[str] = mapped_column(String(101))
    tech_code: Mapped[str | None] = mapped_column(String(50))
    tech_info: Mapped[str | None] = mapped_column(String(500))
    vendor_id: Mapped[str | None] = mapped_column(String(255))
    event_code: Mapped[int] = mapped_column(Integer)
    raise_event_id: Mapped[str] = mapped_column(String(36))
    charger_time: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cleared_by: Mapped[str | None] = mapped_column(String(36))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class StatusInterval(Base):
    """Status history, append-only: a row starts an interval that lasts until the next row
    of the same (charger, kind, connector) starts, so intervals never overlap and leave no
    gaps by construction. Uptime is computed from this."""

    __tablename__ = "status_history"

    id: Mapped[int] = mapped_column(SeqId, primary_key=True, autoincrement=True)
    charger_id: Mapped[str] = mapped_column(String(CHARGER_ID_LEN))
    kind: Mapped[str] = mapped_column(String(16))  # connector | connectivity
    connector_key: Mapped[str] = mapped_column(String(16))  # "" for connectivity
    status: Mapped[str] = mapped_column(String(16))
    raw_status: Mapped[str | None] = mapped_column(String(32))
    error_code: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    charger_time: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_status_history_charger_started", "charger_id", "started_at", "id"),)


class MessageLogEntry(Base):
    """The raw frames in and out. A charger's CALL and our answer share one row (``reply``):
    half the rows on the hot path. Other frames (our CALLs, their answers) have a row each."""

    __tablename__ = "message_log"

    id: Mapped[int] = mapped_column(SeqId, primary_key=True, autoincrement=True)
    charger_id: Mapped[str] = mapped_column(String(CHARGER_ID_LEN))
    direction: Mapped[str] = mapped_column(String(3))  # in | out
    message_type: Mapped[int] = mapped_column(Integer)
    action: Mapped[str | None] = mapped_column(String(LOG_KEY_LEN))
    message_id: Mapped[str | None] = mapped_column(String(LOG_KEY_LEN))
    payload: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    reply: Mapped[str | None] = mapped_column(Text)
    reply_type: Mapped[int | None] = mapped_column(Integer)
    reply_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    # No index on ``at``: retention finds its cutoff by bisecting the (time-ordered) ids.
    __table_args__ = (Index("ix_message_log_charger_id", "charger_id", "id"),)


class IdToken(Base):
    __tablename__ = "id_tokens"

    token: Mapped[str] = mapped_column(String(36), primary_key=True)
    #: None: any type (see csms.authorization)
    type: Mapped[str | None] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(16), default="Accepted")
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    group_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


# OCPP's idTag (1.6) and idToken (2.0.1) are CiStrings: "abc" and "ABC" are one token
Index("uq_id_tokens_upper_token", func.upper(IdToken.token), unique=True)


def same_id_token(column: SQLColumnExpression[str], token: str) -> ColumnElement[bool]:
    """``column`` holds ``token`` up to case, as the index compares them (upper in SQL)."""
    return func.upper(column) == func.upper(token)


class Transaction(Base):
    """Charging sessions; ``dedupe_key`` makes a retried start (new message id) a no-op."""

    __tablename__ = "transactions"

    id: Mapped[int] = mapped_column(SeqId, primary_key=True, autoincrement=True)
    dedupe_key: Mapped[str] = mapped_column(String(64), unique=True)
    transaction_id: Mapped[str | None] = mapped_column(String(36))
    charger_id: Mapped[str] = mapped_column(String(CHARGER_ID_LEN))
    connector_key: Mapped[str] = mapped_column(String(16))
    id_token: Mapped[str | None] = mapped_column(String(36))
    meter_start_wh: Mapped[float | None] = mapped_column(Float)
    meter_stop_wh: Mapped[float | None] = mapped_column(Float)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    stop_reason: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_transactions_charger_txid", "charger_id", "transaction_id"),)


class RemoteStartGrant(Base):
    """An id token an operator's remote start sent to a charger (``csms/remote_starts.py``):
    accepted from that charger until ``expires_at`` and while ``transaction_id`` runs."""

    __tablename__ = "remote_start_grants"

    id: Mapped[int] = mapped_column(SeqId, primary_key=True, autoincrement=True)
    charger_id: Mapped[str] = mapped_column(String(CHARGER_ID_LEN))
    token: Mapped[str] = mapped_column(String(36))
    #: the 2.0.1 idToken type sent; None for 1.6 (no types)
    token_type: Mapped[str | None] = mapped_column(String(20))
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: the transaction first started with it (None: none yet)
    transaction_id: Mapped[str | None] = mapped_column(String(36))

    __table_args__ = (Index("ix_remote_start_grants_charger_id", "charger_id"),)


class MeterValue(Base):
    __tablename__ = "meter_values"

    id: Mapped[int] = mapped_column(SeqId, primary_key=True, autoincrement=True)
    dedupe_key: Mapped[str] = mapped_column(String(64), unique=True)
    charger_id: Mapped[str] = mapped_column(String(CHARGER_ID_LEN))
    connector_key: Mapped[str] = mapped_column(String(16))
    transaction_id: Mapped[str | None] = mapped_column(String(36))
    sampled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sampled_values: Mapped[str] = mapped_column(Text)


class CsmsNode(Base):
    """One csms process of a deployment and its liveness (``csms/nodes.py``): a node beats
    ``last_beat`` every ``CHARGEOPS_NODE_BEAT_INTERVAL``; one that stops beating is dead
    and other nodes mark its chargers offline. ``stopped_at`` is set by a clean stop."""

    __tablename__ = "csms_nodes"

    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_beat: Mapped[datetime] = mapped_column(UTCDateTime())
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class CsmsHandover(Base):
    """A charger that connected to a node while another node's row still held it online
    (``csms/nodes.py``). Whether it had an outage is known only once that node's fate is:
    dead with its last beat more than the offline grace before ``taken_at``, the charger was
    offline from ``since`` (its last message there) until ``taken_at``; alive after
    ``taken_at``, it just moved. Settled (and deleted) by the dead-node sweep or the node's
    restart; a row whose node beat after it is deleted unsettled."""

    __tablename__ = "csms_handovers"

    id: Mapped[int] = mapped_column(SeqId, primary_key=True, autoincrement=True)
    charger_id: Mapped[str] = mapped_column(String(CHARGER_ID_LEN))
    from_node: Mapped[str] = mapped_column(String(64))
    since: Mapped[datetime] = mapped_column(UTCDateTime())
    taken_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_csms_handovers_from_node", "from_node"),)
