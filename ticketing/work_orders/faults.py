"""A classified fault becomes exactly one open work order.

De-duplication: at most one open order per (charger, connector, category) — enforced by
the unique ``dedupe_key`` — and a repeat appends an occurrence. A charger-level order
(connector 0, an EVSE as a whole, offline) absorbs its connectors' orders and their
later faults; a site-level order absorbs its chargers'. Absorption is between orders
the engine opened from charger behaviour (:data:`ENGINE_SOURCES`): an order opened by hand
(a manual site or charger order, a complaint) neither absorbs faults nor is absorbed. A
bare Faulted status (:data:`GENERIC`) on a port is an occurrence of the port's order for a
reported problem, which absorbs the port's bare-Faulted order if that came first. A
repeat on a resolved or verified order reopens it.

A pattern (:data:`PATTERN_KINDS`: reboot loop, flapping, site down) is not cured by one
healthy report — the next Available is exactly what a flapping connector sends — so
:func:`healthy` leaves those orders to people (or, for a site, every charger back online).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, or_, select
from sqlalchemy.engine import Connection

from services.db import table_of
from ticketing.remediation import start as remediation
from ticketing.rules.model import Classification
from ticketing.tables import ChargerAsset, FaultReport
from ticketing.work_orders import store, transitions
from ticketing.work_orders.context import OpContext
from ticketing.work_orders.policy import policy_for_order, policy_id_for
from ticketing.work_orders.states import ACTIVE
from ticketing.work_orders.timeline import ENTRIES, WORK_ORDERS

ASSETS = table_of(ChargerAsset)
FAULT_REPORTS = table_of(FaultReport)
#: Work-order sources the engine opens (the rest are people's: manual, complaint, ...).
ENGINE_SOURCES = ("fault", "offline")
#: Derived kinds (``error_code``) that a single healthy report does not resolve.
PATTERN_KINDS = ("RebootLoop", "Flapping", "SiteDown")
#: The ``error_code`` of a bare Faulted status (2.0.1 StatusNotification Faulted, 1.6
#: Faulted with NoError): the port is down, the report says nothing of why.
GENERIC = "Faulted"


@dataclass(frozen=True)
class FaultInput:
    """One fault occurrence, whatever reported it."""

    charger_id: str | None
    connector: str | None  # "0" charger level, "1", "1/2"; None for a site
    site_id: str | None
    classification: Classification
    source: str  # work order source: fault | offline
    error_code: str
    title: str
    event_id: str | None
    received_at: datetime | None
    detail: Mapping[str, Any]


#: Statements built once, their values given as execute parameters (see store.py).
_ASSET = select(ASSETS).where(ASSETS.c.charger_id == bindparam("b_charger"))
_SITE = select(ASSETS.c.site_id).where(ASSETS.c.charger_id == bindparam("b_charger"))
_ENGINE_ACTIVE = (WORK_ORDERS.c.state.in_(ACTIVE), WORK_ORDERS.c.source.in_(ENGINE_SOURCES))
_SITE_ORDER = (
    select(WORK_ORDERS)
    .where(
        WORK_ORDERS.c.site_id == bindparam("b_site"),
        WORK_ORDERS.c.charger_id.is_(None),
        *_ENGINE_ACTIVE,
    )
    .limit(1)
    .with_for_update()
)
_OTHER_CONNECTORS = (
    select(WORK_ORDERS)
    .where(
        WORK_ORDERS.c.charger_id == bindparam("b_charger"),
        WORK_ORDERS.c.connector != bindparam("b_connector"),
        *_ENGINE_ACTIVE,
    )
    .order_by(WORK_ORDERS.c.id)
    .with_for_update()
)


def _healthy_query(connector: bool, categories: bool) -> Any:
    query = select(WORK_ORDERS).where(
        WORK_ORDERS.c.charger_id == bindparam("b_charger"),
        WORK_ORDERS.c.state.in_(ACTIVE),
        WORK_ORDERS.c.source == bindparam("b_source"),
        or_(WORK_ORDERS.c.error_code.is_(None), WORK_ORDERS.c.error_code.notin_(PATTERN_KINDS)),
    )
    if connector:
        query = query.where(WORK_ORDERS.c.connector == bindparam("b_connector"))
    if categories:
        query = query.where(WORK_ORDERS.c.category.in_(bindparam("b_categories", expanding=True)))
    return query.order_by(WORK_ORDERS.c.id).with_for_update()


#: by (connector given, categories given)
_HEALTHY = {(c, k): _healthy_query(c, k) for c in (False, True) for k in (False, True)}


def dedupe_key(fault: FaultInput) -> str:
    return _key(fault.charger_id, fault.connector, fault.site_id, fault.classification.category)


def _key(charger_id: str | None, connector: str | None, site_id: str | None, category: str) -> str:
    """The de-duplication key of an open order: one per (charger, connector, category),
    or per (site, category) for a site-level one."""
    if charger_id is None:
        return f"site:{site_id}|{category}"
    return f"{charger_id}|{connector}|{category}"


def asset_of(conn: Connection, charger_id: str) -> dict[str, Any]:
    """The charger's projection row (site, vendor, model, OCPP version, online); {} if unknown."""
    row = conn.execute(_ASSET, {"b_charger": charger_id}).mappings().first()
    return dict(row) if row is not None else {}


