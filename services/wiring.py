"""The one wiring module: builds real adapters, both packages, and runs the process.

Start-up: migrate, open the database, start the group committer and the bus, build csms
and ticketing, serve OCPP and HTTP. Shutdown (SIGTERM/SIGINT): stop accepting, close
charger sockets with 1001, let the committer flush, stop the bus, exit 0. A signal during
start-up aborts it (a migration already running finishes), closes what was opened, exit 0.
Repeated signals change nothing, also after the stop, until the process has exited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import uvicorn
from fastapi import FastAPI

import csms.bootstrap
import ticketing.bootstrap
from services.api_auth import seed_admin_token
from services.bus import Bus, create_bus
from services.bus.retention import cutoff, prune_outbox
from services.checkpoint import WalCheckpointer
from services.clock import Clock, SystemClock
from services.committer import GroupCommitter
from services.db import Database, check_reachable
from services.gc_policy import GcPolicy
from services.http_app import create_app
from services.limits import raise_open_file_limit
from services.migrations import upgrade_async
from services.observability.logging import configure as configure_logging
from services.settings import BusUnreachable, PortUnavailable, Settings
from services.tasks import PeriodicTask

log = logging.getLogger(__name__)

#: seconds between background SQLite WAL checkpoints (services/checkpoint.py)
CHECKPOINT_INTERVAL = 0.25
#: seconds an idle HTTP keep-alive connection stays open
HTTP_KEEP_ALIVE = 65


Role = Literal["all", "csms", "ticketing"]
T = TypeVar("T")


@dataclass
class Node:
    """One process: the OCPP edge (``csms``), the O&M side (``ticketing``), or both.

    Distributed mode runs ``chargeops csms`` on N nodes (OCPP sockets; HTTP only for
    /metrics, /healthz, /readyz) and ``chargeops ticketing`` on M replicas (consumers,
    timers and the whole HTTP API: csms/api reads the registry and live state the csms
    nodes keep in the shared database and sends commands over the bus)."""

    role: Role
    settings: Settings
    db: Database
    committer: GroupCommitter
    bus: Bus
    csms: csms.bootstrap.CsmsRuntime | None
    ticketing: ticketing.bootstrap.TicketingRuntime | None
    app: FastAPI
    clock: Clock
    event_retention: PeriodicTask | None = None
    checkpointer: WalCheckpointer | None = None
    checkpoints: PeriodicTask | None = None

    async def start(self) -> None:
        if self.checkpoints is not None:
            self.checkpoints.start()
        if self.ticketing is not None:
            await self.ticketing.start()
        if self.event_retention is not None:
            self.event_retention.start()
        await self.bus.start()
        if self.csms is not None:
            await self.csms.start()

    async def stop(self) -> None:
        """Stop everything; a second call (or one during the first) does nothing."""
        if getattr(self.app.state, "stopping", False):
            return
        # /readyz answers 503 from the first moment of the stop, so that a load balancer or
        # Kubernetes takes this process out of rotation while it closes sockets and flushes.
        self.app.state.stopping = True
        if self.event_retention is not None:
            await self.event_retention.stop()
        if self.csms is not None:
            await self.csms.stop_accepting()
            await self.csms.stop()
        if self.ticketing is not None:
            await self.ticketing.stop()
        # Consumers stop before the committer closes: a handler must not find it closed
        # (what it had queued is still flushed by close; redelivery is idempotent).
        await self.bus.close()
        await self.committer.close()
        if self.checkpoints is not None:
            await self.checkpoints.stop()
        if self.checkpointer is not None:
            self.checkpointer.close()
        await self.db.dispose()


#: The all-in-one process (``chargeops serve``), as tests and benchmarks know it.
AllInOne = Node


async def build_node(
    settings: Settings, role: Role = "all", *, migrate: bool = True, clock: Clock | None = None
) -> Node:
    clock = clock if clock is not None else SystemClock()
    if migrate:
        await upgrade_async(settings.database_url)
    db = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    committer = GroupCommitter(
        db.engine,
        batch_size=settings.commit_batch_size,
        sync_engine=db.writer_engine(),
        defer_interval=settings.defer_interval,
    )
    committer.start()
    try:
        return await _build_rest(settings, role, clock, db, committer)
    except BaseException:  # a bad setting found late, or SIGTERM during start-up
        await committer.close()
        await db.dispose()
        raise


async def _build_rest(
    settings: Settings, role: Role, clock: Clock, db: Database, committer: GroupCommitter
) -> Node:
    bus = create_bus(settings.bus_url, committer)
    if settings.admin_token is not None and role != "csms":
        if await seed_admin_token(db, settings.admin_token.get_secret_value()):
            log.info("seeded the admin API token from CHARGEOPS_ADMIN_TOKEN")
    csms_rt = csms.bootstrap.build(settings, bus, db, committer) if role != "ticketing" else None
    ticketing_rt = (
        ticketing.bootstrap.build(settings, bus, db, committer, clock) if role != "csms" else None
    )
    routers = [*csms.bootstrap.routers(), *ticketing.bootstrap.routers()] if ticketing_rt else []
    app = create_app(
        db,
        bus,
        routers,
        committer=committer,
        clock=clock,
        settings=settings,
        command_authorizer=ticketing_rt.command_access if ticketing_rt else None,
        command_order_check=ticketing_rt.command_order_check if ticketing_rt else None,
        charger_known=csms.bootstrap.charger_known(db),
        charger_in_use=ticketing_rt.charger_in_use if ticketing_rt else None,
        api=ticketing_rt is not None,
    )
    node = Node(role, settings, db, committer, bus, csms_rt, ticketing_rt, app, clock)
    if settings.event_retention_days > 0:
        node.event_retention = PeriodicTask(
            lambda: _prune_events(db, clock, settings.event_retention_days),
            3600.0,
            name="event-retention",
            logger=log,
            failure="event retention failed",
        )
    checkpoint_engine = db.writer_engine()
    if checkpoint_engine is not None:
        node.checkpointer = WalCheckpointer(checkpoint_engine)
        node.checkpoints = PeriodicTask(
            node.checkpointer.run_once,
            CHECKPOINT_INTERVAL,
            name="wal-checkpoint",
            logger=log,
            failure="WAL checkpoint failed",
        )
    return node


async def _prune_events(db: Database, clock: Clock, days: int) -> None:
    deleted = await prune_outbox(db.engine, cutoff(clock.now(), days))
    if deleted:
        log.info("event retention: deleted %d events older than %d days", deleted, days)


async def build_all_in_one(
    settings: Settings, *, migrate: bool = True, clock: Clock | None = None
) -> Node:
    return await build_node(settings, "all", migrate=migrate, clock=clock)


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: this module owns shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(
    settings: Settings, role: Role = "all", stop_requested: threading.Event | None = None
) -> None:
    # Decision: SIGTERM/SIGINT are handled from the first line, so that one arriving during
    # start-up (migrating, claiming the node id) aborts it and exits 0 after closing what
    # was opened, rather than killing the process halfway (exit 143).
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if stop_requested is not None and stop_requested.is_set():  # signalled before the loop
        stop.set()
    configure_logging(settings.log_level)
    log.info("ChargeOps %s starting", role)
    raise_open_file_limit()
    # Only the all-in-one process migrates at start: several distributed processes
    # starting together would race; they expect `chargeops migrate` to have run.
    migrate = role == "all"
    try:
        if not migrate or not settings.is_sqlite:
            # Here, where a stop cancels it: the migration runs in a worker thread that a
            # stop cannot end, and a database that does not answer kept this process
            # waiting for the driver's connect timeout (60 s) after a SIGTERM. (A SQLite
            # file is local: its directory is created by the migration.)
            await _unless_stopped(stop, check_reachable(settings.database_url))
        system = await _unless_stopped(stop, build_node(settings, role, migrate=migrate))
    except _StoppedDuringStartUp:
        log.info("stopped during start-up")
        return
    try:
        # Bound before anything starts: uvicorn, failing to bind, ends the process from
        # inside its task (SystemExit 3), past every clean stop.
        http_socket = _listen_http(settings)
    except PortUnavailable:
        await system.stop()
        raise
    try:
        await _unless_stopped(stop, system.start())
    except csms.bootstrap.NodeIdInUse as exc:
        log.error("%s", exc)
        http_socket.close()
        await system.stop()
        raise SystemExit(2) from exc
    except (BusUnreachable, PortUnavailable):
        http_socket.close()
        await system.stop()
        raise
    except _StoppedDuringStartUp:
        http_socket.close()
        await system.stop()
        log.info("stopped during start-up")
        return
    http = _Uvicorn(
        uvicorn.Config(
            system.app,
            host=settings.http_host,
            port=settings.http_port,
            lifespan="off",
            log_level=settings.log_level.lower(),
            access_log=False,
            # Idle keep-alive connections stay open longer than clients and load
            # balancers keep theirs (httpx 5 s, AWS ALB 60 s): with uvicorn's 5 s a
            # client reusing a connection just as the server closed it got "server
            # disconnected without a response" (seen in tests/e2e/test_distributed.py).
            timeout_keep_alive=HTTP_KEEP_ALIVE,
        )
    )
    http_task = asyncio.create_task(http.serve(sockets=[http_socket]), name="http")
    presence = system.csms.presence if system.csms is not None else None
    gc_policy = GcPolicy(lambda: len(presence.sessions) if presence is not None else 0)
    gc_policy.start()
    log.info(
        "ChargeOps %s up: OCPP on %s, HTTP on %s:%s, bus %s",
        role,
        f"{settings.ocpp_host}:{system.csms.port}" if system.csms is not None else "-",
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


class _StoppedDuringStartUp(Exception):
    pass


def _listen_http(settings: Settings) -> socket.socket:
    """The HTTP server's socket, bound (uvicorn listens on it)."""
    host, port = settings.http_host, settings.http_port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortUnavailable.of("HTTP", host, port, exc) from None
    return sock


