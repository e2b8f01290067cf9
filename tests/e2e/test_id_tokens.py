"""Id tokens are OCPP CiStrings: the API keeps one token per case-insensitive value and
refuses characters a charger could not send; a charger's Authorize matches up to case."""

from __future__ import annotations

import pytest
from ocpp.v16 import call
from ocpp.v201 import call as call201

from tests.conftest import Running, charge_point, register

PROBLEM = "application/problem+json"


@pytest.mark.parametrize("token", ["", "a b", "tag/1", "tag\t1", "tägg", "x" * 37, "tag\n"])
async def test_id_token_characters_are_restricted(running: Running, token: str) -> None:
    r = await running.api.post("/api/v1/id-tokens", json={"token": token})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith(PROBLEM)


async def test_id_tokens_are_case_insensitive(running: Running) -> None:
    await register(running.api, "CP-CI")
    r = await running.api.post("/api/v1/id-tokens", json={"token": "Tag-ci.1~"})
    assert r.status_code == 201, r.text

    r = await running.api.post("/api/v1/id-tokens", json={"token": "TAG-CI.1~"})
    assert r.status_code == 409, r.text
    r = await running.api.get("/api/v1/id-tokens/tag-ci.1~")
    assert r.status_code == 200 and r.json()["token"] == "Tag-ci.1~", r.text
    r = await running.api.patch("/api/v1/id-tokens/TAG-ci.1~", json={"group_id": "G1"})
    assert r.status_code == 200 and r.json()["group_id"] == "G1", r.text

    async with charge_point(running, "CP-CI") as cp:
        boot = await cp.call(
            call.BootNotification(charge_point_model="M1", charge_point_vendor="VendorX")
        )
        assert boot.status == "Accepted"
        known = await cp.call(call.Authorize(id_tag="TAG-CI.1~"))
        assert known.id_tag_info["status"] == "Accepted"
        assert known.id_tag_info.get("parent_id_tag") == "G1"
        unknown = await cp.call(call.Authorize(id_tag="TAG-CI.2~"))
        assert unknown.id_tag_info["status"] == "Invalid"

    r = await running.api.delete("/api/v1/id-tokens/TAG-CI.1~")
    assert r.status_code == 204, r.text


BOOT_201 = call201.BootNotification(
    charging_station={"model": "M2", "vendor_name": "VendorY"}, reason="PowerUp"
)


def _started(transaction_id: str, id_token: dict[str, str]) -> call201.TransactionEvent:
    return call201.TransactionEvent(
        event_type="Started",
        timestamp="2026-11-28T01:00:00Z",
        trigger_reason="CablePluggedIn",
        seq_no=0,
        transaction_info={"transaction_id": transaction_id},
        evse={"id": 1, "connector_id": 1},
        id_token=id_token,
    )


async def test_unknown_tokens_are_unknown_in_201_and_invalid_in_16(running: Running) -> None:
    """2.0.1 tells an unknown token (Unknown) from a known one that is not valid (Invalid);
    1.6 has only Invalid ("identifier is unknown"). Both answered Invalid."""
    await register(running.api, "CP-UNK-201")
    await register(running.api, "CP-UNK-16")
    r = await running.api.post("/api/v1/id-tokens", json={"token": "TAG-BAD", "status": "Invalid"})
    assert r.status_code == 201, r.text

    async with charge_point(running, "CP-UNK-201", "2.0.1") as cp:
        assert (await cp.call(BOOT_201)).status == "Accepted"
        unknown = {"id_token": "TAG-NOPE", "type": "ISO14443"}
        answer = await cp.call(call201.Authorize(id_token=unknown))
        assert answer.id_token_info == {"status": "Unknown"}
        started = await cp.call(_started("TX-UNK", unknown))
        assert started.id_token_info == {"status": "Unknown"}
        invalid = {"id_token": "TAG-BAD", "type": "ISO14443"}
        answer = await cp.call(call201.Authorize(id_token=invalid))
        assert answer.id_token_info == {"status": "Invalid"}

    async with charge_point(running, "CP-UNK-16") as cp:
        await cp.call(call.BootNotification(charge_point_model="M1", charge_point_vendor="V"))
        answer = await cp.call(call.Authorize(id_tag="TAG-NOPE"))
        assert answer.id_tag_info == {"status": "Invalid"}


async def test_a_201_transaction_without_authorization_is_accepted(running: Running) -> None:
    """A free-vend 2.0.1 start carries idToken type NoAuthorization with an empty idToken:
    nothing to check, so Accepted (it was Invalid, and a station with StopTxOnInvalidId
    would end the transaction). Also when the table accepts only known tokens."""
    await register(running.api, "CP-NOAUTH")
    async with charge_point(running, "CP-NOAUTH", "2.0.1") as cp:
        assert (await cp.call(BOOT_201)).status == "Accepted"
        free = {"id_token": "", "type": "NoAuthorization"}
        started = await cp.call(_started("TX-FREE", free))
        assert started.id_token_info == {"status": "Accepted"}
        answer = await cp.call(call201.Authorize(id_token=free))
        assert answer.id_token_info == {"status": "Accepted"}


async def test_201_tokens_match_on_their_type(running: Running) -> None:
    """A 2.0.1 IdToken is its idToken and its type: a token stored as ISO14443 is unknown
    as an eMAID (it was Accepted whatever type the station sent). A token stored without
    a type matches any type, and 1.6 idTags (no type) match a typed token."""
    await register(running.api, "CP-TYPE-201")
    await register(running.api, "CP-TYPE-16")
    for body in ({"token": "CARD-1", "type": "ISO14443"}, {"token": "ANY-1"}):
        r = await running.api.post("/api/v1/id-tokens", json=body)
        assert r.status_code == 201, r.text
    r = await running.api.get("/api/v1/id-tokens/any-1")
    assert r.json()["type"] is None, r.text

    async with charge_point(running, "CP-TYPE-201", "2.0.1") as cp:
        assert (await cp.call(BOOT_201)).status == "Accepted"

        async def status(token: str, type_: str) -> str:
            answer = await cp.call(call201.Authorize(id_token={"id_token": token, "type": type_}))
            return str(answer.id_token_info["status"])

        assert await status("card-1", "ISO14443") == "Accepted"
        assert await status("CARD-1", "eMAID") == "Unknown"
        started = await cp.call(_started("TX-TYPE", {"id_token": "CARD-1", "type": "KeyCode"}))
        assert started.id_token_info == {"status": "Unknown"}
        assert await status("ANY-1", "eMAID") == "Accepted"
        assert await status("ANY-1", "KeyCode") == "Accepted"

    # A type set later narrows the token; set back to null, it matches any type again.
    r = await running.api.patch("/api/v1/id-tokens/ANY-1", json={"type": "KeyCode"})
    assert r.status_code == 200 and r.json()["type"] == "KeyCode", r.text
    async with charge_point(running, "CP-TYPE-201", "2.0.1") as cp:
        assert (await cp.call(BOOT_201)).status == "Accepted"
        eMAID = await cp.call(call201.Authorize(id_token={"id_token": "ANY-1", "type": "eMAID"}))
        assert eMAID.id_token_info == {"status": "Unknown"}
    r = await running.api.patch("/api/v1/id-tokens/ANY-1", json={"type": None})
    assert r.status_code == 200 and r.json()["type"] is None, r.text

    async with charge_point(running, "CP-TYPE-16") as cp:
        await cp.call(call.BootNotification(charge_point_model="M1", charge_point_vendor="V"))
        answer = await cp.call(call.Authorize(id_tag="CARD-1"))
        assert answer.id_tag_info == {"status": "Accepted"}
