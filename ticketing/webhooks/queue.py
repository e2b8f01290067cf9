"""The delivery queue in the database: claim due deliveries, record each attempt's outcome.

Decision: a claim is a lease, not a lock held across the HTTP call. In one short
transaction the due rows are selected ``FOR UPDATE SKIP LOCKED`` (replicas on PostgreSQL
never claim the same row; SQLite has a single writer) and their ``next_attempt_at`` is
pushed to the end of the lease. If the process dies mid-call, the row becomes due again
when the lease ends: delivery is at least once, and receivers de-duplicate on the event
id. The outcome is recorded only while the row still carries the lease we set, so a late
answer never overwrites the work of a replica that took the row over.

Rows of disabled webhooks are not claimed: disabling a webhook pauses its deliveries.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from ticketing.webhooks.outbox import DELIVERIES, WEBHOOKS

#: Delivery states (the ``state`` column).
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
#: Retry delays are drawn from [(1 - JITTER) * d, d] so failing receivers are not hit in step.
JITTER = 0.2
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class Job:
    """One claimed delivery: everything needed to send it and to record the outcome."""

    delivery_id: int
    webhook_id: int
    url: str
    secret: str
    event_id: str
    event_type: str
    payload: str
    attempts: int
    lease_until: datetime


@dataclass(frozen=True)
class Outcome:
    """How one attempt went: an HTTP status (any) or an error (no answer)."""

    status: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True)
class Policy:
    max_attempts: int
    base_delay: float
    max_delay: float


def retry_delay(policy: Policy, attempts: int, rng: random.Random) -> float:
    """Seconds before the next try after ``attempts`` failed ones (exponential, jittered)."""
    delay = min(policy.base_delay * 2.0 ** (attempts - 1), policy.max_delay)
    return delay * (1.0 - JITTER * rng.random())


def bounded(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def claim(conn: Connection, *, now: datetime, lease: timedelta, limit: int) -> list[Job]:
    """Lease up to ``limit`` due deliveries of enabled webhooks, oldest due first."""
    rows = conn.execute(
        select(
            DELIVERIES.c.id,
            DELIVERIES.c.webhook_id,
            DELIVERIES.c.event_id,
            DELIVERIES.c.event_type,
            DELIVERIES.c.payload,
            DELIVERIES.c.attempts,
            WEBHOOKS.c.url,
            WEBHOOKS.c.secret,
        )
        .join(WEBHOOKS, WEBHOOKS.c.id == DELIVERIES.c.webhook_id)
        .where(
            DELIVERIES.c.state == PENDING,
            DELIVERIES.c.next_attempt_at <= now,
            WEBHOOKS.c.enabled.is_(True),
        )
        .order_by(DELIVERIES.c.next_attempt_at, DELIVERIES.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=DELIVERIES)
    ).all()
    if not rows:
        return []
    lease_until = now + lease
    # Conditional, so that a row another claimer leased since the SELECT is left alone:
    # PostgreSQL's SKIP LOCKED already ensures it, SQLite (whose driver runs the SELECT
    # before it opens the write transaction) needs it.
    leased = set(
        conn.execute(
            update(DELIVERIES)
            .where(
                DELIVERIES.c.id.in_([r.id for r in rows]),
                DELIVERIES.c.state == PENDING,
                DELIVERIES.c.next_attempt_at <= now,
            )
            .values(next_attempt_at=lease_until)
            .returning(DELIVERIES.c.id)
        ).scalars()
    )
    return [
        Job(
            delivery_id=r.id,
            webhook_id=r.webhook_id,
            url=r.url,
            secret=r.secret,
            event_id=r.event_id,
            event_type=r.event_type,
            payload=r.payload,
            attempts=r.attempts,
            lease_until=lease_until,
        )
        for r in rows
        if r.id in leased
    ]


def claim_and_count(
    conn: Connection, *, now: datetime, lease: timedelta, limit: int
) -> tuple[list[Job], int]:
    """:func:`claim`, plus how many deliveries are pending (for the gauge)."""
    jobs = claim(conn, now=now, lease=lease, limit=limit)
    pending = conn.execute(
        select(func.count()).select_from(DELIVERIES).where(DELIVERIES.c.state == PENDING)
    ).scalar_one()
    return jobs, int(pending)


def record(
    conn: Connection,
    job: Job,
    outcome: Outcome,
    *,
    now: datetime,
    policy: Policy,
    rng: random.Random,
) -> str | None:
    """Store the outcome of one attempt of ``job``; returns the delivery's new state
    (``pending`` means a retry is scheduled), or None if the lease was lost meanwhile."""
    attempts = job.attempts + 1
    values: dict[str, object] = {
        "attempts": attempts,
        "last_status": outcome.status,
        "last_error": bounded(outcome.error) if outcome.error is not None else None,
    }
    if outcome.ok:
        state = DELIVERED
        values.update(state=state, delivered_at=now, next_attempt_at=None)
    elif attempts >= policy.max_attempts:
        state = FAILED
        values.update(state=state, next_attempt_at=None)
    else:
        state = PENDING
        delay = retry_delay(policy, attempts, rng)
        values.update(next_attempt_at=now + timedelta(seconds=delay))
    result = conn.execute(
        update(DELIVERIES)
        .where(
            DELIVERIES.c.id == job.delivery_id,
            DELIVERIES.c.state == PENDING,
            DELIVERIES.c.next_attempt_at == job.lease_until,
        )
        .values(**values)
    )
    return state if result.rowcount else None
