"""Id tokens are OCPP CiStrings: the API keeps one token per case-insensitive value and
refuses characters a charger could not send; a charger's Authorize matches up to case."""

from __future__ import annotations

import pytest
from ocpp.v16 import call

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
