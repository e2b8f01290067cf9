"""Moving an order through its states, with what each move implies.

Used by the API (people) and by the engine (the system: auto-resolution, verification,
reopening). Every move is checked against :mod:`ticketing.work_orders.states`; an
illegal one is a 409 that lists the legal targets.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Connection

from ticketing import tx
from ticketing.remediation import start as remediation
from ticketing.remediation.playbooks import remote_fixable
from ticketing.sla.policies import PolicyRow, get_policy
from ticketing.work_orders import dispatching, sla_events, store
from ticketing.work_orders.context import OpContext
from ticketing.work_orders.states import HOLD_REASONS, closes_unresolved, legal_targets

RESOLUTIONS = (
    "fixed_on_site",
    "resolved_remotely",
    "self_recovered",
    "no_fault_found",
    "replaced",
    "other",
)
NOTIFY = {
    "resolved": "resolved",
    "verified": "verified",
    "closed": "closed",
    "cancelled": "cancelled",
}
DEFAULT_VERIFICATION_S = 3600
#: a recurrence within this long of the resolution reopens an order (no SLA policy)
DEFAULT_REOPEN_S = 86400


def check_legal(order: store.Order, target: str) -> None:
    fixable = remote_fixable(order)
    legal = legal_targets(order["state"], order["held_from"], remote_fix=fixable)
    if target not in legal:
        detail = f"work order {order['id']} cannot go from {order['state']!r} to {target!r}"
        if target == "remote_fix" and not fixable:
            detail += (
                ": it has no remote fix to run (no remote-first playbook for its fault"
                f" ({order['playbook'] or 'none'}), or no charger to command); dispatch it"
            )
        raise tx.Conflict(detail, state=order["state"], legal_transitions=list(legal))


def transition(
    conn: Connection,
    ctx: OpContext,
    order: store.Order,
    target: str,
    *,
    note: str | None = None,
    reason: str | None = None,
    resolution: str | None = None,
    technician_id: int | None = None,
) -> store.Order:
    check_legal(order, target)
    state = order["state"]

    def move(changes: dict[str, Any], data: dict[str, Any] | None = None) -> store.Order:
        return store.change(
            conn,
            ctx,
            order,
            kind="transition",
            to_state=target,
            changes=changes,
            note=note,
            notify=NOTIFY.get(target),
            data=data,
        )

    if target == "dispatched":
        if technician_id is not None:
            return dispatching.assign(conn, ctx, order, technician_id, note)
        if order["assignee_id"] is not None and state in ("accepted", "on_hold"):
            # back from hold (or un-accepted): the assignee keeps the order
            back = {"held_from": None, "hold_reason": None} if state == "on_hold" else {}
            return move(back)
        requeued = {**order, "assignee_id": None}
        if dispatching.best_candidate(conn, ctx, requeued) is None:
            raise tx.Conflict(
                "no technician fits this order (skill, site, on duty, capacity): "
                "assign one with technician_id or escalate to a team",
                state=state,
            )
        return dispatching.auto_assign(conn, ctx, _requeue(conn, ctx, order))
    if target == "on_hold":
        if reason not in HOLD_REASONS:
            raise tx.Invalid(
                "putting an order on hold needs a reason", allowed_reasons=list(HOLD_REASONS)
            )
        return move({"held_from": state, "hold_reason": reason})
    if target == "resolved":
        return resolve(conn, ctx, order, resolution or "fixed_on_site", note=note)
    if closes_unresolved(state, target):
        return close_unresolved(conn, ctx, order, reason=reason, note=note)
    if target == "closed":
        return move({"closed_at": ctx.now, "dedupe_key": None})
    if target == "cancelled":
        if not (reason or note):
            raise tx.Invalid("cancelling an order needs a reason")
        return move({"closed_at": ctx.now, "dedupe_key": None, "close_reason": reason or note})
    if target == "new" and state in ("resolved", "verified"):
        return reopen(conn, ctx, order, note=note or "reopened by hand")
    if target == "new":
        return _requeue(conn, ctx, order, note=note)
    changes = dict[str, Any]()
    if state == "on_hold":
        changes = {"held_from": None, "hold_reason": None}
    if target == "on_site":
        changes["on_site_at"] = ctx.now
    if target == "remote_fix":
        rearmed = remediation.rearm(conn, ctx, order)
        return move(changes, {"remediation": rearmed} if rearmed else None)
    return move(changes)


def _requeue(
    conn: Connection, ctx: OpContext, order: store.Order, note: str | None = None
) -> store.Order:
    if order["state"] == "new" and order["assignee_id"] is None:
        return order
    return store.change(
        conn,
        ctx,
        order,
        kind="transition",
        to_state="new",
        changes={"assignee_id": None, "held_from": None, "hold_reason": None},
        note=note or "back to the dispatcher queue",
    )


def resolve(
    conn: Connection,
    ctx: OpContext,
    order: store.Order,
    resolution: str,
    *,
    note: str | None = None,
    event_id: str | None = None,
) -> store.Order:
    if resolution not in RESOLUTIONS:
        raise tx.Invalid(f"unknown resolution {resolution!r}", allowed=list(RESOLUTIONS))
    check_legal(order, "resolved")
    # what is already due fires first: a breach may raise the priority and change the policy
    order = sla_events.fire_for_order(conn, ctx, order)
    policy = _policy(conn, order)
    window = policy.verification_window_s if policy is not None else DEFAULT_VERIFICATION_S
    changes = {
        "resolution": resolution,
        "resolved_at": ctx.now,
        "verify_after": ctx.now + timedelta(seconds=window),
        "held_from": None,
        "hold_reason": None,
    }
    return store.change(
        conn,
        ctx,
        order,
        kind="transition",
        to_state="resolved",
        changes=changes,
        note=note,
        event_id=event_id,
        notify="resolved",
        data={"resolution": resolution},
    )


def _policy(conn: Connection, order: store.Order) -> PolicyRow | None:
    return get_policy(conn, order["sla_policy_id"]) if order["sla_policy_id"] else None


def within_reopen_window(conn: Connection, ctx: OpContext, order: store.Order) -> bool:
    """Whether a recurrence now reopens this resolved (or verified) order: within its
    policy's ``reopen_window_s`` of the resolution."""
    resolved_at = order["resolved_at"]
    if resolved_at is None:
        return True
    policy = _policy(conn, order)
    window = policy.reopen_window_s if policy is not None else DEFAULT_REOPEN_S
    return bool(ctx.now <= resolved_at + timedelta(seconds=window))


