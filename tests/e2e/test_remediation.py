"""Remote-first remediation, end to end with real OCPP charge points that answer commands.

A 1.6 charger that recovers after a soft reset: its port-down order runs the playbook
(trigger, availability cycle, reset) and resolves remotely, nobody dispatched. A 2.0.1
charger that stays faulted: after the last step the order is dispatched with every
attempt on its timeline (and the reset refused by the per-charger budget). An S1 fault:
dispatched at once and the connector locked out. A technician may command the charger
of their own order only.
"""

from __future__ import annotations

import asyncio
import functools
from datetime import timedelta
from typing import Any

import httpx
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint as Cp16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v201 import ChargePoint as Cp201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201
from prometheus_client.parser import text_string_to_metric_families

from services.api_auth import create_token
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
from tests.e2e.test_work_orders import _problem
from tests.work_order_helpers import assert_rows_are_the_fold_of_their_timelines
from ticketing.remediation.playbooks import playbooks
from ticketing.remediation.runner import RemediationRunner


class Recovering16(Cp16):  # type: ignore[misc]
    """Answers the remote fixes; comes back Available after a soft reset."""

    received: list[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received = []

    @on(Action16.trigger_message)
    def on_trigger(self, requested_message: str, **_: Any) -> result16.TriggerMessage:
        self.received.append(f"TriggerMessage:{requested_message}")
        return result16.TriggerMessage(status="Accepted")

    @on(Action16.change_availability)
    def on_availability(self, connector_id: int, type: str) -> result16.ChangeAvailability:
        self.received.append(f"ChangeAvailability:{connector_id}:{type}")
        return result16.ChangeAvailability(status="Accepted")

    @on(Action16.reset)
    def on_reset(self, type: str) -> result16.Reset:
        self.received.append(f"Reset:{type}")
        return result16.Reset(status="Accepted")

    @after(Action16.reset)
    async def after_reset(self, **_: Any) -> None:
        asyncio.get_running_loop().create_task(self._back_up())

    async def _back_up(self) -> None:
        await self.call(
            call16.StatusNotification(connector_id=1, error_code="NoError", status="Available")
        )


class Stubborn201(Cp201):  # type: ignore[misc]
    """Answers every remote fix and stays faulted."""

    received: list[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received = []

    @on(Action201.trigger_message)
    def on_trigger(self, requested_message: str, **_: Any) -> result201.TriggerMessage:
        self.received.append(f"TriggerMessage:{requested_message}")
        return result201.TriggerMessage(status="Accepted")

    @on(Action201.change_availability)
    def on_availability(self, operational_status: str, **_: Any) -> result201.ChangeAvailability:
        self.received.append(f"ChangeAvailability:{operational_status}")
        return result201.ChangeAvailability(status="Accepted")

    @on(Action201.reset)
    def on_reset(self, type: str, **_: Any) -> result201.Reset:
        self.received.append(f"Reset:{type}")
        return result201.Reset(status="Accepted")


async def _faulted_into_remote_fix(
    running: Running, cp: ChargerHandle, charger_id: str
) -> dict[str, Any]:
    """Boot the 1.6 charger, report connector 1 Faulted/InternalError (playbook
    port_down_generic) and return its order once it is in remote_fix."""
    await cp.call(call16.BootNotification(charge_point_vendor="V", charge_point_model="M"))
    await cp.call(
        call16.StatusNotification(connector_id=1, error_code="InternalError", status="Faulted")
    )

    async def in_remote_fix() -> dict[str, Any] | None:
        order = await _order(running, charger_id)
        return order if order and order["state"] == "remote_fix" else None

    order: dict[str, Any] = await eventually(in_remote_fix)
    return order


async def _order(running: Running, charger_id: str) -> dict[str, Any] | None:
    r = await running.api.get("/api/v1/work-orders", params={"charger_id": charger_id})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    if not items:
        return None
    detail = await running.api.get(f"/api/v1/work-orders/{items[0]['id']}")
    body: dict[str, Any] = detail.json()
    return body


async def _technician(api: httpx.AsyncClient, user: str | None = None) -> int:
    skills = sorted(
        {rule["skill"] for rule in (await api.get("/api/v1/fault-rules")).json()} - {None}
    )
    body: dict[str, Any] = {"name": "Ann", "regions": ["*"], "skills": skills, "max_concurrent": 50}
    if user:
        body["user_name"] = user
    r = await api.post("/api/v1/technicians", json=body)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def _playbook_of(api: httpx.AsyncClient, signature: dict[str, Any]) -> str:
    r = await api.post("/api/v1/fault-rules/dry-run", json=signature)
    assert r.status_code == 200, r.text
    body = r.json()
    playbook: str = body.get("classification", body)["playbook"]
    return playbook


def _attempts(order: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in order["timeline"] if e["kind"] == "remote_fix_attempt"]


async def _run_playbook(running: Running, clock: FakeClock, until: str) -> dict[str, Any]:
    """Run the remediation, moving the clock past each wait, until the order is ``until``."""
    runner = running.system.ticketing.remediation
    for _ in range(10):
        await runner.run_once()
        clock.advance(timedelta(seconds=301))
        r = await running.api.get("/api/v1/remediation/stats")
        if r.json()["total"]["running"] == 0:
            break
    order_id = (await running.api.get("/api/v1/work-orders")).json()["items"][0]["id"]

    async def reached() -> dict[str, Any] | None:
        body: dict[str, Any] = (await running.api.get(f"/api/v1/work-orders/{order_id}")).json()
        return body if body["state"] == until else None

    result: dict[str, Any] = await eventually(reached)
    return result


async def test_16_port_down_recovers_after_soft_reset(system_factory: SystemFactory) -> None:
    clock = FakeClock(utcnow())
    async with system_factory(clock=clock, ticketing_scan_interval=3600) as running:
        await _technician(running.api)
        signature = {"source": "status_notification", "error_code": "InternalError",
                     "status": "faulted", "ocpp_version": "1.6", "connector": "1"}  # fmt: skip
        assert await _playbook_of(running.api, signature) == "port_down_generic"
        await register(running.api, "CP-FIX-16")
        async with charge_point(running, "CP-FIX-16", cp_class=Recovering16) as cp:
            order = await _faulted_into_remote_fix(running, cp, "CP-FIX-16")
            assert order["assignee_id"] is None

            # Until the reset is answered the charger stays faulted; then it comes back.
            runner = running.system.ticketing.remediation
            for _ in range(6):
                await runner.run_once()
                if "Reset:Soft" in cp.cp.received:
                    break
                clock.advance(timedelta(seconds=301))

            async def resolved() -> dict[str, Any] | None:
                o = await _order(running, "CP-FIX-16")
                return o if o and o["state"] == "resolved" else None

            done = await eventually(resolved)
            assert done["resolution"] == "resolved_remotely"
            assert done["assignee_id"] is None  # nobody dispatched
            assert "assigned" not in [e["kind"] for e in done["timeline"]]
            assert cp.cp.received == [
                "TriggerMessage:StatusNotification",
                "ChangeAvailability:1:Inoperative",
                "ChangeAvailability:1:Operative",
                "Reset:Soft",
            ]
            assert [a["changes"]["data"]["command"] for a in _attempts(done)] == [
                "trigger-message", "change-availability", "change-availability", "reset",
            ]  # fmt: skip
            clock.advance(timedelta(seconds=301))
            await runner.run_once()
            stats = (await running.api.get("/api/v1/remediation/stats")).json()
            assert stats["total"]["succeeded"] == 1 and stats["total"]["failed"] == 0
            assert stats["total"]["remote_resolution_rate"] == 1.0
            commands = await running.api.get("/api/v1/commands", params={"order_id": done["id"]})
            assert commands.status_code == 200, commands.text
            assert len(commands.json()["items"]) == 4


async def test_201_stays_faulted_and_is_dispatched_with_the_attempts(
    system_factory: SystemFactory,
) -> None:
    clock = FakeClock(utcnow())
    async with system_factory(
        clock=clock, ticketing_scan_interval=3600, auto_reset_budget=0
    ) as running:
        technician = await _technician(running.api)
        signature = {"source": "status_notification", "error_code": "Faulted",
                     "status": "faulted", "ocpp_version": "2.0.1", "connector": "1/1"}  # fmt: skip
        assert await _playbook_of(running.api, signature) == "port_down_generic"
        await register(running.api, "CP-FIX-201")
        async with charge_point(running, "CP-FIX-201", "2.0.1", cp_class=Stubborn201) as cp:
            await cp.call(
                call201.BootNotification(
                    charging_station={"vendor_name": "V", "model": "M"}, reason="PowerUp"
                )
            )
            await cp.call(
                call201.StatusNotification(
                    timestamp=utcnow().isoformat(),
                    connector_status="Faulted",
                    evse_id=1,
                    connector_id=1,
                )
            )

            async def in_remote_fix() -> dict[str, Any] | None:
                order = await _order(running, "CP-FIX-201")
                return order if order and order["state"] == "remote_fix" else None

            await eventually(in_remote_fix)
            order = await _run_playbook(running, clock, "dispatched")
            assert order["assignee_id"] == technician
            attempts = _attempts(order)
            assert [a["changes"]["data"]["command"] for a in attempts] == [
                "trigger-message", "change-availability", "change-availability", "reset",
            ]  # fmt: skip
            reset = attempts[-1]["changes"]["data"]
            assert reset["outcome"] == "skipped" and "budget" in reset["detail"]
            assert "Reset:Soft" not in cp.cp.received  # refused by the budget, never sent
            failed = [
                e
                for e in order["timeline"]
                if e["to_state"] == "new" and e["from_state"] == "remote_fix"
            ]
            assert len(failed) == 1 and len(failed[0]["changes"]["data"]["attempts"]) == 4
            stats = (await running.api.get("/api/v1/remediation/stats")).json()
            assert stats["total"]["failed"] == 1 and stats["total"]["remote_resolution_rate"] == 0.0


async def test_s1_is_dispatched_at_once_and_locked_out(system_factory: SystemFactory) -> None:
    clock = FakeClock(utcnow())
    async with system_factory(clock=clock, ticketing_scan_interval=3600) as running:
        technician = await _technician(running.api)
        await register(running.api, "CP-S1")
        async with charge_point(running, "CP-S1", cp_class=Recovering16) as cp:
            await cp.call(call16.BootNotification(charge_point_vendor="V", charge_point_model="M"))
            await cp.call(
                call16.StatusNotification(
                    connector_id=1, error_code="GroundFailure", status="Faulted"
                )
            )

            async def dispatched() -> dict[str, Any] | None:
                order = await _order(running, "CP-S1")
                return order if order and order["state"] == "dispatched" else None

            order = await eventually(dispatched)
            assert order["severity"] == "S1" and order["assignee_id"] == technician
            await running.system.ticketing.remediation.run_once()
            assert cp.cp.received == ["ChangeAvailability:1:Inoperative"]
            order = await _order(running, "CP-S1")
            assert order is not None
            assert [e["kind"] for e in order["timeline"]].count("lockout") == 1
            assert order["state"] == "dispatched"  # the lockout leaves it Unavailable, not healthy


async def test_technician_may_command_only_the_charger_of_their_order(
    system_factory: SystemFactory,
) -> None:
    clock = FakeClock(utcnow())
    async with system_factory(clock=clock, ticketing_scan_interval=3600) as running:
        token = await create_token(running.system.db, "tess", "technician")
        await _technician(running.api, user="tess")
        for charger in ("CP-MINE", "CP-OTHER"):
            await register(running.api, charger)
        r = await running.api.post(
            "/api/v1/work-orders",
            json={"title": "check", "charger_id": "CP-MINE", "connector": "1"},
        )
        assert r.status_code == 201 and r.json()["state"] == "dispatched", r.text
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            charge_point(running, "CP-MINE", cp_class=Recovering16),
            charge_point(running, "CP-OTHER", cp_class=Recovering16),
        ):
            mine = await running.api.post(
                "/api/v1/chargers/CP-MINE/commands/trigger-message",
                json={"message": "StatusNotification"},
                headers=headers,
            )
            assert mine.status_code == 200, mine.text
            other = await running.api.post(
                "/api/v1/chargers/CP-OTHER/commands/trigger-message",
                json={"message": "StatusNotification"},
                headers=headers,
            )
            assert other.status_code == 403, other.text


async def test_technician_may_command_the_chargers_of_their_site_order(
    system_factory: SystemFactory,
) -> None:
    """A site-level order (a site-power order has no charger) assigned to a technician is
    about the site's chargers: they may command those (before: 403, the check looked only
    at the order's charger), not a charger at another site."""
    clock = FakeClock(utcnow())
    async with system_factory(clock=clock, ticketing_scan_interval=3600) as running:
        token = await create_token(running.system.db, "sid", "technician")
        await _technician(running.api, user="sid")
        for site, charger in (("site-t", "CP-SITE-T"), ("site-u", "CP-SITE-U")):
            r = await running.api.post("/api/v1/sites", json={"id": site, "name": site})
            assert r.status_code == 201, r.text
            await register(running.api, charger)
            r = await running.api.put(f"/api/v1/sites/{site}/chargers/{charger}")
            assert r.status_code == 200, r.text
        r = await running.api.post(
            "/api/v1/work-orders", json={"title": "site dark", "site_id": "site-t"}
        )
        assert r.status_code == 201 and r.json()["state"] == "dispatched", r.text
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            charge_point(running, "CP-SITE-T", cp_class=Recovering16) as mine,
            charge_point(running, "CP-SITE-U", cp_class=Recovering16) as other,
        ):
            for charger, status in (("CP-SITE-T", 200), ("CP-SITE-U", 403)):
                r = await running.api.post(
                    f"/api/v1/chargers/{charger}/commands/trigger-message",
                    json={"message": "StatusNotification"},
                    headers=headers,
                )
                assert r.status_code == status, (charger, r.text)
            assert mine.cp.received == ["TriggerMessage:StatusNotification"]
            assert other.cp.received == []


