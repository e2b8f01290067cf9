"""The one wiring module: builds real adapters, both packages, and runs the process.

Start-up: migrate, open the database, start the group committer and the bus, build csms
and ticketing, serve OCPP and HTTP. Shutdown (SIGTERM/SIGINT): stop accepting, close
charger sockets with 1001, let the committer flush, stop the bus, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

import csms.bootstrap
import ticketing.bootstrap
from services.api_auth import seed_admin_token
from services.bus import Bus, create_bus
from services.clock import Clock, SystemClock
from services.committer import GroupCommitter
from services.db import Database
from services.gc_policy import GcPolicy
from services.http_app import create_app
from services.limits import raise_open_file_limit
from services.migrations import upgrade_async
from services.observability.logging import configure as configure_logging
from services.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class AllInOne:
    settings: Settings
    db: Database
    committer: GroupCommitter
    bus: Bus
    csms: csms.bootstrap.CsmsRuntime
    ticketing: ticketing.bootstrap.TicketingRuntime
    app: FastAPI
    clock: Clock

    async def start(self) -> None:
        await self.ticketing.start()
        await self.bus.start()
        await self.csms.start()

    async def stop(self) -> None:
        await self.csms.stop_accepting()
        await self.csms.stop()
        await self.ticketing.stop()
        # Consumers stop before the committer closes: a handler must not find it closed
        # (what it had queued is still flushed by close; redelivery is idempotent).
        await self.bus.close()
        await self.committer.close()
        await self.db.dispose()


async def build_all_in_one(
    settings: Settings, *, migrate: bool = True, clock: Clock | None = None
) -> AllInOne:
    clock = clock if clock is not None else SystemClock()
    if migrate:
        await upgrade_async(settings.database_url)
    db = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    committer = GroupCommitter(
        db.engine, batch_size=settings.commit_batch_size, sync_engine=db.writer_engine()
    )
    committer.start()
    bus = create_bus(settings.bus_url, committer)
    if settings.admin_token is not None:
        if await seed_admin_token(db, settings.admin_token.get_secret_value()):
            log.info("seeded the admin API token from CHARGEOPS_ADMIN_TOKEN")
    csms_rt = csms.bootstrap.build(settings, bus, db, committer)
    ticketing_rt = ticketing.bootstrap.build(settings, bus, db, committer, clock)
    app = create_app(
        db,
        bus,
        [*csms.bootstrap.routers(), *ticketing.bootstrap.routers()],
        committer=committer,
        clock=clock,
        settings=settings,
        command_authorizer=ticketing_rt.command_access,
    )
    return AllInOne(settings, db, committer, bus, csms_rt, ticketing_rt, app, clock)


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: this module owns shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(settings: Settings) -> None:
    configure_logging(settings.log_level)
    raise_open_file_limit()
    system = await build_all_in_one(settings)
    await system.start()
    http = _Uvicorn(
        uvicorn.Config(
            system.app,
            host=settings.http_host,
            port=settings.http_port,
            lifespan="off",
            log_level=settings.log_level.lower(),
            access_log=False,
        )
    )
    http_task = asyncio.create_task(http.serve(), name="http")
    gc_policy = GcPolicy(lambda: len(system.csms.presence.sessions))
    gc_policy.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "ChargeOps up: OCPP on %s:%s, HTTP on %s:%s, bus %s",
        settings.ocpp_host,
        system.csms.port,
        settings.http_host,
        settings.http_port,
        settings.bus_url,
    )
    stop_wait = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({stop_wait, http_task}, return_when=asyncio.FIRST_COMPLETED)
    if http_task in done and not stop.is_set():
        log.error("HTTP server stopped unexpectedly")
    log.info("shutting down")
    await gc_policy.stop()
    await system.stop()
    http.should_exit = True
    await http_task
    stop_wait.cancel()
    log.info("stopped")


def run(settings: Settings) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(settings))
