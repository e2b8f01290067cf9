"""A webhook secret is stored in clear (it keys the HMAC of outgoing payloads), so it must
never leave the database except in the answer of create and rotate-secret: not in a log
line when the write that stores it fails (the committer and the 500 handler log the
exception, whose text carried the statement's parameters)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import Running
from ticketing.webhooks import signing

SECRET = "leak-probe-secret-0123456789abcdefghijklmnopqrs"

SQLITE_REFUSE = [
    "CREATE TRIGGER refuse_webhooks BEFORE {op} ON ticketing_webhooks "
    "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
]
POSTGRES_REFUSE = [
    "CREATE FUNCTION refuse_webhooks() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$",
    "CREATE TRIGGER refuse_webhooks BEFORE {op} ON ticketing_webhooks "
    "FOR EACH ROW EXECUTE FUNCTION refuse_webhooks()",
]


UNDO = [
    "DROP TRIGGER IF EXISTS refuse_webhooks{on}",
    "DROP FUNCTION IF EXISTS refuse_webhooks()",
]


@contextlib.asynccontextmanager
async def refused(running: Running, op: str) -> AsyncIterator[None]:
    """Every ``op`` (INSERT / UPDATE) on the webhooks table fails in the database (the
    PostgreSQL test database outlives the test: the trigger is dropped afterwards)."""
    db = running.system.db
    sqlite = db.dialect == "sqlite"
    async with db.engine.begin() as conn:
        for statement in SQLITE_REFUSE if sqlite else POSTGRES_REFUSE:
            await conn.execute(text(statement.format(op=op)))
    try:
        yield
    finally:
        async with db.engine.begin() as conn:
            for statement in UNDO[:1] if sqlite else UNDO:
                on = "" if sqlite else " ON ticketing_webhooks"
                await conn.execute(text(statement.format(on=on)))


@pytest.mark.parametrize("op", ["INSERT", "UPDATE"])
async def test_failed_secret_write_logs_no_secret(
    running: Running,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    op: str,
) -> None:
    if op == "UPDATE":
        r = await running.api.post("/api/v1/webhooks", json={"url": "https://example.test/h"})
        assert r.status_code == 201, r.text
        path = f"/api/v1/webhooks/{r.json()['id']}/rotate-secret"
        body = None
    else:
        path, body = "/api/v1/webhooks", {"url": "https://example.test/h"}
    monkeypatch.setattr(signing, "new_secret", lambda: SECRET)
    # As a server answers: a 500, the exception logged (not raised into the test).
    transport = httpx.ASGITransport(app=running.system.app, raise_app_exceptions=False)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://chargeops.test") as client,
        refused(running, op),
    ):
        with caplog.at_level(logging.DEBUG):
            r = await client.post(path, json=body, headers=running.api.headers)
    assert r.status_code == 500, r.text
    assert SECRET not in r.text
    logged = [rec for rec in caplog.records if rec.exc_info or rec.levelno >= logging.WARNING]
    assert logged, "the failed write was not logged"
    assert "refused by the test" in caplog.text  # the database's reason is still there
    assert SECRET not in caplog.text
