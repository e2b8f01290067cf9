"""The NATS JetStream bus against a real NATS server (127.0.0.1:4222): durable consumers,
de-duplication, redelivery, dead letters, restarts, shared work, commands routed to the
node holding a charger, the outbox relay, and the whole system running on it.

Each test has its own stream and subject prefix (so tests never see each other's
messages) and deletes its stream afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import socket
import string
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from ocpp.exceptions import InternalError as OcppInternalError
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from csms.protocol.routing import on
from csms.tables import ChargerState
from services.bus import UnsupportedBusURL, create_bus
from services.bus.contracts import (
    EVENT_TYPES,
    ChargerOffline,
    ChargerOnline,
    Event,
    WorkOrderChanged,
)
from services.bus.nats import NatsBus, NotConnected
from services.bus.nats_lease import ConsumerLease, FileLease, lease_for
from services.bus.nats_subjects import Subjects, decode_token, durable_name, encode_token
from services.bus.nats_url import NatsOptions, parse_nats_url
from services.bus.relay import RELAY_CURSOR
from services.bus.staging import OUTBOX, outbox_row
from services.bus.tables import ConsumerCursor, DeadLetter, InboxEntry
from services.clock import FakeClock
from services.commands.contracts import CommandReply, CommandRequest
from services.committer import GroupCommitter, WriteSet
from services.db import Database, utcnow
from services.observability import metrics
from tests.conftest import (
    REQUIRE_SERVICES,
    SystemFactory,
    charge_point,
    charger_events,
    eventually,
    need_service,
    port_open,
    register,
)
from ticketing.tables import ChargerAsset

pytestmark = pytest.mark.nats

NATS_URL = "nats://127.0.0.1:4222"
AT = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def online(name: str) -> ChargerOnline:
    return ChargerOnline(charger_id=name, received_at=AT, ocpp_version="1.6")


def order_changed(order_id: int) -> WorkOrderChanged:
    return WorkOrderChanged(
        event_id=f"wo-{order_id}-1",
        charger_id="CP-1",
        received_at=AT,
        order_id=order_id,
        change="created",
        state="new",
        priority="P3",
        severity="S2",
        category="port_down",
    )


def command(charger_id: str, timeout_s: float = 30.0) -> CommandRequest:
    return CommandRequest(
        command_id=str(uuid.uuid4()),
        charger_id=charger_id,
        name="reset",
        params={},
        requested_by="user:test",
        timeout_s=timeout_s,
    )


def answering(node: str) -> Callable[[CommandRequest], Any]:
    async def executor(request: CommandRequest) -> CommandReply:
        return CommandReply(
            command_id=request.command_id,
            outcome="answered",
            status=f"Accepted:{request.charger_id}",
            node_id=node,
        )

    return executor


class Recorder:
    """An event handler that records the event ids it was given, in order."""

    def __init__(self, fail: Callable[[Event, int], bool] | None = None) -> None:
        self.ids: list[str] = []
        self._fail = fail

    async def __call__(self, event: Event) -> None:
        self.ids.append(event.event_id)
        if self._fail is not None and self._fail(event, self.ids.count(event.event_id)):
            raise RuntimeError(f"cannot handle {event.event_id}")

    async def saw(self, event_id: str) -> bool:
        return event_id in self.ids


@dataclasses.dataclass
class NatsEnv:
    options: NatsOptions
    nc: NATS
    js: JetStreamContext
    buses: list[NatsBus] = dataclasses.field(default_factory=list)
    committers: list[GroupCommitter] = dataclasses.field(default_factory=list)

    def bus(
        self, committer: GroupCommitter | None = None, *, options: Any = None, **tuning: Any
    ) -> NatsBus:
        fast: dict[str, Any] = {
            "retry_delay": 0.05,
            "max_retry_delay": 0.2,
            "fetch_wait": 0.3,
            "command_grace": 0.5,
            "relay_poll": 0.05,
        }
        fast.update(tuning)
        bus = NatsBus(options or self.options, committer, **fast)
        self.buses.append(bus)
        return bus

    def committer(self, db: Database) -> GroupCommitter:
        committer = GroupCommitter(db.engine)
        committer.start()
        self.committers.append(committer)
        return committer


@pytest.fixture
async def env() -> AsyncIterator[NatsEnv]:
    need_service("NATS", "127.0.0.1", 4222)
    tag = uuid.uuid4().hex[:12]
    options = NatsOptions(
        servers=(NATS_URL,),
        stream=f"TEST_{tag}",
        prefix=f"test-{tag}",
        max_attempts=3,
        ack_wait=2.0,
    )
    nc = await nats.connect(NATS_URL)
    state = NatsEnv(options, nc, nc.jetstream())
    try:
        yield state
    finally:
        for bus in state.buses:
            await bus.close()
        for committer in state.committers:
            await committer.close()
        with contextlib.suppress(NotFoundError):
            await state.js.delete_stream(options.stream)
        await nc.close()


async def _flag(value: bool) -> bool:
    return value


# ------------------------------------------------------------------ names and URLs


def test_charger_ids_and_consumer_names_become_safe_reversible_tokens() -> None:
    odd = ["CP 1.2", "a.b", "a_2Eb", "*", ">", "x.*.>", "tab\there", "ü/ß\\", "%", "_", "CP_1"]
    tokens = [encode_token(name) for name in odd]
    assert len(set(tokens)) == len(odd)  # injective: "a.b" and "a_2Eb" stay apart
    for name, token in zip(odd, tokens, strict=True):
        assert decode_token(token) == name
        assert token not in ("*", ">")
        assert set(token) <= set(string.ascii_letters + string.digits + "-_")
    assert encode_token("CP-0001") == "CP-0001"
    assert durable_name("ticketing.work-orders") == "ticketing_2Ework-orders"
    subjects = Subjects("chargeops")
    assert subjects.command("CP 1.2") == "chargeops.commands.CP_201_2E2"
    assert subjects.event_type(subjects.event("FaultRaised")) == "FaultRaised"
    for bad in ["", "a.b", "_2e", "_41", "_", "_C3", "ü", "a%b"]:
        with pytest.raises(ValueError):
            decode_token(bad)
    with pytest.raises(ValueError):
        encode_token("")


async def test_bus_urls() -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    committer = GroupCommitter(engine)  # never started: only handed over
    bus = create_bus("nats://127.0.0.1:4222", committer)
    assert isinstance(bus, NatsBus)
    assert bus.options == NatsOptions(servers=("nats://127.0.0.1:4222",))
    assert not bus.transactional_outbox and bus.supports_stage_on

    options = parse_nats_url(
        "nats://u:p@n1:4222,n2:4223?stream=EV&prefix=co.test&replicas=3&max_age=3600"
        "&dedup_window=60&max_attempts=5&ack_wait=10"
    )
    assert options == NatsOptions(
        servers=("nats://u:p@n1:4222", "nats://n2:4223"),
        stream="EV",
        prefix="co.test",
        replicas=3,
        max_age=3600.0,
        dedup_window=60.0,
        max_attempts=5,
        ack_wait=10.0,
    )
    for bad in (
        "nats://",
        "nats://h:4222?bogus=1",
        "nats://h:4222?stream=a.b",
        "nats://h:4222?prefix=a..b",
        "nats://h:4222?max_attempts=0",
        "nats://h:4222?ack_wait=soon",
        "kafka://h:9092",
    ):
        with pytest.raises(UnsupportedBusURL):
            create_bus(bad, committer)
    await engine.dispose()


# ------------------------------------------------------------------ events


async def test_published_events_reach_a_durable_consumer_once_in_order(env: NatsEnv) -> None:
    bus = env.bus()
    seen = Recorder()
    bus.subscribe("ticketing.work-orders", {"ChargerOnline"}, seen)
    with pytest.raises(NotConnected):
        await bus.ping()
    await bus.start()
    await bus.ping()
    events = [online(f"CP-{n}") for n in range(5)]
    await bus.publish(events)
    sentinel = online("CP-last")
    await bus.publish([sentinel])
    await eventually(lambda: seen.saw(sentinel.event_id))
    assert seen.ids == [e.event_id for e in events] + [sentinel.event_id]
    info = await env.js.consumer_info(env.options.stream, "ticketing_2Ework-orders")
    assert info.config.filter_subject == f"{env.options.prefix}.events.ChargerOnline"

    late = Recorder()  # subscribed while running: starts at the beginning of the stream
    bus.subscribe("late", {"ChargerOnline"}, late)
    await eventually(lambda: late.saw(sentinel.event_id))
    assert late.ids == seen.ids
    await bus.close()
    with pytest.raises(NotConnected):
        await bus.ping()


async def test_a_consumer_gets_only_its_types(env: NatsEnv) -> None:
    bus = env.bus()
    seen = Recorder()
    bus.subscribe("two-types", {"ChargerOnline", "WorkOrderChanged"}, seen)
    await bus.start()
    skipped = ChargerOnline(charger_id="CP-1", received_at=AT, ocpp_version="2.0.1")
    other = order_changed(1)
    await bus.publish([online("CP-1"), other])
    await env.js.publish(
        f"{env.options.prefix}.events.ChargerOffline",
        b"{}",
        headers={"Nats-Msg-Id": "not-for-two-types"},
    )
    await bus.publish([skipped])
    await eventually(lambda: seen.saw(skipped.event_id))
    assert len(seen.ids) == 3
    assert other.event_id in seen.ids
    info = await env.js.consumer_info(env.options.stream, "two-types")
    version = env.nc.connected_server_version
    if (version.major, version.minor) >= (2, 10):
        assert info.config.filter_subjects == sorted(
            bus.subjects.event(t) for t in ("ChargerOnline", "WorkOrderChanged")
        )
    else:  # one filter subject only: the type check in the client does the rest
        assert info.config.filter_subject == bus.subjects.all_events

    everything = env.bus()
    everything.subscribe("everything", EVENT_TYPES, Recorder())
    await everything.start()
    info = await env.js.consumer_info(env.options.stream, "everything")
    assert info.config.filter_subject == bus.subjects.all_events


async def test_a_duplicate_event_id_is_delivered_once(env: NatsEnv) -> None:
    bus = env.bus()
    seen = Recorder()
    bus.subscribe("dedup", {"ChargerOnline"}, seen)
    await bus.start()
    event = online("CP-1")
    await bus.publish([event])
    await bus.publish([event])  # a retry after a lost PubAck, say
    other_process = env.bus()
    await other_process.start()
    await other_process.publish([event])
    sentinel = online("CP-2")
    await bus.publish([sentinel])
    await eventually(lambda: seen.saw(sentinel.event_id))
    assert seen.ids == [event.event_id, sentinel.event_id]


async def test_a_failing_handler_gets_the_event_again_until_it_succeeds(env: NatsEnv) -> None:
    bus = env.bus()
    flaky = Recorder(fail=lambda _event, attempt: attempt < 3)
    bus.subscribe("flaky", {"ChargerOnline"}, flaky)
    await bus.start()
    event = online("CP-1")
    await bus.publish([event])
    await eventually(lambda: _flag(flaky.ids.count(event.event_id) == 3))

    async def settled() -> bool:
        info = await env.js.consumer_info(env.options.stream, "flaky")
        return bool(info.num_ack_pending == 0 and info.num_pending == 0)

    await eventually(settled)
    sentinel = online("CP-2")
    await bus.publish([sentinel])
    await eventually(lambda: flaky.saw(sentinel.event_id))
    assert flaky.ids == [event.event_id] * 3 + [sentinel.event_id]


async def test_a_poison_event_is_dead_lettered_after_max_attempts(
    env: NatsEnv, db: Database
) -> None:
    bus = env.bus(env.committer(db))
    poison = online("CP-poison")
    picky = Recorder(fail=lambda event, _attempt: event.event_id == poison.event_id)
    bus.subscribe("picky.consumer", {"ChargerOnline"}, picky)
    await bus.start()
    after = online("CP-after")
    await bus.publish([poison, after])

    async def dead_row() -> list[DeadLetter]:
        async with db.session() as session:
            return list((await session.execute(select(DeadLetter))).scalars().all())

    [letter] = await eventually(dead_row)
    assert (letter.consumer, letter.event_id, letter.type) == (
        "picky.consumer",
        poison.event_id,
        "ChargerOnline",
    )
    assert letter.attempts == 3
    assert "cannot handle" in letter.error
    dead = await env.js.get_last_msg(env.options.stream, bus.subjects.dead("picky.consumer"))
    assert dead.headers is not None
    assert dead.headers["ChargeOps-Event-Id"] == poison.event_id
    assert dead.headers["ChargeOps-Attempts"] == "3"
    assert "cannot handle" in dead.headers["ChargeOps-Error"]
    assert dead.data is not None and poison.event_id.encode() in dead.data

    sentinel = online("CP-sentinel")
    await bus.publish([sentinel])
    await eventually(lambda: picky.saw(sentinel.event_id))
    assert picky.ids.count(poison.event_id) == 3
    assert picky.ids.count(after.event_id) == 1


async def test_a_restarted_consumer_resumes_after_its_last_ack(env: NatsEnv) -> None:
    options = dataclasses.replace(env.options, ack_wait=1.0)
    first = env.bus(options=options)
    handled: list[str] = []
    stuck = asyncio.Event()

    async def first_life(event: Event) -> None:
        if event.charger_id == "CP-unacked":
            stuck.set()
            await asyncio.Event().wait()  # "crashes" in the middle: never acknowledged
        handled.append(event.event_id)

    first.subscribe("resumer", {"ChargerOnline"}, first_life)
    await first.start()
    acked = [online(f"CP-{n}") for n in range(3)]
    unacked = online("CP-unacked")
    await first.publish([*acked, unacked])
    await eventually(lambda: _flag(stuck.is_set() and len(handled) == 3))
    await first.close()
    later = online("CP-later")
    publisher = env.bus(options=options)
    await publisher.start()
    await publisher.publish([later])

    second = env.bus(options=options)
    again = Recorder()
    second.subscribe("resumer", {"ChargerOnline"}, again)
    await second.start()
    await eventually(lambda: _flag({unacked.event_id, later.event_id} <= set(again.ids)))
    sentinel = online("CP-sentinel")
    await publisher.publish([sentinel])
    await eventually(lambda: again.saw(sentinel.event_id))
    assert sorted(again.ids) == sorted([unacked.event_id, later.event_id, sentinel.event_id])


async def test_two_processes_with_one_consumer_name_share_the_work(env: NatsEnv) -> None:
    got: dict[str, list[str]] = {"a": [], "b": []}
    release = asyncio.Event()

    def handler(name: str) -> Callable[[Event], Any]:
        async def handle(event: Event) -> None:
            got[name].append(event.event_id)
            await release.wait()  # hold the first one until both processes have work

        return handle

    for name in ("a", "b"):
        bus = env.bus(fetch_batch=1)
        bus.subscribe("shared", {"ChargerOnline"}, handler(name))
        await bus.start()
    events = [online(f"CP-{n}") for n in range(12)]
    await env.buses[0].publish(events)
    await eventually(lambda: _flag(bool(got["a"]) and bool(got["b"])))
    release.set()
    await eventually(lambda: _flag(len(got["a"]) + len(got["b"]) >= len(events)))
    handled = got["a"] + got["b"]
    assert sorted(handled) == sorted(e.event_id for e in events)  # each exactly once


async def test_one_process_at_a_time_consumes_so_a_chargers_events_keep_their_order(
    env: NatsEnv, db: Database
) -> None:
    """Two processes with one consumer name on one database: while the first handles a
    charger's ChargerOffline, its ChargerOnline published behind it must not be applied
    first by the other process (ticketing's projection would end offline, a FaultCleared
    applied before its FaultRaised left the order open). Only the holder of the consumer's
    lock (PostgreSQL: an advisory lock; SQLite: a file lock beside the database) fetches;
    when it stops, the other takes over."""
    committer = env.committer(db)
    went_offline = ChargerOffline(
        charger_id="CP-ORDER", received_at=AT, since=AT, reason="disconnected"
    )
    came_back = online("CP-ORDER")
    handled: list[tuple[str, str]] = []
    first_started = asyncio.Event()
    overtaken = asyncio.Event()

    def handler(name: str) -> Callable[[Event], Any]:
        async def handle(event: Event) -> None:
            if event.event_id == went_offline.event_id:
                first_started.set()
                # The other process's chance to apply the later event first (a bound).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(overtaken.wait(), 3)
            elif event.event_id == came_back.event_id:
                overtaken.set()
            handled.append((name, event.event_id))

        return handle

    buses = {}
    for name in ("a", "b"):
        bus = env.bus(committer, fetch_batch=1)
        bus.subscribe("ordered", {"ChargerOnline", "ChargerOffline"}, handler(name))
        await bus.start()
        buses[name] = bus
    await buses["a"].publish([went_offline])
    await first_started.wait()
    await buses["a"].publish([came_back])
    await eventually(lambda: _flag(len(handled) == 2), attempts=400)
    assert [event_id for _, event_id in handled] == [went_offline.event_id, came_back.event_id]
    [holder] = {name for name, _ in handled}

    # The holder stops: the other process takes over.
    await buses[holder].close()
    later = online("CP-LATER")
    await buses["b" if holder == "a" else "a"].publish([later])
    await eventually(lambda: _flag(len(handled) == 3), attempts=400)
    assert handled[-1] == ("b" if holder == "a" else "a", later.event_id)


async def test_the_consumer_lock_of_each_database(tmp_path: Path) -> None:
    """PostgreSQL: the advisory lock; a SQLite file: a file lock beside it, exclusive even
    between two leases of one process, lost if its file is replaced; in-memory SQLite (one
    process): none."""
    memory = create_async_engine("sqlite+aiosqlite://")
    on_file = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/ops.db")
    postgres = create_async_engine("postgresql+asyncpg://u@h/db")
    try:
        assert lease_for(memory, "S", "c") is None
        assert isinstance(lease_for(postgres, "S", "c"), ConsumerLease)
        first, second, other = (lease_for(on_file, "S", c) for c in ("c", "c", "d"))
        assert isinstance(first, FileLease) and isinstance(second, FileLease)
        assert isinstance(other, FileLease) and other.path != first.path
        assert Path(first.path).parent == tmp_path
        assert await first.try_acquire() and not await second.try_acquire()
        assert await other.try_acquire()  # another consumer's lock
        assert await first.still_held()
        await first.release()
        assert await second.try_acquire() and not await first.try_acquire()
        Path(second.path).unlink()  # someone removed it: another process could lock anew
        assert not await second.still_held() and not second.held
        await other.release()
    finally:
        for engine in (memory, on_file, postgres):
            await engine.dispose()


async def test_a_consumers_backlog_is_reported_and_drains_to_zero(env: NatsEnv) -> None:
    # chargeops_bus_outbox_backlog{consumer} is what the backlog alerts and the dashboard
    # read (deploy/prometheus/alerts.yml): on the NATS bus it was never set for a consumer,
    # so ticketing.work-orders falling behind in the distributed mode went unseen.
    name = f"backlog-{uuid.uuid4().hex[:8]}"
    release = asyncio.Event()
    handled: list[str] = []

    async def slow(event: Event) -> None:
        await release.wait()
        handled.append(event.event_id)

    def backlog() -> float | None:
        return metrics.REGISTRY.get_sample_value("chargeops_bus_outbox_backlog", {"consumer": name})

    publisher = env.bus()
    await publisher.start()
    events = [online(f"CP-{n}") for n in range(6)]
    await publisher.publish(events)
    bus = env.bus(fetch_batch=2)
    bus.subscribe(name, {"ChargerOnline"}, slow)
    await bus.start()
    # 2 fetched and held by the handler, 4 still on the server
    await eventually(lambda: _flag(backlog() == 6))
    release.set()
    await eventually(lambda: _flag(len(handled) == len(events)))
    await eventually(lambda: _flag(backlog() == 0))


# ------------------------------------------------------------------ commands


async def test_commands_reach_the_node_holding_the_charger(env: NatsEnv) -> None:
    node_a, node_b, api = env.bus(), env.bus(), env.bus()
    node_a.serve_commands(answering("A"))
    node_b.serve_commands(answering("B"))
    await node_a.attach_charger("CP-1")  # before start: subscribed at start
    for bus in (node_a, node_b, api):
        await bus.start()

    reply = await api.request_command(command("CP-1"))
    assert (reply.outcome, reply.node_id, reply.status) == ("answered", "A", "Accepted:CP-1")

    # Nobody holds CP-2: "offline" from NATS's no-responders status, not after 30 s.
    reply = await asyncio.wait_for(api.request_command(command("CP-2", timeout_s=30)), 10)
    assert reply.outcome == "offline"
    assert reply.node_id is None

    # The charger reconnects to node B: reachable there, and only there.
    await node_a.detach_charger("CP-1")
    await node_b.attach_charger("CP-1")
    reply = await api.request_command(command("CP-1"))
    assert (reply.outcome, reply.node_id) == ("answered", "B")
    await node_b.detach_charger("CP-1")

    # Once it is gone from B too, requests are "offline" again. A request racing the
    # unsubscribe on a loaded NATS 2.9 server can still end as a (short) timeout, so the
    # check asks until the answer is offline, each ask bounded by its own short timeout.
    async def offline() -> bool:
        reply = await api.request_command(command("CP-1", timeout_s=2))
        assert reply.outcome in ("offline", "timeout"), reply
        return reply.outcome == "offline"

    await eventually(offline, attempts=5, delay=0.2)


async def test_commands_to_charger_ids_with_special_characters(env: NatsEnv) -> None:
    node, api = env.bus(), env.bus()
    node.serve_commands(answering("A"))
    await node.start()
    await api.start()
    for odd in ("CP 1.2", "a.b", ">", "*", "ü/ß"):
        await node.attach_charger(odd)
        reply = await api.request_command(command(odd))
        assert (reply.outcome, reply.status) == ("answered", f"Accepted:{odd}")
    # ">" and "*" are subscribed as plain names, not wildcards; "a.b" is not "a_2Eb".
    for other in ("CP-9", "a_2Eb", "a", "x.y"):
        reply = await asyncio.wait_for(api.request_command(command(other, timeout_s=30)), 10)
        assert reply.outcome == "offline", other


async def settles_on(api: NatsBus, charger_id: str, outcome: str) -> None:
    """Requests (1 s each) until one ends as ``outcome``; at most one may time out.

    Measured on NATS 2.9 (a stress loop of these races): about once in a hundred rapid
    unsubscribe/subscribe cycles the server still routes one request to the subscription
    just removed (its UNSUB and a PING/PONG already done), so that request times out
    instead of finding no responders; the next one is routed right. Our side of it, the
    subscriptions the node holds, is what these races must get right."""
    outcomes = []
    for _ in range(3):
        reply = await asyncio.wait_for(api.request_command(command(charger_id, 1.0)), 10)
        outcomes.append(reply.outcome)
        if reply.outcome == outcome:
            break
    assert outcomes[-1] == outcome, outcomes
    assert outcomes.count("timeout") <= 1, outcomes


async def test_attach_and_detach_racing_end_in_the_state_asked_for_last(env: NatsEnv) -> None:
    node, api = env.bus(), env.bus()
    node.serve_commands(answering("A"))
    await node.start()
    await api.start()
    await asyncio.gather(node.attach_charger("CP-1"), node.detach_charger("CP-1"))
    await settles_on(api, "CP-1", "offline")
    await node.attach_charger("CP-1")
    await asyncio.gather(node.detach_charger("CP-1"), node.attach_charger("CP-1"))
    await settles_on(api, "CP-1", "answered")
    await asyncio.gather(node.attach_charger("CP-1"), node.attach_charger("CP-1"))
    await node.detach_charger("CP-1")
    await settles_on(api, "CP-1", "offline")


async def test_a_command_without_an_answer_times_out_and_a_failing_executor_is_an_error(
    env: NatsEnv,
) -> None:
    node, api = env.bus(command_grace=0.2), env.bus(command_grace=0.2)

    async def executor(request: CommandRequest) -> CommandReply:
        if request.charger_id == "CP-BROKEN":
            raise RuntimeError("executor broke")
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    node.serve_commands(executor)
    await node.start()
    await api.start()
    await node.attach_charger("CP-SILENT")
    await node.attach_charger("CP-BROKEN")
    reply = await api.request_command(command("CP-SILENT", timeout_s=0.2))
    assert reply.outcome == "timeout"
    reply = await api.request_command(command("CP-BROKEN"))
    assert reply.outcome == "error"
    assert reply.detail is not None and "executor broke" in reply.detail


# ------------------------------------------------------------------ the outbox relay


async def test_the_relay_publishes_staged_rows_once_in_effect(env: NatsEnv, db: Database) -> None:
    committer = env.committer(db)
    ticketing, other_replica = env.bus(committer), env.bus(committer)
    seen = Recorder()
    ticketing.subscribe("remediation", {"WorkOrderChanged"}, seen)
    await ticketing.start()
    await other_replica.start()  # a second relay against the same database

    async def stage(bus: NatsBus, events: Sequence[Event]) -> None:
        writes = WriteSet()

        def in_domain_transaction(conn: Connection) -> None:
            bus.stage_on(conn, events)

        writes.then(in_domain_transaction)
        await committer.commit(writes)

    first = [order_changed(n) for n in range(1, 4)]
    await stage(ticketing, first[:2])
    await stage(other_replica, first[2:])
    await eventually(lambda: _flag(len(seen.ids) >= 3))

    async def cursor() -> int:
        async with db.engine.connect() as conn:
            query = select(ConsumerCursor.position).where(ConsumerCursor.consumer == RELAY_CURSOR)
            return int((await conn.execute(query)).scalar_one())

    async with db.engine.connect() as conn:
        newest = (await conn.execute(select(func.max(OUTBOX.c.seq)))).scalar_one()
    await eventually(lambda: _cursor_at(cursor, newest))

    # A relay that lost its cursor publishes everything again: JetStream drops the repeats.
    async with db.engine.begin() as conn:
        await conn.execute(
            ConsumerCursor.__table__.update()  # type: ignore[attr-defined]
            .where(ConsumerCursor.consumer == RELAY_CURSOR)
            .values(position=0)
        )
    await eventually(lambda: _cursor_at(cursor, newest))
    last = order_changed(99)
    await stage(ticketing, [last])
    await eventually(lambda: seen.saw(last.event_id))
    assert sorted(seen.ids) == sorted(e.event_id for e in [*first, last])


async def _cursor_at(cursor: Callable[[], Any], position: int) -> bool:
    return bool(await cursor() == position)


async def test_the_relay_waits_at_a_sequence_gap_then_passes_it(env: NatsEnv, db: Database) -> None:
    committer = env.committer(db)
    patient = env.bus(committer, relay_gap_wait=3600)
    seen = Recorder()
    patient.subscribe("gaps", {"WorkOrderChanged"}, seen)

    async def insert(seq: int, event: Event) -> None:
        async with db.engine.begin() as conn:
            await conn.execute(OUTBOX.insert().values(seq=seq, **outbox_row(event)))

    async def cursor() -> int:
        async with db.engine.connect() as conn:
            query = select(ConsumerCursor.position).where(ConsumerCursor.consumer == RELAY_CURSOR)
            return int((await conn.execute(query)).scalar_one_or_none() or 0)

    # Row 2 is still in flight in another transaction when rows 1 and 3 are visible.
    one, two, three = order_changed(1), order_changed(2), order_changed(3)
    await insert(1, one)
    await insert(3, three)
    await patient.start()
    await eventually(lambda: _flag({one.event_id, three.event_id} <= set(seen.ids)))
    assert await cursor() == 1  # stops before the gap, though row 3 is out already
    await insert(2, two)
    await eventually(lambda: _cursor_at(cursor, 3))
    assert sorted(seen.ids) == sorted([one.event_id, two.event_id, three.event_id])
    await patient.close()

    # A number that is never used (a rolled-back transaction) is passed after gap_wait.
    hasty = env.bus(committer, relay_gap_wait=0)
    await insert(5, order_changed(5))
    await hasty.start()
    await eventually(lambda: _cursor_at(cursor, 5))


# ------------------------------------------------------------------ the whole system


class Station(ChargePoint16):  # type: ignore[misc]
    @on(Action16.reset)
    async def on_reset(self, **_kw: Any) -> result16.Reset:
        return result16.Reset(status="Accepted")


async def test_the_system_on_nats_routes_commands_to_the_charger(
    env: NatsEnv, system_factory: SystemFactory
) -> None:
    url = f"{NATS_URL}?stream={env.options.stream}&prefix={env.options.prefix}"
    async with system_factory(bus_url=url) as running:
        assert isinstance(running.system.bus, NatsBus)
        observer = env.bus()
        disconnects = Recorder()
        observer.subscribe("test-observer", {"ChargerDisconnected"}, disconnects)
        await observer.start()
        cid = "CP.NATS-1"
        path = f"/api/v1/chargers/{cid}/commands/reset"
        await register(running.api, cid)
        async with charge_point(running, cid, "1.6", cp_class=Station) as first:
            r = await running.api.post(path, json={})
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "Accepted"

            # The charger reconnects to the same node: the replaced session's end must not
            # take the new session's command route with it.
            async with charge_point(running, cid, "1.6", cp_class=Station):
                await eventually(lambda: _flag(first.ws.close_code is not None))
                await eventually(lambda: _flag(len(disconnects.ids) == 1))
                r = await running.api.post(path, json={})
                assert r.status_code == 200, r.text

        async def offline_without_a_route() -> bool:
            r = await running.api.post(path, json={})
            assert r.status_code == 409, r.text
            return "no csms node holds" in r.json()["detail"]

        await eventually(offline_without_a_route)

        # The charger's event history (GET .../events) is kept in NATS mode too: the
        # events csms published are history rows in bus_outbox, which the relay skips.
        async def history() -> list[str] | None:
            types = [e["type"] for e in await charger_events(running, cid)]
            return types if types.count("ChargerDisconnected") == 2 else None

        types = await eventually(history)
        assert types.count("ChargerConnected") == 2
        relay = running.system.bus.relay
        assert relay is not None
        async with running.system.db.engine.connect() as conn:
            staged, history_rows = (
                await conn.execute(
                    select(
                        func.count().filter(OUTBOX.c.published.is_(False)),
                        func.count().filter(OUTBOX.c.published.is_(True)),
                    )
                )
            ).one()
        assert history_rows >= 4  # the connects and disconnects above
        # The relay publishes the staged rows (e.g. ChargerOffline from presence), never
        # the history rows.
        await eventually(lambda: _flag(relay.published_rows == staged))


# ------------------------------------------------------------------ losing the server


class PrivateNats:
    """A NATS server of this test's own (on a free port), to stop and start at will."""

    def __init__(self, binary: str, port: int) -> None:
        self.binary = binary
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self, store: Path) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(store)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await eventually(lambda: _flag(port_open("127.0.0.1", self.port)))

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
async def private_nats() -> AsyncIterator[PrivateNats]:
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not Path(binary).exists():
        message = "no nats-server binary to start a private server"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = PrivateNats(binary, port)
    try:
        yield server
    finally:
        server.stop()


