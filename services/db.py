"""Database engine, sessions and the declarative Base shared by every package.

Decision: timestamps are stored as UTC. SQLite has no time zone type, so ``UTCDateTime``
normalises on the way in and re-attaches UTC on the way out; PostgreSQL uses timestamptz.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import DateTime, MetaData, Table, event, make_url
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.sql import Executable
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def table_of(model: type[Base]) -> Table:
    """The Core ``Table`` of a mapped class (typed, for batched Core statements)."""
    return cast(Table, model.__table__)


class PerDialect:
    """A statement whose form depends on the dialect (``INSERT .. ON CONFLICT`` comes from
    ``sqlalchemy.dialects.postgresql`` or ``.sqlite``), built once per dialect and executed
    with its values as parameters: ``conn.execute(STATEMENT.on(conn), row)``."""

    def __init__(self, build: Callable[[str], Executable]) -> None:
        self._build = build
        self._built: dict[str, Executable] = {}

    def on(self, conn: Connection) -> Executable:
        name = conn.dialect.name
        statement = self._built.get(name)
        if statement is None:  # two threads may both build it: same result either way
            statement = self._built[name] = self._build(name)
        return statement


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(
        self,
        value: datetime | None,
        dialect: Dialect,  # noqa: ARG002
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


#: WAL pages (4 KB) at which a commit checkpoints by itself: the fallback behind the
#: background checkpointer (services/checkpoint.py)
FALLBACK_PAGES = 20000


def _sqlite_pragmas(dbapi_conn: Any, sqlite_synchronous: str) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA synchronous={sqlite_synchronous}")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    # Checkpoints run in the background (services/checkpoint.py); a commit checkpoints
    # itself only if the WAL reaches FALLBACK_PAGES (the background one fell behind).
    # The WAL file is cut back to 64 MB after a checkpoint.
    cur.execute(f"PRAGMA wal_autocheckpoint={FALLBACK_PAGES}")
    cur.execute(f"PRAGMA journal_size_limit={64 * 1024 * 1024}")
    cur.close()


def create_sqlite_writer_engine(url: str, *, sqlite_synchronous: str = "FULL") -> Engine:
    """A synchronous engine on the same SQLite file, for the group committer's thread."""
    sync_url = make_url(url).set(drivername="sqlite")
    engine = sa_create_engine(
        sync_url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=1,
        hide_parameters=True,
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        _sqlite_pragmas(dbapi_conn, sqlite_synchronous)

    return engine


def create_engine(url: str, *, sqlite_synchronous: str = "FULL", echo: bool = False) -> AsyncEngine:
    # Decision: statement parameters are kept out of exception texts and SQL logging
    # (hide_parameters). A failed write is logged with its exception, and the parameters
    # of some writes are secrets stored in clear (a webhook's HMAC key); the statement
    # and the database's reason are still there.
    kwargs: dict[str, Any] = {"echo": echo, "hide_parameters": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs["pool_size"] = 10
        kwargs["max_overflow"] = 20
        kwargs["pool_pre_ping"] = True
    engine = create_async_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            _sqlite_pragmas(dbapi_conn, sqlite_synchronous)

    return engine


async def read_snapshot(conn: AsyncConnection) -> None:
    """Make the reads of ``conn`` until it ends one consistent snapshot (several SELECTs
    of one answer, e.g. an order and its timeline, see the same committed state).

    Call before the first statement. PostgreSQL: REPEATABLE READ (a read-only one never
    fails to serialize). SQLite: an explicit BEGIN (the driver begins none for SELECTs),
    a WAL read transaction; ended by the rollback when the connection is released."""
    if conn.dialect.name == "sqlite":
        await conn.exec_driver_sql("BEGIN")
    else:
        await conn.execution_options(isolation_level="REPEATABLE READ")


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def check_reachable(url: str) -> None:
    """Connect once and run ``SELECT 1``, or raise :class:`DatabaseUnreachable` with one
    line naming the database (password masked) and the driver's reason."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from services.settings import DatabaseUnreachable, masked_url

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (DBAPIError, OSError) as exc:
        reason = str(exc.orig if isinstance(exc, DBAPIError) else exc).strip()
        reason = reason.splitlines()[0] if reason else type(exc).__name__
        raise DatabaseUnreachable(
            f"cannot reach the database at {masked_url(url)}: {reason}"
        ) from None
    finally:
        await engine.dispose()


class Database:
    """The engine and session factory of one process."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL") -> None:
        self.url = url
        self.sqlite_synchronous = sqlite_synchronous
        self.engine = create_engine(url, sqlite_synchronous=sqlite_synchronous)
        self.sessions = session_factory(self.engine)

    def writer_engine(self) -> Engine | None:
        """For SQLite, a synchronous engine for the group committer's writer thread (and
        another for the WAL checkpointer)."""
        if self.dialect != "sqlite":
            return None
        return create_sqlite_writer_engine(self.url, sqlite_synchronous=self.sqlite_synchronous)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    async def ping(self) -> None:
        from sqlalchemy import text

        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
