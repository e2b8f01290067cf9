"""Technicians: CRUD, each answered with how many open orders they hold.

Reads any role; writes admin or dispatcher. Skills, regions and sites are slugs (a
region may also be ``"*"``: the whole network, see :mod:`ticketing.dispatch.ranking`);
lists are de-duplicated keeping their order.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from services.api_auth import AdminOrDispatcher, AnyRole
from services.api_params import INT32_MAX, Offset, SmallId
from ticketing.api import app_state
from ticketing.api.patches import refuse_nulls
from ticketing.dispatch import people
from ticketing.sites import SLUG_PATTERN

router = APIRouter(prefix="/technicians", tags=["dispatch"])

Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
#: a region slug or the wildcard ``"*"`` (ticketing.dispatch.ranking.WILDCARD_REGION)
RegionSlug = Annotated[str, StringConstraints(pattern=r"^(\*|[a-z0-9][a-z0-9_-]{0,63})$")]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Contact = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
UserName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")]
MaxConcurrent = Annotated[int, Field(ge=1, le=100)]
TeamId = Annotated[int, Field(ge=1, le=INT32_MAX)]
TechnicianId = SmallId
MAX_LIST = 100
NOT_NULL = ("name", "skills", "regions", "sites", "on_duty", "max_concurrent")


def _unique(items: list[str] | None) -> list[str] | None:
    return None if items is None else list(dict.fromkeys(items))


class TechnicianIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    contact: Contact | None = None
    skills: list[Slug] = Field(default_factory=list, max_length=MAX_LIST)
    regions: list[RegionSlug] = Field(default_factory=list, max_length=MAX_LIST)
    sites: list[Slug] = Field(default_factory=list, max_length=MAX_LIST)
    team_id: TeamId | None = None
    on_duty: bool = True
    max_concurrent: MaxConcurrent = 5
    user_name: UserName | None = None

    _dedupe = field_validator("skills", "regions", "sites")(_unique)


class TechnicianPatch(BaseModel):
    """Only the fields sent change; ``contact``, ``team_id`` and ``user_name`` may be
    cleared with null, the others may not be null."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    contact: Contact | None = None
    skills: list[Slug] | None = Field(None, max_length=MAX_LIST)
    regions: list[RegionSlug] | None = Field(None, max_length=MAX_LIST)
    sites: list[Slug] | None = Field(None, max_length=MAX_LIST)
    team_id: TeamId | None = None
    on_duty: bool | None = None
    max_concurrent: MaxConcurrent | None = None
    user_name: UserName | None = None

    _dedupe = field_validator("skills", "regions", "sites")(_unique)

    _no_null_for_required = refuse_nulls(*NOT_NULL)


class TechnicianOut(BaseModel):
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


def _out(record: people.TechnicianRecord) -> TechnicianOut:
    return TechnicianOut.model_validate(record, from_attributes=True)


@router.get("", response_model=list[TechnicianOut])
async def list_technicians(
    request: Request,
    _: AnyRole,
    on_duty: bool | None = None,
    team_id: Annotated[int | None, Query(ge=1, le=INT32_MAX)] = None,
    skill: Annotated[str | None, Query(pattern=SLUG_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> list[TechnicianOut]:
    """Technicians by id, filtered by duty, team and skill."""
    records = await app_state.read(
        request,
        partial(
            people.list_technicians,
            on_duty=on_duty,
            team_id=team_id,
            skill=skill,
            limit=limit,
            offset=offset,
        ),
    )
    return [_out(r) for r in records]


@router.get("/{technician_id}", response_model=TechnicianOut)
async def get_technician(
    technician_id: TechnicianId, request: Request, _: AnyRole
) -> TechnicianOut:
    return _out(
        await app_state.read(request, partial(people.get_technician, technician_id=technician_id))
    )


@router.post("", status_code=201, response_model=TechnicianOut)
async def create_technician(
    body: TechnicianIn, request: Request, _: AdminOrDispatcher
) -> TechnicianOut:
    values: dict[str, Any] = body.model_dump()
    op = partial(people.create_technician, values=values, now=app_state.now(request))
    return _out(await app_state.write(request, op))


@router.patch("/{technician_id}", response_model=TechnicianOut)
async def update_technician(
    technician_id: TechnicianId, body: TechnicianPatch, request: Request, _: AdminOrDispatcher
) -> TechnicianOut:
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    op = partial(people.update_technician, technician_id=technician_id, changes=changes)
    return _out(await app_state.write(request, op))


@router.delete("/{technician_id}", status_code=204)
async def delete_technician(
    technician_id: TechnicianId, request: Request, _: AdminOrDispatcher
) -> Response:
    """Remove a technician; 409 while they hold open orders."""
    await app_state.write(request, partial(people.delete_technician, technician_id=technician_id))
    return Response(status_code=204)
