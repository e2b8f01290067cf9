"""The ``chargeops serve`` process itself: SIGKILL loses no acknowledged fault, SIGTERM
closes chargers with 1001 and flushes, a restart settles who is still online, and
``chargeops migrate`` is idempotent. Everything runs as a real subprocess against the
test's database (SQLite file or PostgreSQL); chargers are the ``ocpp`` library's client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sqlite3
import sys
from collections import Counter
from collections.abc import AsyncIterator, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic.script import ScriptDirectory
from ocpp.v16 import ChargePoint as Cp16
from ocpp.v16 import call
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine
from websockets.asyncio.client import ClientConnection

from csms.tables import ChargerState, CsmsNode
from services.bus.tables import ConsumerCursor, OutboxEvent
from services.migrations import alembic_config
from tests.conftest import eventually
from tests.process import ServerPool, ServerProcess, run_command
from ticketing.tables import FaultReport
from ticketing.work_orders.intake import CONSUMER as FAULT_INTAKE

FaultKey = tuple[str, str, str]  # charger_id, error_code, connector

# Valid OCPP 1.6 ChargePointErrorCode values other than NoError.
ERROR_CODES = [
    "GroundFailure",
    "OverVoltage",
    "HighTemperature",
    "ConnectorLockFailure",
    "EVCommunicationError",
    "OverCurrentFailure",
    "PowerMeterFailure",
    "PowerSwitchFailure",
    "ReaderFailure",
    "ResetFailure",
    "UnderVoltage",
    "WeakSignal",
    "InternalError",
    "OtherError",
]


@pytest.fixture
async def opened() -> AsyncIterator[list[Client]]:
    """Every charger socket a test opened; all are closed at teardown."""
    clients: list[Client] = []
    yield clients
    await asyncio.gather(*(c.close() for c in clients))


class Client:
    """A connected OCPP 1.6 charge point (the ocpp library's ChargePoint)."""

    def __init__(self, charger_id: str, ws: ClientConnection) -> None:
        self.id = charger_id
        self.ws = ws
        self.cp = Cp16(charger_id, ws, response_timeout=30)
        self.reader = asyncio.create_task(self.cp.start())

    async def call(self, payload: Any, **kwargs: Any) -> Any:
        return await self.cp.call(payload, suppress=False, **kwargs)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        self.reader.cancel()
        with contextlib.suppress(BaseException):
            await self.reader


async def connect(server: ServerProcess, charger_id: str, opened: list[Client]) -> Client:
    client = Client(charger_id, await server.connect_ocpp(charger_id))
    opened.append(client)
    return client


async def run_until(event: asyncio.Event, work: list[Coroutine[Any, Any, None]]) -> None:
    """Run ``work`` concurrently until ``event`` is set (or all of it is done); then cancel
    what is still running (calls in flight to a server that is gone)."""
    tasks = [asyncio.create_task(w) for w in work]
    everything = asyncio.gather(*tasks)
    waiter = asyncio.ensure_future(event.wait())
    first_of: set[asyncio.Future[Any]] = {everything, waiter}
    try:
        await asyncio.wait(first_of, timeout=120, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (*tasks, waiter):
            task.cancel()
        await asyncio.gather(everything, waiter, return_exceptions=True)


async def register(api: httpx.AsyncClient, charger_id: str) -> None:
    r = await api.post("/api/v1/chargers", json={"id": charger_id, "security_profile": 0})
    assert r.status_code == 201, r.text


async def events(api: httpx.AsyncClient, charger_id: str, type_: str) -> list[dict[str, Any]]:
    r = await api.get(
        f"/api/v1/chargers/{charger_id}/events", params={"type": type_, "limit": 1000}
    )
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def charger(api: httpx.AsyncClient, charger_id: str) -> dict[str, Any]:
    r = await api.get(f"/api/v1/chargers/{charger_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def connectivity(api: httpx.AsyncClient, charger_id: str) -> list[dict[str, Any]]:
    r = await api.get(
        f"/api/v1/chargers/{charger_id}/status-history", params={"kind": "connectivity"}
    )
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()
    return rows


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


# ------------------------------------------------------------------ 1. crash durability
N_CHARGERS = 50
FAULTS_PER_CHARGER = 4


async def _snapshot(database_url: str) -> dict[str, Any]:
    """Read the database of the dead process: what was committed, what ticketing had."""
    outbox = OutboxEvent.__table__
    reports = FaultReport.__table__
    cursors = ConsumerCursor.__table__
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            raised = (
                await conn.execute(select(outbox.c.payload).where(outbox.c.type == "FaultRaised"))
            ).all()
            handled = (
                await conn.execute(
                    select(reports.c.charger_id, reports.c.error_code, reports.c.connector).where(
                        reports.c.kind == "raised"
                    )
                )
            ).all()
            head = (await conn.execute(select(func.max(outbox.c.seq)))).scalar() or 0
            cursor = (
                await conn.execute(
                    select(cursors.c.position).where(cursors.c.consumer == FAULT_INTAKE)
                )
            ).scalar() or 0
    finally:
        await engine.dispose()
    committed: list[FaultKey] = []
    for (payload,) in raised:
        event = json.loads(payload)
        committed.append(
            (event["charger_id"], event["error_code"], str(event["connector"]["connector_id"]))
        )
    return {
        "committed": committed,
        "handled": {(r.charger_id, r.error_code, r.connector) for r in handled},
        "head": head,
        "cursor": cursor,
    }


async def test_sigkill_right_after_acknowledgements_loses_no_fault(
    database_url: str, servers: ServerPool, opened: list[Client]
) -> None:
    first = await servers.start_ready(database_url)
    ids = [f"CRASH-{i:03d}" for i in range(N_CHARGERS)]
    async with first.api() as api:
        for cid in ids:
            await register(api, cid)
    clients = await asyncio.gather(*(connect(first, cid, opened) for cid in ids))

    # Distinct (error code, connector) per fault: each StatusNotification raises one fault.
    planned: dict[str, list[FaultKey]] = {
        cid: [
            (cid, ERROR_CODES[(i + j) % len(ERROR_CODES)], str(j + 1))
            for j in range(FAULTS_PER_CHARGER)
        ]
        for i, cid in enumerate(ids)
    }
    total = N_CHARGERS * FAULTS_PER_CHARGER
    kill_at = total * 3 // 4  # the rest are in flight or unsent when the process dies
    acked: list[FaultKey] = []
    failures: list[str] = []
    killed = asyncio.Event()

    async def send_faults(client: Client) -> None:
        for key in planned[client.id]:
            if killed.is_set():
                return
            try:
                await client.call(
                    call.StatusNotification(
                        connector_id=int(key[2]), error_code=key[1], status="Faulted"
                    )
                )
            except Exception as exc:
                if not killed.is_set():
                    failures.append(f"{key}: {exc!r}")
                return
            acked.append(key)  # a CALLRESULT arrived: the fault must survive anything now
            if len(acked) >= kill_at and not killed.is_set():
                first.kill()
                killed.set()

    await run_until(killed, [send_faults(c) for c in clients])
    assert not failures, failures
    assert killed.is_set(), f"only {len(acked)} of {total} faults acknowledged"
    assert await first.wait_exit() == -signal.SIGKILL
    assert len(set(acked)) == len(acked)

    snap = await _snapshot(database_url)
    committed = set(snap["committed"])
    # Rule 1: an acknowledged fault is durable in the outbox before the CALLRESULT is sent.
    assert set(acked) <= committed, sorted(set(acked) - committed)
    unhandled = set(acked) - snap["handled"]
    sys.stdout.write(
        f"at SIGKILL: {len(acked)} faults acknowledged, {len(committed)} FaultRaised committed, "
        f"{len(snap['handled'])} in ticketing; {len(unhandled)} acknowledged faults not yet "
        f"handled by ticketing (outbox head {snap['head']}, {FAULT_INTAKE} cursor "
        f"{snap['cursor']})\n"
    )

    second = await servers.start_ready(database_url)
    async with second.api() as api:

        async def all_delivered() -> Counter[FaultKey] | None:
            r = await api.get("/api/v1/faults", params={"kind": "raised", "limit": 1000})
            assert r.status_code == 200, r.text
            seen = Counter((f["charger_id"], f["error_code"], f["connector"]) for f in r.json())
            return seen if committed <= seen.keys() else None

        seen = await eventually(all_delivered)
    assert {key: seen[key] for key in acked} == dict.fromkeys(acked, 1)
    assert set(seen.values()) == {1}, [k for k, n in seen.items() if n > 1]
    assert seen.keys() == committed


# ------------------------------------------------------------------ 2. graceful shutdown
TERM_CHARGERS = 5
TERM_AT = 100  # heartbeats acknowledged (all chargers together) when SIGTERM is sent


async def test_sigterm_closes_chargers_with_1001_keeps_what_was_acknowledged_and_exits_0(
    database_url: str, servers: ServerPool, opened: list[Client]
) -> None:
    first = await servers.start_ready(database_url)
    ids = [f"TERM-{i}" for i in range(TERM_CHARGERS)]
    async with first.api() as api:
        for cid in ids:
            await register(api, cid)
    clients = [await connect(first, cid, opened) for cid in ids]
    acked: dict[str, list[str]] = {cid: [] for cid in ids}
    failures: list[str] = []
    terminated = asyncio.Event()

    async def heartbeats(client: Client) -> None:
        for n in range(1000):
            if terminated.is_set():
                return
            unique_id = f"hb-{client.id}-{n}"
            try:
                hb = await client.call(call.Heartbeat(), unique_id=unique_id)
            except Exception as exc:
                if not terminated.is_set():
                    failures.append(f"{unique_id}: {exc!r}")
                return
            assert hb.current_time
            acked[client.id].append(unique_id)
            if sum(map(len, acked.values())) >= TERM_AT and not terminated.is_set():
                first.terminate()  # right after an acknowledgement, others in flight
                terminated.set()

    await run_until(terminated, [heartbeats(c) for c in clients])
    assert not failures, failures
    assert terminated.is_set()
    for client in clients:
        await asyncio.wait_for(client.ws.wait_closed(), 30)
        assert client.ws.close_code == 1001, (client.id, client.ws.close_code)
    assert await first.wait_exit() == 0

    second = await servers.start_ready(database_url)
    async with second.api() as api:
        for cid in ids:
            r = await api.get(f"/api/v1/chargers/{cid}/messages", params={"limit": 1000})
            assert r.status_code == 200, r.text
            page = r.json()
            assert page["next_cursor"] is None
            logged = {(m["message_id"], m["direction"], m["message_type"]) for m in page["items"]}
            for unique_id in acked[cid]:
                # The CALL and our CALLRESULT to it: deferred log rows, flushed at SIGTERM.
                assert (unique_id, "in", 2) in logged, unique_id
                assert (unique_id, "out", 3) in logged, unique_id


# ------------------------------------------------------------------ 3. restart presence
async def _last_seen(database_url: str, charger_id: str) -> datetime | None:
    table = ChargerState.__table__
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            value: datetime | None = (
                await conn.execute(
                    select(table.c.last_seen).where(table.c.charger_id == charger_id)
                )
            ).scalar()
    finally:
        await engine.dispose()
    return value


async def _stopped_at(database_url: str) -> datetime:
    """When the stopped process marked its node stopped (its sockets were closed by then)."""
    table = CsmsNode.__table__
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            value: datetime | None = (await conn.execute(select(table.c.stopped_at))).scalar()
    finally:
        await engine.dispose()
    assert value is not None
    return value


async def test_restart_within_the_grace_is_no_outage(
    database_url: str, servers: ServerPool, opened: list[Client]
) -> None:
    # A long grace: the restart is well within it however slow this machine is.
    first = await servers.start_ready(database_url, offline_grace=120)
    gone, back = "RESTART-GONE", "RESTART-BACK"
    async with first.api() as api:
        await register(api, gone)
        await register(api, back)
        clients = [await connect(first, cid, opened) for cid in (gone, back)]
        beats = [await client.call(call.Heartbeat()) for client in clients]
    first.terminate()
    assert await first.wait_exit() == 0
    # What the stopped process left as the departed charger's last-seen time: the receipt
    # of its Heartbeat, its last message (the CALLRESULT's currentTime is that, to the ms).
    gone_last_seen = await _last_seen(database_url, gone)
    assert gone_last_seen is not None
    in_ms = gone_last_seen.replace(microsecond=gone_last_seen.microsecond // 1000 * 1000)
    assert in_ms == ts(beats[0].current_time)

    second = servers.start(database_url, offline_grace=120)
    returned = await connect(second, back, opened)
    await returned.call(call.Heartbeat())
    await second.wait_ready()
    async with second.api() as api:
        # The returning charger never went offline; the other one is still within its grace.
        assert (await charger(api, back))["online"] is True
        assert await events(api, back, "ChargerOffline") == []
        assert len(await events(api, back, "ChargerOnline")) == 1
        assert [h["status"] for h in await connectivity(api, back)] == ["online"]
        assert (await charger(api, gone))["online"] is True
        assert await events(api, gone, "ChargerOffline") == []


async def test_an_outage_longer_than_the_grace_is_offline_from_the_stop(
    database_url: str, servers: ServerPool, opened: list[Client]
) -> None:
    """The chargers' sockets closed when the process stopped: an outage longer than the grace
    is an offline interval from then, for a charger that reconnects at once after the restart
    as much as for one that does not come back (NEVI uptime is computed from it)."""
    first = await servers.start_ready(database_url, offline_grace=1)
    gone, back = "OUTAGE-GONE", "OUTAGE-BACK"
    async with first.api() as api:
        await register(api, gone)
        await register(api, back)
        for cid in (gone, back):
            await (await connect(first, cid, opened)).call(call.Heartbeat())
    first.terminate()
    assert await first.wait_exit() == 0
    stopped = await _stopped_at(database_url)
    # Let the outage outlast the grace (a wait for a condition, not a timing assertion).
    while datetime.now(UTC) < stopped + timedelta(seconds=1.5):
        await asyncio.sleep(0.1)

    second = servers.start(database_url, offline_grace=1)
    returned = await connect(second, back, opened)
    await returned.call(call.Heartbeat())
    await second.wait_ready()
    async with second.api() as api:
        for cid in (gone, back):
            [offline] = await events(api, cid, "ChargerOffline")
            assert offline["payload"]["reason"] == "csms_restarted"
            assert ts(offline["payload"]["since"]) == stopped
            history = await connectivity(api, cid)
            assert [h["status"] for h in history][:2] == ["online", "offline"]
            assert ts(history[1]["started_at"]) == stopped
            assert ts(history[0]["ended_at"]) == stopped
        gone_state = await charger(api, gone)
        assert gone_state["online"] is False
        assert ts(gone_state["offline_since"]) == stopped
        # The one that came back is online again, from its reconnection on.
        assert (await charger(api, back))["online"] is True
        back_history = await connectivity(api, back)
        assert [h["status"] for h in back_history] == ["online", "offline", "online"]
        assert len(await events(api, back, "ChargerOnline")) == 2


async def test_after_a_crash_the_outage_starts_after_the_last_committed_report(
    database_url: str, servers: ServerPool, opened: list[Client]
) -> None:
    """Last-seen times are deferred writes, lost in a crash; a status report is committed
    before its answer. The outage the restart records starts after that report, not at an
    older last-seen (which put the charger's own report inside its offline interval)."""
    # Deferred writes held back for 5 s (last-seen stays the connection time) and no beat after
    # the start: the report is the latest sign of life the database has.
    settings = {"defer_interval": 5, "node_beat_interval": 300, "offline_grace": 0.2}
    first = await servers.start_ready(database_url, **settings)
    cid = "CRASH-REPORT"
    async with first.api() as api:
        await register(api, cid)
        client = await connect(first, cid, opened)
        await client.call(
            call.StatusNotification(
                connector_id=1,
                error_code="NoError",
                status="Available",
                timestamp="2026-01-01T00:00:00Z",
            )
        )
        r = await api.get(f"/api/v1/chargers/{cid}/status-history", params={"kind": "connector"})
        [report] = r.json()
    first.kill()
    await first.wait_exit()

    second = await servers.start_ready(database_url, **settings)
    async with second.api() as api:
        history = await connectivity(api, cid)
        assert [h["status"] for h in history] == ["online", "offline"]
        assert ts(history[1]["started_at"]) >= ts(report["started_at"])
        [offline] = await events(api, cid, "ChargerOffline")
        assert ts(offline["payload"]["since"]) == ts(history[1]["started_at"])


# ------------------------------------------------------------------ 4. migrate
def test_migrate_twice_on_a_fresh_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "chargeops.db"
    url = f"sqlite+aiosqlite:///{path}"
    for _ in range(2):
        done = run_command("migrate", url, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "latest revision" in done.stdout
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    with contextlib.closing(sqlite3.connect(path)) as db:
        versions = [r[0] for r in db.execute("SELECT version_num FROM alembic_version")]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert versions == [head]
    assert {"bus_outbox", "bus_cursors", "bus_inbox", "ticketing_fault_reports"} <= tables


# ------------------------------------------------------------------ 5. SIGTERM in start-up
async def first_line_logged(server: ServerProcess) -> None:
    """Returns once the process has logged its first line (it is starting up)."""

    async def logged() -> bool:
        server._alive_or_fail()
        return server.log().strip() != ""

    await eventually(logged, attempts=1200)


async def test_sigterm_as_soon_as_start_up_logs_exits_0(
    database_url: str, servers: ServerPool
) -> None:
    server = servers.start(database_url)
    await first_line_logged(server)
    server.terminate()
    assert await server.wait_exit() == 0
    assert "Traceback" not in server.log()
    await servers.start_ready(database_url)


def catches_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has a handler for SIGTERM (Linux: SigCgt in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
async def test_sigterm_as_soon_as_the_process_catches_it_exits_0(
    database_url: str, servers: ServerPool
) -> None:
    """The console script catches SIGTERM before it imports anything heavy (services.entry):
    a supervisor stopping a process it has just started gets the clean stop, not exit 143."""
    server = servers.start(database_url)

    async def caught() -> bool:
        server._alive_or_fail()
        return catches_sigterm(server.pid)

    await eventually(caught, attempts=2000)
    server.terminate()
    assert await server.wait_exit() == 0
    assert "Traceback" not in server.log()
    await servers.start_ready(database_url)


async def test_sigterm_while_migrating_a_fresh_database_exits_0_and_leaves_it_usable(
    tmp_path: Path, servers: ServerPool
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh' / 'chargeops.db'}"
    server = servers.start(url)
    await first_line_logged(server)
    server.terminate()
    assert await server.wait_exit() == 0
    assert "Traceback" not in server.log()
    # The migration that was running finished (or never began): a restart comes up.
    await servers.start_ready(url)


async def test_sigterm_again_and_again_while_stopping_still_exits_0(
    database_url: str, servers: ServerPool
) -> None:
    """A supervisor repeating SIGTERM (or an impatient operator): the repeats change nothing,
    also after the clean stop, while the event loop closes and the interpreter exits (closing
    the loop gave SIGTERM its default action back, and a repeat there was exit 143)."""
    server = await servers.start_ready(database_url)
    server.terminate()

    async def stopped() -> bool:
        return "services.wiring stopped" in server.log() or server.proc.poll() is not None

    await eventually(stopped, attempts=2000, delay=0.01)
    while server.proc.poll() is None:  # a repeat every millisecond or so until it is gone
        with contextlib.suppress(ProcessLookupError):
            server.terminate()
        await asyncio.sleep(0.001)
    assert await server.wait_exit() == 0, server.log()
    assert "Traceback" not in server.log()


async def test_sigterm_while_the_database_does_not_answer_at_start_exits_0_without_waiting_for_it(
    servers: ServerPool,
) -> None:
    """A database that accepts the TCP connection and never answers (a host dropping
    packets, a stuck proxy): the start-up waits for it; a SIGTERM then stops the process
    at once. It used to log "stopped during start-up" and go on waiting for the migration's
    connection attempt (the driver's 60 s timeout), so a supervisor killed it instead."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    accepted: list[socket.socket] = []
    try:
        server = servers.start(f"postgresql+asyncpg://chargeops@127.0.0.1:{port}/chargeops")

        async def connected() -> bool:
            server._alive_or_fail()
            silent.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                accepted.append(silent.accept()[0])  # kept open, never answered
            return bool(accepted)

        await eventually(connected, attempts=1200)
        server.terminate()
        # The silent connections stay open: only the stop, not the driver's timeout, ends it.
        assert await server.wait_exit() == 0, server.log()
        assert "stopped during start-up" in server.log()
        assert "Traceback" not in server.log()
    finally:
        for conn in accepted:
            conn.close()
        silent.close()
