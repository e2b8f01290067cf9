"""Operator commands to real OCPP 1.6 and 2.0.1 charge points (the ``ocpp`` library's
client classes, answering with ``@on`` handlers): every command is translated, answered
and recorded; Rejected passes through, a CALLERROR is a 502, an offline charger a 409, a
silent one a 504, a reconnect fails the command in flight cleanly; transactions block
commands that must not interrupt them; long-running operations report progress; only the
right roles may send."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
from ocpp.exceptions import InternalError
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from csms.protocol.routing import on
from csms.state import TRANSACTIONS
from services.api_auth import Principal, create_token
from services.bus.outbox import OutboxBus
from services.clock import FakeClock
from services.commands import log as command_log
from services.commands.contracts import (
    COMMAND_NAMES,
    PARAMS,
    CommandName,
    CommandReply,
    CommandRequest,
    validate_params,
)
from services.commands.log import send_command
from services.committer import GroupCommitter
from services.db import utcnow
from services.http_app import set_command_authorizer
from services.observability import metrics
from tests.conftest import Running, SystemFactory, charge_point, eventually, register
from ticketing.work_orders.derived import SIGNALS

REQUEST_ID = object()  # stands for the request id the command log assigned

# ------------------------------------------------------------------ charge points


class Station16(ChargePoint16):  # type: ignore[misc]
    """A 1.6 charge point that answers every command and remembers what it was sent."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received: list[tuple[str, dict[str, Any]]] = []

    def got(self, action: str, payload: dict[str, Any]) -> None:
        self.received.append((action, payload))

    @on(Action16.reset)
    async def on_reset(self, **kw: Any) -> result16.Reset:
        self.got("Reset", kw)
        return result16.Reset(status="Accepted")

    @on(Action16.unlock_connector)
    async def on_unlock(self, **kw: Any) -> result16.UnlockConnector:
        self.got("UnlockConnector", kw)
        return result16.UnlockConnector(status="Unlocked")

    @on(Action16.change_availability)
    async def on_availability(self, **kw: Any) -> result16.ChangeAvailability:
        self.got("ChangeAvailability", kw)
        return result16.ChangeAvailability(
            status="Rejected" if kw["connector_id"] == 2 else "Accepted"
        )

    @on(Action16.trigger_message)
    async def on_trigger(self, **kw: Any) -> result16.TriggerMessage:
        self.got("TriggerMessage", kw)
        return result16.TriggerMessage(status="Accepted")

    @on(Action16.get_configuration)
    async def on_get_configuration(self, **kw: Any) -> result16.GetConfiguration:
        self.got("GetConfiguration", kw)
        return result16.GetConfiguration(
            configuration_key=[{"key": "HeartbeatInterval", "readonly": False, "value": "300"}]
        )

    @on(Action16.change_configuration)
    async def on_change_configuration(self, **kw: Any) -> result16.ChangeConfiguration:
        self.got("ChangeConfiguration", kw)
        return result16.ChangeConfiguration(status="Accepted")

    @on(Action16.clear_cache)
    async def on_clear_cache(self, **kw: Any) -> result16.ClearCache:
        self.got("ClearCache", kw)
        return result16.ClearCache(status="Accepted")

    @on(Action16.get_diagnostics)
    async def on_get_diagnostics(self, **kw: Any) -> result16.GetDiagnostics:
        self.got("GetDiagnostics", kw)
        return result16.GetDiagnostics(file_name="diag-0001.zip")

    @on(Action16.update_firmware)
    async def on_update_firmware(self, **kw: Any) -> result16.UpdateFirmware:
        self.got("UpdateFirmware", kw)
        return result16.UpdateFirmware()

    @on(Action16.remote_start_transaction)
    async def on_remote_start(self, **kw: Any) -> result16.RemoteStartTransaction:
        self.got("RemoteStartTransaction", kw)
        return result16.RemoteStartTransaction(status="Accepted")

    @on(Action16.remote_stop_transaction)
    async def on_remote_stop(self, **kw: Any) -> result16.RemoteStopTransaction:
        self.got("RemoteStopTransaction", kw)
        return result16.RemoteStopTransaction(status="Accepted")

    @on(Action16.data_transfer)
    async def on_data_transfer(self, **kw: Any) -> result16.DataTransfer:
        self.got("DataTransfer", kw)
        if kw["vendor_id"] == "boom":
            raise InternalError(description="vendor module crashed")
        return result16.DataTransfer(status="Accepted", data="pong")