async def test_the_bus_reconnects_and_restores_a_server_that_lost_its_data(
    private_nats: PrivateNats, tmp_path: Path
) -> None:
    await private_nats.start(tmp_path / "first")
    options = NatsOptions(servers=(f"nats://127.0.0.1:{private_nats.port}",))
    bus = NatsBus(options, fetch_wait=0.3, reconnect_min=0.05, reconnect_max=0.3)
    seen = Recorder()
    bus.subscribe("survivor", {"ChargerOnline"}, seen)
    try:
        await bus.start()
        before = online("CP-before")
        await bus.publish([before])
        await eventually(lambda: seen.saw(before.event_id))
        assert metrics.REGISTRY.get_sample_value("chargeops_bus_connected") == 1

        private_nats.stop()

        async def down() -> bool:
            try:
                await bus.ping()
            except NotConnected:
                return True
            except Exception:  # not noticed yet: a timeout (also a 503)
                return False
            return False

        await eventually(down)  # /readyz answers 503
        assert metrics.REGISTRY.get_sample_value("chargeops_bus_connected") == 0
        with pytest.raises(NotConnected):
            await bus.publish([online("CP-while-down")])

        # A new server without the old one's data: the stream and the consumer come back.
        await private_nats.start(tmp_path / "second")

        async def up() -> bool:
            with contextlib.suppress(Exception):
                await bus.ping()
                return True
            return False

        await eventually(up)
        after = online("CP-after")

        async def published() -> bool:
            with contextlib.suppress(Exception):
                await bus.publish([after])
                return True
            return False

        await eventually(published)
        await eventually(lambda: seen.saw(after.event_id))
        assert metrics.REGISTRY.get_sample_value("chargeops_bus_connected") == 1
    finally:
        await bus.close()


