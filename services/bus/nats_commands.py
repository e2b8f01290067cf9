"""Commands over NATS: per-charger request subjects and the requester side.

The node holding a charger's socket subscribes ``<prefix>.commands.<charger>`` between
``attach`` and ``detach`` and answers with its executor; a request goes to that subject
with core NATS request/reply. Nobody subscribed -> the server's "no responders" status
comes back at once -> outcome ``offline``; no answer in time -> ``timeout``.

Decisions:
- "No responders" is confirmed by asking again after 20, 100 and 250 ms before the
  answer is ``offline``: right after a subscription was confirmed to its own connection
  (``attach`` flushes), a request from another connection can still find no interest
  for a moment (seen on a single NATS 2.9 server in about 1 % of fresh subscriptions; in
  a cluster, interest reaches the other servers asynchronously anyway). One re-ask was
  always enough in a test of 2,000 hand-overs. An offline charger is still ``offline``
  well under a second, not after the command's timeout.
- No queue group: during a hand-over (the charger reconnected to node B while node A has
  not yet let go of the old socket) both nodes may receive the request and the first
  answer wins; A answers ``offline`` only if its socket is already closed, the short
  moment before presence detaches it.
- ``attach``/``detach`` record the wanted state first and reconcile after each await, so
  an attach racing a detach for the same charger leaves the state asked for last. Both
  flush: on return the server routes (or no longer routes) the charger's requests here.
  A request crossing a ``detach`` on the wire reaches a subscription the client has
  already dropped and ends as ``timeout`` rather than ``offline``. Neither raises:
  without a connection the subscription is sent when the client reconnects (nats-py
  replays subscriptions).
- Each request is answered on its own task, so a slow command does not hold up the
  subscription's other messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from pydantic import ValidationError

from services.bus.base import CommandHandler
from services.bus.command_call import COMMAND_GRACE_S, call_executor
from services.bus.nats_subjects import Subjects
from services.commands.contracts import CommandReply, CommandRequest
from services.observability import metrics

log = logging.getLogger(__name__)

#: seconds ``attach``/``detach`` wait for the server to confirm a (un)subscription
ATTACH_FLUSH_TIMEOUT = 2
#: pauses (s) before asking again after "no responders", to confirm a charger is offline
OFFLINE_RECHECKS = (0.02, 0.1, 0.25)


class CommandRoutes:
    def __init__(self, subjects: Subjects, *, grace: float = COMMAND_GRACE_S) -> None:
        self._subjects = subjects
        self._grace = grace
        self._handler: CommandHandler | None = None
        self._nc: NATS | None = None
        self._wanted: set[str] = set()
        self._subs: dict[str, Subscription] = {}
        self._answering: set[asyncio.Task[None]] = set()

    def serve(self, handler: CommandHandler) -> None:
        if self._handler is not None:
            raise ValueError("a command executor is already registered")
        self._handler = handler

    async def start(self, nc: NATS) -> None:
        self._nc = nc
        for charger_id in list(self._wanted):
            await self.attach(charger_id)

    async def close(self) -> None:
        self._wanted.clear()
        subs, self._subs = self._subs, {}
        for sub in subs.values():
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        metrics.BUS_COMMAND_SUBSCRIPTIONS.dec(len(subs))
        for task in list(self._answering):
            task.cancel()
        await asyncio.gather(*self._answering, return_exceptions=True)
        self._nc = None

    async def attach(self, charger_id: str) -> None:
        self._wanted.add(charger_id)
        nc = self._nc
        if nc is None or charger_id in self._subs:
            return
        try:
            sub = await nc.subscribe(self._subjects.command(charger_id), cb=self._on_request)
        except Exception as exc:
            log.warning("charger %s: subscribing to its commands failed: %s", charger_id, exc)
            return
        if charger_id not in self._wanted or charger_id in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            return
        self._subs[charger_id] = sub
        metrics.BUS_COMMAND_SUBSCRIPTIONS.inc()
        try:
            await nc.flush(timeout=ATTACH_FLUSH_TIMEOUT)
        except Exception as exc:
            log.warning("charger %s: command subscription not confirmed: %s", charger_id, exc)

    async def detach(self, charger_id: str) -> None:
        self._wanted.discard(charger_id)
        sub = self._subs.pop(charger_id, None)
        if sub is None:
            return
        metrics.BUS_COMMAND_SUBSCRIPTIONS.dec()
        try:
            await sub.unsubscribe()
            if self._nc is not None:
                await self._nc.flush(timeout=ATTACH_FLUSH_TIMEOUT)
        except Exception as exc:
            log.warning("charger %s: unsubscribing from its commands failed: %s", charger_id, exc)

    async def request(self, nc: NATS, request: CommandRequest) -> CommandReply:
        subject = self._subjects.command(request.charger_id)
        data = request.model_dump_json().encode()
        for pause in (0.0, *OFFLINE_RECHECKS):
            await asyncio.sleep(pause)
            try:
                msg = await nc.request(subject, data, timeout=request.timeout_s + self._grace)
                break
            except NoRespondersError:
                continue
            except NatsTimeout:
                return CommandReply(
                    command_id=request.command_id,
                    outcome="timeout",
                    detail=f"no reply from the csms node within {request.timeout_s:g} s",
                )
        else:
            return CommandReply(
                command_id=request.command_id,
                outcome="offline",
                detail="no csms node holds a connection of this charger",
            )
        try:
            return CommandReply.model_validate_json(msg.data)
        except ValidationError as exc:
            return CommandReply(
                command_id=request.command_id,
                outcome="error",
                detail=f"the csms node's reply is not a command reply: {exc.error_count()} errors",
            )

    async def _on_request(self, msg: Msg) -> None:
        task = asyncio.create_task(self._answer(msg))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _answer(self, msg: Msg) -> None:
        try:
            request = CommandRequest.model_validate_json(msg.data)
        except ValidationError as exc:
            log.warning("a command request on %s is invalid: %s", msg.subject, exc)
            reply = CommandReply(command_id="", outcome="error", detail="invalid command request")
        else:
            reply = await call_executor(self._handler, request, self._grace)
        try:
            await msg.respond(reply.model_dump_json().encode())
        except Exception as exc:
            log.warning("command %s: answering failed: %s", reply.command_id, exc)
