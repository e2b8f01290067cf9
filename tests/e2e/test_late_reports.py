"""Late reports: a charger flushing, after a reconnect, the status reports it queued while
offline, once it has reported its current state. The live state stays the newest report
(by the charger's clock); the late ones are intervals of the history at their own time.

csms's clock is driven by the test (presence's periodic check stopped), the charger's
clock runs two minutes behind it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from csms.protocol.timestamps import format_timestamp
from services.tasks import cancel_and_wait
from tests.conftest import Running, SystemFactory, charge_point, charger_events, register

START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SKEW = timedelta(minutes=2)  # the charger's clock is behind csms's


class Clocks:
    def __init__(self, running: Running) -> None:
        self.now = START
        running.system.csms.presence.ctx.clock = lambda: self.now

    def at(self, minutes: float) -> str:
        """Move csms's clock to START + minutes; the charger's timestamp of that moment."""
        self.now = START + timedelta(minutes=minutes)
        return self.charger(minutes)

    @staticmethod
    def charger(minutes: float) -> str:
        return format_timestamp(START + timedelta(minutes=minutes) - SKEW)


def _server(minutes: float) -> datetime:
    return START + timedelta(minutes=minutes)


async def _connector_history(running: Running, charger_id: str) -> list[dict[str, Any]]:
    r = await running.api.get(
        f"/api/v1/chargers/{charger_id}/status-history", params={"kind": "connector"}
    )
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()
    return rows


async def _connector(running: Running, charger_id: str) -> dict[str, Any]:
    r = await running.api.get(f"/api/v1/chargers/{charger_id}")
    assert r.status_code == 200, r.text
    [connector] = r.json()["connectors"]
    result: dict[str, Any] = connector
    return result


def _sn16(status: str, error_code: str, at: str) -> call16.StatusNotification:
    return call16.StatusNotification(
        connector_id=1, error_code=error_code, status=status, timestamp=at
    )


def _sn201(status: str, at: str) -> call201.StatusNotification:
    return call201.StatusNotification(
        timestamp=at, connector_status=status, evse_id=1, connector_id=1
    )


async def test_queued_16_reports_after_the_current_one_do_not_become_the_live_state(
    system_factory: SystemFactory,
) -> None:
    """Available (10:00), offline; while offline the connector faults (10:13) and recovers
    (10:18); after the reconnect (10:30) the charger reports Available, then flushes its
    queue. The live state stays Available and no fault is raised now for a fault that
    ended twelve minutes ago; the history shows the fault where it happened."""
    async with system_factory(heartbeat_interval=3600, offline_grace=5) as running:
        await cancel_and_wait(running.system.csms.presence._task)
        clocks = Clocks(running)
        await register(running.api, "CP-QUEUE")
        async with charge_point(running, "CP-QUEUE") as cp:
            await cp.call(_sn16("Available", "NoError", clocks.at(0)))
        async with charge_point(running, "CP-QUEUE") as cp:
            await cp.call(_sn16("Available", "NoError", clocks.at(30)))
            clocks.at(30.1)
            await cp.call(_sn16("Faulted", "GroundFailure", clocks.charger(13)))
            clocks.at(30.2)
            await cp.call(_sn16("Available", "NoError", clocks.charger(18)))

            live = await _connector(running, "CP-QUEUE")
            assert live["status"] == "available"
            history = await _connector_history(running, "CP-QUEUE")
            assert [(h["status"], h["error_code"]) for h in history] == [
                ("available", "NoError"),
                ("faulted", "GroundFailure"),
                ("available", "NoError"),
                ("available", "NoError"),
            ]
            assert [datetime.fromisoformat(h["started_at"]) for h in history] == [
                _server(0),
                _server(13),
                _server(18),
                _server(30),
            ]
            assert history[-1]["ended_at"] is None
            assert datetime.fromisoformat(history[-1]["charger_time"]) == _server(30) - SKEW
            assert await charger_events(running, "CP-QUEUE", "FaultRaised") == []
            changes = await charger_events(running, "CP-QUEUE", "ConnectorStatusChanged")
            assert [c["payload"]["status"] for c in changes] == ["available"]


async def test_a_queued_fault_flushed_last_does_not_fault_a_healthy_connector(
    system_factory: SystemFactory,
) -> None:
    """The queue ends with the fault (its recovery was not queued): before, the connector
    read Faulted from then on, live and in the history's open interval, and a fault was
    raised that nothing would clear, though the charger had said Available since."""
    async with system_factory(heartbeat_interval=3600, offline_grace=5) as running:
        await cancel_and_wait(running.system.csms.presence._task)
        clocks = Clocks(running)
        await register(running.api, "CP-LASTQ")
        async with charge_point(running, "CP-LASTQ") as cp:
            await cp.call(_sn16("Available", "NoError", clocks.at(0)))
            await cp.call(_sn16("Available", "NoError", clocks.at(30)))
            clocks.at(30.1)
            await cp.call(_sn16("Faulted", "GroundFailure", clocks.charger(13)))
            clocks.at(30.2)  # its answer was lost: the charger sends it again
            await cp.call(_sn16("Faulted", "GroundFailure", clocks.charger(13)))

            assert (await _connector(running, "CP-LASTQ"))["status"] == "available"
            history = await _connector_history(running, "CP-LASTQ")
            # The late fault lasted until the next report the charger made, at 10:30.
            assert [(h["status"], datetime.fromisoformat(h["started_at"])) for h in history] == [
                ("available", _server(0)),
                ("faulted", _server(13)),
                ("available", _server(30)),
            ]
            assert await charger_events(running, "CP-LASTQ", "FaultRaised") == []


async def test_a_queued_201_report_is_history_not_live_state(
    system_factory: SystemFactory,
) -> None:
    async with system_factory(heartbeat_interval=3600, offline_grace=5) as running:
        await cancel_and_wait(running.system.csms.presence._task)
        clocks = Clocks(running)
        await register(running.api, "CP-Q201")
        async with charge_point(running, "CP-Q201", "2.0.1") as cp:
            await cp.call(_sn201("Available", clocks.at(0)))
            await cp.call(_sn201("Occupied", clocks.at(30)))
            clocks.at(30.1)
            await cp.call(_sn201("Faulted", clocks.charger(10)))

            assert (await _connector(running, "CP-Q201"))["status"] == "occupied"
            history = await _connector_history(running, "CP-Q201")
            assert [(h["status"], datetime.fromisoformat(h["started_at"])) for h in history] == [
                ("available", _server(0)),
                ("faulted", _server(10)),
                ("occupied", _server(30)),
            ]
            assert history[-1]["ended_at"] is None
            assert await charger_events(running, "CP-Q201", "FaultRaised") == []


async def test_a_report_stamped_ahead_of_csms_does_not_hold_back_the_next_ones(
    system_factory: SystemFactory,
) -> None:
    """A charger whose clock ran an hour ahead (then set right by the BootNotification
    answer): its next reports are older by its clock than the current one, and still
    current, so they are taken in arrival order."""
    async with system_factory(heartbeat_interval=3600, offline_grace=5) as running:
        await cancel_and_wait(running.system.csms.presence._task)
        clocks = Clocks(running)
        await register(running.api, "CP-AHEAD")
        async with charge_point(running, "CP-AHEAD") as cp:
            clocks.at(0)
            ahead = format_timestamp(START + timedelta(hours=1))
            await cp.call(_sn16("Available", "NoError", ahead))
            await cp.call(_sn16("Faulted", "GroundFailure", clocks.at(1)))

            assert (await _connector(running, "CP-AHEAD"))["status"] == "faulted"
            history = await _connector_history(running, "CP-AHEAD")
            assert [h["status"] for h in history] == ["available", "faulted"]
            assert len(await charger_events(running, "CP-AHEAD", "FaultRaised")) == 1


async def test_a_report_from_a_reset_clock_is_current(system_factory: SystemFactory) -> None:
    """A station without a battery-backed clock stamps its reports 1970 after a reboot,
    until it sets its clock: such a report is no queued one, and is the current state."""
    async with system_factory(heartbeat_interval=3600, offline_grace=5) as running:
        await cancel_and_wait(running.system.csms.presence._task)
        clocks = Clocks(running)
        await register(running.api, "CP-RESET")
        async with charge_point(running, "CP-RESET") as cp:
            await cp.call(_sn16("Available", "NoError", clocks.at(0)))
            clocks.at(5)
            await cp.call(_sn16("Faulted", "GroundFailure", "1970-01-01T00:00:12Z"))

            assert (await _connector(running, "CP-RESET"))["status"] == "faulted"
            history = await _connector_history(running, "CP-RESET")
            assert [(h["status"], datetime.fromisoformat(h["started_at"])) for h in history] == [
                ("available", _server(0)),
                ("faulted", _server(5)),
            ]
            assert len(await charger_events(running, "CP-RESET", "FaultRaised")) == 1


async def test_a_report_after_the_clock_was_set_back_is_current(
    system_factory: SystemFactory,
) -> None:
    """A charger whose clock ran 40 s ahead (within the minute that still orders) has it
    set right (its BootNotification answer, or NTP): a change it reports within those 40 s
    is stamped before its last report, yet after csms received that one. It is the
    current state, not a queued report: before, the connector stayed Available, live and
    in the history's open interval, and the fault was raised for nothing."""
    async with system_factory(heartbeat_interval=3600, offline_grace=5) as running:
        await cancel_and_wait(running.system.csms.presence._task)
        clocks = Clocks(running)
        await register(running.api, "CP-SETBACK")
        async with charge_point(running, "CP-SETBACK") as cp:
            clocks.at(0)
            ahead = format_timestamp(START + timedelta(seconds=40))
            await cp.call(_sn16("Available", "NoError", ahead))
            clocks.at(0.25)  # 15 s later, by a clock set right
            await cp.call(_sn16("Faulted", "GroundFailure", format_timestamp(clocks.now)))

            assert (await _connector(running, "CP-SETBACK"))["status"] == "faulted"
            history = await _connector_history(running, "CP-SETBACK")
            assert [(h["status"], datetime.fromisoformat(h["started_at"])) for h in history] == [
                ("available", _server(0)),
                ("faulted", _server(0.25)),
            ]
            assert len(await charger_events(running, "CP-SETBACK", "FaultRaised")) == 1


