"""Teams of technicians (own staff, vendors, partners): CRUD. Reads any role; writes
admin or dispatcher. A team with members cannot be deleted (409)."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, StringConstraints

from services.api_auth import AdminOrDispatcher, AnyRole
from services.api_params import SmallId
from ticketing.api import app_state
from ticketing.api.patches import refuse_nulls
from ticketing.dispatch import people

router = APIRouter(prefix="/teams", tags=["dispatch"])

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Contact = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
ContractType = Literal["own", "vendor", "partner"]
TeamId = SmallId


class TeamIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    contract_type: ContractType = "own"
    escalation_contact: Contact | None = None


class TeamPatch(BaseModel):
    """Only the fields sent change; ``escalation_contact`` may be cleared with null."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    contract_type: ContractType | None = None
    escalation_contact: Contact | None = None

    _no_null_for_required = refuse_nulls("name", "contract_type")


class TeamOut(BaseModel):
    id: int
    name: str
    contract_type: str
    escalation_contact: str | None
    created_at: datetime


class TeamDetail(TeamOut):
    member_ids: list[int]


def _detail(record: people.TeamRecord) -> TeamDetail:
    return TeamDetail.model_validate(record, from_attributes=True)


@router.get("", response_model=list[TeamOut])
async def list_teams(request: Request, _: AnyRole) -> list[TeamOut]:
    """Every team by name (member ids: GET /teams/{id})."""
    records = await app_state.read(request, people.list_teams)
    return [TeamOut.model_validate(r, from_attributes=True) for r in records]


@router.get("/{team_id}", response_model=TeamDetail)
async def get_team(team_id: TeamId, request: Request, _: AnyRole) -> TeamDetail:
    return _detail(await app_state.read(request, partial(people.get_team, team_id=team_id)))


@router.post("", status_code=201, response_model=TeamDetail)
async def create_team(body: TeamIn, request: Request, _: AdminOrDispatcher) -> TeamDetail:
    values: dict[str, Any] = body.model_dump()
    op = partial(people.create_team, values=values, now=app_state.now(request))
    return _detail(await app_state.write(request, op))


@router.patch("/{team_id}", response_model=TeamDetail)
async def update_team(
    team_id: TeamId, body: TeamPatch, request: Request, _: AdminOrDispatcher
) -> TeamDetail:
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    op = partial(people.update_team, team_id=team_id, changes=changes)
    return _detail(await app_state.write(request, op))


@router.delete("/{team_id}", status_code=204)
async def delete_team(team_id: TeamId, request: Request, _: AdminOrDispatcher) -> Response:
    """Remove a team; 409 while it has members."""
    await app_state.write(request, partial(people.delete_team, team_id=team_id))
    return Response(status_code=204)
