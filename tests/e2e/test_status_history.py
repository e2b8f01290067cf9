"""Status history under reconnection races: every outage and every connector change is an
interval, and the open interval is the live state.

Presence's periodic check is stopped in these tests and driven by hand, so that what
happens between two of its ticks is reproduced deterministically.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from ocpp.v16 import call as call16

from csms import state
from services.committer import WriteSet
from services.db import utcnow
from services.tasks import cancel_and_wait
from tests.conftest import (
    Running,
    SystemFactory,
    charge_point,
    charger_events,
    eventually,
    register,
)


async def _history(running: Running, charger_id: str, kind: str) -> list[dict[str, Any]]:
    r = await running.api.get(
        f"/api/v1/chargers/{charger_id}/status-history", params={"kind": kind}
    )
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()
    return rows


async def _live(running: Running, charger_id: str) -> dict[str, Any]:
    r = await running.api.get(f"/api/v1/chargers/{charger_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _status(status: str, error_code: str, at: str) -> call16.StatusNotification:
    return call16.StatusNotification(
        connector_id=1, error_code=error_code, status=status, timestamp=at
    )


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_a_silent_charger_that_reconnects_at_once_keeps_its_outage(
    system_factory: SystemFactory,
) -> None:
    """Closed for silence (nothing for 2 x heartbeat interval + grace), the charger is
    offline since its last message, also when it reconnects before presence's next tick."""
    async with system_factory(heartbeat_interval=10, offline_grace=5) as running:
        presence = running.system.csms.presence
        await cancel_and_wait(presence._task)
        await register(running.api, "CP-MUTE")
        async with charge_point(running, "CP-MUTE") as cp:
            await cp.call(call16.Heartbeat())
            last_message = presence.sessions["CP-MUTE"].last_seen
            # csms's clock jumps past the silence limit: the check closes the socket.
            presence.ctx.clock = lambda: utcnow() + timedelta(seconds=30)
            presence._close_silent()
            await cp.ws.wait_closed()
        async with charge_point(running, "CP-MUTE") as cp:
            await cp.call(call16.Heartbeat())

            history = await _history(running, "CP-MUTE", "connectivity")
            assert [h["status"] for h in history] == ["online", "offline", "online"]
            assert _ts(history[1]["started_at"]) == last_message
            [offline] = await charger_events(running, "CP-MUTE", "ChargerOffline")
            assert offline["payload"]["reason"] == "heartbeat_timeout"
            assert _ts(offline["payload"]["since"]) == last_message
            assert len(await charger_events(running, "CP-MUTE", "ChargerOnline")) == 2
            assert (await _live(running, "CP-MUTE"))["online"] is True


async def test_a_reconnection_after_the_grace_is_an_outage_before_the_offline_mark(
    system_factory: SystemFactory,
) -> None:
    """The grace ran out but presence has not marked the charger offline yet when it comes
    back: the outage is still recorded, from the disconnect."""
    async with system_factory(offline_grace=0.2) as running:
        presence = running.system.csms.presence
        await cancel_and_wait(presence._task)
        await register(running.api, "CP-LATE")
        async with charge_point(running, "CP-LATE") as cp:
            await cp.call(call16.Heartbeat())

        async def grace_over() -> bool:
            pending = presence._pending.get("CP-LATE")
            return pending is not None and pending.deadline <= time.monotonic()

        await eventually(grace_over)
        gone_since = presence._pending["CP-LATE"].since
        async with charge_point(running, "CP-LATE") as cp:
            await cp.call(call16.Heartbeat())
            history = await _history(running, "CP-LATE", "connectivity")
            assert [h["status"] for h in history] == ["online", "offline", "online"]
            assert _ts(history[1]["started_at"]) == gone_since
            [offline] = await charger_events(running, "CP-LATE", "ChargerOffline")
            assert offline["payload"]["reason"] == "disconnected"


async def test_a_status_in_flight_on_the_replaced_connection_is_seen_by_the_new_one(
    system_factory: SystemFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The charger opens a second socket while a report on the first is being committed:
    the new connection must start from that report, or its next report of the state before
    looks like no change (no interval, no event) while the live state takes it."""
    async with system_factory(offline_grace=30) as running:
        await register(running.api, "CP-TWICE")
        committer = running.system.committer
        presence = running.system.csms.presence
        async with charge_point(running, "CP-TWICE") as first:
            await first.call(_status("Available", "NoError", "2026-01-01T00:00:00Z"))
            gate, holding = asyncio.Event(), asyncio.Event()
            original = committer._execute

            async def gated(batch: list[Any]) -> list[list[Any]]:
                holding.set()
                await gate.wait()
                return await original(batch)

            monkeypatch.setattr(committer, "_execute", gated)
            # Hold the committer on a batch of its own: the report then waits in the queue.
            held = asyncio.create_task(committer.commit(WriteSet()))
            await holding.wait()
            old = presence.sessions["CP-TWICE"]
            fault = asyncio.create_task(
                first.call(_status("Faulted", "GroundFailure", "2026-01-01T00:00:10Z"))
            )

            async def fault_queued() -> bool:
                queued = list(committer._queue._queue)  # type: ignore[attr-defined]
                return any(
                    t is state.CONNECTOR_STATE and row.get("status") == "faulted"
                    for p in queued
                    for t, row in p.writes.upserts
                )

            await eventually(fault_queued)
            async with charge_point(running, "CP-TWICE") as second:
                await eventually(lambda: _true(presence.sessions.get("CP-TWICE") is not old))
                gate.set()
                await held

                async def faulted() -> bool:
                    live = await _live(running, "CP-TWICE")
                    return bool(live["connectors"]) and live["connectors"][0]["status"] == "faulted"

                await eventually(faulted)
                await second.call(_status("Available", "NoError", "2026-01-01T00:00:20Z"))
                fault.cancel()

                history = await _history(running, "CP-TWICE", "connector")
                assert [h["status"] for h in history] == ["available", "faulted", "available"]
                live = await _live(running, "CP-TWICE")
                assert live["connectors"][0]["status"] == "available"
                changes = await charger_events(running, "CP-TWICE", "ConnectorStatusChanged")
                assert [e["payload"]["status"] for e in changes][-1] == "available"
                assert len(await charger_events(running, "CP-TWICE", "FaultCleared")) == 1


async def _true(value: bool) -> bool:
    return value