async def test_a_late_report_retried_on_a_new_connection_is_recorded_once(
    system_factory: SystemFactory,
) -> None:
    """The answer to a late report is lost with the connection; on the new one the charger
    reports its current state (stamped a second later than csms's clock says: clock
    resolution, latency), then sends the late report again. It is the interval already
    recorded, not a second one a second apart."""
    async with system_factory(heartbeat_interval=3600, offline_grace=5) as running:
        await cancel_and_wait(running.system.csms.presence._task)
        clocks = Clocks(running)
        await register(running.api, "CP-LATE-RETRY")
        async with charge_point(running, "CP-LATE-RETRY") as cp:
            await cp.call(_sn16("Available", "NoError", clocks.at(0)))
            await cp.call(_sn16("Available", "NoError", clocks.at(30)))
            clocks.at(30.1)
            await cp.call(_sn16("Faulted", "GroundFailure", clocks.charger(13)))
        async with charge_point(running, "CP-LATE-RETRY") as cp:
            clocks.at(31)
            await cp.call(_sn16("Available", "NoError", clocks.charger(31 - 1 / 60)))
            clocks.at(31.1)
            await cp.call(_sn16("Faulted", "GroundFailure", clocks.charger(13)))

            history = await _connector_history(running, "CP-LATE-RETRY")
            assert [(h["status"], datetime.fromisoformat(h["started_at"])) for h in history] == [
                ("available", _server(0)),
                ("faulted", _server(13)),
                ("available", _server(30)),
            ]


