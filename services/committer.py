"""Group commit: many callers' writes share one transaction.

Decision (see PERFORMANCE.md): one SQLite commit per frame caps the server at a few
thousand frames/s; batching up to ``batch_size`` write sets per transaction keeps every
write durable before the caller is answered while paying one fsync per batch.

A caller builds a :class:`WriteSet` (plain inserts that can be executed as one
``executemany`` per table, plus ordered operations that need a connection) and awaits
:meth:`GroupCommitter.commit`; it returns after the transaction holding it committed.
If a batch fails, its write sets are retried one by one so that one bad write set
fails alone and loses no other caller's data.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, bindparam
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from services.db import UTCDateTime
from services.observability import metrics

log = logging.getLogger(__name__)

#: A write that needs the connection (reads its own writes, returns a value). Synchronous:
#: it runs inside the batch's transaction, on the writer thread for SQLite.
Operation = Callable[[Connection], Any]
CommitHook = Callable[[], None]


@dataclass
class WriteSet:
    """Writes that must become durable together.

    ``insert``: plain rows, one ``executemany`` per table in a batch.
    ``insert_ignore``: rows skipped when their unique key exists (content de-duplication).
    ``upsert``: rows keyed by primary key; within a batch the last one per key wins, and
    only the given columns are updated.
    ``then``: an operation on the connection, run in order after the rows above.
    """

    inserts: list[tuple[Table, dict[str, Any]]] = field(default_factory=list)
    ignores: list[tuple[Table, dict[str, Any]]] = field(default_factory=list)
    upserts: list[tuple[Table, dict[str, Any]]] = field(default_factory=list)
    operations: list[Operation] = field(default_factory=list)

    def insert(self, table: Table, row: dict[str, Any]) -> None:
        self.inserts.append((table, row))

    def insert_ignore(self, table: Table, row: dict[str, Any]) -> None:
        self.ignores.append((table, row))

    def upsert(self, table: Table, row: dict[str, Any]) -> None:
        self.upserts.append((table, row))

    def then(self, operation: Operation) -> None:
        self.operations.append(operation)

    def extend(self, other: WriteSet) -> None:
        self.inserts.extend(other.inserts)
        self.ignores.extend(other.ignores)
        self.upserts.extend(other.upserts)
        self.operations.extend(other.operations)

    def __bool__(self) -> bool:
        return bool(self.inserts or self.ignores or self.upserts or self.operations)


@dataclass
class _Pending:
    writes: WriteSet
    future: asyncio.Future[list[Any]] | None


_STOP = _Pending(WriteSet(), None)


def _getter(table: Table, name: str, given: bool) -> Callable[[dict[str, Any]], Any]:
    """How to read one driver parameter from a row: its value (converted for UTC datetime
    columns) or, for a column the row leaves out, the column's scalar default."""
    column = table.c[name]
    if not given:
        default = column.default
        if default is None or not default.is_scalar:
            raise RuntimeError(f"{table.name}.{name} has no scalar default to fill in")
        value = default.arg  # type: ignore[attr-defined]
        return lambda _row: value
    if isinstance(column.type, UTCDateTime):
        return lambda row: _sqlite_datetime(row[name])
    return lambda row: row[name]


