"""An OCPP 1.6 charge point boots, heartbeats, faults and recovers, charges; the test
reads live state, events and status history through the HTTP API."""

from __future__ import annotations

from typing import Any

from ocpp.v16 import call
from sqlalchemy import select

from csms.state import METER_VALUES
from tests.conftest import Running, charge_point, charger_events, eventually, register


async def test_boot_heartbeat_fault_recover_and_transaction(running: Running) -> None:
    await register(running.api, "CP-16-A", site="depot-1")
    await running.api.post("/api/v1/id-tokens", json={"token": "TAG-1"})

    async with charge_point(running, "CP-16-A") as cp:
        boot = await cp.call(
            call.BootNotification(
                charge_point_model="M1",
                charge_point_vendor="VendorX",
                charge_point_serial_number="SN-1",
                firmware_version="1.2.3",
            )
        )
        assert boot.status == "Accepted"
        assert boot.interval == 60
        assert boot.current_time.endswith("Z")

        hb = await cp.call(call.Heartbeat())
        assert hb.current_time

        await cp.call(
            call.StatusNotification(connector_id=1, error_code="NoError", status="Available")
        )
        await cp.call(
            call.StatusNotification(
                connector_id=1,
                error_code="GroundFailure",
                status="Faulted",
                vendor_id="https://chargex.inl.gov",
                vendor_error_code="CX002",
                info="ground fault",
                timestamp="2026-11-27T10:00:00Z",
            )
        )
        live = (await running.api.get("/api/v1/chargers/CP-16-A")).json()
        assert live["online"] is True
        assert live["ocpp_version"] == "1.6"
        assert live["boot"]["vendor"] == "VendorX"
        assert live["boot"]["serial_number"] == "SN-1"
        [conn] = live["connectors"]
        assert conn["connector"] == "1"
        assert conn["status"] == "faulted"
        assert conn["error_code"] == "GroundFailure"
        assert conn["vendor_error_code"] == "CX002"

        await cp.call(
            call.StatusNotification(connector_id=1, error_code="NoError", status="Available")
        )

        start = await cp.call(
            call.StartTransaction(
                connector_id=1, id_tag="TAG-1", meter_start=1000, timestamp="2026-11-27T10:05:00Z"
            )
        )
        assert start.id_tag_info["status"] == "Accepted"
        # A retry of the same start (new message id, same content) is the same transaction.
        again = await cp.call(
            call.StartTransaction(
                connector_id=1, id_tag="TAG-1", meter_start=1000, timestamp="2026-11-27T10:05:00Z"
            )
        )
        assert again.transaction_id == start.transaction_id
        await cp.call(
            call.MeterValues(
                connector_id=1,
                transaction_id=start.transaction_id,
                meter_value=[
                    {"timestamp": "2026-11-27T10:06:00Z", "sampledValue": [{"value": "1500"}]}
                ],
            )
        )
        stop = await cp.call(
            call.StopTransaction(
                meter_stop=5000,
                timestamp="2026-11-27T10:30:00Z",
                transaction_id=start.transaction_id,
                id_tag="TAG-1",
            )
        )
        assert stop.id_tag_info["status"] == "Accepted"

        unknown = await cp.call(call.Authorize(id_tag="NOPE"))
        assert unknown.id_tag_info["status"] == "Invalid"

    types = [e["type"] for e in await charger_events(running, "CP-16-A")]
    assert types[:3] == ["ChargerConnected", "ChargerOnline", "ChargerBooted"]
    assert types.count("FaultRaised") == 1
    assert types.count("FaultCleared") == 1
    assert types.count("TransactionStarted") == 1
    assert types.count("TransactionEnded") == 1
    assert types.count("MeterValuesReceived") == 1
    [raised] = await charger_events(running, "CP-16-A", "FaultRaised")
    payload = raised["payload"]
    assert payload["error_code"] == "GroundFailure"
    assert payload["vendor_error_code"] == "CX002"
    assert payload["severity"] == "critical"
    assert payload["charger_time"].startswith("2026-11-27T10:00:00")
    assert payload["received_at"]

    # The fault reached ticketing through the bus.
    async def ticketing_has_both() -> list[dict[str, Any]] | None:
        r = await running.api.get("/api/v1/faults", params={"charger_id": "CP-16-A"})
        rows: list[dict[str, Any]] = r.json()
        return rows if len(rows) == 2 else None

    faults = await eventually(ticketing_has_both)
    assert {f["kind"] for f in faults} == {"raised", "cleared"}

    history = (
        await running.api.get(
            "/api/v1/chargers/CP-16-A/status-history",
            params={"kind": "connector", "connector": "1"},
        )
    ).json()
    assert [h["status"] for h in history] == ["available", "faulted", "available"]
    for earlier, later in zip(history, history[1:], strict=False):
        assert earlier["ended_at"] == later["started_at"]
    assert history[-1]["ended_at"] is None

    # Offline after the grace once the socket is gone.
    async def offline() -> bool:
        body = (await running.api.get("/api/v1/chargers/CP-16-A")).json()
        return body["online"] is False

    await eventually(offline)
    connectivity = (
        await running.api.get(
            "/api/v1/chargers/CP-16-A/status-history", params={"kind": "connectivity"}
        )
    ).json()
    assert [h["status"] for h in connectivity] == ["online", "offline"]

    messages = (
        await running.api.get("/api/v1/chargers/CP-16-A/messages", params={"limit": 1000})
    ).json()["items"]
    actions_in = {m["action"] for m in messages if m["direction"] == "in"}
    assert {"BootNotification", "Heartbeat", "StatusNotification", "StartTransaction"} <= actions_in
    assert any(m["direction"] == "out" and m["message_type"] == 3 for m in messages)