async def test_a_report_nats_did_not_take_leaves_no_trace_and_is_a_change_again(
    private_nats: PrivateNats, tmp_path: Path, system_factory: SystemFactory
) -> None:
    """NATS down while a charger reports its connector healthy again: the charger gets
    InternalError and nothing of the report is committed (live state, status history and
    event history still say faulted), so the report is a change when the charger sends it
    again after a reconnect, and the work order resolves. Before, the state was committed
    beside the failed publish: the FaultCleared was lost for good and the order stayed open
    although the connector was Available."""
    store = tmp_path / "nats"
    await private_nats.start(store)
    url = f"nats://127.0.0.1:{private_nats.port}?stream=OUTAGE&prefix=outage"
    cid = "CP-OUTAGE"
    async with system_factory(bus_url=url) as running:
        bus = running.system.bus
        assert isinstance(bus, NatsBus)
        await register(running.api, cid)

        async def order() -> dict[str, Any] | None:
            r = await running.api.get("/api/v1/work-orders", params={"charger_id": cid})
            assert r.status_code == 200, r.text
            items: list[dict[str, Any]] = r.json()["items"]
            return items[0] if items else None

        async def connector_status() -> str:
            r = await running.api.get(f"/api/v1/chargers/{cid}")
            assert r.status_code == 200, r.text
            [connector] = r.json()["connectors"]
            return str(connector["status"])

        async def history() -> list[str]:
            r = await running.api.get(f"/api/v1/chargers/{cid}/status-history")
            assert r.status_code == 200, r.text
            return [i["status"] for i in r.json() if i["kind"] == "connector"]

        faulted = call16.StatusNotification(
            connector_id=1, error_code="GroundFailure", status="Faulted"
        )
        available = call16.StatusNotification(
            connector_id=1, error_code="NoError", status="Available"
        )
        async with charge_point(running, cid, "1.6") as cp:
            await cp.call(faulted)
            opened = await eventually(order)
            assert opened["state"] == "new"

            private_nats.stop()

            async def down() -> bool:
                try:
                    await bus.ping()
                except NotConnected:
                    return True
                except Exception:
                    return False
                return False

            await eventually(down)
            with pytest.raises(OcppInternalError):
                await cp.call(available, suppress=False)
            assert await connector_status() == "faulted"
            assert await history() == ["faulted"]
            assert "FaultCleared" not in [e["type"] for e in await charger_events(running, cid)]

        await private_nats.start(store)

        async def up() -> bool:
            with contextlib.suppress(Exception):
                await bus.ping()
                return True
            return False

        await eventually(up)
        # The charger comes back (a new session reads the state from the database) and
        # reports the connector healthy: a change, so the fault clears and the order resolves.
        async with charge_point(running, cid, "1.6") as cp:
            await cp.call(available, suppress=False)
            assert await connector_status() == "available"

            async def resolved() -> dict[str, Any] | None:
                current = await order()
                return current if current and current["state"] == "resolved" else None

            await eventually(resolved, attempts=400)
        assert await history() == ["faulted", "available"]


