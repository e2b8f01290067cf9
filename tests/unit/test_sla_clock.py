"""SLA clock transitions: start, pause/resume, retarget, warn, breach, stop, view."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.db import table_of
from ticketing.sla import clock as sla
from ticketing.sla.calendar import Calendar, always_on, business_calendar
from ticketing.tables import SlaClock

T0 = datetime(2024, 6, 14, 9, 0, tzinfo=UTC)  # a Friday
HOUR = 3600
H = timedelta(hours=1)
ALWAYS = always_on()


def office() -> Calendar:
    hours = {d: [["08:00", "18:00"]] for d in ("mon", "tue", "wed", "thu", "fri")}
    return business_calendar("Europe/Berlin", hours, ())


def berlin(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2024, 6, day, hour, minute, tzinfo=ZoneInfo("Europe/Berlin")).astimezone(UTC)


def started(target_s: int = 4 * HOUR, cal: Calendar = ALWAYS, at: datetime = T0) -> sla.Clock:
    return sla.start("resolution", target_s, 7, cal, 0.75, at)


# ------------------------------------------------------------------ start
def test_start_sets_due_and_warning_at_seventy_five_percent() -> None:
    clock = started()
    assert clock.state == "running"
    assert (clock.started_at, clock.running_since, clock.consumed_s) == (T0, T0, 0.0)
    assert clock.due_at == T0 + 4 * H
    assert clock.warn_at == T0 + 3 * H
    assert clock.policy_id == 7


def test_due_and_warning_follow_the_business_calendar() -> None:
    clock = started(cal=office(), at=berlin(14, 16))  # Friday 16:00 local
    assert clock.warn_at == berlin(17, 9)  # 3 h: two on Friday, one on Monday
    assert clock.due_at == berlin(17, 10)


def test_start_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown SLA target"):
        sla.start("lunch", HOUR, None, ALWAYS, 0.75, T0)
    with pytest.raises(ValueError, match="target_s must be positive"):
        sla.start("response", 0, None, ALWAYS, 0.75, T0)
    with pytest.raises(ValueError, match="warn_fraction"):
        sla.start("response", HOUR, None, ALWAYS, 1.0, T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        sla.start("response", HOUR, None, ALWAYS, 0.75, datetime(2024, 6, 14, 9))


# ------------------------------------------------------------------ pause and resume
def test_time_on_hold_does_not_count() -> None:
    clock = started()
    paused = sla.pause(clock, ALWAYS, T0 + 1 * H)
    assert paused.state == "paused"
    assert (paused.running_since, paused.due_at, paused.warn_at) == (None, None, None)
    assert paused.consumed_s == HOUR
    assert sla.consumed(paused, ALWAYS, T0 + 30 * H) == HOUR
    assert sla.view(paused, ALWAYS, T0 + 30 * H).paused

    resumed = sla.resume(paused, ALWAYS, 0.75, T0 + 6 * H)
    assert resumed.state == "running"
    assert resumed.running_since == T0 + 6 * H
    assert resumed.due_at == T0 + 9 * H  # 3 h left
    assert resumed.warn_at == T0 + 8 * H  # warning at 3 h consumed: 2 h after resuming
    assert sla.consumed(resumed, ALWAYS, T0 + 7 * H) == 2 * HOUR


def test_pause_and_resume_on_business_hours() -> None:
    cal = office()
    clock = started(cal=cal, at=berlin(14, 16))  # Friday 16:00, 4 business hours
    paused = sla.pause(clock, cal, berlin(14, 20))  # Friday 20:00: only 2 h counted
    assert paused.consumed_s == 2 * HOUR
    resumed = sla.resume(paused, cal, 0.75, berlin(18, 17))  # Tuesday 17:00
    assert resumed.due_at == berlin(19, 9)  # 1 h on Tuesday, 1 h on Wednesday


def test_resuming_a_warned_clock_keeps_the_warning_and_does_not_warn_again() -> None:
    clock = sla.mark_warned(started(), T0 + 3 * H)
    assert clock.state == "warning"
    assert clock.warn_at is None
    resumed = sla.resume(sla.pause(clock, ALWAYS, T0 + 3.5 * H), ALWAYS, 0.75, T0 + 5 * H)
    assert resumed.state == "warning"
    assert resumed.warn_at is None
    assert resumed.warned_at == T0 + 3 * H
    assert resumed.due_at == T0 + 5.5 * H


def test_a_warning_point_passed_while_unmarked_is_due_at_once_on_resume() -> None:
    paused = sla.pause(started(), ALWAYS, T0 + 3.5 * H)  # the scanner had not warned yet
    resumed = sla.resume(paused, ALWAYS, 0.75, T0 + 5 * H)
    assert resumed.state == "running"
    assert resumed.warn_at == T0 + 5 * H
    assert resumed.due_at == T0 + 5.5 * H


def test_a_breached_clock_stays_breached_while_paused_and_stops_accumulating() -> None:
    breached = sla.mark_breached(started(), T0 + 4 * H)
    assert (breached.state, breached.due_at, breached.warn_at) == ("breached", None, None)
    paused = sla.pause(breached, ALWAYS, T0 + 5 * H)
    assert paused.state == "breached"
    assert paused.running_since is None
    view = sla.view(paused, ALWAYS, T0 + 50 * H)
    assert view.paused
    assert view.overrun_s == HOUR
    resumed = sla.resume(paused, ALWAYS, 0.75, T0 + 8 * H)
    assert (resumed.state, resumed.due_at, resumed.warn_at) == ("breached", None, None)
    assert sla.view(resumed, ALWAYS, T0 + 9 * H).overrun_s == 2 * HOUR


def test_pause_and_resume_refuse_the_wrong_state() -> None:
    with pytest.raises(sla.ClockStateError, match="not running"):
        sla.pause(sla.pause(started(), ALWAYS, T0 + H), ALWAYS, T0 + 2 * H)
    with pytest.raises(sla.ClockStateError, match="not paused"):
        sla.resume(started(), ALWAYS, 0.75, T0 + H)


# ------------------------------------------------------------------ retarget
def test_retarget_keeps_consumed_time() -> None:
    clock = sla.retarget(started(), 2 * HOUR, 9, ALWAYS, 0.75, T0 + 1 * H)
    assert clock.policy_id == 9
    assert clock.target_s == 2 * HOUR
    assert clock.consumed_s == HOUR
    assert clock.running_since == T0 + 1 * H
    assert clock.due_at == T0 + 2 * H
    assert clock.warn_at == T0 + 1.5 * H


def test_retarget_of_a_paused_clock_schedules_nothing_until_resumed() -> None:
    paused = sla.pause(started(), ALWAYS, T0 + 1 * H)
    clock = sla.retarget(paused, 8 * HOUR, 9, ALWAYS, 0.75, T0 + 3 * H)
    assert (clock.state, clock.due_at, clock.warn_at, clock.consumed_s) == (
        "paused",
        None,
        None,
        HOUR,
    )
    assert sla.resume(clock, ALWAYS, 0.75, T0 + 4 * H).due_at == T0 + 11 * H


def test_retarget_below_the_consumed_time_is_due_now_but_not_breached() -> None:
    clock = sla.retarget(started(), 1800, 9, ALWAYS, 0.75, T0 + 1 * H)
    assert clock.state == "running"
    assert clock.breached_at is None
    assert clock.due_at == T0 + 1 * H
    assert clock.warn_at is None
    assert sla.is_overdue(clock, ALWAYS, T0 + 1 * H)
    view = sla.view(clock, ALWAYS, T0 + 1 * H)
    assert (view.remaining_s, view.overrun_s) == (0.0, 1800.0)


def test_retarget_neither_unwarns_nor_unbreaches() -> None:
    warned = sla.mark_warned(started(), T0 + 3 * H)
    longer = sla.retarget(warned, 24 * HOUR, 9, ALWAYS, 0.75, T0 + 3 * H)
    assert (longer.state, longer.warned_at, longer.warn_at) == ("warning", T0 + 3 * H, None)
    assert longer.due_at == T0 + 24 * H
    breached = sla.mark_breached(started(), T0 + 4 * H)
    relaxed = sla.retarget(breached, 24 * HOUR, 9, ALWAYS, 0.75, T0 + 5 * H)
    assert (relaxed.state, relaxed.breached_at, relaxed.due_at) == ("breached", T0 + 4 * H, None)


# ------------------------------------------------------------------ warn, breach, stop
def test_mark_warned_and_breached_happen_once() -> None:
    warned = sla.mark_warned(started(), T0 + 3 * H)
    with pytest.raises(sla.ClockStateError):
        sla.mark_warned(warned, T0 + 3 * H)
    breached = sla.mark_breached(warned, T0 + 4 * H)
    assert (breached.state, breached.breached_at) == ("breached", T0 + 4 * H)
    with pytest.raises(sla.ClockStateError, match="already breached"):
        sla.mark_breached(breached, T0 + 5 * H)
    with pytest.raises(sla.ClockStateError):
        sla.mark_warned(sla.pause(started(), ALWAYS, T0 + H), T0 + 3 * H)


def test_stop_before_due_is_met() -> None:
    stopped = sla.stop(started(), ALWAYS, T0 + 2 * H)
    assert (stopped.state, stopped.stopped_at, stopped.consumed_s) == ("met", T0 + 2 * H, 7200)
    assert (stopped.running_since, stopped.due_at, stopped.warn_at) == (None, None, None)
    view = sla.view(stopped, ALWAYS, T0 + 40 * H)
    assert (view.remaining_s, view.overrun_s, view.consumed_s) == (None, 0.0, 7200.0)
    assert not view.paused


def test_stop_after_due_without_a_marked_breach_shows_the_overrun() -> None:
    clock = started()
    assert not sla.is_overdue(clock, ALWAYS, T0 + 3 * H)
    assert sla.is_overdue(clock, ALWAYS, T0 + 5 * H)
    stopped = sla.stop(clock, ALWAYS, T0 + 5 * H)
    assert stopped.state == "met"
    assert stopped.breached_at is None
    assert sla.view(stopped, ALWAYS, T0 + 6 * H).overrun_s == HOUR
    assert not sla.is_overdue(stopped, ALWAYS, T0 + 6 * H)


def test_stop_after_a_marked_breach_stays_breached_even_when_cancelled() -> None:
    breached = sla.mark_breached(started(), T0 + 4 * H)
    stopped = sla.stop(breached, ALWAYS, T0 + 6 * H, cancelled=True)
    assert (stopped.state, stopped.stopped_at, stopped.consumed_s) == (
        "breached",
        T0 + 6 * H,
        6 * HOUR,
    )


def test_cancel_and_stop_of_a_paused_clock() -> None:
    paused = sla.pause(started(), ALWAYS, T0 + H)
    cancelled = sla.stop(paused, ALWAYS, T0 + 9 * H, cancelled=True)
    assert (cancelled.state, cancelled.consumed_s) == ("cancelled", HOUR)


@pytest.mark.parametrize("state", ["met", "cancelled", "breached"])
def test_a_stopped_clock_refuses_every_transition(state: str) -> None:
    clock = started()
    if state == "breached":
        clock = sla.mark_breached(clock, T0 + 4 * H)
    stopped = sla.stop(clock, ALWAYS, T0 + 5 * H, cancelled=state == "cancelled")
    assert stopped.state == state
    later = T0 + 6 * H
    attempts: list[Callable[[], sla.Clock]] = [
        lambda: sla.pause(stopped, ALWAYS, later),
        lambda: sla.resume(stopped, ALWAYS, 0.75, later),
        lambda: sla.stop(stopped, ALWAYS, later),
        lambda: sla.retarget(stopped, HOUR, 1, ALWAYS, 0.75, later),
        lambda: sla.mark_warned(stopped, later),
        lambda: sla.mark_breached(stopped, later),
    ]
    for attempt in attempts:
        with pytest.raises(sla.ClockStateError, match="stopped"):
            attempt()
    assert sla.view(stopped, ALWAYS, later).state == state


# ------------------------------------------------------------------ view and rows
def test_view_counts_time_but_never_pretends_a_breach() -> None:
    clock = started()
    on_time = sla.view(clock, ALWAYS, T0 + 1 * H)
    assert (on_time.remaining_s, on_time.overrun_s, on_time.consumed_s) == (10800.0, 0.0, 3600.0)
    late = sla.view(clock, ALWAYS, T0 + 5 * H)
    assert late.state == "running"
    assert late.breached_at is None
    assert (late.remaining_s, late.overrun_s) == (0.0, 3600.0)
    assert late.due_at == T0 + 4 * H


def test_view_on_business_hours_counts_only_open_time() -> None:
    cal = office()
    clock = started(cal=cal, at=berlin(14, 16))
    saturday = sla.view(clock, cal, berlin(15, 12))
    assert saturday.consumed_s == 2 * HOUR
    assert saturday.remaining_s == 2 * HOUR


def test_rows_round_trip_with_the_table_columns() -> None:
    clock = sla.mark_warned(started(), T0 + 3 * H)
    row = clock.to_row()
    columns = {c.name for c in table_of(SlaClock).columns} - {"order_id"}
    assert set(row) == columns
    assert sla.Clock.from_row({"order_id": 12, **row}) == clock
    with pytest.raises(ValueError, match="unknown SLA clock state"):
        sla.Clock.from_row({**row, "state": "sleeping"})