class Station201(ChargePoint201):  # type: ignore[misc]
    """A 2.0.1 charging station that answers every command and remembers what it was sent."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received: list[tuple[str, dict[str, Any]]] = []

    def got(self, action: str, payload: dict[str, Any]) -> None:
        self.received.append((action, payload))

    @on(Action201.reset)
    async def on_reset(self, **kw: Any) -> result201.Reset:
        self.got("Reset", kw)
        return result201.Reset(status="Accepted")

    @on(Action201.unlock_connector)
    async def on_unlock(self, **kw: Any) -> result201.UnlockConnector:
        self.got("UnlockConnector", kw)
        return result201.UnlockConnector(status="Unlocked")

    @on(Action201.change_availability)
    async def on_availability(self, **kw: Any) -> result201.ChangeAvailability:
        self.got("ChangeAvailability", kw)
        evse_id: int = (kw.get("evse") or {}).get("id", 0)
        status = {1: "Scheduled", 2: "Rejected"}.get(evse_id, "Accepted")
        return result201.ChangeAvailability(status=status)

    @on(Action201.trigger_message)
    async def on_trigger(self, **kw: Any) -> result201.TriggerMessage:
        self.got("TriggerMessage", kw)
        return result201.TriggerMessage(status="Accepted")

    @on(Action201.get_variables)
    async def on_get_variables(self, **kw: Any) -> result201.GetVariables:
        self.got("GetVariables", kw)
        return result201.GetVariables(
            get_variable_result=[
                {
                    "attribute_status": "Accepted",
                    "attribute_value": "300",
                    "component": d["component"],
                    "variable": d["variable"],
                }
                for d in kw["get_variable_data"]
            ]
        )

    @on(Action201.set_variables)
    async def on_set_variables(self, **kw: Any) -> result201.SetVariables:
        self.got("SetVariables", kw)
        return result201.SetVariables(
            set_variable_result=[
                {
                    "attribute_status": "RebootRequired",
                    "component": d["component"],
                    "variable": d["variable"],
                }
                for d in kw["set_variable_data"]
            ]
        )

    @on(Action201.get_base_report)
    async def on_get_base_report(self, **kw: Any) -> result201.GetBaseReport:
        self.got("GetBaseReport", kw)
        return result201.GetBaseReport(status="Accepted")

    @on(Action201.clear_cache)
    async def on_clear_cache(self, **kw: Any) -> result201.ClearCache:
        self.got("ClearCache", kw)
        return result201.ClearCache(status="Accepted")

    @on(Action201.get_log)
    async def on_get_log(self, **kw: Any) -> result201.GetLog:
        self.got("GetLog", kw)
        return result201.GetLog(status="Accepted", filename="log-0001.zip")

    @on(Action201.update_firmware)
    async def on_update_firmware(self, **kw: Any) -> result201.UpdateFirmware:
        self.got("UpdateFirmware", kw)
        return result201.UpdateFirmware(status="Accepted")

    @on(Action201.request_start_transaction)
    async def on_request_start(self, **kw: Any) -> result201.RequestStartTransaction:
        self.got("RequestStartTransaction", kw)
        return result201.RequestStartTransaction(status="Accepted")

    @on(Action201.request_stop_transaction)
    async def on_request_stop(self, **kw: Any) -> result201.RequestStopTransaction:
        self.got("RequestStopTransaction", kw)
        return result201.RequestStopTransaction(status="Accepted")

    @on(Action201.data_transfer)
    async def on_data_transfer(self, **kw: Any) -> result201.DataTransfer:
        self.got("DataTransfer", kw)
        if kw["vendor_id"] == "boom":
            raise InternalError(description="vendor module crashed")
        return result201.DataTransfer(status="Accepted", data={"echo": kw.get("data")})


class Stalling16(ChargePoint16):  # type: ignore[misc]
    """A 1.6 charge point that receives a Reset and never answers it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reset_received = asyncio.Event()

    @on(Action16.reset)
    async def on_reset(self, **_: Any) -> result16.Reset:
        self.reset_received.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class Gated16(Station16):
    """A 1.6 charge point that holds its answer to a Reset until ``release`` is set."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reset_received = asyncio.Event()
        self.release = asyncio.Event()

    @on(Action16.reset)
    async def on_reset(self, **kw: Any) -> result16.Reset:
        self.got("Reset", kw)
        self.reset_received.set()
        await self.release.wait()
        return result16.Reset(status="Accepted")


class GatedSilentCache16(Gated16):
    """Holds its Reset answer like Gated16 and never answers a ClearCache."""

    @on(Action16.clear_cache)
    async def on_clear_cache(self, **kw: Any) -> result16.ClearCache:
        self.got("ClearCache", kw)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


# ------------------------------------------------------------------ helpers


async def send(
    running: Running, charger_id: str, name: str, body: Any = None, **kwargs: Any
) -> httpx.Response:
    url = f"/api/v1/chargers/{charger_id}/commands/{name}"
    return await running.api.post(url, json=body if body is not None else {}, **kwargs)


async def record(running: Running, command_id: str) -> dict[str, Any]:
    r = await running.api.get(f"/api/v1/commands/{command_id}")
    assert r.status_code == 200, r.text
    found: dict[str, Any] = r.json()
    return found


def substitute(expected: Any, request_id: int | None) -> Any:
    if expected is REQUEST_ID:
        return request_id
    if isinstance(expected, dict):
        return {k: substitute(v, request_id) for k, v in expected.items()}
    if isinstance(expected, list):
        return [substitute(v, request_id) for v in expected]
    return expected


async def check_answered(
    running: Running,
    station: Any,
    charger_id: str,
    case: tuple[str, dict[str, Any], str | None, str, dict[str, Any]],
) -> dict[str, Any]:
    """Send one command; the station got the expected call; the reply and the log agree."""
    name, body, status, action, payload = case
    r = await send(running, charger_id, name, body)
    assert r.status_code == 200, r.text
    reply = r.json()
    assert reply["outcome"] == "answered"
    assert reply["status"] == status
    assert reply["node_id"] == running.system.settings.node_id
    assert reply["sent_at"] and reply["answered_at"] and reply["duration_ms"] >= 0
    logged = await record(running, reply["command_id"])
    assert logged["charger_id"] == charger_id
    assert logged["name"] == name
    assert logged["requested_by"] == "user:admin"
    assert logged["outcome"] == "answered"
    assert logged["status"] == status
    assert logged["response"] == reply["response"]
    assert logged["params"] == validate_params(name, body).model_dump(mode="json")  # type: ignore[arg-type]
    assert station.received[-1] == (action, substitute(payload, logged["request_id"]))
    return logged


VARIABLE = {"component": "OCPPCommCtrlr", "variable": "HeartbeatInterval"}
VARIABLE_WIRE = {
    "component": {"name": "OCPPCommCtrlr"},
    "variable": {"name": "HeartbeatInterval"},
    "attribute_type": "Actual",
}
CASES_16: list[tuple[str, dict[str, Any], str | None, str, dict[str, Any]]] = [
    ("reset", {"type": "hard"}, "Accepted", "Reset", {"type": "Hard"}),
    ("unlock-connector", {"connector": "1"}, "Unlocked", "UnlockConnector", {"connector_id": 1}),
    (
        "change-availability",
        {"connector": "1", "operative": False},
        "Accepted",
        "ChangeAvailability",
        {"connector_id": 1, "type": "Inoperative"},
    ),
    (
        "trigger-message",
        {"message": "LogStatusNotification", "connector": "1"},
        "Accepted",
        "TriggerMessage",
        {"requested_message": "DiagnosticsStatusNotification", "connector_id": 1},
    ),
    (
        "get-configuration",
        {"keys": ["HeartbeatInterval"], "variables": [VARIABLE]},
        None,
        "GetConfiguration",
        {"key": ["HeartbeatInterval"]},
    ),
    (
        "set-configuration",
        {"key": "HeartbeatInterval", "variable": VARIABLE, "value": "120"},
        "Accepted",
        "ChangeConfiguration",
        {"key": "HeartbeatInterval", "value": "120"},
    ),
    ("clear-cache", {}, "Accepted", "ClearCache", {}),
    (
        "get-diagnostics",
        {"location": "ftp://logs.example.com/up", "start": "2026-11-01T00:00:00Z", "retries": 2},
        None,
        "GetDiagnostics",
        {
            "location": "ftp://logs.example.com/up",
            "start_time": "2026-11-01T00:00:00.000Z",
            "retries": 2,
        },
    ),
    (
        "update-firmware",
        {"location": "https://fw.example.com/1.2.4.bin", "retrieve_at": "2026-12-01T02:00:00Z"},
        None,
        "UpdateFirmware",
        {
            "location": "https://fw.example.com/1.2.4.bin",
            "retrieve_date": "2026-12-01T02:00:00.000Z",
        },
    ),
    (
        "remote-start",
        {"id_token": "TAG-1", "connector": "1"},
        "Accepted",
        "RemoteStartTransaction",
        {"id_tag": "TAG-1", "connector_id": 1},
    ),
    (
        "remote-stop",
        {"transaction_id": "7"},
        "Accepted",
        "RemoteStopTransaction",
        {"transaction_id": 7},
    ),
    (
        "data-transfer",
        {"vendor_id": "com.example", "message_id": "ping", "data": {"n": 1}},
        "Accepted",
        "DataTransfer",
        {"vendor_id": "com.example", "message_id": "ping", "data": '{"n":1}'},
    ),
]
CASES_201: list[tuple[str, dict[str, Any], str | None, str, dict[str, Any]]] = [
    ("reset", {"type": "hard"}, "Accepted", "Reset", {"type": "Immediate"}),
    (
        "unlock-connector",
        {"connector": "1/2"},
        "Unlocked",
        "UnlockConnector",
        {"evse_id": 1, "connector_id": 2},
    ),
    (
        "change-availability",
        {"connector": "1", "operative": False},
        "Scheduled",
        "ChangeAvailability",
        {"operational_status": "Inoperative", "evse": {"id": 1}},
    ),
    (
        "trigger-message",
        {"message": "DiagnosticsStatusNotification"},
        "Accepted",
        "TriggerMessage",
        {"requested_message": "LogStatusNotification"},
    ),
    (
        "get-configuration",
        {"keys": ["HeartbeatInterval"], "variables": [VARIABLE]},
        "Accepted",
        "GetVariables",
        {"get_variable_data": [VARIABLE_WIRE]},
    ),
    (
        "set-configuration",
        {"key": "HeartbeatInterval", "variable": VARIABLE, "value": "120"},
        "RebootRequired",
        "SetVariables",
        {"set_variable_data": [{**VARIABLE_WIRE, "attribute_value": "120"}]},
    ),
    (
        "get-base-report",
        {"report_base": "SummaryInventory"},
        "Accepted",
        "GetBaseReport",
        {"request_id": REQUEST_ID, "report_base": "SummaryInventory"},
    ),
    ("clear-cache", {}, "Accepted", "ClearCache", {}),
    (
        "get-diagnostics",
        {"location": "https://logs.example.com/up", "stop": "2026-11-02T00:00:00Z"},
        "Accepted",
        "GetLog",
        {
            "log": {
                "remote_location": "https://logs.example.com/up",
                "latest_timestamp": "2026-11-02T00:00:00.000Z",
            },
            "log_type": "DiagnosticsLog",
            "request_id": REQUEST_ID,
        },
    ),
    (
        "update-firmware",
        {"location": "https://fw.example.com/2.0.bin", "retrieve_at": "2026-12-01T02:00:00Z"},
        "Accepted",
        "UpdateFirmware",
        {
            "request_id": REQUEST_ID,
            "firmware": {
                "location": "https://fw.example.com/2.0.bin",
                "retrieve_date_time": "2026-12-01T02:00:00.000Z",
            },
        },
    ),
    (
        "remote-start",
        {"id_token": "TAG-1", "connector": "1"},
        "Accepted",
        "RequestStartTransaction",
        {
            "id_token": {"id_token": "TAG-1", "type": "ISO14443"},
            "remote_start_id": REQUEST_ID,
            "evse_id": 1,
        },
    ),
    (
        "remote-stop",
        {"transaction_id": "TX-9"},
        "Accepted",
        "RequestStopTransaction",
        {"transaction_id": "TX-9"},
    ),
    (
        "data-transfer",
        {"vendor_id": "com.example", "message_id": "ping", "data": "hello"},
        "Accepted",
        "DataTransfer",
        {"vendor_id": "com.example", "message_id": "ping", "data": "hello"},
    ),
]


# ------------------------------------------------------------------ contracts and bus


def test_every_command_has_a_params_model() -> None:
    assert set(PARAMS) == set(COMMAND_NAMES)
    covered = {c[0] for c in CASES_16} | {c[0] for c in CASES_201}
    assert covered == set(COMMAND_NAMES)
    for name, body, *_ in CASES_16 + CASES_201:
        validate_params(name, body)  # type: ignore[arg-type]


def admin_request(
    charger_id: str,
    command_id: str,
    name: CommandName,
    timeout_s: float,
    params: dict[str, Any] | None = None,
) -> CommandRequest:
    """A command an admin sends, for the bus directly (without the HTTP API)."""
    return CommandRequest(
        command_id=command_id,
        charger_id=charger_id,
        name=name,
        params=params or {},
        requested_by="user:admin",
        timeout_s=timeout_s,
    )


async def test_embedded_bus_routes_commands_to_the_registered_executor() -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    bus = OutboxBus(GroupCommitter(engine))
    request = CommandRequest(
        command_id="c-1",
        charger_id="CP-X",
        name="reset",
        params={},
        requested_by="user:x",
        timeout_s=1,
    )
    assert (await bus.request_command(request)).outcome == "offline"

    async def executor(req: CommandRequest) -> CommandReply:
        if req.charger_id == "CP-BAD":
            raise RuntimeError("broken")
        return CommandReply(command_id=req.command_id, outcome="answered", status="Accepted")

    bus.serve_commands(executor)
    with pytest.raises(ValueError):
        bus.serve_commands(executor)
    assert (await bus.request_command(request)).status == "Accepted"
    broken = await bus.request_command(request.model_copy(update={"charger_id": "CP-BAD"}))
    assert broken.outcome == "error"
    assert broken.detail is not None and "broken" in broken.detail
    await engine.dispose()


# ------------------------------------------------------------------ every command


async def test_every_command_to_an_ocpp16_charge_point(running: Running) -> None:
    cid = "CP-CMD-16"
    await register(running.api, cid)
    async with charge_point(running, cid, "1.6", cp_class=Station16) as cp:
        sent = [(await check_answered(running, cp.cp, cid, case))["name"] for case in CASES_16]

        # A 2.0.1-only command or parameter is refused, and nothing reaches the charger.
        before = len(cp.cp.received)
        for name, body in (
            ("get-base-report", {}),
            ("unlock-connector", {"connector": "1/1"}),
            ("get-configuration", {"variables": [VARIABLE]}),
        ):
            r = await send(running, cid, name, body)
            assert r.status_code == 409, r.text
            problem = r.json()
            assert problem["outcome"] == "refused"
            assert "not applicable to OCPP 1.6" in problem["detail"]
            assert (await record(running, problem["command_id"]))["outcome"] == "refused"
        assert len(cp.cp.received) == before

    r = await running.api.get(f"/api/v1/chargers/{cid}/commands", params={"limit": 1000})
    names = [c["name"] for c in r.json()["items"]]
    assert names[3:] == list(reversed(sent))
    # paging: newest first, the cursor continues where the page ended
    first = (await running.api.get(f"/api/v1/chargers/{cid}/commands?limit=4")).json()
    rest = await running.api.get(
        f"/api/v1/chargers/{cid}/commands", params={"limit": 1000, "cursor": first["next_cursor"]}
    )
    assert [c["name"] for c in first["items"] + rest.json()["items"]] == names
    assert rest.json()["next_cursor"] is None


async def test_every_command_to_an_ocpp201_station(running: Running) -> None:
    cid = "CP-CMD-201"
    await register(running.api, cid)
    async with charge_point(running, cid, "2.0.1", cp_class=Station201) as cp:
        for case in CASES_201:
            logged = await check_answered(running, cp.cp, cid, case)
            if case[0] in ("get-base-report", "get-diagnostics", "update-firmware"):
                assert logged["request_id"] is not None

        r = await send(running, cid, "trigger-message", {"message": "TransactionEvent"})
        assert r.status_code == 200, r.text
        assert cp.cp.received[-1] == ("TriggerMessage", {"requested_message": "TransactionEvent"})

        # A 1.6-only spelling is refused on 2.0.1.
        r = await send(
            running, cid, "set-configuration", {"key": "HeartbeatInterval", "value": "1"}
        )
        assert r.status_code == 409, r.text
        assert "not applicable to OCPP 2.0.1" in r.json()["detail"]
        # RequestStartTransaction takes an EVSE: a connector is refused, not dropped (the
        # station would pick any connector of EVSE 1).
        before = len(cp.cp.received)
        r = await send(running, cid, "remote-start", {"id_token": "TAG-1", "connector": "1/2"})
        assert r.status_code == 409, r.text
        assert "not applicable to OCPP 2.0.1" in r.json()["detail"]
        assert len(cp.cp.received) == before

    r = await running.api.get(f"/api/v1/chargers/{cid}/commands", params={"limit": 1000})
    assert len(r.json()["items"]) == len(CASES_201) + 3


# ------------------------------------------------------------------ answers and failures


@pytest.mark.parametrize(
    ("version", "station"), [("1.6", Station16), ("2.0.1", Station201)], ids=["1.6", "2.0.1"]
)
async def test_rejected_passes_through_and_callerror_is_502(
    running: Running, version: str, station: type
) -> None:
    cid = f"CP-REJ-{version.replace('.', '')}"
    await register(running.api, cid)
    async with charge_point(running, cid, version, cp_class=station):
        r = await send(running, cid, "change-availability", {"connector": "2", "operative": False})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "Rejected"

        r = await send(running, cid, "data-transfer", {"vendor_id": "boom"})
        assert r.status_code == 502, r.text
        problem = r.json()
        assert problem["outcome"] == "error"
        assert "InternalError" in problem["detail"]
        assert "vendor module crashed" in problem["detail"]
        logged = await record(running, problem["command_id"])
        assert logged["outcome"] == "error"
        assert "InternalError" in logged["detail"]


class VendorStation201(Station201):
    """A 2.0.1 station that keeps the raw CALLs it receives and answers a DataTransfer with
    vendor data whose keys are camelCase (its library leaves those as they are)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.raw: list[Any] = []

    async def route_message(self, raw_msg: str) -> None:
        self.raw.append(orjson.loads(raw_msg))
        await super().route_message(raw_msg)

    @on(Action201.data_transfer)
    async def on_data_transfer(self, **_: Any) -> result201.DataTransfer:
        return result201.DataTransfer(status="Accepted", data={"sessionId": 7, "maxKw": 11})


