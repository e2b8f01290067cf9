"""The auto-assignment choice: gather the facts in a fixed number of queries, rank them
with :mod:`ticketing.dispatch.ranking` (where the rules are written down), and, to pick
one, confirm the winner under a row lock.

Decision: :func:`choose_technician` runs inside the write transaction that assigns the
order. On PostgreSQL two replicas could both see the same technician below their
``max_concurrent``; so the chosen technician's row is locked (``FOR UPDATE``) and their
facts re-read (READ COMMITTED shows the other replica's committed assignment) before
they are returned. The assigning write must follow in the same transaction. The first
choice waits for its lock; any fallback uses ``SKIP LOCKED`` so that two transactions
never wait on each other's technicians (no deadlock). SQLite has one writer: no race.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection

from services.db import table_of
from ticketing.dispatch.load import NO_LOAD, loads, open_order_counts
from ticketing.dispatch.ranking import Candidate, Need, TechnicianFacts, rank
from ticketing.sites import site_region
from ticketing.tables import Technician

__all__ = ["Candidate", "candidates", "choose_technician", "open_order_counts"]

_techs = table_of(Technician)

Lock = Literal["none", "wait", "skip"]


@functools.cache
def _technicians_query(filters: frozenset[str], lock: Lock) -> Any:
    """The on-duty technicians query filtered by the ``b_*`` parameters named in
    ``filters``, built once per shape (building a Core statement per call cost more than
    running it)."""
    query = select(_techs).where(_techs.c.on_duty.is_(True))
    if "b_team" in filters:
        query = query.where(_techs.c.team_id == bindparam("b_team"))
    if "b_exclude" in filters:
        query = query.where(_techs.c.id.not_in(bindparam("b_exclude", expanding=True)))
    if "b_id" in filters:
        query = query.where(_techs.c.id == bindparam("b_id"))
    if lock != "none":
        query = query.with_for_update(skip_locked=lock == "skip")
    return query


def _facts(
    conn: Connection,
    *,
    team_id: int | None,
    exclude: Collection[int],
    technician_id: int | None = None,
    lock: Lock = "none",
) -> list[TechnicianFacts]:
    """On-duty technicians (optionally one, optionally of one team) with their load:
    two queries whatever their number."""
    params: dict[str, Any] = {}
    if team_id is not None:
        params["b_team"] = team_id
    if exclude:
        params["b_exclude"] = list(exclude)
    if technician_id is not None:
        params["b_id"] = technician_id
    rows = conn.execute(_technicians_query(frozenset(params), lock), params).all()
    if not rows:
        return []
    # the load of one technician is asked by id; of many, read whole (no huge IN list)
    load = loads(conn, None if technician_id is None else [technician_id])
    facts = []
    for row in rows:
        tech_load = load.get(row.id, NO_LOAD)
        facts.append(
            TechnicianFacts(
                id=row.id,
                name=row.name,
                team_id=row.team_id,
                on_duty=row.on_duty,
                skills=frozenset(row.skills),
                regions=frozenset(row.regions),
                sites=frozenset(row.sites),
                max_concurrent=row.max_concurrent,
                open_orders=tech_load.open_orders,
                earliest_due=tech_load.earliest_due,
            )
        )
    return facts


def _need(
    conn: Connection,
    site_id: str | None,
    region: str | None,
    skill: str | None,
    exclude: Collection[int],
    team_id: int | None,
) -> Need:
    if site_id is not None and region is None:
        region = site_region(conn, site_id)
    return Need(site_id, region, skill, frozenset(exclude), team_id)


def candidates(
    conn: Connection,
    *,
    site_id: str | None,
    region: str | None,
    skill: str | None,
    exclude: Collection[int] = (),
    team_id: int | None = None,
    now: datetime,
) -> list[Candidate]:
    """Every technician who may take the order, best first (reads only, locks nothing)."""
    need = _need(conn, site_id, region, skill, exclude, team_id)
    return rank(_facts(conn, team_id=team_id, exclude=need.exclude), need, now)


def choose_technician(
    conn: Connection,
    *,
    site_id: str | None,
    region: str | None,
    skill: str | None,
    exclude: Collection[int] = (),
    team_id: int | None = None,
    now: datetime,
) -> Candidate | None:
    """The best technician for the order, locked for this transaction; None if nobody
    may take it."""
    need = _need(conn, site_id, region, skill, exclude, team_id)
    ranked = rank(_facts(conn, team_id=team_id, exclude=need.exclude), need, now)
    for position, candidate in enumerate(ranked):
        fresh = _facts(
            conn,
            team_id=team_id,
            exclude=need.exclude,
            technician_id=candidate.technician_id,
            lock="wait" if position == 0 else "skip",
        )
        confirmed = rank(fresh, need, now)
        if confirmed:
            return confirmed[0]
    return None
