"""One SLA clock (a target of a work order) and its transitions (pure; no database).

A :class:`Clock` mirrors a ``ticketing_sla_clocks`` row. The work-order engine decides when a
clock starts, pauses, resumes, is retargeted or stops; the scanner decides when it warns
or breaches (``mark_warned`` / ``mark_breached``, exactly once). Every transition returns a
new Clock; time counts only within the policy's calendar (Jira Service Management /
ServiceNow semantics).

Invariants (what the scanner relies on; both columns are indexed):

- ``running_since`` is set while the clock accumulates time, ``None`` while paused/stopped.
- ``due_at`` is set only while a breach is pending (accumulating, not breached, not
  stopped): the instant the target is used up. The breach scan is ``due_at <= now``.
- ``warn_at`` is set only while a warning is pending (as above, and not warned yet): the
  instant ``warn_fraction`` of the target is used up. The warning scan is ``warn_at <= now``.

Decisions:

- Transitions of a stopped clock (met, cancelled, or breached and stopped) raise
  :class:`ClockStateError` (a ValueError); so do pause of a clock that is not accumulating
  and resume of one that is. Only :func:`view` and :func:`consumed` work on any clock.
- A breached clock stays ``breached`` when paused (its state records the breach) but stops
  accumulating; ``view().paused`` tells it is on hold.
- ``resume``/``retarget`` never warn or breach themselves: if the warning point is already
  passed (and the target not), ``warn_at`` is ``now`` so the scanner warns at once; if the
  target is already used up, ``due_at`` is ``now`` and no warning is pending.
- ``stop`` does not decide breaches either: a clock past its due instant that the scanner
  has not marked yet ends ``met`` with ``overrun_s > 0``. Callers that must record that
  breach call :func:`is_overdue` and :func:`mark_breached` first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from ticketing.sla.calendar import Calendar, aware_utc

TARGETS = ("response", "on_site", "resolution")
STATES = ("running", "paused", "warning", "breached", "met", "cancelled")


class ClockStateError(ValueError):
    """A transition the clock's current state does not allow."""


@dataclass(frozen=True)
class Clock:
    target: str
    target_s: int
    policy_id: int | None
    state: str
    started_at: datetime
    running_since: datetime | None
    consumed_s: float
    due_at: datetime | None
    warn_at: datetime | None
    warned_at: datetime | None
    breached_at: datetime | None
    stopped_at: datetime | None

    @property
    def stopped(self) -> bool:
        return self.stopped_at is not None

    @property
    def accumulating(self) -> bool:
        return self.running_since is not None

    @property
    def paused(self) -> bool:
        return not self.stopped and not self.accumulating

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Clock:
        """From a ``ticketing_sla_clocks`` row (extra keys such as ``order_id`` ignored)."""
        if row["state"] not in STATES:
            raise ValueError(f"unknown SLA clock state {row['state']!r}")
        return cls(
            target=row["target"],
            target_s=int(row["target_s"]),
            policy_id=row["policy_id"],
            state=row["state"],
            started_at=row["started_at"],
            running_since=row["running_since"],
            consumed_s=float(row["consumed_s"] or 0.0),
            due_at=row["due_at"],
            warn_at=row["warn_at"],
            warned_at=row["warned_at"],
            breached_at=row["breached_at"],
            stopped_at=row["stopped_at"],
        )

    def to_row(self) -> dict[str, Any]:
        """The ``ticketing_sla_clocks`` columns except ``order_id``."""
        return {
            "target": self.target,
            "target_s": self.target_s,
            "policy_id": self.policy_id,
            "state": self.state,
            "started_at": self.started_at,
            "running_since": self.running_since,
            "consumed_s": self.consumed_s,
            "due_at": self.due_at,
            "warn_at": self.warn_at,
            "warned_at": self.warned_at,
            "breached_at": self.breached_at,
            "stopped_at": self.stopped_at,
        }


@dataclass(frozen=True)
class ClockView:
    """How a clock stands at one instant (for the API and reports)."""

    target: str
    state: str
    due_at: datetime | None
    remaining_s: float | None  # calendar seconds left, >= 0; None once stopped
    overrun_s: float  # calendar seconds consumed beyond target_s, >= 0
    target_s: int
    consumed_s: float
    paused: bool
    warned_at: datetime | None
    breached_at: datetime | None
    stopped_at: datetime | None


# ------------------------------------------------------------------ transitions
def start(
    target: str,
    target_s: int,
    policy_id: int | None,
    cal: Calendar,
    warn_fraction: float,
    now: datetime,
) -> Clock:
    """A new running clock for ``target`` with ``target_s`` calendar seconds."""
    if target not in TARGETS:
        raise ValueError(f"unknown SLA target {target!r} (use {', '.join(TARGETS)})")
    now = aware_utc(now, "now")
    clock = Clock(
        target=target,
        target_s=_checked_target_s(target_s),
        policy_id=policy_id,
        state="running",
        started_at=now,
        running_since=now,
        consumed_s=0.0,
        due_at=None,
        warn_at=None,
        warned_at=None,
        breached_at=None,
        stopped_at=None,
    )
    return _scheduled(clock, cal, warn_fraction, now)


def pause(clock: Clock, cal: Calendar, now: datetime) -> Clock:
    """Stop accumulating (on hold); due/warn instants are cleared until resumed."""
    _require_live(clock, "pause")
    if not clock.accumulating:
        raise ClockStateError(f"cannot pause the {clock.target} clock: it is not running")
    now = aware_utc(now, "now")
    return replace(
        clock,
        state="breached" if clock.breached_at is not None else "paused",
        running_since=None,
        consumed_s=consumed(clock, cal, now),
        due_at=None,
        warn_at=None,
    )


