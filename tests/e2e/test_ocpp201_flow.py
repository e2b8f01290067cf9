"""An OCPP 2.0.1 station (the ``ocpp`` library's v201 client) boots, heartbeats, faults
and recovers, reports and clears a ChargeX problem, charges, authorizes, sends vendor
data and a security event; the test reads live state, events, status history and
ticketing's fault intake through the HTTP API."""

from __future__ import annotations

from typing import Any

from ocpp.v201 import call
from sqlalchemy import select

from csms.state import TRANSACTIONS
from tests.conftest import Running, charge_point, charger_events, eventually, register

CID = "CP-201-A"
CHARGEX = "https://chargex.inl.gov"
EVSE_1_1 = {"evse_id": 1, "connector_id": 1}


def _status(status: str, timestamp: str) -> call.StatusNotification:
    return call.StatusNotification(
        timestamp=timestamp, connector_status=status, evse_id=1, connector_id=1
    )


def _problem(*, event_id: int, timestamp: str, raised: bool) -> call.NotifyEvent:
    """A ChargeX problem report (CX017, contactor fault) on connector 1 of EVSE 1."""
    entry: dict[str, Any] = {
        "event_id": event_id,
        "timestamp": timestamp,
        "trigger": "Alerting",
        "actual_value": "true" if raised else "false",
        "tech_code": "CX017",
        "tech_info": "contactor welded",
        "event_notification_type": "HardWiredNotification",
        "component": {"name": "Connector", "evse": {"id": 1, "connector_id": 1}},
        "variable": {"name": "Problem"},
    }
    if not raised:
        entry["cleared"] = True
    return call.NotifyEvent(generated_at=timestamp, seq_no=0, event_data=[entry])


def _transaction(
    event_type: str, seq_no: int, trigger: str, wh: float, timestamp: str, **extra: Any
) -> call.TransactionEvent:
    info: dict[str, Any] = {"transaction_id": "TX-201-1"}
    if event_type == "Ended":
        info["stopped_reason"] = "Local"
    return call.TransactionEvent(
        event_type=event_type,
        timestamp=timestamp,
        trigger_reason=trigger,
        seq_no=seq_no,
        transaction_info=info,
        evse={"id": 1, "connector_id": 1},
        meter_value=[
            {
                "timestamp": timestamp,
                "sampled_value": [{"value": wh, "measurand": "Energy.Active.Import.Register"}],
            }
        ],
        **extra,
    )


