"""Group commit against a real database (SQLite, and PostgreSQL when it answers).

The data-safety property: write sets of many callers share one transaction, yet a write
set that cannot commit fails only its own caller; every other caller's writes commit,
and nothing of the failed write set is left half-written.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from csms.state import CHARGER_STATE, MESSAGE_LOG, TRANSACTIONS
from csms.state import log_row as state_log_row
from csms.tables import Charger
from services.committer import GroupCommitter, WriteSet
from services.db import Database, table_of
from services.observability.metrics import REGISTRY
from tests.conftest import eventually

CHARGERS = table_of(Charger)
AT = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


@pytest.fixture
async def committer(db: Database) -> AsyncIterator[GroupCommitter]:
    c = GroupCommitter(db.engine, sync_engine=db.writer_engine())
    try:
        yield c
    finally:
        await c.close()


def charger(charger_id: str) -> dict[str, Any]:
    return {
        "id": charger_id,
        "password_hash": None,
        "security_profile": 1,
        "registration_status": "accepted",
        "site": None,
        "vendor": None,
        "model": None,
        "notes": None,
        "enabled": True,
        "created_at": AT,
        "updated_at": AT,
    }


def log_row(marker: str) -> dict[str, Any]:
    return state_log_row("CP", "in", 2, "Heartbeat", marker, "[]", AT)


def tx_row(dedupe_key: str, id_token: str) -> dict[str, Any]:
    return {
        "dedupe_key": dedupe_key,
        "transaction_id": dedupe_key,
        "charger_id": "CP",
        "connector_key": "1",
        "id_token": id_token,
        "meter_start_wh": None,
        "meter_stop_wh": None,
        "started_at": AT,
        "stopped_at": None,
        "stop_reason": None,
        "received_at": AT,
    }


async def in_one_batch(committer: GroupCommitter, *write_sets: WriteSet) -> list[Any]:
    """Queue every write set first, then start the committer: they form one batch."""
    tasks = [asyncio.create_task(committer.commit(ws)) for ws in write_sets]
    for _ in range(3):
        await asyncio.sleep(0)
    committer.start()
    return await asyncio.gather(*tasks, return_exceptions=True)


async def logged_markers(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        return set((await conn.execute(select(MESSAGE_LOG.c.message_id))).scalars())


def failures() -> float:
    return REGISTRY.get_sample_value("chargeops_db_commit_failures_total") or 0.0


async def test_a_bad_write_set_fails_alone(db: Database, committer: GroupCommitter) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(CHARGERS.insert(), [charger("CP-DUP")])
    before = failures()

    good_a = WriteSet()
    good_a.insert(CHARGERS, charger("CP-A"))
    good_a.insert(MESSAGE_LOG, log_row("a"))

    duplicate = WriteSet()  # its log row must not survive its failed charger row
    duplicate.insert(MESSAGE_LOG, log_row("dup"))
    duplicate.insert(CHARGERS, charger("CP-DUP"))

    good_c = WriteSet()
    good_c.insert(MESSAGE_LOG, log_row("c"))
    good_c.upsert(CHARGER_STATE, {"charger_id": "CP-DUP", "vendor": "V"})

    def explode(_conn: Connection) -> None:
        raise RuntimeError("operation failed")

    failing_op = WriteSet()
    failing_op.insert(MESSAGE_LOG, log_row("op"))
    failing_op.then(explode)

    def count_chargers(conn: Connection) -> int:
        return len(conn.execute(select(CHARGERS.c.id)).all())

    good_e = WriteSet()
    good_e.insert(MESSAGE_LOG, log_row("e"))
    good_e.then(count_chargers)

    results = await in_one_batch(committer, good_a, duplicate, good_c, failing_op, good_e)

    assert results[0] == []
    assert isinstance(results[1], IntegrityError)
    assert results[2] == []
    assert isinstance(results[3], RuntimeError)
    assert results[4] == [2]  # CP-DUP and CP-A, seen from good_e's own transaction
    assert await logged_markers(db) == {"a", "c", "e"}
    async with db.engine.connect() as conn:
        ids = set((await conn.execute(select(CHARGERS.c.id))).scalars())
        vendor = (
            await conn.execute(
                select(CHARGER_STATE.c.vendor).where(CHARGER_STATE.c.charger_id == "CP-DUP")
            )
        ).scalar()
    assert ids == {"CP-DUP", "CP-A"}
    assert vendor == "V"
    assert failures() - before == 2


async def test_fire_and_forget_writes_commit_despite_a_failing_neighbour(
    db: Database, committer: GroupCommitter
) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(CHARGERS.insert(), [charger("CP-DUP")])
    submitted = WriteSet()
    submitted.insert(MESSAGE_LOG, log_row("submitted"))
    committer.submit(submitted)
    duplicate = WriteSet()
    duplicate.insert(CHARGERS, charger("CP-DUP"))
    [result] = await in_one_batch(committer, duplicate)
    assert isinstance(result, IntegrityError)

    async def logged() -> bool:
        return "submitted" in await logged_markers(db)

    await eventually(logged)


async def test_upserts_coalesce_per_key_last_wins(db: Database, committer: GroupCommitter) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(CHARGERS.insert(), [charger("CP-U"), charger("CP-V")])
    first, second, other = WriteSet(), WriteSet(), WriteSet()
    first.upsert(CHARGER_STATE, {"charger_id": "CP-U", "vendor": "V1", "model": "M1"})
    second.upsert(CHARGER_STATE, {"charger_id": "CP-U", "vendor": "V2", "model": "M2"})
    other.upsert(CHARGER_STATE, {"charger_id": "CP-V", "vendor": "W", "model": "N"})
    assert await in_one_batch(committer, first, second, other) == [[], [], []]

    # Only the given columns are updated; the others keep their value.
    partial = WriteSet()
    partial.upsert(CHARGER_STATE, {"charger_id": "CP-U", "firmware_version": "2.0"})
    # Only the key: an existing row is left alone.
    key_only = WriteSet()
    key_only.upsert(CHARGER_STATE, {"charger_id": "CP-V"})
    await asyncio.gather(committer.commit(partial), committer.commit(key_only))

    async with db.engine.connect() as conn:
        rows = {
            r.charger_id: (r.vendor, r.model, r.firmware_version)
            for r in await conn.execute(select(CHARGER_STATE))
        }
    assert rows == {"CP-U": ("V2", "M2", "2.0"), "CP-V": ("W", "N", None)}


async def test_insert_ignore_skips_duplicates(db: Database, committer: GroupCommitter) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(TRANSACTIONS.insert(), [tx_row("k1", "first")])
    retry, new, new_again = WriteSet(), WriteSet(), WriteSet()
    retry.insert_ignore(TRANSACTIONS, tx_row("k1", "second"))
    new.insert_ignore(TRANSACTIONS, tx_row("k2", "one"))
    new_again.insert_ignore(TRANSACTIONS, tx_row("k2", "two"))
    assert await in_one_batch(committer, retry, new, new_again) == [[], [], []]
    # And across batches.
    later = WriteSet()
    later.insert_ignore(TRANSACTIONS, tx_row("k2", "three"))
    assert await committer.commit(later) == []

    async with db.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(TRANSACTIONS.c.dedupe_key, TRANSACTIONS.c.id_token).order_by(
                    TRANSACTIONS.c.dedupe_key
                )
            )
        ).all()
    assert [tuple(r) for r in rows] == [("k1", "first"), ("k2", "one")]


async def test_operations_run_after_rows_and_return_results(
    db: Database, committer: GroupCommitter
) -> None:
    committer.start()
    writes = WriteSet()
    writes.insert(MESSAGE_LOG, log_row("x"))

    def read_back(conn: Connection) -> str | None:
        row: str | None = conn.execute(
            select(MESSAGE_LOG.c.message_id).where(MESSAGE_LOG.c.message_id == "x")
        ).scalar()
        return row

    def constant(_conn: Connection) -> int:
        return 7

    writes.then(read_back)
    writes.then(constant)
    assert await committer.commit(writes) == ["x", 7]
    assert await logged_markers(db) == {"x"}


async def test_background_write_sets_commit_after_the_others_queued_with_them(
    db: Database, committer: GroupCommitter
) -> None:
    """A background write set (a bus consumer's work) queued first still lets the
    write sets queued with it commit first, in a transaction of their own: a charger's
    answer does not wait for the consumer's operations."""
    done: list[str] = []
    background = logged("bg")
    background.then(lambda conn: sorted(conn.execute(select(MESSAGE_LOG.c.message_id)).scalars()))
    tasks = {
        "bg": asyncio.create_task(committer.commit(background, background=True)),
        "fg": asyncio.create_task(committer.commit(logged("fg"))),
    }
    for name, task in tasks.items():
        task.add_done_callback(lambda _task, name=name: done.append(name))
    for _ in range(3):  # both queued before the committer looks: one batch
        await asyncio.sleep(0)
    committer.start()
    assert await tasks["bg"] == [["bg", "fg"]]
    await tasks["fg"]
    assert done == ["fg", "bg"]
    assert await logged_markers(db) == {"bg", "fg"}


@pytest.fixture
async def slow_deferring(db: Database) -> AsyncIterator[GroupCommitter]:
    """Deferred writes wait a minute here, so only flush() or close() commit them."""
    c = GroupCommitter(db.engine, sync_engine=db.writer_engine(), defer_interval=60.0)
    c.start()
    try:
        yield c
    finally:
        await c.close()


def logged(marker: str) -> WriteSet:
    writes = WriteSet()
    writes.insert(MESSAGE_LOG, log_row(marker))
    return writes


async def test_submitted_writes_wait_for_their_interval_not_the_next_commit(
    db: Database, slow_deferring: GroupCommitter
) -> None:
    slow_deferring.submit(logged("deferred-1"))
    slow_deferring.submit(logged("deferred-2"))
    await slow_deferring.commit(logged("awaited"))
    assert await logged_markers(db) == {"awaited"}
    await slow_deferring.flush()
    assert await logged_markers(db) == {"awaited", "deferred-1", "deferred-2"}


async def test_queued_deferred_writes_commit_before_the_next_commit(
    slow_deferring: GroupCommitter,
) -> None:
    """What a disconnect relies on: an older deferred last-seen write must not land after
    the disconnect's newer one."""
    slow_deferring.submit(logged("deferred"))
    slow_deferring.queue_deferred()
    seen: list[set[str]] = []
    writes = logged("awaited")
    writes.then(lambda conn: seen.append(_markers_in(conn)))
    await slow_deferring.commit(writes)
    assert seen == [{"deferred", "awaited"}]


def _markers_in(conn: Connection) -> set[str]:
    return set(conn.execute(select(MESSAGE_LOG.c.message_id)).scalars())


async def test_a_bad_deferred_write_set_fails_alone(
    db: Database, slow_deferring: GroupCommitter
) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(CHARGERS.insert(), [charger("CP-DEF")])
    bad = WriteSet()
    bad.insert(CHARGERS, charger("CP-DEF"))
    before = failures()
    slow_deferring.submit(logged("before-bad"))
    slow_deferring.submit(bad)
    slow_deferring.submit(logged("after-bad"))
    await slow_deferring.flush()
    assert await logged_markers(db) == {"before-bad", "after-bad"}
    assert failures() - before == 1


async def test_close_commits_deferred_writes(db: Database) -> None:
    c = GroupCommitter(db.engine, sync_engine=db.writer_engine(), defer_interval=60.0)
    c.start()
    c.submit(logged("at-close"))
    await c.close()
    assert await logged_markers(db) == {"at-close"}


async def test_deferred_writes_commit_on_their_own_after_the_interval(
    db: Database, committer: GroupCommitter
) -> None:
    committer.start()
    committer.submit(logged("timer"))

    async def present() -> bool:
        return "timer" in await logged_markers(db)

    await eventually(present)


async def test_a_bad_deferred_row_fails_alone(db: Database, slow_deferring: GroupCommitter) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(CHARGERS.insert(), [charger("CP-ROW")])
    before = failures()
    slow_deferring.submit_insert(MESSAGE_LOG, log_row("row-1"))
    slow_deferring.submit_insert(CHARGERS, charger("CP-ROW"))
    slow_deferring.submit(logged("set-1"))
    slow_deferring.submit_insert(MESSAGE_LOG, log_row("row-2"))
    await slow_deferring.flush()
    assert await logged_markers(db) == {"row-1", "row-2", "set-1"}
    assert failures() - before == 1


async def test_commit_queue_gauge_counts_write_sets_waiting_behind_a_stuck_commit(
    db: Database, committer: GroupCommitter
) -> None:
    """chargeops_db_commit_queue is what ChargeOpsCommitQueueBacklog watches: while one
    commit hangs, the write sets queued behind it must show, not the length the queue had
    when that commit began."""
    async with stuck(db) as writes:
        committer.start()
        first = asyncio.create_task(committer.commit(writes))
        await asyncio.sleep(0)  # queued
        await eventually(taken)  # and taken by the committer, which hangs on it
        waiting = [asyncio.create_task(committer.commit(logged(f"w{i}"))) for i in range(5)]
        await asyncio.sleep(0)
        assert queued() == 5
    await asyncio.gather(first, *waiting)
    assert queued() == 0
    assert await logged_markers(db) == {"stuck", *(f"w{i}" for i in range(5))}


def queued() -> float | None:
    return REGISTRY.get_sample_value("chargeops_db_commit_queue")


async def taken() -> bool:
    return queued() == 0


@contextlib.asynccontextmanager
async def stuck(db: Database) -> AsyncIterator[WriteSet]:
    """A write set whose commit hangs until the block ends. SQLite: an operation that
    waits (it runs on the writer thread). PostgreSQL (operations run on the event loop):
    another connection locks the message log."""
    writes = logged("stuck")
    if db.dialect == "sqlite":
        release = threading.Event()
        writes.then(lambda _conn: release.wait(30))
        try:
            yield writes
        finally:
            release.set()
        return
    async with db.engine.connect() as pg:
        await pg.execute(text(f"LOCK TABLE {MESSAGE_LOG.name} IN EXCLUSIVE MODE"))
        try:
            yield writes
        finally:
            await pg.rollback()
