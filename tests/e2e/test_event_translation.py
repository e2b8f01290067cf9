"""How charger messages become normalized events, message by message: what is one event
and what is two (retries with new message ids against distinct reports), and what the
ticketing side then makes of them. Real OCPP clients over a real socket."""

from __future__ import annotations

from typing import Any

from ocpp.v16 import call as call16
from ocpp.v201 import call
from sqlalchemy import select

from csms.state import METER_VALUES, TRANSACTIONS
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


async def _faults(running: Running, cid: str) -> list[dict[str, Any]]:
    return [
        e
        for e in await charger_events(running, cid)
        if e["type"] in ("FaultRaised", "FaultCleared")
    ]


async def test_a_clearing_without_tech_code_clears_the_raise_of_its_component(
    running: Running,
) -> None:
    """A station clears a problem on the same component/variable/EVSE without repeating the
    techCode (a new eventId, the raise as its cause): the FaultCleared carries the raise's
    codes and ticketing resolves the order the raise opened. It used to be an unrelated
    'Connector.Problem' that resolved nothing. Across a reconnect; a retry is one event."""
    cid = "CS-CLEAR-NOCODE"
    await register(running.api, cid)
    raise_ = _problem(1, "2026-11-28T01:00:00Z", tech_code="CX017", tech_info="contactor welded")
    clear = _problem(2, "2026-11-28T01:05:00Z", actual_value="false", cleared=True, cause=1)
    async with charge_point(running, cid, "2.0.1") as cp:
        await cp.call(_notify(raise_))

    async def opened() -> list[dict[str, Any]]:
        return await _orders(running, cid)

    [order] = await eventually(opened)
    assert (order["error_code"], order["state"]) == ("CX017", "new")

    async with charge_point(running, cid, "2.0.1") as cp:
        await cp.call(_notify(clear, seq_no=1))
        await cp.call(_notify(clear, seq_no=1))  # a retry (new message id)

    faults = await _faults(running, cid)
    assert [f["type"] for f in faults] == ["FaultRaised", "FaultCleared"]
    cleared = faults[1]["payload"]
    assert (cleared["error_code"], cleared["tech_code"], cleared["vendor_id"]) == (
        "CX017",
        "CX017",
        CHARGEX,
    )
    assert cleared["info"] == "contactor welded"
    assert cleared["event_code"] == 2
    assert cleared["charger_time"].startswith("2026-11-28T01:05:00")

    async def resolved() -> list[dict[str, Any]]:
        return [o for o in await _orders(running, cid) if o["state"] != "new"]

    [order] = await eventually(resolved)
    assert order["state"] == "resolved"


async def test_a_clearing_closes_what_is_open_on_its_component_only(running: Running) -> None:
    """Two problems open on one connector: a clearing with a techCode closes that one; one
    without closes what is left there (the variable says no problem), and nothing on
    another EVSE. An alert on another variable is cleared by a bare ``cleared: true``, in
    the same NotifyEvent as other entries; a clearing of nothing open is dropped."""
    cid = "CS-CLEAR-SCOPE"
    await register(running.api, cid)
    t0 = "2026-11-28T02:00:00Z"
    temperature = {
        "component": {"name": "Connector", "evse": {"id": 1, "connector_id": 1}},
        "variable": {"name": "Temperature"},
    }
    async with charge_point(running, cid, "2.0.1") as cp:
        await cp.call(
            _notify(
                _problem(10, t0, tech_code="CX001"),
                _problem(11, t0, tech_code="CX014"),
                _problem(12, t0, tech_code="CX001", evse={"id": 2, "connector_id": 1}),
                _problem(13, t0, tech_code="CX019", actual_value="93", **temperature),
                tbc=True,
            )
        )
        await cp.call(
            _notify(_problem(14, "2026-11-28T02:01:00Z", cleared=True, tech_code="CX014"))
        )
        await cp.call(
            _notify(
                _problem(15, "2026-11-28T02:02:00Z", actual_value="false"),
                _problem(
                    16, "2026-11-28T02:02:00Z", actual_value="41", cleared=True, **temperature
                ),
                _problem(
                    17, "2026-11-28T02:02:00Z", actual_value="40", cleared=True, **temperature
                ),
            )
        )
    faults = await _faults(running, cid)
    assert [
        (
            f["type"],
            f["payload"]["tech_code"],
            f["payload"]["connector"]["evse_id"],
            f["payload"]["event_code"],
        )
        for f in faults
    ] == [
        ("FaultRaised", "CX001", 1, 10),
        ("FaultRaised", "CX014", 1, 11),
        ("FaultRaised", "CX001", 2, 12),
        ("FaultRaised", "CX019", 1, 13),
        ("FaultCleared", "CX014", 1, 14),
        ("FaultCleared", "CX001", 1, 15),
        ("FaultCleared", "CX019", 1, 16),
    ]
    assert len({f["event_id"] for f in faults}) == len(faults)


