"""OCPP 2.0.1 NotifyEvent AvailabilityState of a Connector or an EVSE (trigger Delta) is a
connector status report, like StatusNotification: live state, history interval,
ConnectorStatusChanged, faults; a change the station reports both ways counts once."""

from __future__ import annotations

from typing import Any

from ocpp.v201 import call

from tests.conftest import Running, charge_point, charger_events, register


def _availability(
    status: str, timestamp: str, *, event_id: int, connector_id: int | None = 1
) -> call.NotifyEvent:
    evse: dict[str, Any] = {"id": 1}
    if connector_id is not None:
        evse["connector_id"] = connector_id
    entry: dict[str, Any] = {
        "event_id": event_id,
        "timestamp": timestamp,
        "trigger": "Delta",
        "actual_value": status,
        "event_notification_type": "HardWiredNotification",
        "component": {"name": "Connector" if connector_id is not None else "EVSE", "evse": evse},
        "variable": {"name": "AvailabilityState"},
    }
    return call.NotifyEvent(generated_at=timestamp, seq_no=0, event_data=[entry])


def _status(status: str, timestamp: str) -> call.StatusNotification:
    return call.StatusNotification(
        timestamp=timestamp, connector_status=status, evse_id=1, connector_id=1
    )


async def _live(running: Running, cid: str) -> list[tuple[str, str]]:
    r = await running.api.get(f"/api/v1/chargers/{cid}")
    assert r.status_code == 200, r.text
    return [(c["connector"], c["status"]) for c in r.json()["connectors"]]


async def _history(running: Running, cid: str) -> list[tuple[str, str]]:
    r = await running.api.get(
        f"/api/v1/chargers/{cid}/status-history", params={"kind": "connector"}
    )
    assert r.status_code == 200, r.text
    return [(h["connector"], h["status"]) for h in r.json()]


async def _types(running: Running, cid: str) -> list[str]:
    wanted = {"ConnectorStatusChanged", "FaultRaised", "FaultCleared"}
    return [e["type"] for e in await charger_events(running, cid) if e["type"] in wanted]


async def test_connector_availability_state_is_a_status_report(running: Running) -> None:
    cid = "CP-AVAIL"
    await register(running.api, cid)
    async with charge_point(running, cid, "2.0.1") as cp:
        await cp.call(_availability("Available", "2026-03-02T10:00:00Z", event_id=1))
        await cp.call(_availability("Faulted", "2026-03-02T10:05:00Z", event_id=2))
        assert await _live(running, cid) == [("1/1", "faulted")]
        await cp.call(_availability("Available", "2026-03-02T10:09:00Z", event_id=3))

    assert await _live(running, cid) == [("1/1", "available")]
    assert await _history(running, cid) == [
        ("1/1", "available"),
        ("1/1", "faulted"),
        ("1/1", "available"),
    ]
    assert await _types(running, cid) == [
        "ConnectorStatusChanged",
        "ConnectorStatusChanged",
        "FaultRaised",
        "ConnectorStatusChanged",
        "FaultCleared",
    ]
    [raised] = await charger_events(running, cid, "FaultRaised")
    assert raised["payload"]["error_code"] == "Faulted"
    assert raised["payload"]["connector"] == {"evse_id": 1, "connector_id": 1}


async def test_a_change_reported_both_ways_counts_once(running: Running) -> None:
    cid = "CP-AVAIL-BOTH"
    await register(running.api, cid)
    async with charge_point(running, cid, "2.0.1") as cp:
        await cp.call(_status("Available", "2026-03-02T10:00:00Z"))
        await cp.call(_status("Faulted", "2026-03-02T10:05:00Z"))
        await cp.call(_availability("Faulted", "2026-03-02T10:05:00.200Z", event_id=7))
        await cp.call(_availability("Available", "2026-03-02T10:09:00Z", event_id=8))
        await cp.call(_status("Available", "2026-03-02T10:09:00.100Z"))
        # A periodic report of the state the connector is in is no change either.
        await cp.call(_availability("Available", "2026-03-02T10:30:00Z", event_id=9))

    assert await _history(running, cid) == [
        ("1/1", "available"),
        ("1/1", "faulted"),
        ("1/1", "available"),
    ]
    assert await _types(running, cid) == [
        "ConnectorStatusChanged",
        "ConnectorStatusChanged",
        "FaultRaised",
        "ConnectorStatusChanged",
        "FaultCleared",
    ]


async def test_an_evse_availability_state_is_its_connectors(running: Running) -> None:
    cid = "CP-AVAIL-EVSE"
    await register(running.api, cid)
    async with charge_point(running, cid, "2.0.1") as cp:
        await cp.call(_status("Available", "2026-03-02T10:00:00Z"))
        await cp.call(
            _availability("Unavailable", "2026-03-02T10:01:00Z", event_id=1, connector_id=None)
        )

    assert await _live(running, cid) == [("1/1", "unavailable")]
    assert await _history(running, cid) == [("1/1", "available"), ("1/1", "unavailable")]