async def test_data_transfer_data_is_vendor_data_passed_as_is(running: Running) -> None:
    cid = "CP-VENDOR-201"
    await register(running.api, cid)
    data = {"session_id": 7, "limits": {"max_kw": 11, "phaseCount": 3}}
    async with charge_point(running, cid, "2.0.1", cp_class=VendorStation201) as cp:
        r = await send(running, cid, "data-transfer", {"vendor_id": "com.example", "data": data})
        assert r.status_code == 200, r.text
        [frame] = [f for f in cp.cp.raw if f[0] == 2 and f[2] == "DataTransfer"]
        assert frame[3] == {"vendorId": "com.example", "data": data}
        assert r.json()["response"] == {"status": "Accepted", "data": {"sessionId": 7, "maxKw": 11}}
        logged = await record(running, r.json()["command_id"])
        assert logged["response"] == r.json()["response"]


async def test_answers_are_logged_with_the_action_they_answer(running: Running) -> None:
    cid = "CP-LOG-ACTION"
    await register(running.api, cid)
    async with charge_point(running, cid, "1.6", cp_class=Station16):
        assert (await send(running, cid, "reset", {"type": "soft"})).status_code == 200
        assert (await send(running, cid, "data-transfer", {"vendor_id": "boom"})).status_code == 502

    async def logged(action: str) -> list[tuple[str, int]] | None:
        r = await running.api.get(
            f"/api/v1/chargers/{cid}/messages", params={"action": action, "limit": 100}
        )
        assert r.status_code == 200, r.text
        rows = sorted((m["direction"], m["message_type"]) for m in r.json()["items"])
        return rows if len(rows) == 2 else None

    # Our CALL and the charger's CALLRESULT / CALLERROR to it, under the command's action.
    assert await eventually(lambda: logged("Reset")) == [("in", 3), ("out", 2)]
    assert await eventually(lambda: logged("DataTransfer")) == [("in", 4), ("out", 2)]


