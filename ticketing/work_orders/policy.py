"""Which SLA policy an order runs under: its priority and the contract of whoever works it.

The contract type is the team's (``own`` | ``vendor`` | ``partner``): the order's team
if it was escalated to one, else its assignee's team, else ``own``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection

from services.db import table_of
from ticketing.sla.policies import select_policy
from ticketing.tables import Team, Technician

TEAMS = table_of(Team)
TECHNICIANS = table_of(Technician)
PRIORITIES = ("P1", "P2", "P3", "P4", "P5")
_TEAM_OF = select(TECHNICIANS.c.team_id).where(TECHNICIANS.c.id == bindparam("b_id"))
_CONTRACT_OF = select(TEAMS.c.contract_type).where(TEAMS.c.id == bindparam("b_id"))


def contract_type(conn: Connection, *, team_id: int | None, assignee_id: int | None) -> str:
    if team_id is None and assignee_id is not None:
        team_id = conn.execute(_TEAM_OF, {"b_id": assignee_id}).scalar()
    if team_id is None:
        return "own"
    kind = conn.execute(_CONTRACT_OF, {"b_id": team_id}).scalar()
    return str(kind) if kind else "own"


def policy_id_for(
    conn: Connection,
    *,
    priority: str,
    team_id: int | None,
    assignee_id: int | None,
    name: str | None = None,
) -> int:
    contract = contract_type(conn, team_id=team_id, assignee_id=assignee_id)
    return select_policy(conn, priority=priority, contract_type=contract, name=name).id


def policy_for_order(conn: Connection, order: Mapping[str, Any], **overrides: Any) -> int:
    """The policy ``order`` should run under once ``overrides`` are applied to it."""
    merged = {**order, **overrides}
    return policy_id_for(
        conn,
        priority=merged["priority"],
        team_id=merged["team_id"],
        assignee_id=merged["assignee_id"],
    )


def raised(priority: str) -> str:
    """One step more urgent (P1 stays P1)."""
    index = PRIORITIES.index(priority)
    return PRIORITIES[max(index - 1, 0)]
