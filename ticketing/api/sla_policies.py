"""SLA policies over HTTP: anyone signed in reads them, only admins change them.

PUT replaces the whole policy. Running clocks keep the due instants they were given until
the work-order engine retargets them; the store refuses to delete a policy still in use or
the last catch-all (409).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel
from sqlalchemy.engine import Connection

from services.api_auth import AnyRole, Principal, require_role
from services.api_params import SmallId
from ticketing.api import app_state
from ticketing.sla.policies import PolicyRow, SlaPolicyIn, get_policy, list_policies
from ticketing.sla.policy_store import (
    create_policy,
    delete_policy,
    duplicate_name_is_conflict,
    replace_policy,
)
from ticketing.tx import NotFound

router = APIRouter(prefix="/sla-policies", tags=["sla"])

AdminOnly = Annotated[Principal, require_role("admin")]
PolicyId = SmallId


class SlaPolicyOut(BaseModel):
    id: int
    name: str
    priority: str | None
    contract_type: str | None
    calendar: str
    timezone: str
    business_hours: dict[str, Any]
    holidays: list[date]
    response_s: int | None
    on_site_s: int | None
    resolution_s: int | None
    warn_fraction: float
    verification_window_s: int
    reopen_window_s: int
    require_signoff: bool
    escalation_contact: str | None
    updated_at: datetime

    @classmethod
    def of(cls, row: PolicyRow) -> SlaPolicyOut:
        return cls(
            id=row.id,
            name=row.name,
            priority=row.priority,
            contract_type=row.contract_type,
            calendar=row.calendar_kind,
            timezone=row.timezone,
            business_hours=dict(row.business_hours),
            holidays=[date.fromisoformat(d) for d in row.holidays],
            response_s=row.response_s,
            on_site_s=row.on_site_s,
            resolution_s=row.resolution_s,
            warn_fraction=row.warn_fraction,
            verification_window_s=row.verification_window_s,
            reopen_window_s=row.reopen_window_s,
            require_signoff=row.require_signoff,
            escalation_contact=row.escalation_contact,
            updated_at=row.updated_at,
        )


@router.get("", response_model=list[SlaPolicyOut])
async def list_sla_policies(request: Request, _: AnyRole) -> list[SlaPolicyOut]:
    """Every SLA policy, oldest first."""
    rows = await app_state.read(request, list_policies)
    return [SlaPolicyOut.of(r) for r in rows]


@router.get("/{policy_id}", response_model=SlaPolicyOut)
async def get_sla_policy(request: Request, policy_id: PolicyId, _: AnyRole) -> SlaPolicyOut:
    row = await app_state.read(request, lambda conn: get_policy(conn, policy_id))
    if row is None:
        raise NotFound(f"no SLA policy {policy_id}")
    return SlaPolicyOut.of(row)


@router.post("", status_code=201, response_model=SlaPolicyOut)
async def create_sla_policy(
    request: Request, response: Response, body: SlaPolicyIn, _: AdminOnly
) -> SlaPolicyOut:
    now = app_state.now(request)

    def op(conn: Connection) -> PolicyRow:
        return create_policy(conn, body, now)

    with duplicate_name_is_conflict(body.name):
        row = await app_state.write(request, op)
    response.headers["Location"] = f"{request.url.path.rstrip('/')}/{row.id}"
    return SlaPolicyOut.of(row)


@router.put("/{policy_id}", response_model=SlaPolicyOut)
async def replace_sla_policy(
    request: Request, policy_id: PolicyId, body: SlaPolicyIn, _: AdminOnly
) -> SlaPolicyOut:
    now = app_state.now(request)

    def op(conn: Connection) -> PolicyRow:
        return replace_policy(conn, policy_id, body, now)

    with duplicate_name_is_conflict(body.name):
        row = await app_state.write(request, op)
    return SlaPolicyOut.of(row)


@router.delete("/{policy_id}", status_code=204)
async def delete_sla_policy(request: Request, policy_id: PolicyId, _: AdminOnly) -> Response:
    def op(conn: Connection) -> None:
        delete_policy(conn, policy_id)

    await app_state.write(request, op)
    return Response(status_code=204)