async def test_a_connection_nats_did_not_take_is_announced_by_the_next_one(
    private_nats: PrivateNats, tmp_path: Path, system_factory: SystemFactory
) -> None:
    """A charger connecting while NATS is down is refused (its connection ends: nothing
    recorded); connecting again once NATS is back, within the offline grace, it is online
    with its ChargerOnline and the online interval, as if the refused connection had not
    happened (it must not count as already online)."""
    store = tmp_path / "nats"
    await private_nats.start(store)
    url = f"nats://127.0.0.1:{private_nats.port}?stream=REFUSED&prefix=refused"
    cid = "CP-REFUSED"
    async with system_factory(bus_url=url, offline_grace=30) as running:
        bus = running.system.bus
        assert isinstance(bus, NatsBus)
        await register(running.api, cid)
        private_nats.stop()

        async def down() -> bool:
            try:
                await bus.ping()
            except NotConnected:
                return True
            except Exception:
                return False
            return False

        await eventually(down)
        async with charge_point(running, cid, "1.6") as refused:
            await eventually(lambda: _flag(refused.ws.close_code is not None))
        await private_nats.start(store)

        async def up() -> bool:
            with contextlib.suppress(Exception):
                await bus.ping()
                return True
            return False

        await eventually(up)
        async with charge_point(running, cid, "1.6") as cp:
            await cp.call(call16.Heartbeat(), suppress=False)
            r = await running.api.get(f"/api/v1/chargers/{cid}/status-history")
            assert r.status_code == 200, r.text
            assert [(i["kind"], i["status"]) for i in r.json()] == [("connectivity", "online")]
            types = [e["type"] for e in await charger_events(running, cid)]
            assert types.count("ChargerOnline") == 1, types


