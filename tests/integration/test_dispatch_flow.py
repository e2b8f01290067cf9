"""Dispatch, the state machine's edges, SLA timing and the work-order metrics, end to end
through the HTTP API (orders by ``POST /api/v1/work-orders``, or from real OCPP 1.6 faults
where de-duplication or fault metrics matter). Time is a FakeClock; timers fire when the
test runs the scanner (``ticketing_scan_interval`` is an hour, so only its first scan at
start-up runs by itself, when nothing is due)."""

from __future__ import annotations

import contextlib
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from ocpp.v16 import call as call16
from prometheus_client.parser import text_string_to_metric_families

from services.clock import FakeClock
from services.db import utcnow
from tests.conftest import (
    ChargerHandle,
    Running,
    SystemFactory,
    charge_point,
    eventually,
    register,
)
from tests.work_order_helpers import assert_rows_are_the_fold_of_their_timelines, ensure_site
from ticketing.work_orders import scanner
from ticketing.work_orders.scanner import ScanResult
from ticketing.work_orders.states import STATES

Order = dict[str, Any]
WO = "/api/v1/work-orders"
SITE = "depot"
SKILL = "electrical"
TARGETS = ("response", "on_site", "resolution")


# ------------------------------------------------------------------ helpers
def _system(
    system_factory: SystemFactory, clock: FakeClock
) -> contextlib.AbstractAsyncContextManager[Running]:
    return system_factory(clock=clock, ticketing_scan_interval=3600)


async def _scan(running: Running) -> ScanResult:
    return await running.system.ticketing.scanner.run_once()


async def _technician(api: httpx.AsyncClient, name: str, **fields: Any) -> int:
    body = {"name": name, "skills": [SKILL], "sites": [SITE], "on_duty": True, **fields}
    r = await api.post("/api/v1/technicians", json=body)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def _create(api: httpx.AsyncClient, **fields: Any) -> Order:
    await ensure_site(api, SITE, region="north")
    body = {"title": "Display dark at bay 2", "site_id": SITE, "skill": SKILL, **fields}
    r = await api.post(WO, json=body)
    assert r.status_code == 201, r.text
    order: Order = r.json()
    return order


async def _get(api: httpx.AsyncClient, order_id: int) -> Order:
    r = await api.get(f"{WO}/{order_id}")
    assert r.status_code == 200, r.text
    order: Order = r.json()
    return order


async def _move(api: httpx.AsyncClient, order_id: int, to: str, **body: Any) -> httpx.Response:
    return await api.post(f"{WO}/{order_id}/transitions", json={"to": to, **body})


async def _moved(api: httpx.AsyncClient, order_id: int, to: str, **body: Any) -> Order:
    r = await _move(api, order_id, to, **body)
    assert r.status_code == 200, r.text
    order: Order = r.json()
    return order


async def _queue(api: httpx.AsyncClient) -> list[int]:
    r = await api.get(f"{WO}/queue")
    assert r.status_code == 200, r.text
    page = r.json()
    ids = [int(o["id"]) for o in page["items"]]
    assert page["total"] == len(ids)
    return ids


async def _policy(api: httpx.AsyncClient, priority: str, contract: str) -> dict[str, Any]:
    r = await api.get("/api/v1/sla-policies")
    assert r.status_code == 200, r.text
    (policy,) = [
        p for p in r.json() if p["priority"] == priority and p["contract_type"] == contract
    ]
    result: dict[str, Any] = policy
    return result


def _entries(order: Order, kind: str) -> list[dict[str, Any]]:
    return [e for e in order["timeline"] if e["kind"] == kind]


def _sla_targets(order: Order, kind: str) -> list[str]:
    """The SLA targets of the order's ``sla_warning`` / ``sla_breached`` entries."""
    return [e["changes"]["data"]["target"] for e in _entries(order, kind)]


def _moves(order: Order) -> list[tuple[str | None, str]]:
    return [(e["from_state"], e["to_state"]) for e in order["timeline"] if e["to_state"]]


