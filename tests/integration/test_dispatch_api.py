"""Technicians, teams and sites over HTTP: CRUD, their refusals, and who may write."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select

from services.api_auth import create_token
from services.db import table_of
from tests.conftest import Running
from tests.work_order_helpers import order_row
from ticketing.api import sites, teams, technicians
from ticketing.tables import ChargerAsset, WorkOrder

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def api(running: Running) -> httpx.AsyncClient:
    # until mounted in ticketing/api: include the routers the app does not route yet
    app = running.system.app
    routed = {getattr(route, "path", None) for route in app.routes}
    for module in (technicians, teams, sites):
        if f"/api/v1{module.router.prefix}" not in routed:
            app.include_router(module.router, prefix="/api/v1")
    return running.api


async def created(api: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.post(path, json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    return body


async def add_open_order(running: Running, assignee_id: int, state: str = "accepted") -> None:
    async with running.system.db.engine.begin() as conn:
        await conn.execute(
            insert(table_of(WorkOrder)).values(order_row(assignee_id, state, at=NOW))
        )


async def test_teams_crud(api: httpx.AsyncClient) -> None:
    team = await created(api, "/api/v1/teams", {"name": "Volt Services", "contract_type": "vendor"})
    assert team["member_ids"] == [] and team["escalation_contact"] is None
    problem(await api.post("/api/v1/teams", json={"name": "Volt Services"}), 409)
    problem(await api.post("/api/v1/teams", json={"name": "x", "contract_type": "friend"}), 422)
    own = await created(api, "/api/v1/teams", {"name": "Own crew"})
    assert own["contract_type"] == "own"

    renamed = await api.patch(
        f"/api/v1/teams/{team['id']}",
        json={"name": "Volt", "escalation_contact": "ops@volt.example"},
    )
    assert renamed.status_code == 200, renamed.text
    assert (renamed.json()["name"], renamed.json()["contract_type"]) == ("Volt", "vendor")
    problem(await api.patch(f"/api/v1/teams/{team['id']}", json={"name": "Own crew"}), 409)
    problem(await api.patch(f"/api/v1/teams/{team['id']}", json={"name": None}), 422)
    problem(await api.patch("/api/v1/teams/999", json={"name": "nobody"}), 404)

    listed = await api.get("/api/v1/teams")
    assert [t["name"] for t in listed.json()] == ["Own crew", "Volt"]

    member = await created(api, "/api/v1/technicians", {"name": "Ana", "team_id": team["id"]})
    detail = await api.get(f"/api/v1/teams/{team['id']}")
    assert detail.json()["member_ids"] == [member["id"]]
    conflict = problem(await api.delete(f"/api/v1/teams/{team['id']}"), 409)
    assert conflict["member_ids"] == [member["id"]]

    moved = await api.patch(f"/api/v1/technicians/{member['id']}", json={"team_id": None})
    assert moved.json()["team_id"] is None
    assert (await api.delete(f"/api/v1/teams/{team['id']}")).status_code == 204
    problem(await api.get(f"/api/v1/teams/{team['id']}"), 404)
    problem(await api.delete(f"/api/v1/teams/{team['id']}"), 404)


async def test_technicians_crud(api: httpx.AsyncClient, running: Running) -> None:
    team = await created(api, "/api/v1/teams", {"name": "Field"})
    ana = await created(
        api,
        "/api/v1/technicians",
        {
            "name": "Ana",
            "contact": "+49 30 1234",
            "skills": ["dc-power", "ac-power", "dc-power"],
            "regions": ["north", "*"],
            "sites": ["depot-1"],
            "team_id": team["id"],
            "max_concurrent": 2,
            "user_name": "ana",
        },
    )
    assert ana["skills"] == ["dc-power", "ac-power"]
    assert (ana["on_duty"], ana["open_orders"], ana["regions"]) == (True, 0, ["north", "*"])
    bo = await created(api, "/api/v1/technicians", {"name": "Bo", "skills": ["ac-power"]})
    assert (bo["max_concurrent"], bo["team_id"], bo["user_name"]) == (5, None, None)

    problem(await api.post("/api/v1/technicians", json={"name": "Cy", "user_name": "ana"}), 409)
    problem(await api.post("/api/v1/technicians", json={"name": "Cy", "team_id": 999}), 422)
    for bad in (
        {"name": "Cy", "skills": ["DC Power"]},
        {"name": "Cy", "sites": ["*"]},
        {"name": "Cy", "max_concurrent": 0},
        {"name": "Cy", "max_concurrent": 101},
        {"name": "Cy", "contact": "x" * 256},
        {"name": ""},
        {"name": "Cy", "rank": "boss"},
    ):
        problem(await api.post("/api/v1/technicians", json=bad), 422)

    off = await api.patch(f"/api/v1/technicians/{ana['id']}", json={"on_duty": False})
    assert off.status_code == 200, off.text
    assert (off.json()["on_duty"], off.json()["skills"]) == (False, ["dc-power", "ac-power"])
    problem(await api.patch(f"/api/v1/technicians/{bo['id']}", json={"user_name": "ana"}), 409)
    problem(await api.patch(f"/api/v1/technicians/{bo['id']}", json={"skills": None}), 422)
    problem(await api.patch(f"/api/v1/technicians/{bo['id']}", json={"team_id": 999}), 422)
    problem(await api.patch("/api/v1/technicians/999", json={"on_duty": True}), 404)

    async def names(**params: Any) -> list[str]:
        response = await api.get("/api/v1/technicians", params=params)
        assert response.status_code == 200, response.text
        return [t["name"] for t in response.json()]

    assert await names() == ["Ana", "Bo"]
    assert await names(on_duty="true") == ["Bo"]
    assert await names(team_id=team["id"]) == ["Ana"]
    assert await names(skill="dc-power") == ["Ana"]
    assert await names(skill="ac-power", limit=1, offset=1) == ["Bo"]

    await add_open_order(running, ana["id"], "on_site")
    await add_open_order(running, ana["id"], "closed")
    fetched = await api.get(f"/api/v1/technicians/{ana['id']}")
    assert fetched.json()["open_orders"] == 1
    problem(await api.delete(f"/api/v1/technicians/{ana['id']}"), 409)
    assert (await api.delete(f"/api/v1/technicians/{bo['id']}")).status_code == 204
    problem(await api.get(f"/api/v1/technicians/{bo['id']}"), 404)
    problem(await api.delete(f"/api/v1/technicians/{bo['id']}"), 404)


async def test_sites_and_chargers(api: httpx.AsyncClient, running: Running) -> None:
    body = {"id": "depot-1", "name": "Depot 1", "region": "north", "timezone": "Europe/Berlin"}
    site = await created(api, "/api/v1/sites", body)
    assert (site["charger_ids"], site["address"]) == ([], None)
    problem(await api.post("/api/v1/sites", json=body), 409)
    for bad in (
        {**body, "id": "Depot 2"},
        {**body, "id": "d" * 65},
        {**body, "id": "depot-2", "timezone": "Mars/Olympus"},
        {**body, "id": "depot-2", "timezone": "../etc/passwd"},
        {**body, "id": "depot-2", "region": "*"},
    ):
        problem(await api.post("/api/v1/sites", json=bad), 422)
    plain = await created(api, "/api/v1/sites", {"id": "depot-2", "name": "Depot 2"})
    assert (plain["timezone"], plain["region"]) == ("UTC", None)

    patched = await api.patch("/api/v1/sites/depot-2", json={"region": "south", "address": "Hof 1"})
    assert (patched.json()["region"], patched.json()["address"]) == ("south", "Hof 1")
    problem(await api.patch("/api/v1/sites/depot-2", json={"timezone": "Nowhere/Land"}), 422)
    problem(await api.patch("/api/v1/sites/depot-9", json={"name": "x"}), 404)
    listed = await api.get("/api/v1/sites", params={"region": "south"})
    assert [s["id"] for s in listed.json()] == ["depot-2"]

    # a charger the event projection already knows keeps what it knows
    chargers = table_of(ChargerAsset)
    async with running.system.db.engine.begin() as conn:
        await conn.execute(
            insert(chargers).values(charger_id="CP-2", vendor="Acme", online=True, updated_at=NOW)
        )
    for charger_id in ("CP-1", "CP-2"):
        placed = await api.put(f"/api/v1/sites/depot-1/chargers/{charger_id}")
        assert placed.status_code == 200, placed.text
        assert placed.json() == {"charger_id": charger_id, "site_id": "depot-1"}
    async with running.system.db.engine.connect() as conn:
        rows = {
            r.charger_id: r
            for r in await conn.execute(select(chargers).order_by(chargers.c.charger_id))
        }
    assert (rows["CP-1"].online, rows["CP-1"].vendor, rows["CP-1"].site_id) == (
        False,
        None,
        "depot-1",
    )
    assert (rows["CP-2"].online, rows["CP-2"].vendor, rows["CP-2"].updated_at) == (
        True,
        "Acme",
        NOW,
    )
    detail = await api.get("/api/v1/sites/depot-1")
    assert detail.json()["charger_ids"] == ["CP-1", "CP-2"]

    problem(await api.put("/api/v1/sites/depot-9/chargers/CP-1"), 404)
    problem(await api.put(f"/api/v1/sites/depot-1/chargers/{'C' * 49}"), 422)
    problem(await api.put("/api/v1/sites/depot-1/chargers/CP 1"), 422)
    moved = await api.put("/api/v1/sites/depot-2/chargers/CP-2")
    assert moved.json()["site_id"] == "depot-2"
    assert (await api.get("/api/v1/sites/depot-1")).json()["charger_ids"] == ["CP-1"]

    problem(await api.delete("/api/v1/sites/depot-1"), 409)
    problem(await api.delete("/api/v1/sites/depot-2/chargers/CP-1"), 404)
    assert (await api.delete("/api/v1/sites/depot-1/chargers/CP-1")).status_code == 204
    problem(await api.delete("/api/v1/sites/depot-1/chargers/CP-1"), 404)
    assert (await api.delete("/api/v1/sites/depot-1")).status_code == 204
    problem(await api.get("/api/v1/sites/depot-1"), 404)


async def test_viewer_reads_but_may_not_write(api: httpx.AsyncClient, running: Running) -> None:
    team = await created(api, "/api/v1/teams", {"name": "Field"})
    tech = await created(api, "/api/v1/technicians", {"name": "Ana"})
    await created(api, "/api/v1/sites", {"id": "depot-1", "name": "Depot 1"})
    token = await create_token(running.system.db, "v", "viewer")
    viewer = {"Authorization": f"Bearer {token}"}
    for path in ("/api/v1/teams", "/api/v1/technicians", "/api/v1/sites"):
        assert (await api.get(path, headers=viewer)).status_code == 200
    writes = [
        ("POST", "/api/v1/teams", {"name": "Other"}),
        ("PATCH", f"/api/v1/teams/{team['id']}", {"name": "Renamed"}),
        ("DELETE", f"/api/v1/teams/{team['id']}", None),
        ("POST", "/api/v1/technicians", {"name": "Bo"}),
        ("PATCH", f"/api/v1/technicians/{tech['id']}", {"on_duty": False}),
        ("DELETE", f"/api/v1/technicians/{tech['id']}", None),
        ("POST", "/api/v1/sites", {"id": "depot-2", "name": "Depot 2"}),
        ("PATCH", "/api/v1/sites/depot-1", {"name": "Renamed"}),
        ("DELETE", "/api/v1/sites/depot-1", None),
        ("PUT", "/api/v1/sites/depot-1/chargers/CP-1", None),
        ("DELETE", "/api/v1/sites/depot-1/chargers/CP-1", None),
    ]
    for method, path, body in writes:
        response = await api.request(method, path, json=body, headers=viewer)
        problem(response, 403)
    anonymous = await api.get("/api/v1/sites", headers={"Authorization": ""})
    problem(anonymous, 401)
    # nothing changed
    assert (await api.get(f"/api/v1/teams/{team['id']}")).json()["name"] == "Field"
    assert (await api.get(f"/api/v1/technicians/{tech['id']}")).json()["on_duty"] is True
    assert [s["id"] for s in (await api.get("/api/v1/sites")).json()] == ["depot-1"]
