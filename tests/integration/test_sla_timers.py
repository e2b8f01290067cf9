"""SLA timers with an injected clock: warning and breach fire exactly once — also when
the process restarts between the deadline and the next scan — breach escalates, and
time on hold does not count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.clock import FakeClock
from services.db import utcnow
from tests.conftest import Running, SystemFactory
from tests.work_order_helpers import ensure_site, entries_of_kind, get_order


async def _create(running: Running, **fields: Any) -> dict[str, Any]:
    await ensure_site(running.api, "depot")
    body = {"title": "Cable cut at bay 3", "site_id": "depot", "impact": 1, "urgency": 1, **fields}
    r = await running.api.post("/api/v1/work-orders", json=body)
    assert r.status_code == 201, r.text
    order: dict[str, Any] = r.json()
    return order


def _due(order: dict[str, Any], target: str) -> datetime:
    (t,) = [t for t in order["sla"] if t["target"] == target]
    return datetime.fromisoformat(t["due_at"])


async def test_breach_fires_once_across_a_restart(system_factory: SystemFactory) -> None:
    clock = FakeClock(utcnow())
    async with system_factory(clock=clock, ticketing_scan_interval=3600) as running:
        order = await _create(running)
        assert order["priority"] == "P1"
        response_due = _due(order, "response")
    # Down while the deadline passes; the next process finds it due at its first scan.
    clock.set(response_due + timedelta(seconds=1))
    async with system_factory(clock=clock, ticketing_scan_interval=3600) as running:
        await running.system.ticketing.scanner.run_once()
        await running.system.ticketing.scanner.run_once()
        after = await get_order(running, order["id"])
    async with system_factory(clock=clock, ticketing_scan_interval=3600) as running:
        await running.system.ticketing.scanner.run_once()
        final = await get_order(running, order["id"])
    for snapshot in (after, final):
        breaches = [
            e
            for e in entries_of_kind(snapshot, "sla_breached")
            if e["changes"]["data"]["target"] == "response"
        ]
        warnings = [
            e
            for e in entries_of_kind(snapshot, "sla_warning")
            if e["changes"]["data"]["target"] == "response"
        ]
        assert len(breaches) == 1
        assert len(warnings) == 1
    states = {t["target"]: t["state"] for t in final["sla"]}
    assert states["response"] == "breached"
    assert final["priority"] == "P1"  # already the top: stays P1
    assert len(entries_of_kind(final, "escalation")) >= 1


async def test_breach_raises_priority_one_step(system_factory: SystemFactory) -> None:
    clock = FakeClock(utcnow())
    async with system_factory(clock=clock, ticketing_scan_interval=3600) as running:
        order = await _create(running, impact=2, urgency=2)
        assert order["priority"] == "P3"
        clock.set(_due(order, "response") + timedelta(seconds=1))
        result = await running.system.ticketing.scanner.run_once()
        assert result.breaches >= 1
        after = await get_order(running, order["id"])
        assert after["priority"] == "P2"
        breach = [
            e
            for e in entries_of_kind(after, "sla_breached")
            if e["changes"]["data"]["target"] == "response"
        ]
        assert len(breach) == 1
        # the deadline that was missed is on the timeline (the note said "due ?")
        due = _due(order, "response")
        assert datetime.fromisoformat(breach[0]["changes"]["data"]["due_at"]) == due
        assert f"(due {due.isoformat()})" in breach[0]["note"]
        escalation = entries_of_kind(after, "escalation")
        assert escalation and "escalation_contact" in escalation[0]["changes"]["data"]


async def test_time_on_hold_does_not_count(system_factory: SystemFactory) -> None:
    clock = FakeClock(utcnow())
    async with system_factory(clock=clock, ticketing_scan_interval=3600) as running:
        order = await _create(running)  # P1: a 24x7 policy, plain arithmetic
        policy = (await running.api.get(f"/api/v1/sla-policies/{order['sla_policy_id']}")).json()
        assert policy["calendar"] == "24x7"
        resolution_due = _due(await get_order(running, order["id"]), "resolution")
        clock.advance(timedelta(minutes=10))
        r = await running.api.post(
            f"/api/v1/work-orders/{order['id']}/transitions",
            json={"to": "on_hold", "reason": "parts"},
        )
        assert r.status_code == 200, r.text
        paused = {t["target"]: t for t in r.json()["sla"]}
        assert paused["resolution"]["state"] == "paused" and paused["resolution"]["due_at"] is None
        clock.advance(timedelta(hours=2))
        r = await running.api.post(
            f"/api/v1/work-orders/{order['id']}/transitions", json={"to": "new"}
        )
        assert r.status_code == 200, r.text
        resumed = {t["target"]: t for t in r.json()["sla"]}
        assert resumed["resolution"]["state"] == "running"
        assert datetime.fromisoformat(
            resumed["resolution"]["due_at"]
        ) == resolution_due + timedelta(hours=2)


async def test_breach_to_a_24x7_policy_keeps_the_business_hours_consumed(
    system_factory: SystemFactory,
) -> None:
    """A P3 order (business hours, Mon-Fri 08-18 UTC) opened on Friday at 17:00 breaches
    its 4 h response on Monday at 11:00 and becomes P2 (24x7): its other clocks have used
    4 business hours, not the 66 wall-clock hours since Friday (counted on the new
    calendar, they were overdue at once and breached at the next scan)."""
    friday = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)
    clock = FakeClock(friday)
    async with system_factory(clock=clock, ticketing_scan_interval=3600) as running:
        order = await _create(running, impact=2, urgency=2)
        assert order["priority"] == "P3"
        assert _due(order, "response") == datetime(2026, 11, 30, 11, 0, tzinfo=UTC)
        clock.set(_due(order, "response") + timedelta(seconds=1))
        assert (await running.system.ticketing.scanner.run_once()).breaches == 1
        after = await get_order(running, order["id"])
        assert after["priority"] == "P2"
        p2 = (await running.api.get(f"/api/v1/sla-policies/{after['sla_policy_id']}")).json()
        assert p2["calendar"] == "24x7"
        consumed = 4 * 3600
        for target in ("on_site", "resolution"):
            due = clock.now() + timedelta(seconds=p2[f"{target}_s"] - consumed)
            assert abs((_due(after, target) - due).total_seconds()) < 2, target
        clock.advance(timedelta(minutes=1))
        assert (await running.system.ticketing.scanner.run_once()).breaches == 0