def frames_in(message_type: str, action: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "chargeops_ocpp_frames_total",
        {"direction": "in", "message_type": message_type, "action": action},
    )
    return value or 0.0


async def test_answers_are_counted_under_the_action_they_answer(running: Running) -> None:
    # chargeops_ocpp_frames_total is "frames in/out by action": a charger's CALLRESULT or
    # CALLERROR to our CALL counts under that CALL's action, not as action="response".
    cid = "CP-METRIC-ACTION"
    await register(running.api, cid)
    before = {
        key: frames_in(*key) for key in (("3", "Reset"), ("4", "DataTransfer"), ("3", "response"))
    }
    async with charge_point(running, cid, "1.6", cp_class=Station16):
        assert (await send(running, cid, "reset", {"type": "soft"})).status_code == 200
        assert (await send(running, cid, "data-transfer", {"vendor_id": "boom"})).status_code == 502
    assert frames_in("3", "Reset") == before[("3", "Reset")] + 1
    assert frames_in("4", "DataTransfer") == before[("4", "DataTransfer")] + 1
    assert frames_in("3", "response") == before[("3", "response")]


async def test_offline_unknown_and_invalid(running: Running) -> None:
    cid = "CP-OFF"
    await register(running.api, cid)
    r = await send(running, cid, "reset", {"type": "soft"})
    assert r.status_code == 409, r.text
    problem = r.json()
    assert problem["outcome"] == "offline"
    logged = await record(running, problem["command_id"])
    assert logged["outcome"] == "offline"
    assert logged["params"] == {"type": "soft"}

    assert (await send(running, "CP-NOPE", "reset")).status_code == 404
    assert (await send(running, cid, "self-destruct")).status_code == 404
    for name, body, field in (
        ("reset", {"type": "medium"}, "type"),
        ("reset", {"bogus": 1}, "bogus"),
        ("change-availability", {"connector": "1"}, "operative"),
        ("unlock-connector", {"connector": "A"}, "connector"),
        ("get-diagnostics", {"location": "not a url"}, "location"),
        ("remote-start", {"id_token": "x" * 37}, "id_token"),
        # the checks across a value or two fields name the field too, not just "body"
        ("unlock-connector", {"connector": "0/1"}, "body.connector"),
        (
            "get-diagnostics",
            {
                "location": "https://logs.example.com",
                "start": "2026-11-02T00:00:00Z",
                "stop": "2026-11-01T00:00:00Z",
            },
            "body.stop",
        ),
        ("data-transfer", {"vendor_id": "v", "data": "x" * 9000}, "body.data"),
        # JSON has integers of any size; a charger's (and orjson's) stop at 64 bits
        ("data-transfer", {"vendor_id": "v", "data": {"n": 10**30}}, "body.data"),
        ("data-transfer", {"vendor_id": "v", "data": [-(2**63) - 1]}, "body.data"),
    ):
        r = await send(running, cid, name, body)
        assert r.status_code == 422, (name, body, r.text)
        assert field in r.json()["detail"]
    # invalid bodies never reach the log
    r = await running.api.get(f"/api/v1/chargers/{cid}/commands")
    assert len(r.json()["items"]) == 1


