"""Faults become work orders, end to end with real OCPP clients.

A 1.6 charger reports Faulted/GroundFailure: one S1 order with the rule's priority and
SLA deadlines, auto-assigned; ten reports are one order with ten occurrences; Available
resolves it, a recurrence within the verification window reopens it, and after the
window it is verified and closed. The same for a 2.0.1 NotifyEvent with a ChargeX
techCode, cleared later. Time for the windows comes from an injected clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from services.clock import FakeClock
from services.db import utcnow
from tests.conftest import (
    Running,
    SystemFactory,
    charge_point,
    charger_events,
    eventually,
    register,
)
from tests.work_order_helpers import assert_rows_are_the_fold_of_their_timelines, get_order
from ticketing.rules.model import priority_of
from ticketing.sla.calendar import calendar_of


async def _dispatch_setup(
    api: httpx.AsyncClient, charger_id: str, signature: dict[str, Any]
) -> tuple[dict[str, Any], int]:
    """Site + charger placement + a technician able to take the fault; returns the rule
    classification (dry-run) and the technician id."""
    r = await api.post("/api/v1/fault-rules/dry-run", json=signature)
    assert r.status_code == 200, r.text
    classification = r.json()
    site = f"site-{charger_id.lower()}"
    r = await api.post(
        "/api/v1/sites",
        json={"id": site, "name": site, "region": "north", "timezone": "Europe/Berlin"},
    )
    assert r.status_code == 201, r.text
    r = await api.put(f"/api/v1/sites/{site}/chargers/{charger_id}")
    assert r.status_code == 200, r.text
    skill = (
        classification["classification"]["skill"]
        if "classification" in classification
        else classification.get("skill")
    )
    r = await api.post(
        "/api/v1/technicians",
        json={
            "name": f"Tech {charger_id}",
            "skills": [skill] if skill else [],
            "sites": [site],
            "on_duty": True,
        },
    )
    assert r.status_code == 201, r.text
    return classification, int(r.json()["id"])


def _cls(dry_run: dict[str, Any]) -> dict[str, Any]:
    inner: dict[str, Any] = dry_run.get("classification", dry_run)
    return inner


async def _orders(running: Running, charger_id: str) -> list[dict[str, Any]]:
    r = await running.api.get(
        "/api/v1/work-orders", params={"charger_id": charger_id, "limit": 100}
    )
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def _check_deadlines(running: Running, order: dict[str, Any]) -> None:
    """Each SLA target is due at created_at + the policy's target, on its calendar."""
    r = await running.api.get(f"/api/v1/sla-policies/{order['sla_policy_id']}")
    assert r.status_code == 200, r.text
    policy = r.json()
    assert policy["priority"] in (order["priority"], None)
    cal = calendar_of(
        policy["calendar"], policy["timezone"], policy["business_hours"], policy["holidays"]
    )
    created = datetime.fromisoformat(order["created_at"])
    targets = {t["target"]: t for t in order["sla"]}
    expected = {
        name: policy[f"{name}_s"]
        for name in ("response", "on_site", "resolution")
        if policy[f"{name}_s"]
    }
    assert set(targets) == set(expected)
    for name, seconds in expected.items():
        assert datetime.fromisoformat(targets[name]["due_at"]) == cal.add(created, seconds), name


