"""Who is connected and who is online.

Online from the handshake. A closed socket starts a grace period: a charger that comes
back within it never went offline; otherwise it is offline *since the disconnect*. A
charger that sends nothing for 2 x heartbeat interval + grace has its socket closed and
is offline since its last message. After a restart of this process, chargers recorded
online were disconnected when the previous process ended (its clean stop, or its last beat
if it died; their last message or status report if later): they are offline since then
unless they come back within the grace counted from then. Every transition is an event, a
metric and a status-history interval.

Several nodes: the ``charger_state`` row belongs to the node named in its ``node_id`` (the
one the charger connected to last). A node writes a disconnect and marks a charger offline
only while the row still names it (conditional updates): a charger that reconnected to
another node within the grace is never marked offline by the node it left. Chargers of a
node that died are marked offline by the other nodes (:mod:`csms.nodes`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from csms import state
from csms.context import CsmsContext
from csms.nodes import Handover
from csms.session import OcppSession
from csms.tables import Charger
from services.bus import record
from services.bus.contracts import (
    ChargerConnected,
    ChargerDisconnected,
    ChargerOffline,
    ChargerOnline,
    Event,
)
from services.committer import WriteSet
from services.db import table_of
from services.observability import metrics
from services.tasks import cancel_and_wait

log = logging.getLogger(__name__)

CHARGERS = table_of(Charger)
#: seconds between looks for connected chargers an operator disabled or changed credentials of
REGISTRY_CHECK_INTERVAL = 5.0
#: registry changes are looked for back to this long before the previous look: covers the
#: time between a change's ``updated_at`` and its commit, and clock skew between the process
#: that served the PATCH and this one
REGISTRY_CHANGE_MARGIN = timedelta(seconds=60)


@dataclass
class _Pending:
    since: datetime
    deadline: float
    reason: str


class Presence:
    def __init__(self, ctx: CsmsContext) -> None:
        self.ctx = ctx
        self.sessions: dict[str, OcppSession] = {}
        self._online: set[str] = set()
        self._pending: dict[str, _Pending] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._closing: set[asyncio.Task[None]] = set()
        #: chargers whose offline mark is being committed, until it is
        self._expiring: dict[str, asyncio.Future[None]] = {}
        #: registry changes before this (minus the margin) are reflected in sessions' identities
        self._registry_checked = ctx.clock()
        #: run as a charger connects, before its connection is recorded: marks it offline
        #: first if a dead node held it and its outage is due (:mod:`csms.nodes`); returns the
        #: handover to record with the connection when another node held it online
        self.before_takeover: Callable[[str], Awaitable[Handover | None]] | None = None

    @property
    def _grace(self) -> float:
        return self.ctx.settings.offline_grace

    @property
    def _silence_limit(self) -> timedelta:
        s = self.ctx.settings
        return timedelta(seconds=2 * s.heartbeat_interval + s.offline_grace)

    def is_online(self, charger_id: str) -> bool:
        return charger_id in self._online

    async def start(self, previous_end: datetime | None = None) -> None:
        """Adopt what the database says was online before this process started.

        ``previous_end``: when the previous process of this node stopped, or last beat if it
        died. Its chargers' sockets closed then (or after their last message, if later): the
        grace runs from that moment, not from this start, so an outage longer than the
        grace is an offline interval even for a charger that reconnects at once. Chargers
        whose grace has run out are marked offline here, before the OCPP port opens."""
        table, connectors = state.CHARGER_STATE, state.CONNECTOR_STATE
        # last_seen is a deferred write (a crash loses up to a second of it); the latest
        # status report is committed before its answer: the charger was there then.
        reported = (
            select(func.max(connectors.c.updated_at))
            .where(connectors.c.charger_id == table.c.charger_id)
            .scalar_subquery()
        )
        async with self.ctx.db.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        table.c.charger_id,
                        table.c.last_seen,
                        table.c.connected_at,
                        reported.label("reported"),
                    ).where(table.c.online.is_(True), table.c.node_id == self.ctx.node_id)
                )
            ).all()
        started = time.monotonic()
        now = self.ctx.clock()
        for row in rows:
            self._online.add(row.charger_id)
            seen = [t for t in (row.last_seen, row.connected_at, row.reported) if t is not None]
            since = max(seen) if seen else now
            if previous_end is not None and previous_end > since:
                since = previous_end
            left = self._grace - max(0.0, (now - since).total_seconds())
            self._pending[row.charger_id] = _Pending(
                since, started + max(0.0, left), "csms_restarted"
            )
        if rows:
            log.info(
                "%d chargers were online before start; waiting up to %.0fs for them",
                len(rows),
                self._grace,
            )
            await self._expire()
        self._task = asyncio.create_task(self._watch(), name="presence")

    async def stop(self) -> None:
        self._stopping = True
        await cancel_and_wait(self._task)
        self._task = None

    async def connected(self, session: OcppSession) -> None:
        cid = session.charger_id
        old = self.sessions.get(cid)
        self.sessions[cid] = session
        if old is not None:
            old.replaced = True
            log.info("charger %s reconnected; closing its previous connection", cid)
            self._close_later(old, 1000, "replaced by a new connection")
        pending = self._pending.pop(cid, None)
        # Already offline by the rules, though not marked yet (presence's next tick would
        # have): closed for silence, or gone for longer than the grace. The outage is
        # recorded before this connection's online mark, or it would vanish.
        outage: _Pending | None = None
        if old is not None and old.silent:
            outage = _Pending(old.last_seen, 0.0, "heartbeat_timeout")
        elif pending is not None and pending.deadline <= time.monotonic():
            outage = pending
        handover: Handover | None = None
        try:
            if self.before_takeover is not None:
                try:
                    handover = await self.before_takeover(cid)
                except Exception:
                    log.exception("charger %s: sweeping its previous node failed", cid)
            if old is not None:
                # Let the replaced session's report in flight land first (it takes no more),
                # then read the state: this one starts from what that one last reported.
                await old.hand_over()
            await session.load_state()
        finally:
            session.ready.set()
        expiring = self._expiring.get(cid)
        if expiring is not None:
            # Its offline mark is being committed: let it land first, so that this
            # connection's online mark comes after it (not before, to be overwritten).
            await asyncio.shield(expiring)
        now = session.connected_at
        writes = WriteSet()
        events: list[Event] = [
            ChargerConnected(
                charger_id=cid,
                received_at=now,
                ocpp_version=session.ocpp_version,
                node_id=self.ctx.node_id,
                security_profile=session.identity.security_profile,
            )
        ]
        if outage is not None and cid in self._online:
            self._online.discard(cid)
            events.append(
                ChargerOffline(
                    charger_id=cid, received_at=now, since=outage.since, reason=outage.reason
                )
            )
            state.history(writes, cid, state.CONNECTIVITY, "", "offline", outage.since)
            metrics.CHARGER_STATE_CHANGES.labels("offline").inc()
        state.charger_state(
            writes,
            cid,
            online=True,
            connected=True,
            node_id=self.ctx.node_id,
            ocpp_version=session.ocpp_version,
            connected_at=now,
            last_seen=now,
            offline_since=None,
        )
        if handover is not None:
            handover.record(writes, now)
        came_online = cid not in self._online
        if came_online:
            self._online.add(cid)
            events.append(
                ChargerOnline(charger_id=cid, received_at=now, ocpp_version=session.ocpp_version)
            )
            state.history(writes, cid, state.CONNECTIVITY, "", "online", now)
        # Commands for this charger come here from now on (before the events go out, so
        # a consumer reacting to them can reach it); a replaced session's is kept.
        await self.ctx.bus.attach_charger(cid)
        try:
            await record(self.ctx.committer, self.ctx.bus, writes, events)
        except BaseException:
            # Not recorded (the session ends): it did not come online, so its next
            # connection must announce it.
            if came_online:
                self._online.discard(cid)
            raise
        if came_online:
            metrics.CHARGER_STATE_CHANGES.labels("online").inc()

    async def disconnected(self, session: OcppSession, reason: str = "") -> None:
        cid = session.charger_id
        now = self.ctx.clock()
        current = self.sessions.get(cid) is session
        if current:
            del self.sessions[cid]
        writes = WriteSet()
        events: list[Event] = [
            ChargerDisconnected(
                charger_id=cid,
                received_at=now,
                node_id=self.ctx.node_id,
                close_code=session.ws.close_code,
                reason=reason or (session.ws.close_reason or ""),
            )
        ]
        if current:
            # The deferred last-seen writes queued so far go ahead of this one (queued
            # later, an older last-seen would overwrite the one written here).
            self.ctx.committer.queue_deferred()
            writes.then(self._disconnect_op(cid, session.last_seen, session.connected_at))
            if not self._stopping:
                if session.silent:
                    self._pending[cid] = _Pending(session.last_seen, 0.0, "heartbeat_timeout")
                else:
                    self._pending[cid] = _Pending(
                        now, time.monotonic() + self._grace, "disconnected"
                    )
        try:
            await record(self.ctx.committer, self.ctx.bus, writes, events)
        except Exception:
            log.exception("charger %s: recording the disconnect failed", cid)
        if current and cid not in self.sessions:
            # After the record (an await before it would let a new session's writes commit
            # first); never for a replaced session, nor once a new one has connected: the
            # command route is theirs.
            await self.ctx.bus.detach_charger(cid)
        if current and not self._stopping and self._grace == 0:
            await self._expire()

    async def close_all(self, code: int = 1001, reason: str = "server shutting down") -> None:
        self._stopping = True
        sessions = list(self.sessions.values())
        await asyncio.gather(*(s.ws.close(code, reason) for s in sessions), return_exceptions=True)

    async def _watch(self) -> None:
        tick = max(0.05, min(1.0, self._grace / 4 if self._grace else 1.0))
        next_registry_check = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            try:
                self._flush_last_seen()
                self._close_silent()
                await self._expire()
                if time.monotonic() >= next_registry_check:
                    next_registry_check = time.monotonic() + REGISTRY_CHECK_INTERVAL
                    await self._close_revoked()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("presence check failed")

    def _close_later(self, session: OcppSession, code: int, reason: str) -> None:
        """Close a socket without waiting; the task is kept until done (the loop itself
        holds tasks only weakly)."""
        task = asyncio.create_task(session.ws.close(code, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _flush_last_seen(self) -> None:
        """Write chargers' last-seen times once per tick instead of once per message."""
        writes = WriteSet()
        for session in self.sessions.values():
            if session.last_seen != session.flushed_seen:
                state.charger_state(writes, session.charger_id, last_seen=session.last_seen)
                session.flushed_seen = session.last_seen
        if writes:
            self.ctx.committer.submit(writes)

    async def _close_revoked(self) -> None:
        """Close the connections of chargers an operator disabled, or whose password or
        security profile changed, since they authenticated: the handshake judges new
        connections; this ends the sessions admitted under what no longer holds. Read from
        the database, so it works whichever process served the PATCH."""
        if not self.sessions:
            return
        started = self.ctx.clock()
        table = state.CHARGER_STATE
        async with self.ctx.db.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        CHARGERS.c.id,
                        CHARGERS.c.enabled,
                        CHARGERS.c.security_profile,
                        CHARGERS.c.password_hash,
                    )
                    .join(table, CHARGERS.c.id == table.c.charger_id)
                    .where(
                        table.c.node_id == self.ctx.node_id,
                        table.c.connected.is_(True),
                        CHARGERS.c.enabled.is_(False)
                        | (CHARGERS.c.updated_at > self._registry_checked - REGISTRY_CHANGE_MARGIN),
                    )
                )
            ).all()
        self._registry_checked = started
        for row in rows:
            session = self.sessions.get(row.id)
            if session is None or session.silent:
                continue
            identity = session.identity
            if not row.enabled:
                reason = "charger disabled"
            elif int(row.security_profile) != identity.security_profile:
                reason = "security profile changed"
            elif identity.password_hash != (
                row.password_hash if identity.security_profile in (1, 2) else None
            ):
                reason = "password changed"
            else:
                continue
            log.info("charger %s: %s; closing its connection", row.id, reason)
            self._close_later(session, 1008, reason)

    def _close_silent(self) -> None:
        cutoff = self.ctx.clock() - self._silence_limit
        for session in list(self.sessions.values()):
            if session.last_seen < cutoff and not session.silent:
                session.silent = True
                log.info(
                    "charger %s silent since %s; closing",
                    session.charger_id,
                    session.last_seen.isoformat(),
                )
                self._close_later(
                    session, 1000, "nothing received for 2 x heartbeat interval + grace"
                )

    def _disconnect_op(
        self, charger_id: str, last_seen: datetime, connected_at: datetime
    ) -> Callable[[Connection], None]:
        """Mark this session's connection closed. Only while the row is still this
        session's (its ``connected_at``): a reconnection's row, committed in the same batch
        (rows go before operations) or earlier, is left alone."""
        table, me = state.CHARGER_STATE, self.ctx.node_id

        def op(conn: Connection) -> None:
            conn.execute(
                update(table)
                .where(
                    table.c.charger_id == charger_id,
                    table.c.node_id == me,
                    table.c.connected_at == connected_at,
                )
                .values(connected=False, last_seen=last_seen)
            )

        return op

    async def _expire(self) -> None:
        now = time.monotonic()
        due = [(cid, p) for cid, p in self._pending.items() if p.deadline <= now]
        if not due:
            return
        offline: list[tuple[str, _Pending]] = []
        for cid, pending in due:
            del self._pending[cid]
            if cid in self.sessions or cid not in self._online:
                continue
            self._online.discard(cid)
            offline.append((cid, pending))
        if not offline:
            return
        writes = WriteSet()
        writes.then(self._offline_op(offline, self.ctx.clock()))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for cid, _ in offline:
            self._expiring[cid] = done
        try:
            (marked,) = await self.ctx.committer.commit(writes)
        except Exception:
            # Not marked: they are still online as far as anyone knows; try again later
            # (unless they came back meanwhile).
            log.exception("marking %d chargers offline failed; retrying", len(offline))
            retry = time.monotonic() + 1.0
            for cid, pending in offline:
                if cid not in self.sessions and cid not in self._pending:
                    self._online.add(cid)
                    self._pending[cid] = _Pending(pending.since, retry, pending.reason)
            return
        finally:
            for cid, _ in offline:
                if self._expiring.get(cid) is done:
                    del self._expiring[cid]
            done.set_result(None)
        if marked:
            metrics.CHARGER_STATE_CHANGES.labels("offline").inc(marked)

    def _offline_op(
        self, offline: list[tuple[str, _Pending]], at: datetime
    ) -> Callable[[Connection], int]:
        """Mark chargers offline that this node still holds (a charger that reconnected to
        another node meanwhile does not match); stage their events in the same transaction."""
        table, me, bus = state.CHARGER_STATE, self.ctx.node_id, self.ctx.bus

        def op(conn: Connection) -> int:
            events: list[Event] = []
            for cid, pending in offline:
                done = conn.execute(
                    update(table)
                    .where(
                        table.c.charger_id == cid, table.c.node_id == me, table.c.online.is_(True)
                    )
                    .values(online=False, connected=False, offline_since=pending.since)
                )
                if not done.rowcount:
                    continue
                conn.execute(
                    state.STATUS_HISTORY.insert().values(
                        state.connectivity_row(cid, "offline", pending.since)
                    )
                )
                events.append(
                    ChargerOffline(
                        charger_id=cid, received_at=at, since=pending.since, reason=pending.reason
                    )
                )
            if events:
                bus.stage_on(conn, events)
            return len(events)

        return op

    async def reassert(self) -> None:
        """After this node may have been taken for dead (:mod:`csms.nodes`): chargers it
        still holds that a sweeper marked offline are online again; a session whose charger
        meanwhile connected to another node is closed (its commands go there)."""
        held = list(self.sessions)
        if not held:
            return
        table, me = state.CHARGER_STATE, self.ctx.node_id
        at = self.ctx.clock()
        bus = self.ctx.bus

        def op(conn: Connection) -> tuple[list[str], list[str]]:
            back = [
                row.charger_id
                for row in conn.execute(
                    update(table)
                    .where(
                        table.c.charger_id.in_(held),
                        table.c.node_id == me,
                        table.c.online.is_(False),
                    )
                    .values(online=True, connected=True, offline_since=None)
                    .returning(table.c.charger_id)
                )
            ]
            elsewhere = list(
                conn.execute(
                    select(table.c.charger_id).where(
                        table.c.charger_id.in_(held), table.c.node_id != me
                    )
                ).scalars()
            )
            events: list[Event] = []
            for cid in back:
                session = self.sessions.get(cid)
                version = session.ocpp_version if session is not None else "unknown"
                conn.execute(
                    state.STATUS_HISTORY.insert().values(state.connectivity_row(cid, "online", at))
                )
                events.append(ChargerOnline(charger_id=cid, received_at=at, ocpp_version=version))
            if events:
                bus.stage_on(conn, events)
            return back, elsewhere

        writes = WriteSet()
        writes.then(op)
        ((back, elsewhere),) = await self.ctx.committer.commit(writes)
        for cid in back:
            self._online.add(cid)
            metrics.CHARGER_STATE_CHANGES.labels("online").inc()
        for cid in elsewhere:
            session = self.sessions.get(cid)
            if session is not None:
                log.info("charger %s is held by another node; closing this connection", cid)
                self._close_later(session, 1000, "held by another node")
        if back:
            log.warning("%d chargers this node holds were marked offline; online again", len(back))
