"""Sites and the chargers standing at them: CRUD plus charger (un)assignment.

Reads any role; writes admin or dispatcher. A site id is a slug; its time zone must be
an IANA name known to ``zoneinfo``; a site with chargers or open work orders cannot be
deleted (409).
Charger ids follow the OCPP identity shape the CSMS accepts (1..48 characters).
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

from services.api_auth import AdminOrDispatcher, AnyRole
from services.api_params import Offset
from ticketing import sites
from ticketing.api import app_state
from ticketing.api.patches import refuse_nulls
from ticketing.sites import SLUG_PATTERN

router = APIRouter(prefix="/sites", tags=["dispatch"])

#: the OCPP charge point identity accepted by csms.identity (ticketing may not import it)
CHARGER_ID_PATTERN = r"^[A-Za-z0-9*\-_=:+|@.]{1,48}$"


def _known_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None
    return name


Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
TimeZone = Annotated[
    str, StringConstraints(min_length=1, max_length=64), AfterValidator(_known_zone)
]
Address = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]
SiteId = Annotated[str, Path(pattern=SLUG_PATTERN)]
ChargerId = Annotated[str, Path(pattern=CHARGER_ID_PATTERN)]


class SiteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Slug
    name: Name
    region: Slug | None = None
    timezone: TimeZone = "UTC"
    address: Address | None = None


class SitePatch(BaseModel):
    """Only the fields sent change; ``region`` and ``address`` may be cleared with null."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    region: Slug | None = None
    timezone: TimeZone | None = None
    address: Address | None = None

    _no_null_for_required = refuse_nulls("name", "timezone")


class SiteOut(BaseModel):
    id: str
    name: str
    region: str | None
    timezone: str
    address: str | None
    created_at: datetime


class SiteDetail(SiteOut):
    charger_ids: list[str]


class ChargerPlacementOut(BaseModel):
    charger_id: str
    site_id: str | None


def _detail(record: sites.SiteRecord) -> SiteDetail:
    return SiteDetail.model_validate(record, from_attributes=True)


@router.get("", response_model=list[SiteOut])
async def list_sites(
    request: Request,
    _: AnyRole,
    region: Annotated[str | None, Query(pattern=SLUG_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> list[SiteOut]:
    """Sites by id (charger ids: GET /sites/{id})."""
    records = await app_state.read(
        request, partial(sites.list_sites, region=region, limit=limit, offset=offset)
    )
    return [SiteOut.model_validate(r, from_attributes=True) for r in records]


@router.get("/{site_id}", response_model=SiteDetail)
async def get_site(site_id: SiteId, request: Request, _: AnyRole) -> SiteDetail:
    return _detail(await app_state.read(request, partial(sites.get_site, site_id=site_id)))


@router.post("", status_code=201, response_model=SiteDetail)
async def create_site(body: SiteIn, request: Request, _: AdminOrDispatcher) -> SiteDetail:
    values: dict[str, Any] = body.model_dump(exclude={"id"})
    op = partial(sites.create_site, site_id=body.id, values=values, now=app_state.now(request))
    return _detail(await app_state.write(request, op))


@router.patch("/{site_id}", response_model=SiteDetail)
async def update_site(
    site_id: SiteId, body: SitePatch, request: Request, _: AdminOrDispatcher
) -> SiteDetail:
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    op = partial(sites.update_site, site_id=site_id, changes=changes)
    return _detail(await app_state.write(request, op))


@router.delete("/{site_id}", status_code=204)
async def delete_site(site_id: SiteId, request: Request, _: AdminOrDispatcher) -> Response:
    """Remove a site; 409 while chargers are assigned to it."""
    await app_state.write(request, partial(sites.delete_site, site_id=site_id))
    return Response(status_code=204)


@router.put("/{site_id}/chargers/{charger_id}", response_model=ChargerPlacementOut)
async def assign_charger(
    site_id: SiteId, charger_id: ChargerId, request: Request, _: AdminOrDispatcher
) -> ChargerPlacementOut:
    """Place a charger at this site (moving it from any other); idempotent."""
    op = partial(
        sites.assign_charger, site_id=site_id, charger_id=charger_id, now=app_state.now(request)
    )
    placement = await app_state.write(request, op)
    return ChargerPlacementOut.model_validate(placement, from_attributes=True)


@router.delete("/{site_id}/chargers/{charger_id}", status_code=204)
async def unassign_charger(
    site_id: SiteId, charger_id: ChargerId, request: Request, _: AdminOrDispatcher
) -> Response:
    """Take a charger off this site; 404 unless it stands here."""
    op = partial(sites.unassign_charger, site_id=site_id, charger_id=charger_id)
    await app_state.write(request, op)
    return Response(status_code=204)
