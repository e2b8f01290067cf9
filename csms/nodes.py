"""Liveness of csms nodes: the node-id claim, the beat, and the dead-node sweeper.

Every csms node keeps a ``csms_nodes`` row and beats its ``last_beat`` every
``CHARGEOPS_NODE_BEAT_INTERVAL`` seconds; a node whose last beat is older than the beat
timeout (3 intervals), or that stopped cleanly (``stopped_at``), is dead. Every node runs
the sweeper after its beat: the chargers a dead node still holds as online in
``charger_state`` are marked offline *since their last message* (connectivity history row,
``ChargerOffline`` with reason ``node_lost``) once the offline grace has passed since the
dead node's last beat; a charger that reconnected to another node meanwhile carries that
node's id and is left alone by that update.

A node's death is known only after the beat timeout, which may be longer than the grace: a
charger that reconnects to another node between the two had an outage nobody could record
yet. So a node taking over a charger another node's row still holds online records a
*handover* (``csms_handovers``: from which node, since when silent there, taken when); the
sweep that finds that node dead, or the node's own restart under the same id, settles its
handovers: a charger taken more than the grace after the node's last beat (or clean stop)
gets its offline interval inserted into the status history before its new connection's
online row, with a ``ChargerOffline`` (reason ``node_lost``, the same deterministic id the
sweep would give it). A handover whose node beat after it (the node was alive, the charger
just moved) is deleted by the next sweep. Whatever the grace, no outage is lost.

Decisions:
- **Node ids.** ``CHARGEOPS_NODE_ID`` keeps its default (``node-1``) so that a restarted node
  with a stable id (a StatefulSet pod name, a host name) adopts its chargers
  (:meth:`csms.presence.Presence.start`). In distributed mode a node refuses to start while
  another live process holds its id (:class:`NodeIdInUse`): an id whose row was beaten
  within the beat timeout and not stopped is watched until the timeout has passed since that
  beat; a new beat means another process holds it, none means its holder died (a SIGKILLed
  node restarting with the same id waits at most one beat timeout). A clean stop sets
  ``stopped_at``, so a restart claims the id at once. Embedded mode (one process by
  construction) claims at once.
- **No double marking.** The sweeper locks the dead node's row ``FOR UPDATE SKIP LOCKED``
  (one sweeper per dead node at a time on PostgreSQL; SQLite has one writer anyway) and
  marks chargers with a conditional ``UPDATE ... WHERE node_id = :dead AND online``: a
  charger another sweeper already marked, or that reconnected elsewhere, does not match.
  The event id is deterministic (charger, dead node, since), so a repeat is dropped by the
  outbox and by JetStream. The events are staged in the same transaction as the update
  (``Bus.stage_on``). A dead node's row is deleted once none of its chargers is online.
- **Clocks.** Beats carry the node's own clock: nodes' clocks must agree to well within the
  beat timeout (NTP).
- **Coming back.** A node whose beat finds its row gone, or whose previous successful beat
  is older than the beat timeout (a partition, a long pause), may have been swept: it
  re-asserts its live sessions (:meth:`csms.presence.Presence.reassert`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import and_, delete, exists, func, insert, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from csms import state
from csms.event_ids import stable_event_id
from csms.tables import CsmsHandover, CsmsNode
from services.bus import Bus
from services.bus.contracts import ChargerOffline, ChargerOnline, Event
from services.committer import GroupCommitter, WriteSet
from services.db import Database, UTCDateTime, table_of
from services.observability import metrics
from services.settings import Settings
from services.tasks import PeriodicTask

log = logging.getLogger(__name__)

NODES = table_of(CsmsNode)
HANDOVERS = table_of(CsmsHandover)
T = TypeVar("T")
#: ChargerOffline.reason for chargers of a node that died
NODE_LOST = "node_lost"


class NodeIdInUse(RuntimeError):
    """Another live process holds this node id (set a unique ``CHARGEOPS_NODE_ID``)."""


@dataclass(frozen=True)
class _Holder:
    last_beat: datetime
    stopped_at: datetime | None


@dataclass(frozen=True)
class Handover:
    """A charger connecting here while ``from_node``'s row still holds it online; ``since``:
    its last message there, where its outage starts if that node turns out to be dead."""

    charger_id: str
    from_node: str
    since: datetime

    def record(self, writes: WriteSet, taken_at: datetime) -> None:
        writes.insert(
            HANDOVERS,
            {
                "charger_id": self.charger_id,
                "from_node": self.from_node,
                "since": self.since,
                "taken_at": taken_at,
            },
        )


class Beat(StrEnum):
    ok = "ok"
    #: our row was gone (swept as dead) and is back: we may have been marked offline
    revived = "revived"
    #: another process claimed our node id since we started
    taken = "taken"


# ------------------------------------------------------------------ operations
def _upsert(conn: Connection, values: dict[str, object]) -> None:
    ins = (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(NODES)
    conn.execute(
        ins.values(values).on_conflict_do_update(
            index_elements=[NODES.c.node_id],
            set_={k: ins.excluded[k] for k in values if k != "node_id"},
        )
    )


def claim(conn: Connection, node_id: str, now: datetime) -> None:
    """Make ``node_id`` this process's: started and beaten now, not stopped."""
    _upsert(conn, {"node_id": node_id, "started_at": now, "last_beat": now, "stopped_at": None})


