"""SLA calendars: which seconds count towards a target (pure; no database, no clock).

A :class:`Calendar` measures calendar seconds between two instants and finds the instant
at which a number of calendar seconds has elapsed. ``always_on`` counts every second
(24x7); a business calendar counts only the opening hours of its time zone, minus holidays.
Inputs and outputs are timezone-aware datetimes (naive ones are refused); outputs are UTC.

Decisions:

- Opening hours are local wall-clock times. Each local day's intervals are turned into real
  UTC instants, so a 08:00-18:00 day is 08:00-18:00 local on both sides of a daylight
  saving change, and a day whose interval spans the change has its real length (9 h or
  11 h for 00:00-10:00 on a spring-forward or fall-back day).
- A local time that does not exist (spring-forward gap) moves forward to the first instant
  after the gap (02:30 on the Berlin spring-forward day is 03:00 CEST); an ambiguous local
  time (fall-back) is its first occurrence (``fold=0``). Both rules keep the mapping
  monotonic, so intervals never overlap.
- ``add(start, 0)`` returns ``start`` even outside business hours; a positive amount that
  starts outside hours begins counting at the next opening. ``add`` returns the earliest
  instant at which the amount has elapsed, so an amount ending exactly at a closing time
  returns that closing time, not the next opening.
- Work is day by day over intervals (each local day's UTC intervals are cached), never
  second by second: adding 30 business days looks at about 42 days.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from ticketing.sla.hours import WeekHours, parse_holidays, parse_hours, parse_zone

CALENDAR_KINDS = ("24x7", "business")
#: ``add`` gives up after this many days without enough business time (a guard, not a rule)
MAX_SEARCH_DAYS = 366 * 50
_DAY_CACHE_SIZE = 4096

UtcInterval = tuple[datetime, datetime]


class Calendar(Protocol):
    def elapsed(self, start: datetime, end: datetime) -> float:
        """Calendar seconds in ``[start, end)``; 0 if ``end <= start``."""
        ...

    def add(self, start: datetime, seconds: float) -> datetime:
        """The UTC instant at which ``seconds`` calendar seconds after ``start`` elapsed."""
        ...


def aware_utc(value: datetime, name: str = "datetime") -> datetime:
    """``value`` in UTC; ValueError if it is naive."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(UTC)


def _amount(seconds: float) -> timedelta:
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
    return timedelta(seconds=seconds)


class AlwaysOn:
    """24x7: every wall-clock second counts."""

    def elapsed(self, start: datetime, end: datetime) -> float:
        start, end = aware_utc(start, "start"), aware_utc(end, "end")
        return max(0.0, (end - start).total_seconds())

    def add(self, start: datetime, seconds: float) -> datetime:
        return aware_utc(start, "start") + _amount(seconds)


class BusinessCalendar:
    """Weekly opening hours in one time zone, minus holidays (see the module docstring)."""

    def __init__(self, zone: ZoneInfo, week: WeekHours, holidays: frozenset[date]) -> None:
        if week.is_closed_all_week:
            raise ValueError("business_hours: a business calendar needs opening hours")
        self.zone = zone
        self.week = week
        self.holidays = holidays
        self._days: dict[date, tuple[UtcInterval, ...]] = {}

    def elapsed(self, start: datetime, end: datetime) -> float:
        start, end = aware_utc(start, "start"), aware_utc(end, "end")
        if end <= start:
            return 0.0
        total = timedelta()
        last = self._local_date(end) + timedelta(days=1)
        for day in self._days_from(start):
            if day > last:
                break
            for opens, closes in self.intervals(day):
                lo, hi = max(opens, start), min(closes, end)
                if hi > lo:
                    total += hi - lo
        return total.total_seconds()

    def add(self, start: datetime, seconds: float) -> datetime:
        start = aware_utc(start, "start")
        remaining = _amount(seconds)
        if not remaining:
            return start
        for searched, day in enumerate(self._days_from(start)):
            if searched > MAX_SEARCH_DAYS:
                break
            for opens, closes in self.intervals(day):
                if closes <= start:
                    continue
                lo = max(opens, start)
                if remaining <= closes - lo:
                    return lo + remaining
                remaining -= closes - lo
        raise ValueError(f"no {seconds} s of business time within {MAX_SEARCH_DAYS} days")

    def intervals(self, day: date) -> tuple[UtcInterval, ...]:
        """The business intervals of one local date as UTC instants (cached)."""
        cached = self._days.get(day)
        if cached is None:
            cached = self._compute(day)
            if len(self._days) >= _DAY_CACHE_SIZE:
                self._days.clear()
            self._days[day] = cached
        return cached

    def _compute(self, day: date) -> tuple[UtcInterval, ...]:
        if day in self.holidays:
            return ()
        result: list[UtcInterval] = []
        for start_min, end_min in self.week.days[day.weekday()]:
            opens = local_instant(self.zone, day, start_min)
            closes = local_instant(self.zone, day, end_min)
            if closes > opens:  # an interval wholly inside a DST gap has no time
                result.append((opens, closes))
        return tuple(result)

    def _local_date(self, instant: datetime) -> date:
        return instant.astimezone(self.zone).date()

    def _days_from(self, start: datetime) -> Iterator[date]:
        # from the day before: harmless, and safe whatever the zone does around midnight
        day = self._local_date(start) - timedelta(days=1)
        while True:
            yield day
            day += timedelta(days=1)


def local_instant(zone: ZoneInfo, day: date, minute: int) -> datetime:
    """The UTC instant of ``minute`` minutes after local midnight of ``day`` (1440 is the
    next midnight): first occurrence if ambiguous, end of the gap if it does not exist."""
    local = datetime.combine(day, time()) + timedelta(minutes=minute)
    instant = local.replace(tzinfo=zone).astimezone(UTC)  # fold=0
    if instant.astimezone(zone).replace(tzinfo=None) == local:
        return instant
    return _gap_end(zone, local)


def _gap_end(zone: ZoneInfo, local: datetime) -> datetime:
    """The transition instant that skipped the nonexistent local time ``local``.

    fold=1 reads ``local`` with the offset after the change (an instant before it), fold=0
    with the offset before (an instant after it); bisect the whole seconds in between
    (tz transitions fall on whole seconds)."""
    lo = int(local.replace(tzinfo=zone, fold=1).timestamp())
    hi = int(local.replace(tzinfo=zone, fold=0).timestamp())
    before = datetime.fromtimestamp(lo, zone).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return datetime.fromtimestamp(hi, UTC)


_ALWAYS_ON = AlwaysOn()


def always_on() -> Calendar:
    return _ALWAYS_ON


def business_calendar(
    timezone: str,
    hours: Mapping[str, Sequence[Sequence[str]]],
    holidays: Iterable[str | date],
) -> Calendar:
    """A business-hours calendar; ValueError naming the bad field if the config is wrong."""
    return BusinessCalendar(parse_zone(timezone), parse_hours(hours), parse_holidays(holidays))


def calendar_of(
    policy_kind: str,
    timezone: str,
    business_hours: Mapping[str, Sequence[Sequence[str]]],
    holidays: Iterable[str | date],
) -> Calendar:
    """The calendar a policy describes: ``"24x7"`` or ``"business"``."""
    if policy_kind == "24x7":
        return always_on()
    if policy_kind == "business":
        return business_calendar(timezone, business_hours, holidays)
    raise ValueError(f"calendar: unknown kind {policy_kind!r} (use {' or '.join(CALENDAR_KINDS)})")
