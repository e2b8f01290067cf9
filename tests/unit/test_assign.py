"""The auto-assignment ranking, on plain data (no database)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from ticketing.dispatch.ranking import Need, TechnicianFacts, covers, eligible, rank, slack_s

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
BASE = TechnicianFacts(
    id=1,
    name="Ana",
    team_id=None,
    on_duty=True,
    skills=frozenset({"dc-power"}),
    regions=frozenset({"north"}),
    sites=frozenset(),
    max_concurrent=3,
    open_orders=0,
    earliest_due=None,
)
NEED = Need(site_id="depot-1", region="north", skill="dc-power")


def tech(id_: int, **changes: object) -> TechnicianFacts:
    return replace(BASE, id=id_, name=f"t{id_}", **changes)  # type: ignore[arg-type]


def ids(techs: list[TechnicianFacts], need: Need = NEED) -> list[int]:
    return [c.technician_id for c in rank(techs, need, NOW)]


def test_coverage_by_site_region_and_wildcard() -> None:
    by_site = tech(1, regions=frozenset(), sites=frozenset({"depot-1"}))
    by_region = tech(2)
    wildcard = tech(3, regions=frozenset({"*"}))
    elsewhere = tech(4, regions=frozenset({"south"}), sites=frozenset({"depot-2"}))
    nothing = tech(5, regions=frozenset(), sites=frozenset())
    assert [covers(t, "depot-1", "north") for t in (by_site, by_region, wildcard)] == [True] * 3
    assert not covers(elsewhere, "depot-1", "north")
    assert not covers(nothing, "depot-1", "north")


def test_order_without_site_goes_only_to_wildcard_technicians() -> None:
    need = Need(site_id=None, region=None, skill=None)
    assert ids([tech(1), tech(2, regions=frozenset({"*"}))], need) == [2]


def test_site_without_region_is_covered_only_by_listing_or_wildcard() -> None:
    need = Need(site_id="depot-9", region=None, skill=None)
    listed = tech(1, sites=frozenset({"depot-9"}))
    assert ids([tech(2), listed, tech(3, regions=frozenset({"*"}))], need) == [1, 3]


def test_skill_duty_capacity_exclusion_and_team() -> None:
    assert not eligible(tech(1, skills=frozenset({"ac"})), NEED)
    assert eligible(tech(1, skills=frozenset()), replace(NEED, skill=None))
    assert not eligible(tech(1, on_duty=False), NEED)
    assert not eligible(tech(1, open_orders=3), NEED)
    assert eligible(tech(1, open_orders=2), NEED)
    assert not eligible(tech(1), replace(NEED, exclude=frozenset({1})))
    assert not eligible(tech(1, team_id=7), replace(NEED, team_id=8))
    assert eligible(tech(1, team_id=8), replace(NEED, team_id=8))


def test_fewest_open_orders_first() -> None:
    assert ids([tech(1, open_orders=2), tech(2, open_orders=0), tech(3, open_orders=1)]) == [
        2,
        3,
        1,
    ]


def test_tie_goes_to_most_sla_slack_and_nothing_due_is_best() -> None:
    soon = tech(1, open_orders=1, earliest_due=NOW + timedelta(minutes=10))
    later = tech(2, open_orders=1, earliest_due=NOW + timedelta(hours=4))
    nothing_due = tech(3, open_orders=1)
    assert ids([soon, later, nothing_due]) == [3, 2, 1]


def test_overdue_technicians_tie_and_fall_back_to_id() -> None:
    very_late = tech(1, open_orders=1, earliest_due=NOW - timedelta(hours=5))
    just_late = tech(2, open_orders=1, earliest_due=NOW - timedelta(minutes=1))
    assert slack_s(very_late.earliest_due, NOW) == slack_s(just_late.earliest_due, NOW) == 0.0
    assert ids([just_late, very_late]) == [1, 2]


def test_candidate_carries_the_facts() -> None:
    due = NOW + timedelta(hours=1)
    (candidate,) = rank([tech(4, team_id=2, open_orders=1, earliest_due=due)], NEED, NOW)
    assert (candidate.technician_id, candidate.name, candidate.team_id) == (4, "t4", 2)
    assert (candidate.open_orders, candidate.earliest_due) == (1, due)
