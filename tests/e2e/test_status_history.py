"""Status history under reconnection races: every outage and every connector change is an
interval, and the open interval is the live state.

Presence's periodic check is stopped in these tests and driven by hand, so that what
happens between two of its ticks is reproduced deterministically.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from ocpp.v16 import call as call16

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