def _clocks(order: Order) -> dict[str, dict[str, Any]]:
    return {t["target"]: t for t in order["sla"]}


def _due(order: Order, target: str) -> datetime:
    return datetime.fromisoformat(_clocks(order)[target]["due_at"])


# ------------------------------------------------------------------ OCPP faults
GROUND_FAILURE = {
    "source": "status_notification",
    "error_code": "GroundFailure",
    "status": "faulted",
    "ocpp_version": "1.6",
    "connector": "1",
}


async def _place_charger(api: httpx.AsyncClient, charger_id: str) -> dict[str, Any]:
    """Register the charger at SITE; returns the rules' classification of GroundFailure."""
    await register(api, charger_id)
    await ensure_site(api, SITE, region="north")
    r = await api.put(f"/api/v1/sites/{SITE}/chargers/{charger_id}")
    assert r.status_code == 200, r.text
    r = await api.post("/api/v1/fault-rules/dry-run", json=GROUND_FAILURE)
    assert r.status_code == 200, r.text
    classification: dict[str, Any] = r.json()
    assert classification["open_order"] is True
    return classification


async def _boot(cp: ChargerHandle) -> None:
    await cp.call(call16.BootNotification(charge_point_vendor="V", charge_point_model="M"))


async def _ground_failure(cp: ChargerHandle, second: int) -> None:
    when = utcnow().replace(microsecond=0) + timedelta(seconds=second)
    await cp.call(
        call16.StatusNotification(
            connector_id=1, error_code="GroundFailure", status="Faulted", timestamp=when.isoformat()
        )
    )


async def _available(cp: ChargerHandle) -> None:
    await cp.call(
        call16.StatusNotification(connector_id=1, error_code="NoError", status="Available")
    )


async def _orders_of(api: httpx.AsyncClient, charger_id: str) -> list[Order]:
    r = await api.get(WO, params={"charger_id": charger_id, "sort": "id", "limit": 100})
    assert r.status_code == 200, r.text
    items: list[Order] = r.json()["items"]
    return items


# ------------------------------------------------------------------ 1. the dispatcher queue
async def test_queued_until_a_technician_goes_on_duty(system_factory: SystemFactory) -> None:
    clock = FakeClock(utcnow())
    async with _system(system_factory, clock) as running:
        api = running.api
        resting = await _technician(api, "Rita", on_duty=False)
        await _technician(api, "Walt", skills=["payment_terminal"])  # lacks the skill
        await _technician(api, "Hana", sites=["harbour"])  # does not cover the site
        order = await _create(api)
        assert order["state"] == "new" and order["assignee_id"] is None
        assert await _queue(api) == [order["id"]]
        await _scan(running)
        assert (await _get(api, order["id"]))["assignee_id"] is None
        assert await _queue(api) == [order["id"]]

        r = await api.patch(f"/api/v1/technicians/{resting}", json={"on_duty": True})
        assert r.status_code == 200, r.text
        await _scan(running)
        after = await _get(api, order["id"])
        assert after["state"] == "dispatched" and after["assignee_id"] == resting
        last = after["timeline"][-1]
        assert (last["kind"], last["from_state"], last["to_state"], last["actor"]) == (
            "assigned",
            "new",
            "dispatched",
            "system:dispatch",
        )
        assert await _queue(api) == []


