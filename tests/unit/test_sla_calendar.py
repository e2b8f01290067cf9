"""SLA calendars: 24x7 and business hours across weekends, holidays and DST changes."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from ticketing.sla.calendar import (
    AlwaysOn,
    BusinessCalendar,
    Calendar,
    always_on,
    business_calendar,
    calendar_of,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
WEEKDAYS_8_18 = {d: [["08:00", "18:00"]] for d in ("mon", "tue", "wed", "thu", "fri")}
EVERY_DAY_8_18 = {**WEEKDAYS_8_18, "sat": [["08:00", "18:00"]], "sun": [["08:00", "18:00"]]}
HOUR = 3600


def local(
    zone: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0
) -> datetime:
    """A local wall-clock time (first occurrence if ambiguous) as UTC."""
    return datetime(year, month, day, hour, minute, tzinfo=zone).astimezone(UTC)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def berlin_office(holidays: tuple[str, ...] = ()) -> Calendar:
    return business_calendar("Europe/Berlin", WEEKDAYS_8_18, holidays)


# ------------------------------------------------------------------ 24x7
def test_always_on_counts_every_second() -> None:
    cal = always_on()
    start = utc(2024, 3, 30, 23, 0)
    assert cal.add(start, 4 * HOUR) == utc(2024, 3, 31, 3, 0)
    assert cal.elapsed(start, utc(2024, 3, 31, 3, 0)) == 4 * HOUR
    assert cal.elapsed(start, start - timedelta(seconds=5)) == 0.0
    assert cal.add(start, 0) == start


def test_always_on_returns_utc_for_any_aware_input() -> None:
    start = datetime(2024, 6, 1, 12, 0, tzinfo=BERLIN)
    result = always_on().add(start, 60)
    assert result.tzinfo is UTC
    assert result == utc(2024, 6, 1, 10, 1)


@pytest.mark.parametrize("cal", [always_on(), berlin_office()], ids=["24x7", "business"])
def test_naive_datetimes_and_negative_amounts_are_refused(cal: Calendar) -> None:
    naive = datetime(2024, 6, 14, 12, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        cal.add(naive, 60)
    with pytest.raises(ValueError, match="timezone-aware"):
        cal.elapsed(utc(2024, 6, 14), naive)
    with pytest.raises(ValueError, match=">= 0"):
        cal.add(utc(2024, 6, 14), -1)
    with pytest.raises(ValueError, match="finite"):
        cal.add(utc(2024, 6, 14), float("nan"))


# ------------------------------------------------------------------ business hours
def test_four_hours_from_friday_afternoon_are_due_monday_morning() -> None:
    cal = berlin_office()
    start = local(BERLIN, 2024, 6, 14, 16, 0)  # a Friday
    due = cal.add(start, 4 * HOUR)
    assert due == local(BERLIN, 2024, 6, 17, 10, 0)
    assert due == utc(2024, 6, 17, 8, 0)
    assert cal.elapsed(start, due) == 4 * HOUR


def test_a_monday_holiday_moves_the_due_time_to_tuesday() -> None:
    start = local(BERLIN, 2024, 5, 17, 16, 0)  # Friday before Whit Monday
    assert berlin_office().add(start, 4 * HOUR) == local(BERLIN, 2024, 5, 20, 10, 0)
    with_holiday = berlin_office(("2024-05-20",))
    assert with_holiday.add(start, 4 * HOUR) == local(BERLIN, 2024, 5, 21, 10, 0)
    monday_noon = local(BERLIN, 2024, 5, 20, 12, 0)
    assert with_holiday.elapsed(start, monday_noon) == 2 * HOUR


def test_holidays_may_be_dates() -> None:
    cal = business_calendar("Europe/Berlin", WEEKDAYS_8_18, [date(2024, 5, 20)])
    start = local(BERLIN, 2024, 5, 17, 16, 0)
    assert cal.add(start, 4 * HOUR) == local(BERLIN, 2024, 5, 21, 10, 0)


@pytest.mark.parametrize(
    ("zone", "friday", "expected_utc"),
    [
        # Europe/Berlin: CET -> CEST on Sunday 2024-03-31, CEST -> CET on Sunday 2024-10-27
        ("Europe/Berlin", (2024, 3, 29), utc(2024, 4, 1, 8, 0)),
        ("Europe/Berlin", (2024, 10, 25), utc(2024, 10, 28, 9, 0)),
        # America/New_York: EST -> EDT on 2024-03-10, EDT -> EST on 2024-11-03
        ("America/New_York", (2024, 3, 8), utc(2024, 3, 11, 14, 0)),
        ("America/New_York", (2024, 11, 1), utc(2024, 11, 4, 15, 0)),
    ],
)
def test_due_instant_over_a_dst_weekend_is_right_in_utc(
    zone: str, friday: tuple[int, int, int], expected_utc: datetime
) -> None:
    tz = ZoneInfo(zone)
    cal = business_calendar(zone, WEEKDAYS_8_18, ())
    start = local(tz, *friday, 16, 0)
    due = cal.add(start, 4 * HOUR)
    assert due == expected_utc
    assert due.astimezone(tz).hour == 10  # still 10:00 local after the change
    assert cal.elapsed(start, due) == 4 * HOUR


def test_business_hours_on_the_dst_sunday_itself_stay_local() -> None:
    cal = business_calendar("Europe/Berlin", EVERY_DAY_8_18, ())
    saturday_5pm = local(BERLIN, 2024, 3, 30, 17, 0)  # CET, 16:00 UTC
    due = cal.add(saturday_5pm, 2 * HOUR)
    assert due == utc(2024, 3, 31, 7, 0)  # Sunday 09:00 CEST
    autumn = local(BERLIN, 2024, 10, 26, 17, 0)  # CEST, 15:00 UTC
    assert cal.add(autumn, 2 * HOUR) == utc(2024, 10, 27, 8, 0)  # Sunday 09:00 CET


def test_a_whole_local_day_has_its_real_length_on_dst_days() -> None:
    cal = business_calendar("Europe/Berlin", {"sun": [["00:00", "24:00"]]}, ())
    spring = cal.elapsed(local(BERLIN, 2024, 3, 31, 0, 0), local(BERLIN, 2024, 4, 1, 0, 0))
    autumn = cal.elapsed(local(BERLIN, 2024, 10, 27, 0, 0), local(BERLIN, 2024, 10, 28, 0, 0))
    assert spring == 23 * HOUR
    assert autumn == 25 * HOUR


def test_nonexistent_and_ambiguous_local_times_are_resolved_deterministically() -> None:
    # spring gap 02:00-03:00 Berlin: 02:30 opens at the end of the gap (03:00 CEST)
    gap = business_calendar("Europe/Berlin", {"sun": [["02:30", "04:00"]]}, ())
    day = (utc(2024, 3, 30, 0, 0), utc(2024, 4, 1, 0, 0))
    assert gap.elapsed(*day) == 1 * HOUR
    assert gap.add(day[0], 1) == utc(2024, 3, 31, 1, 0, 1)
    inside_gap = business_calendar("Europe/Berlin", {"sun": [["02:10", "02:50"]]}, ())
    assert inside_gap.elapsed(*day) == 0.0
    # autumn: 02:00 happens twice; the first occurrence (CEST) opens the interval
    ambiguous = business_calendar("Europe/Berlin", {"sun": [["02:00", "03:00"]]}, ())
    autumn = (utc(2024, 10, 26, 0, 0), utc(2024, 10, 28, 0, 0))
    assert ambiguous.elapsed(*autumn) == 2 * HOUR
    assert ambiguous.add(autumn[0], 1) == utc(2024, 10, 27, 0, 0, 1)


def test_several_intervals_per_day_skip_the_lunch_break() -> None:
    hours = {"mon": [["13:00", "17:00"], ["08:00", "12:00"]]}  # order does not matter
    cal = business_calendar("Europe/Berlin", hours, ())
    eleven = local(BERLIN, 2024, 6, 17, 11, 0)
    assert cal.add(eleven, 2 * HOUR) == local(BERLIN, 2024, 6, 17, 14, 0)
    assert cal.elapsed(eleven, local(BERLIN, 2024, 6, 17, 14, 0)) == 2 * HOUR
    assert cal.elapsed(local(BERLIN, 2024, 6, 17, 0, 0), local(BERLIN, 2024, 6, 18)) == 8 * HOUR
    # Monday 16:00 + 2 h: one hour today, one next Monday
    assert cal.add(local(BERLIN, 2024, 6, 17, 16), 2 * HOUR) == local(BERLIN, 2024, 6, 24, 9)


def test_a_day_may_end_at_midnight() -> None:
    cal = business_calendar("UTC", {"fri": [["20:00", "24:00"]], "sat": [["00:00", "02:00"]]}, ())
    assert cal.add(utc(2024, 6, 14, 23, 0), 2 * HOUR) == utc(2024, 6, 15, 1, 0)
    assert cal.elapsed(utc(2024, 6, 14), utc(2024, 6, 16)) == 6 * HOUR


def test_zero_outside_hours_is_start_and_a_positive_amount_waits_for_the_opening() -> None:
    cal = berlin_office()
    saturday = local(BERLIN, 2024, 6, 15, 10, 0)
    assert cal.add(saturday, 0) == saturday
    assert cal.add(saturday, 1) == local(BERLIN, 2024, 6, 17, 8, 0) + timedelta(seconds=1)
    assert cal.elapsed(saturday, local(BERLIN, 2024, 6, 16, 23, 0)) == 0.0


def test_an_amount_ending_at_closing_time_returns_the_closing_time() -> None:
    cal = berlin_office()
    friday_4pm = local(BERLIN, 2024, 6, 14, 16, 0)
    assert cal.add(friday_4pm, 2 * HOUR) == local(BERLIN, 2024, 6, 14, 18, 0)


def test_thirty_business_days_end_six_weeks_later() -> None:
    cal = berlin_office()
    monday_8am = local(BERLIN, 2024, 6, 3, 8, 0)
    due = cal.add(monday_8am, 30 * 10 * HOUR)
    assert due == local(BERLIN, 2024, 7, 12, 18, 0)  # the Friday of the sixth week
    assert cal.elapsed(monday_8am, due) == 30 * 10 * HOUR


# ------------------------------------------------------------------ properties
@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York"])
def test_add_of_elapsed_lands_on_an_end_inside_business_hours(zone: str) -> None:
    hours = {
        **{d: [["08:00", "12:00"], ["13:00", "18:00"]] for d in ("mon", "tue", "wed", "thu")},
        "fri": [["08:00", "15:30"]],
        "sun": [["01:30", "03:30"]],  # spans the hours that DST changes skip or repeat
    }
    cal = business_calendar(zone, hours, ("2024-03-11", "2024-12-25"))
    assert isinstance(cal, BusinessCalendar)
    rng = random.Random(20240331)
    year_start = utc(2024, 1, 1)
    checked = 0
    while checked < 300:
        start = year_start + timedelta(seconds=rng.randrange(366 * 86400))
        day = (start + timedelta(days=rng.randrange(60))).astimezone(ZoneInfo(zone)).date()
        intervals = cal.intervals(day)
        if not intervals:
            continue
        opens, closes = rng.choice(intervals)
        # an end strictly after an opening (at an opening add() returns the previous close)
        end = opens + timedelta(
            microseconds=rng.randrange(1, (closes - opens) // timedelta(microseconds=1) + 1)
        )
        if end <= start:
            continue
        assert cal.add(start, cal.elapsed(start, end)) == end
        checked += 1


@pytest.mark.parametrize(
    "cal",
    [always_on(), business_calendar("America/New_York", WEEKDAYS_8_18, ("2024-07-04",))],
    ids=["24x7", "business"],
)
def test_elapsed_of_add_is_the_amount_and_adds_compose(cal: Calendar) -> None:
    rng = random.Random(7)
    for _ in range(200):
        start = utc(2024, 1, 1) + timedelta(seconds=rng.randrange(366 * 86400))
        a, b = rng.randrange(1, 40 * HOUR), rng.randrange(1, 40 * HOUR)
        assert cal.elapsed(start, cal.add(start, a)) == a
        assert cal.add(cal.add(start, a), b) == cal.add(start, a + b)


# ------------------------------------------------------------------ configuration
@pytest.mark.parametrize(
    ("hours", "message"),
    [
        ({"monday": [["08:00", "18:00"]]}, r"business_hours: unknown weekday 'monday'"),
        ({"mon": [["8:00", "18:00"]]}, r"business_hours\.mon\[0\]: '8:00' is not a time HH:MM"),
        ({"tue": [["08:00", "25:00"]]}, r"business_hours\.tue\[0\]: '25:00' is not a time"),
        ({"wed": [["24:00", "24:00"]]}, r"business_hours\.wed\[0\]: '24:00' is not a time"),
        ({"thu": [["18:00", "08:00"]]}, r"business_hours\.thu\[0\]: end 08:00 must be after"),
        ({"fri": [["08:00", "08:00"]]}, r"business_hours\.fri\[0\]: end 08:00 must be after"),
        ({"fri": [["08:00", "12:00"], ["11:00", "13:00"]]}, r"business_hours\.fri: .*overlap"),
        ({"sat": [["08:00"]]}, r"business_hours\.sat\[0\]: expected a \[\"HH:MM\", \"HH:MM\"\]"),
        ({"sun": "08:00-18:00"}, r"business_hours\.sun: expected a list"),
        ({"mon": []}, r"business_hours: a business calendar needs opening hours"),
        ({}, r"business_hours: a business calendar needs opening hours"),
    ],
)
def test_bad_hours_are_refused_naming_the_field(hours: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        business_calendar("Europe/Berlin", hours, ())  # type: ignore[arg-type]


def test_an_unknown_zone_and_a_bad_holiday_are_refused() -> None:
    with pytest.raises(ValueError, match=r"timezone: unknown time zone 'Mars/Olympus'"):
        business_calendar("Mars/Olympus", WEEKDAYS_8_18, ())
    with pytest.raises(ValueError, match=r"timezone: unknown"):
        business_calendar("../etc/passwd", WEEKDAYS_8_18, ())
    with pytest.raises(ValueError, match=r"holidays\[1\]: '2024-13-01' is not an ISO date"):
        business_calendar("UTC", WEEKDAYS_8_18, ("2024-12-25", "2024-13-01"))


def test_calendar_of_a_policy_kind() -> None:
    assert isinstance(calendar_of("24x7", "UTC", {}, ()), AlwaysOn)
    assert isinstance(calendar_of("business", "UTC", WEEKDAYS_8_18, ()), BusinessCalendar)
    with pytest.raises(ValueError, match="calendar: unknown kind 'weekdays'"):
        calendar_of("weekdays", "UTC", WEEKDAYS_8_18, ())