def _sqlite_datetime(value: datetime | None) -> str | None:
    """A UTC datetime as SQLAlchemy stores it in SQLite (see ``services.db.UTCDateTime``)."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    # isoformat is several times cheaper than strftime and yields the same text.
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


class CommitterClosed(RuntimeError):
    pass


class GroupCommitter:
    def __init__(
        self, engine: AsyncEngine, *, batch_size: int = 200, sync_engine: Engine | None = None
    ) -> None:
        self._engine = engine
        self._sync_engine = sync_engine
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db-writer")
        self._batch_size = batch_size
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._hooks: list[CommitHook] = []
        self._closed = False
        self._statements: dict[tuple[str, str, Table, tuple[str, ...]], Any] = {}

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    def on_commit(self, hook: CommitHook) -> None:
        self._hooks.append(hook)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="group-committer")

    async def commit(self, writes: WriteSet) -> list[Any]:
        """Durably commit ``writes``; returns the results of its operations."""
        if self._closed:
            raise CommitterClosed("the committer is closed")
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(writes, future))
        metrics.COMMIT_QUEUE.set(self._queue.qsize())
        return await future

    def submit(self, writes: WriteSet) -> None:
        """Queue ``writes`` for the next batch without waiting (e.g. outgoing frame log)."""
        if not self._closed:
            self._queue.put_nowait(_Pending(writes, None))

    async def close(self) -> None:
        """Commit everything queued so far, then stop (later commits are refused)."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._queue.put_nowait(_STOP)
            await self._task
            self._task = None
        self._writer.shutdown(wait=True)
        if self._sync_engine is not None:
            self._sync_engine.dispose()

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            while len(batch) < self._batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            metrics.COMMIT_QUEUE.set(self._queue.qsize())
            stop = any(p is _STOP for p in batch)
            batch = [p for p in batch if p is not _STOP]
            if batch:
                await self._commit_batch(batch)
            if stop:
                return

    async def _commit_batch(self, batch: list[_Pending]) -> None:
        with metrics.COMMIT_SECONDS.time():
            try:
                results = await self._execute(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("batch of %d write sets failed; retrying one by one", len(batch))
                results = None
        if results is not None:
            metrics.COMMIT_BATCH_SIZE.observe(len(batch))
            self._after_commit()
            for pending, result in zip(batch, results, strict=True):
                if pending.future is not None and not pending.future.done():
                    pending.future.set_result(result)
            return
        for pending in batch:
            try:
                (result,) = await self._execute([pending])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("write set failed")
                metrics.COMMIT_FAILURES.inc()
                if pending.future is not None and not pending.future.done():
                    pending.future.set_exception(exc)
                continue
            self._after_commit()
            if pending.future is not None and not pending.future.done():
                pending.future.set_result(result)

    async def _execute(self, batch: list[_Pending]) -> list[list[Any]]:
        """Run one transaction for ``batch``.

        Decision: on SQLite the whole transaction runs in one call on a dedicated writer
        thread with a synchronous connection, instead of one thread hop per statement
        through aiosqlite: the event loop waits once per batch, and SQLite's C work runs
        beside it. On PostgreSQL it runs on the asyncpg connection (``run_sync``)."""
        if self._sync_engine is not None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._writer, self._execute_in_thread, batch)
        async with self._engine.begin() as conn:
            return await conn.run_sync(self._execute_sync, batch)

    def _execute_in_thread(self, batch: list[_Pending]) -> list[list[Any]]:
        assert self._sync_engine is not None
        with self._sync_engine.begin() as conn:
            return self._execute_sync(conn, batch)

    def _execute_sync(self, conn: Connection, batch: list[_Pending]) -> list[list[Any]]:
        inserts: dict[Table, list[dict[str, Any]]] = {}
        ignores: dict[Table, list[dict[str, Any]]] = {}
        upserts: dict[tuple[Table, tuple[str, ...]], dict[tuple[Any, ...], dict[str, Any]]] = {}
        for pending in batch:
            for table, row in pending.writes.inserts:
                inserts.setdefault(table, []).append(row)
            for table, row in pending.writes.ignores:
                ignores.setdefault(table, []).append(row)
            for table, row in pending.writes.upserts:
                pk = tuple(row[c.name] for c in table.primary_key.columns)
                upserts.setdefault((table, tuple(sorted(row))), {})[pk] = row
        dialect = conn.dialect.name
        if dialect == "sqlite":
            for table, rows in inserts.items():
                self._sqlite_many(conn, "insert", table, rows)
            for table, rows in ignores.items():
                self._sqlite_many(conn, "ignore", table, rows)
            for (table, _columns), by_key in upserts.items():
                self._sqlite_many(conn, "upsert", table, list(by_key.values()))
        else:
            for table, rows in inserts.items():
                conn.execute(table.insert(), rows)
            for table, rows in ignores.items():
                conn.execute(self._statement("ignore", dialect, table, ()), rows)
            for (table, columns), by_key in upserts.items():
                stmt = self._statement("upsert", dialect, table, columns)
                conn.execute(stmt, list(by_key.values()))
        return [[op(conn) for op in pending.writes.operations] for pending in batch]

    def _sqlite_many(
        self, conn: Connection, kind: str, table: Table, rows: list[dict[str, Any]]
    ) -> None:
        """executemany straight to the driver, with SQL compiled once per row shape.

        Decision: SQLAlchemy's per-row parameter processing was a tenth of the server's
        time under load; rows here are plain values, and the only conversion needed is
        the one ``UTCDateTime`` does (UTC text in SQLAlchemy's own SQLite format)."""
        by_shape: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in rows:
            by_shape.setdefault(tuple(row), []).append(row)
        for columns, group in by_shape.items():
            sql, getters = self._sqlite_sql(conn, kind, table, columns)
            params = [tuple(get(row) for get in getters) for row in group]
            conn.exec_driver_sql(sql, params)

    def _sqlite_sql(
        self, conn: Connection, kind: str, table: Table, columns: tuple[str, ...]
    ) -> tuple[str, list[Callable[[dict[str, Any]], Any]]]:
        key = ("sqlite-sql", kind, table, columns)
        cached = self._statements.get(key)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        if kind == "insert":
            stmt: Any = table.insert()
        else:
            stmt = self._statement(kind, "sqlite", table, tuple(sorted(columns)))
        compiled = stmt.values({c: bindparam(c) for c in columns}).compile(dialect=conn.dialect)
        getters: list[Callable[[dict[str, Any]], Any]] = []
        for name in compiled.positiontup or ():
            getters.append(_getter(table, name, name in columns))
        result = (compiled.string, getters)
        self._statements[key] = result
        return result

    def _statement(self, kind: str, dialect: str, table: Table, columns: tuple[str, ...]) -> Any:
        """INSERT .. ON CONFLICT statements, built once per shape (building them is costly)."""
        key = (kind, dialect, table, columns)
        stmt = self._statements.get(key)
        if stmt is not None:
            return stmt
        insert = (pg_insert if dialect == "postgresql" else sqlite_insert)(table)
        keys = [c.name for c in table.primary_key.columns]
        update = {c: insert.excluded[c] for c in columns if c not in keys}
        if kind == "upsert" and update:
            stmt = insert.on_conflict_do_update(index_elements=keys, set_=update)
        else:
            stmt = insert.on_conflict_do_nothing()
        self._statements[key] = stmt
        return stmt

    def _after_commit(self) -> None:
        for hook in self._hooks:
            try:
                hook()
            except Exception:
                log.exception("commit hook failed")
