"""Which process consumes a durable NATS consumer: one at a time, by a lock in the database.

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

PostgreSQL: a session-level advisory lock (:class:`ConsumerLease`). SQLite (the NATS bus
with a SQLite file, every process on the host that holds the file): an exclusive ``flock``
on a file beside the database (:class:`FileLease`); the kernel releases it when its holder
dies. Decision: a lock rather than refusing that combination at start, because SQLite runs
several processes on one file (WAL, busy timeout) and the processes of one database then
are on one host by construction, where a file lock is as safe as the advisory lock; before
it, every process consumed and one charger's events were applied out of order, as they
were on PostgreSQL before its lock. An in-memory SQLite database is one process: no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)


class Lease(Protocol):
    """One process at a time holds it (see the module notes)."""

    @property
    def held(self) -> bool: ...

    async def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; True when this process holds it."""
        ...

    async def still_held(self) -> bool:
        """False once the lock was lost (and forgotten here)."""
        ...

    async def release(self) -> None: ...


def lease_for(engine: AsyncEngine, stream: str, consumer: str) -> Lease | None:
    """The lock that makes one process at a time consume ``consumer`` on this database."""
    if engine.dialect.name == "postgresql":
        return ConsumerLease(engine, stream, consumer)
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:") and "mode=memory" in database:
        return None
    key = lock_key(stream, consumer) & 0xFFFF_FFFF_FFFF_FFFF
    return FileLease(f"{database}-consumer-{key:016x}.lock", consumer)


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


class FileLease:
    """An exclusive ``flock`` on ``path`` (created if missing), held while the file is open.

    ``flock`` locks belong to the open file, so two leases in one process exclude each
    other too; the kernel drops the lock when the holder's process ends, however it ends."""

    def __init__(self, path: str, consumer: str) -> None:
        self.path = path
        self._consumer = consumer
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    async def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        log.info("bus consumer %s: this process consumes it now", self._consumer)
        return True

    async def still_held(self) -> bool:
        """Held unless the lock file was removed or replaced meanwhile (another process would
        then lock a new file under the same name)."""
        fd = self._fd
        if fd is None:
            return False
        try:
            same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except OSError:
            same = False
        if not same:
            log.warning(
                "bus consumer %s: its lock file %s was removed or replaced",
                self._consumer,
                self.path,
            )
            await self.release()
        return same

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # the lock goes with the last descriptor of the open file
