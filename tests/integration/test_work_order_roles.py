"""The role matrix of the work-order API: every forbidden path asserts its status code.

admin and dispatcher manage everything; a technician sees and changes only the orders
assigned to them (others: 404) and may not assign, escalate, cancel or close; a viewer
reads and changes nothing (403); no token is 401."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from services.api_auth import create_token
from tests.conftest import Running
from tests.work_order_helpers import ensure_site


def _client(running: Running, token: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=running.system.app),
        base_url="http://chargeops.test",
        headers=headers,
    )


@pytest.fixture
async def world(running: Running) -> dict[str, Any]:
    api = running.api
    db = running.system.db
    tokens = {
        "dispatcher": await create_token(db, "dora", "dispatcher"),
        "technician": await create_token(db, "tina", "technician"),
        "other_technician": await create_token(db, "tom", "technician"),
        "viewer": await create_token(db, "vic", "viewer"),
        "anonymous": None,
    }
    r = await api.post("/api/v1/teams", json={"name": "Vendor X", "contract_type": "vendor"})
    assert r.status_code == 201, r.text
    team = r.json()["id"]
    techs = {}
    for user in ("tina", "tom"):
        r = await api.post(
            "/api/v1/technicians",
            json={"name": user.title(), "user_name": user, "regions": ["*"], "on_duty": True},
        )
        assert r.status_code == 201, r.text
        techs[user] = r.json()["id"]
    await ensure_site(api, "depot")
    orders = {}
    for name in ("mine", "theirs"):
        r = await api.post(
            "/api/v1/work-orders", json={"title": f"order {name}", "site_id": "depot"}
        )
        assert r.status_code == 201, r.text
        orders[name] = r.json()["id"]
    for name, tech in (("mine", techs["tina"]), ("theirs", techs["tom"])):
        r = await api.post(
            f"/api/v1/work-orders/{orders[name]}/assign", json={"technician_id": tech}
        )
        assert r.status_code == 200, r.text
    return {"tokens": tokens, "orders": orders, "techs": techs, "team": team}


async def test_role_matrix(running: Running, world: dict[str, Any]) -> None:
    mine, theirs = world["orders"]["mine"], world["orders"]["theirs"]
    team = world["team"]
    create = {"title": "new", "site_id": "depot"}
    # (method, path, body) -> expected status per role
    cases: list[tuple[str, str, dict[str, Any] | None, dict[str, int]]] = [
        (
            "GET",
            "/api/v1/work-orders",
            None,
            {"dispatcher": 200, "technician": 200, "viewer": 200, "anonymous": 401},
        ),
        (
            "GET",
            f"/api/v1/work-orders/{mine}",
            None,
            {
                "dispatcher": 200,
                "technician": 200,
                "other_technician": 404,
                "viewer": 200,
                "anonymous": 401,
            },
        ),
        ("GET", f"/api/v1/work-orders/{theirs}", None, {"technician": 404}),
        ("GET", f"/api/v1/work-orders/{theirs}/transitions", None, {"technician": 404}),
        (
            "GET",
            "/api/v1/work-orders/queue",
            None,
            {"dispatcher": 200, "technician": 403, "viewer": 403, "anonymous": 401},
        ),
        (
            "POST",
            "/api/v1/work-orders",
            create,
            {"technician": 403, "viewer": 403, "anonymous": 401},
        ),
        (
            "POST",
            f"/api/v1/work-orders/{theirs}/transitions",
            {"to": "accepted"},
            {"technician": 404, "viewer": 403, "anonymous": 401},
        ),
        (
            "POST",
            f"/api/v1/work-orders/{mine}/transitions",
            {"to": "cancelled", "reason": "x"},
            {"technician": 403, "viewer": 403},
        ),
        (
            "POST",
            f"/api/v1/work-orders/{mine}/transitions",
            {"to": "closed", "reason": "x"},
            {"technician": 403},
        ),
        (
            "POST",
            f"/api/v1/work-orders/{mine}/comments",
            {"text": "hi"},
            {"technician": 201, "other_technician": 404, "viewer": 403, "anonymous": 401},
        ),
        ("POST", f"/api/v1/work-orders/{theirs}/comments", {"text": "hi"}, {"technician": 404}),
        (
            "POST",
            f"/api/v1/work-orders/{mine}/assign",
            {"technician_id": world["techs"]["tom"]},
            {"technician": 403, "viewer": 403, "anonymous": 401},
        ),
        (
            "POST",
            f"/api/v1/work-orders/{mine}/escalate",
            {"team_id": team, "reason": "vendor"},
            {"technician": 403, "viewer": 403, "anonymous": 401},
        ),
        ("POST", f"/api/v1/work-orders/{theirs}/decline", {}, {"technician": 404, "viewer": 403}),
        (
            "POST",
            f"/api/v1/work-orders/{mine}/transitions",
            {"to": "accepted"},
            {"technician": 200},
        ),
        (
            "POST",
            "/api/v1/technicians",
            {"name": "x", "regions": ["*"]},
            {"technician": 403, "viewer": 403, "anonymous": 401},
        ),
        (
            "POST",
            "/api/v1/fault-rules/dry-run",
            {"source": "derived", "error_code": "Offline"},
            {"viewer": 200, "anonymous": 401},
        ),
        (
            "POST",
            "/api/v1/webhooks",
            {"url": "https://example.com/hook"},
            {"dispatcher": 403, "technician": 403, "viewer": 403, "anonymous": 401},
        ),
        ("GET", "/api/v1/users", None, {"dispatcher": 403, "technician": 403, "viewer": 403}),
    ]
    failures = []
    for method, path, body, expected in cases:
        for role, status in expected.items():
            async with _client(running, world["tokens"][role]) as client:
                r = await client.request(method, path, json=body)
            if r.status_code != status:
                failures.append(
                    f"{role} {method} {path}: {r.status_code} != {status} {r.text[:200]}"
                )
            elif status >= 400:
                assert r.headers["content-type"].startswith("application/problem+json")
    assert not failures, "\n".join(failures)


async def test_technician_lists_only_their_orders(running: Running, world: dict[str, Any]) -> None:
    async with _client(running, world["tokens"]["technician"]) as client:
        r = await client.get("/api/v1/work-orders")
    assert r.status_code == 200
    assert [o["id"] for o in r.json()["items"]] == [world["orders"]["mine"]]


async def test_illegal_transition_lists_the_legal_ones(
    running: Running, world: dict[str, Any]
) -> None:
    r = await running.api.post(
        f"/api/v1/work-orders/{world['orders']['mine']}/transitions", json={"to": "verified"}
    )
    assert r.status_code == 409
    body = r.json()
    assert body["state"] == "dispatched"
    assert "accepted" in body["legal_transitions"] and "verified" not in body["legal_transitions"]


async def test_technician_takes_their_order_off_hold_back_to_where_it_was(
    running: Running, world: dict[str, Any]
) -> None:
    """Held while still dispatched, the order goes back to dispatched: the technician may
    make that move (it was 403: 'dispatched' is not one of their moves, so only a
    dispatcher could release it); other moves outside theirs stay 403."""
    path = f"/api/v1/work-orders/{world['orders']['mine']}/transitions"
    async with _client(running, world["tokens"]["technician"]) as client:
        r = await client.post(path, json={"to": "dispatched"})
        assert r.status_code == 403, r.text
        r = await client.post(path, json={"to": "on_hold", "reason": "parts"})
        assert r.status_code == 200 and r.json()["state"] == "on_hold", r.text
        r = await client.post(path, json={"to": "cancelled", "reason": "x"})
        assert r.status_code == 403, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        r = await client.post(path, json={"to": "dispatched"})
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "dispatched" and r.json()["assignee_id"] is not None