async def test_released_from_hold_the_remote_fix_goes_on_where_it_stopped(
    system_factory: SystemFactory,
) -> None:
    """An order put on hold during its remote fix stops the playbook (the runner finds it
    elsewhere); released back to remote_fix, the playbook goes on from the step it stopped
    at. Before, nothing ran: no assignee, not in the dispatcher queue, in remote_fix for
    good."""
    clock = FakeClock(utcnow())
    async with system_factory(clock=clock, ticketing_scan_interval=3600) as running:
        await _technician(running.api)
        await register(running.api, "CP-HOLD")
        async with charge_point(running, "CP-HOLD", cp_class=Recovering16) as cp:
            order = await _faulted_into_remote_fix(running, cp, "CP-HOLD")
            path = f"/api/v1/work-orders/{order['id']}/transitions"
            runner = running.system.ticketing.remediation
            await runner.run_once()  # step 1: trigger, then a wait
            r = await running.api.post(path, json={"to": "on_hold", "reason": "site_access"})
            assert r.status_code == 200, r.text
            clock.advance(timedelta(seconds=61))
            await runner.run_once()  # finds the order on hold: the playbook stops
            assert (await running.api.get("/api/v1/remediation/stats")).json()["total"][
                "stopped"
            ] == 1
            r = await running.api.post(path, json={"to": "remote_fix"})
            assert r.status_code == 200, r.text
            released = r.json()["timeline"][-1]
            assert released["to_state"] == "remote_fix"
            assert released["changes"]["data"]["remediation"]["step"] == 1
            for _ in range(6):
                await runner.run_once()
                if "Reset:Soft" in cp.cp.received:
                    break
                clock.advance(timedelta(seconds=301))

            async def resolved() -> dict[str, Any] | None:
                o = await _order(running, "CP-HOLD")
                return o if o and o["state"] == "resolved" else None

            done = await eventually(resolved)
            assert done["resolution"] == "resolved_remotely"
            assert cp.cp.received == [
                "TriggerMessage:StatusNotification",
                "ChangeAvailability:1:Inoperative",
                "ChangeAvailability:1:Operative",
                "Reset:Soft",
            ]


