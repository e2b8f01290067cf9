"""Firmware and log status notifications carry no timestamp: a charger's retry (new
message id, same content) is recognised as the same status as the last one of its kind,
and is not a second FirmwareStatusChanged."""

from __future__ import annotations

from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from tests.conftest import Running, charge_point, charger_events, register


async def _statuses(running: Running, cid: str) -> list[tuple[str, str, int | None]]:
    return [
        (e["payload"]["kind"], e["payload"]["status"], e["payload"]["request_id"])
        for e in await charger_events(running, cid, "FirmwareStatusChanged")
    ]


async def test_a_retried_16_firmware_status_is_one_event(running: Running) -> None:
    cid = "CP-FW-RETRY"
    await register(running.api, cid)
    async with charge_point(running, cid) as cp:
        await cp.call(call16.FirmwareStatusNotification(status="Downloading"))
        await cp.call(call16.FirmwareStatusNotification(status="Downloading"))
        await cp.call(call16.FirmwareStatusNotification(status="Installing"))
    # The answer to Installing was lost with the connection: the charger sends it again.
    async with charge_point(running, cid) as cp:
        await cp.call(call16.FirmwareStatusNotification(status="Installing"))
        await cp.call(call16.FirmwareStatusNotification(status="Installed"))
        await cp.call(call16.DiagnosticsStatusNotification(status="Uploading"))
        await cp.call(call16.DiagnosticsStatusNotification(status="Uploading"))
        await cp.call(call16.DiagnosticsStatusNotification(status="Uploaded"))

    assert await _statuses(running, cid) == [
        ("firmware", "Downloading", None),
        ("firmware", "Installing", None),
        ("firmware", "Installed", None),
        ("diagnostics", "Uploading", None),
        ("diagnostics", "Uploaded", None),
    ]


async def test_a_retried_201_firmware_status_is_one_event_per_request(running: Running) -> None:
    cid = "CP-FW-R201"
    await register(running.api, cid)
    async with charge_point(running, cid, "2.0.1") as cp:
        for _ in range(2):
            await cp.call(call201.FirmwareStatusNotification(status="Downloading", request_id=3))
        await cp.call(call201.FirmwareStatusNotification(status="DownloadFailed", request_id=3))
        # a new update, whose first status is the previous one's first
        await cp.call(call201.FirmwareStatusNotification(status="Downloading", request_id=4))
        for _ in range(2):
            await cp.call(call201.LogStatusNotification(status="Uploading", request_id=5))

    assert await _statuses(running, cid) == [
        ("firmware", "Downloading", 3),
        ("firmware", "DownloadFailed", 3),
        ("firmware", "Downloading", 4),
        ("log", "Uploading", 5),
    ]
