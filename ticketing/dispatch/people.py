"""Technicians and teams: their records and the writes that keep them consistent.

Decisions:

- Technician names are not unique (two people may share one); ``user_name``, the API
  user acting as the technician, is. Team names are unique.
- A technician's ``sites`` and ``regions`` are slugs not checked against
  ``ticketing_sites``: coverage may be set up before a site is, and a region is no row.
- A technician holding open orders cannot be deleted, nor a team with members (409):
  reassign first. Closed orders keep the id of a deleted assignee as history.
- Rows are locked where replicas could race: deleting a technician locks it (the
  assignment path locks the chosen technician too, so no order lands on someone being
  deleted); joining a team takes a share lock on it, deleting the team an update lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from services.db import table_of
from ticketing.dispatch.load import open_order_counts
from ticketing.dispatch.unique import execute_unique
from ticketing.tables import Team, Technician
from ticketing.tx import Conflict, Invalid, NotFound

TEAM_FIELDS = frozenset({"name", "contract_type", "escalation_contact"})
TECHNICIAN_FIELDS = frozenset(
    {
        "name",
        "contact",
        "skills",
        "regions",
        "sites",
        "team_id",
        "on_duty",
        "max_concurrent",
        "user_name",
    }
)

_teams = table_of(Team)
_techs = table_of(Technician)


@dataclass(frozen=True)
class TeamRecord:
    id: int
    name: str
    contract_type: str
    escalation_contact: str | None
    created_at: datetime
    member_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class TechnicianRecord:
    id: int
    name: str
    contact: str | None
    skills: list[str]
    regions: list[str]
    sites: list[str]
    team_id: int | None
    on_duty: bool
    max_concurrent: int
    user_name: str | None
    created_at: datetime
    open_orders: int


def _pick(values: Mapping[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k in allowed}


# ---------------------------------------------------------------- teams
def _team_record(row: Any, member_ids: tuple[int, ...] = ()) -> TeamRecord:
    return TeamRecord(
        id=row.id,
        name=row.name,
        contract_type=row.contract_type,
        escalation_contact=row.escalation_contact,
        created_at=row.created_at,
        member_ids=member_ids,
    )


def _locked_team(conn: Connection, team_id: int, *, share: bool) -> Any:
    return conn.execute(
        select(_teams).where(_teams.c.id == team_id).with_for_update(read=share)
    ).first()


def get_team(conn: Connection, team_id: int) -> TeamRecord:
    row = conn.execute(select(_teams).where(_teams.c.id == team_id)).first()
    if row is None:
        raise NotFound(f"no team {team_id}")
    members = conn.execute(
        select(_techs.c.id).where(_techs.c.team_id == team_id).order_by(_techs.c.id)
    ).scalars()
    return _team_record(row, tuple(members))


def list_teams(conn: Connection) -> list[TeamRecord]:
    """Every team by name (without member ids: see :func:`get_team`)."""
    return [_team_record(row) for row in conn.execute(select(_teams).order_by(_teams.c.name))]


def create_team(conn: Connection, values: Mapping[str, Any], now: datetime) -> TeamRecord:
    row = {"contract_type": "own", **_pick(values, TEAM_FIELDS), "created_at": now}
    result = execute_unique(conn, insert(_teams).values(row).returning(_teams.c.id))
    if result is None:
        raise Conflict(f"a team named {row['name']!r} exists")
    return get_team(conn, result.scalar_one())


def update_team(conn: Connection, team_id: int, changes: Mapping[str, Any]) -> TeamRecord:
    if _locked_team(conn, team_id, share=False) is None:
        raise NotFound(f"no team {team_id}")
    fields = _pick(changes, TEAM_FIELDS)
    if fields:
        statement = update(_teams).where(_teams.c.id == team_id).values(fields)
        if execute_unique(conn, statement) is None:
            raise Conflict(f"a team named {fields.get('name')!r} exists")
    return get_team(conn, team_id)


def delete_team(conn: Connection, team_id: int) -> None:
    if _locked_team(conn, team_id, share=False) is None:
        raise NotFound(f"no team {team_id}")
    members = get_team(conn, team_id).member_ids
    if members:
        raise Conflict(
            f"team {team_id} still has {len(members)} member(s); move them first",
            member_ids=list(members),
        )
    conn.execute(delete(_teams).where(_teams.c.id == team_id))


# ---------------------------------------------------------------- technicians
def _technician_record(row: Any, open_orders: int) -> TechnicianRecord:
    return TechnicianRecord(
        id=row.id,
        name=row.name,
        contact=row.contact,
        skills=list(row.skills),
        regions=list(row.regions),
        sites=list(row.sites),
        team_id=row.team_id,
        on_duty=row.on_duty,
        max_concurrent=row.max_concurrent,
        user_name=row.user_name,
        created_at=row.created_at,
        open_orders=open_orders,
    )


def _check_team(conn: Connection, fields: Mapping[str, Any]) -> None:
    team_id = fields.get("team_id")
    if team_id is not None and _locked_team(conn, team_id, share=True) is None:
        raise Invalid(f"no team {team_id}", field="team_id")


def _user_taken(fields: Mapping[str, Any]) -> Conflict:
    return Conflict(f"user {fields.get('user_name')!r} already acts as another technician")


def get_technician(conn: Connection, technician_id: int) -> TechnicianRecord:
    row = conn.execute(select(_techs).where(_techs.c.id == technician_id)).first()
    if row is None:
        raise NotFound(f"no technician {technician_id}")
    return _technician_record(row, open_order_counts(conn, [technician_id])[technician_id])


def list_technicians(
    conn: Connection,
    *,
    on_duty: bool | None = None,
    team_id: int | None = None,
    skill: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[TechnicianRecord]:
    """Technicians by id; the skill filter runs here, as JSON lists do not query alike
    on SQLite and PostgreSQL."""
    query = select(_techs).order_by(_techs.c.id)
    if on_duty is not None:
        query = query.where(_techs.c.on_duty.is_(on_duty))
    if team_id is not None:
        query = query.where(_techs.c.team_id == team_id)
    rows = [r for r in conn.execute(query) if skill is None or skill in r.skills]
    page = rows[offset : offset + limit]
    counts = open_order_counts(conn, [r.id for r in page])
    return [_technician_record(r, counts[r.id]) for r in page]


def create_technician(
    conn: Connection, values: Mapping[str, Any], now: datetime
) -> TechnicianRecord:
    fields = _pick(values, TECHNICIAN_FIELDS)
    _check_team(conn, fields)
    row = {"skills": [], "regions": [], "sites": [], **fields, "created_at": now}
    result = execute_unique(conn, insert(_techs).values(row).returning(_techs.c.id))
    if result is None:
        raise _user_taken(fields)
    return get_technician(conn, result.scalar_one())


def update_technician(
    conn: Connection, technician_id: int, changes: Mapping[str, Any]
) -> TechnicianRecord:
    locked = conn.execute(
        select(_techs.c.id).where(_techs.c.id == technician_id).with_for_update()
    ).first()
    if locked is None:
        raise NotFound(f"no technician {technician_id}")
    fields = _pick(changes, TECHNICIAN_FIELDS)
    _check_team(conn, fields)
    if fields:
        statement = update(_techs).where(_techs.c.id == technician_id).values(fields)
        if execute_unique(conn, statement) is None:
            raise _user_taken(fields)
    return get_technician(conn, technician_id)


def delete_technician(conn: Connection, technician_id: int) -> None:
    locked = conn.execute(
        select(_techs.c.id).where(_techs.c.id == technician_id).with_for_update()
    ).first()
    if locked is None:
        raise NotFound(f"no technician {technician_id}")
    open_orders = open_order_counts(conn, [technician_id])[technician_id]
    if open_orders:
        raise Conflict(
            f"technician {technician_id} holds {open_orders} open order(s); reassign them first"
        )
    conn.execute(delete(_techs).where(_techs.c.id == technician_id))
