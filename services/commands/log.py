"""Sending a command and recording it: the one way commands reach chargers.

The request is recorded (who, when, what, for which work order) and committed *before* it
is sent, so a command exists in the log even if this process dies while it is in flight;
its outcome (answer, timing, or why not) is recorded after. Both go through the group
committer. A reply is always returned: a failure of the bus itself becomes outcome
``unavailable``; only a failure to record the request raises.

An ``offline`` reply that no node sent (none took the request) is checked with ``connected_to``, the
sender's view of where the charger is connected: a charger still connected to a node is
``unavailable`` (its node is not reachable over the bus, e.g. while its NATS connection
is being re-established), not offline.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from services.bus.base import Bus
from services.clock import Clock
from services.commands.contracts import REQUEST_ID_COMMANDS, CommandReply, CommandRequest
from services.commands.tables import CommandLogEntry
from services.committer import GroupCommitter, WriteSet
from services.db import table_of
from services.observability import metrics

log = logging.getLogger(__name__)

COMMAND_LOG = table_of(CommandLogEntry)


def new_request_id() -> int:
    """An OCPP requestId (a positive 32-bit integer), random so that ids from different
    processes and restarts do not collide on one charger."""
    return secrets.randbelow(2**31 - 2) + 1


def _insert(request: CommandRequest, at: datetime) -> WriteSet:
    row: dict[str, Any] = {
        "command_id": request.command_id,
        "charger_id": request.charger_id,
        "name": request.name,
        "params": request.params,
        "requested_by": request.requested_by,
        "order_id": request.order_id,
        "requested_at": at,
        "timeout_s": request.timeout_s,
        "forbid_during_transaction": request.forbid_during_transaction,
        "request_id": request.request_id,
        "progress": [],
    }

    def insert(conn: Connection) -> None:
        conn.execute(COMMAND_LOG.insert().values(**row))

    writes = WriteSet()
    writes.then(insert)
    return writes


async def _still_connected(
    reply: CommandReply, request: CommandRequest, connected_to: ConnectedTo
) -> CommandReply:
    try:
        node = await connected_to(request.charger_id)
    except Exception:
        log.exception("command %s: reading where %s is connected failed", request.command_id,
                      request.charger_id)  # fmt: skip
        return reply
    if node is None:
        return reply
    return reply.model_copy(
        update={
            "outcome": "unavailable",
            "detail": f"the charger is connected to {node}, which did not take the command "
            "over the bus (its bus connection may be down); nothing reached the charger",
        }
    )


def _complete(reply: CommandReply) -> WriteSet:
    values = reply.model_dump(exclude={"command_id"})
    if reply.status is not None:
        values["status"] = reply.status[:64]

    def update(conn: Connection) -> None:
        conn.execute(
            COMMAND_LOG.update()
            .where(COMMAND_LOG.c.command_id == reply.command_id)
            .values(**values)
        )

    writes = WriteSet()
    writes.then(update)
    return writes


#: charger id -> the node (or a description of it) the charger is connected to, or None
ConnectedTo = Callable[[str], Awaitable[str | None]]


async def send_command(
    bus: Bus,
    committer: GroupCommitter,
    request: CommandRequest,
    clock: Clock,
    connected_to: ConnectedTo | None = None,
) -> CommandReply:
    """Record ``request``, send it to the charger over ``bus``, record and return the reply."""
    if request.name in REQUEST_ID_COMMANDS and request.request_id is None:
        request = request.model_copy(update={"request_id": new_request_id()})
    await committer.commit(_insert(request, clock.now()))
    try:
        reply = await bus.request_command(request)
    except asyncio.CancelledError:
        cancelled = CommandReply(
            command_id=request.command_id,
            outcome="error",
            detail="cancelled before the charger's answer arrived",
        )
        committer.submit(_complete(cancelled))
        metrics.child(metrics.COMMANDS, request.name, cancelled.outcome).inc()
        raise
    except Exception as exc:
        log.exception("command %s for %s: the bus failed", request.name, request.charger_id)
        reply = CommandReply(
            command_id=request.command_id,
            outcome="unavailable",
            detail=f"the command could not be sent: the bus failed: {type(exc).__name__}: {exc}",
        )
    if reply.outcome == "offline" and reply.node_id is None and connected_to is not None:
        # No node took the request (a node that did and found no session sets its id)
        reply = await _still_connected(reply, request, connected_to)
    if reply.command_id != request.command_id:
        reply = reply.model_copy(update={"command_id": request.command_id})
    await committer.commit(_complete(reply))
    metrics.child(metrics.COMMANDS, request.name, reply.outcome).inc()
    log.info(
        "command %s %s to %s by %s: %s %s",
        request.command_id,
        request.name,
        request.charger_id,
        request.requested_by,
        reply.outcome,
        reply.status or reply.detail or "",
    )
    return reply