async def test_a_chargers_offline_relayed_after_its_reconnection_leaves_it_online(
    env: NatsEnv, system_factory: SystemFactory
) -> None:
    """A ChargerOffline goes through the outbox relay (staged where the charger is marked),
    its next connection's ChargerOnline straight to NATS: when the relay is held up (another
    process's relay round holds the cursor, a NATS outage, a backlog) the Offline comes after
    the Online. Ticketing's projection must still end online (it ended offline: an offline
    work order would later open for a connected charger)."""
    url = f"{NATS_URL}?stream={env.options.stream}&prefix={env.options.prefix}"
    async with system_factory(bus_url=url) as running:
        engine = running.system.db.engine
        if engine.dialect.name != "postgresql":
            pytest.skip("holds the relay's cursor row with FOR UPDATE (PostgreSQL)")
        cid = "CP-RELAYED"
        await register(running.api, cid)
        assets = ChargerAsset.__table__
        charger_state = ChargerState.__table__

        async def value(query: Any) -> Any:
            async with engine.connect() as conn:
                return (await conn.execute(query)).scalar()

        async def projection_online() -> Any:
            return await value(select(assets.c.online).where(assets.c.charger_id == cid))

        cursor = select(ConsumerCursor.position).where(ConsumerCursor.consumer == RELAY_CURSOR)

        async def relay_started() -> bool:
            return await value(cursor) is not None

        await eventually(relay_started)
        async with engine.connect() as holder:  # another relay's round, taking its time
            async with charge_point(running, cid, "1.6") as cp:
                await cp.call(call16.Heartbeat(), suppress=False)
                assert await eventually(projection_online)
                await holder.begin()
                await holder.execute(cursor.with_for_update())

            async def csms_offline() -> bool:
                online = select(charger_state.c.online).where(charger_state.c.charger_id == cid)
                return await value(online) is False

            await eventually(csms_offline)
            async with charge_point(running, cid, "1.6") as cp:
                await cp.call(call16.Heartbeat(), suppress=False)
                await holder.rollback()  # the relay publishes the ChargerOffline now
                offline_id = await value(
                    select(OUTBOX.c.event_id).where(
                        OUTBOX.c.charger_id == cid, OUTBOX.c.type == "ChargerOffline"
                    )
                )
                assert offline_id is not None
                handled = select(InboxEntry.event_id).where(InboxEntry.event_id == offline_id)
                await eventually(lambda: value(handled), attempts=400)
                assert await projection_online() is True


