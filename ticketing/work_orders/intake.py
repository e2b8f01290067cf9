"""The durable bus consumer that turns charger events into work-order changes.

Each event is applied inside one transaction, all or nothing: the event id goes into the
consumer's inbox (a redelivered event does nothing), the fault report and the charger
projection are written, and the work order is opened, appended to, resolved or reopened.
A page of events from the embedded bus shares transactions of bounded CPU time (see
:meth:`WorkOrderIntake.handle_batch`). Routing is a table from event type to handler.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from services.bus import Bus
from services.bus.contracts import (
    ChargerBooted,
    ChargerConnected,
    ChargerOffline,
    ChargerOnline,
    ConnectorStatusChanged,
    Event,
    FaultCleared,
    FaultRaised,
    NormalizedStatus,
    SecurityEventReported,
)
from services.bus.tables import InboxEntry
from services.clock import Clock
from services.commands.tables import CommandLogEntry
from services.committer import GroupCommitter
from services.db import Database, PerDialect, table_of, utcnow
from services.observability import metrics
from ticketing.rules.model import Classification, FaultSignature
from ticketing.rules.store import classify
from ticketing.tables import ChargerAsset, FaultReport
from ticketing.work_orders import derived, faults, store
from ticketing.work_orders.context import OpContext, Thresholds
from ticketing.work_orders.states import ACTIVE
from ticketing.work_orders.timeline import WORK_ORDERS

log = logging.getLogger(__name__)

CONSUMER = "ticketing.work-orders"
COMMAND_LOG = table_of(CommandLogEntry)
INBOX = table_of(InboxEntry)
ASSETS = table_of(ChargerAsset)
FAULT_REPORTS = table_of(FaultReport)
HEALTHY = frozenset({NormalizedStatus.available, NormalizedStatus.occupied})
#: A 1.6 errorCode that reports no fault (2.0.1 status changes carry none).
NO_ERROR = frozenset({None, "NoError"})
#: Orders a connector reporting Available again resolves (not tamper, firmware, network).
PORT_CATEGORIES = frozenset(
    {
        "connector_cable",
        "power_electronics",
        "ground_insulation",
        "overheating",
        "payment_rfid",
        "display_hmi",
        "other",
    }
)

Handler = Callable[[Connection, OpContext, Any], None]


_INBOX_INSERT = PerDialect(
    lambda dialect: (
        (pg_insert if dialect == "postgresql" else sqlite_insert)(INBOX)
        .values(consumer=CONSUMER, event_id=bindparam("event_id"), handled_at=bindparam("now"))
        .on_conflict_do_nothing()
    )
)
_INSERT_REPORT = FAULT_REPORTS.insert()


def _first_delivery(conn: Connection, event: Event, now: Any) -> bool:
    result = conn.execute(_INBOX_INSERT.on(conn), {"event_id": event.event_id, "now": now})
    return bool(result.rowcount == 1)


def _touch_asset(conn: Connection, ctx: OpContext, charger_id: str, **values: Any) -> None:
    """Upsert the charger's projection with ``values`` (site assignment is kept)."""
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    row = {"charger_id": charger_id, "updated_at": ctx.now, **values}
    stmt = insert(ASSETS).values(row)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["charger_id"],
            set_={k: stmt.excluded[k] for k in row if k != "charger_id"},
        )
    )


def _signature(event: FaultRaised | FaultCleared, asset: Mapping[str, Any]) -> FaultSignature:
    return FaultSignature(
        source=event.source,
        error_code=event.error_code,
        ocpp_version=asset.get("ocpp_version"),
        status=event.status.value if event.status is not None else None,
        vendor_id=event.vendor_id,
        vendor_error_code=event.vendor_error_code,
        tech_code=event.tech_code,
        component=event.component,
        variable=event.variable,
        charger_vendor=asset.get("vendor"),
        charger_model=asset.get("model"),
        connector=event.connector.key,
    )


def _report_row(event: FaultRaised | FaultCleared, now: Any) -> dict[str, Any]:
    return {
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
        "handled_at": now,
    }


