"""Builds the ticketing side of a process: its bus consumers and HTTP routers."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter

from services.bus import Bus
from services.committer import GroupCommitter
from services.db import Database
from services.settings import Settings
from ticketing import api
from ticketing.fault_intake import CONSUMER, EVENT_TYPES, FaultIntake


@dataclass
class TicketingRuntime:
    fault_intake: FaultIntake


def build(
    settings: Settings, bus: Bus, db: Database, committer: GroupCommitter
) -> TicketingRuntime:
    _ = settings, db
    intake = FaultIntake(committer)
    bus.subscribe(CONSUMER, EVENT_TYPES, intake.handle)
    return TicketingRuntime(intake)


def routers() -> list[APIRouter]:
    return [api.router()]