def site_of(conn: Connection, charger_id: str) -> str | None:
    site = conn.execute(_SITE, {"b_charger": charger_id}).scalar()
    return str(site) if site is not None else None


def is_charger_level(connector: str | None) -> bool:
    """The whole charger: 1.6 connector 0, or 2.0.1 EVSE 0 (the station). An EVSE (``"1"``)
    covers its connectors (see :func:`_covers`) but is not the whole charger."""
    return connector == "0"


def _covers(parent: str, child: str) -> bool:
    """Does an order on connector ``parent`` cover connector ``child``?"""
    if parent == "0":
        return True
    return "/" in child and "/" not in parent and child.split("/", 1)[0] == parent


def _is_generic(fault: FaultInput) -> bool:
    """A bare Faulted status, without a code (see :data:`GENERIC`)."""
    return fault.error_code == GENERIC and not fault.detail.get("code")


def _port_orders(
    conn: Connection, charger_id: str, connector: str, *, generic: bool
) -> list[store.Order]:
    """Active orders the engine opened from faults on ``connector`` of the charger (or on
    its EVSE, or on one of its connectors): bare-Faulted ones, or the others (patterns
    excluded), most severe first."""
    query = (
        select(WORK_ORDERS)
        .where(
            WORK_ORDERS.c.charger_id == bindparam("b_charger"),
            WORK_ORDERS.c.state.in_(ACTIVE),
            WORK_ORDERS.c.source == "fault",
            WORK_ORDERS.c.connector.isnot(None),
            WORK_ORDERS.c.connector != "0",
            (WORK_ORDERS.c.error_code == GENERIC)
            if generic
            else WORK_ORDERS.c.error_code.notin_((GENERIC, *PATTERN_KINDS)),
        )
        .order_by(WORK_ORDERS.c.severity, WORK_ORDERS.c.id)
        .with_for_update()
    )
    rows = conn.execute(query, {"b_charger": charger_id}).mappings().all()
    return [
        dict(r)
        for r in rows
        if r["connector"] == connector
        or _covers(r["connector"], connector)
        or _covers(connector, r["connector"])
    ]


def _absorbing_order(conn: Connection, fault: FaultInput) -> store.Order | None:
    """An open site-level or charger/EVSE-level order this fault belongs to."""
    if fault.site_id is not None and fault.charger_id is not None:
        site_order = conn.execute(_SITE_ORDER, {"b_site": fault.site_id}).mappings().first()
        if site_order is not None:
            return dict(site_order)
    if fault.charger_id is None or fault.connector is None:
        return None
    rows = (
        conn.execute(
            _OTHER_CONNECTORS, {"b_charger": fault.charger_id, "b_connector": fault.connector}
        )
        .mappings()
        .all()
    )
    for row in rows:
        if row["connector"] is not None and _covers(row["connector"], fault.connector):
            return dict(row)
    return None


def occurrence(
    conn: Connection, ctx: OpContext, order: store.Order, fault: FaultInput, *, absorbed: bool
) -> store.Order:
    changes: dict[str, Any] = {"occurrences": int(order["occurrences"]) + 1, "last_seen": ctx.now}
    if absorbed:
        cls = fault.classification
        changes |= _at_least(conn, order, cls.priority, cls.severity)
    return store.change(
        conn,
        ctx,
        order,
        kind="occurrence",
        changes=changes,
        note=(
            f"{fault.error_code} on {fault.charger_id or fault.site_id}"
            f"{'/' + fault.connector if fault.connector else ''}"
            + (" (absorbed)" if absorbed else "")
        ),
        event_id=fault.event_id,
        data={"error_code": fault.error_code, **fault.detail},
    )


