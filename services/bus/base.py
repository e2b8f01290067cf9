"""The bus interface every backend implements.

Semantics (both backends): ``publish`` returns only once the events are durable; each
subscriber is a durable, named consumer; an event is acknowledged after its handler
returned, and redelivered otherwise (a handler that keeps failing is parked as a dead
letter after ``max_attempts``). Redelivery is normal: consumers are idempotent on
``event_id`` (see :mod:`services.bus.inbox`).

Commands are request/reply, not events: ``request_command`` reaches the one node that
holds the charger's socket and returns its :class:`~services.commands.contracts.CommandReply`
(outcome ``offline`` when no node does); nothing is redelivered. Embedded mode calls the
executor registered with ``serve_commands`` in process. Distributed mode (NATS) uses a
per-charger subject (``commands.<charger id>``) that the node holding the socket
subscribes to between ``attach_charger`` and ``detach_charger``: a request with no
responder is ``offline`` at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Sequence

from sqlalchemy.engine import Connection

from services.bus.contracts import Event
from services.bus.staging import OUTBOX, history_row
from services.commands.contracts import CommandReply, CommandRequest
from services.committer import GroupCommitter, WriteSet

EventHandler = Callable[[Event], Awaitable[None]]
BatchHandler = Callable[[Sequence[Event]], Awaitable[None]]
CommandHandler = Callable[[CommandRequest], Awaitable[CommandReply]]


class UnsupportedBusURL(ValueError):
    pass


class Bus(ABC):
    #: True when events can ride in the same database transaction as state writes.
    transactional_outbox: bool = False
    #: True when ``record`` also keeps events it publishes as ``bus_outbox`` history rows
    #: (a bus that is not the outbox itself but shares the database, e.g. NATS).
    history_in_outbox: bool = False
    #: True when ``stage_on`` works: events written in a domain transaction get published.
    supports_stage_on: bool = False

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None:
        """Deliver or persist what is in flight, then stop."""

    @abstractmethod
    async def publish(self, events: Sequence[Event]) -> None:
        """Durably publish ``events``; returns once they cannot be lost."""

    def stage(self, events: Sequence[Event], writes: WriteSet) -> None:
        """Add ``events`` to ``writes`` (only for backends with a transactional outbox)."""
        raise NotImplementedError

    def stage_on(self, conn: Connection, events: Sequence[Event]) -> None:
        """Write ``events`` on ``conn`` inside the caller's open transaction (for domain
        operations that decide what to publish while they run; outbox backends only)."""
        raise NotImplementedError

    @abstractmethod
    def subscribe(self, consumer: str, types: Iterable[str], handler: EventHandler) -> None:
        """Register a durable consumer for event ``types`` (call before ``start``)."""

    def subscribe_batch(
        self,
        consumer: str,
        types: Iterable[str],
        handler: EventHandler,
        batch_handler: BatchHandler,  # noqa: ARG002 (a backend without pages ignores it)
    ) -> None:
        """Like :meth:`subscribe`; a backend that reads events in pages may hand a page to
        ``batch_handler`` at once (one call: all handled or, if it raises, the page is
        delivered again one event at a time through ``handler``). Default: ``handler``."""
        self.subscribe(consumer, types, handler)

    @abstractmethod
    async def ping(self) -> None:
        """Raise if the bus cannot take events."""

    @abstractmethod
    async def request_command(self, request: CommandRequest) -> CommandReply:
        """Route ``request`` to the node holding the charger's socket; return its reply.

        Never raises for the command's sake: no node -> ``offline``, no reply within
        ``request.timeout_s`` (plus a grace for the trip) -> ``timeout``, a failing
        executor -> ``error``."""

    @abstractmethod
    def serve_commands(self, handler: CommandHandler) -> None:
        """Register this (csms) node's command executor (call before ``start``)."""

    async def attach_charger(self, charger_id: str) -> None:  # noqa: ARG002
        """This node now holds ``charger_id``'s socket: route its commands here.

        Never raises. Default: nothing to do (commands are served in process)."""
        return None

    async def detach_charger(self, charger_id: str) -> None:  # noqa: ARG002
        """This node no longer holds ``charger_id``'s socket. Never raises."""
        return None


async def record(
    committer: GroupCommitter, bus: Bus, writes: WriteSet, events: Sequence[Event]
) -> None:
    """Make state ``writes`` and ``events`` durable; return when both are.

    With a transactional outbox both go in one group commit. Otherwise the events are
    published first and the writes committed once the bus took them: if the publish fails
    nothing is committed, so the state, its history and the charger's event history never
    record a change whose events the bus does not have (the charger gets an error and its
    retry, or its next report after a reconnect, is still a change). A commit failing after
    the publish leaves events the bus has and the state lacks: a retry repeats them
    (at-least-once), which consumers absorb, where a lost event cannot be recovered.
    """
    if bus.transactional_outbox:
        if events:
            bus.stage(events, writes)
        if writes:
            await committer.commit(writes)
        return
    if events and bus.history_in_outbox:
        for event in events:  # the charger's event history (GET .../events), not relayed
            writes.insert_ignore(OUTBOX, history_row(event))
    if events:
        await bus.publish(events)
    if writes:
        await committer.commit(writes)
