"""BootNotification answers what the registry says about the station, at the time it boots."""

from __future__ import annotations

import asyncio

import pytest
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import PASSWORD, Running, SystemFactory, charge_point, eventually, register


@pytest.mark.parametrize("status", ["accepted", "pending", "rejected"])
async def test_boot_answer_follows_registration_status(running: Running, status: str) -> None:
    await register(running.api, "CP-REG-16")
    await register(running.api, "CP-REG-201")
    for charger_id in ("CP-REG-16", "CP-REG-201"):
        r = await running.api.patch(
            f"/api/v1/chargers/{charger_id}", json={"registration_status": status}
        )
        assert r.status_code == 200, r.text
    async with charge_point(running, "CP-REG-16") as cp:
        boot = await cp.call(
            call16.BootNotification(charge_point_model="M", charge_point_vendor="V")
        )
        assert boot.status == status.capitalize()
    async with charge_point(running, "CP-REG-201", "2.0.1") as cp:
        boot = await cp.call(
            call201.BootNotification(
                charging_station={"model": "M", "vendor_name": "V"}, reason="PowerUp"
            )
        )
        assert boot.status == status.capitalize()


async def test_bad_registration_status_is_refused(running: Running) -> None:
    await register(running.api, "CP-REG-X")
    r = await running.api.patch("/api/v1/chargers/CP-REG-X", json={"registration_status": "ok"})
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "registration_status" in r.json()["detail"]


async def test_accepting_a_charger_without_credentials_must_be_explicit(
    system_factory: SystemFactory,
) -> None:
    async with system_factory(allow_unknown_chargers=True) as running:
        # An unknown station with no credentials is commissioned as pending, profile 0.
        async with connect(
            running.ocpp_url + "CP-NOAUTH",
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
        ) as ws:
            await ws.send(
                '[2,"1","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]'
            )
            assert '"Pending"' in await ws.recv()
        body = (await running.api.get("/api/v1/chargers/CP-NOAUTH")).json()
        assert (body["registration_status"], body["security_profile"]) == ("pending", 0)

        refused = await running.api.patch(
            "/api/v1/chargers/CP-NOAUTH", json={"registration_status": "accepted"}
        )
        assert refused.status_code == 422
        assert "no credentials" in refused.json()["detail"]
        body = (await running.api.get("/api/v1/chargers/CP-NOAUTH")).json()
        assert body["registration_status"] == "pending"

        with_password = await running.api.patch(
            "/api/v1/chargers/CP-NOAUTH",
            json={
                "registration_status": "accepted",
                "security_profile": 1,
                "password": PASSWORD,
            },
        )
        assert with_password.status_code == 200, with_password.text
        assert with_password.json()["security_profile"] == 1


async def test_a_connected_charger_cannot_be_deleted_until_it_has_disconnected(
    running: Running,
) -> None:
    await register(running.api, "CP-DEL")
    async with charge_point(running, "CP-DEL") as cp:
        await cp.call(call16.Heartbeat())
        r = await running.api.delete("/api/v1/chargers/CP-DEL")
        assert r.status_code == 409, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "connected" in r.json()["detail"]
        # Still registered, still served.
        assert (await running.api.get("/api/v1/chargers/CP-DEL")).status_code == 200
        await cp.call(call16.Heartbeat())

    async def deleted() -> bool:
        return (await running.api.delete("/api/v1/chargers/CP-DEL")).status_code == 204

    await eventually(deleted)
    assert (await running.api.get("/api/v1/chargers/CP-DEL")).status_code == 404


async def test_disabling_a_connected_charger_closes_its_connection(running: Running) -> None:
    await register(running.api, "CP-OFF")
    async with charge_point(running, "CP-OFF") as cp:
        await cp.call(call16.Heartbeat())
        r = await running.api.patch("/api/v1/chargers/CP-OFF", json={"enabled": False})
        assert r.status_code == 200, r.text
        # Closed by the server within its registry check interval (bounded wait).
        await asyncio.wait_for(cp.ws.wait_closed(), 60)
        assert cp.ws.close_code == 1008
        assert cp.ws.close_reason == "charger disabled"
    # And it cannot come back while disabled.
    with pytest.raises(InvalidStatus):
        async with charge_point(running, "CP-OFF"):
            pass


NEW_PASSWORD = "n3w-secret-password-4567"


async def test_changing_a_connected_chargers_password_closes_its_connection(
    running: Running,
) -> None:
    """The old password may be what leaked: a session it opened must not outlive it."""
    await register(running.api, "CP-PWD")
    await register(running.api, "CP-PWD-KEEP")
    async with (
        charge_point(running, "CP-PWD") as cp,
        charge_point(running, "CP-PWD-KEEP") as keep,
    ):
        await cp.call(call16.Heartbeat())
        # A change that does not touch credentials ends nothing (checked below: the
        # password change's close comes later than this one's check would).
        r = await running.api.patch("/api/v1/chargers/CP-PWD-KEEP", json={"notes": "moved"})
        assert r.status_code == 200, r.text
        r = await running.api.patch("/api/v1/chargers/CP-PWD", json={"password": NEW_PASSWORD})
        assert r.status_code == 200, r.text
        await asyncio.wait_for(cp.ws.wait_closed(), 60)
        assert (cp.ws.close_code, cp.ws.close_reason) == (1008, "password changed")
        await keep.call(call16.Heartbeat())
        assert keep.ws.close_code is None
    with pytest.raises(InvalidStatus):
        async with charge_point(running, "CP-PWD"):
            pass
    async with charge_point(running, "CP-PWD", password=NEW_PASSWORD) as cp:
        await cp.call(call16.Heartbeat())


async def test_changing_a_connected_chargers_security_profile_closes_its_connection(
    running: Running,
) -> None:
    await register(running.api, "CP-PROF")
    async with charge_point(running, "CP-PROF") as cp:
        await cp.call(call16.Heartbeat())
        r = await running.api.patch("/api/v1/chargers/CP-PROF", json={"security_profile": 2})
        assert r.status_code == 200, r.text
        await asyncio.wait_for(cp.ws.wait_closed(), 60)
        assert (cp.ws.close_code, cp.ws.close_reason) == (1008, "security profile changed")