class Fixable(ChargePoint16):  # type: ignore[misc]
    received: list[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received = []

    @on(Action16.trigger_message)
    def on_trigger(self, requested_message: str, **_: Any) -> result16.TriggerMessage:
        self.received.append(f"TriggerMessage:{requested_message}")
        return result16.TriggerMessage(status="Accepted")


async def test_commands_that_cannot_reach_the_chargers_node_are_unavailable_not_failed(
    private_nats: PrivateNats, tmp_path: Path, system_factory: SystemFactory
) -> None:
    """NATS down: the API answers 503 (outcome ``unavailable``), not 502 "Charger answered
    with an error" (the charger never saw the command); the remediation playbook keeps its
    step for later instead of counting it tried and moving on towards a dispatch."""
    store = tmp_path / "nats"
    await private_nats.start(store)
    url = f"nats://127.0.0.1:{private_nats.port}?stream=UNAVAIL&prefix=unavail"
    clock = FakeClock(utcnow())
    cid = "CP-UNAVAIL"
    async with system_factory(bus_url=url, clock=clock, ticketing_scan_interval=3600) as running:
        bus = running.system.bus
        assert isinstance(bus, NatsBus) and running.system.ticketing is not None
        runner = running.system.ticketing.remediation
        await register(running.api, cid)
        async with charge_point(running, cid, "1.6", cp_class=Fixable) as cp:
            await cp.call(
                call16.StatusNotification(
                    connector_id=1, error_code="InternalError", status="Faulted"
                )
            )

            async def in_remote_fix() -> dict[str, Any] | None:
                r = await running.api.get("/api/v1/work-orders", params={"charger_id": cid})
                items: list[dict[str, Any]] = r.json()["items"]
                return items[0] if items and items[0]["state"] == "remote_fix" else None

            order = await eventually(in_remote_fix)
            private_nats.stop()

            async def down() -> bool:
                try:
                    await bus.ping()
                except NotConnected:
                    return True
                except Exception:
                    return False
                return False

            await eventually(down)
            r = await running.api.post(f"/api/v1/chargers/{cid}/commands/reset", json={})
            assert r.status_code == 503, r.text
            assert r.json()["outcome"] == "unavailable"

            await runner.run_once()  # the playbook's first step: not delivered
            await private_nats.start(store)

            async def up() -> bool:
                with contextlib.suppress(Exception):
                    await bus.ping()
                    return True
                return False

            await eventually(up)
            clock.advance(timedelta(seconds=61))
            await runner.run_once()  # the same step again, delivered this time
            assert cp.cp.received == ["TriggerMessage:StatusNotification"]
            detail = (await running.api.get(f"/api/v1/work-orders/{order['id']}")).json()
            tried = [
                (e["changes"]["data"]["command"], e["changes"]["data"]["outcome"])
                for e in detail["timeline"]
                if e["kind"] == "remote_fix_attempt"
            ]
            assert tried == [("trigger-message", "unavailable"), ("trigger-message", "answered")]
            assert detail["state"] == "remote_fix"


async def test_a_connected_charger_whose_node_does_not_answer_is_unavailable_not_offline(
    env: NatsEnv, system_factory: SystemFactory
) -> None:
    """Nobody answers the charger's command subject (its node's NATS connection is being
    re-established, say) while the live state says it is connected to a node that beats:
    503 ``unavailable``, not 409 "no csms node holds a connection" for an online charger.
    Once it has disconnected, it is offline."""
    url = f"{NATS_URL}?stream={env.options.stream}&prefix={env.options.prefix}"
    cid = "CP-NO-ROUTE"
    path = f"/api/v1/chargers/{cid}/commands/reset"
    async with system_factory(bus_url=url) as running:
        await register(running.api, cid)
        async with charge_point(running, cid, "1.6", cp_class=Station) as cp:
            await cp.call(call16.Heartbeat(), suppress=False)
            await running.system.bus.detach_charger(cid)  # its route gone, its socket open
            r = await running.api.post(path, json={})
            assert r.status_code == 503, r.text
            assert r.json()["outcome"] == "unavailable"
            assert "connected to csms node" in r.json()["detail"]

        async def offline() -> bool:
            r = await running.api.post(path, json={})
            return r.status_code == 409 and r.json()["outcome"] == "offline"

        await eventually(offline)