async def _unless_stopped(stop: asyncio.Event, step: Coroutine[Any, Any, T]) -> T:
    """Run one start-up step, or raise ``_StoppedDuringStartUp`` if ``stop`` is set first:
    then the step is cancelled (it closes what it opened)."""
    if stop.is_set():
        step.close()
        raise _StoppedDuringStartUp
    task = asyncio.ensure_future(step)
    stop_wait = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    stop_wait.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    raise _StoppedDuringStartUp


def run(
    settings: Settings, role: Role = "all", stop_requested: threading.Event | None = None
) -> None:
    """Run the process until SIGTERM/SIGINT; ``stop_requested``: set by the caller's own
    signal handler if one came before this (services/cli.py)."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_serve_to_the_end(settings, role, stop_requested))


async def _serve_to_the_end(
    settings: Settings, role: Role, stop_requested: threading.Event | None
) -> None:
    """:func:`serve`, then ignore SIGTERM and SIGINT for the rest of the process.

    Closing the event loop gave the signals their default actions back: a second SIGTERM
    arriving after the clean stop, while the loop closed and the interpreter exited, killed
    the process with exit 143 (SIGINT: a KeyboardInterrupt traceback) although everything
    had stopped. The work is done by then, so the loop's handlers are replaced by "ignore"
    here, before the loop closes (which then has none to reset). Blocking the signals
    instead would not do: libuv's own worker threads (uvloop) do not block them."""
    try:
        await serve(settings, role, stop_requested)
    finally:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)