# ------------------------------------------------------------------ 2. ranking
async def test_fewest_open_orders_first_then_most_sla_slack(system_factory: SystemFactory) -> None:
    clock = FakeClock(utcnow())
    async with _system(system_factory, clock) as running:
        api = running.api
        ada = await _technician(api, "Ada")
        bob = await _technician(api, "Bob")
        idle = await _technician(api, "Cy", skills=["payment_terminal"])
        p1 = {"impact": 1, "urgency": 1}  # 24x7 policy: due times are plain arithmetic
        first = await _create(api, **p1)
        assert first["assignee_id"] == ada  # both idle, nothing due: the lower id
        clock.advance(timedelta(minutes=5))
        second = await _create(api, **p1)
        assert second["assignee_id"] == bob  # Bob holds no open order, Ada one
        clock.advance(timedelta(minutes=5))
        third = await _create(api, **p1)
        # One each: Ada's most urgent order is due 5 minutes before Bob's, so Bob has
        # more slack and gets it (not the lower id).
        assert third["assignee_id"] == bob
        fourth = await _create(api, **p1)
        assert fourth["assignee_id"] == ada  # Ada 1, Bob 2
        r = await api.get("/api/v1/technicians")
        assert r.status_code == 200, r.text
        assert {t["id"]: t["open_orders"] for t in r.json()} == {ada: 2, bob: 2, idle: 0}


# ------------------------------------------------------------------ 3. decline
async def test_decline_goes_to_the_next_candidate_then_to_the_queue(
    system_factory: SystemFactory,
) -> None:
    clock = FakeClock(utcnow())
    async with _system(system_factory, clock) as running:
        api = running.api
        ada = await _technician(api, "Ada")
        bob = await _technician(api, "Bob")
        order = await _create(api)
        assert order["assignee_id"] == ada
        r = await api.post(f"{WO}/{order['id']}/decline", json={"note": "no ladder today"})
        assert r.status_code == 200, r.text
        passed = r.json()
        assert passed["state"] == "dispatched" and passed["assignee_id"] == bob
        declined, assigned = passed["timeline"][-2:]
        assert (declined["kind"], declined["from_state"], declined["to_state"]) == (
            "declined",
            "dispatched",
            "new",
        )
        assert declined["note"] == "no ladder today"
        assert (assigned["kind"], assigned["to_state"]) == ("assigned", "dispatched")

        r = await api.post(f"{WO}/{order['id']}/decline", json={})
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "new" and r.json()["assignee_id"] is None
        assert await _queue(api) == [order["id"]]
        r = await api.post(f"{WO}/{order['id']}/decline", json={})
        assert r.status_code == 409, r.text  # nobody to decline it any more

        # Both are still on duty, idle and fitting: neither is chosen again.
        await _scan(running)
        assert (await _get(api, order["id"]))["assignee_id"] is None
        assert await _queue(api) == [order["id"]]
        cleo = await _technician(api, "Cleo")
        await _scan(running)
        final = await _get(api, order["id"])
        assert final["state"] == "dispatched" and final["assignee_id"] == cleo
        assert await _queue(api) == []
        assert [e["kind"] for e in final["timeline"]].count("assigned") == 3


# ------------------------------------------------------------------ 4. escalation
async def test_escalation_to_a_vendor_team_switches_policy_and_keeps_consumed_time(
    system_factory: SystemFactory,
) -> None:
    clock = FakeClock(utcnow())
    async with _system(system_factory, clock) as running:
        api = running.api
        own = await _technician(api, "Olli")
        r = await api.post("/api/v1/teams", json={"name": "Vendor X", "contract_type": "vendor"})
        assert r.status_code == 201, r.text
        team = r.json()["id"]
        vendor_tech = await _technician(api, "Vera", team_id=team)
        order = await _create(api, impact=1, urgency=1)
        assert order["assignee_id"] == own and order["team_id"] is None
        assert order["sla_policy_id"] == (await _policy(api, "P1", "own"))["id"]
        created = datetime.fromisoformat(order["created_at"])

        clock.advance(timedelta(minutes=10))
        for body in ({"team_id": team}, {"team_id": team, "reason": ""}):
            r = await api.post(f"{WO}/{order['id']}/escalate", json=body)
            assert r.status_code == 422, r.text
        reason = "contactor still under the manufacturer's warranty"
        r = await api.post(f"{WO}/{order['id']}/escalate", json={"team_id": team, "reason": reason})
        assert r.status_code == 200, r.text
        escalated = r.json()
        assert escalated["team_id"] == team
        assert escalated["state"] == "dispatched" and escalated["assignee_id"] == vendor_tech
        vendor = await _policy(api, "P1", "vendor")
        assert vendor["calendar"] == "24x7"
        assert escalated["sla_policy_id"] == vendor["id"]
        clocks = _clocks(escalated)
        for target in TARGETS:
            seconds = vendor[f"{target}_s"]
            assert clocks[target]["target_s"] == seconds
            assert clocks[target]["state"] == "running"
            # the 10 minutes already used count against the vendor's targets
            assert _due(escalated, target) == created + timedelta(seconds=seconds)
            assert clocks[target]["remaining_s"] == seconds - 600
        (entry,) = _entries(escalated, "escalated")
        assert entry["note"] == reason and entry["actor"].startswith("user:")
        assert (entry["from_state"], entry["to_state"]) == ("dispatched", "new")
        assert entry["changes"]["team_id"] == team
        assert escalated["timeline"][-1]["kind"] == "assigned"
        r = await api.post(f"{WO}/{order['id']}/escalate", json={"team_id": 999, "reason": "x"})
        assert r.status_code == 422, r.text
        await assert_rows_are_the_fold_of_their_timelines(running)