async def test_a_charger_that_never_answers_times_out(system_factory: SystemFactory) -> None:
    async with system_factory(call_timeout=0.5) as running:
        cid = "CP-SLOW"
        await register(running.api, cid)
        async with charge_point(running, cid, "1.6", cp_class=Stalling16):
            r = await send(running, cid, "reset")
            assert r.status_code == 504, r.text
            problem = r.json()
            assert problem["outcome"] == "timeout"
            assert (await record(running, problem["command_id"]))["outcome"] == "timeout"


async def test_a_reconnect_fails_the_command_in_flight_and_the_next_reaches_the_new_socket(
    system_factory: SystemFactory,
) -> None:
    # call_timeout is long: only noticing the closed socket can end the first command early.
    async with system_factory(call_timeout=60) as running:
        cid = "CP-RECONNECT"
        await register(running.api, cid)
        async with charge_point(running, cid, "1.6", cp_class=Stalling16) as first:
            pending = asyncio.create_task(send(running, cid, "reset"))

            async def reached() -> bool:
                return bool(first.cp.reset_received.is_set())

            await eventually(reached)
            async with charge_point(running, cid, "1.6", cp_class=Station16) as second:
                r = await asyncio.wait_for(pending, 30)
                assert r.status_code == 409, r.text
                problem = r.json()
                assert problem["outcome"] == "offline"
                assert "closed" in problem["detail"]

                r = await send(running, cid, "reset", {"type": "hard"})
                assert r.status_code == 200, r.text
                assert second.cp.received == [("Reset", {"type": "Hard"})]


async def test_a_second_command_waits_for_the_first_answer_then_is_sent(
    system_factory: SystemFactory,
) -> None:
    # OCPP allows one outstanding CALL: the second command is queued, not refused.
    async with system_factory(call_timeout=60) as running:
        cid = "CP-QUEUE"
        await register(running.api, cid)
        async with charge_point(running, cid, "1.6", cp_class=Gated16) as cp:
            first = asyncio.create_task(send(running, cid, "reset"))
            await eventually(lambda: _is_set(cp.cp.reset_received))
            second = asyncio.create_task(send(running, cid, "clear-cache"))

            async def queued() -> bool:
                r = await running.api.get(f"/api/v1/chargers/{cid}/commands")
                return len(r.json()["items"]) == 2

            await eventually(queued)
            assert [a for a, _ in cp.cp.received] == ["Reset"]
            cp.cp.release.set()
            a, b = await asyncio.wait_for(asyncio.gather(first, second), 30)
            assert a.status_code == 200 and b.status_code == 200, (a.text, b.text)
            assert [a for a, _ in cp.cp.received] == ["Reset", "ClearCache"]
            assert b.json()["sent_at"] > a.json()["sent_at"]