async def test_a_report_retried_after_a_newer_one_is_recorded_once(
    system_factory: SystemFactory,
) -> None:
    """After a reconnect the charger flushes a queued fault (applied: nothing newer was
    known), loses its answer with the connection, reports its current state on the new
    one and then sends the fault again: the fault is recorded already."""
    async with system_factory(heartbeat_interval=3600, offline_grace=5) as running:
        await cancel_and_wait(running.system.csms.presence._task)
        clocks = Clocks(running)
        await register(running.api, "CP-RETRY-AFTER")
        async with charge_point(running, "CP-RETRY-AFTER") as cp:
            await cp.call(_sn16("Available", "NoError", clocks.at(0)))
        async with charge_point(running, "CP-RETRY-AFTER") as cp:
            clocks.at(30)
            await cp.call(_sn16("Faulted", "GroundFailure", clocks.charger(13)))
        async with charge_point(running, "CP-RETRY-AFTER") as cp:
            await cp.call(_sn16("Available", "NoError", clocks.at(31)))
            clocks.at(31.1)
            await cp.call(_sn16("Faulted", "GroundFailure", clocks.charger(13)))

            assert (await _connector(running, "CP-RETRY-AFTER"))["status"] == "available"
            history = await _connector_history(running, "CP-RETRY-AFTER")
            assert [(h["status"], datetime.fromisoformat(h["started_at"])) for h in history] == [
                ("available", _server(0)),
                ("faulted", _server(30)),
                ("available", _server(31)),
            ]
