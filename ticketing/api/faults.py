"""Fault reports received from the chargers (the intake of work orders)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from sqlalchemy import select

from services.api_auth import AnyRole
from services.api_params import Offset
from services.db import Database
from ticketing.tables import FaultReport

router = APIRouter(prefix="/faults", tags=["faults"])


class FaultReportOut(BaseModel):
    event_id: str
    kind: str
    charger_id: str
    connector: str
    source: str
    error_code: str
    vendor_id: str | None
    vendor_error_code: str | None
    tech_code: str | None
    severity: str
    info: str | None
    charger_time: datetime | None
    received_at: datetime


@router.get("", response_model=list[FaultReportOut])
async def list_faults(
    request: Request,
    _: AnyRole,
    charger_id: str | None = None,
    kind: Annotated[str | None, Query(pattern="^(raised|cleared)$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> list[FaultReportOut]:
    """Faults raised and cleared, newest first."""
    db: Database = request.app.state.db
    query = (
        select(FaultReport)
        .order_by(FaultReport.received_at.desc(), FaultReport.event_id)
        .limit(limit)
        .offset(offset)
    )
    if charger_id is not None:
        query = query.where(FaultReport.charger_id == charger_id)
    if kind is not None:
        query = query.where(FaultReport.kind == kind)
    async with db.session() as session:
        rows = (await session.execute(query)).scalars()
        return [FaultReportOut.model_validate(r, from_attributes=True) for r in rows]