def _rate_allows(
    conn: Connection, ctx: OpContext, charger_id: str, connector: str, cls: Classification
) -> bool:
    """S4 and noisy faults open an order only above their rate threshold."""
    if cls.rate_threshold is None:
        return True
    window = float(cls.rate_window_s or 3600)
    count = derived.signal(conn, ctx, charger_id, connector, f"rate:{cls.rule_name}", window)
    return count >= cls.rate_threshold


def on_fault_raised(conn: Connection, ctx: OpContext, event: FaultRaised) -> None:
    conn.execute(_INSERT_REPORT, _report_row(event, ctx.now))
    asset = faults.asset_of(conn, event.charger_id)
    cls = classify(conn, _signature(event, asset))
    counted = metrics.child(metrics.FAULTS_CLASSIFIED, cls.severity, cls.category)
    ctx.later(counted.inc)  # after the commit: a retried batch runs this op again
    if not cls.open_order or not _rate_allows(
        conn, ctx, event.charger_id, event.connector.key, cls
    ):
        return
    site_id = asset.get("site_id")
    code = event.tech_code or event.vendor_error_code
    title = f"{event.charger_id}/{event.connector.key}: {event.error_code}" + (
        f" ({code})" if code and code != event.error_code else ""
    )
    faults.report(
        conn,
        ctx,
        faults.FaultInput(
            charger_id=event.charger_id,
            connector=event.connector.key,
            site_id=site_id,
            classification=cls,
            source="fault",
            error_code=event.error_code,
            title=title,
            event_id=event.event_id,
            received_at=event.received_at,
            detail={k: v for k, v in (("code", code), ("info", event.info)) if v},
        ),
    )
    received = event.received_at
    ctx.later(
        lambda: metrics.FAULT_TO_ORDER_SECONDS.observe(
            max((utcnow() - received).total_seconds(), 0.0)
        )
    )
    if faults.is_charger_level(event.connector.key):
        derived.site_check(conn, ctx, site_id)


def on_fault_cleared(conn: Connection, ctx: OpContext, event: FaultCleared) -> None:
    conn.execute(_INSERT_REPORT, _report_row(event, ctx.now))
    if event.status is not None and event.status not in HEALTHY:
        return  # the fault changed, the connector is not healthy (e.g. Unavailable)
    key = event.connector.key
    if event.status is None and faults.port_still_faulted(conn, event.charger_id, key):
        return  # a problem cleared (NotifyEvent), but the port's status is still Faulted
    categories: frozenset[str] | None
    if event.error_code == faults.GENERIC and not (event.vendor_error_code or event.tech_code):
        # a bare Faulted cleared into a usable status: it went into the order of the
        # port's problem, whatever its category (see faults.report)
        categories = None
    else:
        cls = classify(conn, _signature(event, faults.asset_of(conn, event.charger_id)))
        categories = frozenset({cls.category})
    faults.healthy(
        conn,
        ctx,
        charger_id=event.charger_id,
        connector=key,
        categories=categories,
        source="fault",
        event_id=event.event_id,
        why=f"{event.error_code} cleared by the charger",
    )


def _reports_healthy(event: ConnectorStatusChanged) -> bool:
    """A usable status without an error: a 1.6 connector that goes on charging (or
    idling) with its errorCode still set (HighTemperature, GroundFailure, ...) is not
    healthy; it keeps reporting the fault, which stays an occurrence of its order, and
    the errorCode going back to NoError is the FaultCleared that resolves it."""
    return event.status in HEALTHY and event.error_code in NO_ERROR


def on_status(conn: Connection, ctx: OpContext, event: ConnectorStatusChanged) -> None:
    key = event.connector.key
    if _is_flip(event):
        derived.flip(conn, ctx, event.charger_id, key, event.event_id)
    if _reports_healthy(event):
        faults.healthy(
            conn,
            ctx,
            charger_id=event.charger_id,
            connector=key,
            categories=PORT_CATEGORIES,
            source="fault",
            event_id=event.event_id,
            why=f"connector {key} reports {event.raw_status}",
        )


