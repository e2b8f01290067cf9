"""Tables owned by ticketing.

Work orders follow rule 3 of ARCHITECTURE.md: ``ticketing_work_order_entries`` is the
append-only timeline; ``ticketing_work_orders`` is its projection, written in the same
transaction as each entry and reproducible by folding the entries
(:func:`ticketing.work_orders.timeline.fold`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base, UTCDateTime

SeqId = BigInteger().with_variant(Integer(), "sqlite")


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


# ---------------------------------------------------------------- sites and chargers
class Site(Base):
    __tablename__ = "ticketing_sites"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    region: Mapped[str | None] = mapped_column(String(64))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    address: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ChargerAsset(Base):
    """What ticketing knows of a charger: its site, and what its events told (projection)."""

    __tablename__ = "ticketing_chargers"

    charger_id: Mapped[str] = mapped_column(String(48), primary_key=True)
    site_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("ticketing_sites.id", ondelete="SET NULL"), index=True
    )
    vendor: Mapped[str | None] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(64))
    firmware_version: Mapped[str | None] = mapped_column(String(64))
    ocpp_version: Mapped[str | None] = mapped_column(String(8))
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    offline_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: its latest connection (received_at of its latest ChargerOnline or ChargerConnected)
    last_connected_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_boot_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ChargerSignal(Base):
    """Recent boots and connector status flips, counted in windows for derived faults."""

    __tablename__ = "ticketing_charger_signals"

    id: Mapped[int] = mapped_column(SeqId, primary_key=True, autoincrement=True)
    charger_id: Mapped[str] = mapped_column(String(48))
    connector: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(120))  # boot | flip | rate:<rule name>
    at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_ticketing_charger_signals_lookup", "charger_id", "kind", "at"),)


# ---------------------------------------------------------------- rules and SLA policies
class FaultRule(Base):
    """Fault signature -> classification. Evaluated by ``position``; first match wins."""

    __tablename__ = "ticketing_fault_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    position: Mapped[int] = mapped_column(Integer, unique=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    #: field -> pattern (see ticketing.rules.model); {} matches everything (catch-all)
    match: Mapped[dict[str, Any]] = mapped_column(JSON)
    category: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(2))  # S1..S4
    impact: Mapped[int] = mapped_column(Integer)  # 1 high .. 3 low
    urgency: Mapped[int] = mapped_column(Integer)  # 1 high .. 3 low
    sla_policy: Mapped[str | None] = mapped_column(String(100))
    playbook: Mapped[str | None] = mapped_column(String(100))
    skill: Mapped[str | None] = mapped_column(String(64))
    open_order: Mapped[bool] = mapped_column(Boolean, default=True)
    rate_threshold: Mapped[int | None] = mapped_column(Integer)
    rate_window_s: Mapped[int | None] = mapped_column(Integer)
    origin: Mapped[str] = mapped_column(String(16), default="default")  # default | api
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SlaPolicy(Base):
    """Targets for one priority (or any) and one contract type (or any)."""

    __tablename__ = "ticketing_sla_policies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    priority: Mapped[str | None] = mapped_column(String(2))  # P1..P5, None = any
    contract_type: Mapped[str | None] = mapped_column(String(16))  # own|vendor|partner|None
    calendar: Mapped[str] = mapped_column(String(16), default="24x7")  # 24x7 | business
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    #: {"mon": [["08:00", "18:00"]], ...}; used when calendar == "business"
    business_hours: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    holidays: Mapped[list[str]] = mapped_column(JSON, default=list)  # ISO dates, local
    response_s: Mapped[int | None] = mapped_column(Integer)
    on_site_s: Mapped[int | None] = mapped_column(Integer)
    resolution_s: Mapped[int | None] = mapped_column(Integer)
    warn_fraction: Mapped[float] = mapped_column(Float, default=0.75)
    verification_window_s: Mapped[int] = mapped_column(Integer, default=3600)
    reopen_window_s: Mapped[int] = mapped_column(Integer, default=86400)
    require_signoff: Mapped[bool] = mapped_column(Boolean, default=False)
    escalation_contact: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


# ---------------------------------------------------------------- people
class Team(Base):
    __tablename__ = "ticketing_teams"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    contract_type: Mapped[str] = mapped_column(String(16), default="own")  # own|vendor|partner
    escalation_contact: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Technician(Base):
    __tablename__ = "ticketing_technicians"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    contact: Mapped[str | None] = mapped_column(String(255))
    skills: Mapped[list[str]] = mapped_column(JSON, default=list)
    regions: Mapped[list[str]] = mapped_column(JSON, default=list)
    sites: Mapped[list[str]] = mapped_column(JSON, default=list)
    team_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("ticketing_teams.id", ondelete="SET NULL")
    )
    on_duty: Mapped[bool] = mapped_column(Boolean, default=True)
    max_concurrent: Mapped[int] = mapped_column(Integer, default=5)
    #: the API user who acts as this technician (role technician)
    user_name: Mapped[str | None] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


# ---------------------------------------------------------------- work orders
class WorkOrder(Base):
    """The current state of a work order: the projection of its timeline."""

    __tablename__ = "ticketing_work_orders"

    id: Mapped[int] = mapped_column(SeqId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(16))  # fault|offline|complaint|inspection|manual
    type: Mapped[str] = mapped_column(String(16), default="corrective")
    state: Mapped[str] = mapped_column(String(16))
    held_from: Mapped[str | None] = mapped_column(String(16))  # state before on_hold
    hold_reason: Mapped[str | None] = mapped_column(String(16))
    resolution: Mapped[str | None] = mapped_column(String(32))
    close_reason: Mapped[str | None] = mapped_column(Text)
    title: Mapped[str] = mapped_column(String(300))
    description: Mapped[str | None] = mapped_column(Text)
    charger_id: Mapped[str | None] = mapped_column(String(48))
    connector: Mapped[str | None] = mapped_column(String(16))  # "0" = whole charger
    site_id: Mapped[str | None] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(2))
    impact: Mapped[int] = mapped_column(Integer)
    urgency: Mapped[int] = mapped_column(Integer)
    priority: Mapped[str] = mapped_column(String(2))
    rule_name: Mapped[str | None] = mapped_column(String(100))
    sla_policy_id: Mapped[int | None] = mapped_column(Integer)
    playbook: Mapped[str | None] = mapped_column(String(100))
    skill: Mapped[str | None] = mapped_column(String(64))
    error_code: Mapped[str | None] = mapped_column(String(64))
    #: set while the order is open: at most one open order per (charger, connector, category)
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    absorbed_by: Mapped[int | None] = mapped_column(BigInteger)
    parent_id: Mapped[int | None] = mapped_column(BigInteger)
    assignee_id: Mapped[int | None] = mapped_column(Integer, index=True)
    team_id: Mapped[int | None] = mapped_column(Integer)
    declined_by: Mapped[list[int]] = mapped_column(JSON, default=list)
    occurrences: Mapped[int] = mapped_column(Integer, default=1)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime())
    fault_received_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    on_site_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    verify_after: Mapped[datetime | None] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer, default=1)

    __table_args__ = (
        Index("ix_ticketing_work_orders_state", "state", "priority"),
        Index("ix_ticketing_work_orders_charger", "charger_id", "state"),
        Index("ix_ticketing_work_orders_site", "site_id", "state"),
        Index("ix_ticketing_work_orders_verify", "verify_after"),
    )


class WorkOrderEntry(Base):
    """One append-only timeline entry of a work order (never updated or deleted)."""

    __tablename__ = "ticketing_work_order_entries"

    id: Mapped[int] = mapped_column(SeqId, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("ticketing_work_orders.id", ondelete="CASCADE")
    )
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(24))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str | None] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    #: the fields this entry set on the order (the fold applies them), plus context
    changes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    event_id: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("order_id", "seq"),)


class SlaClock(Base):
    """One SLA target of one order (response, on_site, resolution)."""

    __tablename__ = "ticketing_sla_clocks"

    order_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("ticketing_work_orders.id", ondelete="CASCADE"), primary_key=True
    )
    target: Mapped[str] = mapped_column(String(16), primary_key=True)
    policy_id: Mapped[int | None] = mapped_column(Integer)
    target_s: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))  # running|paused|warning|breached|met|...
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    running_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    consumed_s: Mapped[float] = mapped_column(Float, default=0.0)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    warn_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    warned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    breached_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_ticketing_sla_clocks_due", "due_at"),
        Index("ix_ticketing_sla_clocks_warn", "warn_at"),
    )


# ---------------------------------------------------------------- webhooks
class Webhook(Base):
    __tablename__ = "ticketing_webhooks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(String(2000))
    #: HMAC key; needed in clear to sign, so never returned after creation nor logged
    secret: Mapped[str] = mapped_column(String(128))
    events: Mapped[list[str]] = mapped_column(JSON, default=list)  # [] = all
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WebhookDelivery(Base):
    __tablename__ = "ticketing_webhook_deliveries"

    id: Mapped[int] = mapped_column(SeqId, primary_key=True, autoincrement=True)
    webhook_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("ticketing_webhooks.id", ondelete="CASCADE")
    )
    event_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(32))
    order_id: Mapped[int | None] = mapped_column(BigInteger)
    payload: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("webhook_id", "event_id"),
        Index("ix_ticketing_webhook_deliveries_due", "state", "next_attempt_at"),
    )


# ---------------------------------------------------------------- remote remediation
class Remediation(Base):
    """The remote fix of one work order: which playbook, how far, what each step got."""

    __tablename__ = "ticketing_remediations"

    order_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("ticketing_work_orders.id", ondelete="CASCADE"), primary_key=True
    )
    charger_id: Mapped[str] = mapped_column(String(48))
    connector: Mapped[str | None] = mapped_column(String(16))
    playbook: Mapped[str] = mapped_column(String(100))
    mode: Mapped[str] = mapped_column(String(16))  # remote_first | lockout
    #: running (a step is due at next_at) | succeeded | failed | done (lockout) | stopped
    state: Mapped[str] = mapped_column(String(16))
    step: Mapped[int] = mapped_column(Integer, default=0)  # index of the next step
    next_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    attempts: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
