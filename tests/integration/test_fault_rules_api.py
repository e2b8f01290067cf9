"""Fault rules on SQLite and PostgreSQL: seeding, the /api/v1/fault-rules API (CRUD, dry
run, catch-all protection, roles), and the classifier cache following edits."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Connection

from services.api_auth import create_token
from services.db import Database
from tests.conftest import Running
from ticketing.api import fault_rules
from ticketing.rules.defaults import default_rules
from ticketing.rules.model import Classification, FaultSignature, RuleIn
from ticketing.rules.store import (
    POSITION_STEP,
    classify,
    create_rule,
    list_rules,
    seed_defaults,
    update_rule,
)
from ticketing.tx import transact

BASE = "/api/v1/fault-rules"
PROBLEM = "application/problem+json"
GROUND = {"source": "status_notification", "error_code": "GroundFailure", "status": "faulted"}


async def seed(running: Running) -> int:
    now = datetime.now(UTC)
    return await transact(running.system.committer, lambda conn: seed_defaults(conn, now))


@pytest.fixture
async def api(running: Running) -> Running:
    app = running.system.app
    routed = any(getattr(route, "path", "").startswith(BASE) for route in app.routes)
    if not routed:  # until mounted in ticketing/api
        app.include_router(fault_rules.router, prefix="/api/v1")
    await seed(running)
    return running


def new_rule(name: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "match": {"error_code": "GroundFailure", "charger_vendor": "ACME"},
        "category": "ground_insulation",
        "severity": "S2",
        "impact": 2,
        "urgency": 2,
        "playbook": "port_down_generic",
        "skill": "ac_electrical",
    }
    body.update(fields)
    return body


async def rules(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    r = await client.get(BASE)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()
    return items


async def by_name(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    return next(r for r in await rules(client) if r["name"] == name)


async def dry_run(client: httpx.AsyncClient, **signature: Any) -> dict[str, Any]:
    r = await client.post(f"{BASE}/dry-run", json=signature)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def assert_problem(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)


async def test_seeding_loads_the_defaults_once(api: Running) -> None:
    listed = await rules(api.api)
    shipped = default_rules()
    assert [r["name"] for r in listed] == [r.name for r in shipped]
    assert [r["position"] for r in listed] == [
        POSITION_STEP * i for i in range(1, len(shipped) + 1)
    ]
    assert {r["origin"] for r in listed} == {"default"}
    assert listed[-1]["catch_all"] and listed[-1]["match"] == {}
    assert await seed(api) == 0
    assert len(await rules(api.api)) == len(shipped)


async def test_dry_run_of_a_ground_failure_is_s1_lockout(api: Running) -> None:
    result = await dry_run(api.api, **GROUND, ocpp_version="1.6", connector="1")
    assert result["rule_name"] == "ocpp16-ground-failure"
    assert result["rule_id"] == (await by_name(api.api, "ocpp16-ground-failure"))["id"]
    assert (result["severity"], result["priority"], result["lockout"]) == ("S1", "P1", True)
    assert result["playbook"] == "lockout"


async def test_a_rule_placed_before_a_default_wins_then_is_edited_and_deleted(
    api: Running,
) -> None:
    client = api.api
    ground = await by_name(client, "ocpp16-ground-failure")
    r = await client.post(BASE, json=new_rule("acme-ground", position=ground["position"]))
    assert r.status_code == 201, r.text
    created = r.json()
    assert r.headers["location"].endswith(f"{BASE}/{created['id']}")
    assert (created["position"], created["origin"]) == (ground["position"], "api")
    assert (await by_name(client, "ocpp16-ground-failure"))["position"] == ground["position"] + 1

    acme = await dry_run(client, **GROUND, charger_vendor="acme")
    assert (acme["rule_name"], acme["severity"], acme["lockout"]) == ("acme-ground", "S2", False)
    other = await dry_run(client, **GROUND, charger_vendor="Other")
    assert other["rule_name"] == "ocpp16-ground-failure"

    edited = new_rule("acme-ground", severity="S1", impact=1, urgency=1, playbook="lockout")
    r = await client.put(f"{BASE}/{created['id']}", json=edited)
    assert r.status_code == 200, r.text
    assert (r.json()["position"], r.json()["priority"]) == (ground["position"], "P1")
    assert (await client.get(f"{BASE}/{created['id']}")).json()["severity"] == "S1"
    acme = await dry_run(client, **GROUND, charger_vendor="ACME")
    assert (acme["rule_name"], acme["severity"], acme["lockout"]) == ("acme-ground", "S1", True)

    r = await client.delete(f"{BASE}/{created['id']}")
    assert r.status_code == 204, r.text
    assert_problem(await client.get(f"{BASE}/{created['id']}"), 404)
    assert_problem(await client.delete(f"{BASE}/{created['id']}"), 404)
    acme = await dry_run(client, **GROUND, charger_vendor="ACME")
    assert acme["rule_name"] == "ocpp16-ground-failure"


async def test_a_new_rule_goes_before_the_catch_all_and_can_move(api: Running) -> None:
    client = api.api
    catch_all = (await rules(client))[-1]
    r = await client.post(BASE, json=new_rule("appended", match={"error_code": "Mystery*"}))
    assert r.status_code == 201, r.text
    appended = r.json()
    listed = await rules(client)
    assert [x["name"] for x in listed[-2:]] == ["appended", catch_all["name"]]
    assert appended["position"] == catch_all["position"]
    assert listed[-1]["position"] == catch_all["position"] + 1
    assert (await dry_run(client, source="notify_event", error_code="MysteryBox"))[
        "rule_name"
    ] == "appended"

    # move it to the top: it now wins over the S1 ground-failure rule
    moved = new_rule("appended", match={"error_code": ["Mystery*", "GroundFailure"]}, position=10)
    r = await client.put(f"{BASE}/{appended['id']}", json=moved)
    assert r.status_code == 200, r.text
    listed = await rules(client)
    assert listed[0]["name"] == "appended"
    assert listed[1]["position"] == 11  # the first default rule made room
    assert len({x["position"] for x in listed}) == len(listed)
    assert (await dry_run(client, **GROUND))["rule_name"] == "appended"


async def test_the_catch_all_is_protected(api: Running) -> None:
    client = api.api
    catch_all = (await rules(client))[-1]
    url = f"{BASE}/{catch_all['id']}"
    same = {k: catch_all[k] for k in RuleIn.model_fields if k in catch_all and k != "position"}

    assert_problem(await client.delete(url), 409)
    assert_problem(await client.put(url, json={**same, "enabled": False}), 409)
    assert_problem(await client.put(url, json={**same, "match": {"source": "derived"}}), 409)
    assert_problem(await client.put(url, json={**same, "position": 10}), 409)
    assert_problem(await client.post(BASE, json=new_rule("second-catch-all", match={})), 409)
    after = new_rule("after-catch-all", position=catch_all["position"] + 5)
    assert_problem(await client.post(BASE, json=after), 409)

    r = await client.put(url, json={**same, "severity": "S2", "description": "unknown faults"})
    assert r.status_code == 200, r.text
    assert (r.json()["severity"], r.json()["catch_all"]) == ("S2", True)
    result = await dry_run(client, source="derived", error_code="SomethingNew")
    assert (result["rule_id"], result["severity"]) == (catch_all["id"], "S2")
    assert await rules(client) and (await rules(client))[-1]["id"] == catch_all["id"]


async def test_bad_input_is_refused(api: Running) -> None:
    client = api.api
    assert_problem(await client.post(BASE, json=new_rule("bad", match={"code": "re:CX("})), 422)
    assert_problem(await client.post(BASE, json=new_rule("bad", match={"errorCode": "X"})), 422)
    assert_problem(await client.post(BASE, json=new_rule("bad", category="misc")), 422)
    assert_problem(await client.post(BASE, json=new_rule("bad", severity="S4")), 422)
    assert_problem(await client.post(BASE, json=new_rule("catch-all")), 409)
    first = (await rules(client))[0]
    assert_problem(await client.put(f"{BASE}/{first['id']}", json=new_rule("catch-all")), 409)
    assert_problem(await client.put(f"{BASE}/999999", json=new_rule("nope")), 404)
    assert_problem(
        await client.post(f"{BASE}/dry-run", json={"source": "x", "error_code": ""}), 422
    )
    assert "bad" not in {r["name"] for r in await rules(client)}


async def test_viewer_reads_and_dry_runs_but_cannot_write(api: Running) -> None:
    token = await create_token(api.system.db, "v", "viewer")
    viewer = {"Authorization": f"Bearer {token}"}
    client = api.api
    first = (await rules(client))[0]
    assert (await client.get(BASE, headers=viewer)).status_code == 200
    assert (await client.get(f"{BASE}/{first['id']}", headers=viewer)).status_code == 200
    r = await client.post(f"{BASE}/dry-run", json=GROUND, headers=viewer)
    assert r.status_code == 200, r.text
    assert_problem(await client.post(BASE, json=new_rule("v-rule"), headers=viewer), 403)
    assert_problem(
        await client.put(f"{BASE}/{first['id']}", json=new_rule("v-rule"), headers=viewer), 403
    )
    assert_problem(await client.delete(f"{BASE}/{first['id']}", headers=viewer), 403)
    assert_problem(await client.get(BASE, headers={"Authorization": "Bearer nope"}), 401)
    assert (await by_name(client, first["name"])) == first


async def test_another_process_sees_edits_even_when_the_clock_stands_still(
    api: Running,
) -> None:
    """Classifier caches (one per engine, as in another process) follow every edit, even
    two edits stamped with the same clock reading."""
    other = Database(api.system.db.url)
    frozen = datetime(2030, 1, 1, tzinfo=UTC)
    signature = FaultSignature(**GROUND, charger_vendor="ACME")

    async def classify_elsewhere() -> Classification:
        async with other.engine.connect() as conn:
            return await conn.run_sync(classify, signature)

    def create(conn: Connection) -> int:
        rule = create_rule(conn, RuleIn.model_validate(new_rule("frozen", position=1)), frozen)
        assert rule.id is not None
        return rule.id

    try:
        assert (await classify_elsewhere()).rule_name == "ocpp16-ground-failure"
        rule_id = await transact(api.system.committer, create)
        assert (await classify_elsewhere()).rule_name == "frozen"
        for severity in ("S3", "S1"):
            body = RuleIn.model_validate(new_rule("frozen", severity=severity, impact=1))
            await transact(
                api.system.committer,
                lambda conn, body=body: update_rule(conn, rule_id, body, frozen),
            )
            assert (await classify_elsewhere()).severity == severity
        async with other.engine.connect() as conn:
            (frozen_rule,) = [r for r in await conn.run_sync(list_rules) if r.id == rule_id]
        assert frozen_rule.updated_at is not None and frozen_rule.updated_at > frozen
    finally:
        await other.dispose()


async def test_classify_costs_one_query_when_the_rules_did_not_change(api: Running) -> None:
    other = Database(api.system.db.url)
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(other.engine.sync_engine, "before_cursor_execute", record)
    signature = FaultSignature(**GROUND)
    try:
        async with other.engine.connect() as conn:
            first = await conn.run_sync(classify, signature)
            loaded = len(statements)
            second = await conn.run_sync(classify, signature)
        assert first == second and first.severity == "S1"
        assert loaded >= 2  # the check, then the load
        assert len(statements) == loaded + 1
        assert "count" in statements[-1].lower()
    finally:
        await other.dispose()
