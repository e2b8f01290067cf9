"""Runs remediation playbooks: one step at a time, a wait for recovery after each.

Each due remediation (``next_at`` passed) is claimed with a lease (``FOR UPDATE SKIP
LOCKED`` on PostgreSQL, so replicas share the work; the lease is ``next_at`` itself,
renewed to cover each command in flight, and a runner that finds it changed lets go),
then: if the fault cleared meanwhile the order is already ``resolved`` (as
``resolved_remotely``) and the remediation succeeded; if someone took the order over, it
stops; otherwise the next step's command is sent over the bus (outside any transaction),
and its outcome is written to the order's timeline and the remediation's attempts. After
the last step's wait an order still in ``remote_fix`` goes to dispatch, its attempts
attached. Resets never run during a transaction unless the step allows it, and automatic
resets are limited per charger.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.engine import Connection

from services.bus import Bus
from services.clock import Clock
from services.commands.contracts import CommandReply, CommandRequest
from services.commands.log import send_command
from services.committer import GroupCommitter
from services.db import table_of
from services.tasks import PeriodicTask
from ticketing import tx
from ticketing.remediation import metrics
from ticketing.remediation.playbooks import Playbook, Step, playbooks
from ticketing.remediation.start import REMEDIATIONS
from ticketing.tables import ChargerAsset
from ticketing.work_orders import dispatching, store
from ticketing.work_orders.context import OpContext
from ticketing.work_orders.derived import signal, signals_in_window

log = logging.getLogger(__name__)
ASSETS = table_of(ChargerAsset)

LEASE_S = 120.0
#: seconds before a step whose command was not delivered (outcome ``unavailable``: the bus
#: or the charger's node unreachable) is tried again; it does not count as tried
UNAVAILABLE_RETRY_S = 60.0
RESET_SIGNAL = "auto_reset"

Kind = Literal["step", "over_budget", "succeeded", "stopped", "exhausted", "done", "lost"]


@dataclass(frozen=True)
class Decision:
    kind: Kind
    order_id: int
    charger_id: str = ""
    connector: str | None = None
    index: int = 0
    step: Step | None = None
    mode: str = "remote_first"
    #: the lease this runner holds on the remediation (its ``next_at``) after the decision
    lease: datetime | None = None


def claim_due(
    conn: Connection, ctx: OpContext, limit: int = 20
) -> tuple[list[int], datetime | None]:
    """Claim up to ``limit`` due remediations: their ``next_at`` becomes our lease's end
    (returned); whoever finds a remediation's ``next_at`` changed no longer holds it."""
    rows = conn.execute(
        select(REMEDIATIONS.c.order_id)
        .where(REMEDIATIONS.c.state == "running", REMEDIATIONS.c.next_at <= ctx.now)
        .order_by(REMEDIATIONS.c.next_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).scalars()
    ids = [int(r) for r in rows]
    if not ids:
        return [], None
    lease = ctx.now + timedelta(seconds=LEASE_S)
    conn.execute(
        REMEDIATIONS.update()
        .where(REMEDIATIONS.c.order_id.in_(ids))
        .values(next_at=lease, updated_at=ctx.now)
    )
    return ids, lease


def _renew(conn: Connection, ctx: OpContext, order_id: int, hold_s: float) -> datetime:
    """Hold the remediation ``hold_s`` more seconds (for a command in flight)."""
    lease = ctx.now + timedelta(seconds=hold_s)
    conn.execute(
        REMEDIATIONS.update()
        .where(REMEDIATIONS.c.order_id == order_id)
        .values(next_at=lease, updated_at=ctx.now)
    )
    return lease


def _load(conn: Connection, order_id: int) -> dict[str, Any] | None:
    row = (
        conn.execute(
            select(REMEDIATIONS).where(REMEDIATIONS.c.order_id == order_id).with_for_update()
        )
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


def decide(
    conn: Connection,
    ctx: OpContext,
    order_id: int,
    budget: int,
    window_s: float,
    *,
    lease: datetime | None = None,
    hold_s: float = LEASE_S,
) -> Decision:
    """What to do next for the remediation of ``order_id``, held under ``lease`` (None:
    unchecked). A step to send renews the lease for ``hold_s`` (the command's timeout and
    a margin), so that no other runner claims it while the command is in flight.

    Decision: a runner works through its claimed remediations one after another, each
    step waiting up to the call timeout; a lease that ran out meanwhile let another
    replica claim the same remediation and send the same command a second time."""
    rem = _load(conn, order_id)
    if rem is None or rem["state"] != "running":
        return Decision("stopped", order_id)
    if lease is not None and rem["next_at"] != lease:
        return Decision("lost", order_id)
    order = store.load(conn, order_id)
    book = playbooks().get(rem["playbook"])
    base = {"order_id": order_id, "charger_id": rem["charger_id"], "connector": rem["connector"]}
    if order is None or book is None or order["state"] in ("closed", "cancelled"):
        return Decision("stopped", **base)
    if book.mode == "remote_first" and order["state"] != "remote_fix":
        if order["resolution"] == "resolved_remotely":
            return Decision("succeeded", **base)
        return Decision("stopped", **base)
    index = int(rem["step"])
    if index >= len(book.steps):
        return Decision("done" if book.mode == "lockout" else "exhausted", **base, mode=book.mode)
    step = book.steps[index]
    resets = signals_in_window(conn, ctx, rem["charger_id"], RESET_SIGNAL, window_s)
    kind: Kind = "over_budget" if step.command == "reset" and resets >= budget else "step"
    held = _renew(conn, ctx, order_id, hold_s)
    return Decision(kind, **base, index=index, step=step, mode=book.mode, lease=held)


def _describe(step: Step, reply: CommandReply | None, refused: str | None) -> str:
    if reply is None:
        return f"{step.command}: not sent ({refused})"
    answer = reply.status or reply.outcome
    extra = f" ({reply.detail})" if reply.detail else ""
    return f"{step.command}: {reply.outcome} {answer}{extra}"


def record(
    conn: Connection,
    ctx: OpContext,
    decision: Decision,
    params: dict[str, Any],
    reply: CommandReply | None,
    refused: str | None = None,
) -> tuple[float, datetime | None]:
    """Write one attempt; returns how long to wait before the next step and the lease
    held meanwhile (None: the remediation is gone)."""
    assert decision.step is not None
    rem = _load(conn, decision.order_id)
    order = store.load(conn, decision.order_id)
    if rem is None or order is None:
        return 0.0, None
    attempt = {
        "step": decision.index,
        "command": decision.step.command,
        "params": params,
        "at": ctx.now.isoformat(),
        "command_id": reply.command_id if reply else None,
        "outcome": reply.outcome if reply else "skipped",
        "status": reply.status if reply else None,
        "detail": (reply.detail if reply else refused),
    }
    offline = reply is not None and reply.outcome == "offline"
    # Decision: a command that never reached the charger (the bus or its node unreachable)
    # says nothing about the charger: the same step is tried again later rather than the
    # playbook moving on towards a dispatch (a NATS blip used to end in a truck roll).
    unavailable = reply is not None and reply.outcome == "unavailable"
    wait = 0.0 if (decision.mode == "lockout" or offline or reply is None) else decision.step.wait_s
    book = playbooks()[rem["playbook"]]
    note = _describe(decision.step, reply, refused)
    # ... but only ``undelivered_tries`` times: a charger whose node never answers again
    # kept its step retrying for ever, the order in remote_fix and nobody dispatched.
    gave_up = unavailable and _undelivered(rem["attempts"], decision.index) + 1 >= (
        book.undelivered_tries
    )
    if unavailable and not gave_up:
        wait = UNAVAILABLE_RETRY_S
    if gave_up:
        note += f"; gave up after {book.undelivered_tries} undelivered tries"
    answered = reply is not None and reply.outcome == "answered"
    if decision.step.command == "reset" and answered:
        signal(conn, ctx, decision.charger_id, "0", RESET_SIGNAL, 86400.0)
    if offline or gave_up:
        next_step = len(book.steps)
    else:
        next_step = decision.index + (0 if unavailable else 1)
    # no wait: this runner goes on at once, still holding it
    next_at = ctx.now + timedelta(seconds=wait if wait > 0 else LEASE_S)
    conn.execute(
        REMEDIATIONS.update()
        .where(REMEDIATIONS.c.order_id == decision.order_id)
        .values(
            step=next_step,
            attempts=[*rem["attempts"], attempt],
            next_at=next_at,
            updated_at=ctx.now,
        )
    )
    store.change(
        conn,
        ctx,
        order,
        kind="lockout" if decision.mode == "lockout" else "remote_fix_attempt",
        note=note,
        data=attempt,
    )
    outcome = attempt["outcome"]
    ctx.later(lambda: metrics.ATTEMPTS.labels(decision.step.command, outcome).inc())  # type: ignore[union-attr]
    return wait, next_at


def _undelivered(attempts: list[dict[str, Any]], index: int) -> int:
    """How many times in a row, lately, step ``index`` was not delivered."""
    count = 0
    for attempt in reversed(attempts):
        if attempt.get("step") != index or attempt.get("outcome") != "unavailable":
            break
        count += 1
    return count


def finish(conn: Connection, ctx: OpContext, decision: Decision) -> None:
    rem = _load(conn, decision.order_id)
    if rem is None or rem["state"] != "running" or decision.kind == "lost":
        return
    state = {"exhausted": "failed"}.get(decision.kind, decision.kind)
    if state == "done" and not _locked_out(rem["attempts"]):
        state = "lockout_failed"  # an S1 port maybe still in service: said, not "done"
    conn.execute(
        REMEDIATIONS.update()
        .where(REMEDIATIONS.c.order_id == decision.order_id)
        .values(state=state, next_at=None, finished_at=ctx.now, updated_at=ctx.now)
    )
    playbook_name = str(rem["playbook"])
    ctx.later(lambda: metrics.REMEDIATIONS.labels(playbook_name, state).inc())
    if decision.kind != "exhausted":
        return
    order = store.load(conn, decision.order_id)
    if order is None or order["state"] != "remote_fix":
        return
    attempts = rem["attempts"]
    order = store.change(
        conn,
        ctx,
        order,
        kind="transition",
        to_state="new",
        note=f"remote fix failed after {len(attempts)} attempts: dispatching",
        data={"attempts": attempts},
    )
    dispatching.auto_assign(conn, ctx, order)


def _decide(
    order_id: int,
    budget: int,
    window_s: float,
    lease: datetime | None,
    hold_s: float,
    conn: Connection,
    ctx: OpContext,
) -> Decision:
    return decide(conn, ctx, order_id, budget, window_s, lease=lease, hold_s=hold_s)


#: ChangeAvailability answers that take the port out of service (Scheduled: once the
#: transaction running on it ends)
_TAKEN = frozenset({"Accepted", "Scheduled"})


def _locked_out(attempts: list[dict[str, Any]]) -> bool:
    """Did every step of a lockout reach the charger and get accepted?"""
    return bool(attempts) and all(
        a.get("outcome") == "answered" and a.get("status") in _TAKEN for a in attempts
    )


def _finish(decision: Decision, conn: Connection, ctx: OpContext) -> None:
    finish(conn, ctx, decision)


class RemediationRunner:
    def __init__(
        self,
        committer: GroupCommitter,
        bus: Bus,
        clock: Clock,
        *,
        call_timeout: float,
        reset_budget: int,
        reset_window: float,
        interval: float,
    ) -> None:
        self.committer = committer
        self.bus = bus
        self.clock = clock
        self.call_timeout = call_timeout
        self.reset_budget = reset_budget
        self.reset_window = reset_window
        self._periodic = PeriodicTask(
            self.run_once,
            interval,
            name="remediation-runner",
            logger=log,
            failure="remediation run failed",
        )

    def _ctx(self) -> OpContext:
        return OpContext(now=self.clock.now(), actor="system:remediation", bus=self.bus)

    async def run_once(self) -> int:
        """Advance every remediation that is due; returns how many were looked at."""
        order_ids, lease = await tx.transact(self.committer, lambda c: claim_due(c, self._ctx()))
        for order_id in order_ids:
            try:
                await self._advance(order_id, lease)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("remediation of work order %s failed; retried later", order_id)
        return len(order_ids)

    async def _advance(self, order_id: int, lease: datetime | None) -> None:
        hold = LEASE_S + self.call_timeout
        while True:
            decision = await store.run(
                self.committer,
                self._ctx(),
                functools.partial(
                    _decide, order_id, self.reset_budget, self.reset_window, lease, hold
                ),
            )
            if decision.kind == "lost":
                log.info("remediation of work order %s: claimed by another runner", order_id)
                return
            if decision.kind in ("step", "over_budget"):
                wait, lease = await self._step(decision)
                if wait > 0 or lease is None:
                    return
                continue
            await store.run(self.committer, self._ctx(), functools.partial(_finish, decision))
            return

    async def _step(self, decision: Decision) -> tuple[float, datetime | None]:
        assert decision.step is not None
        step = decision.step
        params = step.bind(decision.connector)
        reply: CommandReply | None = None
        refused: str | None = None
        if decision.kind == "over_budget":
            refused = (
                f"automatic reset budget used ({self.reset_budget} per {self.reset_window:.0f} s)"
            )
        else:
            request = CommandRequest(
                command_id=str(uuid.uuid4()),
                charger_id=decision.charger_id,
                name=step.command,
                params=params,
                requested_by="system:remediation",
                order_id=decision.order_id,
                timeout_s=self.call_timeout,
                forbid_during_transaction=step.command == "reset"
                and not step.allow_during_transaction,
            )
            reply = await send_command(
                self.bus, self.committer, request, self.clock, self._connected_to
            )
        return await store.run(
            self.committer,
            self._ctx(),
            lambda c, x: record(c, x, decision, params, reply, refused),
        )

    async def _connected_to(self, charger_id: str) -> str | None:
        """Where the charger is connected as far as ticketing knows (its projection)."""
        async with self.committer.engine.connect() as conn:
            online = (
                await conn.execute(select(ASSETS.c.online).where(ASSETS.c.charger_id == charger_id))
            ).scalar()
        return "the csms node holding it (ticketing sees it online)" if online else None

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()


def describe(book: Playbook) -> dict[str, Any]:
    return {"name": book.name, "mode": book.mode, "steps": [s.model_dump() for s in book.steps]}
