"""Webhooks end to end: enqueue in a transaction, deliver to a real local HTTP server,
retry with backoff on a fake clock, the delivery log, redelivery, and the API's rules."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.api_auth import create_token
from services.clock import FakeClock
from services.committer import GroupCommitter
from services.db import Database
from services.observability.metrics import REGISTRY
from tests.conftest import Running, eventually
from tests.webhook_receiver import Receiver, running_receiver
from ticketing.api import webhooks as webhooks_api
from ticketing.tx import transact
from ticketing.webhooks.delivery import WebhookDeliverer
from ticketing.webhooks.outbox import enqueue
from ticketing.webhooks.signing import verify

#: Far ahead of the real clock: deliveries due at fake times are never due for a
#: deliverer the process may run on the real clock, so only the test's one sends them.
START = datetime(2100, 1, 1, 12, 0, tzinfo=UTC)
BASE_DELAY = 10.0
MAX_DELAY = 60.0
MAX_ATTEMPTS = 4


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as server:
        yield server


# ------------------------------------------------------------------ the system under test
@pytest.fixture
def api(running: Running) -> httpx.AsyncClient:
    app = running.system.app
    # until mounted in ticketing/api
    if not any(getattr(r, "path", "").startswith("/api/v1/webhooks") for r in app.routes):
        app.include_router(webhooks_api.router, prefix="/api/v1")
    return running.api


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


def make_deliverer(
    db: Database, committer: GroupCommitter, clock: FakeClock, *, poll_interval: float = 5.0
) -> WebhookDeliverer:
    return WebhookDeliverer(
        db,
        committer,
        clock,
        http_timeout=5.0,
        max_attempts=MAX_ATTEMPTS,
        base_delay=BASE_DELAY,
        max_delay=MAX_DELAY,
        poll_interval=poll_interval,
    )


@pytest.fixture
async def deliverer(running: Running, clock: FakeClock) -> AsyncIterator[WebhookDeliverer]:
    d = make_deliverer(running.system.db, running.system.committer, clock)
    try:
        yield d
    finally:
        await d.stop()


async def create_hook(api: httpx.AsyncClient, url: str, **fields: Any) -> dict[str, Any]:
    r = await api.post("/api/v1/webhooks", json={"url": url, **fields})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def deliveries(api: httpx.AsyncClient, hook_id: int, **params: Any) -> list[dict[str, Any]]:
    r = await api.get(f"/api/v1/webhooks/{hook_id}/deliveries", params=params)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def order(order_id: int = 41) -> dict[str, Any]:
    return {
        "id": order_id,
        "state": "new",
        "priority": "P2",
        "charger_id": "CP-1",
        "created_at": START - timedelta(minutes=3),
    }


async def publish(
    running: Running,
    clock: FakeClock,
    event_id: str,
    event_type: str = "created",
    *,
    at: datetime | None = None,
) -> int:
    now = at if at is not None else clock.now()
    inserted: int = await transact(
        running.system.committer,
        lambda c: enqueue(
            c, event_type=event_type, event_id=event_id, order=order(), now=now, data={"n": 1}
        ),
    )
    return inserted


def counted(outcome: str) -> float:
    value = REGISTRY.get_sample_value("chargeops_webhook_deliveries_total", {"outcome": outcome})
    return value or 0.0


# ------------------------------------------------------------------ delivery
async def test_event_is_delivered_once_signed(
    running: Running,
    api: httpx.AsyncClient,
    receiver: Receiver,
    deliverer: WebhookDeliverer,
    clock: FakeClock,
) -> None:
    hook = await create_hook(api, receiver.url(), description="ops bridge")
    delivered_before = counted("delivered")

    assert await publish(running, clock, "evt-1") == 1
    assert await deliverer.run_once() == 1
    assert await deliverer.run_once() == 0

    [request] = receiver.requests
    assert request.path == "/hook"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-chargeops-event"] == "work_order.created"
    assert request.headers["x-chargeops-event-id"] == "evt-1"
    signature = request.headers["x-chargeops-signature"]
    assert verify(hook["secret"], signature, request.body, now=clock.now())
    assert not verify(hook["secret"], signature, request.body + b" ", now=clock.now())
    document = json.loads(request.body)
    assert document == {
        "id": "evt-1",
        "type": "work_order.created",
        "occurred_at": "2100-01-01T12:00:00Z",
        "work_order": {
            "id": 41,
            "state": "new",
            "priority": "P2",
            "charger_id": "CP-1",
            "created_at": "2100-01-01T11:57:00Z",
        },
        "data": {"n": 1},
    }
    [entry] = await deliveries(api, hook["id"])
    assert request.headers["x-chargeops-delivery"] == str(entry["id"])
    assert entry["state"] == "delivered"
    assert entry["attempts"] == 1
    assert entry["last_status"] == 204
    assert entry["order_id"] == 41
    assert entry["event_type"] == "created"
    assert entry["next_attempt_at"] is None
    assert entry["delivered_at"] is not None
    assert counted("delivered") == delivered_before + 1


async def test_failing_receiver_gets_retries_with_backoff(
    running: Running,
    api: httpx.AsyncClient,
    receiver: Receiver,
    deliverer: WebhookDeliverer,
    clock: FakeClock,
) -> None:
    hook = await create_hook(api, receiver.url())
    receiver.fail_first = 2
    await publish(running, clock, "evt-retry")

    for attempt, delay in ((1, BASE_DELAY), (2, 2 * BASE_DELAY)):
        assert await deliverer.run_once() == 1
        [entry] = await deliveries(api, hook["id"])
        assert entry["state"] == "pending"
        assert entry["attempts"] == attempt
        assert entry["last_status"] == 500
        assert entry["last_error"] == "HTTP 500: boom"
        due = datetime.fromisoformat(entry["next_attempt_at"])
        assert clock.now() + timedelta(seconds=0.79 * delay) <= due
        assert due <= clock.now() + timedelta(seconds=delay)
        assert await deliverer.run_once() == 0  # not due yet
        clock.set(due)

    assert await deliverer.run_once() == 1
    [entry] = await deliveries(api, hook["id"])
    assert entry["state"] == "delivered"
    assert entry["attempts"] == 3
    assert entry["last_status"] == 204
    assert entry["last_error"] is None
    assert [r.headers["x-chargeops-event-id"] for r in receiver.requests] == ["evt-retry"] * 3
    assert verify(
        hook["secret"],
        receiver.requests[-1].headers["x-chargeops-signature"],
        receiver.requests[-1].body,
        now=clock.now(),
    )


async def test_permanent_failure_ends_failed_and_can_be_redelivered(
    running: Running,
    api: httpx.AsyncClient,
    receiver: Receiver,
    deliverer: WebhookDeliverer,
    clock: FakeClock,
) -> None:
    hook = await create_hook(api, receiver.url())
    receiver.always_fail = True
    await publish(running, clock, "evt-doomed")

    for _ in range(MAX_ATTEMPTS):
        assert await deliverer.run_once() == 1
        clock.advance(timedelta(seconds=MAX_DELAY))
    assert await deliverer.run_once() == 0
    [entry] = await deliveries(api, hook["id"], state="failed")
    assert entry["attempts"] == MAX_ATTEMPTS
    assert entry["next_attempt_at"] is None
    assert entry["last_status"] == 500
    assert len(receiver.requests) == MAX_ATTEMPTS
    assert await deliveries(api, hook["id"], state="pending") == []

    receiver.always_fail = False
    url = f"/api/v1/webhooks/{hook['id']}/deliveries/{entry['id']}/redeliver"
    r = await api.post(url)
    assert r.status_code == 202, r.text
    assert r.json()["state"] == "pending"
    assert r.json()["attempts"] == 0

    async def delivered() -> bool:
        await deliverer.run_once()
        [current] = await deliveries(api, hook["id"])
        return bool(current["state"] == "delivered")

    await eventually(delivered)
    [current] = await deliveries(api, hook["id"])
    assert current["attempts"] == 1
    assert len(receiver.requests) == MAX_ATTEMPTS + 1
    assert receiver.requests[-1].headers["x-chargeops-event-id"] == "evt-doomed"
    # A pending delivery cannot be redelivered; an unknown one is 404.
    await publish(running, clock, "evt-pending")
    [pending] = await deliveries(api, hook["id"], state="pending")
    r = await api.post(f"/api/v1/webhooks/{hook['id']}/deliveries/{pending['id']}/redeliver")
    assert r.status_code == 409, r.text
    r = await api.post(f"/api/v1/webhooks/{hook['id']}/deliveries/999999/redeliver")
    assert r.status_code == 404, r.text


async def test_unreachable_receiver_is_retried_with_the_error_logged(
    running: Running,
    api: httpx.AsyncClient,
    receiver: Receiver,
    deliverer: WebhookDeliverer,
    clock: FakeClock,
) -> None:
    url = receiver.url()
    await receiver.close()  # nothing listens on that port any more
    hook = await create_hook(api, url)
    await publish(running, clock, "evt-unreachable")
    assert await deliverer.run_once() == 1
    [entry] = await deliveries(api, hook["id"])
    assert entry["state"] == "pending"
    assert entry["attempts"] == 1
    assert entry["last_status"] is None
    assert entry["last_error"].startswith("ConnectError")


async def test_running_deliverer_wakes_up_on_commit(
    running: Running, api: httpx.AsyncClient, receiver: Receiver, clock: FakeClock
) -> None:
    await create_hook(api, receiver.url())
    later = clock.now() + timedelta(seconds=60)
    await publish(running, clock, "evt-queued-earlier", at=later)
    # Polls once an hour: only the commit hook can make it deliver within the test.
    looping = make_deliverer(
        running.system.db, running.system.committer, clock, poll_interval=3600.0
    )
    looping.start()
    try:
        await asyncio.sleep(0)  # its first claim has read the clock: nothing is due yet
        clock.set(later)
        await publish(running, clock, "evt-just-committed")

        async def both_received() -> bool:
            return len(receiver.requests) == 2

        await eventually(both_received)
    finally:
        await looping.stop()
    ids = sorted(r.headers["x-chargeops-event-id"] for r in receiver.requests)
    assert ids == ["evt-just-committed", "evt-queued-earlier"]


async def test_receiver_that_never_answers_times_out(
    running: Running, api: httpx.AsyncClient, receiver: Receiver, clock: FakeClock
) -> None:
    hook = await create_hook(api, receiver.url())
    receiver.hang = True
    await publish(running, clock, "evt-slow")
    impatient = WebhookDeliverer(
        running.system.db, running.system.committer, clock, http_timeout=0.2
    )
    try:
        assert await impatient.run_once() == 1
    finally:
        await impatient.stop()
    [entry] = await deliveries(api, hook["id"])
    assert entry["state"] == "pending"
    assert entry["attempts"] == 1
    assert entry["last_status"] is None
    assert entry["last_error"].startswith("timeout")


async def test_duplicate_event_id_is_delivered_once(
    running: Running,
    api: httpx.AsyncClient,
    receiver: Receiver,
    deliverer: WebhookDeliverer,
    clock: FakeClock,
) -> None:
    await create_hook(api, receiver.url())
    assert await publish(running, clock, "evt-dup") == 1
    assert await publish(running, clock, "evt-dup") == 0
    assert await deliverer.run_once() == 1
    clock.advance(timedelta(hours=2))
    assert await deliverer.run_once() == 0
    assert len(receiver.requests) == 1


async def test_disabled_and_unsubscribed_hooks_get_nothing(
    running: Running,
    api: httpx.AsyncClient,
    receiver: Receiver,
    deliverer: WebhookDeliverer,
    clock: FakeClock,
) -> None:
    await create_hook(api, receiver.url("/resolved-only"), events=["resolved"])
    await create_hook(api, receiver.url("/disabled"), enabled=False)
    wanted = await create_hook(api, receiver.url("/created"), events=["created", "closed"])

    assert await publish(running, clock, "evt-a", "created") == 1
    assert await deliverer.run_once() == 1
    assert [r.path for r in receiver.requests] == ["/created"]

    # Disabling pauses what is already queued; enabling again sends it.
    r = await api.patch(f"/api/v1/webhooks/{wanted['id']}", json={"enabled": False})
    assert r.status_code == 200, r.text
    assert r.json()["enabled"] is False
    r = await api.patch(f"/api/v1/webhooks/{wanted['id']}", json={"enabled": True})
    assert r.json()["events"] == ["created", "closed"]
    assert await publish(running, clock, "evt-b", "closed") == 1
    await api.patch(f"/api/v1/webhooks/{wanted['id']}", json={"enabled": False})
    assert await deliverer.run_once() == 0
    await api.patch(f"/api/v1/webhooks/{wanted['id']}", json={"enabled": True})
    assert await deliverer.run_once() == 1
    assert [r.path for r in receiver.requests] == ["/created", "/created"]


async def test_replicas_never_deliver_the_same_row_twice(
    running: Running,
    api: httpx.AsyncClient,
    receiver: Receiver,
    deliverer: WebhookDeliverer,
    clock: FakeClock,
) -> None:
    await create_hook(api, receiver.url())
    for n in range(12):
        await publish(running, clock, f"evt-{n}")
    # A second "replica": its own engine, committer and deliverer on the same database.
    other_db = Database(running.system.db.url)
    other_committer = GroupCommitter(other_db.engine, sync_engine=other_db.writer_engine())
    other_committer.start()
    other = make_deliverer(other_db, other_committer, clock)
    try:
        made = await asyncio.gather(deliverer.run_once(), other.run_once())
    finally:
        await other.stop()
        await other_committer.close()
        await other_db.dispose()
    assert sum(made) == 12
    ids = [r.headers["x-chargeops-event-id"] for r in receiver.requests]
    assert sorted(ids) == sorted(f"evt-{n}" for n in range(12))


async def test_ping_goes_to_that_hook_only(
    api: httpx.AsyncClient, receiver: Receiver, deliverer: WebhookDeliverer
) -> None:
    await create_hook(api, receiver.url("/other"))
    hook = await create_hook(api, receiver.url("/pinged"), events=["breached"])
    r = await api.post(f"/api/v1/webhooks/{hook['id']}/test")
    assert r.status_code == 202, r.text
    assert r.json()["event_type"] == "ping"

    async def received() -> bool:
        await deliverer.run_once()
        return bool(receiver.requests)

    await eventually(received)
    [request] = receiver.requests
    assert request.path == "/pinged"
    assert request.headers["x-chargeops-event"] == "work_order.ping"
    assert json.loads(request.body)["data"] == {"webhook_id": hook["id"]}


async def test_test_ping_to_disabled_hook_is_refused(api: httpx.AsyncClient) -> None:
    hook = await create_hook(api, "https://example.test/hook", enabled=False)
    r = await api.post(f"/api/v1/webhooks/{hook['id']}/test")
    assert r.status_code == 409, r.text


# ------------------------------------------------------------------ the API's rules
async def test_secret_is_shown_only_on_create_and_rotate(
    running: Running,
    api: httpx.AsyncClient,
    receiver: Receiver,
    deliverer: WebhookDeliverer,
    clock: FakeClock,
) -> None:
    hook = await create_hook(api, receiver.url(), events=["created"])
    secret = hook["secret"]
    assert len(secret) >= 43
    hook_url = f"/api/v1/webhooks/{hook['id']}"
    await publish(running, clock, "evt-s")
    await deliverer.run_once()
    answers = [
        await api.get("/api/v1/webhooks"),
        await api.get(hook_url),
        await api.patch(hook_url, json={"description": "changed"}),
        await api.get(f"{hook_url}/deliveries"),
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert secret not in answer.text
        assert "secret" not in answer.text

    r = await api.post(f"{hook_url}/rotate-secret")
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    rotated = r.json()["secret"]
    assert rotated != secret
    await publish(running, clock, "evt-after-rotation")
    assert await deliverer.run_once() == 1
    last = receiver.requests[-1]
    assert verify(rotated, last.headers["x-chargeops-signature"], last.body, now=clock.now())
    assert not verify(secret, last.headers["x-chargeops-signature"], last.body, now=clock.now())


async def test_roles(running: Running, api: httpx.AsyncClient) -> None:
    hook = await create_hook(api, "https://example.test/hook")
    viewer = await create_token(running.system.db, "viewer-1", "viewer")
    dispatcher = await create_token(running.system.db, "dispatcher-1", "dispatcher")
    body = {"url": "https://example.test/other"}
    as_viewer = {"Authorization": f"Bearer {viewer}"}
    as_dispatcher = {"Authorization": f"Bearer {dispatcher}"}

    r = await api.post("/api/v1/webhooks", json=body, headers=as_viewer)
    assert r.status_code == 403, r.text
    r = await api.get("/api/v1/webhooks", headers=as_viewer)
    assert r.status_code == 403, r.text
    r = await api.get("/api/v1/webhooks", headers=as_dispatcher)
    assert r.status_code == 200, r.text
    r = await api.post("/api/v1/webhooks", json=body, headers=as_dispatcher)
    assert r.status_code == 403, r.text
    r = await api.delete(f"/api/v1/webhooks/{hook['id']}", headers=as_dispatcher)
    assert r.status_code == 403, r.text
    r = await api.get("/api/v1/webhooks", headers={"Authorization": ""})
    assert r.status_code == 401, r.text


@pytest.mark.parametrize(
    "body",
    [
        {"url": "ftp://example.test/hook"},
        {"url": "example.test/hook"},
        {"url": "https://user:pw@example.test/hook"},
        {"url": "https://example.test/" + "a" * 2000},
        {"url": "https://example.test/hook", "events": ["exploded"]},
        {"url": "https://example.test/hook", "secret": "chosen-by-me"},
    ],
)
async def test_invalid_webhooks_are_refused(api: httpx.AsyncClient, body: dict[str, Any]) -> None:
    r = await api.post("/api/v1/webhooks", json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")


async def test_update_delete_and_unknown_ids(api: httpx.AsyncClient) -> None:
    hook = await create_hook(api, "https://example.test/hook", events=["created", "created"])
    assert hook["events"] == ["created"]
    hook_url = f"/api/v1/webhooks/{hook['id']}"
    r = await api.patch(hook_url, json={"url": None})
    assert r.status_code == 422, r.text
    r = await api.patch(hook_url, json={"url": "https://example.test/v2", "events": []})
    assert r.status_code == 200, r.text
    assert r.json()["url"] == "https://example.test/v2"
    assert r.json()["events"] == []
    r = await api.delete(hook_url)
    assert r.status_code == 204, r.text
    for method, path in (
        ("GET", hook_url),
        ("PATCH", hook_url),
        ("DELETE", hook_url),
        ("GET", f"{hook_url}/deliveries"),
        ("POST", f"{hook_url}/rotate-secret"),
        ("POST", f"{hook_url}/test"),
    ):
        kwargs: dict[str, Any] = {"json": {"enabled": False}} if method == "PATCH" else {}
        r = await api.request(method, path, **kwargs)
        assert r.status_code == 404, (method, path, r.text)


async def test_deliveries_are_paged_newest_first(
    running: Running, api: httpx.AsyncClient, clock: FakeClock
) -> None:
    hook = await create_hook(api, "https://example.test/hook")
    for n in range(5):
        await publish(running, clock, f"evt-page-{n}")
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    for _ in range(5):
        r = await api.get(f"/api/v1/webhooks/{hook['id']}/deliveries", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        seen += [item["event_id"] for item in page["items"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == [f"evt-page-{n}" for n in reversed(range(5))]