async def test_16_ground_failure_lifecycle(system_factory: SystemFactory) -> None:
    clock = FakeClock(utcnow())
    async with system_factory(clock=clock, ticketing_scan_interval=3600) as running:
        charger_id = "CP-WO-16"
        await register(running.api, charger_id)
        dry_run, technician = await _dispatch_setup(
            running.api,
            charger_id,
            {
                "source": "status_notification",
                "error_code": "GroundFailure",
                "status": "faulted",
                "ocpp_version": "1.6",
                "connector": "1",
            },
        )
        cls = _cls(dry_run)
        assert cls["severity"] == "S1"
        async with charge_point(running, charger_id) as cp:
            await cp.call(call16.BootNotification(charge_point_vendor="V", charge_point_model="M"))
            base = utcnow().replace(microsecond=0)

            async def fault(i: int) -> None:
                await cp.call(
                    call16.StatusNotification(
                        connector_id=1,
                        error_code="GroundFailure",
                        status="Faulted",
                        timestamp=(base + timedelta(seconds=i)).isoformat(),
                    )
                )

            await fault(0)
            orders = await eventually(lambda: _orders(running, charger_id))
            assert len(orders) == 1
            order = orders[0]
            assert order["severity"] == "S1"
            assert order["category"] == cls["category"]
            assert (
                order["priority"] == cls["priority"] == priority_of(cls["impact"], cls["urgency"])
            )
            assert order["state"] == "dispatched" and order["assignee_id"] == technician
            await _check_deadlines(running, order)

            for i in range(1, 10):
                await fault(i)

            async def ten() -> dict[str, Any] | None:
                items = await _orders(running, charger_id)
                return items[0] if len(items) == 1 and items[0]["occurrences"] == 10 else None

            order = await eventually(ten)
            detail = await get_order(running, order["id"])
            assert [e["kind"] for e in detail["timeline"]].count("occurrence") == 9

            # Healthy again: resolved (self-recovered: nobody went on site).
            await cp.call(
                call16.StatusNotification(connector_id=1, error_code="NoError", status="Available")
            )

            async def state_is(state: str) -> dict[str, Any] | None:
                o = await get_order(running, order["id"])
                return o if o["state"] == state else None

            resolved = await eventually(lambda: state_is("resolved"))
            assert resolved["resolution"] == "self_recovered"
            assert {t["target"]: t["state"] for t in resolved["sla"]} == {
                "response": "met",
                "on_site": "met",
                "resolution": "met",
            }

            # Recurrence within the verification window: reopened, dispatched again.
            clock.advance(timedelta(minutes=5))
            await fault(20)
            reopened = await eventually(lambda: state_is("dispatched"))
            assert reopened["occurrences"] == 11
            assert "reopened" in [e["kind"] for e in reopened["timeline"]]
            assert len(await _orders(running, charger_id)) == 1

            await cp.call(
                call16.StatusNotification(connector_id=1, error_code="NoError", status="Available")
            )
            resolved = await eventually(lambda: state_is("resolved"))
            # Before the window ends nothing closes it; after it, verified then closed.
            await running.system.ticketing.scanner.run_once()
            assert (await get_order(running, order["id"]))["state"] == "resolved"
            clock.set(datetime.fromisoformat(resolved["verify_after"]) + timedelta(seconds=1))
            result = await running.system.ticketing.scanner.run_once()
            assert result.closed == 1
            closed = await get_order(running, order["id"])
            assert closed["state"] == "closed"
            moves = [(e["from_state"], e["to_state"]) for e in closed["timeline"] if e["to_state"]]
            assert moves[-2:] == [("resolved", "verified"), ("verified", "closed")]
        await assert_rows_are_the_fold_of_their_timelines(running)


def _problem(
    event_id: int, when: datetime, *, raised: bool, code: str = "CX017"
) -> call201.NotifyEvent:
    entry: dict[str, Any] = {
        "event_id": event_id,
        "timestamp": when.isoformat(),
        "trigger": "Alerting",
        "actual_value": "true" if raised else "false",
        "tech_code": code,
        "event_notification_type": "HardWiredNotification",
        "component": {"name": "Connector", "evse": {"id": 1, "connector_id": 1}},
        "variable": {"name": "Problem"},
    }
    if not raised:
        entry["cleared"] = True
    return call201.NotifyEvent(generated_at=when.isoformat(), seq_no=0, event_data=[entry])


