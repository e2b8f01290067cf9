"""SLA policies: seeding, the HTTP API (roles, validation, conflicts) and selection."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from sqlalchemy.engine import Connection

from services.api_auth import create_token
from services.db import Database, table_of
from tests.conftest import Running
from ticketing.api import sla_policies
from ticketing.sla.policies import (
    NoMatchingPolicy,
    PolicyRow,
    load_defaults,
    seed_defaults,
    select_policy,
)
from ticketing.tables import WorkOrder
from ticketing.tx import transact

BASE = "/api/v1/sla-policies"
NOW = datetime(2024, 6, 14, 9, 0, tzinfo=UTC)


def policy(name: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "priority": "P3",
        "contract_type": "partner",
        "calendar": "business",
        "timezone": "Europe/Berlin",
        "business_hours": {"mon": [["08:00", "12:00"], ["13:00", "17:00"]]},
        "holidays": ["2024-12-25"],
        "response_s": 7200,
        "resolution_s": 86400,
    }
    body.update(fields)
    return body


@pytest.fixture
async def api(running: Running) -> httpx.AsyncClient:
    app = running.system.app
    # until mounted in ticketing/api: include the router only if nobody routes it yet
    if not any(isinstance(r, APIRoute) and r.path == BASE for r in app.routes):
        app.include_router(sla_policies.router, prefix="/api/v1")
    await transact(running.system.committer, lambda conn: seed_defaults(conn, NOW))
    return running.api


async def viewer_headers(running: Running) -> dict[str, str]:
    token = await create_token(running.system.db, "v", "viewer")
    return {"Authorization": f"Bearer {token}"}


async def read(db: Database, op: Callable[[Connection], Any]) -> Any:
    async with db.engine.connect() as conn:
        return await conn.run_sync(op)


# ------------------------------------------------------------------ seeding
async def test_defaults_are_seeded_once_into_an_empty_table(db: Database) -> None:
    def pick(conn: Connection) -> PolicyRow:
        return select_policy(conn, priority="P1", contract_type="own")

    with pytest.raises(NoMatchingPolicy, match="no catch-all"):
        await read(db, pick)
    async with db.engine.begin() as conn:
        assert await conn.run_sync(seed_defaults, NOW) == len(load_defaults())
    async with db.engine.begin() as conn:
        assert await conn.run_sync(seed_defaults, NOW) == 0
    chosen = await read(db, pick)
    assert (chosen.name, chosen.response_s, chosen.calendar_kind) == ("own-P1", 900, "24x7")
    assert chosen.target_seconds("on_site") == 4 * 3600


def test_defaults_cover_every_priority_and_contract_and_a_catch_all() -> None:
    defaults = load_defaults()
    keys = {(p.priority, p.contract_type) for p in defaults}
    for priority in ("P1", "P2", "P3", "P4", "P5"):
        for contract in ("own", "vendor", "partner"):
            assert (priority, contract) in keys
    assert (None, None) in keys
    assert len({p.name for p in defaults}) == len(defaults)


# ------------------------------------------------------------------ HTTP
async def test_list_and_get(api: httpx.AsyncClient) -> None:
    listed = await api.get(BASE)
    assert listed.status_code == 200, listed.text
    by_name = {p["name"]: p for p in listed.json()}
    assert len(by_name) == len(load_defaults())
    own_p3 = by_name["own-P3"]
    assert own_p3["calendar"] == "business"
    assert own_p3["business_hours"]["mon"] == [["08:00", "18:00"]]
    assert own_p3["escalation_contact"] == "ops-escalation@example.com"
    assert (by_name["default"]["priority"], by_name["default"]["contract_type"]) == (None, None)
    one = await api.get(f"{BASE}/{own_p3['id']}")
    assert one.status_code == 200
    assert one.json() == own_p3
    missing = await api.get(f"{BASE}/999999")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")


async def test_create_update_and_delete(api: httpx.AsyncClient) -> None:
    created = await api.post(BASE, json=policy("partner-P3-berlin"))
    assert created.status_code == 201, created.text
    body = created.json()
    assert created.headers["location"] == f"{BASE}/{body['id']}"
    assert body["holidays"] == ["2024-12-25"]
    assert (body["warn_fraction"], body["verification_window_s"], body["reopen_window_s"]) == (
        0.75,
        3600,
        86400,
    )
    changed = await api.put(
        f"{BASE}/{body['id']}",
        json=policy("partner-P3-berlin", resolution_s=172800, warn_fraction=0.5),
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["resolution_s"], changed.json()["warn_fraction"]) == (172800, 0.5)
    assert (await api.get(f"{BASE}/{body['id']}")).json()["resolution_s"] == 172800
    assert (await api.delete(f"{BASE}/{body['id']}")).status_code == 204
    assert (await api.get(f"{BASE}/{body['id']}")).status_code == 404
    assert (await api.delete(f"{BASE}/{body['id']}")).status_code == 404
    assert (await api.put(f"{BASE}/{body['id']}", json=policy("x"))).status_code == 404


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"business_hours": {"mon": [["08:00", "25:00"]]}}, "business_hours"),
        ({"business_hours": {"monday": [["08:00", "18:00"]]}}, "business_hours"),
        ({"business_hours": {"mon": [["18:00", "08:00"]]}}, "business_hours"),
        ({"business_hours": {}}, "business_hours"),
        ({"holidays": ["2024-13-01"]}, "holidays"),
        ({"warn_fraction": 1.5}, "warn_fraction"),
        ({"response_s": 0}, "response_s"),
        ({"priority": "P9"}, "priority"),
        ({"contract_type": "friends"}, "contract_type"),
        ({"calendar": "weekdays"}, "calendar"),
        ({"name": ""}, "name"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_invalid_policies_are_422_naming_the_field(
    api: httpx.AsyncClient, fields: dict[str, Any], field: str
) -> None:
    response = await api.post(BASE, json={**policy("bad"), **fields})
    assert response.status_code == 422, response.text
    problem = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert field in problem["detail"]
    assert any(e["loc"][:2] == ["body", field] for e in problem["errors"]), problem


async def test_a_policy_without_any_target_is_422(api: httpx.AsyncClient) -> None:
    response = await api.post(BASE, json=policy("empty", response_s=None, resolution_s=None))
    assert response.status_code == 422
    assert "at least one of response_s" in response.text


async def test_duplicate_names_are_409(api: httpx.AsyncClient) -> None:
    assert (await api.post(BASE, json=policy("mine"))).status_code == 201
    again = await api.post(BASE, json=policy("mine", priority="P4"))
    assert again.status_code == 409
    assert "mine" in again.json()["detail"]
    other = (await api.post(BASE, json=policy("other"))).json()
    clash = await api.put(f"{BASE}/{other['id']}", json=policy("own-P1"))
    assert clash.status_code == 409


async def test_only_admins_write(api: httpx.AsyncClient, running: Running) -> None:
    viewer = await viewer_headers(running)
    listed = await api.get(BASE, headers=viewer)
    assert listed.status_code == 200
    some_id = listed.json()[0]["id"]
    writes = [
        api.post(BASE, json=policy("by-viewer"), headers=viewer),
        api.put(f"{BASE}/{some_id}", json=policy("by-viewer"), headers=viewer),
        api.delete(f"{BASE}/{some_id}", headers=viewer),
    ]
    for write in writes:
        assert (await write).status_code == 403
    anonymous = await api.get(BASE, headers={"Authorization": ""})
    assert anonymous.status_code == 401
    assert (await api.get(f"{BASE}/{some_id}")).json()["name"] != "by-viewer"


async def test_the_last_catch_all_stays(api: httpx.AsyncClient) -> None:
    by_name = {p["name"]: p for p in (await api.get(BASE)).json()}
    default_id = by_name["default"]["id"]
    assert (await api.delete(f"{BASE}/{default_id}")).status_code == 409
    narrowed = await api.put(f"{BASE}/{default_id}", json=policy("default", calendar="24x7"))
    assert narrowed.status_code == 409
    spare = await api.post(
        BASE, json=policy("spare-default", priority=None, contract_type=None, calendar="24x7")
    )
    assert spare.status_code == 201
    assert (await api.delete(f"{BASE}/{default_id}")).status_code == 204
    assert (await api.delete(f"{BASE}/{spare.json()['id']}")).status_code == 409


async def test_a_policy_in_use_by_an_open_order_is_not_deleted(
    api: httpx.AsyncClient, running: Running
) -> None:
    created = (await api.post(BASE, json=policy("in-use"))).json()
    orders = table_of(WorkOrder)
    now = datetime.now(UTC)

    def open_order(conn: Connection) -> None:
        conn.execute(
            orders.insert().values(
                source="manual",
                type="corrective",
                state="new",
                title="test order",
                category="hardware",
                severity="S3",
                impact=2,
                urgency=2,
                priority="P3",
                sla_policy_id=created["id"],
                occurrences=1,
                declined_by=[],
                first_seen=now,
                last_seen=now,
                created_at=now,
                updated_at=now,
                version=1,
            )
        )

    await transact(running.system.committer, open_order)
    refused = await api.delete(f"{BASE}/{created['id']}")
    assert refused.status_code == 409
    assert refused.json()["open_orders"] == 1


# ------------------------------------------------------------------ selection
async def test_select_policy_prefers_the_most_specific_match(
    api: httpx.AsyncClient, running: Running
) -> None:
    p1_any = await api.post(BASE, json=policy("p1-any-contract", priority="P1", contract_type=None))
    any_vendor = await api.post(
        BASE, json=policy("any-vendor", priority=None, contract_type="vendor")
    )
    assert p1_any.status_code == any_vendor.status_code == 201

    async def pick(priority: str, contract: str, name: str | None = None) -> str:
        def op(conn: Connection) -> str:
            return select_policy(conn, priority=priority, contract_type=contract, name=name).name

        result: str = await read(running.system.db, op)
        return result

    assert await pick("P1", "vendor") == "vendor-P1"  # (priority, contract)
    assert await pick("P1", "municipal") == "p1-any-contract"  # (priority, any)
    assert await pick("P0", "vendor") == "any-vendor"  # (any, contract)
    assert await pick("P0", "municipal") == "default"  # (any, any)
    assert await pick("P1", "own", name="own-P4") == "own-P4"  # a rule's explicit name wins
    assert await pick("P1", "own", name="no-such-policy") == "own-P1"  # unknown name: match
    vendor_p1 = next(p for p in (await api.get(BASE)).json() if p["name"] == "vendor-P1")
    assert (await api.delete(f"{BASE}/{vendor_p1['id']}")).status_code == 204
    assert await pick("P1", "vendor") == "p1-any-contract"  # (priority, any) > (any, contract)
