"""The auto-assignment choice on real rows, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from sqlalchemy import insert, text

from services.db import Database, table_of
from tests.conftest import eventually
from tests.work_order_helpers import order_row
from ticketing.dispatch.assign import (
    Candidate,
    candidates,
    choose_technician,
    open_order_counts,
)
from ticketing.tables import Site, SlaClock, Team, Technician, WorkOrder

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


async def add_site(db: Database, site_id: str, region: str | None) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(
            insert(table_of(Site)).values(id=site_id, name=site_id, region=region, created_at=NOW)
        )


async def add_team(db: Database, name: str) -> int:
    async with db.engine.begin() as conn:
        result = await conn.execute(
            insert(table_of(Team))
            .values(name=name, contract_type="vendor", created_at=NOW)
            .returning(table_of(Team).c.id)
        )
        team_id: int = result.scalar_one()
    return team_id


async def add_tech(db: Database, name: str, **fields: Any) -> int:
    row = {
        "name": name,
        "skills": ["dc-power"],
        "regions": ["north"],
        "sites": [],
        "on_duty": True,
        "max_concurrent": 3,
        "created_at": NOW,
        **fields,
    }
    async with db.engine.begin() as conn:
        result = await conn.execute(
            insert(table_of(Technician)).values(row).returning(table_of(Technician).c.id)
        )
        tech_id: int = result.scalar_one()
    return tech_id


async def add_order(
    db: Database,
    assignee_id: int | None,
    state: str = "dispatched",
    *,
    due_in: timedelta | None = None,
    clock_state: str = "running",
) -> int:
    row = order_row(assignee_id, state, at=NOW)
    orders = table_of(WorkOrder)
    async with db.engine.begin() as conn:
        order_id: int = (
            await conn.execute(insert(orders).values(row).returning(orders.c.id))
        ).scalar_one()
        if due_in is not None:
            await conn.execute(
                insert(table_of(SlaClock)).values(
                    order_id=order_id,
                    target="resolution",
                    target_s=86400,
                    state=clock_state,
                    started_at=NOW,
                    due_at=NOW + due_in,
                )
            )
    return order_id


async def choose(db: Database, **need: Any) -> Candidate | None:
    values: dict[str, Any] = {"site_id": "depot-1", "region": None, "skill": "dc-power", **need}
    async with db.engine.begin() as conn:
        return await conn.run_sync(partial(choose_technician, now=NOW, **values))


async def chosen_id(db: Database, **need: Any) -> int | None:
    candidate = await choose(db, **need)
    return None if candidate is None else candidate.technician_id


async def test_skill_filter(db: Database) -> None:
    await add_site(db, "depot-1", "north")
    await add_tech(db, "ac only", skills=["ac-power"])
    dc = await add_tech(db, "dc", skills=["ac-power", "dc-power"])
    assert await chosen_id(db) == dc
    assert await chosen_id(db, skill="hv-battery") is None
    assert await chosen_id(db, skill=None) is not None


async def test_site_and_region_coverage(db: Database) -> None:
    await add_site(db, "depot-1", "north")
    await add_site(db, "depot-2", None)
    south = await add_tech(db, "south", regions=["south"], sites=["depot-2"])
    north = await add_tech(db, "north", regions=["north"])
    await add_tech(db, "unconfigured", regions=[], sites=[])
    # the site's region is looked up when not given
    assert await chosen_id(db, site_id="depot-1") == north
    # a site without a region: only technicians who list it
    assert await chosen_id(db, site_id="depot-2") == south
    # an explicit region wins over the lookup
    assert await chosen_id(db, site_id="depot-1", region="south") == south
    # no site: nobody but wildcard technicians
    assert await chosen_id(db, site_id=None) is None
    anywhere = await add_tech(db, "anywhere", regions=["*"])
    assert await chosen_id(db, site_id=None) == anywhere


async def test_off_duty_and_declined_are_skipped(db: Database) -> None:
    await add_site(db, "depot-1", "north")
    await add_tech(db, "off", on_duty=False)
    declined = await add_tech(db, "declined")
    assert await chosen_id(db) == declined
    assert await chosen_id(db, exclude=[declined]) is None


async def test_max_concurrent_counts_open_assigned_orders_only(db: Database) -> None:
    await add_site(db, "depot-1", "north")
    busy = await add_tech(db, "busy", max_concurrent=2)
    await add_order(db, busy, "accepted")
    await add_order(db, busy, "on_hold")
    await add_order(db, busy, "closed")
    await add_order(db, busy, "resolved")
    assert await counts(db, [busy]) == {busy: 2}
    assert await chosen_id(db) is None
    spare = await add_tech(db, "spare", max_concurrent=1)
    assert await chosen_id(db) == spare


async def counts(db: Database, ids: list[int] | None) -> dict[int, int]:
    async with db.engine.connect() as conn:
        return await conn.run_sync(open_order_counts, ids)


async def test_fewest_open_orders_wins(db: Database) -> None:
    await add_site(db, "depot-1", "north")
    two = await add_tech(db, "two")
    one = await add_tech(db, "one")
    await add_order(db, two, "dispatched")
    await add_order(db, two, "en_route")
    await add_order(db, one, "on_site")
    candidate = await choose(db)
    assert candidate is not None
    assert (candidate.technician_id, candidate.open_orders) == (one, 1)
    async with db.engine.connect() as conn:
        ranked = await conn.run_sync(
            partial(candidates, site_id="depot-1", region=None, skill="dc-power", now=NOW)
        )
    assert [c.technician_id for c in ranked] == [one, two]
    assert await counts(db, None) == {two: 2, one: 1}


async def test_tie_broken_by_sla_risk(db: Database) -> None:
    await add_site(db, "depot-1", "north")
    urgent = await add_tech(db, "urgent")
    relaxed = await add_tech(db, "relaxed")
    await add_order(db, urgent, due_in=timedelta(minutes=20))
    await add_order(db, relaxed, due_in=timedelta(hours=6))
    # a paused clock does not tick: it does not make its technician look at risk
    await add_order(db, relaxed, "on_hold", due_in=timedelta(minutes=1), clock_state="paused")
    await add_order(db, urgent, "on_hold")
    candidate = await choose(db)
    assert candidate is not None
    assert candidate.technician_id == relaxed
    assert candidate.earliest_due == NOW + timedelta(hours=6)
    # nothing due at all beats any slack
    idle_clockless = await add_tech(db, "clockless")
    await add_order(db, idle_clockless)
    await add_order(db, idle_clockless)
    assert await chosen_id(db) == idle_clockless


async def test_team_restriction(db: Database) -> None:
    await add_site(db, "depot-1", "north")
    vendor = await add_team(db, "vendor")
    await add_tech(db, "own staff")
    contractor = await add_tech(db, "contractor", team_id=vendor)
    await add_order(db, contractor)
    assert await chosen_id(db, team_id=vendor) == contractor
    other = await add_team(db, "partner")
    assert await chosen_id(db, team_id=other) is None


async def lock_waiters(db: Database) -> int:
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    async with db.engine.connect() as conn:
        waiting: int = (await conn.execute(query)).scalar_one()
    return waiting


async def test_concurrent_choices_do_not_overfill_a_technician(db: Database) -> None:
    if db.dialect != "postgresql":
        pytest.skip("SQLite has a single writer (the group committer): no concurrent choice")
    await add_site(db, "depot-1", "north")
    first = await add_tech(db, "first", max_concurrent=1)
    second = await add_tech(db, "second", max_concurrent=1)
    async with db.engine.connect() as conn:
        await conn.begin()
        mine = await conn.run_sync(
            partial(choose_technician, site_id="depot-1", region=None, skill=None, now=NOW)
        )
        assert mine is not None and mine.technician_id == first
        await conn.execute(insert(table_of(WorkOrder)).values(order_row(first, at=NOW)))
        # another replica ranks `first` best too (the order is not committed yet) and
        # must wait for the lock, then see the committed order and fall back
        other = asyncio.create_task(choose(db, skill=None))
        await eventually(lambda: lock_waiters(db))
        await conn.commit()
    theirs = await other
    assert theirs is not None and theirs.technician_id == second