async def _one_s1_order(running: Running, station: str) -> list[dict[str, Any]] | None:
    """The station's orders once exactly one is active and it is S1, with both reports."""
    r = await running.api.get("/api/v1/work-orders", params={"charger_id": station})
    items: list[dict[str, Any]] = r.json()["items"]
    active = [o for o in items if o["state"] != "cancelled"]
    reports = sum(o["occurrences"] for o in items)
    ok = len(active) == 1 and active[0]["severity"] == "S1" and reports == 2
    return items if ok else None


async def test_201_problem_and_faulted_status_are_one_order_and_the_lockout_stays(
    system_factory: SystemFactory,
) -> None:
    """A 2.0.1 station reports a welded contactor (NotifyEvent CX017, S1) and its connector
    Faulted, in either order: one order, locked out, no remote fix. The bare Faulted used to
    open a second (S2 port-down) order whose playbook cycled the connector back to
    Operative and reset the station, undoing the lockout."""
    clock = FakeClock(utcnow())
    async with system_factory(clock=clock, ticketing_scan_interval=3600) as running:
        await _technician(running.api)
        stations = {"CP-CX-FIRST": "problem first", "CP-ST-FIRST": "status first"}
        for station, first in stations.items():
            await register(running.api, station)
            async with charge_point(running, station, "2.0.1", cp_class=Stubborn201) as cp:
                await cp.call(
                    call201.BootNotification(
                        charging_station={"vendor_name": "V", "model": "M"}, reason="PowerUp"
                    )
                )
                at = utcnow().replace(microsecond=0)
                faulted = call201.StatusNotification(
                    timestamp=at.isoformat(), connector_status="Faulted", evse_id=1, connector_id=1
                )
                reports = [_problem(7, at, raised=True), faulted]
                for report in reports if first == "problem first" else reports[::-1]:
                    await cp.call(report)

                items = await eventually(functools.partial(_one_s1_order, running, station))
                [order] = [o for o in items if o["state"] != "cancelled"]
                assert order["severity"] == "S1" and order["state"] == "dispatched", first
                if first == "status first":  # the bare Faulted's order went into the S1 one
                    [generic] = [o for o in items if o["state"] == "cancelled"]
                    assert generic["absorbed_by"] == order["id"]
                runner = running.system.ticketing.remediation
                for _ in range(6):
                    await runner.run_once()
                    clock.advance(timedelta(seconds=301))
                assert cp.cp.received == ["ChangeAvailability:Inoperative"], first
        await assert_rows_are_the_fold_of_their_timelines(running)


