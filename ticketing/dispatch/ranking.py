"""Who may take an order and in which order to offer it: pure functions over plain data.

Decisions (the auto-assignment rules):

- *Coverage.* A technician covers an order when the order's site is in their ``sites``,
  or the site's region is in their ``regions``, or their ``regions`` holds the wildcard
  ``"*"`` (network-wide). A technician whose ``sites`` and ``regions`` are both empty
  covers nothing: an unconfigured person is never dispatched by accident. An order
  without a site (``site_id`` None, e.g. a manual order not tied to a charger) goes
  only to wildcard technicians, since nobody else can be known to be near it.
- *Eligibility.* On duty; holds the needed skill (``None`` = no skill needed); covers
  the order; not in ``exclude`` (those who declined it); fewer open orders than their
  ``max_concurrent``; a member of ``team_id`` when one is given (escalation to a team).
- *Ranking.* Fewest open orders first; ties go to the technician with the most SLA
  slack: the time from ``now`` to the earliest ``due_at`` among their own open orders'
  running/warning clocks, none at all being best. Slack is clamped at zero: once a
  technician's most urgent order is overdue, it is late whichever one is more so, and
  the tie falls through to the technician id, which makes the choice deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

WILDCARD_REGION = "*"


@dataclass(frozen=True)
class Candidate:
    """An eligible technician, as offered to an order."""

    technician_id: int
    name: str
    team_id: int | None
    open_orders: int
    earliest_due: datetime | None


@dataclass(frozen=True)
class TechnicianFacts:
    """What the ranking needs to know of one technician."""

    id: int
    name: str
    team_id: int | None
    on_duty: bool
    skills: frozenset[str]
    regions: frozenset[str]
    sites: frozenset[str]
    max_concurrent: int
    open_orders: int
    earliest_due: datetime | None


@dataclass(frozen=True)
class Need:
    """What an order asks of its technician."""

    site_id: str | None
    region: str | None
    skill: str | None
    exclude: frozenset[int] = frozenset()
    team_id: int | None = None


def covers(tech: TechnicianFacts, site_id: str | None, region: str | None) -> bool:
    if WILDCARD_REGION in tech.regions:
        return True
    if site_id is not None and site_id in tech.sites:
        return True
    return region is not None and region in tech.regions


def eligible(tech: TechnicianFacts, need: Need) -> bool:
    return (
        tech.on_duty
        and (need.skill is None or need.skill in tech.skills)
        and covers(tech, need.site_id, need.region)
        and tech.id not in need.exclude
        and tech.open_orders < tech.max_concurrent
        and (need.team_id is None or tech.team_id == need.team_id)
    )


def slack_s(earliest_due: datetime | None, now: datetime) -> float | None:
    """Seconds until the technician's most urgent due time (>= 0), None if nothing is due."""
    if earliest_due is None:
        return None
    return max(0.0, (earliest_due - now).total_seconds())


def _sort_key(tech: TechnicianFacts, now: datetime) -> tuple[int, int, float, int]:
    slack = slack_s(tech.earliest_due, now)
    # nothing due sorts before any slack; more slack sorts before less
    return (tech.open_orders, 0 if slack is None else 1, -(slack or 0.0), tech.id)


def rank(techs: Iterable[TechnicianFacts], need: Need, now: datetime) -> list[Candidate]:
    """The eligible technicians, best first."""
    chosen = sorted((t for t in techs if eligible(t, need)), key=lambda t: _sort_key(t, now))
    return [
        Candidate(
            technician_id=t.id,
            name=t.name,
            team_id=t.team_id,
            open_orders=t.open_orders,
            earliest_due=t.earliest_due,
        )
        for t in chosen
    ]
