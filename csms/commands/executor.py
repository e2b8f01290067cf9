"""Executes commands on this node's live charger connections: the bus's command handler.

For a request it finds the charger's session here (none: ``offline``), refuses it when
``forbid_during_transaction`` and a transaction is open on the charger (checked again as
the CALL is about to leave, since it may have waited behind another), translates the
parameters into the ``ocpp`` library's call for the charger's version (not expressible:
``refused``), validates that call against the version's schema, sends it with the
library's ``call()`` and waits for the first of: the answer (``answered``; a CALLERROR is
``error`` with its code), the connection closing (``offline``: a charger that reconnects
mid-command fails the command at once, it never hangs), or the timeout (``timeout``).

The timeout is the request's ``timeout_s``, capped by this node's ``call_timeout`` (the
library's own response timeout). Commands to one charger are sent one at a time (the
library's call lock, as OCPP allows one outstanding CALL): a command made while another
awaits its answer is queued behind it, the wait counted in its timeout (the bus waits for
the executor no longer than the timeout). ``sent_at`` is only ever the time the CALL
actually left; a command still queued at its timeout is withdrawn unsent (``refused``: it
never reached the charger, safe to retry); one sent late that times out says how long it
waited for the earlier answer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from datetime import datetime
from typing import Any

from ocpp.charge_point import remove_nones, serialize_as_dict, snake_to_camel_case
from ocpp.exceptions import OCPPError, UnknownCallErrorCodeError
from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from websockets.protocol import State

from csms import remote_starts
from csms.commands import v16, v201
from csms.commands.translation import CallContext, NotApplicable, Translator
from csms.context import CsmsContext
from csms.presence import Presence
from csms.protocol.errors import FrameError
from csms.protocol.validation import validate
from csms.session import NotSent, OcppSession
from csms.state import TRANSACTIONS
from services.commands.contracts import (
    CommandName,
    CommandReply,
    CommandRequest,
    DataTransferParams,
    Outcome,
    RemoteStartParams,
    validate_params,
)
from services.commands.log import new_request_id

log = logging.getLogger(__name__)

TRANSACTION_RUNNING = "a transaction is running on this charger"

TRANSLATORS: dict[str, dict[CommandName, Translator]] = {
    "1.6": v16.TRANSLATORS,
    "2.0.1": v201.TRANSLATORS,
}


def answer_status(response: dict[str, Any]) -> str | None:
    """The charger's status: its ``status`` field, or the attributeStatus of a single
    2.0.1 Get/SetVariables result."""
    status = response.get("status")
    if isinstance(status, str):
        return status
    for key in ("get_variable_result", "set_variable_result"):
        results = response.get(key)
        if isinstance(results, list) and len(results) == 1 and isinstance(results[0], dict):
            single = results[0].get("attribute_status")
            return single if isinstance(single, str) else None
    return None


class CommandExecutor:
    def __init__(self, ctx: CsmsContext, presence: Presence) -> None:
        self.ctx = ctx
        self.presence = presence

    def _reply(self, request: CommandRequest, outcome: Outcome, **fields: Any) -> CommandReply:
        return CommandReply(
            command_id=request.command_id, outcome=outcome, node_id=self.ctx.node_id, **fields
        )

    async def __call__(self, request: CommandRequest) -> CommandReply:
        session = self.presence.sessions.get(request.charger_id)
        if session is None or session.ws.state is not State.OPEN:
            return self._reply(request, "offline", detail="the charger is not connected")
        try:
            params = validate_params(request.name, request.params)
        except ValidationError as exc:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors())
            return self._reply(request, "refused", detail=f"invalid params: {fields}")
        if request.forbid_during_transaction and await self._transaction_running(
            request.charger_id
        ):
            return self._reply(request, "refused", detail=TRANSACTION_RUNNING)
        try:
            payload, wire = self._payload(session, request, params)
        except NotApplicable as exc:
            return self._reply(
                request, "refused", detail=f"not applicable to OCPP {session.ocpp_version}: {exc}"
            )
        except FrameError as exc:
            return self._reply(
                request,
                "refused",
                detail=f"the OCPP {session.ocpp_version} schema refuses it: {exc.description}",
            )
        if isinstance(params, RemoteStartParams):
            return await self._remote_start(session, request, params, payload, wire)
        return await self._call(session, request, payload, wire)

    async def _remote_start(
        self,
        session: OcppSession,
        request: CommandRequest,
        params: RemoteStartParams,
        payload: Any,
        wire: dict[str, Any],
    ) -> CommandReply:
        """The token is granted to the charger before the call leaves (the charger may
        authorize it before it answers), and withdrawn unless the charger may have
        accepted the start (``csms.remote_starts``)."""
        token_type = params.id_token_type if session.ocpp_version == "2.0.1" else None
        grant_id = await remote_starts.grant(
            self.ctx, request.charger_id, params.id_token, token_type
        )
        reply = await self._call(session, request, payload, wire)
        maybe_started = reply.status == "Accepted" or (
            reply.sent_at is not None and reply.outcome in ("timeout", "offline")
        )
        if not maybe_started:
            await remote_starts.withdraw(self.ctx, grant_id)
        return reply

    def _payload(
        self, session: OcppSession, request: CommandRequest, params: BaseModel
    ) -> tuple[Any, dict[str, Any]]:
        """The library's call and the payload sent as it is: the library's rendering,
        except vendor data (DataTransfer ``data``), which keeps its keys and nulls."""
        translate = TRANSLATORS[session.ocpp_version][request.name]
        context = CallContext(request.request_id or new_request_id(), self.ctx.clock())
        payload = translate(params, context)
        wire = remove_nones(snake_to_camel_case(serialize_as_dict(payload)))
        if isinstance(params, DataTransferParams) and isinstance(wire.get("data"), dict | list):
            wire["data"] = params.data
        validate(session.ocpp_version, type(payload).__name__, wire)
        return payload, wire

    async def _transaction_running(self, charger_id: str) -> bool:
        query = (
            select(TRANSACTIONS.c.id)
            .where(TRANSACTIONS.c.charger_id == charger_id, TRANSACTIONS.c.stopped_at.is_(None))
            .limit(1)
        )
        async with self.ctx.db.engine.connect() as conn:
            return (await conn.execute(query)).first() is not None

    async def _no_transaction(self, charger_id: str) -> str | None:
        """Checked again as a guarded command is about to leave: a transaction may have
        started while it waited behind an earlier command to the charger."""
        if await self._transaction_running(charger_id):
            return TRANSACTION_RUNNING + " (it started while the command waited to be sent)"
        return None

    async def _call(
        self, session: OcppSession, request: CommandRequest, payload: Any, wire: dict[str, Any]
    ) -> CommandReply:
        action = type(payload).__name__
        timeout = min(request.timeout_s, self.ctx.settings.call_timeout)
        begun = time.perf_counter()
        sent = asyncio.Event()
        sent_at: datetime | None = None
        started = 0.0

        def on_sent() -> None:
            nonlocal sent_at, started
            sent_at = self.ctx.clock()
            started = time.perf_counter()
            sent.set()

        before_send = None
        if request.forbid_during_transaction:
            before_send = functools.partial(self._no_transaction, request.charger_id)
        call = asyncio.create_task(
            session.call_charger(payload, on_sent, wire, before_send), name=f"command:{action}"
        )
        closed = asyncio.create_task(session.ws.wait_closed())
        leaving = asyncio.create_task(sent.wait())
        try:
            # Queued behind an earlier command to this charger until the CALL leaves, then
            # waiting for the answer: both within ``timeout`` (the bus waits no longer).
            await asyncio.wait(
                {call, closed, leaving}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if sent.is_set() and not call.done() and not closed.done():
                remaining = timeout - (time.perf_counter() - begun)
                await asyncio.wait(
                    {call, closed}, timeout=max(remaining, 0.0), return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            for task in (call, closed, leaving):
                task.cancel()
            await asyncio.gather(call, closed, leaving, return_exceptions=True)
        timing: dict[str, Any] = {"sent_at": sent_at}
        if sent_at is not None:
            timing["duration_ms"] = (time.perf_counter() - started) * 1000.0
        queued = started - begun if sent_at is not None else 0.0
        no_answer = f"no answer within {timeout:g} s"
        if queued >= 0.001:
            no_answer = (
                f"no answer within {timeout - queued:.3g} s of sending (it waited {queued:.3g} s "
                f"for the answer to an earlier command; {timeout:g} s in all)"
            )
        if call.cancelled():
            if closed.done() and not closed.cancelled():
                return self._reply(
                    request,
                    "offline",
                    detail="the connection closed before the charger answered"
                    if sent_at is not None
                    else "the connection closed before the command was sent",
                    **timing,
                )
            if sent_at is None:
                return self._reply(
                    request,
                    "refused",
                    detail=f"not sent: an earlier command to this charger was still awaiting "
                    f"its answer after {timeout:g} s (OCPP allows one outstanding call)",
                )
            return self._reply(request, "timeout", detail=no_answer, **timing)
        if sent_at is not None:
            timing["answered_at"] = self.ctx.clock()
        error = call.exception()
        if error is None:
            return self._answered(session, request, action, *call.result(), timing)
        if isinstance(error, NotSent):
            return self._reply(request, "refused", detail=error.reason)
        if isinstance(error, TimeoutError):
            timing.pop("answered_at", None)
            return self._reply(request, "timeout", detail=no_answer, **timing)
        if isinstance(error, OCPPError):
            detail = f"CALLERROR {error.code}: {error.description}"
        elif isinstance(error, UnknownCallErrorCodeError):
            detail = f"CALLERROR with an unknown code: {error}"
        elif isinstance(error, TypeError):
            detail = f"the charger's answer does not fit {action}Response: {error}"
        else:
            log.error("charger %s: %s failed", request.charger_id, action, exc_info=error)
            detail = f"{type(error).__name__}: {error}"
        return self._reply(request, "error", detail=detail, **timing)

    def _answered(
        self,
        session: OcppSession,
        request: CommandRequest,
        action: str,
        result: Any,
        raw: Any,
        timing: dict[str, Any],
    ) -> CommandReply:
        response: dict[str, Any] = remove_nones(serialize_as_dict(result))
        if action == "DataTransfer" and isinstance(raw, dict):
            if isinstance(raw.get("data"), dict | list):
                response["data"] = raw["data"]  # vendor data: as the charger sent it
        try:
            validate(session.ocpp_version, action, snake_to_camel_case(response), response=True)
        except FrameError as exc:
            return self._reply(
                request,
                "error",
                detail=f"the charger's answer does not match the schema: {exc.description}",
                response=response,
                **timing,
            )
        return self._reply(
            request, "answered", status=answer_status(response), response=response, **timing
        )