# ------------------------------------------------------------------ 5. the edges
async def test_illegal_moves_from_new_answer_409_with_the_legal_ones(
    system_factory: SystemFactory,
) -> None:
    clock = FakeClock(utcnow())
    async with _system(system_factory, clock) as running:
        api = running.api
        order = await _create(api)  # nobody to dispatch to: it stays new
        # opened by hand, for a site: no remote fix to run, so no remote_fix
        legal = ["dispatched", "on_hold", "resolved", "closed", "cancelled"]
        r = await api.get(f"{WO}/{order['id']}/transitions")
        assert r.status_code == 200, r.text
        assert r.json()["legal_transitions"] == legal
        illegal = [s for s in STATES if s not in legal]
        assert illegal == ["new", "remote_fix", "accepted", "en_route", "on_site", "verified"]
        for target in illegal:
            r = await _move(api, order["id"], target)
            assert r.status_code == 409, (target, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            problem = r.json()
            assert problem["state"] == "new"
            assert problem["legal_transitions"] == legal, target
        after = await _get(api, order["id"])
        assert after["version"] == order["version"]
        assert after["timeline"] == order["timeline"]


async def test_hold_needs_a_reason_and_returns_to_the_state_it_interrupted(
    system_factory: SystemFactory,
) -> None:
    clock = FakeClock(utcnow())
    async with _system(system_factory, clock) as running:
        api = running.api
        tech = await _technician(api, "Ada")
        order = await _create(api, impact=1, urgency=1)
        assert order["state"] == "dispatched"
        await _moved(api, order["id"], "accepted")
        for body in ({}, {"reason": "lunch"}):
            r = await _move(api, order["id"], "on_hold", **body)
            assert r.status_code == 422, r.text
        held = await _moved(api, order["id"], "on_hold", reason="parts", note="contactor")
        assert held["state"] == "on_hold" and held["hold_reason"] == "parts"
        assert held["assignee_id"] == tech
        assert held["legal_transitions"] == ["accepted", "resolved", "closed", "cancelled"]
        assert all(t["paused"] for t in held["sla"] if t["target"] != "response")
        r = await _move(api, order["id"], "en_route")
        assert r.status_code == 409, r.text
        assert r.json()["legal_transitions"] == held["legal_transitions"]
        back = await _moved(api, order["id"], "accepted")
        assert back["state"] == "accepted" and back["hold_reason"] is None
        assert back["assignee_id"] == tech
        assert _moves(back)[-2:] == [("accepted", "on_hold"), ("on_hold", "accepted")]

        # Held while dispatched: back to dispatched, still with its technician, in one step.
        other = await _create(api, impact=1, urgency=1)
        assert other["assignee_id"] == tech
        await _moved(api, other["id"], "on_hold", reason="site_access")
        back = await _moved(api, other["id"], "dispatched")
        assert back["state"] == "dispatched" and back["assignee_id"] == tech
        assert _moves(back) == [
            (None, "new"),
            ("new", "dispatched"),
            ("dispatched", "on_hold"),
            ("on_hold", "dispatched"),
        ]
        assert all(t["state"] == "running" for t in back["sla"])
        await assert_rows_are_the_fold_of_their_timelines(running)


async def test_close_unresolved_needs_a_reason_and_hands_the_fault_to_a_follow_up(
    system_factory: SystemFactory,
) -> None:
    clock = FakeClock(utcnow())
    async with _system(system_factory, clock) as running:
        api = running.api
        charger = "CP-FOLLOW-UP"
        cls = await _place_charger(api, charger)
        await _technician(api, "Ada", skills=[cls["skill"]])
        async with charge_point(running, charger) as cp:
            await _boot(cp)
            await _ground_failure(cp, 0)
            (order,) = await eventually(lambda: _orders_of(api, charger))
            assert order["category"] == cls["category"] and order["state"] == "dispatched"
            for body in ({}, {"note": "a note is not a reason"}):
                r = await _move(api, order["id"], "closed", **body)
                assert r.status_code == 422, r.text
            reason = "the charger is replaced next month"
            closed = await _moved(api, order["id"], "closed", reason=reason)
            assert closed["state"] == "closed" and closed["resolution"] == "unresolved"
            assert closed["close_reason"] == reason
            assert {t["state"] for t in closed["sla"]} == {"cancelled"}
            orders = await _orders_of(api, charger)
            (follow_up,) = [o for o in orders if o["id"] != order["id"]]
            assert follow_up["parent_id"] == order["id"]
            for key in ("charger_id", "connector", "category", "priority", "skill"):
                assert follow_up[key] == order[key], key
            assert follow_up["state"] == "dispatched"  # open, and dispatched again

            # The follow-up owns the de-duplication key now: the same fault appends to it.
            await _ground_failure(cp, 1)

            async def appended() -> Order | None:
                o = await _get(api, follow_up["id"])
                return o if o["occurrences"] == 2 else None

            await eventually(appended)
            assert len(await _orders_of(api, charger)) == 2
            assert (await _get(api, order["id"]))["occurrences"] == 1
        await assert_rows_are_the_fold_of_their_timelines(running)


async def test_cancel_needs_a_reason_and_resolved_reopens_by_hand(
    system_factory: SystemFactory,
) -> None:
    clock = FakeClock(utcnow())
    async with _system(system_factory, clock) as running:
        api = running.api
        queued = await _create(api, skill="payment_terminal")  # nobody has it
        r = await _move(api, queued["id"], "cancelled")
        assert r.status_code == 422, r.text
        cancelled = await _moved(api, queued["id"], "cancelled", reason="duplicate of #1")
        assert cancelled["state"] == "cancelled"
        assert cancelled["close_reason"] == "duplicate of #1"
        assert cancelled["legal_transitions"] == []
        assert {t["state"] for t in cancelled["sla"]} == {"cancelled"}
        assert await _queue(api) == []
        r = await _move(api, queued["id"], "new")
        assert r.status_code == 409 and r.json()["legal_transitions"] == [], r.text

        tech = await _technician(api, "Ada")
        order = await _create(api, impact=1, urgency=1)
        resolved = await _moved(api, order["id"], "resolved", resolution="no_fault_found")
        assert resolved["state"] == "resolved" and resolved["resolution"] == "no_fault_found"
        assert resolved["legal_transitions"] == ["verified", "new"]
        assert {t["state"] for t in resolved["sla"]} == {"met"}
        clock.advance(timedelta(minutes=20))
        reopened = await _moved(api, order["id"], "new", note="still fails, says the driver")
        assert reopened["state"] == "dispatched" and reopened["assignee_id"] == tech
        assert reopened["resolution"] is None and reopened["resolved_at"] is None
        (entry,) = _entries(reopened, "reopened")
        assert (entry["from_state"], entry["to_state"]) == ("resolved", "new")
        # a new cycle of every clock, from the reopening
        now = clock.now()
        for target in TARGETS:
            clock_view = _clocks(reopened)[target]
            assert clock_view["state"] == "running"
            assert _due(reopened, target) == now + timedelta(seconds=clock_view["target_s"])


async def test_orders_awaiting_sign_off_do_not_hold_up_auto_closing(
    system_factory: SystemFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scanner, "BATCH", 1)  # as if a whole batch awaited a sign-off
    clock = FakeClock(utcnow())
    async with _system(system_factory, clock) as running:
        api = running.api
        await _technician(api, "Olli")
        r = await api.post("/api/v1/teams", json={"name": "Vendor X", "contract_type": "vendor"})
        assert r.status_code == 201, r.text
        team = r.json()["id"]
        await _technician(api, "Vera", team_id=team)
        vendor_order = await _create(api, impact=1, urgency=1)
        r = await api.post(
            f"{WO}/{vendor_order['id']}/escalate", json={"team_id": team, "reason": "warranty"}
        )
        assert r.status_code == 200, r.text
        assert (await _policy(api, "P1", "vendor"))["require_signoff"] is True
        await _moved(api, vendor_order["id"], "resolved")
        clock.advance(timedelta(minutes=1))
        own_order = await _create(api, impact=1, urgency=1)
        assert (await _policy(api, "P1", "own"))["require_signoff"] is False
        await _moved(api, own_order["id"], "resolved")

        clock.advance(timedelta(hours=2))  # both verification windows (1 h) are over
        assert (await _scan(running)).closed == 1
        assert (await _get(api, own_order["id"]))["state"] == "closed"
        assert (await _get(api, vendor_order["id"]))["state"] == "resolved"
        await _moved(api, vendor_order["id"], "verified")  # the sign-off
        closed = await _moved(api, vendor_order["id"], "closed")
        assert closed["state"] == "closed" and closed["resolution"] == "fixed_on_site"


# ------------------------------------------------------------------ 6. SLA timing
async def test_no_breach_while_on_hold(system_factory: SystemFactory) -> None:
    clock = FakeClock(utcnow())
    async with _system(system_factory, clock) as running:
        api = running.api
        await _technician(api, "Ada")
        order = await _create(api, impact=1, urgency=1)  # own-P1: 24x7
        response_due = _due(order, "response")
        clock.advance(timedelta(minutes=5))
        await _moved(api, order["id"], "on_hold", reason="weather")
        clock.set(response_due + timedelta(hours=1))
        result = await _scan(running)
        assert (result.warnings, result.breaches) == (0, 0)
        held = await _get(api, order["id"])
        assert {t["state"] for t in held["sla"]} == {"paused"}
        assert not _entries(held, "sla_breached") and held["priority"] == "P1"

        back = await _moved(api, order["id"], "dispatched")
        # the time on hold (1 h 10 min) is added to the deadline
        resumed_due = response_due + timedelta(hours=1, minutes=10)
        assert _due(back, "response") == resumed_due
        clock.set(resumed_due)
        result = await _scan(running)
        assert result.breaches == 1
        breached = await _get(api, order["id"])
        assert _sla_targets(breached, "sla_breached") == ["response"]
        response = _clocks(breached)["response"]
        assert response["state"] == "breached"
        assert response["due_at"] is None  # nothing pending any more


async def test_resolved_after_the_deadline_before_any_scan_is_breached_not_met(
    system_factory: SystemFactory,
) -> None:
    clock = FakeClock(utcnow())
    async with _system(system_factory, clock) as running:
        api = running.api
        await _technician(api, "Ada")
        p2 = {"impact": 1, "urgency": 2}  # own-P2: 24x7, 30 min / 8 h / 24 h
        late = await _create(api, **p2)
        cascade = await _create(api, **p2)
        assert late["priority"] == cascade["priority"] == "P2"
        created = datetime.fromisoformat(late["created_at"])
        own_p1 = await _policy(api, "P1", "own")

        # Every deadline passed, no scan ran: every target breached, none met.
        clock.set(_due(late, "resolution") + timedelta(seconds=1))
        resolved = await _moved(api, late["id"], "resolved")
        assert {t: c["state"] for t, c in _clocks(resolved).items()} == dict.fromkeys(
            TARGETS, "breached"
        )
        assert sorted(_sla_targets(resolved, "sla_breached")) == sorted(TARGETS)
        assert resolved["timeline"][-1]["to_state"] == "resolved"
        assert resolved["priority"] == "P1" and resolved["sla_policy_id"] == own_p1["id"]

        # 5 h in, only the response target (30 min) is overdue; its breach raises the
        # order to P1, whose on-site target (4 h) is then overdue too: both breached, the
        # resolution target (8 h under P1) met.
        assert own_p1["on_site_s"] < 5 * 3600 < own_p1["resolution_s"]
        clock.set(created + timedelta(hours=5))
        resolved = await _moved(api, cascade["id"], "resolved")
        assert {t: c["state"] for t, c in _clocks(resolved).items()} == {
            "response": "breached",
            "on_site": "breached",
            "resolution": "met",
        }
        assert _sla_targets(resolved, "sla_breached") == ["response", "on_site"]
        assert _sla_targets(resolved, "sla_warning") == ["response"]

        result = await _scan(running)  # nothing left to fire
        assert (result.warnings, result.breaches) == (0, 0)
        await assert_rows_are_the_fold_of_their_timelines(running)


async def test_assigned_after_the_deadline_before_any_scan_follows_the_raised_priority(
    system_factory: SystemFactory,
) -> None:
    clock = FakeClock(utcnow())
    async with _system(system_factory, clock) as running:
        api = running.api
        order = await _create(api, impact=1, urgency=2)  # P2, nobody to dispatch to
        clock.set(_due(order, "response") + timedelta(seconds=1))
        tech = await _technician(api, "Ada")
        r = await api.post(f"{WO}/{order['id']}/assign", json={"technician_id": tech})
        assert r.status_code == 200, r.text
        assigned = r.json()
        assert _sla_targets(assigned, "sla_breached") == ["response"]
        assert assigned["priority"] == "P1"
        assert assigned["sla_policy_id"] == (await _policy(api, "P1", "own"))["id"]
        assert (
            _clocks(assigned)["on_site"]["target_s"]
            == (await _policy(api, "P1", "own"))["on_site_s"]
        )


# ------------------------------------------------------------------ 8. metrics
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def _metrics(api: httpx.AsyncClient) -> Samples:
    r = await api.get("/metrics")
    assert r.status_code == 200, r.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(r.text)
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s series whose labels include ``labels``."""
    want = frozenset(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and want <= have)


def _by_label(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value for (n, labels), value in samples.items() if n == name and value}


async def _all_orders(api: httpx.AsyncClient) -> list[Order]:
    r = await api.get(WO, params={"limit": 500})
    assert r.status_code == 200, r.text
    return [await _get(api, o["id"]) for o in r.json()["items"]]


async def test_metrics_follow_the_flows(system_factory: SystemFactory) -> None:
    clock = FakeClock(utcnow())
    async with _system(system_factory, clock) as running:
        api = running.api
        charger = "CP-METRICS"
        cls = await _place_charger(api, charger)
        category = cls["category"]
        await _technician(api, "Ada", skills=[SKILL, cls["skill"]])
        before = await _metrics(api)

        def delta(after: Samples, name: str, **labels: str) -> float:
            return _value(after, name, **labels) - _value(before, name, **labels)

        # (connected throughout: a charger gone offline before the clock jump would get
        # an offline order at the scan)
        async with charge_point(running, charger) as cp:
            # A fault that clears itself: an order, dispatched, self-recovered.
            await _boot(cp)
            await _ground_failure(cp, 0)
            (fault_order,) = await eventually(lambda: _orders_of(api, charger))
            await _available(cp)

            async def self_recovered() -> bool:
                o = await _get(api, fault_order["id"])
                return bool(o["state"] == "resolved")

            await eventually(self_recovered)
            # One order nobody can take (the queue), one P1 that breaches its response.
            queued = await _create(api, skill="payment_terminal")
            urgent = await _create(api, impact=1, urgency=1)
            assert (queued["state"], urgent["state"]) == ("new", "dispatched")
            clock.set(_due(urgent, "response") + timedelta(seconds=1))
            result = await _scan(running)
            assert (result.warnings, result.breaches, result.offline_orders) == (1, 1, 0)

        async def counted() -> Samples | None:
            # after-commit effects of the bus consumer run just after its commit
            now = await _metrics(api)
            name = "chargeops_work_orders_auto_resolved_total"
            return now if delta(now, name, resolution="self_recovered") >= 1 else None

        after: Samples = await eventually(counted)
        created = "chargeops_work_orders_created_total"
        assert delta(after, created, category=category, source="fault") == 1
        assert delta(after, created, category="other", source="manual") == 2
        assert delta(after, "chargeops_fault_to_order_seconds_count") == 1
        auto = "chargeops_work_orders_auto_resolved_total"
        assert delta(after, auto, resolution="self_recovered") == 1
        assert delta(after, auto, resolution="resolved_remotely") == 0
        assert delta(after, "chargeops_sla_warnings_total", target="response") == 1
        assert delta(after, "chargeops_sla_breaches_total", target="response") == 1
        for target in ("on_site", "resolution"):
            assert delta(after, "chargeops_sla_warnings_total", target=target) == 0
            assert delta(after, "chargeops_sla_breaches_total", target=target) == 0

        # One count per state change of the timelines (creation is not a transition).
        orders = await _all_orders(api)
        moves = Counter(
            e["to_state"] for o in orders for e in o["timeline"] if e["to_state"]
        ) - Counter(o["timeline"][0]["to_state"] for o in orders)
        assert moves == Counter({"dispatched": 2, "resolved": 1})
        for state in STATES:
            transitions = "chargeops_work_order_transitions_total"
            assert delta(after, transitions, state=state) == moves[state], state

        # Gauges: what the database holds now (set by the scan).
        assert _value(after, "chargeops_dispatch_queue_length") == 1
        assert _by_label(after, "chargeops_work_orders_open") == {
            frozenset({("state", "new"), ("priority", queued["priority"])}): 1,
            frozenset({("state", "dispatched"), ("priority", "P1")}): 1,
            frozenset({("state", "resolved"), ("priority", cls["priority"])}): 1,
        }


async def test_a_person_resolving_as_recovered_is_not_counted_auto_resolved(
    system_factory: SystemFactory,
) -> None:
    """chargeops_work_orders_auto_resolved_total counts orders resolved without a person:
    a dispatcher (or technician) recording self_recovered / resolved_remotely by hand
    counted there too, inflating the remote-resolution figure operators watch."""
    clock = FakeClock(utcnow())
    async with _system(system_factory, clock) as running:
        api = running.api
        before = await _metrics(api)
        for resolution in ("self_recovered", "resolved_remotely"):
            order = await _create(api)
            done = await _moved(api, order["id"], "resolved", resolution=resolution)
            assert done["resolution"] == resolution
        after = await _metrics(api)
        auto = "chargeops_work_orders_auto_resolved_total"
        assert _value(after, auto) - _value(before, auto) == 0
        transitions = "chargeops_work_order_transitions_total"
        assert (
            _value(after, transitions, state="resolved")
            - _value(before, transitions, state="resolved")
            == 2
        )