async def test_station_lifecycle(running: Running) -> None:
    await register(running.api, CID, site="depot-2")
    r = await running.api.post("/api/v1/id-tokens", json={"token": "TAG-201"})
    assert r.status_code == 201, r.text

    async with charge_point(running, CID, "2.0.1") as cp:
        boot = await cp.call(
            call.BootNotification(
                charging_station={
                    "model": "M2",
                    "vendor_name": "VendorY",
                    "serial_number": "SN-201",
                    "firmware_version": "2.0.0",
                },
                reason="PowerUp",
            )
        )
        assert boot.status == "Accepted"
        assert boot.interval == 60
        assert boot.current_time.endswith("Z")

        hb = await cp.call(call.Heartbeat())
        assert hb.current_time.endswith("Z")

        # Connector 1 of EVSE 1: Available -> Faulted -> Available.
        await cp.call(_status("Available", "2026-11-27T09:00:00Z"))
        await cp.call(_status("Faulted", "2026-11-27T09:10:00Z"))
        live = (await running.api.get(f"/api/v1/chargers/{CID}")).json()
        assert live["online"] is True
        assert live["ocpp_version"] == "2.0.1"
        assert live["boot"]["vendor"] == "VendorY"
        assert live["boot"]["model"] == "M2"
        assert live["boot"]["serial_number"] == "SN-201"
        assert live["boot"]["firmware_version"] == "2.0.0"
        [conn] = live["connectors"]
        assert conn["connector"] == "1/1"
        assert (conn["evse_id"], conn["connector_id"]) == (1, 1)
        assert conn["status"] == "faulted"
        assert conn["raw_status"] == "Faulted"
        await cp.call(_status("Available", "2026-11-27T09:20:00Z"))

        # A ChargeX problem report, its retry (same content, new message id), its clearing.
        await cp.call(_problem(event_id=101, timestamp="2026-11-27T10:00:00Z", raised=True))
        await cp.call(_problem(event_id=101, timestamp="2026-11-27T10:00:00Z", raised=True))
        await cp.call(_problem(event_id=102, timestamp="2026-11-27T10:15:00Z", raised=False))

        # A transaction; the Started is retried with the same transactionId.
        started = await cp.call(
            _transaction(
                "Started",
                0,
                "Authorized",
                1000,
                "2026-11-27T11:00:00Z",
                id_token={"id_token": "TAG-201", "type": "ISO14443"},
            )
        )
        assert started.id_token_info["status"] == "Accepted"
        await cp.call(
            _transaction(
                "Started",
                0,
                "Authorized",
                1000,
                "2026-11-27T11:00:00Z",
                id_token={"id_token": "TAG-201", "type": "ISO14443"},
            )
        )
        updated = await cp.call(
            _transaction("Updated", 1, "MeterValuePeriodic", 2500, "2026-11-27T11:15:00Z")
        )
        assert updated.id_token_info is None
        await cp.call(_transaction("Ended", 2, "StopAuthorized", 5000, "2026-11-27T11:30:00Z"))

        known = await cp.call(call.Authorize(id_token={"id_token": "TAG-201", "type": "ISO14443"}))
        assert known.id_token_info["status"] == "Accepted"
        unknown = await cp.call(call.Authorize(id_token={"id_token": "NOPE", "type": "ISO14443"}))
        assert unknown.id_token_info["status"] == "Unknown"

        vendor = await cp.call(call.DataTransfer(vendor_id="com.example", message_id="Ping"))
        assert vendor.status == "UnknownVendorId"

        await cp.call(
            call.SecurityEventNotification(
                type="TamperDetectionActivated",
                timestamp="2026-11-27T12:00:00Z",
                tech_info="cabinet opened",
            )
        )

        live = (await running.api.get(f"/api/v1/chargers/{CID}")).json()
        assert live["online"] is True
        assert [(c["connector"], c["status"]) for c in live["connectors"]] == [("1/1", "available")]

    # ------------------------------------------------------------ events
    events = await charger_events(running, CID)
    types = [e["type"] for e in events]
    assert types[:3] == ["ChargerConnected", "ChargerOnline", "ChargerBooted"]
    assert {e["payload"]["ocpp_version"] for e in events[:3]} == {"2.0.1"}
    booted = events[2]["payload"]
    assert (booted["vendor"], booted["reason"], booted["ocpp_version"]) == (
        "VendorY",
        "PowerUp",
        "2.0.1",
    )

    statuses = [e["payload"] for e in events if e["type"] == "ConnectorStatusChanged"]
    assert [s["status"] for s in statuses] == ["available", "faulted", "available"]
    assert all(s["connector"] == EVSE_1_1 for s in statuses)

    faults = [e for e in events if e["type"] in ("FaultRaised", "FaultCleared")]
    assert [(f["type"], f["payload"]["source"]) for f in faults] == [
        ("FaultRaised", "status_notification"),
        ("FaultCleared", "status_notification"),
        ("FaultRaised", "notify_event"),  # once, although it was sent twice
        ("FaultCleared", "notify_event"),
    ]
    for f in faults:
        assert f["payload"]["connector"] == EVSE_1_1
    status_raised = faults[0]["payload"]
    assert status_raised["error_code"] == "Faulted"
    assert status_raised["charger_time"].startswith("2026-11-27T09:10:00")

    problem = faults[2]["payload"]
    assert problem["tech_code"] == "CX017"
    assert problem["error_code"] == "CX017"
    assert problem["vendor_id"] == CHARGEX
    assert problem["severity"] == "critical"
    assert problem["component"] == "Connector"
    assert problem["variable"] == "Problem"
    assert problem["event_code"] == 101
    assert problem["info"] == "contactor welded"
    assert problem["charger_time"].startswith("2026-11-27T10:00:00")
    assert problem["received_at"]
    cleared = faults[3]["payload"]
    assert cleared["tech_code"] == "CX017"
    assert cleared["vendor_id"] == CHARGEX
    assert cleared["event_code"] == 102
    assert cleared["charger_time"].startswith("2026-11-27T10:15:00")

    [tx_started] = [e["payload"] for e in events if e["type"] == "TransactionStarted"]
    assert tx_started["transaction_id"] == "TX-201-1"
    assert tx_started["connector"] == EVSE_1_1
    assert tx_started["id_token"] == "TAG-201"
    assert tx_started["meter_start_wh"] == 1000
    [tx_ended] = [e["payload"] for e in events if e["type"] == "TransactionEnded"]
    assert tx_ended["transaction_id"] == "TX-201-1"
    assert tx_ended["meter_stop_wh"] == 5000
    assert tx_ended["reason"] == "Local"

    [security] = [e["payload"] for e in events if e["type"] == "SecurityEventReported"]
    assert security["event_type"] == "TamperDetectionActivated"
    assert security["tech_info"] == "cabinet opened"
    assert security["charger_time"].startswith("2026-11-27T12:00:00")

    # ------------------------------------------------------------ ticketing got the faults
    async def ticketing_has_all() -> list[dict[str, Any]] | None:
        r = await running.api.get("/api/v1/faults", params={"charger_id": CID})
        assert r.status_code == 200, r.text
        rows: list[dict[str, Any]] = r.json()
        return rows if len(rows) == 4 else None

    reports = await eventually(ticketing_has_all)
    assert sorted((f["kind"], f["source"]) for f in reports) == [
        ("cleared", "notify_event"),
        ("cleared", "status_notification"),
        ("raised", "notify_event"),
        ("raised", "status_notification"),
    ]
    assert {f["connector"] for f in reports} == {"1/1"}
    [chargex] = [f for f in reports if f["kind"] == "raised" and f["source"] == "notify_event"]
    assert chargex["tech_code"] == "CX017"
    assert chargex["vendor_id"] == CHARGEX
    assert chargex["severity"] == "critical"
    assert {f["event_id"] for f in reports} == {f["event_id"] for f in faults}

    # ------------------------------------------------------------ status history
    history = (
        await running.api.get(
            f"/api/v1/chargers/{CID}/status-history",
            params={"kind": "connector", "connector": "1/1"},
        )
    ).json()
    assert [h["status"] for h in history] == ["available", "faulted", "available"]
    assert [h["raw_status"] for h in history] == ["Available", "Faulted", "Available"]
    for earlier, later in zip(history, history[1:], strict=False):
        assert earlier["ended_at"] == later["started_at"]
    assert history[-1]["ended_at"] is None

    # ------------------------------------------------------------ raw message log
    messages = (
        await running.api.get(f"/api/v1/chargers/{CID}/messages", params={"limit": 1000})
    ).json()["items"]
    actions_in = [m["action"] for m in messages if m["direction"] == "in"]
    assert actions_in.count("NotifyEvent") == 3
    assert actions_in.count("TransactionEvent") == 4
    assert {"BootNotification", "SecurityEventNotification", "DataTransfer"} <= set(actions_in)


