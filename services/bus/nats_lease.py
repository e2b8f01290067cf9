"""Which process consumes a durable NATS consumer: one at a time, by a PostgreSQL lock.

JetStream hands the messages of a pull consumer shared by several processes to whichever
asks first, so two ticketing replicas applied one charger's events in parallel, out of
order: a FaultCleared applied before the FaultRaised it clears left the order open although
the connector was healthy again (17 of 200 orders in a probe with two replicas catching up
on a backlog; none with one). Order matters to the consumers (raise before clear, offline
before online, flips counted in sequence), so each consumer name is consumed by one process
at a time, the holder of a session-level advisory lock; the others wait, and take over when
it stops or dies (its database session ends, the lock goes with it).

The holder checks its lock connection between fetches; a lost connection (the lock went
with it) stops its consuming until it holds the lock again. A process taking over first
waits ``ack_wait`` if its predecessor left messages unacknowledged, so that they are
redelivered (JetStream delivers redeliveries first) before anything behind them.

SQLite is one host with one writer: no lock (every process consumes, as before).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)


def lock_key(stream: str, consumer: str) -> int:
    """A signed 64-bit advisory-lock key for one durable consumer of one stream."""
    digest = hashlib.sha256(f"chargeops-consumer:{stream}:{consumer}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class ConsumerLease:
    def __init__(self, engine: AsyncEngine, stream: str, consumer: str) -> None:
        self._engine = engine
        self._key = lock_key(stream, consumer)
        self._consumer = consumer
        self._conn: AsyncConnection | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None

    async def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; True when this process holds it."""
        if self._conn is not None:
            return True
        conn = await self._engine.connect()
        try:
            got = (
                await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key})
            ).scalar()
            await conn.commit()  # the lock is the session's, not the transaction's
        except BaseException:
            await _close(conn)
            raise
        if not got:
            await _close(conn)
            return False
        self._conn = conn
        log.info("bus consumer %s: this process consumes it now", self._consumer)
        return True

    async def still_held(self) -> bool:
        """Check the lock's connection; if it is gone, so is the lock."""
        conn = self._conn
        if conn is None:
            return False
        try:
            await conn.execute(text("SELECT 1"))
            await conn.commit()
        except Exception as exc:
            log.warning("bus consumer %s: lost its consumer lock: %s", self._consumer, exc)
            self._conn = None
            await _close(conn)
            return False
        return True

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
            await conn.commit()
        await _close(conn)


async def _close(conn: AsyncConnection) -> None:
    with contextlib.suppress(Exception):
        await conn.close()