def resume(clock: Clock, cal: Calendar, warn_fraction: float, now: datetime) -> Clock:
    """Accumulate again from ``now``; due/warn instants recomputed from the time left."""
    _require_live(clock, "resume")
    if clock.accumulating:
        raise ClockStateError(f"cannot resume the {clock.target} clock: it is not paused")
    now = aware_utc(now, "now")
    resumed = replace(clock, state=_live_state(clock), running_since=now)
    return _scheduled(resumed, cal, warn_fraction, now)


def stop(clock: Clock, cal: Calendar, now: datetime, *, cancelled: bool = False) -> Clock:
    """Final: ``met`` (or ``cancelled``), unless breached, which stays ``breached``."""
    _require_live(clock, "stop")
    now = aware_utc(now, "now")
    if clock.breached_at is not None:
        state = "breached"
    else:
        state = "cancelled" if cancelled else "met"
    return replace(
        clock,
        state=state,
        running_since=None,
        consumed_s=consumed(clock, cal, now),
        due_at=None,
        warn_at=None,
        stopped_at=now,
    )


def retarget(
    clock: Clock,
    target_s: int,
    policy_id: int | None,
    cal: Calendar,
    warn_fraction: float,
    now: datetime,
    *,
    ran_on: Calendar | None = None,
) -> Clock:
    """A new target (policy or priority changed): consumed time is kept, due/warn are
    recomputed; a warning or breach already marked stays. ``cal`` is the calendar the
    clock runs on from ``now`` (the new policy's); ``ran_on`` the one it ran on until now
    (the old policy's; default ``cal``). Decision: the time consumed until now counts on
    the old calendar: counted on the new one, a business-hours clock running since Friday
    evening had the whole weekend consumed when a breach moved it to a 24x7 policy on
    Monday, and breached its other targets at once."""
    _require_live(clock, "retarget")
    now = aware_utc(now, "now")
    changed = replace(
        clock,
        target_s=_checked_target_s(target_s),
        policy_id=policy_id,
        consumed_s=consumed(clock, ran_on or cal, now),
        running_since=now if clock.accumulating else None,
    )
    return _scheduled(changed, cal, warn_fraction, now)


def mark_warned(clock: Clock, now: datetime) -> Clock:
    """The scanner warned: ``running`` -> ``warning``."""
    _require_live(clock, "warn")
    if clock.state != "running" or not clock.accumulating:
        raise ClockStateError(f"cannot warn the {clock.target} clock in state {clock.state}")
    return replace(clock, state="warning", warned_at=aware_utc(now, "now"), warn_at=None)


def mark_breached(clock: Clock, now: datetime) -> Clock:
    """The scanner (or the engine, before stopping an overdue clock) recorded a breach."""
    _require_live(clock, "breach")
    if clock.breached_at is not None:
        raise ClockStateError(f"the {clock.target} clock is already breached")
    return replace(
        clock, state="breached", breached_at=aware_utc(now, "now"), due_at=None, warn_at=None
    )


# ------------------------------------------------------------------ reading
def consumed(clock: Clock, cal: Calendar, now: datetime) -> float:
    """Calendar seconds consumed so far."""
    if clock.running_since is None:
        return clock.consumed_s
    return clock.consumed_s + cal.elapsed(clock.running_since, now)


def is_overdue(clock: Clock, cal: Calendar, now: datetime) -> bool:
    """The target is used up but no breach is recorded yet (the scanner has not run)."""
    return (
        not clock.stopped
        and clock.breached_at is None
        and consumed(clock, cal, now) >= clock.target_s
    )


def view(clock: Clock, cal: Calendar, now: datetime) -> ClockView:
    spent = consumed(clock, cal, now)
    return ClockView(
        target=clock.target,
        state=clock.state,
        due_at=clock.due_at,
        remaining_s=None if clock.stopped else max(0.0, clock.target_s - spent),
        overrun_s=max(0.0, spent - clock.target_s),
        target_s=clock.target_s,
        consumed_s=spent,
        paused=clock.paused,
        warned_at=clock.warned_at,
        breached_at=clock.breached_at,
        stopped_at=clock.stopped_at,
    )


# ------------------------------------------------------------------ helpers
def _checked_target_s(target_s: int) -> int:
    if target_s <= 0:
        raise ValueError(f"target_s must be positive, got {target_s}")
    return target_s


def _require_live(clock: Clock, action: str) -> None:
    if clock.stopped:
        raise ClockStateError(
            f"cannot {action} the {clock.target} clock: it stopped ({clock.state})"
        )


def _live_state(clock: Clock) -> str:
    if clock.breached_at is not None:
        return "breached"
    return "warning" if clock.warned_at is not None else "running"


def _scheduled(clock: Clock, cal: Calendar, warn_fraction: float, now: datetime) -> Clock:
    """``clock`` with due_at/warn_at for what is pending from ``now`` (module invariants);
    expects ``consumed_s`` to be up to date at ``now``."""
    if not 0.0 < warn_fraction < 1.0:
        raise ValueError(f"warn_fraction must be between 0 and 1, got {warn_fraction}")
    if clock.running_since is None or clock.breached_at is not None:
        return replace(clock, due_at=None, warn_at=None)
    left = clock.target_s - clock.consumed_s
    due_at = cal.add(now, max(0.0, left))
    warn_at = None
    if clock.warned_at is None and left > 0:
        warn_at = cal.add(now, max(0.0, warn_fraction * clock.target_s - clock.consumed_s))
    return replace(clock, due_at=due_at, warn_at=warn_at)