def report(conn: Connection, ctx: OpContext, fault: FaultInput) -> store.Order:
    """Open, append to, or reopen the order this fault belongs to."""
    absorbing = _absorbing_order(conn, fault)
    if absorbing is not None:
        return occurrence(conn, ctx, absorbing, fault, absorbed=True)
    if fault.charger_id is not None and fault.connector not in (None, "0") and _is_generic(fault):
        # One fault, two reports: a 2.0.1 station reports a problem (NotifyEvent) and its
        # connector Faulted. The bare Faulted belongs to the order of the problem on that
        # port; on its own it opened a second order whose remote fix (availability cycle
        # back to Operative, reset) undid the first one's S1 lockout.
        specific = _port_orders(conn, fault.charger_id, fault.connector, generic=False)
        if specific:
            return occurrence(conn, ctx, specific[0], fault, absorbed=True)
    key = dedupe_key(fault)
    existing = store.open_by_key(conn, key)
    if existing is not None:
        if existing["state"] in ("resolved", "verified"):
            if transitions.within_reopen_window(conn, ctx, existing):
                return transitions.reopen(
                    conn,
                    ctx,
                    existing,
                    note=f"{fault.error_code} recurred",
                    event_id=fault.event_id,
                    occurrence=True,
                )
            # The fix held for longer than the policy's reopen window: the recurrence is
            # new work, a follow-up of the order (which keeps its state, e.g. awaiting a
            # technician's sign-off) rather than a reopening of it.
            previous = transitions.supersede(conn, ctx, existing, fault.error_code)
            return open_order(conn, ctx, fault, key, parent_id=previous["id"])
        return occurrence(conn, ctx, existing, fault, absorbed=False)
    return open_order(conn, ctx, fault, key)


def open_order(
    conn: Connection,
    ctx: OpContext,
    fault: FaultInput,
    key: str,
    *,
    parent_id: int | None = None,
) -> store.Order:
    cls = fault.classification
    order = store.create(
        conn,
        ctx,
        {
            "source": fault.source,
            "title": fault.title[:300],
            "charger_id": fault.charger_id,
            "connector": fault.connector,
            "site_id": fault.site_id,
            "category": cls.category,
            "severity": cls.severity,
            "impact": cls.impact,
            "urgency": cls.urgency,
            "priority": cls.priority,
            "rule_name": cls.rule_name,
            "playbook": cls.playbook,
            "skill": cls.skill,
            "error_code": fault.error_code,
            "dedupe_key": key,
            "parent_id": parent_id,
            "fault_received_at": fault.received_at,
            "sla_policy_id": policy_id_for(
                conn, priority=cls.priority, team_id=None, assignee_id=None, name=cls.sla_policy
            ),
        },
        note=f"{cls.rule_name}: {cls.severity} {cls.category}"
        + (
            f"; {fault.error_code} recurred after #{parent_id}'s reopen window" if parent_id else ""
        ),
        event_id=fault.event_id,
    )
    order = _absorb_children(conn, ctx, order)
    if order["charger_id"] is not None and order["connector"] not in (None, "0"):
        if (
            fault.source == "fault"
            and not _is_generic(fault)
            and fault.error_code not in PATTERN_KINDS
        ):
            # the bare-Faulted order of this port was this fault, reported before its cause
            for generic in _port_orders(
                conn, order["charger_id"], order["connector"], generic=True
            ):
                order = _absorb(conn, ctx, order, generic)
    return remediation.begin(conn, ctx, order)


def _absorb_children(conn: Connection, ctx: OpContext, parent: store.Order) -> store.Order:
    """Cancel the active orders a new charger- or site-level order now covers."""
    if parent["charger_id"] is None:
        where = [WORK_ORDERS.c.site_id == parent["site_id"], WORK_ORDERS.c.charger_id.isnot(None)]
    elif parent["connector"] is not None:
        where = [
            WORK_ORDERS.c.charger_id == parent["charger_id"],
            WORK_ORDERS.c.connector != parent["connector"],
        ]
    else:
        return parent
    rows = (
        conn.execute(
            select(WORK_ORDERS)
            .where(
                *where,
                WORK_ORDERS.c.state.in_(ACTIVE),
                WORK_ORDERS.c.source.in_(ENGINE_SOURCES),
                WORK_ORDERS.c.id != parent["id"],
            )
            .order_by(WORK_ORDERS.c.id)
            .with_for_update()
        )
        .mappings()
        .all()
    )
    for row in rows:
        child = dict(row)
        if parent["charger_id"] is not None and not _covers(
            parent["connector"], child["connector"] or ""
        ):
            continue
        parent = _absorb(conn, ctx, parent, child)
    return parent


