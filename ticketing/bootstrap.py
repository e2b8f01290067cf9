"""Builds the ticketing side of a process: its bus consumer, timers and HTTP routers."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter

from services.bus import Bus
from services.clock import Clock
from services.committer import GroupCommitter
from services.db import Database
from services.settings import Settings
from ticketing import api, tx
from ticketing.remediation.runner import RemediationRunner
from ticketing.rules.store import seed_defaults as seed_rules
from ticketing.sla.policies import seed_defaults as seed_policies
from ticketing.webhooks.delivery import WebhookDeliverer
from ticketing.work_orders.access import (
    ChargerInUse,
    CommandOrderCheck,
    TechnicianCommandAccess,
)
from ticketing.work_orders.context import Thresholds
from ticketing.work_orders.intake import CONSUMER, EVENT_TYPES, WorkOrderIntake
from ticketing.work_orders.scanner import Scanner


@dataclass
class TicketingRuntime:
    committer: GroupCommitter
    clock: Clock
    intake: WorkOrderIntake
    scanner: Scanner
    webhooks: WebhookDeliverer
    remediation: RemediationRunner
    command_access: TechnicianCommandAccess
    command_order_check: CommandOrderCheck
    charger_in_use: ChargerInUse

    async def start(self) -> None:
        """Seed the default fault rules and SLA policies (empty tables only), start timers."""
        now = self.clock.now()
        await tx.transact(self.committer, lambda conn: seed_rules(conn, now))
        await tx.transact(self.committer, lambda conn: seed_policies(conn, now))
        self.scanner.start()
        self.webhooks.start()
        self.remediation.start()

    async def stop(self) -> None:
        await self.remediation.stop()
        await self.scanner.stop()
        await self.webhooks.stop()


def build(
    settings: Settings, bus: Bus, db: Database, committer: GroupCommitter, clock: Clock
) -> TicketingRuntime:
    thresholds = Thresholds.from_settings(settings)
    intake = WorkOrderIntake(
        committer,
        bus,
        clock,
        thresholds,
        db,
        transaction_budget=settings.intake_transaction_budget_ms / 1000,
    )
    bus.subscribe_batch(CONSUMER, EVENT_TYPES, intake.handle, intake.handle_batch)
    scanner = Scanner(committer, db, bus, clock, thresholds, settings.ticketing_scan_interval)
    webhooks = WebhookDeliverer(db, committer, clock)
    remediation = RemediationRunner(
        committer,
        bus,
        clock,
        call_timeout=settings.call_timeout,
        reset_budget=settings.auto_reset_budget,
        reset_window=settings.auto_reset_window,
        interval=settings.ticketing_scan_interval,
    )
    return TicketingRuntime(
        committer,
        clock,
        intake,
        scanner,
        webhooks,
        remediation,
        TechnicianCommandAccess(db),
        CommandOrderCheck(db),
        ChargerInUse(db),
    )


def routers() -> list[APIRouter]:
    return [api.router()]
