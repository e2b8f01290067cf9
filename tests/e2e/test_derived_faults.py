"""Derived faults, absorption and rate-limited faults, end to end with real OCPP clients.

Offline too long, reboot loops, flapping connectors and a whole site down become work
orders nobody reported; a charger-level order absorbs its connectors' orders and a
site-level order its chargers'; S4 and noisy security events open an order only at their
rate threshold; a redelivered event changes nothing. Time for the thresholds comes from
an injected clock and the scanner runs by hand (``run_once``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import pytest
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201
from sqlalchemy import func, select

from services.bus.contracts import ConnectorRef, FaultRaised, NormalizedStatus, Severity
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
from tests.work_order_helpers import (
    assert_rows_are_the_fold_of_their_timelines,
    entries_of_kind,
    get_order,
)
from ticketing.tables import ChargerAsset, ChargerSignal, FaultReport
from ticketing.work_orders import intake as intake_module
from ticketing.work_orders import store
from ticketing.work_orders.states import ACTIVE

CHARGEX = "https://chargex.inl.gov"
ASSETS = ChargerAsset.__table__
SIGNALS = ChargerSignal.__table__
REPORTS = FaultReport.__table__


# ------------------------------------------------------------------ helpers
async def _classify(running: Running, **signature: Any) -> dict[str, Any]:
    r = await running.api.post("/api/v1/fault-rules/dry-run", json=signature)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def _orders(running: Running, **params: Any) -> list[dict[str, Any]]:
    r = await running.api.get("/api/v1/work-orders", params={"limit": 500, "sort": "id", **params})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def _asset(running: Running, charger_id: str) -> dict[str, Any]:
    async with running.system.db.engine.connect() as conn:
        row = (
            (await conn.execute(select(ASSETS).where(ASSETS.c.charger_id == charger_id)))
            .mappings()
            .first()
        )
    return dict(row) if row is not None else {}


async def _signals(running: Running, charger_id: str, kind: str) -> int:
    """How many signals of ``kind`` ticketing recorded: proof the intake handled events."""
    async with running.system.db.engine.connect() as conn:
        count = await conn.execute(
            select(func.count())
            .select_from(SIGNALS)
            .where(SIGNALS.c.charger_id == charger_id, SIGNALS.c.kind == kind)
        )
    return int(count.scalar_one())


async def _has_signals(running: Running, charger_id: str, kind: str, count: int) -> bool:
    return await _signals(running, charger_id, kind) == count


async def _fault_reports(running: Running, charger_id: str) -> int:
    r = await running.api.get(
        "/api/v1/faults", params={"charger_id": charger_id, "kind": "raised", "limit": 1000}
    )
    assert r.status_code == 200, r.text
    return len(r.json())


async def _online(running: Running, charger_id: str, online: bool) -> bool:
    """Both sides agree: csms live state, and ticketing's projection of the charger."""
    r = await running.api.get(f"/api/v1/chargers/{charger_id}")
    assert r.status_code == 200, r.text
    asset = await _asset(running, charger_id)
    return bool(r.json()["online"] is online and asset and asset["online"] is online)


async def _boot16(cp: ChargerHandle) -> None:
    await cp.call(call16.BootNotification(charge_point_vendor="V", charge_point_model="M"))