async def test_security_extension_notifications_are_answered_and_become_events(
    running: Running,
) -> None:
    """OCPP 1.6 Security whitepaper: SignedFirmwareStatusNotification, LogStatusNotification and
    SecurityEventNotification from a charger are answered and each is an event."""
    cid = "CP-16-SEC"
    await register(running.api, cid)
    async with charge_point(running, cid) as cp:
        await cp.call(call.SignedFirmwareStatusNotification(status="Downloading", request_id=7))
        await cp.call(
            call.SignedFirmwareStatusNotification(status="InvalidSignature", request_id=7)
        )
        await cp.call(call.LogStatusNotification(status="Uploading", request_id=8))
        await cp.call(call.LogStatusNotification(status="Uploaded", request_id=8))
        await cp.call(
            call.SecurityEventNotification(
                type="FirmwareUpdated", timestamp="2026-11-27T10:00:00Z", tech_info="2.0.0"
            )
        )

    progress = [
        (e["payload"]["kind"], e["payload"]["status"], e["payload"]["request_id"])
        for e in await charger_events(running, cid, "FirmwareStatusChanged")
    ]
    assert progress == [
        ("signed_firmware", "Downloading", 7),
        ("signed_firmware", "InvalidSignature", 7),
        ("log", "Uploading", 8),
        ("log", "Uploaded", 8),
    ]
    [security] = await charger_events(running, cid, "SecurityEventReported")
    assert security["payload"]["event_type"] == "FirmwareUpdated"
    assert security["payload"]["tech_info"] == "2.0.0"
    assert security["payload"]["charger_time"].startswith("2026-11-27T10:00:00")
    state = (await running.api.get(f"/api/v1/chargers/{cid}")).json()
    assert state["boot"]["firmware_status"] == "InvalidSignature"


async def test_meter_values_retry_and_unknown_vendor_data_transfer(running: Running) -> None:
    """A retried MeterValues (new message id, same content) is not a second event; a
    DataTransfer for a vendor nobody registered is answered UnknownVendorId."""
    cid = "CP-16-METER"
    await register(running.api, cid)
    sample = {"timestamp": "2026-11-27T11:00:00Z", "sampledValue": [{"value": "1500"}]}
    async with charge_point(running, cid) as cp:
        for _ in range(2):
            await cp.call(call.MeterValues(connector_id=2, meter_value=[sample]))
        vendor = await cp.call(call.DataTransfer(vendor_id="com.example.nobody", data="x"))
        assert vendor.status == "UnknownVendorId"

    [received] = await charger_events(running, cid, "MeterValuesReceived")
    assert received["payload"]["connector"]["connector_id"] == 2
    assert received["payload"]["charger_time"].startswith("2026-11-27T11:00:00")


async def test_same_second_fault_transitions_are_faults_and_a_retry_is_not(
    running: Running,
) -> None:
    """Second-resolution clocks: Faulted, Available, Faulted with one timestamp are two
    faults; a retried report (new message id, same content), also after a reconnect,
    is none."""
    cid = "CP-16-SAMESEC"
    await register(running.api, cid)
    ts = "2026-11-27T12:00:00Z"

    def status(state: str, error_code: str) -> call.StatusNotification:
        return call.StatusNotification(
            connector_id=1, error_code=error_code, status=state, timestamp=ts
        )

    async with charge_point(running, cid) as cp:
        await cp.call(status("Faulted", "PowerSwitchFailure"))
        await cp.call(status("Faulted", "PowerSwitchFailure"))  # a retry
    async with charge_point(running, cid) as cp:
        await cp.call(status("Faulted", "PowerSwitchFailure"))  # a retry after reconnecting
        await cp.call(status("Available", "NoError"))
        await cp.call(status("Faulted", "PowerSwitchFailure"))
        await cp.call(status("Faulted", "PowerSwitchFailure"))  # a retry

    types = [
        e["type"]
        for e in await charger_events(running, cid)
        if e["type"] in ("FaultRaised", "FaultCleared")
    ]
    assert types == ["FaultRaised", "FaultCleared", "FaultRaised"]