def beat(conn: Connection, node_id: str, started_at: datetime, now: datetime) -> Beat:
    """Beat our row; re-create it if a sweeper deleted it."""
    done = conn.execute(
        update(NODES)
        .where(NODES.c.node_id == node_id, NODES.c.started_at == started_at)
        .values(last_beat=now, stopped_at=None)
    )
    if done.rowcount:
        return Beat.ok
    ins = (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(NODES)
    created = conn.execute(
        ins.values(node_id=node_id, started_at=started_at, last_beat=now).on_conflict_do_nothing()
    )
    return Beat.revived if created.rowcount else Beat.taken


def mark_node_stopped(conn: Connection, node_id: str, started_at: datetime, now: datetime) -> None:
    conn.execute(
        update(NODES)
        .where(NODES.c.node_id == node_id, NODES.c.started_at == started_at)
        .values(last_beat=now, stopped_at=now)
    )


def due(
    last_beat: datetime,
    stopped_at: datetime | None,
    *,
    now: datetime,
    beat_timeout: float,
    grace: float,
) -> bool:
    """Is a node with this row dead and its chargers due for the sweep? (As :func:`sweep`
    selects them.)"""
    if stopped_at is not None and last_beat <= now - timedelta(seconds=grace):
        return True
    return last_beat < now - timedelta(seconds=max(beat_timeout, grace))


def sweep(
    conn: Connection,
    bus: Bus,
    *,
    me: str,
    now: datetime,
    beat_timeout: float,
    grace: float,
) -> list[ChargerOffline]:
    """Mark offline the chargers that dead nodes still hold as online; return the events
    (already staged on ``conn``). Runs inside the caller's transaction."""
    table = state.CHARGER_STATE
    stale = now - timedelta(seconds=max(beat_timeout, grace))
    stopped = now - timedelta(seconds=grace)
    dead = conn.execute(
        select(NODES.c.node_id, NODES.c.last_beat)
        .where(
            NODES.c.node_id != me,
            or_(
                NODES.c.last_beat < stale,
                and_(NODES.c.stopped_at.is_not(None), NODES.c.last_beat <= stopped),
            ),
        )
        .order_by(NODES.c.node_id)
        .with_for_update(skip_locked=True)
    ).all()
    events: list[ChargerOffline] = []
    swept: list[ChargerOffline] = []
    for node in dead:
        swept.extend(_sweep_node(conn, node.node_id, node.last_beat, now))
        events.extend(
            settle_handovers(conn, bus, node.node_id, node.last_beat, now=now, grace=grace)
        )
        conn.execute(
            delete(NODES).where(
                NODES.c.node_id == node.node_id,
                NODES.c.last_beat == node.last_beat,
                ~exists().where(table.c.node_id == node.node_id, table.c.online.is_(True)),
            )
        )
    # Handovers from nodes that beat after them: those nodes were alive, the chargers moved.
    conn.execute(
        delete(HANDOVERS).where(
            ~exists().where(
                NODES.c.node_id == HANDOVERS.c.from_node,
                NODES.c.last_beat <= HANDOVERS.c.taken_at,
            )
        )
    )
    if swept:
        bus.stage_on(conn, swept)
    return swept + events


def settle_handovers(
    conn: Connection, bus: Bus, node_id: str, end: datetime, *, now: datetime, grace: float
) -> list[ChargerOffline]:
    """Decide the handovers from ``node_id``, which was alive until ``end`` (its last beat,
    or its clean stop) and is dead or restarting: a charger taken over more than the grace
    after ``end`` was offline from its last message there until it connected elsewhere
    (the sweep's own rule for the chargers a dead node still holds). Its offline interval
    is inserted into the status history before that connection's online row, unless an
    offline was recorded meanwhile (another sweeper, or the node itself); the events are
    staged on ``conn``; the node's handovers are deleted. Returns the offline events."""
    cutoff = end + timedelta(seconds=grace)
    rows = conn.execute(
        select(HANDOVERS)
        .where(HANDOVERS.c.from_node == node_id, HANDOVERS.c.taken_at > cutoff)
        .order_by(HANDOVERS.c.id)
    ).all()
    conn.execute(delete(HANDOVERS).where(HANDOVERS.c.from_node == node_id))
    offline: list[ChargerOffline] = []
    staged: list[Event] = []
    for row in rows:
        last = _connectivity(conn, row.charger_id, before=row.taken_at)
        if last is None or last.status != "online":
            continue  # its outage is recorded already (or it was never online)
        since = max(row.since, last.started_at)
        if since >= row.taken_at:
            continue
        log.warning(
            "charger %s was offline from %s until it connected to another node at %s "
            "(csms node %s had died)",
            row.charger_id,
            since.isoformat(),
            row.taken_at.isoformat(),
            node_id,
        )
        conn.execute(
            insert(state.STATUS_HISTORY), [state.connectivity_row(row.charger_id, "offline", since)]
        )
        event = ChargerOffline(
            event_id=stable_event_id("ChargerOffline", row.charger_id, node_id, since.isoformat()),
            charger_id=row.charger_id,
            received_at=now,
            since=since,
            reason=NODE_LOST,
        )
        offline.append(event)
        staged.append(event)
        following = _connectivity(conn, row.charger_id, after=row.taken_at)
        if following is None or following.status != "online":
            # The connection did not announce itself (its node took the charger for online):
            # its online interval starts at the takeover.
            conn.execute(
                insert(state.STATUS_HISTORY),
                [state.connectivity_row(row.charger_id, "online", row.taken_at)],
            )
            version = conn.execute(
                select(state.CHARGER_STATE.c.ocpp_version).where(
                    state.CHARGER_STATE.c.charger_id == row.charger_id
                )
            ).scalar()
            staged.append(
                ChargerOnline(
                    event_id=stable_event_id(
                        "ChargerOnline", row.charger_id, node_id, row.taken_at.isoformat()
                    ),
                    charger_id=row.charger_id,
                    received_at=row.taken_at,
                    ocpp_version=version or "unknown",
                )
            )
    if staged:
        bus.stage_on(conn, staged)
    return offline


def _connectivity(
    conn: Connection,
    charger_id: str,
    *,
    before: datetime | None = None,
    after: datetime | None = None,
) -> Any:
    """The charger's last connectivity row starting before ``before``, or its first one
    starting at or after ``after``."""
    hist = state.STATUS_HISTORY
    query = select(hist.c.status, hist.c.started_at).where(
        hist.c.charger_id == charger_id, hist.c.kind == state.CONNECTIVITY
    )
    if before is not None:
        query = query.where(hist.c.started_at < before).order_by(
            hist.c.started_at.desc(), hist.c.id.desc()
        )
    else:
        assert after is not None
        query = query.where(hist.c.started_at >= after).order_by(hist.c.started_at, hist.c.id)
    return conn.execute(query.limit(1)).first()


def _sweep_node(
    conn: Connection, dead_id: str, last_beat: datetime, now: datetime
) -> list[ChargerOffline]:
    table = state.CHARGER_STATE
    marked = conn.execute(
        update(table)
        .where(table.c.node_id == dead_id, table.c.online.is_(True))
        .values(
            online=False,
            connected=False,
            offline_since=func.coalesce(table.c.last_seen, literal(last_beat, UTCDateTime())),
        )
        .returning(table.c.charger_id, table.c.offline_since)
    ).all()
    if not marked:
        return []
    log.warning(
        "csms node %s is dead (last beat %s): %d chargers it held are offline",
        dead_id,
        last_beat.isoformat(),
        len(marked),
    )
    conn.execute(
        insert(state.STATUS_HISTORY),
        [state.connectivity_row(row.charger_id, "offline", row.offline_since) for row in marked],
    )
    return [
        ChargerOffline(
            event_id=stable_event_id(
                "ChargerOffline", row.charger_id, dead_id, row.offline_since.isoformat()
            ),
            charger_id=row.charger_id,
            received_at=now,
            since=row.offline_since,
            reason=NODE_LOST,
        )
        for row in marked
    ]


# ------------------------------------------------------------------ the loop
class NodeLiveness:
    """Claims this node's id, beats it and sweeps dead nodes' chargers every interval."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        committer: GroupCommitter,
        bus: Bus,
        clock: Callable[[], datetime],
        *,
        on_revived: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        if not bus.supports_stage_on:
            raise ValueError("node liveness needs a bus that can stage events in a transaction")
        self.settings = settings
        self.node_id = settings.node_id
        self._db = db
        self._committer = committer
        self._bus = bus
        self._clock = clock
        self._on_revived = on_revived
        self.started_at: datetime | None = None
        #: when the previous process holding this node id stopped or last beat (None: none)
        self.previous_end: datetime | None = None
        self._last_ok: float = 0.0
        self._loop = PeriodicTask(
            self.tick,
            settings.node_beat_interval,
            name="csms-node-liveness",
            logger=log,
            failure="node beat or sweep failed",
        )

    @property
    def _timeout(self) -> float:
        return self.settings.node_beat_timeout

    async def start(self) -> None:
        """Claim the node id (see the module notes), then beat and sweep in the background."""
        if self.settings.distributed:
            await self._wait_for_holder()
        previous = await self._read()
        if previous is not None:
            # The previous holder was alive (so were its sockets) until it stopped, or at
            # least until its last beat: where the outage of its chargers starts.
            self.previous_end = previous.stopped_at or previous.last_beat
        now, end, grace = self._clock(), self.previous_end, self.settings.offline_grace

        def take(conn: Connection) -> list[ChargerOffline]:
            # Chargers that left the previous holder for another node before anyone knew it
            # was dead: decided now, as the sweep would have (the claim hides its death).
            settled = (
                []
                if end is None
                else settle_handovers(conn, self._bus, self.node_id, end, now=now, grace=grace)
            )
            claim(conn, self.node_id, now)
            return settled

        # Known before the claim is awaited: a start cancelled meanwhile (SIGTERM during
        # start-up) does not cancel the claim's write, and the stop that follows must mark
        # this claim stopped, or the id would look held until the beat timeout.
        self.started_at = now
        settled: list[ChargerOffline] = await self._run(take)
        if settled:
            metrics.CHARGER_STATE_CHANGES.labels("offline").inc(len(settled))
        self._last_ok = time.monotonic()
        self._loop.start()

    async def stop(self, *, mark_stopped: bool = True) -> None:
        """Stop beating; a clean stop marks the node stopped so that its chargers are swept
        after the grace (and a restart claims the id at once). ``mark_stopped=False`` leaves
        the row as a crash would: the node is dead once its beats are overdue."""
        await self._loop.stop()
        if mark_stopped and self.started_at is not None:
            started, now = self.started_at, self._clock()
            await self._run(lambda conn: mark_node_stopped(conn, self.node_id, started, now))

    async def tick(self) -> None:
        """One beat and one sweep (the loop's job; tests call it directly)."""
        await self.beat_once()
        await self.sweep_once()

    async def beat_once(self) -> Beat:
        assert self.started_at is not None, "start() first"
        started, now = self.started_at, self._clock()
        late = time.monotonic() - self._last_ok > self._timeout
        result: Beat = await self._run(lambda conn: beat(conn, self.node_id, started, now))
        if result is Beat.taken:
            log.error(
                "csms node id %s was claimed by another process; set a unique CHARGEOPS_NODE_ID",
                self.node_id,
            )
            return result
        self._last_ok = time.monotonic()
        if (result is Beat.revived or late) and self._on_revived is not None:
            log.warning(
                "csms node %s beat late or was swept; re-asserting its chargers", self.node_id
            )
            await self._on_revived()
        return result

    async def before_takeover(self, charger_id: str) -> Handover | None:
        """A charger is connecting to this node while another node holds it online.

        If that node is dead with its chargers due for the sweep (the sweep's own test,
        below), sweep now. Sweeps run once per beat: a charger coming back between a sweep
        falling due and its run had its outage erased, the new connection's online row
        following the dead node's with no offline interval between them.

        Otherwise that node may be alive (the charger just moved) or dead without anyone
        knowing yet (its death is known only after the beat timeout, which may exceed the
        grace): the returned :class:`Handover`, recorded with the connection, lets the sweep
        of that node (or its restart) decide later whether the charger had an outage."""
        table, now = state.CHARGER_STATE, self._clock()
        async with self._db.engine.connect() as conn:
            holder = (
                await conn.execute(
                    select(
                        table.c.node_id,
                        table.c.last_seen,
                        NODES.c.last_beat,
                        NODES.c.stopped_at,
                    )
                    .select_from(table.join(NODES, NODES.c.node_id == table.c.node_id))
                    .where(
                        table.c.charger_id == charger_id,
                        table.c.online.is_(True),
                        table.c.node_id != self.node_id,
                    )
                )
            ).first()
        if holder is None:
            return None
        if due(
            holder.last_beat,
            holder.stopped_at,
            now=now,
            beat_timeout=self._timeout,
            grace=self.settings.offline_grace,
        ):
            await self.sweep_once()
            return None
        return Handover(charger_id, holder.node_id, holder.last_seen or holder.last_beat)

    async def sweep_once(self) -> list[ChargerOffline]:
        now, grace = self._clock(), self.settings.offline_grace
        events: list[ChargerOffline] = await self._run(
            lambda conn: sweep(
                conn, self._bus, me=self.node_id, now=now, beat_timeout=self._timeout, grace=grace
            )
        )
        if events:
            metrics.CHARGER_STATE_CHANGES.labels("offline").inc(len(events))
        return events

    async def _wait_for_holder(self) -> None:
        first = await self._read()
        if first is None or first.stopped_at is not None:
            return
        age = (self._clock() - first.last_beat).total_seconds()
        if age >= self._timeout:
            return
        log.info(
            "csms node id %s was beaten %.1fs ago; waiting up to %.1fs to see whether its "
            "holder is alive",
            self.node_id,
            age,
            self._timeout - age,
        )
        deadline = time.monotonic() + self._timeout - age
        poll = min(1.0, self.settings.node_beat_interval / 5)
        while time.monotonic() < deadline:
            await asyncio.sleep(poll)
            row = await self._read()
            if row is None or row.stopped_at is not None:
                return
            if row.last_beat != first.last_beat:
                raise NodeIdInUse(
                    f"csms node id {self.node_id!r} is held by a live process (it beat at "
                    f"{row.last_beat.isoformat()}); give each node its own CHARGEOPS_NODE_ID"
                )

    async def _read(self) -> _Holder | None:
        async with self._db.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(NODES.c.last_beat, NODES.c.stopped_at).where(
                        NODES.c.node_id == self.node_id
                    )
                )
            ).first()
        return None if row is None else _Holder(row.last_beat, row.stopped_at)

    async def _run(self, op: Callable[[Connection], T]) -> T:
        writes = WriteSet()
        writes.then(op)
        (result,) = await self._committer.commit(writes)
        return result  # type: ignore[no-any-return]
