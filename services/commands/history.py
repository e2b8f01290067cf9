"""Reading the command log: one command, a charger's commands, a work order's commands.

A command without an outcome long after its timeout (:data:`ABANDONED_AFTER_S`) is read
as outcome ``error`` (:data:`ABANDONED_DETAIL`): the process that sent it ended before it
could record what became of it (no live process waits that long: the bus gives up at the
timeout plus a few seconds' grace), so it is no longer in flight.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, select

from services.commands.contracts import CommandRecord, ProgressEntry
from services.commands.tables import CommandLogEntry
from services.db import Database, table_of

COMMAND_LOG = table_of(CommandLogEntry)

ABANDONED_AFTER_S = 120.0
ABANDONED_DETAIL = (
    "no outcome recorded: the process that sent it ended before the charger's answer "
    "(the charger may have received it)"
)


def _record(row: Any, now: datetime | None = None) -> CommandRecord:
    outcome, detail = row.outcome, row.detail
    if (
        outcome is None
        and now is not None
        and now > row.requested_at + timedelta(seconds=row.timeout_s + ABANDONED_AFTER_S)
    ):
        outcome, detail = "error", ABANDONED_DETAIL
    return CommandRecord(
        command_id=row.command_id,
        charger_id=row.charger_id,
        name=row.name,
        params=row.params or {},
        requested_by=row.requested_by,
        order_id=row.order_id,
        requested_at=row.requested_at,
        timeout_s=row.timeout_s,
        forbid_during_transaction=row.forbid_during_transaction,
        request_id=row.request_id,
        outcome=outcome,
        status=row.status,
        response=row.response,
        detail=detail,
        node_id=row.node_id,
        sent_at=row.sent_at,
        answered_at=row.answered_at,
        duration_ms=row.duration_ms,
        progress=[ProgressEntry.model_validate(p) for p in row.progress or []],
        progress_status=row.progress_status,
        progress_at=row.progress_at,
    )


async def get_command(
    db: Database, command_id: str, now: datetime | None = None
) -> CommandRecord | None:
    async with db.engine.connect() as conn:
        row = (
            await conn.execute(select(COMMAND_LOG).where(COMMAND_LOG.c.command_id == command_id))
        ).first()
    return _record(row, now) if row is not None else None


async def list_commands(
    db: Database,
    *,
    charger_id: str | None = None,
    order_id: int | None = None,
    name: str | None = None,
    limit: int = 100,
    before: int | None = None,
    now: datetime | None = None,
) -> tuple[list[CommandRecord], int | None]:
    """Commands newest first, filtered; returns a page and the cursor of the next one
    (pass it as ``before``), None on the last page. ``now``: read abandoned commands as
    such (see the module)."""
    query: Select[Any] = select(COMMAND_LOG).order_by(COMMAND_LOG.c.id.desc()).limit(limit + 1)
    if charger_id is not None:
        query = query.where(COMMAND_LOG.c.charger_id == charger_id)
    if order_id is not None:
        query = query.where(COMMAND_LOG.c.order_id == order_id)
    if name is not None:
        query = query.where(COMMAND_LOG.c.name == name)
    if before is not None:
        query = query.where(COMMAND_LOG.c.id < before)
    async with db.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return [_record(r, now) for r in rows], (int(rows[-1].id) if more and rows else None)
