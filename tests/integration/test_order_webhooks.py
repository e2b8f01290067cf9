"""Work-order events reach a real local HTTP receiver: signed, retried with backoff when
the receiver fails, and listed in the delivery log over the API.

The system's own deliverer (``running.system.ticketing.webhooks``) runs on the test's
FakeClock; the test drives it with ``run_once()`` and waits for the delivery log (its
background loop may deliver first: either way each delivery is made once)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from services.clock import FakeClock
from services.db import utcnow
from tests.conftest import SystemFactory, eventually
from tests.webhook_receiver import Receiver, running_receiver
from tests.work_order_helpers import ensure_site
from ticketing.webhooks.delivery import WebhookDeliverer
from ticketing.webhooks.signing import verify

WO = "/api/v1/work-orders"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(utcnow())


@pytest.fixture
async def receiver(clock: FakeClock) -> AsyncIterator[Receiver]:
    async with running_receiver(clock) as server:
        yield server


async def _deliveries(api: httpx.AsyncClient, hook_id: int) -> list[dict[str, Any]]:
    r = await api.get(f"/api/v1/webhooks/{hook_id}/deliveries", params={"limit": 500})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def _settled(
    api: httpx.AsyncClient,
    deliverer: WebhookDeliverer,
    hook_id: int,
    count: int,
    *,
    failed: int = 0,
) -> list[dict[str, Any]]:
    """Deliver what is due until the log holds ``count`` deliveries, all delivered but
    ``failed`` whose first attempt failed (and is recorded)."""

    async def check() -> list[dict[str, Any]] | None:
        await deliverer.run_once()
        items = await _deliveries(api, hook_id)
        delivered = [d for d in items if d["state"] == "delivered"]
        refused = [d for d in items if d["state"] == "pending" and d["attempts"] == 1]
        settled = (len(delivered), len(refused)) == (count - failed, failed)
        return items if len(items) == count and settled else None

    result: list[dict[str, Any]] = await eventually(check)
    return result


async def test_order_events_are_delivered_signed_and_logged(
    system_factory: SystemFactory, clock: FakeClock, receiver: Receiver
) -> None:
    async with system_factory(clock=clock, ticketing_scan_interval=3600) as running:
        api = running.api
        deliverer = running.system.ticketing.webhooks
        r = await api.post("/api/v1/webhooks", json={"url": receiver.url("/chargeops")})
        assert r.status_code == 201, r.text
        hook = r.json()
        assert hook["events"] == []  # every event
        r = await api.post(
            "/api/v1/technicians",
            json={"name": "Ada", "skills": ["electrical"], "sites": ["depot"], "on_duty": True},
        )
        assert r.status_code == 201, r.text
        technician = r.json()["id"]

        # created and assigned in one transaction; the receiver fails the first request
        receiver.fail_first = 1
        await ensure_site(api, "depot")
        order = await api.post(
            WO,
            json={
                "title": "Contactor stuck",
                "site_id": "depot",
                "skill": "electrical",
                "impact": 1,
                "urgency": 1,
            },
        )
        assert order.status_code == 201, order.text
        created = order.json()
        assert created["state"] == "dispatched" and created["assignee_id"] == technician
        first = await _settled(api, deliverer, hook["id"], 2, failed=1)
        (retrying,) = [d for d in first if d["state"] == "pending"]
        assert (retrying["attempts"], retrying["last_status"]) == (1, 500)
        assert retrying["last_error"] == "HTTP 500: boom"
        retry_at = datetime.fromisoformat(retrying["next_attempt_at"])
        assert clock.now() < retry_at <= clock.now() + timedelta(seconds=10)  # backoff
        clock.set(retry_at)
        first = await _settled(api, deliverer, hook["id"], 2)
        assert sorted(d["attempts"] for d in first) == [1, 2]

        # the response target (15 min for P1) passes: warning, breach, escalation
        response = next(t for t in created["sla"] if t["target"] == "response")
        clock.set(datetime.fromisoformat(response["due_at"]) + timedelta(seconds=1))
        result = await running.system.ticketing.scanner.run_once()
        assert result.breaches == 1
        await _settled(api, deliverer, hook["id"], 5)

        for to in ("resolved", "verified", "closed"):
            r = await api.post(f"{WO}/{created['id']}/transitions", json={"to": to})
            assert r.status_code == 200, r.text
            assert r.json()["state"] == to
        log = await _settled(api, deliverer, hook["id"], 8)

    expected = [
        "created",
        "assigned",
        "warning",
        "breached",
        "escalated",
        "resolved",
        "verified",
        "closed",
    ]
    assert {d["state"] for d in log} == {"delivered"}
    assert sorted(d["event_type"] for d in log) == sorted(expected)
    assert {d["order_id"] for d in log} == {created["id"]}
    # one request per attempt (the failed one retried once), each validly signed
    assert len(receiver.requests) == len(expected) + 1
    bodies: dict[str, dict[str, Any]] = {}
    for request in receiver.requests:
        signature = request.headers["x-chargeops-signature"]
        assert verify(hook["secret"], signature, request.body, now=request.at)
        assert not verify("another secret", signature, request.body, now=request.at)
        body = json.loads(request.body)
        assert body["type"] == request.headers["x-chargeops-event"]
        assert body["id"] == request.headers["x-chargeops-event-id"]
        assert body["work_order"]["id"] == created["id"]
        bodies[body["type"]] = body
    received = Counter(r.headers["x-chargeops-event-id"] for r in receiver.requests)
    assert set(received) == {d["event_id"] for d in log}
    assert sorted(bodies) == sorted(f"work_order.{kind}" for kind in expected)
    assert bodies["work_order.assigned"]["data"] == {"technician_id": technician}
    assert bodies["work_order.assigned"]["work_order"]["state"] == "dispatched"
    assert bodies["work_order.breached"]["data"]["target"] == "response"
    assert bodies["work_order.escalated"]["data"]["escalation_contact"]
    assert bodies["work_order.resolved"]["data"] == {"resolution": "fixed_on_site"}
    assert bodies["work_order.closed"]["work_order"]["state"] == "closed"