def _tx_event(
    event_type: str, transaction_id: str, seq_no: int, timestamp: str, **extra: Any
) -> call.TransactionEvent:
    info: dict[str, Any] = {"transaction_id": transaction_id}
    return call.TransactionEvent(
        event_type=event_type,
        timestamp=timestamp,
        trigger_reason=extra.pop("trigger_reason", "MeterValuePeriodic"),
        seq_no=seq_no,
        transaction_info=info | extra.pop("info", {}),
        **extra,
    )


async def test_a_transaction_whose_started_never_came_is_started_once(running: Running) -> None:
    """A transaction first seen through Updated (its Started lost, or the station moved to
    us mid-transaction) or an offline-queued Ended alone is recorded and announced with
    one TransactionStarted (start time unknown) before its TransactionEnded; retries and
    later Updated events add nothing."""
    cid = "CS-TX-NOSTART"
    await register(running.api, cid)
    evse = {"id": 1, "connector_id": 1}
    async with charge_point(running, cid, "2.0.1") as cp:
        await cp.call(_tx_event("Updated", "TX-A", 3, "2026-11-28T03:00:00Z", evse=evse))
        await cp.call(_tx_event("Updated", "TX-A", 4, "2026-11-28T03:05:00Z"))
    async with charge_point(running, cid, "2.0.1") as cp:
        await cp.call(_tx_event("Updated", "TX-A", 5, "2026-11-28T03:10:00Z"))
        await cp.call(
            _tx_event(
                "Ended",
                "TX-A",
                6,
                "2026-11-28T03:15:00Z",
                trigger_reason="StopAuthorized",
                info={"stopped_reason": "Local"},
            )
        )
        ended_alone = _tx_event(
            "Ended",
            "TX-B",
            9,
            "2026-11-28T02:00:00Z",
            trigger_reason="EVCommunicationLost",
            info={"stopped_reason": "EVDisconnected"},
            evse={"id": 2, "connector_id": 1},
            offline=True,
        )
        await cp.call(ended_alone)
        await cp.call(ended_alone)  # a retry (new message id)

    events = [
        (e["type"], e["payload"]["transaction_id"])
        for e in await charger_events(running, cid)
        if e["type"] in ("TransactionStarted", "TransactionEnded")
    ]
    assert events == [
        ("TransactionStarted", "TX-A"),
        ("TransactionEnded", "TX-A"),
        ("TransactionStarted", "TX-B"),
        ("TransactionEnded", "TX-B"),
    ]
    started = await charger_events(running, cid, "TransactionStarted")
    assert [s["payload"]["connector"] for s in started] == [
        {"evse_id": 1, "connector_id": 1},
        {"evse_id": 2, "connector_id": 1},
    ]
    assert all(s["payload"]["charger_time"] is None for s in started)
    async with running.system.db.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(
                    TRANSACTIONS.c.transaction_id,
                    TRANSACTIONS.c.connector_key,
                    TRANSACTIONS.c.started_at,
                    TRANSACTIONS.c.stop_reason,
                )
                .where(TRANSACTIONS.c.charger_id == cid)
                .order_by(TRANSACTIONS.c.id)
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("TX-A", "1/1", None, "Local"),
        ("TX-B", "2/1", None, "EVDisconnected"),
    ]


async def test_transaction_energy_follows_the_unit_multiplier(running: Running) -> None:
    """unitOfMeasure's multiplier is a power of ten: 12.5 Wh x 10^3 is 12,500 Wh (it was
    taken as 12.5 Wh); kWh with multiplier 0 is x 1000."""
    cid = "CS-TX-MULTIPLIER"
    await register(running.api, cid)

    def reading(value: float, unit: dict[str, Any], ts: str) -> list[dict[str, Any]]:
        sampled = {"value": value, "unit_of_measure": unit}
        return [{"timestamp": ts, "sampled_value": [sampled]}]

    t0, t1 = "2026-11-28T04:00:00Z", "2026-11-28T05:00:00Z"
    evse = {"id": 1, "connector_id": 1}
    async with charge_point(running, cid, "2.0.1") as cp:
        await cp.call(
            _tx_event(
                "Started",
                "TX-M",
                0,
                t0,
                trigger_reason="CablePluggedIn",
                evse=evse,
                meter_value=reading(12.5, {"unit": "Wh", "multiplier": 3}, t0),
            )
        )
        await cp.call(
            _tx_event(
                "Ended",
                "TX-M",
                1,
                t1,
                trigger_reason="EVCommunicationLost",
                meter_value=reading(20.25, {"unit": "kWh"}, t1),
            )
        )
    [started] = await charger_events(running, cid, "TransactionStarted")
    [ended] = await charger_events(running, cid, "TransactionEnded")
    assert started["payload"]["meter_start_wh"] == 12500
    assert ended["payload"]["meter_stop_wh"] == 20250


