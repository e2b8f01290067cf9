"""How charger messages become normalized events, message by message: what is one event
and what is two (retries with new message ids against distinct reports), and what the
ticketing side then makes of them. Real OCPP clients over a real socket."""

from __future__ import annotations

from typing import Any

from ocpp.v201 import call

from tests.conftest import Running, charge_point, charger_events, eventually, register

CHARGEX = "https://chargex.inl.gov"


def _problem(
    event_id: int, timestamp: str, *, evse: dict[str, Any] | None = None, **fields: Any
) -> dict[str, Any]:
    """A NotifyEvent entry on variable Problem of connector 1/1 (snake_case keys)."""
    entry: dict[str, Any] = {
        "event_id": event_id,
        "timestamp": timestamp,
        "trigger": "Alerting",
        "actual_value": "true",
        "event_notification_type": "HardWiredNotification",
        "component": {"name": "Connector", "evse": evse or {"id": 1, "connector_id": 1}},
        "variable": {"name": "Problem"},
    }
    entry.update(fields)
    return entry


def _notify(*entries: dict[str, Any], seq_no: int = 0, tbc: bool = False) -> call.NotifyEvent:
    return call.NotifyEvent(
        generated_at=entries[0]["timestamp"], seq_no=seq_no, tbc=tbc, event_data=list(entries)
    )


async def _orders(running: Running, charger_id: str) -> list[dict[str, Any]]:
    r = await running.api.get("/api/v1/work-orders", params={"charger_id": charger_id})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def test_security_events_in_one_second_differ_by_tech_info(running: Running) -> None:
    """Two security events of one type in one charger-clock second are two events; the
    retry of one (new message id, same content) is not a third."""
    cid = "CS-SEC-SAMESEC"
    await register(running.api, cid)
    ts = "2026-11-28T01:10:00Z"
    async with charge_point(running, cid, "2.0.1") as cp:
        for info in ("frame 1 invalid", "frame 2 invalid", "frame 2 invalid"):
            await cp.call(
                call.SecurityEventNotification(type="InvalidMessages", timestamp=ts, tech_info=info)
            )
    reported = await charger_events(running, cid, "SecurityEventReported")
    assert [e["payload"]["tech_info"] for e in reported] == ["frame 1 invalid", "frame 2 invalid"]


async def test_meter_values_with_one_timestamp_and_other_values_are_kept(running: Running) -> None:
    """Chargers that send a MeterValues per measurand give them one timestamp: each is an
    event and a stored sample; the retry of one (same content) is neither."""
    cid = "CS-METER-SAMETS"
    await register(running.api, cid)
    ts = "2026-11-28T01:20:00Z"
    energy = {"timestamp": ts, "sampled_value": [{"value": 10.0}]}
    power = {
        "timestamp": ts,
        "sampled_value": [{"value": 7000.0, "measurand": "Power.Active.Import"}],
    }
    async with charge_point(running, cid, "2.0.1") as cp:
        await cp.call(call.MeterValues(evse_id=1, meter_value=[energy]))
        await cp.call(call.MeterValues(evse_id=1, meter_value=[power]))
        await cp.call(call.MeterValues(evse_id=1, meter_value=[power]))  # a retry
    received = await charger_events(running, cid, "MeterValuesReceived")
    assert [e["payload"]["samples"] for e in received] == [[energy], [power]]


async def test_a_chargex_problem_with_an_empty_actual_value_is_raised(running: Running) -> None:
    """ChargeX's example report (actualValue "", cleared false, techCode CXnnn) is a fault:
    it was taken for a clearing, so a ChargeX station's faults never opened an order."""
    cid = "CS-CHARGEX-EMPTY"
    await register(running.api, cid)
    entry = _problem(
        1,
        "2026-11-28T01:00:00Z",
        actual_value="",
        cleared=False,
        tech_code="CX017",
        tech_info="contactor welded",
        component={"name": "Connector", "instance": "Main", "evse": {"id": 1, "connector_id": 1}},
        variable={"name": "Problem", "instance": "Main"},
    )
    async with charge_point(running, cid, "2.0.1") as cp:
        await cp.call(_notify(entry))
    [fault] = [
        e
        for e in await charger_events(running, cid)
        if e["type"] in ("FaultRaised", "FaultCleared")
    ]
    assert fault["type"] == "FaultRaised"
    assert (fault["payload"]["tech_code"], fault["payload"]["vendor_id"]) == ("CX017", CHARGEX)

    async def opened() -> list[dict[str, Any]]:
        return await _orders(running, cid)

    [order] = await eventually(opened)
    assert (order["connector"], order["error_code"], order["state"]) == ("1/1", "CX017", "new")