async def test_201_chargex_problem_lifecycle(system_factory: SystemFactory) -> None:
    clock = FakeClock(utcnow())
    async with system_factory(clock=clock, ticketing_scan_interval=3600) as running:
        charger_id = "CP-WO-201"
        await register(running.api, charger_id)
        dry_run, technician = await _dispatch_setup(
            running.api,
            charger_id,
            {
                "source": "notify_event",
                "error_code": "CX017",
                "tech_code": "CX017",
                "vendor_id": "https://chargex.inl.gov",
                "component": "Connector",
                "variable": "Problem",
                "ocpp_version": "2.0.1",
                "connector": "1/1",
            },
        )
        cls = _cls(dry_run)
        assert cls["severity"] == "S1"
        async with charge_point(running, charger_id, "2.0.1") as cp:
            await cp.call(
                call201.BootNotification(
                    charging_station={"vendor_name": "V", "model": "M"}, reason="PowerUp"
                )
            )
            base = utcnow().replace(microsecond=0)
            for i in range(10):
                await cp.call(_problem(100 + i, base + timedelta(seconds=i), raised=True))

            async def ten() -> dict[str, Any] | None:
                items = await _orders(running, charger_id)
                return items[0] if len(items) == 1 and items[0]["occurrences"] == 10 else None

            order = await eventually(ten)
            assert order["severity"] == "S1" and order["category"] == cls["category"]
            assert order["priority"] == cls["priority"]
            assert order["state"] == "dispatched" and order["assignee_id"] == technician
            assert order["connector"] == "1/1"
            await _check_deadlines(running, order)

            # The technician goes on site; the charger clears the problem: fixed on site.
            for to in ("accepted", "en_route", "on_site"):
                r = await running.api.post(
                    f"/api/v1/work-orders/{order['id']}/transitions", json={"to": to}
                )
                assert r.status_code == 200, r.text
            await cp.call(_problem(200, base + timedelta(seconds=30), raised=False))

            async def resolved() -> dict[str, Any] | None:
                o = await get_order(running, order["id"])
                return o if o["state"] == "resolved" else None

            done = await eventually(resolved)
            assert done["resolution"] == "fixed_on_site"
            clock.set(datetime.fromisoformat(done["verify_after"]) + timedelta(seconds=1))
            await running.system.ticketing.scanner.run_once()
            assert (await get_order(running, order["id"]))["state"] == "closed"
        await assert_rows_are_the_fold_of_their_timelines(running)


async def test_16_fault_cleared_into_unavailable_keeps_the_order_open(running: Running) -> None:
    """Faulted(PowerSwitchFailure) then Unavailable: the fault is cleared but the connector
    is not healthy, so the order stays open (as for 2.0.1); the clear carries the new
    status and the cleared fault's info."""
    charger_id = "CP-WO-16-UNAV"
    await register(running.api, charger_id)
    async with charge_point(running, charger_id) as cp:
        await cp.call(call16.BootNotification(charge_point_vendor="V", charge_point_model="M"))
        await cp.call(
            call16.StatusNotification(
                connector_id=1,
                error_code="PowerSwitchFailure",
                status="Faulted",
                info="contactor stuck",
            )
        )
        [order] = await eventually(lambda: _orders(running, charger_id))
        await cp.call(
            call16.StatusNotification(connector_id=1, error_code="NoError", status="Unavailable")
        )

    async def cleared() -> list[dict[str, Any]] | None:
        r = await running.api.get("/api/v1/faults", params={"charger_id": charger_id})
        rows: list[dict[str, Any]] = r.json()
        return [f for f in rows if f["kind"] == "cleared"] or None

    [report] = await eventually(cleared)
    assert (await get_order(running, order["id"]))["state"] not in ("resolved", "closed")
    assert report["error_code"] == "PowerSwitchFailure"
    assert report["info"] == "contactor stuck"
    [event] = await charger_events(running, charger_id, "FaultCleared")
    assert event["payload"]["status"] == "unavailable"


async def test_16_status_change_with_the_error_still_set_keeps_the_order_open(
    system_factory: SystemFactory,
) -> None:
    """A 1.6 connector derating (Available, HighTemperature) that starts charging with the
    errorCode still set is not healthy: its order stays open (one more occurrence), not
    resolved as self-recovered and reopened by the same report, which restarted its SLA
    clocks and sent resolved/reopened webhooks at every status change; NoError resolves."""
    clock = FakeClock(utcnow())
    async with system_factory(clock=clock, ticketing_scan_interval=3600) as running:
        charger_id = "CP-WO-16-DERATE"
        await register(running.api, charger_id)
        async with charge_point(running, charger_id) as cp:
            await cp.call(call16.BootNotification(charge_point_vendor="V", charge_point_model="M"))
            for status in ("Available", "Preparing", "Charging"):
                await cp.call(
                    call16.StatusNotification(
                        connector_id=1, error_code="HighTemperature", status=status
                    )
                )
                if status == "Available":
                    [order] = await eventually(lambda: _orders(running, charger_id))
                    clock.advance(timedelta(hours=1))

            async def three() -> dict[str, Any] | None:
                o = await get_order(running, order["id"])
                return o if o["occurrences"] == 3 else None

            current = await eventually(three)
            assert current["state"] == "new" and current["resolution"] is None
            kinds = [e["kind"] for e in current["timeline"]]
            assert kinds == ["created", "occurrence", "occurrence"], kinds
            assert {t["target"]: t["due_at"] for t in current["sla"]} == {
                t["target"]: t["due_at"] for t in order["sla"]
            }  # the clocks were not restarted
            await cp.call(
                call16.StatusNotification(connector_id=1, error_code="NoError", status="Charging")
            )

            async def resolved() -> dict[str, Any] | None:
                o = await get_order(running, order["id"])
                return o if o["state"] == "resolved" else None

            done = await eventually(resolved)
            assert done["resolution"] == "self_recovered"
        await assert_rows_are_the_fold_of_their_timelines(running)


