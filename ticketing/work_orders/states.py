"""The work-order state machine: which states exist and which moves are legal.

``new -> (remote_fix ->) dispatched -> accepted -> en_route -> on_site -> resolved ->
verified -> closed``, plus ``on_hold`` (back to the state it interrupted) and
``cancelled``. Closing from an active state is "closed as unresolved" (a reason and a
follow-up order). ``resolved``/``verified`` reopen to ``new`` when the fault recurs.
Pure data; the store applies the side effects.
"""

from __future__ import annotations

from typing import Literal, get_args

State = Literal[
    "new",
    "remote_fix",
    "dispatched",
    "accepted",
    "en_route",
    "on_site",
    "on_hold",
    "resolved",
    "verified",
    "closed",
    "cancelled",
]
STATES: tuple[State, ...] = get_args(State)
HOLD_REASONS = ("parts", "vendor", "site_access", "customer", "weather")
#: States in which work is still to be done (an unresolved order).
ACTIVE: frozenset[str] = frozenset(
    {"new", "remote_fix", "dispatched", "accepted", "en_route", "on_site", "on_hold"}
)
#: States in which the order still owns its de-duplication key.
OPEN: frozenset[str] = ACTIVE | {"resolved", "verified"}
TERMINAL: frozenset[str] = frozenset({"closed", "cancelled"})
#: States in which a technician is working on it (counts towards their load).
ASSIGNED: frozenset[str] = frozenset({"dispatched", "accepted", "en_route", "on_site", "on_hold"})

_FORWARD: dict[str, tuple[str, ...]] = {
    "new": ("remote_fix", "dispatched", "on_hold", "resolved", "closed", "cancelled"),
    "remote_fix": ("new", "dispatched", "on_hold", "resolved", "closed", "cancelled"),
    "dispatched": ("new", "accepted", "on_hold", "resolved", "closed", "cancelled"),
    "accepted": ("dispatched", "en_route", "on_site", "on_hold", "resolved", "closed", "cancelled"),
    "en_route": ("on_site", "on_hold", "resolved", "closed", "cancelled"),
    "on_site": ("on_hold", "resolved", "closed", "cancelled"),
    "resolved": ("verified", "new"),
    "verified": ("closed", "new"),
    "closed": (),
    "cancelled": (),
}


def legal_targets(
    state: str, held_from: str | None = None, *, remote_fix: bool = True
) -> tuple[str, ...]:
    """The states an order in ``state`` may move to; ``remote_fix=False``: the order has
    no remote fix to run (no remote-first playbook, or no charger), so not ``remote_fix``."""
    if state == "on_hold":
        back = (held_from,) if held_from and held_from in ACTIVE else ("new",)
        if not remote_fix and back == ("remote_fix",):
            back = ("new",)  # held during a remote fix that can no longer run: requeue
        targets: tuple[str, ...] = (*back, "resolved", "closed", "cancelled")
    else:
        targets = _FORWARD[state]
    return targets if remote_fix else tuple(t for t in targets if t != "remote_fix")


def is_legal(state: str, target: str, held_from: str | None = None) -> bool:
    return target in legal_targets(state, held_from)


def closes_unresolved(state: str, target: str) -> bool:
    """Closing an order whose work is not done: needs a reason, makes a follow-up."""
    return target == "closed" and state in ACTIVE