async def test_a_command_still_queued_at_its_timeout_is_withdrawn_unsent(
    system_factory: SystemFactory,
) -> None:
    async with system_factory(call_timeout=60) as running:
        cid = "CP-QUEUE-2"
        await register(running.api, cid)
        state = running.system.app.state
        async with charge_point(running, cid, "1.6", cp_class=Gated16) as cp:
            first = asyncio.create_task(send(running, cid, "reset"))
            await eventually(lambda: _is_set(cp.cp.reset_received))
            # The charger sits on the Reset; a command with a short timeout queued behind
            # it never leaves: it is not a timeout of a command the charger got.
            request = admin_request(cid, "queued-1", "clear-cache", 0.2)
            reply = await send_command(state.bus, state.committer, request, state.clock)
            assert reply.outcome == "refused", reply
            assert reply.detail is not None and "not sent" in reply.detail
            assert reply.sent_at is None
            logged = await record(running, "queued-1")
            assert (logged["outcome"], logged["sent_at"]) == ("refused", None)

            cp.cp.release.set()
            assert (await asyncio.wait_for(first, 30)).status_code == 200
            assert [a for a, _ in cp.cp.received] == ["Reset"]


async def test_a_command_sent_late_that_times_out_says_it_waited(
    system_factory: SystemFactory,
) -> None:
    async with system_factory(call_timeout=60) as running:
        cid = "CP-QUEUE-4"
        await register(running.api, cid)
        state = running.system.app.state
        async with charge_point(running, cid, "1.6", cp_class=GatedSilentCache16) as cp:
            first = asyncio.create_task(send(running, cid, "reset"))
            await eventually(lambda: _is_set(cp.cp.reset_received))
            request = admin_request(cid, "queued-2", "clear-cache", 2)
            second = asyncio.create_task(
                send_command(state.bus, state.committer, request, state.clock)
            )

            async def queued() -> bool:
                r = await running.api.get(f"/api/v1/chargers/{cid}/commands")
                return len(r.json()["items"]) == 2

            await eventually(queued)
            cp.cp.release.set()
            assert (await asyncio.wait_for(first, 30)).status_code == 200
            reply = await asyncio.wait_for(second, 30)
            assert reply.outcome == "timeout", reply
            assert reply.sent_at is not None and reply.duration_ms is not None
            assert reply.detail is not None and "for the answer to an earlier command" in (
                reply.detail
            )
            assert [a for a, _ in cp.cp.received] == ["Reset", "ClearCache"]


async def test_a_disconnect_fails_a_queued_command_as_not_sent(
    system_factory: SystemFactory,
) -> None:
    async with system_factory(call_timeout=60) as running:
        cid = "CP-QUEUE-3"
        await register(running.api, cid)
        async with charge_point(running, cid, "1.6", cp_class=Gated16) as cp:
            first = asyncio.create_task(send(running, cid, "reset"))
            await eventually(lambda: _is_set(cp.cp.reset_received))
            second = asyncio.create_task(send(running, cid, "clear-cache"))

            async def queued() -> bool:
                r = await running.api.get(f"/api/v1/chargers/{cid}/commands")
                return len(r.json()["items"]) == 2

            await eventually(queued)
            await cp.close()
            a, b = await asyncio.wait_for(asyncio.gather(first, second), 30)
        assert a.status_code == 409 and b.status_code == 409, (a.text, b.text)
        assert a.json()["detail"] == "the connection closed before the charger answered"
        assert a.json()["reply"]["sent_at"] is not None
        assert b.json()["detail"] == "the connection closed before the command was sent"
        logged = await record(running, b.json()["command_id"])
        assert (logged["outcome"], logged["sent_at"]) == ("offline", None)


async def _is_set(event: asyncio.Event) -> bool:
    return event.is_set()


async def test_a_command_may_serve_a_site_order_of_the_chargers_site(running: Running) -> None:
    cid = "CP-SITE-CMD"
    await register(running.api, cid)
    for site in ("site-cmd", "site-other"):
        r = await running.api.post("/api/v1/sites", json={"id": site, "name": site})
        assert r.status_code == 201, r.text
    r = await running.api.put(f"/api/v1/sites/site-cmd/chargers/{cid}")
    assert r.status_code == 200, r.text
    orders = {}
    for site in ("site-cmd", "site-other"):
        r = await running.api.post("/api/v1/work-orders", json={"title": "t", "site_id": site})
        assert r.status_code == 201, r.text
        orders[site] = r.json()["id"]
    async with charge_point(running, cid, "1.6", cp_class=Station16):
        r = await send(running, cid, "reset", params={"order_id": orders["site-cmd"]})
        assert r.status_code == 200, r.text
        r = await send(running, cid, "reset", params={"order_id": orders["site-other"]})
        assert r.status_code == 422, r.text


async def test_forbid_during_transaction(running: Running) -> None:
    cid = "CP-TX"
    await register(running.api, cid)
    await running.api.post("/api/v1/id-tokens", json={"token": "TAG-TX"})
    async with charge_point(running, cid, "1.6", cp_class=Station16) as cp:
        start = await cp.call(
            call16.StartTransaction(
                connector_id=1, id_tag="TAG-TX", meter_start=0, timestamp="2026-11-27T10:00:00Z"
            )
        )
        guarded = {"forbid_during_transaction": "true"}
        r = await send(running, cid, "reset", {"type": "soft"}, params=guarded)
        assert r.status_code == 409, r.text
        assert r.json()["outcome"] == "refused"
        assert "transaction" in r.json()["detail"]
        assert cp.cp.received == []
        logged = await record(running, r.json()["command_id"])
        assert logged["forbid_during_transaction"] is True
        assert logged["outcome"] == "refused"

        # Without the guard the command goes through.
        r = await send(running, cid, "trigger-message", {"message": "Heartbeat"})
        assert r.status_code == 200, r.text

        await cp.call(
            call16.StopTransaction(
                meter_stop=10, timestamp="2026-11-27T10:30:00Z", transaction_id=start.transaction_id
            )
        )
        r = await send(running, cid, "reset", {"type": "soft"}, params=guarded)
        assert r.status_code == 200, r.text
        assert cp.cp.received[-1] == ("Reset", {"type": "Soft"})