async def test_a_pending_stations_repeated_boot_notifications_are_one_boot(
    running: Running,
) -> None:
    """A station answered Pending must send BootNotification again on its connection until
    it is Accepted; a 2.0.1 station asked by TriggerMessage sends one with reason
    Triggered. Those are no new boots (``repeated``): they opened a reboot-loop order."""
    cid = "CS-BOOT-PENDING"
    await register(running.api, cid)
    r = await running.api.patch(f"/api/v1/chargers/{cid}", json={"registration_status": "pending"})
    assert r.status_code == 200, r.text
    boot16 = call16.BootNotification(charge_point_model="M", charge_point_vendor="V")
    async with charge_point(running, cid, "1.6") as cp:
        for _ in range(4):
            assert (await cp.call(boot16)).status == "Pending"
        r = await running.api.patch(
            f"/api/v1/chargers/{cid}", json={"registration_status": "accepted"}
        )
        assert r.status_code == 200, r.text
        assert (await cp.call(boot16)).status == "Accepted"
        # The intake handles events in order: once this fault is in, the boots are too.
        await cp.call(
            call16.StatusNotification(connector_id=1, error_code="NoError", status="Faulted")
        )
    cid201 = "CS-BOOT-TRIGGERED"
    await register(running.api, cid201)
    station = {"model": "M", "vendor_name": "V"}
    async with charge_point(running, cid201, "2.0.1") as cp:
        await cp.call(call.BootNotification(charging_station=station, reason="PowerUp"))
        for _ in range(3):
            await cp.call(call.BootNotification(charging_station=station, reason="Triggered"))
        await cp.call(
            call.StatusNotification(
                timestamp="2026-11-28T05:00:00Z",
                connector_status="Faulted",
                evse_id=1,
                connector_id=1,
            )
        )

    for charger_id, expected in ((cid, [False] + [True] * 4), (cid201, [False] + [True] * 3)):

        async def fault_in(charger_id: str = charger_id) -> bool:
            r = await running.api.get("/api/v1/faults", params={"charger_id": charger_id})
            return bool(r.json())

        await eventually(fault_in)
        orders = await _orders(running, charger_id)
        assert "RebootLoop" not in [o["error_code"] for o in orders]
        booted = await charger_events(running, charger_id, "ChargerBooted")
        assert [b["payload"]["repeated"] for b in booted] == expected


async def test_an_ended_transaction_without_stopped_reason_ended_locally(
    running: Running,
) -> None:
    """2.0.1 leaves stoppedReason out only when it is Local; the triggerReason is not a
    stop reason (TransactionEnded said 'StopAuthorized')."""
    cid = "CS-TX-LOCAL"
    await register(running.api, cid)
    async with charge_point(running, cid, "2.0.1") as cp:
        await cp.call(
            _tx_event(
                "Started",
                "TX-L",
                0,
                "2026-11-28T02:00:00Z",
                trigger_reason="Authorized",
                evse={"id": 1, "connector_id": 1},
            )
        )
        await cp.call(
            _tx_event("Ended", "TX-L", 1, "2026-11-28T02:30:00Z", trigger_reason="StopAuthorized")
        )
    [ended] = await charger_events(running, cid, "TransactionEnded")
    assert ended["payload"]["reason"] == "Local"