def _absorb(
    conn: Connection, ctx: OpContext, parent: store.Order, child: store.Order
) -> store.Order:
    """Cancel ``child`` as absorbed by ``parent``, which takes its urgency."""
    store.change(
        conn,
        ctx,
        child,
        kind="absorbed",
        to_state="cancelled",
        changes={
            "absorbed_by": parent["id"],
            "dedupe_key": None,
            "resolution": "absorbed",
            "closed_at": ctx.now,
        },
        note=f"absorbed by #{parent['id']} ({parent['title']})",
        notify="cancelled",
    )
    return store.change(
        conn,
        ctx,
        parent,
        kind="absorbed_order",
        changes=_at_least(conn, parent, child["priority"], child["severity"]),
        note=f"absorbed #{child['id']} ({child['title']})",
        data={"order_id": child["id"]},
    )


def _at_least(
    conn: Connection, parent: store.Order, priority: str, severity: str
) -> dict[str, Any]:
    """An absorbing order is at least as urgent and severe as what it absorbs (an S1
    ground fault absorbed into an offline order keeps the order P1/S1)."""
    changes: dict[str, Any] = {}
    if severity < parent["severity"]:  # "S1" < "S2"
        changes["severity"] = severity
    if priority < parent["priority"]:  # "P1" < "P2"
        changes["priority"] = priority
        changes["sla_policy_id"] = policy_for_order(conn, parent, priority=priority)
    return changes


def healthy(
    conn: Connection,
    ctx: OpContext,
    *,
    charger_id: str,
    connector: str | None,
    categories: frozenset[str] | None,
    source: str,
    event_id: str | None,
    why: str,
) -> list[store.Order]:
    """The charger reports healthy: resolve its matching active orders.

    Self-recovered when nobody was on site; ``remote_fix`` orders resolve remotely once a
    remote step reached the charger.
    Pattern orders (:data:`PATTERN_KINDS`) stay open."""
    params: dict[str, Any] = {"b_charger": charger_id, "b_source": source}
    if connector is not None:
        params["b_connector"] = connector
    if categories is not None:
        if not categories:
            return []  # IN () matches nothing
        params["b_categories"] = sorted(categories)
    query = _HEALTHY[connector is not None, categories is not None]
    resolved = []
    for row in conn.execute(query, params).mappings().all():
        order = dict(row)
        if order["state"] == "remote_fix" and remediation.reached_the_charger(conn, order["id"]):
            resolution = "resolved_remotely"
        elif order["on_site_at"] is not None:
            resolution = "fixed_on_site"
        else:
            resolution = "self_recovered"
        resolved.append(
            transitions.resolve(
                conn,
                ctx.as_actor("system:charger"),
                order,
                resolution,
                note=why,
                event_id=event_id,
            )
        )
        reinstate_absorbed(conn, ctx, order)
    return resolved


_ABSORBED_IDS = select(ENTRIES.c.changes).where(
    ENTRIES.c.order_id == bindparam("b_order"), ENTRIES.c.kind == "absorbed_order"
)
_LAST_REPORT = (
    select(FAULT_REPORTS.c.kind)
    .where(
        FAULT_REPORTS.c.charger_id == bindparam("b_charger"),
        FAULT_REPORTS.c.connector == bindparam("b_connector"),
    )
    .order_by(FAULT_REPORTS.c.received_at.desc(), FAULT_REPORTS.c.handled_at.desc())
    .limit(1)
)
#: what a reinstated order takes from the order it reinstates
_CARRIED = (
    "source", "type", "charger_id", "connector", "site_id", "category", "severity", "impact",
    "urgency", "priority", "rule_name", "playbook", "skill", "error_code", "team_id",
    "fault_received_at",
)  # fmt: skip