async def test_a_transaction_started_while_a_guarded_command_was_queued_refuses_it(
    system_factory: SystemFactory,
) -> None:
    """``forbid_during_transaction`` holds when the command would leave, not only when it
    was queued: a reset queued behind an unanswered command is refused, unsent, if a
    transaction started meanwhile (before, it was checked only when queued and reset the
    charger in the middle of the session)."""
    async with system_factory(call_timeout=60) as running:
        cid = "CP-TX-QUEUE"
        await register(running.api, cid)
        await running.api.post("/api/v1/id-tokens", json={"token": "TAG-TXQ"})
        async with charge_point(running, cid, "1.6", cp_class=Gated16) as cp:
            first = asyncio.create_task(send(running, cid, "reset"))
            await eventually(lambda: _is_set(cp.cp.reset_received))
            guarded = {"forbid_during_transaction": "true"}
            second = asyncio.create_task(
                send(running, cid, "reset", {"type": "hard"}, params=guarded)
            )

            async def queued() -> bool:
                r = await running.api.get(f"/api/v1/chargers/{cid}/commands")
                return len(r.json()["items"]) == 2

            await eventually(queued)
            # The client library reads nothing while it sits on the Reset: the frame goes
            # out raw, and the transaction counts once csms recorded it.
            start = {"connectorId": 1, "idTag": "TAG-TXQ", "meterStart": 0,
                     "timestamp": utcnow().isoformat()}  # fmt: skip
            await cp.ws.send(orjson.dumps([2, "tx-q-1", "StartTransaction", start]).decode())

            async def started() -> bool:
                async with running.system.db.engine.connect() as conn:
                    query = select(func.count()).where(TRANSACTIONS.c.charger_id == cid)
                    return bool((await conn.execute(query)).scalar())

            await eventually(started)
            cp.cp.release.set()
            a, b = await asyncio.wait_for(asyncio.gather(first, second), 30)
            assert a.status_code == 200, a.text
            assert b.status_code == 409, b.text
            assert b.json()["outcome"] == "refused"
            assert "transaction" in b.json()["detail"]
            assert [a for a, _ in cp.cp.received] == ["Reset"]
            logged = await record(running, b.json()["command_id"])
            assert (logged["outcome"], logged["sent_at"]) == ("refused", None)


async def test_a_command_whose_sender_died_is_not_in_flight_forever(
    system_factory: SystemFactory,
) -> None:
    clock = FakeClock(utcnow())
    async with system_factory(clock=clock) as running:
        cid = "CP-ABANDONED"
        await register(running.api, cid)
        # What a process killed while the command was in flight leaves: the request
        # recorded before sending, no outcome ever (as `chargeops serve` after a SIGKILL).
        request = admin_request(cid, "abandoned-1", "reset", 30, params={"type": "soft"})
        await running.system.committer.commit(command_log._insert(request, clock.now()))
        assert (await record(running, "abandoned-1"))["outcome"] is None  # in flight

        clock.advance(timedelta(minutes=10))
        logged = await record(running, "abandoned-1")
        assert logged["outcome"] == "error"
        assert "no outcome recorded" in logged["detail"]
        r = await running.api.get(f"/api/v1/chargers/{cid}/commands")
        assert [c["outcome"] for c in r.json()["items"]] == ["error"]


@pytest.mark.parametrize(
    ("version", "station"), [("1.6", Station16), ("2.0.1", Station201)], ids=["1.6", "2.0.1"]
)
async def test_commanded_resets_are_no_reboot_loop(
    running: Running, version: str, station: type
) -> None:
    cid = f"CP-RESETS-{version.replace('.', '')}"
    await register(running.api, cid)

    async def boot(cp: Any, reason: str) -> None:
        if version == "1.6":  # 1.6 gives no reason: the accepted Reset in the log tells
            await cp.call(call16.BootNotification(charge_point_vendor="V", charge_point_model="M"))
        else:
            await cp.call(
                call201.BootNotification(
                    charging_station={"vendor_name": "V", "model": "M"}, reason=reason
                )
            )

    async with charge_point(running, cid, version, cp_class=station) as cp:
        await boot(cp, "PowerUp")
        for _ in range(running.system.settings.reboot_loop_boots):
            r = await send(running, cid, "reset", {"type": "soft"})
            assert r.status_code == 200 and r.json()["status"] == "Accepted", r.text
            await boot(cp, "RemoteReset")
        # A boot nobody asked for counts (and, once counted, shows the ones before it were
        # handled): with the first boot, two, under the threshold.
        await boot(cp, "Watchdog")
        await eventually(lambda: _boot_signals(running, cid, 2))
    r = await running.api.get("/api/v1/work-orders", params={"charger_id": cid})
    assert r.json()["items"] == [], "an operator's resets are no reboot loop"


async def _boot_signals(running: Running, charger_id: str, count: int) -> bool:
    async with running.system.db.engine.connect() as conn:
        found = (
            await conn.execute(
                select(func.count())
                .select_from(SIGNALS)
                .where(SIGNALS.c.charger_id == charger_id, SIGNALS.c.kind == "boot")
            )
        ).scalar_one()
    return bool(found == count)


# ------------------------------------------------------------------ long-running operations


def statuses(logged: dict[str, Any]) -> list[str]:
    return [p["status"] for p in logged["progress"]]


async def test_ocpp16_firmware_and_diagnostics_progress(running: Running) -> None:
    cid = "CP-FW-16"
    await register(running.api, cid)
    async with charge_point(running, cid, "1.6", cp_class=Station16) as cp:
        fw = await send(running, cid, "update-firmware", {"location": "https://fw.example.com/a"})
        diag = await send(running, cid, "get-diagnostics", {"location": "https://logs.example.com"})
        assert fw.status_code == 200 and diag.status_code == 200
        for status in ("Downloading", "Downloading", "Downloaded", "Installing", "Installed"):
            await cp.call(call16.FirmwareStatusNotification(status=status))
        await cp.call(call16.DiagnosticsStatusNotification(status="Uploading"))
        await cp.call(call16.DiagnosticsStatusNotification(status="Uploaded"))
        # Idle after the update (e.g. on a TriggerMessage) is no progress of any command.
        await cp.call(call16.FirmwareStatusNotification(status="Idle"))

    firmware = await record(running, fw.json()["command_id"])
    assert statuses(firmware) == ["Downloading", "Downloaded", "Installing", "Installed"]
    assert firmware["progress_status"] == "Installed"
    assert firmware["progress_at"] is not None
    diagnostics = await record(running, diag.json()["command_id"])
    assert statuses(diagnostics) == ["Uploading", "Uploaded"]
    assert diagnostics["response"] == {"file_name": "diag-0001.zip"}


