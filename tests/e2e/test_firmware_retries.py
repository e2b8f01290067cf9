"""Firmware and log status notifications carry no timestamp: a charger's retry (new
message id, same content) is recognised as the same status as the last one of its kind,
and is not a second FirmwareStatusChanged."""

from __future__ import annotations

from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from tests.conftest import Running, charge_point, charger_events, register
from tests.e2e.test_commands import Station16, Station201, record, send, statuses


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


async def test_a_new_16_update_failing_as_the_last_one_did_is_its_own_event(
    running: Running,
) -> None:
    """A charger that cannot reach the firmware server reports DownloadFailed at once (no
    Downloading first). The operator's second update fails the same way: that status is
    the new update's, not a retry of the last one (its command sent in between)."""
    cid = "CP-FW-AGAIN"
    await register(running.api, cid)
    async with charge_point(running, cid, "1.6", cp_class=Station16) as cp:
        ids = []
        for _ in range(2):
            r = await send(running, cid, "update-firmware", {"location": "https://fw.example.com"})
            assert r.status_code == 200, r.text
            ids.append(r.json()["command_id"])
            await cp.call(call16.FirmwareStatusNotification(status="DownloadFailed"))
            await cp.call(call16.FirmwareStatusNotification(status="DownloadFailed"))  # retry

    assert await _statuses(running, cid) == [("firmware", "DownloadFailed", None)] * 2
    for command_id in ids:
        assert statuses(await record(running, command_id)) == ["DownloadFailed"]


async def test_a_new_201_update_after_a_reconnect_is_not_taken_for_a_retry(
    running: Running,
) -> None:
    """The last firmware status is read back at a reconnect without its requestId; a new
    update (new requestId) whose first status is that one is still its own event."""
    cid = "CP-FW-AGAIN2"
    await register(running.api, cid)
    async with charge_point(running, cid, "2.0.1", cp_class=Station201) as cp:
        r = await send(running, cid, "update-firmware", {"location": "https://fw.example.com"})
        first = (await record(running, r.json()["command_id"]))["request_id"]
        await cp.call(call201.FirmwareStatusNotification(status="DownloadFailed", request_id=first))
    async with charge_point(running, cid, "2.0.1", cp_class=Station201) as cp:
        r = await send(running, cid, "update-firmware", {"location": "https://fw.example.com"})
        second = (await record(running, r.json()["command_id"]))["request_id"]
        await cp.call(
            call201.FirmwareStatusNotification(status="DownloadFailed", request_id=second)
        )

    assert await _statuses(running, cid) == [
        ("firmware", "DownloadFailed", first),
        ("firmware", "DownloadFailed", second),
    ]
