"""Group commit: many callers' writes share one transaction.

Decision (see PERFORMANCE.md): one SQLite commit per frame caps the server at a few
thousand frames/s; batching up to ``batch_size`` write sets per transaction keeps every
write durable before the caller is answered while paying one fsync per batch.

A caller builds a :class:`WriteSet` (plain inserts that can be executed as one
``executemany`` per table, plus ordered operations that need a connection) and awaits
:meth:`GroupCommitter.commit`; it returns after the transaction holding it committed.
If a batch fails, its write sets are retried one by one so that one bad write set
fails alone and loses no other caller's data.

Writes nobody waits for (the raw frame log, consumer cursors, last-seen times) are
*deferred* with :meth:`GroupCommitter.submit`: they are gathered for up to
``defer_interval`` seconds and committed together, in the next batch after that.
Decision (measured, tests/bench/README.md): a row in a table indexed per charger costs
the writer a random B-tree leaf written to the WAL; rows of the same charger gathered
over 0.1 s share that leaf, while one row per frame in every commit made the raw log
the writer's most expensive table. What a charger is answered on (events, state,
status history) never waits for this: it is committed before the answer.
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
RowReader = Callable[[dict[str, Any]], tuple[Any, ...]]


@dataclass(slots=True)
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


@dataclass(slots=True)
class _Pending:
    writes: WriteSet
    future: asyncio.Future[list[Any]] | None
    #: for gathered deferred writes: the write sets and single rows merged into
    #: ``writes``, retried one by one if the merged set fails
    parts: list[WriteSet] | None = None
    rows: list[tuple[Table, dict[str, Any]]] | None = None
    #: committed after the others queued with it, in a transaction of its own
    background: bool = False


_STOP = _Pending(WriteSet(), None)


def _row_reader(table: Table, names: list[str], given: tuple[str, ...]) -> RowReader:
    """A function turning a row dict into the driver's parameter tuple for ``names``.

    Columns the row leaves out take their scalar default; UTC datetime columns are
    converted as ``UTCDateTime`` would. Decision: generated once per row shape as one
    tuple expression, since building parameters item by item was a fifth of the writer
    thread's time."""
    scope: dict[str, Any] = {"_dt": _sqlite_datetime}
    items: list[str] = []
    for i, name in enumerate(names):
        column = table.c[name]
        if name not in given:
            default = column.default
            if default is None or not default.is_scalar:
                raise RuntimeError(f"{table.name}.{name} has no scalar default to fill in")
            scope[f"_d{i}"] = default.arg  # type: ignore[attr-defined]
            items.append(f"_d{i}")
        elif isinstance(column.type, UTCDateTime):
            items.append(f"_dt(row[{name!r}])")
        else:
            items.append(f"row[{name!r}]")
    source = f"lambda row: ({', '.join(items)}{',' if len(items) == 1 else ''})"
    reader: RowReader = eval(source, scope)  # noqa: S307 - built from column names only
    return reader


def _sqlite_datetime(value: datetime | None) -> str | None:
    """A UTC datetime as SQLAlchemy stores it in SQLite (see ``services.db.UTCDateTime``)."""
    if value is None:
        return None
    if value.tzinfo is UTC:
        # isoformat is several times cheaper than strftime; its "+00:00" is cut off
        return value.isoformat(" ", "microseconds")[:26]
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


class CommitterClosed(RuntimeError):
    pass


