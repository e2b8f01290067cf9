"""The webhook deliverer: sends due deliveries over HTTP, signed, with bounded concurrency.

A background loop claims due deliveries (a lease, see :mod:`ticketing.webhooks.queue`),
POSTs each one with at most ``concurrency`` requests in flight, and records the outcome:
2xx is delivered; any other status, a timeout or a connection error schedules a retry
after ``min(base_delay * 2**(attempts-1), max_delay)`` seconds (jittered) until
``max_attempts``, then the delivery is failed. Redirects are not followed (a 3xx is a
failure): the URL configured is the URL signed for.

It wakes up right after a commit that enqueued deliveries (a commit hook, see
:mod:`ticketing.webhooks.outbox`), and otherwise polls every ``poll_interval`` seconds
for retries that came due. Claims and outcomes are written through the group committer.

Logs name the webhook, delivery and event ids, never the secret, the URL or the payload.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import timedelta

import httpx
from prometheus_client import Counter, Gauge

from services.clock import Clock
from services.committer import GroupCommitter
from services.db import Database
from services.observability.metrics import REGISTRY
from services.tasks import cancel_and_wait
from ticketing.tx import transact
from ticketing.webhooks import outbox, queue, signing
from ticketing.webhooks.queue import Job, Outcome, Policy

log = logging.getLogger(__name__)

DELIVERIES_TOTAL = Counter(
    "chargeops_webhook_deliveries_total",
    "Webhook delivery attempts by outcome (delivered, retry, failed)",
    ["outcome"],
    registry=REGISTRY,
)
PENDING = Gauge(
    "chargeops_webhook_pending",
    "Webhook deliveries not yet delivered nor failed (database-wide, as last seen here)",
    registry=REGISTRY,
)

USER_AGENT = "ChargeOps-Webhooks/1"
#: How much of a refusing receiver's answer is kept in the delivery log.
ERROR_BODY_BYTES = 300
_OUTCOME_METRIC = {queue.DELIVERED: "delivered", queue.PENDING: "retry", queue.FAILED: "failed"}


class WebhookDeliverer:
    def __init__(
        self,
        db: Database,
        committer: GroupCommitter,
        clock: Clock,
        *,
        http_timeout: float = 10.0,
        max_attempts: int = 10,
        base_delay: float = 10.0,
        max_delay: float = 3600.0,
        poll_interval: float = 5.0,
        concurrency: int = 8,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if max_attempts < 1 or concurrency < 1:
            raise ValueError("max_attempts and concurrency must be at least 1")
        self._db = db
        self._committer = committer
        self._clock = clock
        self._policy = Policy(max_attempts, base_delay, max_delay)
        self._http_timeout = http_timeout
        self._lease = timedelta(seconds=http_timeout * 3)
        self._poll_interval = poll_interval
        self._concurrency = concurrency
        self._rng = rng if rng is not None else random.Random()
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=http_timeout,
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
        )
        self._wake = asyncio.Event()
        self._seen_generation = outbox.generation()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._hooked = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the background loop (idempotent)."""
        if not self._hooked:
            self._committer.on_commit(self._after_commit)
            self._hooked = True
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="webhook-deliverer")

    async def stop(self) -> None:
        """Stop the loop, cancel requests in flight (their leases run out and they are
        retried later, by this process or another) and close the HTTP client.
        Call it before the committer closes."""
        await cancel_and_wait(self._task)
        self._task = None
        for task in list(self._inflight):
            await cancel_and_wait(task)
        await self._client.aclose()

    def _after_commit(self) -> None:
        current = outbox.generation()
        if current != self._seen_generation:
            self._seen_generation = current
            self._wake.set()

    # ------------------------------------------------------------------ delivering
    async def run_once(self) -> int:
        """Deliver everything due now (per the clock) and wait for the answers.
        Returns how many attempts were made."""
        made = 0
        while True:
            jobs = await self._claim(self._concurrency)
            if not jobs:
                return made
            await asyncio.gather(*(self._attempt(job) for job in jobs))
            made += len(jobs)
            if len(jobs) < self._concurrency:
                return made

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            free = self._concurrency - len(self._inflight)
            jobs: list[Job] = []
            if free > 0:
                try:
                    jobs = await self._claim(free)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("webhooks: claiming due deliveries failed")
            for job in jobs:
                task = asyncio.create_task(self._attempt(job), name="webhook-attempt")
                self._inflight.add(task)
                task.add_done_callback(self._attempt_done)
            if jobs and len(jobs) == free:
                continue  # there may be more due: claim again once a slot frees up
            try:
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)
            except TimeoutError:
                pass

    def _attempt_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()

    async def _claim(self, limit: int) -> list[Job]:
        now, lease = self._clock.now(), self._lease
        jobs, pending = await transact(
            self._committer,
            lambda conn: queue.claim_and_count(conn, now=now, lease=lease, limit=limit),
        )
        PENDING.set(pending)
        return jobs

    async def _attempt(self, job: Job) -> None:
        try:
            outcome = await self._send(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never leave a claimed row to its lease on a bug
            log.exception("webhooks: delivery %d failed unexpectedly", job.delivery_id)
            outcome = Outcome(None, f"{type(exc).__name__}: {exc}")
        now = self._clock.now()
        policy, rng = self._policy, self._rng
        try:
            state = await transact(
                self._committer,
                lambda conn: queue.record(conn, job, outcome, now=now, policy=policy, rng=rng),
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("webhooks: recording delivery %d failed", job.delivery_id)
            return
        if state is None:
            log.warning(
                "webhooks: delivery %d was taken over or deleted while in flight; outcome dropped",
                job.delivery_id,
            )
            return
        DELIVERIES_TOTAL.labels(_OUTCOME_METRIC[state]).inc()
        if state == queue.DELIVERED:
            log.info(
                "webhooks: delivered %s %s to webhook %d (delivery %d, attempt %d)",
                job.event_type,
                job.event_id,
                job.webhook_id,
                job.delivery_id,
                job.attempts + 1,
            )
        else:
            log.warning(
                "webhooks: %s %s to webhook %d (delivery %d, attempt %d) %s: %s",
                job.event_type,
                job.event_id,
                job.webhook_id,
                job.delivery_id,
                job.attempts + 1,
                "failed for good" if state == queue.FAILED else "will be retried",
                outcome.error or f"HTTP {outcome.status}",
            )

    async def _send(self, job: Job) -> Outcome:
        body = job.payload.encode()
        headers = signing.request_headers(
            job.secret,
            int(self._clock.now().timestamp()),
            body,
            event_type=outbox.TYPE_PREFIX + job.event_type,
            event_id=job.event_id,
            delivery_id=job.delivery_id,
        )
        try:
            # httpx's timeout bounds each phase; this bounds the whole exchange, so a
            # receiver answering byte by byte cannot outlive the claim's lease.
            async with (
                asyncio.timeout(self._http_timeout),
                self._client.stream("POST", job.url, content=body, headers=headers) as r,
            ):
                if 200 <= r.status_code < 300:
                    return Outcome(r.status_code, None)
                return Outcome(r.status_code, await _error_text(r))
        except TimeoutError:
            return Outcome(None, f"timeout: no complete answer within {self._http_timeout:g}s")
        except httpx.TimeoutException as exc:
            return Outcome(None, f"timeout: {type(exc).__name__}")
        except httpx.HTTPError as exc:
            return Outcome(None, f"{type(exc).__name__}: {exc}")


async def _error_text(response: httpx.Response) -> str:
    """``HTTP <status>`` and the start of the answer's body (bounded, read no further)."""
    head = b""
    try:
        async for chunk in response.aiter_bytes():
            head += chunk
            if len(head) >= ERROR_BODY_BYTES:
                break
    except httpx.HTTPError:
        pass
    text = head[:ERROR_BODY_BYTES].decode("utf-8", errors="replace").strip()
    return f"HTTP {response.status_code}" + (f": {text}" if text else "")