class SlowToTrigger16(Cp16):  # type: ignore[misc]
    """Takes a while to answer TriggerMessage; counts what it was sent."""

    received: list[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received = []

    @on(Action16.trigger_message)
    async def on_trigger(self, requested_message: str, **_: Any) -> result16.TriggerMessage:
        self.received.append(f"TriggerMessage:{requested_message}")
        await asyncio.sleep(0.5)
        return result16.TriggerMessage(status="Accepted")


async def test_a_second_runner_does_not_send_the_step_in_flight_again(
    system_factory: SystemFactory,
) -> None:
    """Runners (one per ticketing replica) share the remediations through a lease. While
    one waits for the charger's answer, the lease covers the call timeout: another runner
    finding the remediation later (its first lease of 120 s run out, as when a runner
    works through many unanswered chargers one after another) does not send the same
    command again."""
    clock = FakeClock(utcnow())
    async with system_factory(clock=clock, ticketing_scan_interval=3600) as running:
        await _technician(running.api)
        await register(running.api, "CP-TWO-RUNNERS")
        async with charge_point(running, "CP-TWO-RUNNERS", cp_class=SlowToTrigger16) as cp:
            await _faulted_into_remote_fix(running, cp, "CP-TWO-RUNNERS")
            first = running.system.ticketing.remediation
            second = RemediationRunner(
                first.committer,
                first.bus,
                clock,
                call_timeout=first.call_timeout,
                reset_budget=first.reset_budget,
                reset_window=first.reset_window,
                interval=3600,
            )
            in_flight = asyncio.create_task(first.run_once())
            await eventually(lambda: _received(cp))
            clock.advance(timedelta(seconds=121))
            await second.run_once()
            await in_flight
            assert cp.cp.received == ["TriggerMessage:StatusNotification"]
            order = await _order(running, "CP-TWO-RUNNERS")
            assert order is not None and len(_attempts(order)) == 1


async def _received(cp: Any) -> bool:
    return bool(cp.cp.received)


async def test_recovered_before_any_remote_step_is_self_recovered(
    system_factory: SystemFactory,
) -> None:
    """A charger back to Available before the playbook's first command recovered by
    itself: the order resolves self_recovered and the remediation does not count as a
    remote fix that worked (it was resolved_remotely and a success, inflating the
    remote-resolution rate with every brief fault)."""
    clock = FakeClock(utcnow())
    async with system_factory(clock=clock, ticketing_scan_interval=3600) as running:
        await _technician(running.api)
        await register(running.api, "CP-BRIEF")
        async with charge_point(running, "CP-BRIEF", cp_class=Recovering16) as cp:
            await _faulted_into_remote_fix(running, cp, "CP-BRIEF")
            await cp.call(
                call16.StatusNotification(connector_id=1, error_code="NoError", status="Available")
            )

            async def resolved() -> dict[str, Any] | None:
                order = await _order(running, "CP-BRIEF")
                return order if order and order["state"] == "resolved" else None

            done = await eventually(resolved)
            assert done["resolution"] == "self_recovered"
            await running.system.ticketing.remediation.run_once()
            assert cp.cp.received == []
            stats = (await running.api.get("/api/v1/remediation/stats")).json()["total"]
            assert stats["succeeded"] == 0 and stats["remote_resolution_rate"] is None


class Refusing16(Cp16):  # type: ignore[misc]
    """Refuses to take a connector out of service."""

    @on(Action16.change_availability)
    def on_availability(self, **_: Any) -> result16.ChangeAvailability:
        return result16.ChangeAvailability(status="Rejected")


async def test_a_lockout_the_charger_refuses_is_not_done(system_factory: SystemFactory) -> None:
    """The S1 lockout answered Rejected: the port may still be in service. The remediation
    ends lockout_failed (API and chargeops_remediations_total), not done as if applied."""
    clock = FakeClock(utcnow())
    async with system_factory(clock=clock, ticketing_scan_interval=3600) as running:
        await _technician(running.api)
        await register(running.api, "CP-S1-NO")
        async with charge_point(running, "CP-S1-NO", cp_class=Refusing16) as cp:
            await cp.call(call16.BootNotification(charge_point_vendor="V", charge_point_model="M"))
            await cp.call(
                call16.StatusNotification(
                    connector_id=1, error_code="GroundFailure", status="Faulted"
                )
            )

            async def dispatched() -> dict[str, Any] | None:
                order = await _order(running, "CP-S1-NO")
                return order if order and order["state"] == "dispatched" else None

            await eventually(dispatched)
            before = _lockouts((await running.api.get("/metrics")).text)
            await running.system.ticketing.remediation.run_once()
        stats = (await running.api.get("/api/v1/remediation/stats")).json()["total"]
        assert (stats["done"], stats["lockout_failed"]) == (0, 1)
        after = _lockouts((await running.api.get("/metrics")).text)
        assert after["lockout_failed"] - before["lockout_failed"] == 1
        assert after["done"] == before["done"]


def _lockouts(text: str) -> dict[str, float]:
    values = {"done": 0.0, "lockout_failed": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "chargeops_remediations_total":
                if sample.labels.get("playbook") == "lockout":
                    outcome = sample.labels["outcome"]
                    values[outcome] = values.get(outcome, 0.0) + sample.value
    return values


async def test_no_remote_fix_to_run_is_refused_and_a_follow_up_runs_its_playbook(
    system_factory: SystemFactory,
) -> None:
    """An order whose fault has no remote-first playbook (here one opened by hand) may not
    go to remote_fix: nothing would run it, nobody is assigned and it is not in the
    dispatcher queue (before, it sat there for good). The follow-up of a closed port-down
    order carries its playbook but had no remediation of its own: moved to remote_fix, its
    playbook now runs from the first step (before, nothing ran)."""
    clock = FakeClock(utcnow())
    async with system_factory(clock=clock, ticketing_scan_interval=3600) as running:
        await register(running.api, "CP-NOFIX")
        r = await running.api.post(
            "/api/v1/work-orders", json={"title": "check", "charger_id": "CP-NOFIX"}
        )
        assert r.status_code == 201 and r.json()["state"] == "new", r.text
        manual = r.json()
        assert "remote_fix" not in manual["legal_transitions"]
        path = f"/api/v1/work-orders/{manual['id']}/transitions"
        r = await running.api.post(path, json={"to": "remote_fix"})
        assert r.status_code == 409, r.text
        assert "no remote fix to run" in r.json()["detail"]
        assert "remote_fix" not in r.json()["legal_transitions"]
        assert (await running.api.get(f"/api/v1/work-orders/{manual['id']}")).json()[
            "state"
        ] == "new"

        await register(running.api, "CP-FOLLOW")
        async with charge_point(running, "CP-FOLLOW", cp_class=Recovering16) as cp:
            order = await _faulted_into_remote_fix(running, cp, "CP-FOLLOW")
            r = await running.api.post(
                f"/api/v1/work-orders/{order['id']}/transitions",
                json={"to": "closed", "reason": "contract moved"},
            )
            assert r.status_code == 200, r.text
            items = (
                await running.api.get(
                    "/api/v1/work-orders", params={"charger_id": "CP-FOLLOW", "state": "new"}
                )
            ).json()["items"]
            [follow_up] = [o for o in items if o["parent_id"] == order["id"]]
            assert follow_up["playbook"] == "port_down_generic"
            assert "remote_fix" in follow_up["legal_transitions"]
            r = await running.api.post(
                f"/api/v1/work-orders/{follow_up['id']}/transitions", json={"to": "remote_fix"}
            )
            assert r.status_code == 200, r.text
            assert r.json()["timeline"][-1]["changes"]["data"]["remediation"]["step"] == 0
            await running.system.ticketing.remediation.run_once()
            assert cp.cp.received == ["TriggerMessage:StatusNotification"]


async def test_undelivered_steps_are_retried_a_limited_number_of_times_then_dispatched(
    system_factory: SystemFactory,
) -> None:
    """A step whose command never reaches the charger (outcome ``unavailable``: the bus
    or the charger's node unreachable) is tried again, but only the playbook's
    ``undelivered_tries`` times: then the remote fix has failed and the order goes to
    dispatch with the attempts (before, it was retried every minute for ever and nobody
    was sent)."""
    clock = FakeClock(utcnow())
    async with system_factory(clock=clock, ticketing_scan_interval=3600) as running:
        await _technician(running.api)
        await register(running.api, "CP-LOST")
        async with charge_point(running, "CP-LOST", cp_class=Recovering16) as cp:
            order = await _faulted_into_remote_fix(running, cp, "CP-LOST")
            bus = running.system.bus

            async def unreachable(request: Any) -> Any:  # noqa: ARG001
                raise ConnectionError("no route to the charger's node")

            bus.request_command = unreachable  # type: ignore[method-assign]
            runner = running.system.ticketing.remediation
            tries = playbooks()["port_down_generic"].undelivered_tries
            for _ in range(tries + 5):
                await runner.run_once()
                clock.advance(timedelta(seconds=61))
            done = await _order(running, "CP-LOST")
            assert done is not None and done["id"] == order["id"]
            assert done["state"] == "dispatched", done["state"]
            attempts = _attempts(done)
            assert len(attempts) == tries
            assert {a["changes"]["data"]["outcome"] for a in attempts} == {"unavailable"}
            assert "gave up" in attempts[-1]["note"]
            stats = (await running.api.get("/api/v1/remediation/stats")).json()["total"]
            assert stats["running"] == 0 and stats["failed"] == 1, stats
            assert cp.cp.received == []