async def test_201_problem_cleared_while_the_port_stays_faulted_keeps_its_order(
    running: Running,
) -> None:
    """A 2.0.1 station's bare Faulted status is part of its problem's order (a cut cable,
    CX026: vandalism). The problem cleared while the connector still reports Faulted: the
    port is down, the order stays; the connector Available resolves it, whatever the
    category of the problem."""
    charger_id = "CP-WO-201-CUT"
    await register(running.api, charger_id)
    async with charge_point(running, charger_id, "2.0.1") as cp:
        await cp.call(
            call201.BootNotification(
                charging_station={"vendor_name": "V", "model": "M"}, reason="PowerUp"
            )
        )
        at = utcnow().replace(microsecond=0)

        def status(connector_status: str, seconds: int) -> call201.StatusNotification:
            return call201.StatusNotification(
                timestamp=(at + timedelta(seconds=seconds)).isoformat(),
                connector_status=connector_status,
                evse_id=1,
                connector_id=1,
            )

        await cp.call(_problem(1, at, raised=True, code="CX026"))
        await cp.call(status("Faulted", 1))

        async def both() -> dict[str, Any] | None:
            items = await _orders(running, charger_id)
            return items[0] if len(items) == 1 and items[0]["occurrences"] == 2 else None

        order = await eventually(both)
        assert order["category"] == "vandalism" and order["severity"] == "S1"
        await cp.call(_problem(2, at + timedelta(seconds=2), raised=False, code="CX026"))

        async def cleared() -> bool:
            r = await running.api.get("/api/v1/faults", params={"charger_id": charger_id})
            return any(f["kind"] == "cleared" for f in r.json())

        await eventually(cleared)
        assert (await get_order(running, order["id"]))["state"] == order["state"] == "new"
        await cp.call(status("Available", 3))

        async def resolved() -> dict[str, Any] | None:
            o = await get_order(running, order["id"])
            return o if o["state"] == "resolved" else None

        done = await eventually(resolved)
        assert done["resolution"] == "self_recovered"
    await assert_rows_are_the_fold_of_their_timelines(running)


async def test_16_resolved_by_hand_while_still_faulted_is_not_verified(
    system_factory: SystemFactory,
) -> None:
    """Resolved by a person while the connector still reports its ground fault: at the end
    of the verification window the order is reopened (verification failed), not verified
    and closed with the charger Faulted and no order for it; once the connector reports
    Available it resolves and then closes."""
    clock = FakeClock(utcnow())
    async with system_factory(clock=clock, ticketing_scan_interval=3600) as running:
        charger_id = "CP-WO-16-STILL"
        await register(running.api, charger_id)
        async with charge_point(running, charger_id) as cp:
            await cp.call(call16.BootNotification(charge_point_vendor="V", charge_point_model="M"))
            await cp.call(
                call16.StatusNotification(
                    connector_id=1, error_code="GroundFailure", status="Faulted"
                )
            )
            [order] = await eventually(lambda: _orders(running, charger_id))
            r = await running.api.post(
                f"/api/v1/work-orders/{order['id']}/transitions", json={"to": "resolved"}
            )
            assert r.status_code == 200, r.text
            clock.set(datetime.fromisoformat(r.json()["verify_after"]) + timedelta(seconds=1))
            assert (await running.system.ticketing.scanner.run_once()).closed == 0
            again = await get_order(running, order["id"])
            assert again["state"] == "new" and again["resolution"] is None
            reopened = [e for e in again["timeline"] if e["kind"] == "reopened"]
            assert len(reopened) == 1 and "verification failed" in reopened[0]["note"]
            await cp.call(
                call16.StatusNotification(connector_id=1, error_code="NoError", status="Available")
            )

            async def resolved() -> dict[str, Any] | None:
                o = await get_order(running, order["id"])
                return o if o["state"] == "resolved" else None

            done = await eventually(resolved)
            clock.set(datetime.fromisoformat(done["verify_after"]) + timedelta(seconds=1))
            assert (await running.system.ticketing.scanner.run_once()).closed == 1
            assert (await get_order(running, order["id"]))["state"] == "closed"
        await assert_rows_are_the_fold_of_their_timelines(running)


