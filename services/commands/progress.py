"""Progress of long-running commands: firmware updates, diagnostics/log uploads, reports.

A charger reports such an operation in later messages (FirmwareStatusNotification,
DiagnosticsStatusNotification, LogStatusNotification, NotifyReport). Each report is
appended to the ``progress`` of the command that started it: the command with the same
OCPP requestId when the message carries one (2.0.1), otherwise the charger's latest
command of that name that may have reached it (1.6: not refused, not offline before it
was sent). The write joins the charger
message's own group commit, so the progress is durable before the charger is answered.

Decisions: ``Idle`` without a requestId (the answer to a TriggerMessage once nothing is
running) is not progress of any command; a repeat of the latest status (a charger's
retry) is not appended twice; at most :data:`PROGRESS_LIMIT` entries are kept.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Connection

from services.commands.contracts import CommandName
from services.commands.tables import CommandLogEntry
from services.committer import WriteSet
from services.db import table_of

COMMAND_LOG = table_of(CommandLogEntry)
PROGRESS_LIMIT = 100
NOT_SENT = ("offline", "refused")


def track_progress(
    writes: WriteSet,
    *,
    charger_id: str,
    name: CommandName,
    request_id: int | None,
    status: str,
    at: datetime,
) -> None:
    """Append ``status`` to the progress of the command it reports on (if any), in ``writes``."""
    if request_id is None and status == "Idle":
        return
    status = status[:64]

    def append(conn: Connection) -> None:
        table = COMMAND_LOG
        query = select(table.c.id, table.c.progress).where(
            table.c.charger_id == charger_id, table.c.name == name
        )
        if request_id is not None:
            query = query.where(table.c.request_id == request_id)
        else:
            query = query.where(
                or_(
                    table.c.outcome.is_(None),
                    table.c.outcome.not_in(NOT_SENT),
                    # the connection closed after the CALL left: the charger may act on it
                    and_(table.c.outcome == "offline", table.c.sent_at.is_not(None)),
                )
            )
        row = conn.execute(query.order_by(table.c.id.desc()).limit(1)).first()
        if row is None:
            return
        progress = list(row.progress or [])
        if progress and progress[-1].get("status") == status:
            return
        progress.append({"status": status, "at": at.isoformat()})
        conn.execute(
            table.update()
            .where(table.c.id == row.id)
            .values(progress=progress[-PROGRESS_LIMIT:], progress_status=status, progress_at=at)
        )

    writes.then(append)