#: 2.0.1 boot reasons that say a command caused the reboot (Reset, UpdateFirmware)
COMMANDED_BOOT_REASONS = frozenset({"RemoteReset", "ScheduledReset", "FirmwareUpdate"})
_COMMANDED = (
    select(COMMAND_LOG.c.id)
    .where(
        COMMAND_LOG.c.charger_id == bindparam("b_charger"),
        COMMAND_LOG.c.name.in_(("reset", "update-firmware")),
        COMMAND_LOG.c.outcome == "answered",
        or_(COMMAND_LOG.c.status.is_(None), COMMAND_LOG.c.status == "Accepted"),
        COMMAND_LOG.c.answered_at > bindparam("b_since"),
        COMMAND_LOG.c.answered_at <= bindparam("b_until"),
    )
    .limit(1)
)


def _commanded_boot(conn: Connection, event: ChargerBooted, previous: Any) -> bool:
    """The boot answers a command: the station says so (2.0.1 reason), or it accepted a
    Reset / UpdateFirmware between its previous boot and this one (1.6 boots give no
    reason; the bounds hold however late the consumer reads the boot)."""
    if event.reason in COMMANDED_BOOT_REASONS:
        return True
    since = previous if previous is not None else event.received_at - timedelta(hours=1)
    params = {"b_charger": event.charger_id, "b_since": since, "b_until": event.received_at}
    return conn.execute(_COMMANDED, params).first() is not None


def on_booted(conn: Connection, ctx: OpContext, event: ChargerBooted) -> None:
    previous = faults.asset_of(conn, event.charger_id).get("last_boot_at")
    _touch_asset(
        conn,
        ctx,
        event.charger_id,
        vendor=event.vendor,
        model=event.model,
        firmware_version=event.firmware_version,
        ocpp_version=event.ocpp_version,
        last_boot_at=event.received_at,
    )
    if event.repeated:  # a pending station's retries or a triggered boot: no reboot
        return
    if _commanded_boot(conn, event, previous):  # an operator's or a playbook's reset
        return
    derived.reboot(conn, ctx, event.charger_id, event.event_id)


def on_online(conn: Connection, ctx: OpContext, event: ChargerOnline | ChargerConnected) -> None:
    asset = faults.asset_of(conn, event.charger_id)
    if not asset.get("online", True) and _later(asset.get("offline_since"), event.received_at):
        return  # the charger went offline after this connection: older news
    _touch_asset(
        conn, ctx, event.charger_id, online=True, offline_since=None,
        last_connected_at=event.received_at, ocpp_version=event.ocpp_version,
    )  # fmt: skip
    faults.healthy(
        conn,
        ctx,
        charger_id=event.charger_id,
        connector=None,
        categories=None,
        source="offline",
        event_id=event.event_id,
        why="the charger is back online",
    )
    derived.site_recovered(conn, ctx, faults.site_of(conn, event.charger_id))


def on_offline(conn: Connection, ctx: OpContext, event: ChargerOffline) -> None:
    """Decision: events do not reach this consumer in the order their facts happened. A
    ChargerOffline is staged in the marking transaction and published by the outbox relay
    (up to its poll interval later, or after a NATS outage), while the ChargerOnline of the
    charger's next connection, perhaps on another node, is published at once: applied in
    stream order the projection ended offline for a connected charger (and an offline order
    opened later). So the projection keeps when the charger last connected, and an offline
    interval that began before that is news of an outage already over (and an online event
    older than the offline interval the projection holds is older news)."""
    asset = faults.asset_of(conn, event.charger_id)
    if asset.get("online") and _later(asset.get("last_connected_at"), event.since):
        return
    _touch_asset(conn, ctx, event.charger_id, online=False, offline_since=event.since)


def _later(newer: Any, than: Any) -> bool:
    """``newer`` is a time after ``than`` (False if either is unknown)."""
    return newer is not None and than is not None and bool(newer > than)