def supersede(conn: Connection, ctx: OpContext, order: store.Order, error_code: str) -> store.Order:
    """A resolved order whose fault recurred after the reopen window hands its
    de-duplication key to the new order for the recurrence; its state is unchanged."""
    return store.change(
        conn,
        ctx,
        order,
        kind="superseded",
        changes={"dedupe_key": None},
        note=f"{error_code} recurred after the reopen window; a new order carries it",
    )


def reopen(
    conn: Connection,
    ctx: OpContext,
    order: store.Order,
    *,
    note: str,
    event_id: str | None = None,
    occurrence: bool = False,
) -> store.Order:
    """The fault came back while the order was resolved or verified: work again."""
    changes: dict[str, Any] = {
        "resolution": None,
        "resolved_at": None,
        "verify_after": None,
        "assignee_id": None,
        "declined_by": [],
    }
    if occurrence:
        changes["occurrences"] = int(order["occurrences"]) + 1
        changes["last_seen"] = ctx.now
    order = store.change(
        conn,
        ctx,
        order,
        kind="reopened",
        to_state="new",
        changes=changes,
        note=note,
        event_id=event_id,
        notify="reopened",
    )
    return dispatching.auto_assign(conn, ctx, order)


def verify_and_close(conn: Connection, ctx: OpContext, order: store.Order) -> store.Order:
    """The verification window passed without recurrence: verified, then closed."""
    order = store.change(
        conn,
        ctx,
        order,
        kind="transition",
        to_state="verified",
        note="no recurrence during the verification window",
        notify="verified",
    )
    return store.change(
        conn,
        ctx,
        order,
        kind="transition",
        to_state="closed",
        changes={"closed_at": ctx.now, "dedupe_key": None, "verify_after": None},
        notify="closed",
    )


def close_unresolved(
    conn: Connection, ctx: OpContext, order: store.Order, *, reason: str | None, note: str | None
) -> store.Order:
    """Close an order whose work is not done; a follow-up order carries the work on."""
    if not reason:
        raise tx.Invalid("closing an unresolved order needs a reason")
    key = order["dedupe_key"]
    closed = store.change(
        conn,
        ctx,
        order,
        kind="transition",
        to_state="closed",
        changes={
            "closed_at": ctx.now,
            "dedupe_key": None,
            "resolution": "unresolved",
            "close_reason": reason,
        },
        note=note,
        notify="closed",
    )
    carried = (
        "source", "type", "charger_id", "connector", "site_id", "category", "severity",
        "impact", "urgency", "priority", "rule_name", "sla_policy_id", "playbook", "skill",
        "error_code", "team_id",
    )  # fmt: skip
    follow_up = store.create(
        conn,
        ctx,
        {
            # from the closed order: a breach fired by the close may have raised its priority
            **{k: closed[k] for k in carried},
            "title": f"Follow-up of #{order['id']}: {order['title']}"[:300],
            "description": reason,
            "dedupe_key": key,
            "parent_id": order["id"],
        },
        note=f"follow-up of #{order['id']} (closed unresolved: {reason})",
    )
    dispatching.auto_assign(conn, ctx, follow_up)
    return closed
