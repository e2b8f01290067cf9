"""The distributed bus: NATS JetStream for events, core NATS request/reply for commands.

Events go to ``<prefix>.events.<Type>`` in one stream (file storage, kept ``max_age``,
created or updated at start) with the event id as ``Nats-Msg-Id``: JetStream drops a
repeat within ``dedup_window``. ``publish`` returns after every PubAck, so a charger's
CALLRESULT follows a durable event. Consumers: :mod:`services.bus.nats_consumer`;
commands: :mod:`services.bus.nats_commands`; subjects: :mod:`services.bus.nats_subjects`.

Events a domain operation decides inside its own database transaction (``stage_on``) are
written to ``bus_outbox`` there and published by :mod:`services.bus.relay`; this needs a
group committer (a process without a database has no relay and writes no dead-letter
rows; dead letters are still published to ``<prefix>.dead.<consumer>``).

Connection: nats-py reconnects forever with exponential backoff and jitter
(``reconnect_min`` doubling up to ``reconnect_max``), logs every disconnect and
reconnect, and after a reconnect re-asserts the stream and the consumers (a server that
lost its data gets them back). ``start`` waits ``connect_wait`` seconds (URL option,
default 30) for a first connection and then raises
:class:`~services.settings.BusUnreachable` (one line: the servers, passwords masked, and
the last connection error). ``ping`` raises while disconnected (``/readyz`` answers 503).

Errors: :class:`NatsBusError` (``NotConnected``, ``PublishFailed``).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.client import Server
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import PubAck, RetentionPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError
from sqlalchemy.engine import Connection

from services.bus.base import Bus, CommandHandler, EventHandler
from services.bus.command_call import COMMAND_GRACE_S
from services.bus.contracts import Event
from services.bus.nats_commands import CommandRoutes
from services.bus.nats_consumer import DeliveryPolicy, DurableConsumer
from services.bus.nats_lease import Lease, lease_for
from services.bus.nats_subjects import Subjects
from services.bus.nats_url import NatsOptions
from services.bus.relay import OutboxRelay, StagedEvent
from services.bus.staging import write_outbox
from services.bus.tables import DeadLetter
from services.commands.contracts import CommandReply, CommandRequest
from services.committer import GroupCommitter, WriteSet
from services.db import table_of, utcnow
from services.observability import metrics
from services.settings import BusUnreachable, masked_url
from services.tasks import cancel_and_wait

log = logging.getLogger(__name__)

DEAD_LETTERS = table_of(DeadLetter)
MSG_ID = "Nats-Msg-Id"
#: seconds ``ping`` waits for JetStream to describe the stream
PING_TIMEOUT = 2.0


class NatsBusError(RuntimeError):
    pass


class NotConnected(NatsBusError):
    """The bus is not started, or its connection to NATS is down."""


class PublishFailed(NatsBusError):
    """At least one event of a ``publish`` got no PubAck (none of them is lost: retry)."""


class NatsBus(Bus):
    transactional_outbox = False

    def __init__(
        self,
        options: NatsOptions,
        committer: GroupCommitter | None = None,
        *,
        name: str = "chargeops",
        retry_delay: float = 0.25,
        max_retry_delay: float = 30.0,
        fetch_batch: int = 100,
        fetch_wait: float = 1.0,
        publish_timeout: float = 5.0,
        connect_wait: float | None = None,
        reconnect_min: float = 0.5,
        reconnect_max: float = 10.0,
        command_grace: float = COMMAND_GRACE_S,
        relay_poll: float = 1.0,
        relay_gap_wait: float = 10.0,
    ) -> None:
        self.options = options
        self.subjects = Subjects(options.prefix)
        self._committer = committer
        self._name = name
        self._policy = DeliveryPolicy(
            max_attempts=options.max_attempts,
            ack_wait=options.ack_wait,
            retry_delay=retry_delay,
            max_retry_delay=max_retry_delay,
            batch=fetch_batch,
            fetch_wait=fetch_wait,
        )
        self._publish_timeout = publish_timeout
        self._connect_wait = connect_wait if connect_wait is not None else options.connect_wait
        self._last_error: str | None = None
        self._reconnect_min = reconnect_min
        self._reconnect_max = reconnect_max
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._consumers: dict[str, DurableConsumer] = {}
        self._commands = CommandRoutes(self.subjects, grace=command_grace)
        self._relay: OutboxRelay | None = None
        self.supports_stage_on = committer is not None
        self.history_in_outbox = committer is not None
        self._staged = False
        #: late consumer starts and post-reconnect restores (kept: the loop holds tasks weakly)
        self._background: set[asyncio.Task[None]] = set()
        if committer is not None:
            self._relay = OutboxRelay(
                committer, self._publish_staged, poll=relay_poll, gap_wait=relay_gap_wait
            )
            committer.on_commit(self._after_commit)

    # ------------------------------------------------------------------ lifecycle
    @property
    def relay(self) -> OutboxRelay | None:
        """The outbox relay of this bus (None without a committer)."""
        return self._relay

    async def start(self) -> None:
        if self._nc is not None:
            return
        nc = NATS()
        try:
            await asyncio.wait_for(
                nc.connect(
                    servers=list(self.options.servers),
                    name=self._name,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=self._reconnect_min,  # type: ignore[arg-type]
                    reconnect_to_server_handler=self._next_server,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    error_cb=self._on_error,
                    closed_cb=self._on_closed,
                ),
                self._connect_wait,
            )
        except (TimeoutError, OSError, NatsError) as exc:
            await nc.close()
            reason = self._last_error or f"{type(exc).__name__}: {exc}"
            servers = ", ".join(masked_url(s) for s in self.options.servers)
            raise BusUnreachable(
                f"cannot reach NATS at {servers} within {self._connect_wait:g} s: {reason}"
            ) from None
        except BaseException:
            await nc.close()
            raise
        self._nc = nc
        self._js = nc.jetstream(timeout=self._publish_timeout)
        metrics.BUS_CONNECTED.set(1)
        log.info("bus: connected to NATS at %s", _where(nc))
        try:
            await self._ensure_stream()
            for consumer in self._consumers.values():
                await consumer.ensure(self._js, self._multi_filter())
        except BaseException:
            await self.close()
            raise
        for consumer in self._consumers.values():
            consumer.start()
        await self._commands.start(nc)
        if self._relay is not None:
            self._relay.start()

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        if self._relay is not None:
            await self._relay.close()
        for consumer in self._consumers.values():
            await consumer.stop()
        await self._commands.close()
        for task in list(self._background):
            await cancel_and_wait(task)
        if nc is not None:
            try:
                await nc.close()
            except Exception as exc:  # a connection already lost cannot flush
                log.warning("bus: closing the NATS connection: %s: %s", type(exc).__name__, exc)
        self._js = None
        metrics.BUS_CONNECTED.set(0)

    async def ping(self) -> None:
        js = self._jetstream()
        await asyncio.wait_for(js.stream_info(self.options.stream), PING_TIMEOUT)

    # ------------------------------------------------------------------ events
    async def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        await self._publish_all(
            [(e.type, e.event_id, e.model_dump_json().encode()) for e in events]
        )

    def stage_on(self, conn: Connection, events: Sequence[Event]) -> None:
        if self._relay is None:
            raise NotImplementedError("stage_on needs a NatsBus with a group committer")
        write_outbox(conn, events)
        if events:
            self._staged = True

    def subscribe(self, consumer: str, types: Iterable[str], handler: EventHandler) -> None:
        if consumer in self._consumers:
            raise ValueError(f"consumer {consumer!r} is already subscribed")
        wanted = frozenset(types)
        if not wanted:
            raise ValueError(f"consumer {consumer!r} subscribes to no event type")
        durable = DurableConsumer(
            consumer,
            wanted,
            handler,
            subjects=self.subjects,
            stream=self.options.stream,
            policy=self._policy,
            dead_letter=self._dead_letter,
            lease=self._lease(consumer),
        )
        self._consumers[consumer] = durable
        if self._js is not None:
            self._spawn(self._start_late(durable), f"bus:{consumer}:start")

    def _lease(self, consumer: str) -> Lease | None:
        """One process at a time consumes ``consumer`` (PostgreSQL: an advisory lock; a
        SQLite file: a file lock beside it)."""
        if self._committer is None:
            return None
        return lease_for(self._committer.engine, self.options.stream, consumer)

    async def _start_late(self, consumer: DurableConsumer) -> None:
        try:
            await consumer.ensure(self._jetstream(), self._multi_filter())
        except Exception:
            log.exception("bus consumer %s: creating the JetStream consumer failed", consumer.name)
            return
        consumer.start()

    async def _publish_all(self, items: Sequence[tuple[str, str, bytes]]) -> None:
        """Publish (type, event id, payload) items concurrently; raise if any failed."""
        js = self._jetstream()
        results = await asyncio.gather(
            *(self._publish_one(js, *item) for item in items), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            metrics.BUS_PUBLISH_FAILURES.inc(len(failures))
            first = failures[0]
            raise PublishFailed(
                f"{len(failures)} of {len(items)} events got no PubAck: "
                f"{type(first).__name__}: {first}"
            ) from first

    async def _publish_one(
        self, js: JetStreamContext, type_: str, event_id: str, data: bytes
    ) -> None:
        ack: PubAck = await js.publish(
            self.subjects.event(type_),
            data,
            timeout=self._publish_timeout,
            stream=self.options.stream,
            headers={MSG_ID: event_id},
        )
        if not ack.duplicate:
            metrics.child(metrics.EVENTS_PUBLISHED, type_).inc()

    async def _publish_staged(self, rows: Sequence[StagedEvent]) -> None:
        await self._publish_all([(r.type, r.event_id, r.payload.encode()) for r in rows])

    def _after_commit(self) -> None:
        if self._staged and self._relay is not None:
            self._staged = False
            self._relay.wake()

    async def _dead_letter(
        self, consumer: str, msg: Msg, event_id: str, type_: str, attempts: int, error: str
    ) -> None:
        """Publish the event to ``<prefix>.dead.<consumer>`` and record it in
        ``bus_dead_letters``; both must succeed before the event is acknowledged."""
        one_line = " ".join(error.split())[:1000]
        await self._jetstream().publish(
            self.subjects.dead(consumer),
            msg.data,
            timeout=self._publish_timeout,
            stream=self.options.stream,
            headers={
                MSG_ID: f"dead:{consumer}:{event_id}",
                "ChargeOps-Consumer": consumer,
                "ChargeOps-Event-Id": event_id,
                "ChargeOps-Event-Type": type_,
                "ChargeOps-Attempts": str(attempts),
                "ChargeOps-Error": one_line,
            },
        )
        if self._committer is None:
            return
        writes = WriteSet()
        writes.insert(
            DEAD_LETTERS,
            {
                "consumer": consumer[:64],
                "event_id": event_id[:36],
                "type": type_[:64],
                "attempts": attempts,
                "error": error[:4000],
                "created_at": utcnow(),
            },
        )
        await self._committer.commit(writes)

    # ------------------------------------------------------------------ commands
    def serve_commands(self, handler: CommandHandler) -> None:
        self._commands.serve(handler)

    async def attach_charger(self, charger_id: str) -> None:
        await self._commands.attach(charger_id)

    async def detach_charger(self, charger_id: str) -> None:
        await self._commands.detach(charger_id)

    async def request_command(self, request: CommandRequest) -> CommandReply:
        """Raises :class:`NotConnected` without a connection (the command log records
        outcome ``error``) rather than waiting out the command's timeout."""
        return await self._commands.request(self._client(), request)

    # ------------------------------------------------------------------ connection
    def _client(self) -> NATS:
        if self._nc is None:
            raise NotConnected("the NATS bus is not started")
        if not self._nc.is_connected:
            raise NotConnected(f"not connected to NATS ({', '.join(self.options.servers)})")
        return self._nc

    def _jetstream(self) -> JetStreamContext:
        self._client()
        assert self._js is not None
        return self._js

    def _multi_filter(self) -> bool:
        assert self._nc is not None
        version = self._nc.connected_server_version
        return (version.major, version.minor) >= (2, 10)

    def _stream_config(self) -> StreamConfig:
        o = self.options
        return StreamConfig(
            name=o.stream,
            description="ChargeOps events and dead letters",
            subjects=[self.subjects.all_events, self.subjects.all_dead],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=o.max_age,
            duplicate_window=o.dedup_window,
            num_replicas=o.replicas,
        )

    async def _ensure_stream(self) -> None:
        """Create the stream, or bring an existing one to this configuration."""
        js = self._jetstream()
        config = self._stream_config()
        try:
            await js.add_stream(config)
        except BadRequestError:
            await js.update_stream(config)

    async def _restore(self) -> None:
        try:
            await self._ensure_stream()
            js = self._jetstream()
            for consumer in self._consumers.values():
                await consumer.ensure(js, self._multi_filter())
        except Exception as exc:
            log.warning("bus: re-asserting the stream and consumers failed: %s", exc)

    def _spawn(self, job: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(job, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _next_server(self, servers: list[Server], _info: dict[str, Any]) -> tuple[Server, float]:
        """Reconnect backoff: the least-tried server, after a doubling, jittered delay."""
        server = min(servers, key=lambda s: s.reconnects)
        delay = min(self._reconnect_max, self._reconnect_min * 2 ** min(server.reconnects, 20))
        return server, delay * random.uniform(0.8, 1.2)

    async def _on_disconnected(self) -> None:
        metrics.BUS_CONNECTED.set(0)
        if self._nc is not None:
            log.warning("bus: disconnected from NATS; reconnecting")

    async def _on_reconnected(self) -> None:
        metrics.BUS_CONNECTED.set(1)
        metrics.BUS_RECONNECTS.inc()
        if self._nc is None:
            return
        log.info("bus: reconnected to NATS at %s", _where(self._nc))
        self._spawn(self._restore(), "bus:restore")

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = f"{type(exc).__name__}: {exc}"
        log.warning("bus: NATS: %s: %s", type(exc).__name__, exc)

    async def _on_closed(self) -> None:
        metrics.BUS_CONNECTED.set(0)


def _where(nc: NATS) -> str:
    url = nc.connected_url
    return url.netloc.rsplit("@", 1)[-1] if url is not None else "?"
