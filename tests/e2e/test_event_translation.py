"""How charger messages become normalized events, message by message: what is one event
and what is two (retries with new message ids against distinct reports), and what the
ticketing side then makes of them. Real OCPP clients over a real socket."""

from __future__ import annotations

from typing import Any

from ocpp.v201 import call

from tests.conftest import Running, charge_point, charger_events, register


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
