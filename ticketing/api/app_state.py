"""What a route takes from the application state: the database to read, the group
committer to write through (:func:`ticketing.tx.transact`) and the clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from fastapi import Request
from sqlalchemy.engine import Connection

from services.clock import Clock
from services.committer import GroupCommitter
from services.db import Database, read_snapshot
from services.registry import ChargerKnown
from ticketing.tx import transact

T = TypeVar("T")


def db(request: Request) -> Database:
    database: Database = request.app.state.db
    return database


def committer(request: Request) -> GroupCommitter:
    group_committer: GroupCommitter = request.app.state.committer
    return group_committer


def clock(request: Request) -> Clock:
    app_clock: Clock = request.app.state.clock
    return app_clock


def charger_known(request: Request) -> ChargerKnown | None:
    """Whether the charger registry knows a charger (None: not wired, unchecked)."""
    known: ChargerKnown | None = getattr(request.app.state, "charger_known", None)
    return known


def now(request: Request) -> datetime:
    return clock(request).now()


async def read(request: Request, fn: Callable[[Connection], T]) -> T:
    """Run ``fn`` on a read connection of the database, in one snapshot."""
    async with db(request).engine.connect() as conn:
        await read_snapshot(conn)
        return await conn.run_sync(fn)


async def write(request: Request, op: Callable[[Connection], T]) -> T:
    """Run ``op`` in a group-committed transaction; returns once it is durable."""
    return await transact(committer(request), op)
