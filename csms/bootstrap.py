"""Builds the csms side of a process from its settings and shared adapters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from fastapi import APIRouter

from csms import api
from csms.commands.executor import CommandExecutor
from csms.context import CsmsContext
from csms.nodes import NodeIdInUse as NodeIdInUse  # re-exported for the wiring module
from csms.nodes import NodeLiveness
from csms.presence import Presence
from csms.registry_check import ChargerKnown
from csms.retention import RetentionJob
from csms.server import OcppServer
from services.bus import Bus
from services.committer import GroupCommitter
from services.db import Database, utcnow
from services.settings import Settings


@dataclass
class CsmsRuntime:
    ctx: CsmsContext
    presence: Presence
    server: OcppServer
    retention: RetentionJob
    liveness: NodeLiveness

    @property
    def port(self) -> int | None:
        return self.server.port

    async def start(self) -> None:
        # Claim the node id first: adopting "our" chargers needs the id to be ours.
        await self.liveness.start()
        await self.presence.start(self.liveness.previous_end)
        await self.server.start()
        self.retention.start()

    async def stop_accepting(self) -> None:
        await self.server.stop_accepting()

    async def stop(self) -> None:
        await self.retention.stop()
        await self.server.close()
        await self.presence.stop()
        await self.liveness.stop()


def build(
    settings: Settings,
    bus: Bus,
    db: Database,
    committer: GroupCommitter,
    clock: Callable[[], datetime] = utcnow,
) -> CsmsRuntime:
    ctx = CsmsContext(settings=settings, db=db, committer=committer, bus=bus, clock=clock)
    presence = Presence(ctx)
    ctx.presence = presence
    bus.serve_commands(CommandExecutor(ctx, presence))
    liveness = NodeLiveness(settings, db, committer, bus, clock, on_revived=presence.reassert)
    presence.before_takeover = liveness.before_takeover
    return CsmsRuntime(ctx, presence, OcppServer(ctx, presence), RetentionJob(ctx), liveness)


def routers() -> list[APIRouter]:
    return [api.router()]


def charger_known(db: Database) -> ChargerKnown:
    """Whether the registry knows a charger (for whoever serves the API)."""
    return ChargerKnown(db)
