"""Faults no charger reports but its behaviour shows: offline too long, reboot loops,
flapping connectors, and a whole site down at once.

Boots, status flips and rate-limited faults are kept as ``ticketing_charger_signals``
rows and counted in a sliding window; the windows and counts come from settings
(:class:`~ticketing.work_orders.context.Thresholds`). Derived faults are classified by
the same rules as reported ones (source ``derived``).

A site order is opened once: while it is open, a charger of the site going down is an
(absorbed) occurrence of it, and the offline scan skips the site's chargers. It resolves
when every commissioned charger of the site is back online.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import and_, bindparam, delete, func, or_, select
from sqlalchemy.engine import Connection

from services.db import table_of
from ticketing.rules.model import FaultSignature
from ticketing.rules.store import classify
from ticketing.tables import ChargerAsset, ChargerSignal
from ticketing.work_orders import faults, store, transitions
from ticketing.work_orders.context import OpContext
from ticketing.work_orders.states import ACTIVE
from ticketing.work_orders.timeline import WORK_ORDERS

ASSETS = table_of(ChargerAsset)
SIGNALS = table_of(ChargerSignal)
#: Signals older than this are pruned (the longest window any threshold may use).
SIGNAL_RETENTION = timedelta(days=2)
#: A charger placed at a site that has never been online (no ``offline_since`` either) is
#: not yet commissioned: it is neither down nor counted among the site's chargers.
COMMISSIONED = or_(ASSETS.c.online.is_(True), ASSETS.c.offline_since.isnot(None))


#: Statements built once, their values given as execute parameters (see store.py).
_INSERT_SIGNAL = SIGNALS.insert()
_COUNT_SIGNALS = (
    select(func.count())
    .select_from(SIGNALS)
    .where(
        SIGNALS.c.charger_id == bindparam("b_charger"),
        SIGNALS.c.kind == bindparam("b_kind"),
        SIGNALS.c.at > bindparam("b_since"),
    )
)
_COUNT_CONNECTOR_SIGNALS = _COUNT_SIGNALS.where(SIGNALS.c.connector == bindparam("b_connector"))


def signal(
    conn: Connection,
    ctx: OpContext,
    charger_id: str,
    connector: str,
    kind: str,
    window_s: float,
) -> int:
    """Record one signal; returns how many of its kind fell in the last ``window_s``."""
    conn.execute(
        _INSERT_SIGNAL,
        {"charger_id": charger_id, "connector": connector, "kind": kind, "at": ctx.now},
    )
    return signals_in_window(conn, ctx, charger_id, kind, window_s, connector=connector)


def signals_in_window(
    conn: Connection,
    ctx: OpContext,
    charger_id: str,
    kind: str,
    window_s: float,
    *,
    connector: str | None = None,
) -> int:
    """How many signals of ``kind`` the charger (one connector, if given) recorded in the
    last ``window_s``."""
    params = {
        "b_charger": charger_id,
        "b_kind": kind,
        "b_since": ctx.now - timedelta(seconds=window_s),
    }
    if connector is None:
        return int(conn.execute(_COUNT_SIGNALS, params).scalar_one())
    params["b_connector"] = connector
    return int(conn.execute(_COUNT_CONNECTOR_SIGNALS, params).scalar_one())


def prune_signals(conn: Connection, ctx: OpContext) -> int:
    result = conn.execute(delete(SIGNALS).where(SIGNALS.c.at < ctx.now - SIGNAL_RETENTION))
    return int(result.rowcount or 0)


def derived_fault(
    conn: Connection,
    ctx: OpContext,
    *,
    kind: str,
    charger_id: str | None,
    connector: str | None,
    site_id: str | None,
    title: str,
    source: str = "fault",
    event_id: str | None = None,
    detail: dict[str, object] | None = None,
) -> store.Order | None:
    asset = faults.asset_of(conn, charger_id) if charger_id else {}
    signature = FaultSignature(
        source="derived",
        error_code=kind,
        ocpp_version=asset.get("ocpp_version"),
        charger_vendor=asset.get("vendor"),
        charger_model=asset.get("model"),
        connector=connector,
    )
    classification = classify(conn, signature)
    if not classification.open_order:
        return None
    order = faults.report(
        conn,
        ctx.as_actor("system:derived"),
        faults.FaultInput(
            charger_id=charger_id,
            connector=connector,
            site_id=site_id,
            classification=classification,
            source=source,
            error_code=kind,
            title=title,
            event_id=event_id,
            received_at=ctx.now,
            detail=detail or {},
        ),
    )
    return order


def reboot(conn: Connection, ctx: OpContext, charger_id: str, event_id: str) -> None:
    t = ctx.thresholds
    boots = signal(conn, ctx, charger_id, "0", "boot", t.reboot_loop_window_s)
    if boots >= t.reboot_loop_boots:
        derived_fault(
            conn,
            ctx,
            kind="RebootLoop",
            charger_id=charger_id,
            connector="0",
            site_id=faults.site_of(conn, charger_id),
            title=f"{charger_id}: {boots} boots within {t.reboot_loop_window_s:.0f} s",
            event_id=event_id,
            detail={"boots": boots},
        )


def flip(conn: Connection, ctx: OpContext, charger_id: str, connector: str, event_id: str) -> None:
    t = ctx.thresholds
    flips = signal(conn, ctx, charger_id, connector, "flip", t.flapping_window_s)
    if flips > t.flapping_changes:
        derived_fault(
            conn,
            ctx,
            kind="Flapping",
            charger_id=charger_id,
            connector=connector,
            site_id=faults.site_of(conn, charger_id),
            title=f"{charger_id}/{connector}: Faulted/Available {flips} times "
            f"within {t.flapping_window_s:.0f} s",
            event_id=event_id,
            detail={"changes": flips},
        )


def offline_candidates(conn: Connection, ctx: OpContext, limit: int = 200) -> list[str]:
    """Chargers offline longer than the threshold without an open communication order,
    and not covered by an open site-level order (their outage is an occurrence of it)."""
    cutoff = ctx.now - timedelta(seconds=ctx.thresholds.offline_after_s)
    open_offline = (
        select(WORK_ORDERS.c.id)
        .where(
            WORK_ORDERS.c.charger_id == ASSETS.c.charger_id,
            WORK_ORDERS.c.source == "offline",
            WORK_ORDERS.c.state.in_(ACTIVE),
        )
        .exists()
    )
    open_site = (
        select(WORK_ORDERS.c.id)
        .where(
            WORK_ORDERS.c.site_id == ASSETS.c.site_id,
            WORK_ORDERS.c.charger_id.is_(None),
            WORK_ORDERS.c.source.in_(faults.ENGINE_SOURCES),
            WORK_ORDERS.c.state.in_(ACTIVE),
        )
        .exists()
    )
    rows = conn.execute(
        select(ASSETS.c.charger_id)
        .where(
            ASSETS.c.online.is_(False),
            ASSETS.c.offline_since.isnot(None),
            ASSETS.c.offline_since <= cutoff,
            ~open_offline,
            ~open_site,
        )
        .order_by(ASSETS.c.offline_since)
        .limit(limit)
    ).scalars()
    return [str(r) for r in rows]


def offline(conn: Connection, ctx: OpContext, charger_id: str) -> store.Order | None:
    row = faults.asset_of(conn, charger_id)
    if not row or row.get("online") or row.get("offline_since") is None:
        return None
    order = derived_fault(
        conn,
        ctx,
        kind="Offline",
        charger_id=charger_id,
        connector="0",
        site_id=row.get("site_id"),
        title=f"{charger_id} offline since {row['offline_since']}",
        source="offline",
        event_id=f"offline-{charger_id}-{row['offline_since']}"[:64],
    )
    site_check(conn, ctx, row.get("site_id"))
    return order


def _open_site_order(conn: Connection, site_id: str) -> store.Order | None:
    row = (
        conn.execute(
            select(WORK_ORDERS).where(
                WORK_ORDERS.c.site_id == site_id,
                WORK_ORDERS.c.charger_id.is_(None),
                WORK_ORDERS.c.source.in_(faults.ENGINE_SOURCES),
                WORK_ORDERS.c.state.in_(ACTIVE),
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


def site_check(conn: Connection, ctx: OpContext, site_id: str | None) -> store.Order | None:
    """Open a site-level order when most of a site's chargers are down at once.

    Nothing to do while the site's order is open: the charger's own fault was already
    appended to it as an (absorbed) occurrence."""
    if site_id is None:
        return None
    existing = _open_site_order(conn, site_id)
    if existing is not None:
        return existing
    t = ctx.thresholds
    chargers = [
        dict(r)
        for r in conn.execute(
            select(ASSETS.c.charger_id, ASSETS.c.online).where(
                ASSETS.c.site_id == site_id, COMMISSIONED
            )
        ).mappings()
    ]
    if len(chargers) < t.site_down_min_chargers:
        return None
    faulted = set(
        conn.execute(
            select(WORK_ORDERS.c.charger_id).where(
                and_(
                    WORK_ORDERS.c.site_id == site_id,
                    WORK_ORDERS.c.connector == "0",
                    WORK_ORDERS.c.source.in_(faults.ENGINE_SOURCES),
                    WORK_ORDERS.c.state.in_(ACTIVE),
                )
            )
        ).scalars()
    )
    down = [c["charger_id"] for c in chargers if not c["online"] or c["charger_id"] in faulted]
    if len(down) / len(chargers) < t.site_down_fraction:
        return None
    return derived_fault(
        conn,
        ctx,
        kind="SiteDown",
        charger_id=None,
        connector=None,
        site_id=site_id,
        title=f"site {site_id}: {len(down)} of {len(chargers)} chargers down",
        detail={"down": sorted(down), "chargers": len(chargers)},
    )


def site_recovered(conn: Connection, ctx: OpContext, site_id: str | None) -> None:
    """Resolve the site's order once every charger of the site is back online (orders
    opened by hand for the site are not the engine's to resolve)."""
    if site_id is None:
        return
    still_down = conn.execute(
        select(func.count())
        .select_from(ASSETS)
        .where(ASSETS.c.site_id == site_id, ASSETS.c.online.is_(False), COMMISSIONED)
    ).scalar_one()
    if still_down:
        return
    rows = (
        conn.execute(
            select(WORK_ORDERS)
            .where(
                WORK_ORDERS.c.site_id == site_id,
                WORK_ORDERS.c.charger_id.is_(None),
                WORK_ORDERS.c.source.in_(faults.ENGINE_SOURCES),
                WORK_ORDERS.c.state.in_(ACTIVE),
            )
            .with_for_update()
        )
        .mappings()
        .all()
    )
    for row in rows:
        order = dict(row)
        resolution = "fixed_on_site" if order["on_site_at"] is not None else "self_recovered"
        transitions.resolve(
            conn,
            ctx.as_actor("system:charger"),
            order,
            resolution,
            note="every charger of the site is back online",
        )
        faults.reinstate_absorbed(conn, ctx, order)
