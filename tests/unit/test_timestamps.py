"""Charger timestamps: read leniently into aware UTC datetimes, written as RFC 3339 UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from csms.protocol.timestamps import format_timestamp, parse_timestamp

T = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-27T10:00:00Z", T),
        ("2026-11-27T10:00:00z", T),
        ("2026-11-27T10:00:00+00:00", T),
        ("2026-11-27T11:00:00+01:00", T),
        ("2026-11-27T05:00:00-05:00", T),
        ("2026-11-27T10:00:00.123Z", T.replace(microsecond=123000)),
        ("2026-11-27T10:00:00.123456Z", T.replace(microsecond=123456)),
        # No zone: read as UTC (many chargers send local-less timestamps).
        ("2026-11-27T10:00:00", T),
        ("  2026-11-27T10:00:00Z  ", T),
    ],
)
def test_parse(text: str, expected: datetime) -> None:
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed is not None
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", [None, "", "yesterday", "2026-13-01T00:00:00Z", "Z"])
def test_unreadable_is_none(text: str | None) -> None:
    assert parse_timestamp(text) is None


def test_format_is_utc_with_milliseconds_and_z() -> None:
    assert format_timestamp(T) == "2026-11-27T10:00:00.000Z"
    assert format_timestamp(T.replace(microsecond=123999)) == "2026-11-27T10:00:00.123Z"
    plus_two = timezone(timedelta(hours=2))
    assert format_timestamp(datetime(2026, 11, 27, 12, 0, tzinfo=plus_two)) == (
        "2026-11-27T10:00:00.000Z"
    )


def test_round_trip() -> None:
    value = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert parse_timestamp(format_timestamp(value)) == value