async def test_a_group_too_long_for_parent_id_tag_is_left_out(running: Running) -> None:
    """The API allows groups of 36 characters, 1.6 parentIdTag only 20: the answer leaves
    the group out instead of failing (StartTransaction's transaction already exists)."""
    cid = "CP-16-GROUP"
    await register(running.api, cid)
    for token, group in (("TAG-LONG", "G" * 36), ("TAG-SHORT", "G" * 20)):
        r = await running.api.post("/api/v1/id-tokens", json={"token": token, "group_id": group})
        assert r.status_code == 201, r.text
    async with charge_point(running, cid) as cp:
        auth = await cp.call(call.Authorize(id_tag="TAG-LONG"))
        assert auth.id_tag_info == {"status": "Accepted"}
        start = await cp.call(
            call.StartTransaction(
                connector_id=1, id_tag="TAG-LONG", meter_start=0, timestamp="2026-11-27T10:00:00Z"
            )
        )
        assert start.id_tag_info == {"status": "Accepted"}
        assert start.transaction_id > 0
        short = await cp.call(call.Authorize(id_tag="TAG-SHORT"))
        assert short.id_tag_info == {"status": "Accepted", "parent_id_tag": "G" * 20}


async def test_stop_transaction_answers_the_whole_id_tag_info(running: Running) -> None:
    """A charger may cache the idTagInfo of StopTransaction.conf as it does Authorize's
    and StartTransaction's (1.6 3.5.1): the answer carries the tag's expiry and parent,
    as theirs do (it carried only the status: a cache entry made from it lost both)."""
    cid = "CP-16-STOPTAG"
    await register(running.api, cid)
    body = {"token": "TAG-STOP", "group_id": "FLEET-1", "expires_at": "2031-01-01T00:00:00Z"}
    r = await running.api.post("/api/v1/id-tokens", json=body)
    assert r.status_code == 201, r.text
    expected = {
        "status": "Accepted",
        "expiry_date": "2031-01-01T00:00:00.000Z",
        "parent_id_tag": "FLEET-1",
    }
    async with charge_point(running, cid) as cp:
        start = await cp.call(
            call.StartTransaction(
                connector_id=1, id_tag="TAG-STOP", meter_start=0, timestamp="2026-11-27T10:00:00Z"
            )
        )
        assert start.id_tag_info == expected
        stop = await cp.call(
            call.StopTransaction(
                meter_stop=900,
                timestamp="2026-11-27T11:00:00Z",
                transaction_id=start.transaction_id,
                id_tag="tag-stop",
            )
        )
        assert stop.id_tag_info == expected


async def test_stop_transaction_data_is_stored_on_the_transactions_connector(
    running: Running,
) -> None:
    """StopTransaction's transactionData belongs to the transaction's connector, so a
    sample already sent in MeterValues is stored once."""
    cid = "CP-16-TXDATA"
    await register(running.api, cid)
    await running.api.post("/api/v1/id-tokens", json={"token": "TAG-TXDATA"})
    during = {"timestamp": "2026-11-27T10:10:00Z", "sampledValue": [{"value": "1500"}]}
    last = {"timestamp": "2026-11-27T10:20:00Z", "sampledValue": [{"value": "2500"}]}
    async with charge_point(running, cid) as cp:
        start = await cp.call(
            call.StartTransaction(
                connector_id=2, id_tag="TAG-TXDATA", meter_start=0, timestamp="2026-11-27T10:00:00Z"
            )
        )
        tx = start.transaction_id
        await cp.call(call.MeterValues(connector_id=2, transaction_id=tx, meter_value=[during]))
        await cp.call(
            call.StopTransaction(
                meter_stop=2500,
                timestamp="2026-11-27T10:20:00Z",
                transaction_id=tx,
                transaction_data=[during, last],
            )
        )

    async with running.system.db.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(METER_VALUES.c.connector_key, METER_VALUES.c.sampled_at).where(
                    METER_VALUES.c.charger_id == cid
                )
            )
        ).all()
    assert sorted((key, at.minute) for key, at in rows) == [("2", 10), ("2", 20)]


async def test_a_retried_start_with_another_spelling_of_its_time_is_the_same_transaction(
    running: Running,
) -> None:
    cid = "CP-16-TXTIME"
    await register(running.api, cid)
    await running.api.post("/api/v1/id-tokens", json={"token": "TAG-TXTIME"})
    async with charge_point(running, cid) as cp:
        ids = {
            (
                await cp.call(
                    call.StartTransaction(
                        connector_id=1, id_tag="TAG-TXTIME", meter_start=0, timestamp=timestamp
                    )
                )
            ).transaction_id
            for timestamp in (
                "2026-11-27T10:00:00Z",
                "2026-11-27T10:00:00.000Z",
                "2026-11-27T11:00:00+01:00",
            )
        }
    assert len(ids) == 1
    assert len(await charger_events(running, cid, "TransactionStarted")) == 1