async def test_16_recurrence_after_the_reopen_window_is_a_new_order(
    system_factory: SystemFactory,
) -> None:
    """The policy's reopen_window_s bounds reopening: a recurrence within it of the
    resolution reopens the order; a later one (the order still resolved: its verification
    window is longer) is a new order, a follow-up of the first, which then verifies and
    closes on its own instead of failing its verification on the new order's fault."""
    clock = FakeClock(utcnow())
    async with system_factory(clock=clock, ticketing_scan_interval=3600) as running:
        charger_id = "CP-WO-16-WINDOW"
        await register(running.api, charger_id)
        async with charge_point(running, charger_id) as cp:
            await cp.call(call16.BootNotification(charge_point_vendor="V", charge_point_model="M"))
            base = utcnow().replace(microsecond=0)

            async def report(i: int, healthy: bool = False) -> None:
                await cp.call(
                    call16.StatusNotification(
                        connector_id=1,
                        error_code="NoError" if healthy else "GroundFailure",
                        status="Available" if healthy else "Faulted",
                        timestamp=(base + timedelta(seconds=i)).isoformat(),
                    )
                )

            async def resolved() -> dict[str, Any] | None:
                o = await get_order(running, order["id"])
                return o if o["state"] == "resolved" else None

            async def reopened() -> dict[str, Any] | None:
                o = await get_order(running, order["id"])
                return o if "reopened" in [e["kind"] for e in o["timeline"]] else None

            await report(0)
            [order] = await eventually(lambda: _orders(running, charger_id))
            r = await running.api.get(f"/api/v1/sla-policies/{order['sla_policy_id']}")
            assert r.status_code == 200, r.text
            policy = {
                k: v for k, v in r.json().items() if k not in ("id", "created_at", "updated_at")
            }
            policy |= {"reopen_window_s": 600, "verification_window_s": 3600}
            r = await running.api.put(f"/api/v1/sla-policies/{order['sla_policy_id']}", json=policy)
            assert r.status_code == 200, r.text

            await report(1, healthy=True)
            await eventually(resolved)
            clock.advance(timedelta(minutes=5))
            await report(2)  # within 600 s of the resolution: reopened
            assert (await eventually(reopened))["state"] != "resolved"

            await report(3, healthy=True)
            done = await eventually(resolved)
            clock.advance(timedelta(minutes=20))
            await report(4)  # 1,200 s after the resolution: new work

            async def two() -> list[dict[str, Any]] | None:
                items = await _orders(running, charger_id)
                return items if len(items) == 2 else None

            orders = await eventually(two)
            [new] = [o for o in orders if o["id"] != order["id"]]
            assert new["parent_id"] == order["id"] and new["state"] not in ("resolved", "closed")
            first = await get_order(running, order["id"])
            assert first["state"] == "resolved" and first["occurrences"] == done["occurrences"]
            assert [e["kind"] for e in first["timeline"]][-1] == "superseded"

            # The first order's verification window ends: it closes; the recurrence is
            # the new order's, which stays open while the connector is Faulted.
            clock.set(datetime.fromisoformat(done["verify_after"]) + timedelta(seconds=1))
            assert (await running.system.ticketing.scanner.run_once()).closed == 1
            assert (await get_order(running, order["id"]))["state"] == "closed"
            assert (await get_order(running, new["id"]))["state"] == new["state"]
        await assert_rows_are_the_fold_of_their_timelines(running)
