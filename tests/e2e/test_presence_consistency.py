"""Live state and history stay true when a commit fails or two commits race.

The in-memory state a session or presence keeps must follow what was committed: a failed
commit must not leave memory ahead of the database (the charger's retry would then look
like no change, or a charger would stay online for ever), and a reconnection committed
together with the end of the previous connection must not be undone by it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from ocpp.exceptions import InternalError
from ocpp.v16 import call as call16
from sqlalchemy.engine import Connection

from csms import state
from services.committer import WriteSet
from tests.conftest import (
    Running,
    SystemFactory,
    charge_point,
    charger_events,
    eventually,
    register,
)


def _status(status: str, error_code: str, at: str) -> call16.StatusNotification:
    return call16.StatusNotification(
        connector_id=1, error_code=error_code, status=status, timestamp=at
    )


async def _history(running: Running, charger_id: str, kind: str) -> list[dict[str, Any]]:
    r = await running.api.get(
        f"/api/v1/chargers/{charger_id}/status-history", params={"kind": kind}
    )
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()
    return rows


async def test_a_status_whose_commit_failed_is_recorded_when_the_charger_retries(
    system_factory: SystemFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with system_factory(offline_grace=30) as running:
        await register(running.api, "CP-RETRY")
        committer = running.system.committer
        original = committer.commit
        failures = {"left": 0}

        async def flaky(writes: WriteSet, **kwargs: Any) -> list[Any]:
            if failures["left"] and any(t is state.CONNECTOR_STATE for t, _ in writes.upserts):
                failures["left"] -= 1
                raise RuntimeError("simulated failure of the database")
            return await original(writes, **kwargs)

        monkeypatch.setattr(committer, "commit", flaky)
        async with charge_point(running, "CP-RETRY") as cp:
            await cp.call(_status("Available", "NoError", "2026-01-01T00:00:00Z"))
            failures["left"] = 1
            faulted = _status("Faulted", "GroundFailure", "2026-01-01T00:00:10Z")
            with pytest.raises(InternalError):
                await cp.call(faulted, suppress=False)
            # The charger retries the same report (a new message id): now it is recorded.
            await cp.call(faulted, suppress=False)
            await cp.call(_status("Available", "NoError", "2026-01-01T00:00:20Z"))

        history = await _history(running, "CP-RETRY", "connector")
        assert [h["status"] for h in history] == ["available", "faulted", "available"]
        raised = await charger_events(running, "CP-RETRY", "FaultRaised")
        assert [e["payload"]["error_code"] for e in raised] == ["GroundFailure"]
        changes = await charger_events(running, "CP-RETRY", "ConnectorStatusChanged")
        assert [e["payload"]["status"] for e in changes] == ["available", "faulted", "available"]


async def test_a_failed_offline_mark_is_retried(
    system_factory: SystemFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with system_factory(offline_grace=0.1) as running:
        await register(running.api, "CP-EXPIRE")
        presence = running.system.csms.presence
        original = presence._offline_op
        # Two: the committer retries a failed batch's write sets one by one once.
        failures = {"left": 2}

        def flaky(*args: Any) -> Callable[[Connection], int]:
            op = original(*args)

            def run(conn: Connection) -> int:
                if failures["left"]:
                    failures["left"] -= 1
                    raise RuntimeError("simulated failure of the database")
                return op(conn)

            return run

        monkeypatch.setattr(presence, "_offline_op", flaky)
        async with charge_point(running, "CP-EXPIRE") as cp:
            await cp.call(call16.Heartbeat())

        async def offline() -> list[dict[str, Any]]:
            return await charger_events(running, "CP-EXPIRE", "ChargerOffline")

        [event] = await eventually(offline)
        assert failures["left"] == 0  # the first attempt did fail, retry and all
        body = (await running.api.get("/api/v1/chargers/CP-EXPIRE")).json()
        assert body["online"] is False
        history = await _history(running, "CP-EXPIRE", "connectivity")
        assert [h["status"] for h in history] == ["online", "offline"]


async def test_a_reconnection_committed_with_the_previous_disconnect_stays_connected(
    system_factory: SystemFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old connection's end and the new one's start land in one batch (rows go before
    operations there): the live state must still say connected."""
    async with system_factory(offline_grace=30) as running:
        await register(running.api, "CP-BLIP")
        committer = running.system.committer
        presence = running.system.csms.presence
        gate = asyncio.Event()
        original = committer._execute

        async def gated(batch: list[Any]) -> list[list[Any]]:
            await gate.wait()
            return await original(batch)

        async with charge_point(running, "CP-BLIP") as cp:
            await cp.call(call16.Heartbeat())
            monkeypatch.setattr(committer, "_execute", gated)
            # Hold the committer on a batch of its own so the next two queue up together.
            held = asyncio.create_task(committer.commit(WriteSet()))
            await eventually(lambda: _true(committer._queue.empty()))
        await eventually(lambda: _true("CP-BLIP" not in presence.sessions))
        async with charge_point(running, "CP-BLIP") as cp:

            async def both_queued() -> bool:
                queued = list(committer._queue._queue)  # type: ignore[attr-defined]
                return any(
                    t is state.CHARGER_STATE and row.get("connected") is True
                    for p in queued
                    for t, row in p.writes.upserts
                )

            await eventually(both_queued)
            gate.set()
            await held
            await cp.call(call16.Heartbeat())
            await committer.flush()
            body = (await running.api.get("/api/v1/chargers/CP-BLIP")).json()
            assert body["online"] is True
            assert body["connected"] is True


async def _true(value: bool) -> bool:
    return value
