"""One durable bus consumer on JetStream: its pull consumer and its fetch loop.

Decisions:
- One durable pull consumer per bus consumer name, bound by every process subscribing
  with that name; JetStream hands each message to one of the processes fetching (with a
  lease, only its holder fetches: see below).
- Filter: the subjects of the consumer's types. NATS before 2.10 takes one filter
  subject only: a consumer of several (not all) types then filters on every event and
  acknowledges the others unseen. The type check runs in any case.
- Acknowledged after the handler returned. A failure is nak'ed with an exponential
  delay; the attempt number is JetStream's delivery count, so it survives restarts. The
  bound is ``max_attempts``, enforced here, not by the server's ``max_deliver``
  (unlimited): at the last attempt the event is dead-lettered and only then
  acknowledged, so a poison event is never dropped silently.
- Order: in stream order while handlers succeed; a failed event is retried after the
  ones behind it (unlike the embedded bus, which retries in place).
- Slow handlers: every ``ack_wait / 3`` the batch in hand is marked in progress, so a
  slow handler causes no redelivery (which would also count as an attempt).
- Stop: between events; the rest of a fetched batch is nak'ed so that another process
  takes it at once, rather than after ``ack_wait``.
- One process at a time: with a :class:`~services.bus.nats_lease.Lease` (PostgreSQL: an
  advisory lock; SQLite: a file lock) only its holder fetches, so events are applied in
  stream order across replicas; the others wait to take over (see
  :mod:`services.bus.nats_lease`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from services.bus.base import EventHandler
from services.bus.contracts import EVENT_TYPES, parse_event
from services.bus.nats_lease import Lease
from services.bus.nats_subjects import Subjects, durable_name
from services.observability import metrics
from services.tasks import cancel_and_wait

log = logging.getLogger(__name__)

#: (consumer, message, event id, event type, attempts, error) -> durable dead letter
DeadLetterSink = Callable[[str, Msg, str, str, int, str], Awaitable[None]]

#: seconds past a fetch's wait that ``stop`` waits for the loop before cancelling it
STOP_GRACE = 2.0


@dataclass(frozen=True)
class DeliveryPolicy:
    max_attempts: int = 8
    ack_wait: float = 30.0
    retry_delay: float = 0.25
    max_retry_delay: float = 30.0
    batch: int = 100
    fetch_wait: float = 1.0

    def delay(self, attempt: int) -> float:
        """Seconds before attempt ``attempt + 1``."""
        return float(min(self.max_retry_delay, self.retry_delay * 2 ** min(attempt - 1, 30)))


class DurableConsumer:
    def __init__(
        self,
        name: str,
        types: frozenset[str],
        handler: EventHandler,
        *,
        subjects: Subjects,
        stream: str,
        policy: DeliveryPolicy,
        dead_letter: DeadLetterSink,
        lease: Lease | None = None,
    ) -> None:
        self.name = name
        self.types = types
        self._handler = handler
        self._subjects = subjects
        self._stream = stream
        self._policy = policy
        self._dead_letter = dead_letter
        self._sub: JetStreamContext.PullSubscription | None = None
        self._js: JetStreamContext | None = None
        self._lease = lease
        self._task: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._inflight: deque[Msg] = deque()
        self._batch_no = 0
        self._stopping = False
        #: events of the consumer not yet fetched by anyone, as of the last fetch
        self._pending = 0

    def config(self, multi_filter: bool) -> ConsumerConfig:
        """``multi_filter``: the server takes several filter subjects (NATS 2.10+)."""
        single: str | None = None
        several: list[str] | None = None
        if self.types >= EVENT_TYPES:
            single = self._subjects.all_events
        elif len(self.types) == 1:
            single = self._subjects.event(next(iter(self.types)))
        elif multi_filter:
            several = sorted(self._subjects.event(t) for t in self.types)
        else:
            single = self._subjects.all_events
        return ConsumerConfig(
            durable_name=durable_name(self.name),
            description=f"ChargeOps bus consumer {self.name}",
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._policy.ack_wait,
            max_deliver=-1,
            filter_subject=single,
            filter_subjects=several,
        )

    async def ensure(self, js: JetStreamContext, multi_filter: bool) -> None:
        """Create or update the durable consumer; bind the pull subscription once."""
        await js.add_consumer(self._stream, self.config(multi_filter))
        self._js = js
        if self._sub is None:
            self._sub = await js.pull_subscribe_bind(
                durable=durable_name(self.name), stream=self._stream
            )

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"bus:{self.name}")
        self._keeper = asyncio.create_task(self._keep_alive(), name=f"bus:{self.name}:wpi")

    async def stop(self) -> None:
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            await asyncio.wait({task}, timeout=self._policy.fetch_wait + STOP_GRACE)
            await cancel_and_wait(task)
        await cancel_and_wait(self._keeper)
        self._keeper = None
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if self._lease is not None:
            await self._lease.release()

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            assert self._sub is not None
            if self._lease is not None and not await self._hold_lease():
                # another process consumes: its figure is the backlog, not a stale one here
                self._pending = 0
                self._report_backlog()
                await asyncio.sleep(self._policy.fetch_wait)
                continue
            try:
                msgs = await self._sub.fetch(self._policy.batch, timeout=self._policy.fetch_wait)
            except TimeoutError:
                self._pending = 0  # nothing waits for this consumer
                self._report_backlog()
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                if failures == 1 or failures % 50 == 0:
                    log.warning("bus consumer %s: fetch failed (%d): %s", self.name, failures, exc)
                await asyncio.sleep(self._policy.delay(failures))
                continue
            failures = 0
            self._pending = _pending_after(msgs)
            await self._handle_batch(msgs)

    async def _hold_lease(self) -> bool:
        """True while this process may fetch: it holds the lease (checked before each
        fetch), or has just taken it over."""
        assert self._lease is not None
        try:
            if self._lease.held:
                return await self._lease.still_held()
            if not await self._lease.try_acquire():
                return False
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("bus consumer %s: taking the consumer lock failed: %s", self.name, exc)
            return False
        await self._after_takeover()
        return True

    async def _after_takeover(self) -> None:
        """If the previous holder left events unacknowledged (it died mid-batch), wait until
        JetStream redelivers them (``ack_wait``): they come before the events behind them."""
        pending = 1
        with contextlib.suppress(Exception):
            assert self._js is not None
            info = await self._js.consumer_info(self._stream, durable_name(self.name))
            pending = info.num_ack_pending or 0
        if pending:
            log.info(
                "bus consumer %s: %d events of the previous holder unacknowledged; waiting "
                "%.0fs for their redelivery",
                self.name,
                pending,
                self._policy.ack_wait,
            )
            await asyncio.sleep(self._policy.ack_wait)

    async def _handle_batch(self, msgs: list[Msg]) -> None:
        self._inflight = deque(msgs)
        self._batch_no += 1
        try:
            while self._inflight:
                self._report_backlog()
                if self._stopping:
                    for msg in self._inflight:
                        await self._settle(msg, ack=False, delay=0.0)
                    return
                await self._deliver(self._inflight[0])
                self._inflight.popleft()
        finally:
            self._inflight = deque()
            self._report_backlog()

    def _report_backlog(self) -> None:
        """``chargeops_bus_outbox_backlog{consumer}``: the events of this consumer that no
        process has fetched yet (JetStream's count at the last fetch) plus those fetched
        here and not handled yet. An event waiting for a delayed retry is not counted."""
        metrics.child(metrics.OUTBOX_BACKLOG, self.name).set(len(self._inflight) + self._pending)

    async def _deliver(self, msg: Msg) -> None:
        try:
            type_ = self._subjects.event_type(msg.subject)
        except ValueError:
            type_ = ""
        if type_ not in self.types:
            await self._settle(msg, ack=True)  # the server-side filter is wider (NATS < 2.10)
            return
        attempt = msg.metadata.num_delivered
        try:
            await self._handler(parse_event(msg.data))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(msg, type_, attempt, f"{type(exc).__name__}: {exc}")
            return
        metrics.EVENTS_DELIVERED.labels(self.name, "ok").inc()
        await self._settle(msg, ack=True)

    async def _failed(self, msg: Msg, type_: str, attempt: int, error: str) -> None:
        event_id = (msg.headers or {}).get("Nats-Msg-Id", "")
        limit = self._policy.max_attempts
        log.warning(
            "bus consumer %s: event %s (%s) failed, attempt %d/%d: %s",
            self.name,
            event_id,
            type_,
            attempt,
            limit,
            error,
        )
        metrics.EVENTS_DELIVERED.labels(self.name, "retry").inc()
        if attempt < limit:
            await self._settle(msg, ack=False, delay=self._policy.delay(attempt))
            return
        try:
            await self._dead_letter(self.name, msg, event_id, type_, attempt, error)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("bus consumer %s: dead-lettering event %s failed", self.name, event_id)
            await self._settle(msg, ack=False, delay=self._policy.delay(attempt))
            return
        metrics.EVENTS_DELIVERED.labels(self.name, "dead_letter").inc()
        await self._settle(msg, ack=True)

    async def _settle(self, msg: Msg, *, ack: bool, delay: float = 0.0) -> None:
        """Ack or nak; a lost acknowledgement only means a redelivery."""
        try:
            if ack:
                await msg.ack()
            else:
                await msg.nak(delay=delay or None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("bus consumer %s: acknowledging failed: %s", self.name, exc)

    async def _keep_alive(self) -> None:
        period = self._policy.ack_wait / 3
        seen = 0
        while True:
            await asyncio.sleep(period)
            if self._inflight and self._batch_no == seen:
                for msg in list(self._inflight):
                    with contextlib.suppress(Exception):
                        await msg.in_progress()
            seen = self._batch_no


def _pending_after(msgs: list[Msg]) -> int:
    """Events of the consumer still on the server after this batch (from the last
    message's JetStream metadata; 0 if it carries none)."""
    if not msgs:
        return 0
    try:
        return max(0, int(msgs[-1].metadata.num_pending or 0))
    except Exception:  # not a JetStream message: no metadata to read
        return 0