class DroppingFirmware16(Station16):
    """A 1.6 charge point that takes an UpdateFirmware and drops its connection instead of
    answering (e.g. it restarts its modem to download)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.update_received = asyncio.Event()

    @on(Action16.update_firmware)
    async def on_update_firmware(self, **kw: Any) -> result16.UpdateFirmware:
        self.got("UpdateFirmware", kw)
        self.update_received.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_progress_of_a_command_sent_before_the_connection_dropped(
    running: Running,
) -> None:
    cid = "CP-FW-DROP"
    await register(running.api, cid)
    async with charge_point(running, cid, "1.6", cp_class=DroppingFirmware16) as cp:
        pending = asyncio.create_task(
            send(running, cid, "update-firmware", {"location": "https://fw.example.com/a"})
        )
        await eventually(lambda: _is_set(cp.cp.update_received))
    r = await asyncio.wait_for(pending, 30)
    assert r.status_code == 409, r.text
    assert r.json()["reply"]["sent_at"] is not None  # it reached the charger
    async with charge_point(running, cid, "1.6", cp_class=Station16) as cp:
        await cp.call(call16.FirmwareStatusNotification(status="Downloading"))
    assert statuses(await record(running, r.json()["command_id"])) == ["Downloading"]


async def test_ocpp201_progress_follows_the_request_id(running: Running) -> None:
    cid = "CP-FW-201"
    await register(running.api, cid)
    async with charge_point(running, cid, "2.0.1", cp_class=Station201) as cp:
        replies = []
        for name, body in (
            ("update-firmware", {"location": "https://fw.example.com/a"}),
            ("update-firmware", {"location": "https://fw.example.com/b"}),
            ("get-diagnostics", {"location": "https://logs.example.com"}),
            ("get-base-report", {}),
        ):
            r = await send(running, cid, name, body)
            assert r.status_code == 200, r.text
            replies.append(await record(running, r.json()["command_id"]))
        fw_a, fw_b, log, report = replies
        assert len({r["request_id"] for r in replies}) == 4

        for status in ("Downloading", "Downloaded", "Installed"):
            await cp.call(
                call201.FirmwareStatusNotification(status=status, request_id=fw_a["request_id"])
            )
        await cp.call(call201.FirmwareStatusNotification(status="DownloadFailed", request_id=999))
        await cp.call(
            call201.LogStatusNotification(status="Uploading", request_id=log["request_id"])
        )
        await cp.call(
            call201.LogStatusNotification(status="Uploaded", request_id=log["request_id"])
        )
        for seq_no, tbc in ((0, True), (1, True), (2, False)):
            await cp.call(
                call201.NotifyReport(
                    request_id=report["request_id"],
                    generated_at="2026-11-27T10:00:00Z",
                    seq_no=seq_no,
                    tbc=tbc,
                )
            )

    assert statuses(await record(running, fw_a["command_id"])) == [
        "Downloading",
        "Downloaded",
        "Installed",
    ]
    assert statuses(await record(running, fw_b["command_id"])) == []
    assert statuses(await record(running, log["command_id"])) == ["Uploading", "Uploaded"]
    finished = await record(running, report["command_id"])
    assert statuses(finished) == ["Reporting", "Reported"]
    assert finished["progress_status"] == "Reported"


# ------------------------------------------------------------------ who may send


async def test_roles_for_commands(running: Running) -> None:
    cid, other = "CP-ROLES", "CP-ROLES-2"
    await register(running.api, cid)
    await register(running.api, other)
    db = running.system.db
    tokens = {
        role: await create_token(db, name, role)
        for name, role in (("vera", "viewer"), ("tom", "technician"), ("dana", "dispatcher"))
    }

    def auth(role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens[role]}"}

    async with charge_point(running, cid, "1.6", cp_class=Station16) as cp:
        r = await send(running, cid, "reset", headers={"Authorization": ""})
        assert r.status_code == 401
        r = await send(running, cid, "reset", headers=auth("viewer"))
        assert r.status_code == 403
        # Roles are checked before the body: a viewer learns nothing from a bad body.
        r = await send(running, cid, "reset", {"type": "medium"}, headers=auth("viewer"))
        assert r.status_code == 403
        r = await send(running, cid, "reset", headers=auth("technician"))
        assert r.status_code == 403, "technicians are denied until ticketing authorizes them"
        assert cp.cp.received == []

        orders = {}
        for charger_id in (cid, other):
            r = await running.api.post(
                "/api/v1/work-orders", json={"title": "check", "charger_id": charger_id}
            )
            assert r.status_code == 201, r.text
            orders[charger_id] = r.json()["id"]
        # A command is listed on the order it names: the order must be this charger's.
        for order_id in (orders[other], 999_999):
            r = await send(
                running, cid, "reset", headers=auth("dispatcher"), params={"order_id": order_id}
            )
            assert r.status_code == 422, r.text
            assert "query.order_id" in r.json()["detail"]
        assert cp.cp.received == []

        r = await send(
            running, cid, "reset", headers=auth("dispatcher"), params={"order_id": orders[cid]}
        )
        assert r.status_code == 200, r.text
        assert (await record(running, r.json()["command_id"]))["requested_by"] == "user:dana"

        async def tom_on_cid(principal: Principal, charger_id: str) -> bool:
            return principal.name == "tom" and charger_id == cid

        set_command_authorizer(running.system.app, tom_on_cid)
        r = await send(
            running, cid, "unlock-connector", {"connector": "1"}, headers=auth("technician")
        )
        assert r.status_code == 200, r.text
        r = await send(running, other, "reset", headers=auth("technician"))
        assert r.status_code == 403
        assert [a for a, _ in cp.cp.received] == ["Reset", "UnlockConnector"]

    # Reads: any role; the commands that served a work order.
    r = await running.api.get(
        "/api/v1/commands", params={"order_id": orders[cid]}, headers=auth("viewer")
    )
    assert r.status_code == 200
    [served] = r.json()["items"]
    assert served["name"] == "reset" and served["order_id"] == orders[cid]
    r = await running.api.get("/api/v1/commands", params={"order_id": orders[other]})
    assert r.json()["items"] == []
    r = await running.api.get(f"/api/v1/chargers/{cid}/commands", headers=auth("technician"))
    assert [c["name"] for c in r.json()["items"]] == ["unlock-connector", "reset"]
    assert (await running.api.get("/api/v1/commands/nope")).status_code == 404
    assert (await running.api.get("/api/v1/chargers/CP-NOPE/commands")).status_code == 404
    r = await running.api.get(f"/api/v1/chargers/{cid}/commands", headers={"Authorization": ""})
    assert r.status_code == 401