async def _status16(
    cp: ChargerHandle,
    connector: int,
    status: str,
    when: datetime,
    error_code: str = "NoError",
    **extra: Any,
) -> None:
    await cp.call(
        call16.StatusNotification(
            connector_id=connector,
            error_code=error_code,
            status=status,
            timestamp=when.isoformat(),
            **extra,
        )
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(utcnow())


@pytest.fixture
async def running(system_factory: SystemFactory, clock: FakeClock) -> AsyncIterator[Running]:
    async with system_factory(clock=clock, ticketing_scan_interval=3600) as r:
        yield r


# ------------------------------------------------------------------ 1. offline
async def test_offline_too_long_opens_one_order_and_reconnecting_resolves_it(
    running: Running, clock: FakeClock
) -> None:
    charger_id = "CP-DF-OFF"
    await register(running.api, charger_id)
    cls = await _classify(running, source="derived", error_code="Offline")
    async with charge_point(running, charger_id) as cp:
        await _boot16(cp)
        await eventually(lambda: _online(running, charger_id, True))
    # The socket closed: offline after the csms grace period, on both sides.
    await eventually(lambda: _online(running, charger_id, False))
    since = (await _asset(running, charger_id))["offline_since"]
    assert since is not None
    after = timedelta(seconds=running.system.settings.offline_order_after)

    clock.set(since + after - timedelta(seconds=1))
    assert (await running.system.ticketing.scanner.run_once()).offline_orders == 0
    assert await _orders(running, charger_id=charger_id) == []

    clock.set(since + after + timedelta(seconds=1))
    assert (await running.system.ticketing.scanner.run_once()).offline_orders == 1
    (order,) = await _orders(running, charger_id=charger_id)
    assert order["source"] == "offline"
    assert order["category"] == cls["category"] == "communication"
    assert order["connector"] == "0"
    assert order["error_code"] == "Offline"
    assert order["severity"] == cls["severity"] and order["priority"] == cls["priority"]
    assert order["state"] in ACTIVE

    clock.advance(timedelta(minutes=10))
    assert (await running.system.ticketing.scanner.run_once()).offline_orders == 0
    (again,) = await _orders(running, charger_id=charger_id)
    assert again["id"] == order["id"] and again["occurrences"] == 1

    async with charge_point(running, charger_id) as cp:
        await _boot16(cp)

        async def resolved() -> dict[str, Any] | None:
            o = await get_order(running, order["id"])
            return o if o["state"] == "resolved" else None

        done = await eventually(resolved)
    assert done["resolution"] == "self_recovered"
    assert len(await _orders(running, charger_id=charger_id)) == 1
    await assert_rows_are_the_fold_of_their_timelines(running)


async def test_reconnecting_gives_back_the_port_faults_the_offline_order_absorbed(
    running: Running, clock: FakeClock
) -> None:
    """An S1 ground fault absorbed by the offline order is not cured by the reconnection:
    the connector still reports it (a 1.6 charger does not repeat its status after a
    reconnect), so it comes back as an order of its own, locked out and dispatched. It
    used to stay cancelled while the offline order resolved: no order at all."""
    charger_id = "CP-DF-OFF-GF"
    await register(running.api, charger_id)
    async with charge_point(running, charger_id) as cp:
        await _boot16(cp)
        await _status16(cp, 1, "Faulted", utcnow(), "GroundFailure")
        (fault,) = await eventually(lambda: _orders(running, charger_id=charger_id))
    await eventually(lambda: _online(running, charger_id, False))
    since = (await _asset(running, charger_id))["offline_since"]
    clock.set(since + timedelta(seconds=running.system.settings.offline_order_after + 1))
    assert (await running.system.ticketing.scanner.run_once()).offline_orders == 1
    assert (await get_order(running, fault["id"]))["absorbed_by"] is not None
    async with charge_point(running, charger_id):

        async def settled() -> list[dict[str, Any]] | None:
            items = await _orders(running, charger_id=charger_id)
            return items if len(items) == 3 else None

        fault_order, offline_order, reinstated = await eventually(settled)
    assert offline_order["source"] == "offline" and offline_order["state"] == "resolved"
    assert fault_order["state"] == "cancelled"
    assert reinstated["parent_id"] == fault["id"] and reinstated["connector"] == "1"
    assert reinstated["severity"] == "S1" and reinstated["state"] in ACTIVE
    await assert_rows_are_the_fold_of_their_timelines(running)


# ------------------------------------------------------------------ 2. reboot loop
async def test_reboot_loop_opens_one_order_and_more_boots_are_occurrences(
    running: Running, clock: FakeClock
) -> None:
    charger_id = "CP-DF-BOOT"
    await register(running.api, charger_id)
    cls = await _classify(running, source="derived", error_code="RebootLoop", connector="0")
    boots = running.system.settings.reboot_loop_boots
    window = timedelta(seconds=running.system.settings.reboot_loop_window)
    async with charge_point(running, charger_id) as cp:
        for i in range(1, boots):
            await _boot16(cp)
            await eventually(partial(_has_signals, running, charger_id, "boot", i))
        assert await _orders(running, charger_id=charger_id) == []

        await _boot16(cp)
        (order,) = await eventually(lambda: _orders(running, charger_id=charger_id))
        assert order["error_code"] == "RebootLoop" and order["connector"] == "0"
        assert order["category"] == cls["category"] and order["severity"] == cls["severity"]
        assert order["source"] == "fault"

        for _ in range(2):
            await _boot16(cp)

        async def three() -> list[dict[str, Any]] | None:
            items = await _orders(running, charger_id=charger_id)
            return items if items[0]["occurrences"] == 3 else None

        (order,) = await eventually(three)
        assert len(entries_of_kind(await get_order(running, order["id"]), "occurrence")) == 2

        # Outside the window the earlier boots no longer count: nothing is appended.
        clock.advance(window + timedelta(seconds=1))
        await _boot16(cp)
        await eventually(lambda: _has_signals(running, charger_id, "boot", boots + 3))
        (order,) = await _orders(running, charger_id=charger_id)
        assert order["occurrences"] == 3
    await assert_rows_are_the_fold_of_their_timelines(running)


# ------------------------------------------------------------------ 3. flapping
async def test_flapping_connector_opens_one_flapping_order(system_factory: SystemFactory) -> None:
    clock = FakeClock(utcnow())
    changes = 3
    async with system_factory(
        clock=clock, ticketing_scan_interval=3600, flapping_changes=changes
    ) as running:
        charger_id = "CP-DF-FLAP"
        await register(running.api, charger_id)
        cls = await _classify(running, source="derived", error_code="Flapping", connector="1")
        base = utcnow().replace(microsecond=0)
        async with charge_point(running, charger_id) as cp:
            await _boot16(cp)
            await _status16(cp, 1, "Available", base)
            # changes + 1 flips: Faulted, Available, Faulted, Available
            statuses = ["Faulted", "Available"] * ((changes + 2) // 2)
            for i, status in enumerate(statuses[:changes], start=1):
                await _status16(cp, 1, status, base + timedelta(seconds=i))
            await eventually(lambda: _has_signals(running, charger_id, "flip", changes))
            (fault,) = await eventually(lambda: _orders(running, charger_id=charger_id))
            assert fault["error_code"] == "Faulted" and fault["connector"] == "1"

            await _status16(cp, 1, statuses[changes], base + timedelta(seconds=changes + 1))

            async def two() -> list[dict[str, Any]] | None:
                items = await _orders(running, charger_id=charger_id)
                return items if len(items) == 2 else None

            items = await eventually(two)
            (flapping,) = [o for o in items if o["error_code"] == "Flapping"]
            assert flapping["connector"] == "1"
            assert flapping["category"] == cls["category"]
            assert flapping["severity"] == cls["severity"]

            # Two more flips: occurrences of the same Flapping order.
            for i in (changes + 2, changes + 3):
                status = "Faulted" if i % 2 else "Available"
                await _status16(cp, 1, status, base + timedelta(seconds=i))
            await eventually(lambda: _has_signals(running, charger_id, "flip", changes + 3))
            items = await _orders(running, charger_id=charger_id)
            assert len(items) == 2
            by_id = {o["id"]: o for o in items}
            flapping = by_id[flapping["id"]]
            assert flapping["occurrences"] == 3
            # A connector reporting Available does not cure flapping; its fault order does.
            assert flapping["state"] in ACTIVE
            fault = by_id[fault["id"]]  # the last status was Available
            assert fault["state"] == "resolved" and fault["occurrences"] == 3
            assert fault["resolution"] == "self_recovered"
        await assert_rows_are_the_fold_of_their_timelines(running)


# ------------------------------------------------------------------ 4. charger level
async def test_charger_level_order_absorbs_its_connectors_orders(running: Running) -> None:
    charger_id = "CP-DF-ABS"
    await register(running.api, charger_id)
    base = utcnow().replace(microsecond=0)
    async with charge_point(running, charger_id) as cp:
        await _boot16(cp)
        await _status16(cp, 1, "Faulted", base, "ConnectorLockFailure")
        await _status16(cp, 2, "Faulted", base, "GroundFailure")

        async def count(n: int) -> list[dict[str, Any]] | None:
            items = await _orders(running, charger_id=charger_id)
            return items if len(items) == n else None

        ports = await eventually(lambda: count(2))
        assert sorted(o["connector"] for o in ports) == ["1", "2"]

        await _status16(cp, 0, "Faulted", base + timedelta(seconds=1), "InternalError")
        items = await eventually(lambda: count(3))
        (parent,) = [o for o in items if o["connector"] == "0"]
        assert parent["state"] in ACTIVE
        for port in ports:
            child = await get_order(running, port["id"])
            assert child["state"] == "cancelled"
            assert child["absorbed_by"] == parent["id"]
            assert child["resolution"] == "absorbed"
            (entry,) = entries_of_kind(child, "absorbed")
            assert entry["to_state"] == "cancelled" and f"#{parent['id']}" in entry["note"]
        parent = await get_order(running, parent["id"])
        # The charger-level order (InternalError, S2) is at least as urgent and severe as
        # what it absorbed (a GroundFailure, S1/P1).
        assert {o["severity"] for o in ports} >= {"S1"} and parent["severity"] == "S1"
        assert parent["priority"] == "P1"
        (created,) = entries_of_kind(parent, "created")
        assert created["changes"]["severity"] == "S2"  # raised by the absorption
        absorbed = entries_of_kind(parent, "absorbed_order")
        assert sorted(e["changes"]["data"]["order_id"] for e in absorbed) == sorted(
            o["id"] for o in ports
        )

        # A later fault on connector 1 is an occurrence of the charger-level order.
        await _status16(cp, 1, "Faulted", base + timedelta(seconds=2), "ConnectorLockFailure")

        async def appended() -> dict[str, Any] | None:
            o = await get_order(running, parent["id"])
            return o if o["occurrences"] == 2 else None

        parent = await eventually(appended)
        (occurrence,) = entries_of_kind(parent, "occurrence")
        assert "(absorbed)" in occurrence["note"]
        assert len(await _orders(running, charger_id=charger_id)) == 3
        assert len(await _orders(running, charger_id=charger_id, open_only=True)) == 1
    await assert_rows_are_the_fold_of_their_timelines(running)


async def test_charger_level_order_resolved_gives_back_the_port_faults_still_reported(
    running: Running,
) -> None:
    """Connector 0 recovers: its order resolves; of the port orders it absorbed, the one
    whose connector still reports its fault comes back as an order of its own, the one
    cleared meanwhile does not."""
    charger_id = "CP-DF-ABS-BACK"
    await register(running.api, charger_id)
    base = utcnow().replace(microsecond=0)
    async with charge_point(running, charger_id) as cp:
        await _boot16(cp)
        await _status16(cp, 1, "Faulted", base, "ConnectorLockFailure")
        await _status16(cp, 2, "Faulted", base, "GroundFailure")
        await eventually(lambda: _count(running, charger_id, 2))
        await _status16(cp, 0, "Faulted", base + timedelta(seconds=1), "InternalError")
        await eventually(lambda: _count(running, charger_id, 3))
        await _status16(cp, 1, "Available", base + timedelta(seconds=2))
        await _status16(cp, 0, "Available", base + timedelta(seconds=3))
        items = await eventually(lambda: _count(running, charger_id, 4))
    port1, port2, parent, back = items
    assert parent["connector"] == "0" and parent["state"] == "resolved"
    assert port1["state"] == port2["state"] == "cancelled"
    assert back["parent_id"] == port2["id"] and back["connector"] == "2"
    assert back["category"] == port2["category"] and back["state"] in ACTIVE
    await assert_rows_are_the_fold_of_their_timelines(running)


async def _count(running: Running, charger_id: str, n: int) -> list[dict[str, Any]] | None:
    items = await _orders(running, charger_id=charger_id)
    return items if len(items) == n else None


# ------------------------------------------------------------------ 5. site wide
async def test_site_down_opens_one_site_order_absorbing_the_chargers(
    running: Running, clock: FakeClock
) -> None:
    site = "site-df"
    r = await running.api.post("/api/v1/sites", json={"id": site, "name": "Depot"})
    assert r.status_code == 201, r.text
    chargers = ["CP-DF-S1", "CP-DF-S2", "CP-DF-S3"]
    # Placed at the site but never connected (not commissioned yet): neither down nor
    # counted, so it does not keep the site order from resolving.
    planned = "CP-DF-S4"
    for charger_id in [*chargers, planned]:
        await register(running.api, charger_id)
        r = await running.api.put(f"/api/v1/sites/{site}/chargers/{charger_id}")
        assert r.status_code == 200, r.text
    # An order opened by hand for the site is not the engine's to absorb or resolve.
    r = await running.api.post(
        "/api/v1/work-orders", json={"title": "Repaint the bays", "site_id": site}
    )
    assert r.status_code == 201, r.text
    manual = r.json()
    cls = await _classify(running, source="derived", error_code="SiteDown")
    down, up = chargers[:2], chargers[2]
    async with AsyncExitStack() as stack:
        handles: dict[str, ChargerHandle] = {}
        for charger_id in chargers:
            handles[charger_id] = await stack.enter_async_context(charge_point(running, charger_id))
            await _boot16(handles[charger_id])
        for charger_id in chargers:
            await eventually(partial(_online, running, charger_id, True))

        for charger_id in down:
            await handles[charger_id].close()
        for charger_id in down:
            await eventually(partial(_online, running, charger_id, False))
        since = max([(await _asset(running, c))["offline_since"] for c in down])
        after = timedelta(seconds=running.system.settings.offline_order_after)
        clock.set(since + after + timedelta(seconds=1))
        await running.system.ticketing.scanner.run_once()

        (site_order,) = await _orders(running, site_id=site, open_only=True, source="fault")
        assert site_order["title"].endswith("2 of 3 chargers down")
        assert site_order["charger_id"] is None and site_order["site_id"] == site
        assert site_order["category"] == cls["category"] == "site_power"
        assert site_order["error_code"] == "SiteDown"
        per_charger = [
            o for o in await _orders(running, site_id=site, source="offline") if o["charger_id"]
        ]
        assert per_charger, "the first charger past the threshold had its own order"
        for order in per_charger:
            assert order["charger_id"] in down
            assert order["state"] == "cancelled" and order["absorbed_by"] == site_order["id"]
        detail = await get_order(running, site_order["id"])
        mentioned = " ".join(e["note"] or "" for e in detail["timeline"] if e["kind"] != "created")
        assert all(c in mentioned for c in down), mentioned
        assert up not in mentioned

        # Another scan while the site is still down adds nothing.
        clock.advance(timedelta(minutes=5))
        assert (await running.system.ticketing.scanner.run_once()).offline_orders == 0
        again = await get_order(running, site_order["id"])
        assert again["occurrences"] == detail["occurrences"]
        assert len(again["timeline"]) == len(detail["timeline"])
        assert len(await _orders(running, site_id=site)) == len(per_charger) + 2

        # Back online one by one: the site order resolves when the last one is back.
        first = await stack.enter_async_context(charge_point(running, down[0]))
        await _boot16(first)
        await eventually(lambda: _online(running, down[0], True))
        assert (await get_order(running, site_order["id"]))["state"] in ACTIVE
        second = await stack.enter_async_context(charge_point(running, down[1]))
        await _boot16(second)

        async def resolved() -> dict[str, Any] | None:
            o = await get_order(running, site_order["id"])
            return o if o["state"] == "resolved" else None

        done = await eventually(resolved)
        assert done["resolution"] == "self_recovered"
    untouched = await get_order(running, manual["id"])
    assert untouched["state"] == "new" and untouched["absorbed_by"] is None
    assert [e["kind"] for e in untouched["timeline"]] == ["created"]
    await assert_rows_are_the_fold_of_their_timelines(running)


# ------------------------------------------------------------------ 6. S4 rate threshold
def _cx009_201(i: int, when: datetime) -> call201.NotifyEvent:
    entry: dict[str, Any] = {
        "event_id": 300 + i,
        "timestamp": when.isoformat(),
        "trigger": "Alerting",
        "actual_value": "true",
        "tech_code": "CX009",
        "event_notification_type": "HardWiredNotification",
        "component": {"name": "EVSE", "evse": {"id": 1, "connector_id": 1}},
        "variable": {"name": "Problem"},
    }
    return call201.NotifyEvent(generated_at=when.isoformat(), seq_no=i, event_data=[entry])


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_s4_fault_opens_an_order_only_at_its_rate_threshold(
    running: Running, version: str
) -> None:
    charger_id = f"CP-DF-S4-{version}"
    await register(running.api, charger_id)
    if version == "1.6":
        signature = {
            "source": "status_notification",
            "error_code": "OtherError",
            "status": "available",
            "vendor_id": CHARGEX,
            "vendor_error_code": "CX009",
            "ocpp_version": "1.6",
            "connector": "1",
        }
    else:
        signature = {
            "source": "notify_event",
            "error_code": "CX009",
            "tech_code": "CX009",
            "vendor_id": CHARGEX,
            "component": "EVSE",
            "variable": "Problem",
            "ocpp_version": "2.0.1",
            "connector": "1/1",
        }
    cls = await _classify(running, **signature)
    assert cls["severity"] == "S4" and cls["rule_name"] == "cx009-authorization-timeout"
    threshold = int(cls["rate_threshold"])
    base = utcnow().replace(microsecond=0)
    async with charge_point(running, charger_id, version) as cp:

        async def report(i: int) -> None:
            when = base + timedelta(seconds=i)
            if version == "1.6":
                await _status16(
                    cp,
                    1,
                    "Available",
                    when,
                    "OtherError",
                    vendor_id=CHARGEX,
                    vendor_error_code="CX009",
                )
            else:
                await cp.call(_cx009_201(i, when))

        for i in range(1, threshold):
            await report(i)

        async def reported() -> bool:
            return await _fault_reports(running, charger_id) == threshold - 1

        await eventually(reported)
        assert await _orders(running, charger_id=charger_id) == []

        await report(threshold)
        (order,) = await eventually(lambda: _orders(running, charger_id=charger_id))
        assert order["severity"] == "S4" and order["rule_name"] == cls["rule_name"]
        assert order["connector"] == signature["connector"]
        assert order["occurrences"] == 1

        await report(threshold + 1)

        async def two() -> list[dict[str, Any]] | None:
            items = await _orders(running, charger_id=charger_id)
            return items if items[0]["occurrences"] == 2 else None

        assert len(await eventually(two)) == 1


# ------------------------------------------------------------------ 7. security events
async def test_security_events_tamper_opens_s1_failed_auth_only_at_its_rate(
    running: Running,
) -> None:
    charger_id = "CP-DF-SEC"
    await register(running.api, charger_id)
    tamper = await _classify(
        running, source="security_event", error_code="TamperDetectionActivated", connector="0"
    )
    auth = await _classify(
        running, source="security_event", error_code="FailedToAuthenticateAtCsms", connector="0"
    )
    assert tamper["severity"] == "S1" and tamper["category"] == "vandalism"
    threshold = int(auth["rate_threshold"])
    rate_kind = f"rate:{auth['rule_name']}"
    base = utcnow().replace(microsecond=0)

    def event(kind: str, i: int) -> call16.SecurityEventNotification:
        return call16.SecurityEventNotification(
            type=kind, timestamp=(base + timedelta(seconds=i)).isoformat(), tech_info=None
        )

    async with charge_point(running, charger_id) as cp:
        await _boot16(cp)
        await cp.call(event("FailedToAuthenticateAtCsms", 1))
        await cp.call(event("SettingSystemTime", 2))  # counted, never an order
        await eventually(lambda: _has_signals(running, charger_id, rate_kind, 1))

        await cp.call(event("TamperDetectionActivated", 3))
        (order,) = await eventually(lambda: _orders(running, charger_id=charger_id))
        assert order["error_code"] == "TamperDetectionActivated"
        assert order["severity"] == "S1" and order["category"] == "vandalism"
        assert order["connector"] == "0" and order["priority"] == tamper["priority"]

        for i in range(2, threshold + 1):
            await cp.call(event("FailedToAuthenticateAtCsms", 10 + i))

        async def two() -> list[dict[str, Any]] | None:
            items = await _orders(running, charger_id=charger_id)
            return items if len(items) == 2 else None

        items = await eventually(two)
        (failed,) = [o for o in items if o["error_code"] == "FailedToAuthenticateAtCsms"]
        assert failed["category"] == auth["category"] and failed["occurrences"] == 1
        assert await _signals(running, charger_id, rate_kind) == threshold

        firmware = await _classify(
            running, source="security_event", error_code="InvalidFirmwareSignature"
        )
        await cp.call(event("InvalidFirmwareSignature", 40))

        async def three() -> list[dict[str, Any]] | None:
            items = await _orders(running, charger_id=charger_id)
            return items if len(items) == 3 else None

        items = await eventually(three)
        (signature,) = [o for o in items if o["error_code"] == "InvalidFirmwareSignature"]
        assert signature["category"] == firmware["category"] == "firmware"


# ------------------------------------------------------------------ 8. redelivery
def ground_fault(charger_id: str) -> FaultRaised:
    """A new FaultRaised event (its own id) on connector 1, as csms publishes it."""
    return FaultRaised(
        charger_id=charger_id,
        received_at=utcnow(),
        connector=ConnectorRef(connector_id=1),
        source="status_notification",
        error_code="GroundFailure",
        severity=Severity.critical,
        status=NormalizedStatus.faulted,
    )


async def test_redelivered_fault_event_changes_nothing(running: Running) -> None:
    charger_id = "CP-DF-DUP"
    intake = running.system.ticketing.intake

    def fault() -> FaultRaised:
        return ground_fault(charger_id)

    async def snapshot() -> tuple[int, int, int]:
        (order,) = await _orders(running, charger_id=charger_id)
        detail = await get_order(running, order["id"])
        return (
            order["occurrences"],
            len(detail["timeline"]),
            await _fault_reports(running, charger_id),
        )

    first = fault()
    await intake.handle(first)
    once = await snapshot()
    assert once[0] == 1 and once[2] == 1
    await intake.handle(first)
    assert await snapshot() == once
    # A different event for the same fault does count: the check above could fail.
    await intake.handle(fault())
    occurrences, entries, reports = await snapshot()
    assert (occurrences, reports) == (2, 2) and entries > once[1]


async def test_a_page_of_events_is_applied_in_time_bounded_transactions(
    system_factory: SystemFactory, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded bus hands the intake pages of events; each of its transactions stops
    after a time budget (it shares the SQLite writer with chargers waiting for answers).
    With no budget at all every event is its own transaction, all are applied in order, and
    when one fails part-way the page's redelivery, one event at a time, applies only the
    rest."""
    async with system_factory(
        clock=clock, ticketing_scan_interval=3600, intake_transaction_budget_ms=0
    ) as running:
        await _page_in_transactions(running, monkeypatch)


async def _page_in_transactions(running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    charger_id = "CP-DF-BUDGET"
    intake = running.system.ticketing.intake
    assert intake.transaction_budget == 0
    real_run = store.run
    transactions: list[int] = []

    async def run_failing_the_fourth(*args: Any, **kwargs: Any) -> Any:
        fn = args[2]
        if getattr(fn, "func", None) is not intake_module._apply_some:
            return await real_run(*args, **kwargs)  # not the intake's (e.g. the scanner's)
        transactions.append(len(transactions) + 1)
        if len(transactions) == 4:
            raise RuntimeError("the database went away")
        return await real_run(*args, **kwargs)

    monkeypatch.setattr(store, "run", run_failing_the_fourth)
    page = [ground_fault(charger_id) for _ in range(6)]

    with pytest.raises(RuntimeError, match="went away"):
        await intake.handle_batch(page)
    assert transactions == [1, 2, 3, 4]
    (order,) = await _orders(running, charger_id=charger_id)
    assert order["occurrences"] == 3
    assert await _fault_reports(running, charger_id) == 3

    for event in page:  # what the bus does after a failed page
        await intake.handle(event)
    (order,) = await _orders(running, charger_id=charger_id)
    assert order["occurrences"] == 6
    assert await _fault_reports(running, charger_id) == 6
