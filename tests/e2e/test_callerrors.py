"""Bad frames get the exact CALLERROR each OCPP-J version names, and never cost the
connection (1.6 and 2.0.1, raw WebSocket frames); oversized frames close only their own
connection with 1009; a flooding charger is throttled without slowing the others."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from csms.v16 import handlers as handlers16
from tests.conftest import PASSWORD, Running, SystemFactory, basic, eventually, register

VERSIONS = ["1.6", "2.0.1"]
SUBPROTOCOL = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1"}


class RawCharger:
    """A charger speaking raw OCPP-J frames over a real WebSocket."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, frame: str | bytes) -> None:
        await self.ws.send(frame)

    async def recv(self) -> list[Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout=10)
        message: list[Any] = orjson.loads(raw)
        return message

    async def exchange(self, frame: str) -> list[Any]:
        await self.send(frame)
        return await self.recv()

    async def heartbeat(self) -> list[Any]:
        message_id = f"hb-{uuid.uuid4().hex[:8]}"
        answer = await self.exchange(orjson.dumps([2, message_id, "Heartbeat", {}]).decode())
        assert answer[:2] == [3, message_id], answer
        assert answer[2]["currentTime"].endswith("Z")
        return answer


@contextlib.asynccontextmanager
async def raw_charger(running: Running, charger_id: str, version: str) -> AsyncIterator[RawCharger]:
    ws = await connect(
        running.ocpp_url + charger_id,
        subprotocols=[SUBPROTOCOL[version]],  # type: ignore[list-item]
        additional_headers={"Authorization": basic(charger_id, PASSWORD)},
        open_timeout=10,
        max_size=None,
    )
    assert ws.subprotocol == SUBPROTOCOL[version]
    try:
        yield RawCharger(ws)
    finally:
        await ws.close()