def on_security(conn: Connection, ctx: OpContext, event: SecurityEventReported) -> None:
    asset = faults.asset_of(conn, event.charger_id)
    cls = classify(
        conn,
        FaultSignature(
            source="security_event",
            error_code=event.event_type,
            ocpp_version=asset.get("ocpp_version"),
            charger_vendor=asset.get("vendor"),
            charger_model=asset.get("model"),
            connector="0",
        ),
    )
    if not cls.open_order or not _rate_allows(conn, ctx, event.charger_id, "0", cls):
        return
    faults.report(
        conn,
        ctx,
        faults.FaultInput(
            charger_id=event.charger_id,
            connector="0",
            site_id=asset.get("site_id"),
            classification=cls,
            source="fault",
            error_code=event.event_type,
            title=f"{event.charger_id}: security event {event.event_type}",
            event_id=event.event_id,
            received_at=event.received_at,
            detail={"tech_info": event.tech_info} if event.tech_info else {},
        ),
    )


ROUTES: dict[type[Event], Handler] = {
    FaultRaised: on_fault_raised,
    FaultCleared: on_fault_cleared,
    ConnectorStatusChanged: on_status,
    ChargerBooted: on_booted,
    ChargerOnline: on_online,
    ChargerConnected: on_online,
    ChargerOffline: on_offline,
    SecurityEventReported: on_security,
}
EVENT_TYPES = tuple(str(cls.model_fields["type"].default) for cls in ROUTES)


def _is_flip(event: ConnectorStatusChanged) -> bool:
    previous, status = event.previous_status, event.status
    return (
        previous is not None
        and previous != status
        and NormalizedStatus.faulted
        in (
            previous,
            status,
        )
    )


PREFILTERED = (ConnectorStatusChanged, ChargerOnline, ChargerConnected)


@dataclass
class Known:
    """What the pre-check needs, read once for a batch of events (or live for one event).

    ``live``: chargers whose events must be checked against the database itself, because
    an event of this batch may already have changed them."""

    open_ports: set[tuple[str, str]] = field(default_factory=set)
    assets: dict[str, dict[str, Any]] = field(default_factory=dict)
    live: set[str] = field(default_factory=set)

    @classmethod
    def read(cls, conn: Connection, events: Sequence[Event]) -> Known:
        """Only what :func:`relevant` will look at: open orders of the chargers whose
        healthy status changes it checks, assets of the chargers that came online."""
        live = {e.charger_id for e in events if not isinstance(e, PREFILTERED)}
        known = cls(live=live)
        port_ids = {
            e.charger_id
            for e in events
            if isinstance(e, ConnectorStatusChanged) and _reports_healthy(e) and not _is_flip(e)
        } - live
        asset_ids = {
            e.charger_id for e in events if isinstance(e, ChargerOnline | ChargerConnected)
        } - live
        if port_ids:
            rows = conn.execute(
                select(WORK_ORDERS.c.charger_id, WORK_ORDERS.c.connector).where(
                    WORK_ORDERS.c.charger_id.in_(port_ids),
                    WORK_ORDERS.c.source == "fault",
                    WORK_ORDERS.c.state.in_(ACTIVE),
                )
            ).all()
            known.open_ports = {(str(c), str(k)) for c, k in rows}
        if asset_ids:
            assets = conn.execute(
                select(ASSETS).where(ASSETS.c.charger_id.in_(asset_ids))
            ).mappings()
            known.assets = {str(r["charger_id"]): dict(r) for r in assets}
        return known


def relevant(conn: Connection, event: Event, known: Known | None = None) -> bool:
    """Could ``event`` change anything? A read-only check before any write.

    Decision: most events of a healthy fleet (status changes of working connectors,
    reconnects of chargers already known online) change nothing here; skipping them
    keeps this consumer from spending a transaction (or, in a batch, queries) on each
    status frame. Skipping is safe only because such an event has no effect at all."""
    if known is None or event.charger_id in known.live:
        known = Known.read(conn, [event])
    if isinstance(event, ConnectorStatusChanged):
        if _is_flip(event):
            return True
        if not _reports_healthy(event):
            return False
        return (event.charger_id, event.connector.key) in known.open_ports
    if isinstance(event, ChargerOnline | ChargerConnected):
        asset = known.assets.get(event.charger_id)
        return not (
            asset
            and asset["online"]
            and asset["offline_since"] is None
            and asset["ocpp_version"] == event.ocpp_version
            # a new connection moves last_connected_at (see on_offline)
            and asset["last_connected_at"] is not None
            and not _later(event.received_at, asset["last_connected_at"])
        )
    return True


