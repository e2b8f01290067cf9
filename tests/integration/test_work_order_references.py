"""A work order opened by hand names rows that exist: an unknown charger or site, or a
charger at another site, is a 422 naming the field (as a technician's unknown team is),
and nothing is created; so is a connector without a charger."""

from __future__ import annotations

from typing import Any

from tests.conftest import Running, register

WO = "/api/v1/work-orders"


async def _refused(running: Running, body: dict[str, Any], field: str, words: str) -> None:
    r = await running.api.post(WO, json={"title": "check", **body})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["field"] == field, problem
    assert words in problem["detail"], problem


async def test_unknown_charger_and_site_are_refused(running: Running) -> None:
    await register(running.api, "CP-REF")
    for site in ("site-a", "site-b"):
        r = await running.api.post("/api/v1/sites", json={"id": site, "name": site})
        assert r.status_code == 201, r.text
    r = await running.api.put("/api/v1/sites/site-a/chargers/CP-REF")
    assert r.status_code == 200, r.text

    await _refused(running, {"charger_id": "CP-NOBODY"}, "charger_id", "'CP-NOBODY'")
    await _refused(running, {"site_id": "nowhere"}, "site_id", "'nowhere'")
    await _refused(
        running, {"charger_id": "CP-REF", "site_id": "site-b"}, "site_id", "at site 'site-a'"
    )
    await _refused(running, {"site_id": "site-a", "connector": "1"}, "connector", "charger_id")
    assert (await running.api.get(WO)).json()["total"] == 0

    for body in (
        {"charger_id": "CP-REF"},
        {"site_id": "site-b"},
        {"charger_id": "CP-REF", "site_id": "site-a"},
    ):
        r = await running.api.post(WO, json={"title": "check", **body})
        assert r.status_code == 201, r.text
        assert r.json()["site_id"] == body.get("site_id", "site-a")


async def test_a_site_with_open_orders_cannot_be_deleted(running: Running) -> None:
    """Like a site with chargers (409), a site with open work orders is not deleted: they
    would name a site that no longer exists and lose its dispatch coverage."""
    r = await running.api.post("/api/v1/sites", json={"id": "site-del", "name": "Del"})
    assert r.status_code == 201, r.text
    r = await running.api.post(WO, json={"title": "dark", "site_id": "site-del"})
    assert r.status_code == 201, r.text
    order = r.json()["id"]
    r = await running.api.delete("/api/v1/sites/site-del")
    assert r.status_code == 409, r.text
    assert "1 open work order" in r.json()["detail"]
    r = await running.api.post(
        f"{WO}/{order}/transitions", json={"to": "cancelled", "reason": "duplicate"}
    )
    assert r.status_code == 200, r.text
    assert (await running.api.delete("/api/v1/sites/site-del")).status_code == 204


async def test_a_charger_with_open_orders_cannot_be_deleted(running: Running) -> None:
    """The registry (csms) asks ticketing before deleting a charger: with open work orders
    it is a 409 naming them (it was a 204 that left the orders naming a charger nobody
    could reach); a charger without any, or whose orders are closed, is deleted."""
    await register(running.api, "CP-DEL")
    await register(running.api, "CP-FREE")
    r = await running.api.post(WO, json={"title": "broken", "charger_id": "CP-DEL"})
    assert r.status_code == 201, r.text
    order = r.json()["id"]

    r = await running.api.delete("/api/v1/chargers/CP-DEL")
    assert r.status_code == 409, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "1 open work order" in r.json()["detail"]
    assert (await running.api.get("/api/v1/chargers/CP-DEL")).status_code == 200
    assert (await running.api.delete("/api/v1/chargers/CP-FREE")).status_code == 204
    assert (await running.api.delete("/api/v1/chargers/CP-NOBODY")).status_code == 404

    r = await running.api.post(
        f"{WO}/{order}/transitions", json={"to": "cancelled", "reason": "decommissioned"}
    )
    assert r.status_code == 200, r.text
    assert (await running.api.delete("/api/v1/chargers/CP-DEL")).status_code == 204
