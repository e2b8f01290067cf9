"""A business calendar's configuration: weekly opening hours, holidays and the time zone.

Parses what a policy stores (``{"mon": [["08:00", "18:00"]], ...}``, ISO dates, a zoneinfo
name) into plain values and refuses anything malformed with a ``ValueError`` whose message
starts with the offending field (``business_hours.mon[0]: ...``), so the API can name it.

Decisions: a weekday key that is missing means "closed that day"; ``"24:00"`` is allowed
as an end only; the intervals of one day may not overlap (touching is fine).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = date.weekday()
MINUTES_PER_DAY = 24 * 60

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")

#: one opening interval of a day: (start, end) in minutes after local midnight, end <= 1440
Interval = tuple[int, int]


@dataclass(frozen=True)
class WeekHours:
    """Opening intervals per weekday, Monday first, each day's intervals sorted."""

    days: tuple[tuple[Interval, ...], ...]

    @property
    def is_closed_all_week(self) -> bool:
        return not any(self.days)


def parse_zone(name: str) -> ZoneInfo:
    """The zoneinfo zone called ``name``; ValueError naming ``timezone`` if unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ValueError(f"timezone: unknown time zone {name!r}") from exc


def parse_hours(hours: Mapping[str, Sequence[Sequence[str]]]) -> WeekHours:
    """Validate and normalise weekly opening hours (see the module docstring)."""
    unknown = sorted(str(k) for k in hours if k not in WEEKDAYS)
    if unknown:
        raise ValueError(
            f"business_hours: unknown weekday {', '.join(map(repr, unknown))} "
            f"(use {', '.join(WEEKDAYS)})"
        )
    return WeekHours(tuple(_parse_day(day, hours.get(day, ())) for day in WEEKDAYS))


def parse_holidays(holidays: Iterable[str | date]) -> frozenset[date]:
    """Local dates without any business time; ISO strings or dates."""
    days: set[date] = set()
    for i, value in enumerate(holidays):
        if isinstance(value, date):
            days.add(value)
            continue
        try:
            days.add(date.fromisoformat(value))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"holidays[{i}]: {value!r} is not an ISO date (YYYY-MM-DD)") from exc
    return frozenset(days)


def _parse_day(day: str, intervals: Sequence[Sequence[str]]) -> tuple[Interval, ...]:
    if isinstance(intervals, str) or not isinstance(intervals, Sequence):
        raise ValueError(f"business_hours.{day}: expected a list of [start, end] pairs")
    parsed: list[Interval] = []
    for i, interval in enumerate(intervals):
        where = f"business_hours.{day}[{i}]"
        if isinstance(interval, str) or not isinstance(interval, Sequence) or len(interval) != 2:
            raise ValueError(f'{where}: expected a ["HH:MM", "HH:MM"] pair, got {interval!r}')
        start = _minutes(interval[0], where, allow_midnight_end=False)
        end = _minutes(interval[1], where, allow_midnight_end=True)
        if end <= start:
            raise ValueError(f"{where}: end {interval[1]} must be after start {interval[0]}")
        parsed.append((start, end))
    parsed.sort()
    for (_, end_a), (start_b, _) in zip(parsed, parsed[1:], strict=False):
        if start_b < end_a:
            raise ValueError(f"business_hours.{day}: intervals overlap")
    return tuple(parsed)


def _minutes(value: object, where: str, *, allow_midnight_end: bool) -> int:
    if allow_midnight_end and value == "24:00":
        return MINUTES_PER_DAY
    match = _HHMM.match(value) if isinstance(value, str) else None
    if match is None:
        end_note = ' (or "24:00" as an end)' if allow_midnight_end else ""
        raise ValueError(f"{where}: {value!r} is not a time HH:MM{end_note}")
    return int(match.group(1)) * 60 + int(match.group(2))