#: default CPU time (of the thread running it) one intake transaction may spend applying
#: events before it commits them (``CHARGEOPS_INTAKE_TRANSACTION_BUDGET_MS``)
TRANSACTION_BUDGET_S = 0.005


def _apply_some(budget: float, events: Sequence[Event], conn: Connection, ctx: OpContext) -> int:
    """Apply events in order until ``budget`` seconds of CPU are spent (at least one event);
    return how many."""
    started = time.thread_time()
    known = Known.read(conn, events)
    for done, event in enumerate(events, 1):
        handler = ROUTES.get(type(event))
        if handler is None or not relevant(conn, event, known):
            continue
        if _first_delivery(conn, event, ctx.now):
            handler(conn, ctx, event)
            known.live.add(event.charger_id)  # later events see its effects live
        if time.thread_time() - started >= budget:
            return done
    return len(events)


class WorkOrderIntake:
    def __init__(
        self,
        committer: GroupCommitter,
        bus: Bus,
        clock: Clock,
        thresholds: Thresholds,
        db: Database,
        *,
        transaction_budget: float = TRANSACTION_BUDGET_S,
    ) -> None:
        self.committer = committer
        self.transaction_budget = transaction_budget
        self.bus = bus
        self.clock = clock
        self.thresholds = thresholds
        self.db = db

    async def handle_batch(self, events: Sequence[Event]) -> None:
        """Apply a page of events (the embedded bus's fast path; if it raises, the bus
        delivers them again one at a time through :meth:`handle`, and the inbox skips those
        already applied).

        Decision: a transaction applies events until it has spent ``transaction_budget``
        seconds of CPU (``CHARGEOPS_INTAKE_TRANSACTION_BUDGET_MS``, 5 ms), commits, and the
        next one goes on with the rest. On SQLite this transaction runs on the one writer
        the OCPP edge commits with, so while it runs chargers wait for their answers: a page
        of 50 faults (about 2 ms each in a flapping storm) held them ~100 ms, and at 1,000
        faults/s the chargers' p99 was ~165-240 ms; with the budget it is ~30-40 ms
        (tests/bench/README.md). The price is more commits, each awaited before the next
        part: in the benchmark's flapping storm (1,000 chargers, 200 faults/s, one core)
        orders now lag up to a few seconds where they kept up before, and a saturated
        intake drains 20-40% slower. CPU time, not wall time: the writer thread also waits
        for the GIL, and a wall-time budget cut transactions shorter still. A page of events
        that change nothing still goes in one transaction. The transactions are ``background``
        (see :meth:`~services.committer.GroupCommitter.commit`): chargers' rows queued with
        one commit before it instead of waiting for its operations."""
        remaining = list(events)
        while remaining:
            ctx = OpContext(
                now=self.clock.now(), actor="system", bus=self.bus, thresholds=self.thresholds
            )
            apply = functools.partial(_apply_some, self.transaction_budget, remaining)
            done = await store.run(self.committer, ctx, apply, background=True)
            remaining = remaining[done:]

    async def handle(self, event: Event) -> None:
        handler = ROUTES.get(type(event))
        if handler is None:
            return
        if isinstance(event, ConnectorStatusChanged | ChargerOnline | ChargerConnected):
            async with self.db.engine.connect() as conn:
                if not await conn.run_sync(lambda c: relevant(c, event)):
                    return
        ctx = OpContext(
            now=self.clock.now(), actor="system", bus=self.bus, thresholds=self.thresholds
        )

        def apply(conn: Connection, ctx: OpContext) -> None:
            if _first_delivery(conn, event, ctx.now):
                handler(conn, ctx, event)

        await store.run(self.committer, ctx, apply, background=True)