async def test_meter_values_outside_a_transaction_and_their_retry(running: Running) -> None:
    """A standalone MeterValues (EVSE 1) is an event; the charger's retry of it (a new message
    id, the same content) is answered again but is not a second event."""
    cid = "CP-201-METER"
    await register(running.api, cid)
    sample = {
        "timestamp": "2026-11-27T11:00:00Z",
        "sampled_value": [{"value": 12.5, "measurand": "Energy.Active.Import.Register"}],
    }
    later = {**sample, "timestamp": "2026-11-27T11:15:00Z"}
    async with charge_point(running, cid, "2.0.1") as cp:
        await cp.call(call.MeterValues(evse_id=1, meter_value=[sample]))
        await cp.call(call.MeterValues(evse_id=1, meter_value=[sample]))
        await cp.call(call.MeterValues(evse_id=1, meter_value=[later]))

    received = await charger_events(running, cid, "MeterValuesReceived")
    assert [e["payload"]["charger_time"][:19] for e in received] == [
        "2026-11-27T11:00:00",
        "2026-11-27T11:15:00",
    ]
    assert received[0]["payload"]["connector"]["evse_id"] == 1
    assert received[0]["payload"]["transaction_id"] is None
    messages = (
        await running.api.get(f"/api/v1/chargers/{cid}/messages", params={"limit": 100})
    ).json()["items"]
    assert [m["action"] for m in messages if m["direction"] == "in"].count("MeterValues") == 3


