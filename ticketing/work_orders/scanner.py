"""The timer loop: SLA warnings and breaches, verification windows, offline chargers,
the dispatcher queue, and the work-order gauges.

Decision: timers are rows, not sleeping tasks. Each scan selects what is due by the
clock (indexed ``warn_at`` / ``due_at`` / ``verify_after``), and marks it in the same
transaction as its effects, with a conditional update (``breached_at IS NULL``) — so a
warning or a breach fires exactly once, whether the process restarted between the
deadline and the scan or several replicas scan at once (rows are claimed with
``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite has a single writer).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.engine import Connection

from services.bus import Bus
from services.clock import Clock
from services.committer import GroupCommitter
from services.db import Database, table_of
from services.observability import metrics
from services.tasks import PeriodicTask
from ticketing.tables import SlaPolicy
from ticketing.work_orders import derived, dispatching, faults, sla_events, store, transitions
from ticketing.work_orders.context import OpContext, Thresholds
from ticketing.work_orders.states import TERMINAL
from ticketing.work_orders.timeline import WORK_ORDERS

log = logging.getLogger(__name__)
BATCH = 100
POLICIES = table_of(SlaPolicy)


@dataclass
class ScanResult:
    warnings: int = 0
    breaches: int = 0
    closed: int = 0
    offline_orders: int = 0
    assigned: int = 0
    #: where the next scan continues the dispatcher-queue sweep (0: from the start)
    queue_next: int = 0


def fire_sla(conn: Connection, ctx: OpContext) -> ScanResult:
    fired = sla_events.fire(conn, ctx, sla_events.due_clocks(conn, ctx))
    return ScanResult(warnings=fired.warnings, breaches=fired.breaches)


def close_verified(conn: Connection, ctx: OpContext) -> int:
    # Orders whose policy needs a sign-off (resolved -> verified by hand) are left out in
    # the query, not skipped after it: a batch full of them would starve the others.
    signoff = select(POLICIES.c.id).where(POLICIES.c.require_signoff.is_(True))
    rows = conn.execute(
        select(WORK_ORDERS)
        .where(
            WORK_ORDERS.c.state == "resolved",
            WORK_ORDERS.c.verify_after <= ctx.now,
            or_(WORK_ORDERS.c.sla_policy_id.is_(None), WORK_ORDERS.c.sla_policy_id.not_in(signoff)),
        )
        .order_by(WORK_ORDERS.c.verify_after)
        .limit(BATCH)
        .with_for_update(skip_locked=True)
    ).mappings()
    closed = 0
    actor = ctx.as_actor("system:verification")
    for row in list(rows):
        order = dict(row)
        if faults.still_reported(conn, order):
            # resolved (by a person) while the charger never cleared the fault: not verified
            transitions.reopen(
                conn,
                actor,
                order,
                note=f"verification failed: {order['charger_id']}/{order['connector']} "
                f"still reports {order['error_code']}",
            )
            continue
        transitions.verify_and_close(conn, actor, order)
        closed += 1
    return closed


def sweep_queue(conn: Connection, ctx: OpContext, after_id: int = 0) -> tuple[int, int]:
    """Try to assign up to BATCH queued orders with ids above ``after_id``.

    Returns (assigned, last id looked at; 0 when the end of the queue was reached): the
    scanner walks the whole queue over successive scans, so orders nobody can take do not
    starve the ones behind them."""
    rows = list(
        conn.execute(
            select(WORK_ORDERS)
            .where(dispatching.IN_QUEUE, WORK_ORDERS.c.id > after_id)
            .order_by(WORK_ORDERS.c.id)
            .limit(BATCH)
            .with_for_update(skip_locked=True)
        ).mappings()
    )
    assigned = 0
    for row in rows:
        order = dispatching.auto_assign(conn, ctx, dict(row))
        assigned += order["assignee_id"] is not None
    return assigned, (int(rows[-1]["id"]) if len(rows) == BATCH else 0)


def scan(conn: Connection, ctx: OpContext, queue_after: int = 0) -> ScanResult:
    result = fire_sla(conn, ctx)
    result.closed = close_verified(conn, ctx)
    for charger_id in derived.offline_candidates(conn, ctx):
        if derived.offline(conn, ctx.as_actor("system:offline"), charger_id) is not None:
            result.offline_orders += 1
    result.assigned, result.queue_next = sweep_queue(conn, ctx, queue_after)
    return result


class Scanner:
    """Runs :func:`scan` every ``interval`` seconds and refreshes the gauges."""

    def __init__(
        self,
        committer: GroupCommitter,
        db: Database,
        bus: Bus,
        clock: Clock,
        thresholds: Thresholds,
        interval: float,
    ) -> None:
        self.committer = committer
        self.db = db
        self.bus = bus
        self.clock = clock
        self.thresholds = thresholds
        self._periodic = PeriodicTask(
            self.run_once,
            interval,
            name="ticketing-scanner",
            logger=log,
            failure="work-order scan failed",
        )
        self._scans = 0
        self._queue_after = 0

    async def run_once(self) -> ScanResult:
        ctx = OpContext(
            now=self.clock.now(), actor="system", bus=self.bus, thresholds=self.thresholds
        )
        after = self._queue_after
        # background: nobody waits on a scan; chargers' rows queued with it commit first
        result = await store.run(
            self.committer, ctx, lambda c, x: scan(c, x, after), background=True
        )
        self._queue_after = result.queue_next
        self._scans += 1
        if self._scans % 720 == 1:
            await store.run(self.committer, ctx, derived.prune_signals, background=True)
        await self.refresh_gauges()
        return result

    async def refresh_gauges(self) -> None:
        async with self.db.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(WORK_ORDERS.c.state, WORK_ORDERS.c.priority, func.count())
                    .where(WORK_ORDERS.c.state.notin_(TERMINAL))
                    .group_by(WORK_ORDERS.c.state, WORK_ORDERS.c.priority)
                )
            ).all()
            queue = (
                await conn.execute(
                    select(func.count()).select_from(WORK_ORDERS).where(dispatching.IN_QUEUE)
                )
            ).scalar_one()
        metrics.WORK_ORDERS_OPEN.clear()
        for state, priority, count in rows:
            metrics.WORK_ORDERS_OPEN.labels(state, priority).set(count)
        metrics.DISPATCH_QUEUE.set(queue)

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