async def metric(running: Running, name: str, **labels: str) -> float:
    text = (await running.api.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


STATUS_16 = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
STATUS_201 = {
    "timestamp": "2026-11-27T10:00:00Z",
    "connectorStatus": "Available",
    "evseId": 1,
    "connectorId": 1,
}
STATUS = {"1.6": STATUS_16, "2.0.1": STATUS_201}
STATUS_FIELD = {"1.6": "status", "2.0.1": "connectorStatus"}


#: longer than the 36 characters OCPP-J allows, and than the raw log's message_id column
LONG_ID = "long-" + "x" * 75


def call(message_id: str, action: str, payload: Any) -> str:
    return orjson.dumps([2, message_id, action, payload]).decode()


def without(payload: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != key}


def bad_frames(version: str) -> list[tuple[str, str, str, str]]:
    """(case, raw frame, message id of the answer, expected 1.6 code / 2.0.1 code)."""
    status = STATUS[version]
    field = STATUS_FIELD[version]
    cases = [
        ("invalid-json", '[2, "x", "Heartbeat", {', "-1", "FormationViolation/RpcFrameworkError"),
        ("not-an-array", '{"action": "Heartbeat"}', "-1", "FormationViolation/RpcFrameworkError"),
        ("integer-id", '[2, 123, "Heartbeat", {}]', "-1", "FormationViolation/RpcFrameworkError"),
        (
            "id-too-long",
            call(LONG_ID, "Heartbeat", {}),
            LONG_ID,
            "FormationViolation/RpcFrameworkError",
        ),
        ("unknown-action", call("m-foo", "FooBar", {}), "m-foo", "NotImplemented/NotImplemented"),
        (
            "long-unknown-action",
            call("m-long-action", "Foo" * 30, {}),
            "m-long-action",
            "NotImplemented/NotImplemented",
        ),
        ("csms-only-action", call("m-reset", "Reset", {}), "m-reset", "NotSupported/NotSupported"),
        (
            "type-error",
            call("m-type", "StatusNotification", {**status, "connectorId": "x"}),
            "m-type",
            "TypeConstraintViolation/TypeConstraintViolation",
        ),
        (
            "missing-field",
            call("m-missing", "StatusNotification", without(status, field)),
            "m-missing",
            "OccurenceConstraintViolation/OccurrenceConstraintViolation",
        ),
        (
            "extra-property",
            call("m-extra", "StatusNotification", {**status, "surprise": 1}),
            "m-extra",
            "FormationViolation/FormatViolation",
        ),
        (
            "bad-enum",
            call("m-enum", "StatusNotification", {**status, field: "Sleeping"}),
            "m-enum",
            "PropertyConstraintViolation/PropertyConstraintViolation",
        ),
        (
            "payload-not-object",
            call("m-list", "Heartbeat", []),
            "m-list",
            "FormationViolation/FormatViolation",
        ),
        (
            "message-type-7",
            '[7, "m-seven", "Heartbeat", {}]',
            "m-seven",
            "ProtocolError/MessageTypeNotSupported",
        ),
    ]
    index = 0 if version == "1.6" else 1
    return [(name, raw, mid, codes.split("/")[index]) for name, raw, mid, codes in cases]


@pytest.mark.parametrize("version", VERSIONS)
async def test_bad_frames_get_the_right_callerror_and_the_connection_stays(
    running: Running, version: str
) -> None:
    charger_id = f"CP-ERR-{version.replace('.', '')}"
    await register(running.api, charger_id)
    cases = bad_frames(version)
    codes = {code for _, _, _, code in cases}
    before = {
        code: await metric(running, "chargeops_ocpp_callerrors_total", code=code) for code in codes
    }

    async with raw_charger(running, charger_id, version) as cp:
        await cp.heartbeat()
        for name, raw, message_id, code in cases:
            answer = await cp.exchange(raw)
            assert answer[0] == 4, (name, answer)
            assert answer[1] == message_id, (name, answer)
            assert answer[2] == code, (name, answer)
            assert isinstance(answer[3], str) and answer[3], (name, answer)
            assert isinstance(answer[4], dict), (name, answer)
            # The connection is still usable: the next valid CALL gets its CALLRESULT.
            await cp.heartbeat()
        # A valid StatusNotification after all of that is still accepted.
        assert await cp.exchange(call("m-ok", "StatusNotification", STATUS[version])) == [
            3,
            "m-ok",
            {},
        ]

    for code in codes:
        expected = sum(1 for _, _, _, c in cases if c == code)
        after = await metric(running, "chargeops_ocpp_callerrors_total", code=code)
        assert after - before[code] == expected, code

    # The raw message log holds every bad frame as received and our CALLERROR answers.
    async def logged() -> list[dict[str, Any]] | None:
        r = await running.api.get(f"/api/v1/chargers/{charger_id}/messages", params={"limit": 1000})
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        errors_out = [m for m in items if m["direction"] == "out" and m["message_type"] == 4]
        return items if len(errors_out) == len(cases) else None

    messages = await eventually(logged)
    received = [m["payload"] for m in messages if m["direction"] == "in"]
    for name, raw, _, _ in cases:
        assert raw in received, name
    sent_errors = [
        orjson.loads(m["payload"])
        for m in messages
        if m["direction"] == "out" and m["message_type"] == 4
    ]
    assert sorted((e[1], e[2]) for e in sent_errors) == sorted(
        (message_id, code) for _, _, message_id, code in cases
    )


async def test_not_supported_says_whether_the_action_is_unsupported_or_misdirected(
    running: Running,
) -> None:
    """A charging-station message this CSMS does not handle is 'not supported'; a CSMS
    message sent by a charger is named as such (both NotSupported, different texts)."""
    await register(running.api, "CP-ERR-NS")
    reservation = {"reservationId": 1, "reservationUpdateStatus": "Expired"}
    async with raw_charger(running, "CP-ERR-NS", "2.0.1") as cp:
        await cp.heartbeat()
        unsupported = await cp.exchange(call("m-rsu", "ReservationStatusUpdate", reservation))
        assert unsupported[:4] == [
            4,
            "m-rsu",
            "NotSupported",
            "ReservationStatusUpdate is not supported by this CSMS",
        ], unsupported
        misdirected = await cp.exchange(call("m-reset", "Reset", {"type": "Immediate"}))
        assert misdirected[:4] == [
            4,
            "m-reset",
            "NotSupported",
            "Reset is not a message a charge point sends to a CSMS",
        ], misdirected


async def test_oversized_frame_closes_only_that_connection(system_factory: SystemFactory) -> None:
    async with system_factory(max_frame_bytes=2048) as running:
        await register(running.api, "CP-BIG")
        await register(running.api, "CP-SMALL")
        oversized_before = await metric(
            running, "chargeops_ocpp_frames_limited_total", reason="oversized"
        )
        async with (
            raw_charger(running, "CP-BIG", "2.0.1") as big,
            raw_charger(running, "CP-SMALL", "1.6") as small,
        ):
            await big.heartbeat()
            await small.heartbeat()
            # Just under the limit is fine.
            fits = call("m-fits", "DataTransfer", {"vendorId": "V", "data": "x" * 1900})
            assert len(fits.encode()) <= 2048
            assert (await big.exchange(fits))[:2] == [3, "m-fits"]

            huge = call("m-huge", "DataTransfer", {"vendorId": "V", "data": "x" * 4000})
            await big.send(huge)
            with pytest.raises(ConnectionClosed) as closed:
                await big.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1009

            # The other charger never noticed.
            await small.heartbeat()

            async def counted() -> bool:
                now = await metric(
                    running, "chargeops_ocpp_frames_limited_total", reason="oversized"
                )
                return now == oversized_before + 1

            await eventually(counted)

        # The refused charger can come back.
        async with raw_charger(running, "CP-BIG", "2.0.1") as again:
            await again.heartbeat()


async def test_flooding_charger_is_throttled_others_are_served(
    system_factory: SystemFactory,
) -> None:
    flood_size = 20
    async with system_factory(frames_per_second=20, frame_burst=5) as running:
        await register(running.api, "CP-FLOOD")
        await register(running.api, "CP-CALM")
        throttled_before = await metric(
            running, "chargeops_ocpp_frames_limited_total", reason="throttled"
        )
        async with (
            raw_charger(running, "CP-FLOOD", "1.6") as flood,
            raw_charger(running, "CP-CALM", "2.0.1") as calm,
        ):
            ids = [f"f-{i}" for i in range(flood_size)]
            for message_id in ids:
                await flood.send(call(message_id, "Heartbeat", {}))

            async def throttled() -> bool:
                now = await metric(
                    running, "chargeops_ocpp_frames_limited_total", reason="throttled"
                )
                return now > throttled_before

            await eventually(throttled)
            # While the flood is being worked off, the other charger is answered: when its
            # answer arrives, the flooding charger's answers are not all out yet.
            await calm.heartbeat()
            r = await running.api.get(
                "/api/v1/chargers/CP-FLOOD/messages", params={"limit": 1000, "action": "Heartbeat"}
            )
            flood_answered = [m for m in r.json()["items"] if m["direction"] == "out"]
            assert len(flood_answered) < flood_size
            answered: list[list[Any]] = []
            while len(answered) < flood_size:
                answered.append(await flood.recv())

        # Throttled, not dropped: every flooded CALL was answered, in order.
        assert [a[:2] for a in answered] == [[3, message_id] for message_id in ids]
        throttled_after = await metric(
            running, "chargeops_ocpp_frames_limited_total", reason="throttled"
        )
        assert throttled_after > throttled_before


async def test_an_invalid_response_of_ours_is_an_internal_error(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A response that breaks the schema is the CSMS's fault: InternalError, not a
    constraint violation the charger would take as its own."""
    monkeypatch.setattr(
        handlers16, "_id_tag_info", lambda *_, **__: {"status": "Accepted", "parentIdTag": "x" * 21}
    )
    charger_id = "CP-ERR-RESPONSE"
    await register(running.api, charger_id)
    async with raw_charger(running, charger_id, "1.6") as cp:
        answer = await cp.exchange(call("m-auth", "Authorize", {"idTag": "TAG-1"}))
        assert answer[:3] == [4, "m-auth", "InternalError"], answer
        await cp.heartbeat()


@pytest.mark.parametrize("version", VERSIONS)
async def test_answers_to_no_outstanding_call_are_dropped(running: Running, version: str) -> None:
    """CALLRESULT/CALLERROR frames answering nothing we sent are logged, counted and dropped:
    they never pile up in the library's response queue, and the next command works."""
    charger_id = f"CP-STALE-{version.replace('.', '')}"
    await register(running.api, charger_id)
    stale = 300
    before = await metric(running, "chargeops_ocpp_stale_responses_total")
    async with raw_charger(running, charger_id, version) as cp:
        for i in range(stale - 1):
            await cp.send(orjson.dumps([3, f"stale-{i}", {}]).decode())
        await cp.send(orjson.dumps([4, "stale-err", "InternalError", "late", {}]).decode())
        await cp.heartbeat()  # frames are handled in order: every stale one was seen
        session = running.system.csms.presence.sessions[charger_id]
        assert session._response_queue.qsize() == 0
        assert await metric(running, "chargeops_ocpp_stale_responses_total") == before + stale

        command = asyncio.create_task(
            running.api.post(f"/api/v1/chargers/{charger_id}/commands/clear-cache", json={})
        )
        sent = await cp.recv()
        assert sent[0] == 2 and sent[2] == "ClearCache", sent
        # A stale frame while the command waits is still dropped; the real answer is taken.
        await cp.send(orjson.dumps([3, "stale-late", {}]).decode())
        await cp.send(orjson.dumps([3, sent[1], {"status": "Accepted"}]).decode())
        r = await command
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "Accepted"
        # A second answer to the same CALL answers nothing outstanding any more.
        await cp.send(orjson.dumps([3, sent[1], {"status": "Accepted"}]).decode())
        await cp.heartbeat()
        assert session._response_queue.qsize() == 0
        assert await metric(running, "chargeops_ocpp_stale_responses_total") == before + stale + 2

    # Dropped, but kept in the raw log.
    async def logged() -> bool:
        r = await running.api.get(f"/api/v1/chargers/{charger_id}/messages", params={"limit": 1000})
        ids = {m["message_id"] for m in r.json()["items"] if m["direction"] == "in"}
        return {"stale-0", "stale-err", "stale-late"} <= ids

    await eventually(logged)


BOOT = {
    "1.6": {"chargePointVendor": "V", "chargePointModel": "M"},
    "2.0.1": {"chargingStation": {"vendorName": "V", "model": "M"}, "reason": "PowerUp"},
}
FAULTED_201 = {**STATUS_201, "connectorStatus": "Faulted"}
TX_201 = {
    "eventType": "Started",
    "timestamp": "2026-11-27T10:00:00Z",
    "triggerReason": "CablePluggedIn",
    "seqNo": 0,
    "transactionInfo": {"transactionId": "TX-PENDING"},
    "evse": {"id": 1, "connectorId": 1},
}


async def test_a_pending_201_station_gets_security_error_except_for_boot_and_triggered(
    running: Running,
) -> None:
    """2.0.1 B02.FR.09: until a BootNotification is Accepted, anything else the station
    sends is answered with SecurityError and changes nothing, except what we triggered."""
    cid = "CP-PENDING-201"
    await register(running.api, cid)
    r = await running.api.patch(f"/api/v1/chargers/{cid}", json={"registration_status": "pending"})
    assert r.status_code == 200, r.text
    async with raw_charger(running, cid, "2.0.1") as cp:
        boot = await cp.exchange(call("b-1", "BootNotification", BOOT["2.0.1"]))
        assert boot[:2] == [3, "b-1"] and boot[2]["status"] == "Pending", boot
        for message_id, action, payload in (
            ("p-status", "StatusNotification", FAULTED_201),
            ("p-tx", "TransactionEvent", TX_201),
            ("p-hb", "Heartbeat", {}),
        ):
            answer = await cp.exchange(call(message_id, action, payload))
            assert answer[:3] == [4, message_id, "SecurityError"], answer

        # A message we asked for with TriggerMessage is handled while pending.
        command = asyncio.create_task(
            running.api.post(
                f"/api/v1/chargers/{cid}/commands/trigger-message",
                json={"message": "StatusNotification", "connector": "1"},
            )
        )
        trigger = await cp.recv()
        assert trigger[2] == "TriggerMessage", trigger
        await cp.send(orjson.dumps([3, trigger[1], {"status": "Accepted"}]).decode())
        assert (await command).status_code == 200
        assert await cp.exchange(call("t-status", "StatusNotification", STATUS_201)) == [
            3,
            "t-status",
            {},
        ]

        # Accepted by the registry, then by the next BootNotification: served again.
        r = await running.api.patch(
            f"/api/v1/chargers/{cid}", json={"registration_status": "accepted"}
        )
        assert r.status_code == 200, r.text
        answer = await cp.exchange(call("hb-early", "Heartbeat", {}))
        assert answer[:3] == [4, "hb-early", "SecurityError"], answer
        boot = await cp.exchange(call("b-2", "BootNotification", BOOT["2.0.1"]))
        assert boot[2]["status"] == "Accepted", boot
        await cp.heartbeat()

    # The refused messages raised no fault and started no transaction.
    r = await running.api.get(f"/api/v1/chargers/{cid}/events", params={"limit": 1000})
    types = {e["type"] for e in r.json()["items"]}
    assert not types & {"FaultRaised", "TransactionStarted"}, types


async def test_a_pending_16_charge_point_is_still_served(running: Running) -> None:
    """OCPP 1.6 names no CALLERROR for a Central System receiving requests from a pending
    charge point: its messages are handled as before (decision in csms/v201/handlers.py)."""
    cid = "CP-PENDING-16"
    await register(running.api, cid)
    r = await running.api.patch(f"/api/v1/chargers/{cid}", json={"registration_status": "pending"})
    assert r.status_code == 200, r.text
    async with raw_charger(running, cid, "1.6") as cp:
        boot = await cp.exchange(call("b-1", "BootNotification", BOOT["1.6"]))
        assert boot[2]["status"] == "Pending", boot
        await cp.heartbeat()