async def test_same_second_faulted_reports_are_faults_and_a_retry_is_not(
    running: Running,
) -> None:
    """Faulted, Available, Faulted with one timestamp are two faults; a retried report
    (new message id, same content), also after a reconnect, is none."""
    cid = "CS-201-SAMESEC"
    await register(running.api, cid)
    ts = "2026-11-27T12:00:00Z"
    async with charge_point(running, cid, "2.0.1") as cp:
        await cp.call(_status("Faulted", ts))
        await cp.call(_status("Faulted", ts))  # a retry
    async with charge_point(running, cid, "2.0.1") as cp:
        await cp.call(_status("Faulted", ts))  # a retry after reconnecting
        await cp.call(_status("Available", ts))
        await cp.call(_status("Faulted", ts))
        await cp.call(_status("Faulted", ts))  # a retry

    types = [
        e["type"]
        for e in await charger_events(running, cid)
        if e["type"] in ("FaultRaised", "FaultCleared")
    ]
    assert types == ["FaultRaised", "FaultCleared", "FaultRaised"]


async def test_a_token_authorized_after_the_start_is_the_transactions(running: Running) -> None:
    """Cable plugged in first: the Started event has no idToken; the driver's token comes
    in a later Updated (triggerReason Authorized) and is the transaction's token; a later
    stop by another token (StopAuthorized) does not replace it."""
    await register(running.api, "CS-LATE-TOKEN")
    r = await running.api.post("/api/v1/id-tokens", json={"token": "TAG-LATE"})
    assert r.status_code == 201, r.text
    async with charge_point(running, "CS-LATE-TOKEN", "2.0.1") as cp:
        boot = await cp.call(
            call.BootNotification(
                charging_station={"model": "M2", "vendor_name": "VendorY"}, reason="PowerUp"
            )
        )
        assert boot.status == "Accepted"
        await cp.call(_transaction("Started", 0, "CablePluggedIn", 100.0, "2026-11-28T11:00:00Z"))
        updated = await cp.call(
            _transaction(
                "Updated",
                1,
                "Authorized",
                100.0,
                "2026-11-28T11:00:30Z",
                id_token={"id_token": "TAG-LATE", "type": "ISO14443"},
            )
        )
        assert updated.id_token_info["status"] == "Accepted"
        await cp.call(
            _transaction(
                "Ended",
                2,
                "StopAuthorized",
                900.0,
                "2026-11-28T12:00:00Z",
                id_token={"id_token": "TAG-OTHER", "type": "ISO14443"},
            )
        )

    async with running.system.db.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(TRANSACTIONS.c.id_token, TRANSACTIONS.c.stopped_at).where(
                    TRANSACTIONS.c.charger_id == "CS-LATE-TOKEN"
                )
            )
        ).all()
    assert [(row.id_token, row.stopped_at is not None) for row in rows] == [("TAG-LATE", True)]