async def test_transaction_samples_are_stored_on_the_transactions_connector(
    running: Running,
) -> None:
    """2.0.1 names the EVSE in a transaction's first event only: the samples of later
    Updated and Ended events (also after a reconnect) are the transaction's connector's.
    They were stored on connector 0."""
    cid = "CS-TX-SAMPLES"
    await register(running.api, cid)

    def sample(wh: float, ts: str) -> list[dict[str, Any]]:
        return [{"timestamp": ts, "sampled_value": [{"value": wh}]}]

    t0, t1, t2 = "2026-11-28T06:00:00Z", "2026-11-28T06:15:00Z", "2026-11-28T06:30:00Z"
    async with charge_point(running, cid, "2.0.1") as cp:
        await cp.call(
            _tx_event(
                "Started",
                "TX-S",
                0,
                t0,
                trigger_reason="CablePluggedIn",
                evse={"id": 2, "connector_id": 1},
                meter_value=sample(100, t0),
            )
        )
        await cp.call(_tx_event("Updated", "TX-S", 1, t1, meter_value=sample(900, t1)))
    async with charge_point(running, cid, "2.0.1") as cp:
        await cp.call(
            _tx_event(
                "Ended",
                "TX-S",
                2,
                t2,
                trigger_reason="EVCommunicationLost",
                meter_value=sample(1500, t2),
            )
        )
    async with running.system.db.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(METER_VALUES.c.connector_key, METER_VALUES.c.transaction_id)
                .where(METER_VALUES.c.charger_id == cid)
                .order_by(METER_VALUES.c.sampled_at)
            )
        ).all()
    assert [tuple(r) for r in rows] == [("2/1", "TX-S")] * 3


async def test_transaction_event_samples_are_meter_values_received(running: Running) -> None:
    """A 2.0.1 transaction's samples arrive in its TransactionEvents: each event's samples
    are a MeterValuesReceived with the transaction and its connector, as 1.6 MeterValues
    during a transaction are (there was none); a retried event is not a second one."""
    cid = "CS-TX-METER-EVENTS"
    await register(running.api, cid)
    t0, t1 = "2026-11-28T07:00:00Z", "2026-11-28T07:15:00Z"
    periodic = [{"timestamp": t1, "sampled_value": [{"value": 900}]}]
    async with charge_point(running, cid, "2.0.1") as cp:
        await cp.call(
            _tx_event(
                "Started",
                "TX-E",
                0,
                t0,
                trigger_reason="CablePluggedIn",
                evse={"id": 1, "connector_id": 2},
            )
        )
        await cp.call(_tx_event("Updated", "TX-E", 1, t1, meter_value=periodic))
        await cp.call(_tx_event("Updated", "TX-E", 1, t1, meter_value=periodic))  # a retry
    [received] = await charger_events(running, cid, "MeterValuesReceived")
    payload = received["payload"]
    assert payload["transaction_id"] == "TX-E"
    assert payload["connector"] == {"evse_id": 1, "connector_id": 2}
    assert payload["samples"] == periodic
    assert payload["charger_time"].startswith("2026-11-28T07:15:00")


async def test_a_vendors_own_cx_code_is_no_chargex_safety_fault(running: Running) -> None:
    """A 1.6 vendorErrorCode CXnnn is a ChargeX code only under ChargeX's vendorId (or
    none), as the fault rules read it: another vendor's "CX002" was rated critical."""
    cid = "CS-CX-VENDOR"
    await register(running.api, cid)
    async with charge_point(running, cid, "1.6") as cp:
        for connector, vendor in ((1, "com.example.evse"), (2, CHARGEX)):
            await cp.call(
                call16.StatusNotification(
                    connector_id=connector,
                    error_code="OtherError",
                    status="Faulted",
                    vendor_id=vendor,
                    vendor_error_code="CX002",
                )
            )
    raised = await charger_events(running, cid, "FaultRaised")
    assert [(f["payload"]["vendor_id"], f["payload"]["severity"]) for f in raised] == [
        ("com.example.evse", "error"),
        (CHARGEX, "critical"),
    ]


async def test_a_degraded_chargex_problem_is_a_warning(running: Running) -> None:
    """ChargeX marks CX018 (cable over temperature, derating) as degraded: the port still
    charges, so a 2.0.1 report of it is a warning (it was an error like a port down),
    while CX019 (over temperature, stopped) stays an error."""
    cid = "CS-CX-DEGRADED"
    await register(running.api, cid)
    t0 = "2026-11-28T08:00:00Z"
    async with charge_point(running, cid, "2.0.1") as cp:
        await cp.call(
            _notify(_problem(1, t0, tech_code="CX018"), _problem(2, t0, tech_code="CX019"))
        )
    raised = await charger_events(running, cid, "FaultRaised")
    assert [(f["payload"]["tech_code"], f["payload"]["severity"]) for f in raised] == [
        ("CX018", "warning"),
        ("CX019", "error"),
    ]