class GroupCommitter:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        batch_size: int = 200,
        sync_engine: Engine | None = None,
        defer_interval: float = 0.1,
        defer_max: int = 5000,
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
        self._defer_interval = defer_interval
        self._defer_max = defer_max
        self._deferred: list[WriteSet] = []
        self._deferred_rows: list[tuple[Table, dict[str, Any]]] = []
        self._defer_timer: asyncio.TimerHandle | None = None

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    def on_commit(self, hook: CommitHook) -> None:
        self._hooks.append(hook)

    def start(self) -> None:
        if self._task is None:
            # Read when scraped: a value set by the loop would freeze while a commit hangs,
            # which is when the write sets queued behind it matter (one committer a process).
            metrics.COMMIT_QUEUE.set_function(self._queue.qsize)
            self._task = asyncio.create_task(self._run(), name="group-committer")

    async def commit(self, writes: WriteSet, *, background: bool = False) -> list[Any]:
        """Durably commit ``writes``; returns the results of its operations.

        ``background``: nobody outside waits on it (a bus consumer's work, not a charger's
        answer or an HTTP request), so the write sets queued with it are committed first,
        without waiting for its operations to run."""
        if self._closed:
            raise CommitterClosed("the committer is closed")
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(writes, future, background=background))
        return await future

    def submit(self, writes: WriteSet) -> None:
        """Commit ``writes`` without anyone waiting: gathered with other deferred writes
        and committed within ``defer_interval`` (at once when ``defer_interval`` is 0 or
        ``defer_max`` write sets are waiting). For writes whose loss in a crash costs
        nothing an operator acts on: the raw frame log, cursors, last-seen times."""
        if self._closed or not writes:
            return
        self._deferred.append(writes)
        self._deferred_added()

    def submit_insert(self, table: Table, row: dict[str, Any]) -> None:
        """:meth:`submit` of a write set holding just this row (one per frame in the raw
        log, so without building a write set for each)."""
        if self._closed:
            return
        self._deferred_rows.append((table, row))
        self._deferred_added()

    def _deferred_added(self) -> None:
        waiting = len(self._deferred) + len(self._deferred_rows)
        if self._defer_interval <= 0 or waiting >= self._defer_max:
            self._flush_deferred()
        elif self._defer_timer is None:
            self._defer_timer = asyncio.get_running_loop().call_later(
                self._defer_interval, self._flush_deferred
            )

    async def flush(self) -> None:
        """Return once everything submitted so far is committed (e.g. before reading the
        raw log back)."""
        self._flush_deferred()
        if not self._closed:
            await self.commit(WriteSet())

    def queue_deferred(self) -> None:
        """Queue the deferred writes now, ahead of whatever is committed next (for a write
        that must not be overwritten by an older deferred one)."""
        if not self._closed:
            self._flush_deferred()

    def _flush_deferred(self) -> None:
        if self._defer_timer is not None:
            self._defer_timer.cancel()
            self._defer_timer = None
        if not self._deferred and not self._deferred_rows:
            return
        parts, self._deferred = self._deferred, []
        rows, self._deferred_rows = self._deferred_rows, []
        merged = WriteSet(inserts=list(rows))
        for part in parts:
            merged.extend(part)
        self._queue.put_nowait(_Pending(merged, None, parts, rows))

    async def close(self) -> None:
        """Commit everything queued so far, then stop (later commits are refused)."""
        if self._closed:
            return
        self._flush_deferred()
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
            stop = any(p is _STOP for p in batch)
            batch = [p for p in batch if p is not _STOP]
            waiting = [p for p in batch if not p.background]
            if waiting and len(waiting) < len(batch):
                # Decision: background operations (the work-order intake's, up to its CPU
                # budget each) ran in the same transaction as chargers' rows, which then
                # waited for them; now those rows commit first, at the price of one more
                # commit whenever both kinds are queued.
                await self._commit_batch(waiting)
                batch = [p for p in batch if p.background]
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
        for pending in self._one_by_one(batch):
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

    @staticmethod
    def _one_by_one(batch: list[_Pending]) -> list[_Pending]:
        """The batch as single write sets: deferred writes split back into their parts."""
        single: list[_Pending] = []
        for pending in batch:
            if pending.parts is None and pending.rows is None:
                single.append(pending)
                continue
            single.extend(_Pending(part, None) for part in pending.parts or ())
            single.extend(_Pending(WriteSet(inserts=[row]), None) for row in pending.rows or ())
        return single

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
            sql, read = self._sqlite_sql(conn, kind, table, columns)
            conn.exec_driver_sql(sql, list(map(read, group)))

    def _sqlite_sql(
        self, conn: Connection, kind: str, table: Table, columns: tuple[str, ...]
    ) -> tuple[str, RowReader]:
        key = ("sqlite-sql", kind, table, columns)
        cached = self._statements.get(key)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        if kind == "insert":
            stmt: Any = table.insert()
        else:
            stmt = self._statement(kind, "sqlite", table, tuple(sorted(columns)))
        compiled = stmt.values({c: bindparam(c) for c in columns}).compile(dialect=conn.dialect)
        reader = _row_reader(table, list(compiled.positiontup or ()), columns)
        result = (compiled.string, reader)
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
