"""Shared fixtures: a migrated database on each backend, the whole system in-process,
an authenticated HTTP client, and real OCPP charge points (the ``ocpp`` library's
client classes over a real WebSocket)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from ocpp.v16 import ChargePoint as Cp16
from ocpp.v201 import ChargePoint as Cp201
from websockets.asyncio.client import ClientConnection, connect

from services.clock import Clock
from services.db import Database
from services.migrations import upgrade
from services.settings import Settings
from services.wiring import AllInOne, build_all_in_one
from tests.process import ADMIN_TOKEN, ServerPool

PG_HOST = os.environ.get("CHARGEOPS_TEST_PG_HOST", "127.0.0.1")
PG_ADMIN_URL = f"postgresql://postgres@{PG_HOST}:5432/postgres"
REQUIRE_SERVICES = os.environ.get("CHARGEOPS_TEST_REQUIRE_SERVICES") == "1"


def port_open(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def need_service(name: str, host: str, port: int) -> None:
    if port_open(host, port):
        return
    message = f"{name} is not answering on {host}:{port}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (CI requires it: these tests must run, never skip)")
    pytest.skip(f"{message}; start it to run these tests (see README, 'Tests')")


# ------------------------------------------------------------------ databases
@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("db") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    need_service("PostgreSQL", PG_HOST, 5432)
    name = f"chargeops_test_{uuid.uuid4().hex[:8]}"
    _run_sync(_pg_admin(f'CREATE DATABASE "{name}"'))
    url = f"postgresql+asyncpg://postgres@{PG_HOST}:5432/{name}"
    upgrade(url)
    yield url
    _run_sync(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _run_sync(coro: Awaitable[Any]) -> Any:
    """Run a coroutine to completion from sync code, even inside a running loop."""
    from concurrent.futures import ThreadPoolExecutor

    async def _wrap() -> Any:
        return await coro

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, _wrap()).result()


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _pg_truncate(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        tables = [
            r["tablename"]
            for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname='public' "
                "AND tablename <> 'alembic_version'"
            )
        ]
        if tables:
            await conn.execute(
                "TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"
            )
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "chargeops.db"
        shutil.copy(template, path)
        return f"sqlite+aiosqlite:///{path}"
    url: str = request.getfixturevalue("postgres_database")
    await _pg_truncate(url)
    return url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A Database on the test's (migrated) database, disposed afterwards."""
    database = Database(database_url)
    try:
        yield database
    finally:
        await database.dispose()


# ------------------------------------------------------------------ the system
def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "ocpp_host": "127.0.0.1",
        "ocpp_port": 0,
        "http_host": "127.0.0.1",
        "http_port": 0,
        "admin_token": ADMIN_TOKEN,
        "heartbeat_interval": 60,
        "offline_grace": 0.3,
        "auth_failures_per_minute": 50,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class Running:
    system: AllInOne
    api: httpx.AsyncClient

    @property
    def ocpp_url(self) -> str:
        return f"ws://127.0.0.1:{self.system.csms.port}/ocpp/"


@contextlib.asynccontextmanager
async def running_system(settings: Settings, clock: Clock | None = None) -> AsyncIterator[Running]:
    system = await build_all_in_one(settings, migrate=False, clock=clock)
    await system.start()
    transport = httpx.ASGITransport(app=system.app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://chargeops.test",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as api:
        try:
            yield Running(system, api)
        finally:
            await system.stop()


SystemFactory = Callable[..., contextlib.AbstractAsyncContextManager[Running]]


@pytest.fixture
def system_factory(database_url: str) -> SystemFactory:
    def factory(
        clock: Clock | None = None, **overrides: Any
    ) -> contextlib.AbstractAsyncContextManager[Running]:
        return running_system(make_settings(database_url, **overrides), clock)

    return factory


@pytest.fixture
async def running(system_factory: SystemFactory) -> AsyncIterator[Running]:
    async with system_factory() as r:
        yield r


# ------------------------------------------------------------------ server processes
@pytest.fixture
def servers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerPool]:
    """Starts ``chargeops`` children; kills leftovers, shows their logs on failure."""
    failed_before = request.session.testsfailed
    pool = ServerPool(tmp_path)
    try:
        yield pool
    finally:
        pool.cleanup()
        if request.session.testsfailed > failed_before:
            sys.stdout.write(pool.logs())


# ------------------------------------------------------------------ charge points
PASSWORD = "s3cret-password-0123"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def register(api: httpx.AsyncClient, charger_id: str, **fields: Any) -> dict[str, Any]:
    body = {"id": charger_id, "password": PASSWORD, "security_profile": 1, **fields}
    response = await api.post("/api/v1/chargers", json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


class ChargerHandle:
    """A connected charge point driven by the test; ``cp`` is the ocpp library object."""

    def __init__(self, cp: Any, ws: ClientConnection, task: asyncio.Task[None]) -> None:
        self.cp = cp
        self.ws = ws
        self.task = task

    async def call(self, payload: Any, **kwargs: Any) -> Any:
        return await self.cp.call(payload, **kwargs)

    async def close(self) -> None:
        await self.ws.close()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task


@contextlib.asynccontextmanager
async def charge_point(
    running: Running,
    charger_id: str,
    version: str = "1.6",
    *,
    password: str | None = PASSWORD,
    cp_class: type | None = None,
) -> AsyncIterator[ChargerHandle]:
    headers = {"Authorization": basic(charger_id, password)} if password else {}
    subprotocol = "ocpp1.6" if version == "1.6" else "ocpp2.0.1"
    ws = await connect(
        running.ocpp_url + charger_id,
        subprotocols=[subprotocol],  # type: ignore[list-item]
        additional_headers=headers,
        open_timeout=10,
    )
    cls = cp_class or (Cp16 if version == "1.6" else Cp201)
    cp = cls(charger_id, ws, response_timeout=10)
    task = asyncio.create_task(cp.start())
    handle = ChargerHandle(cp, ws, task)
    try:
        yield handle
    finally:
        await handle.close()


async def charger_events(
    running: Running, charger_id: str, type_: str | None = None
) -> list[dict[str, Any]]:
    """A charger's normalized events through the API, oldest first."""
    params = {"limit": 1000, **({"type": type_} if type_ else {})}
    r = await running.api.get(f"/api/v1/chargers/{charger_id}/events", params=params)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return list(reversed(items))


async def eventually(
    check: Callable[[], Awaitable[Any]], *, attempts: int = 200, delay: float = 0.05
) -> Any:
    """Poll ``check`` until it returns a truthy value (no timing assertion: a bound)."""
    last: Any = None
    for _ in range(attempts):
        last = await check()
        if last:
            return last
        await asyncio.sleep(delay)
    raise AssertionError(f"condition not met; last value: {last!r}")
