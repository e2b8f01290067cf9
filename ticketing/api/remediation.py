"""`/api/v1/remediation`: the playbooks and how often the remote fix worked."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy import func, select

from services.api_auth import AnyRole
from services.db import Database
from ticketing.remediation.playbooks import playbooks
from ticketing.remediation.runner import describe
from ticketing.remediation.start import REMEDIATIONS

router = APIRouter(prefix="/remediation", tags=["remediation"])


class PlaybookStats(BaseModel):
    playbook: str
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    stopped: int = 0
    done: int = 0
    #: lockouts (S1) the charger did not accept (refused, no answer, offline)
    lockout_failed: int = 0
    #: succeeded / (succeeded + failed): orders fixed remotely among those the remote fix
    #: decided (None until one did)
    remote_resolution_rate: float | None = None


class RemediationStats(BaseModel):
    total: PlaybookStats
    by_playbook: list[PlaybookStats]


def _rate(stats: PlaybookStats) -> PlaybookStats:
    decided = stats.succeeded + stats.failed
    stats.remote_resolution_rate = stats.succeeded / decided if decided else None
    return stats


@router.get("/playbooks")
async def list_playbooks(_: AnyRole) -> list[dict[str, Any]]:
    """The remediation playbooks fault rules can name."""
    return [describe(book) for book in playbooks().values()]


@router.get("/stats", response_model=RemediationStats)
async def remediation_stats(request: Request, _: AnyRole) -> RemediationStats:
    """Remote remediations by playbook and outcome, and the remote-resolution rate."""
    db: Database = request.app.state.db
    async with db.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(REMEDIATIONS.c.playbook, REMEDIATIONS.c.state, func.count()).group_by(
                    REMEDIATIONS.c.playbook, REMEDIATIONS.c.state
                )
            )
        ).all()
    by: dict[str, PlaybookStats] = {}
    total = PlaybookStats(playbook="*")
    for name, state, count in rows:
        stats = by.setdefault(name, PlaybookStats(playbook=name))
        if state in PlaybookStats.model_fields:
            setattr(stats, state, getattr(stats, state) + count)
            setattr(total, state, getattr(total, state) + count)
    return RemediationStats(
        total=_rate(total), by_playbook=[_rate(s) for _, s in sorted(by.items())]
    )
