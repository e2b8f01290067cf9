"""Calling this node's command executor on behalf of the bus: the reply, never a raise.

Both backends answer a command the same way once it reached the node: no executor
registered -> ``offline``; no reply within the command's timeout plus a grace -> ``timeout``
(the executor enforces the timeout itself; the grace is the safety net); a failing
executor -> ``error``.
"""

from __future__ import annotations

import asyncio
import logging

from services.bus.base import CommandHandler
from services.commands.contracts import CommandReply, CommandRequest

log = logging.getLogger(__name__)

#: seconds a command's executor may take beyond the command's own timeout before the bus
#: gives up on it
COMMAND_GRACE_S = 5.0


async def call_executor(
    handler: CommandHandler | None, request: CommandRequest, grace: float = COMMAND_GRACE_S
) -> CommandReply:
    if handler is None:
        return CommandReply(
            command_id=request.command_id,
            outcome="offline",
            detail="no csms node serves commands in this process",
        )
    try:
        return await asyncio.wait_for(handler(request), request.timeout_s + grace)
    except TimeoutError:
        return CommandReply(
            command_id=request.command_id,
            outcome="timeout",
            detail=f"no reply from the csms node within {request.timeout_s:g} s",
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("command %s: the executor failed", request.command_id)
        return CommandReply(
            command_id=request.command_id,
            outcome="error",
            detail=f"the csms node failed: {type(exc).__name__}: {exc}",
        )