def reinstate_absorbed(conn: Connection, ctx: OpContext, parent: store.Order) -> list[store.Order]:
    """``parent`` (a charger- or site-level order) resolved by the charger's (or site's)
    recovery: the port faults it absorbed whose last report is still a raise come back as
    orders of their own (follow-ups of the absorbed ones).

    Decision: absorbed orders are cancelled, and an offline order is resolved by the
    reconnection alone; a connector still reporting its fault (a 1.6 charger does not
    repeat its StatusNotification after a reconnect) was left without any order, an S1
    ground fault included. Offline orders absorbed in turn are looked through (their
    charger is back); the fault reports (raised/cleared) tell what persists."""
    reinstated: list[store.Order] = []
    for child in _absorbed(conn, parent):
        if child["source"] == "offline" or child["charger_id"] is None:
            reinstated += reinstate_absorbed(conn, ctx, child)
            continue
        last = conn.execute(
            _LAST_REPORT, {"b_charger": child["charger_id"], "b_connector": child["connector"]}
        ).scalar()
        key = _key(child["charger_id"], child["connector"], child["site_id"], child["category"])
        if last != "raised" or store.open_by_key(conn, key) is not None:
            continue
        order = store.create(
            conn,
            ctx.as_actor("system:charger"),
            {
                **{k: child[k] for k in _CARRIED},
                "title": child["title"],
                "dedupe_key": key,
                "parent_id": child["id"],
                "sla_policy_id": policy_for_order(conn, child, assignee_id=None),
            },
            note=f"#{parent['id']} resolved, but the fault of absorbed #{child['id']} "
            "was not cleared",
        )
        reinstated.append(remediation.begin(conn, ctx, order))
    return reinstated


_STATUS_REPORTS = (
    select(FAULT_REPORTS.c.connector, FAULT_REPORTS.c.kind)
    .where(
        FAULT_REPORTS.c.charger_id == bindparam("b_charger"),
        FAULT_REPORTS.c.source == "status_notification",
        or_(
            FAULT_REPORTS.c.connector == bindparam("b_connector"),
            FAULT_REPORTS.c.connector.like(bindparam("b_below")),
        ),
    )
    .order_by(FAULT_REPORTS.c.received_at.desc(), FAULT_REPORTS.c.handled_at.desc())
    .limit(200)
)


def port_still_faulted(conn: Connection, charger_id: str, connector: str) -> bool:
    """Does the port (or a connector of the EVSE) still report a fault in its status (its
    last status fault report a raise)? For a problem cleared by a NotifyEvent, which
    carries no status: the bare Faulted of the port was merged into the problem's order."""
    rows = conn.execute(
        _STATUS_REPORTS,
        {"b_charger": charger_id, "b_connector": connector, "b_below": f"{connector}/%"},
    ).all()
    seen: set[str] = set()
    for key, kind in rows:
        if key not in seen:
            seen.add(key)
            if kind == "raised":
                return True
    return False


_LAST_STATUS_REPORT = (
    select(FAULT_REPORTS.c.kind, FAULT_REPORTS.c.error_code)
    .where(
        FAULT_REPORTS.c.charger_id == bindparam("b_charger"),
        FAULT_REPORTS.c.connector == bindparam("b_connector"),
        FAULT_REPORTS.c.source == "status_notification",
    )
    .order_by(FAULT_REPORTS.c.received_at.desc(), FAULT_REPORTS.c.handled_at.desc())
    .limit(1)
)


def still_reported(conn: Connection, order: store.Order) -> bool:
    """Does the charger still report the fault of ``order`` in its port's status (its
    last status report raised that fault, or a bare Faulted, and nothing cleared it)?
    A status fault always ends with a report clearing it, so this is what verifying a
    resolved order checks."""
    if order["source"] != "fault" or order["charger_id"] is None or order["connector"] is None:
        return False
    if order["dedupe_key"] is None:
        # superseded: the fault recurred after its reopen window and is a follow-up's work
        return False
    row = conn.execute(
        _LAST_STATUS_REPORT, {"b_charger": order["charger_id"], "b_connector": order["connector"]}
    ).first()
    return (
        row is not None
        and row.kind == "raised"
        and row.error_code
        in (
            order["error_code"],
            GENERIC,
        )
    )


def _absorbed(conn: Connection, parent: store.Order) -> list[store.Order]:
    """The orders ``parent`` absorbed (cancelled into it), oldest first."""
    ids = [
        int(changes["data"]["order_id"])
        for changes in conn.execute(_ABSORBED_IDS, {"b_order": parent["id"]}).scalars()
        if isinstance(changes, dict) and "order_id" in changes.get("data", {})
    ]
    children = [store.load(conn, i) for i in sorted(set(ids))]
    return [c for c in children if c is not None and c["absorbed_by"] == parent["id"]]
