"""Work-order checks shared by the integration and end-to-end tests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import select

from tests.conftest import Running
from ticketing.work_orders.timeline import ENTRIES, PROJECTED, WORK_ORDERS, fold


async def get_order(running: Running, order_id: int) -> dict[str, Any]:
    """``GET /work-orders/{id}`` (with its timeline), asserting 200."""
    r = await running.api.get(f"/api/v1/work-orders/{order_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def ensure_site(api: httpx.AsyncClient, site_id: str, **fields: Any) -> None:
    """Create the site a work order names unless it exists (an unknown site is a 422)."""
    r = await api.post("/api/v1/sites", json={"id": site_id, "name": site_id, **fields})
    assert r.status_code in (201, 409), r.text


def entries_of_kind(order: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The timeline entries of ``kind`` of an order read with :func:`get_order`."""
    return [e for e in order["timeline"] if e["kind"] == kind]


async def assert_rows_are_the_fold_of_their_timelines(running: Running) -> None:
    """Rule 3: the current row of every order is derived from its timeline."""
    async with running.system.db.engine.connect() as conn:
        orders = (await conn.execute(select(WORK_ORDERS))).mappings().all()
        entries = (await conn.execute(select(ENTRIES))).mappings().all()
    assert orders
    for order in orders:
        folded = fold(dict(e) for e in entries if e["order_id"] == order["id"])
        assert {k: folded.get(k) for k in PROJECTED} == {k: order[k] for k in PROJECTED}


def order_row(
    assignee_id: int | None, state: str = "dispatched", *, at: datetime
) -> dict[str, Any]:
    """A manual S2/P2 work-order row stamped ``at``, to insert straight into the table."""
    return {
        "source": "manual",
        "type": "corrective",
        "state": state,
        "title": "broken",
        "category": "hardware",
        "severity": "S2",
        "impact": 2,
        "urgency": 2,
        "priority": "P2",
        "assignee_id": assignee_id,
        "first_seen": at,
        "last_seen": at,
        "created_at": at,
        "updated_at": at,
    }
