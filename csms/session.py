"""One object per connected charger: routing, validation, durability, live state.

A session subclasses the ``ocpp`` library's ``ChargePoint`` of its version (so that
handlers are registered with ``@on(Action...)`` and commands use the library's
``call()``), and replaces the library's per-message path with a faster, stricter one:

* frames parsed by :mod:`csms.protocol.framing` (string message ids, NotImplemented for
  unknown actions), payloads validated with compiled, cached validators;
* the handler's state writes and events are made durable (group commit) *before* the
  CALLRESULT is sent; if that fails the charger gets InternalError and retries;
* any error becomes the right CALLERROR and the connection stays up.

Messages of one charger are handled one at a time (OCPP allows one outstanding CALL per
side), so a flooding charger only slows itself; a token bucket throttles it further.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from functools import partial
from typing import Any, ClassVar

import orjson
from ocpp.messages import Call
from sqlalchemy import ColumnElement, select
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from csms import state
from csms.context import CsmsContext
from csms.event_ids import stable_event_id
from csms.identity import Identity
from csms.protocol.errors import ErrorKind, FrameError, error_code
from csms.protocol.framing import call_error_frame, call_result_frame, parse_frame
from csms.protocol.keys import payload_of, to_snake
from csms.protocol.timestamps import parse_timestamp
from csms.protocol.validation import validate
from csms.tables import Charger
from services.bus import record
from services.bus.contracts import (
    ConnectorRef,
    ConnectorStatusChanged,
    Event,
    FirmwareKind,
    FirmwareStatusChanged,
    MeterValuesReceived,
    NormalizedStatus,
    SecurityEventReported,
    new_event_id,
)
from services.commands.contracts import CommandName
from services.commands.progress import track_progress
from services.committer import WriteSet
from services.observability import metrics

log = logging.getLogger(__name__)

#: the command whose progress a firmware/diagnostics/log status notification reports
PROGRESS_OF: dict[FirmwareKind, CommandName] = {
    "firmware": "update-firmware",
    "signed_firmware": "update-firmware",
    "diagnostics": "get-diagnostics",
    "log": "get-diagnostics",
}
#: the CALLs that start an operation reporting its progress in these kinds: once one has
#: left, the next status of its kinds is the new operation's, even if it equals the last
#: one (see :meth:`OcppSession.firmware_event`)
STARTS_PROGRESS: dict[str, tuple[FirmwareKind, ...]] = {
    "UpdateFirmware": ("firmware", "signed_firmware"),
    "SignedUpdateFirmware": ("firmware", "signed_firmware"),
    "GetDiagnostics": ("diagnostics",),
    "GetLog": ("log",),
}


class NotSent(Exception):
    """A CALL withdrawn as it was about to leave (its ``before_send`` gave the reason)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class ConnectorLive:
    ref: ConnectorRef
    status: NormalizedStatus
    raw_status: str
    error_code: str | None = None
    vendor_id: str | None = None
    vendor_error_code: str | None = None
    info: str | None = None
    charger_time: datetime | None = None
    updated_at: datetime | None = None
    fault_event_id: str | None = None
    #: the message that reported it (2.0.1: StatusNotification or NotifyEvent
    #: AvailabilityState); not kept across reconnects
    via: str = "StatusNotification"


@dataclass(slots=True)
class Incoming:
    """The CALL being handled: handlers add their writes and events here."""

    message_id: str
    received_at: datetime
    writes: WriteSet
    events: list[Event] = field(default_factory=list)
    #: how to take back the in-memory changes made for it, should its commit fail
    undo: list[Callable[[], None]] = field(default_factory=list)

    def rollback(self) -> None:
        for step in reversed(self.undo):
            step()
        self.undo.clear()


Handler = Callable[..., Awaitable[Any]]

#: BootNotification's answer for each registry status (the same words in 1.6 and 2.0.1).
BOOT_STATUS = {"accepted": "Accepted", "pending": "Pending", "rejected": "Rejected"}

#: the kinds whose status is the charger's ``firmware_status`` (kept across reconnects)
FIRMWARE_KINDS: tuple[FirmwareKind, ...] = ("firmware", "signed_firmware")
#: the requestId of a firmware status read back from ``charger_state`` (not kept there)
UNKNOWN_REQUEST = -1
#: the last status of a kind whose operation was just started: no status is a retry of it
#: (kept by :meth:`OcppSession.load_state`, which may run after the command left)
NO_STATUS_YET: tuple[int | None, str] = (UNKNOWN_REQUEST, "")

#: A connector's current report stamped further ahead of the server's clock than this does
#: not order later reports (see :meth:`OcppSession.late_report`).
CLOCK_AHEAD_LIMIT = timedelta(minutes=1)
#: A report stamped further back than this before the connector's current one is no
#: queued report but a clock that was reset (a station without a battery-backed clock
#: reporting 1970 after a reboot): it is taken in arrival order.
LATE_LIMIT = timedelta(days=7)

#: TriggerMessage's requestedMessage -> the action the station then sends, where they differ
TRIGGERED_ACTION = {
    "SignChargingStationCertificate": "SignCertificate",
    "SignV2GCertificate": "SignCertificate",
    "SignCombinedCertificate": "SignCertificate",
}


class OcppSession:
    ocpp_version: ClassVar[str]
    action_enum: ClassVar[type[StrEnum]]
    _routes: ClassVar[dict[str, Handler]]
    _known_actions: ClassVar[frozenset[str]]
    #: every action the version's spec lets a charge point send (handled or not)
    charge_point_actions: ClassVar[frozenset[str]] = frozenset()
    #: Answer a station that is not Accepted with SecurityError for anything but
    #: BootNotification and the messages we triggered (2.0.1 B02.FR.09, B03).
    refuse_unless_accepted: ClassVar[bool] = False

    def __init__(self, identity: Identity, connection: ServerConnection, ctx: CsmsContext) -> None:
        super().__init__(  # type: ignore[call-arg]
            identity.charger_id, connection, response_timeout=ctx.settings.call_timeout
        )
        type(self).routes()  # builds the class's route table once
        self.identity = identity
        self.charger_id = identity.charger_id
        self.ws = connection
        self.ctx = ctx
        self.connectors: dict[str, ConnectorLive] = {}
        #: 2.0.1 transaction ids known to be recorded (see transactions.first_seen_201)
        self.transactions_seen: dict[str, ConnectorRef] = {}
        self.connected_at = ctx.clock()
        self.last_seen = self.connected_at
        self.flushed_seen = self.connected_at
        self.rx: Incoming | None = None
        self.replaced = False
        self.silent = False
        #: held while a CALL of this charger is handled (see :meth:`hand_over`)
        self.busy = asyncio.Lock()
        #: set once this session took over from the one it replaced and loaded the state
        self.ready = asyncio.Event()
        self._tokens = float(ctx.settings.frame_burst)
        self._refill_at = time.monotonic()
        #: (message id, action) of our CALL still waiting for its answer; the library's
        #: ``call()`` allows one at a time (``_call_lock``).
        self._awaiting: tuple[str, str] | None = None
        #: message id -> what to call as that CALL leaves (``call_charger``'s ``on_sent``)
        self._on_sent: dict[str, Callable[[], None]] = {}
        #: message id -> the payload to send as it is (``call_charger``'s ``wire``)
        self._wire: dict[str, dict[str, Any]] = {}
        #: message id -> the check run as that CALL is about to leave (``call_charger``'s
        #: ``before_send``)
        self._before_send: dict[str, Callable[[], Awaitable[str | None]]] = {}
        #: (message id, payload) of the last answer to our CALL, as the charger sent it
        self._answer: tuple[str, Any] | None = None
        self._stale_logged_at = 0.0
        #: Accepted by the last BootNotification answer (before one: by the registry at
        #: the handshake, as a station may reconnect without booting).
        self.accepted = identity.registration_status == "accepted"
        #: actions we asked for with TriggerMessage since the last BootNotification
        self._triggered: set[str] = set()
        #: the answer to the last BootNotification on this connection
        self._boot_status: str | None = None
        #: kind -> (requestId, status) of the last firmware/log status reported (see
        #: :meth:`firmware_event`); requestId ``UNKNOWN`` for one read back at the start
        self.firmware_last: dict[FirmwareKind, tuple[int | None, str]] = {}

    async def load_state(self) -> None:
        """Read the connectors' last known state so changes are detected across reconnects."""
        table = state.CONNECTOR_STATE
        async with self.ctx.db.engine.connect() as conn:
            rows = (
                await conn.execute(select(table).where(table.c.charger_id == self.charger_id))
            ).all()
        async with self.ctx.db.engine.connect() as conn:
            firmware_status = (
                await conn.execute(
                    select(state.CHARGER_STATE.c.firmware_status).where(
                        state.CHARGER_STATE.c.charger_id == self.charger_id
                    )
                )
            ).scalar_one_or_none()
        if firmware_status is not None:
            for kind in FIRMWARE_KINDS:
                self.firmware_last.setdefault(kind, (UNKNOWN_REQUEST, firmware_status))
        for row in rows:
            self.connectors[row.connector_key] = ConnectorLive(
                ConnectorRef(evse_id=row.evse_id, connector_id=row.connector_id),
                NormalizedStatus(row.status),
                row.raw_status,
                row.error_code,
                row.vendor_id,
                row.vendor_error_code,
                row.info,
                row.charger_time,
                row.updated_at,
                row.fault_event_id,
            )

    async def hand_over(self) -> None:
        """Wait until this session, just replaced by a new connection of its charger
        (``replaced`` set), changes nothing any more: its own take-over is done and the CALL
        it may be handling is committed (those that follow are refused). The new session
        loads the state after this, so it starts from the last report of this one."""
        await self.ready.wait()
        async with self.busy:
            pass

    async def registration_status(self) -> str:
        """The registry's current status: a pending station keeps its connection and
        retries BootNotification, so an operator's acceptance must reach it without a
        reconnect (the status in ``identity`` is only what it was at the handshake)."""
        async with self.ctx.db.engine.connect() as conn:
            status = (
                await conn.execute(
                    select(Charger.registration_status).where(Charger.id == self.charger_id)
                )
            ).scalar_one_or_none()
        return status if status is not None else self.identity.registration_status

    # ----------------------------------------------------------------- routing table
    @classmethod
    def routes(cls) -> dict[str, Handler]:
        if "_routes" not in cls.__dict__:
            table: dict[str, Handler] = {}
            for name in dir(cls):
                action = getattr(getattr(cls, name), "_on_action", None)
                if action is not None:
                    table[str(action)] = getattr(cls, name)
            cls._routes = table
            cls._known_actions = frozenset(str(a) for a in cls.action_enum)
        return cls._routes

    # ----------------------------------------------------------------- receive loop
    async def run(self) -> None:
        try:
            async for raw in self.ws:
                await self._throttle()
                await self.route_message(raw)
        except ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == 1009:
                # websockets refused a frame above max_frame_bytes and closed with 1009.
                metrics.FRAMES_LIMITED.labels("oversized").inc()

    async def _throttle(self) -> None:
        rate = self.ctx.settings.frames_per_second
        now = time.monotonic()
        self._tokens = min(
            float(self.ctx.settings.frame_burst), self._tokens + (now - self._refill_at) * rate
        )
        self._refill_at = now
        if self._tokens < 1.0:
            metrics.FRAMES_LIMITED.labels("throttled").inc()
            await asyncio.sleep((1.0 - self._tokens) / rate)
            self._tokens = 1.0
            self._refill_at = time.monotonic()
        self._tokens -= 1.0

    async def route_message(self, raw: str | bytes) -> None:
        received_at = self.ctx.clock()
        self.last_seen = received_at
        text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
        try:
            frame = parse_frame(raw)
        except FrameError as exc:
            metrics.child(metrics.FRAMES, "in", "invalid", "none").inc()
            reply = self._error_frame(exc.message_id or "-1", exc)
            self._log_exchange(0, None, exc.message_id, text, received_at, reply, 4)
            await self._send_reply(reply, 4, None)
            return
        if isinstance(frame, Call):
            async with self.busy:
                await self._handle_call_fast(frame, text, received_at)
            return
        type_id: int = frame.message_type_id
        unique_id: str = frame.unique_id
        awaiting = self._awaiting
        if awaiting is None or awaiting[0] != unique_id:
            # Decision: only the answer to our outstanding CALL reaches the library's
            # unbounded queue; anything else would pile up until our next call() walks it
            # (recursively). It is kept in the raw log and counted, then dropped.
            metrics.child(metrics.FRAMES, "in", str(type_id), "response").inc()
            self._log_exchange(type_id, None, unique_id, text, received_at, None, None)
            self._stale_response(unique_id)
            return
        self._awaiting = None  # a repeated answer to the same CALL is stale too
        # Counted under the action of our CALL it answers (one we sent: a bounded set).
        metrics.child(metrics.FRAMES, "in", str(type_id), awaiting[1]).inc()
        self._answer = (unique_id, getattr(frame, "payload", None))
        # Logged with the action of the CALL it answers, so a filter on the action finds it.
        self._log_exchange(type_id, awaiting[1], unique_id, text, received_at, None, None)
        self._response_queue.put_nowait(frame)  # type: ignore[attr-defined]

    def _stale_response(self, unique_id: str) -> None:
        metrics.STALE_RESPONSES.inc()
        now = time.monotonic()
        if now - self._stale_logged_at >= 60.0:
            self._stale_logged_at = now
            log.warning(
                "charger %s: dropped an answer to no outstanding call (id %.40r; "
                "further ones this minute are only counted)",
                self.charger_id,
                unique_id,
            )

    def _action_label(self, action: str) -> str:
        return action if action in self._known_actions else "unknown"

    async def _handle_call_fast(self, call: Call, text: str, received_at: datetime) -> None:
        started = time.perf_counter()
        action: str = call.action
        message_id: str = call.unique_id
        handler = self._routes.get(action)
        label = action if handler is not None else self._action_label(action)
        metrics.child(metrics.FRAMES, "in", "2", label).inc()
        writes = WriteSet()
        try:
            if handler is None:
                if action in self.charge_point_actions:
                    raise FrameError(
                        ErrorKind.not_supported,
                        f"{action} is not supported by this CSMS",
                    )
                if action in self._known_actions:
                    raise FrameError(
                        ErrorKind.not_supported,
                        f"{action} is not a message a charge point sends to a CSMS",
                    )
                raise FrameError(
                    ErrorKind.not_implemented,
                    f"{action} is not an OCPP {self.ocpp_version} action",
                )
            if self.replaced:
                # A newer connection of this charger took over: what this one would write
                # could undo what that one reports (each keeps its own live state).
                raise FrameError(
                    ErrorKind.generic,
                    "this connection was replaced by a newer one of this charge point; "
                    "send on that one",
                )
            if (
                self.refuse_unless_accepted
                and not self.accepted
                and action != "BootNotification"
                and action not in self._triggered
            ):
                raise FrameError(
                    ErrorKind.security,
                    f"{action} refused: the station is not Accepted; send BootNotification",
                )
            validate(self.ocpp_version, action, call.payload)
            self.rx = Incoming(message_id, received_at, writes)
            response = await handler(self, **to_snake(call.payload))
            payload = _response_payload(response)
            try:
                validate(self.ocpp_version, action, payload, response=True)
            except FrameError as exc:
                # Our own answer breaks the schema: our fault, not the charger's.
                log.error("charger %s: invalid %s response: %s", self.charger_id, action, exc)
                raise FrameError(
                    ErrorKind.internal, f"the CSMS could not build a valid {action} response"
                ) from exc
            reply = call_result_frame(message_id, payload)
            await record(self.ctx.committer, self.ctx.bus, writes, self.rx.events)
            self._log_exchange(2, action, message_id, text, received_at, reply, 3)
        except FrameError as exc:
            if self.rx is not None:
                self.rx.rollback()
            reply = self._error_frame(message_id, exc)
            self._log_exchange(2, action, message_id, text, received_at, reply, 4)
            await self._send_reply(reply, 4, action)
            return
        except Exception:
            log.exception("charger %s: handling %s failed", self.charger_id, action)
            if self.rx is not None:
                # Nothing was committed: the charger retries, and the retry must find the
                # live state as it was (or the change it reports would look like none).
                self.rx.rollback()
            reply = self._error_frame(
                message_id,
                FrameError(ErrorKind.internal, "the CSMS could not handle the message; retry"),
            )
            self._log_exchange(2, action, message_id, text, received_at, reply, 4)
            await self._send_reply(reply, 4, action)
            return
        finally:
            self.rx = None
        await self._send_reply(reply, 3, action, label)
        metrics.child(metrics.HANDLER_SECONDS, label).observe(time.perf_counter() - started)

    # ----------------------------------------------------------------- logging and sending
    def _log_exchange(
        self,
        message_type: int,
        action: str | None,
        message_id: str | None,
        text: str,
        received_at: datetime,
        reply: str | None,
        reply_type: int | None,
    ) -> None:
        """Log an incoming frame and, in the same row, our answer to it (if any).

        The answer is logged as it is handed to the socket: for a CALL that is after its
        writes and events are committed. The row itself is a deferred write (the raw log
        is diagnostic; see ``GroupCommitter.submit``)."""
        self.ctx.committer.submit_insert(
            state.MESSAGE_LOG,
            state.log_row(
                self.charger_id,
                "in",
                message_type,
                action,
                message_id,
                text,
                received_at,
                reply=reply,
                reply_type=reply_type,
                reply_at=self.ctx.clock() if reply is not None else None,
            ),
        )

    def _error_frame(self, message_id: str, exc: FrameError) -> str:
        code = error_code(exc.kind, self.ocpp_version)
        metrics.child(metrics.CALL_ERRORS, code).inc()
        log.info("charger %s: CALLERROR %s: %s", self.charger_id, code, exc.description)
        return call_error_frame(message_id, code, exc.description, exc.details)

    async def _send_reply(
        self, frame: str, message_type: int, action: str | None, label: str | None = None
    ) -> None:
        try:
            await self.ws.send(frame)
        except ConnectionClosed:
            return
        if label is None:
            label = self._action_label(action or "")
        metrics.child(metrics.FRAMES, "out", str(message_type), label).inc()

    async def _send_frame(
        self, frame: str, message_type: int, message_id: str | None, action: str | None
    ) -> None:
        """Send a frame we initiate (a CALL to the charger) and log it on its own row."""
        self.ctx.committer.submit_insert(
            state.MESSAGE_LOG,
            state.log_row(
                self.charger_id, "out", message_type, action, message_id, frame, self.ctx.clock()
            ),
        )
        await self._send_reply(frame, message_type, action)

    async def _send(self, message: str) -> None:
        """Used by the library's ``call()`` for CSMS-initiated messages."""
        parsed = orjson.loads(message)
        action = parsed[2] if parsed[0] == 2 else None
        if action is not None:
            check = self._before_send.pop(parsed[1], None)
            reason = await check() if check is not None else None
            if reason is not None:
                self._on_sent.pop(parsed[1], None)
                self._wire.pop(parsed[1], None)
                raise NotSent(reason)
            # Set before the frame leaves: its answer may arrive before send() returns.
            self._awaiting = (parsed[1], action)
            on_sent = self._on_sent.pop(parsed[1], None)
            if on_sent is not None:
                on_sent()
            wire = self._wire.pop(parsed[1], None)
            if wire is not None:
                parsed[3] = wire
                message = orjson.dumps(parsed).decode()
            for kind in STARTS_PROGRESS.get(action, ()):
                self.firmware_last[kind] = NO_STATUS_YET
            if action == "TriggerMessage":
                requested = str(parsed[3].get("requestedMessage"))
                self._triggered.add(TRIGGERED_ACTION.get(requested, requested))
        await self._send_frame(message, parsed[0], parsed[1], action)

    # ----------------------------------------------------------------- commands
    async def call_charger(
        self,
        payload: Any,
        on_sent: Callable[[], None] | None = None,
        wire: dict[str, Any] | None = None,
        before_send: Callable[[], Awaitable[str | None]] | None = None,
    ) -> tuple[Any, Any]:
        """Send a CSMS-initiated CALL with the library's ``call()``; return the answer, as
        the library's object and as the payload the charger sent (the library converts
        every key between camelCase and snake_case, vendor data included).

        A CALLERROR answer raises the library's ``OCPPError`` (``suppress=False``); no
        answer within ``call_timeout`` of the CALL leaving raises ``TimeoutError``.
        Payloads are validated by the caller with the compiled validators, so an
        ``OCPPError`` here is always the charger's own CALLERROR.

        The library sends one CALL at a time (``_call_lock``): a call made while another
        awaits its answer waits for it before it is sent. ``on_sent`` is called as the
        frame leaves (never if the call is cancelled while waiting); ``wire``, if given, is
        sent as the CALL's payload instead of the library's rendering of ``payload``;
        ``before_send``, if given, runs when the CALL is about to leave (its turn came): a
        reason it returns withdraws the CALL unsent (:class:`NotSent`)."""
        call = super().call  # type: ignore[misc]
        unique_id = str(uuid.uuid4())
        if on_sent is not None:
            self._on_sent[unique_id] = on_sent
        if wire is not None:
            self._wire[unique_id] = wire
        if before_send is not None:
            self._before_send[unique_id] = before_send
        try:
            result = await call(
                payload, suppress=False, unique_id=unique_id, skip_schema_validation=True
            )
            answer = self._answer
            return result, answer[1] if answer is not None and answer[0] == unique_id else None
        finally:
            self._on_sent.pop(unique_id, None)
            self._wire.pop(unique_id, None)
            self._before_send.pop(unique_id, None)
            # Timed out or cancelled: a late answer to this CALL is stale from now on.
            if self._awaiting is not None and self._awaiting[0] == unique_id:
                self._awaiting = None

    # ----------------------------------------------------------------- helpers for handlers
    @property
    def incoming(self) -> Incoming:
        if self.rx is None:
            raise RuntimeError("no CALL is being handled")
        return self.rx

    def emit(self, event: Event) -> None:
        self.incoming.events.append(event)

    def set_connector(
        self,
        ref: ConnectorRef,
        status: NormalizedStatus,
        raw_status: str,
        *,
        error_code: str | None = None,
        vendor_id: str | None = None,
        vendor_error_code: str | None = None,
        info: str | None = None,
        charger_time: datetime | None = None,
        fault_event_id: str | None = None,
        via: str = "StatusNotification",
    ) -> ConnectorLive | None:
        """Record a connector's status; returns its previous live state (None if unknown).

        ``fault_event_id`` is the id of the FaultRaised this report emits (see
        :meth:`fault_event_id`)."""
        rx = self.incoming
        key = ref.key
        previous = self.connectors.get(key)
        live = ConnectorLive(
            ref,
            status,
            raw_status,
            error_code,
            vendor_id,
            vendor_error_code,
            info,
            charger_time,
            rx.received_at,
            fault_event_id,
            via,
        )
        self.connectors[key] = live
        rx.undo.append(partial(self._restore_connector, key, previous))
        state.connector_state(
            rx.writes,
            self.charger_id,
            key,
            evse_id=ref.evse_id,
            connector_id=ref.connector_id,
            status=status.value,
            raw_status=raw_status,
            error_code=error_code,
            vendor_id=vendor_id,
            vendor_error_code=vendor_error_code,
            info=info,
            charger_time=charger_time,
            updated_at=rx.received_at,
            fault_event_id=fault_event_id,
        )
        changed = (
            previous is None
            or previous.status != status
            or previous.raw_status != raw_status
            or previous.error_code != error_code
        )
        if changed:
            state.history(
                rx.writes,
                self.charger_id,
                state.CONNECTOR,
                key,
                status.value,
                rx.received_at,
                raw_status=raw_status,
                error_code=error_code,
                charger_time=charger_time,
            )
        if previous is None or previous.status != status:
            self.emit(
                ConnectorStatusChanged(
                    charger_id=self.charger_id,
                    received_at=rx.received_at,
                    charger_time=charger_time,
                    connector=ref,
                    status=status,
                    raw_status=raw_status,
                    previous_status=previous.status if previous else None,
                    error_code=error_code,
                    vendor_id=vendor_id,
                    vendor_error_code=vendor_error_code,
                    info=info,
                )
            )
        return previous

    async def late_report(
        self,
        ref: ConnectorRef,
        status: NormalizedStatus,
        raw_status: str,
        *,
        error_code: str | None,
        charger_time: datetime | None,
    ) -> bool:
        """Record a status report older than the connector's current one; False (nothing
        done) when it is not.

        Decision: a report is late when its charger timestamp is before that of the report
        the live state holds (a charger flushing, after a reconnect, the reports it queued
        while offline, after it reported its current state). It is not the current state:
        the live state keeps the newer report and no change event is emitted (the change
        it reported is over). It is not lost either: its status-history interval starts
        where it happened, its charger time shifted by the clock offset of the current
        report, and lasts until the next row; with none after it (the current report
        changed nothing, so it started no row) the current report starts one, or the late
        report would be the open interval. Both timestamps come from the
        charger's one clock, so a clock behind or ahead of the server's does not matter;
        a current report stamped more than :data:`CLOCK_AHEAD_LIMIT` ahead of the
        server's clock orders nothing (that clock was wrong, and may have been set right
        since), nor is a report stamped over :data:`LATE_LIMIT` before it late (a reset
        clock): reports are then taken in arrival order. Nor is a report stamped at or
        after the server's receipt of the current one: a clock that ran ahead and was set
        back (BootNotification answer, NTP) stamps the next change before the last report,
        and it is current (a charger whose clock runs ahead may so have a report it queued
        in the last seconds before the current one taken in arrival order)."""
        live = self.connectors.get(ref.key)
        if (
            live is None
            or charger_time is None
            or live.charger_time is None
            or live.updated_at is None
            or charger_time >= live.charger_time
            or charger_time >= live.updated_at
            or charger_time < live.charger_time - LATE_LIMIT
        ):
            return False
        offset = live.updated_at - live.charger_time
        if offset < -CLOCK_AHEAD_LIMIT:
            return False
        writes = self.incoming.writes
        started_at = charger_time + offset
        if await self._recorded(ref.key, raw_status, error_code, charger_time):
            return True  # a retry of a report already recorded (see _recorded)
        if not await self._history_after(ref.key, started_at):
            state.history(
                writes,
                self.charger_id,
                state.CONNECTOR,
                ref.key,
                live.status.value,
                live.updated_at,
                raw_status=live.raw_status,
                error_code=live.error_code,
                charger_time=live.charger_time,
            )
        state.history(
            writes,
            self.charger_id,
            state.CONNECTOR,
            ref.key,
            status.value,
            started_at,
            raw_status=raw_status,
            error_code=error_code,
            charger_time=charger_time,
        )
        metrics.LATE_STATUS_REPORTS.inc()
        log.info(
            "charger %s: connector %s reported %s at %s, before its current report (%s): "
            "kept in the history only",
            self.charger_id,
            ref.key,
            raw_status,
            charger_time.isoformat(),
            live.charger_time.isoformat(),
        )
        return True

    async def _history_after(self, connector_key: str, at: datetime) -> bool:
        """Whether the connector's status history has a row starting after ``at``."""
        return await self._history_has(connector_key, state.STATUS_HISTORY.c.started_at > at)

    async def _recorded(
        self, connector_key: str, raw_status: str, error_code: str | None, charger_time: datetime
    ) -> bool:
        """Whether the connector's history has a row of this report (status, error code and
        charger time): the charger sent it again, its answer lost. Decision: by content,
        not by start, which depends on the current report's clock offset (a report of
        another connection, or one received after it, when the answer was lost with the
        connection); two reports alike in one charger-clock second are one interval."""
        table = state.STATUS_HISTORY
        return await self._history_has(
            connector_key,
            table.c.charger_time == charger_time,
            table.c.raw_status == raw_status,
            table.c.error_code.is_(None)
            if error_code is None
            else table.c.error_code == error_code,
        )

    async def _history_has(self, connector_key: str, *conditions: ColumnElement[bool]) -> bool:
        """Whether the connector's status history has a row meeting ``conditions``."""
        table = state.STATUS_HISTORY
        query = (
            select(table.c.id)
            .where(
                table.c.charger_id == self.charger_id,
                table.c.kind == state.CONNECTOR,
                table.c.connector_key == connector_key,
                *conditions,
            )
            .limit(1)
        )
        async with self.ctx.db.engine.connect() as conn:
            return (await conn.execute(query)).first() is not None

    def _restore_connector(self, key: str, previous: ConnectorLive | None) -> None:
        if previous is None:
            self.connectors.pop(key, None)
        else:
            self.connectors[key] = previous

    def fault_event_id(
        self,
        ref: ConnectorRef,
        raw_status: str,
        error_code: str | None,
        vendor_error_code: str | None,
        charger_time: datetime | None,
    ) -> str:
        """The id of the FaultRaised of a status report, read before :meth:`set_connector`.

        Decision: chargers retry a report with a new message id, so a retry is recognised
        by its content: the connector is already in the reported state, with the same
        charger timestamp; it keeps the id of the report that set that state (kept in
        connector_state, so also after a reconnect or restart). Anything else is a new
        occurrence with a new id, even at the same charger timestamp (second-resolution
        clocks: Faulted, Available, Faulted in one second are two faults)."""
        live = self.connectors.get(ref.key)
        if (
            live is not None
            and live.fault_event_id is not None
            and charger_time is not None
            and live.charger_time == charger_time
            and (live.raw_status, live.error_code, live.vendor_error_code)
            == (raw_status, error_code, vendor_error_code)
        ):
            return live.fault_event_id
        return new_event_id()

    def store_meter_value(
        self, connector_key: str, transaction_id: str | None, sample: dict[str, Any]
    ) -> str:
        """Store one meter-value sample, de-duplicated on its content; returns its key.

        The content is the sampled values too, not only the timestamp: chargers send
        several MeterValues with one timestamp (a message per measurand), and a sample
        sent again (a retry, or 1.6 transactionData repeating a MeterValues) is one."""
        rx = self.incoming
        ts = sample.get("timestamp")
        values = orjson.dumps(sample.get("sampled_value", []), option=orjson.OPT_SORT_KEYS)
        key = hashlib.sha256(
            f"{self.charger_id}|{connector_key}|{ts}|{transaction_id}|".encode() + values
        ).hexdigest()
        state.meter_values(
            rx.writes,
            key,
            self.charger_id,
            connector_key,
            transaction_id,
            parse_timestamp(ts),
            rx.received_at,
            sample.get("sampled_value", []),
        )
        return key

    def record_meter_values(
        self, connector: ConnectorRef, transaction_id: str | None, samples: list[dict[str, Any]]
    ) -> None:
        """Store the samples of one message and emit their MeterValuesReceived, whose id
        derives from the samples' keys (a retry is one event)."""
        keys = [self.store_meter_value(connector.key, transaction_id, s) for s in samples]
        self.emit(
            MeterValuesReceived(
                event_id=stable_event_id(self.charger_id, "meter", *keys),
                charger_id=self.charger_id,
                received_at=self.incoming.received_at,
                charger_time=parse_timestamp(samples[0].get("timestamp")),
                connector=connector,
                transaction_id=transaction_id,
                samples=samples,
            )
        )

    def firmware_event(self, kind: FirmwareKind, status: str, request_id: int | None) -> None:
        """Emit the status of a firmware update or log upload, and append it to the
        progress of the command that started it (same transaction).

        Decision: these messages carry no timestamp, so a retry (new message id) is
        recognised by its content: the same status (and requestId) as the last one of its
        kind is no change and emits nothing (the command's progress skips it too). For
        firmware the last status is the charger's ``firmware_status``, so a retry after a
        reconnect is recognised (with any requestId: it is not kept); a log or
        diagnostics status only on the same connection. An update or upload command sent
        to the charger ends that: the next status is the new operation's (a charger that
        fails two updates alike reports the same status twice, without one before it)."""
        rx = self.incoming
        last = self.firmware_last.get(kind)
        if last is not None and last[1] == status and last[0] in (request_id, UNKNOWN_REQUEST):
            return
        self.firmware_last[kind] = (request_id, status)
        rx.undo.append(partial(self._restore_firmware, kind, last))
        self.command_progress(PROGRESS_OF[kind], request_id, status)
        self.emit(
            FirmwareStatusChanged(
                charger_id=self.charger_id,
                received_at=rx.received_at,
                kind=kind,
                status=status,
                request_id=request_id,
            )
        )

    def _restore_firmware(self, kind: FirmwareKind, last: tuple[int | None, str] | None) -> None:
        if last is None:
            self.firmware_last.pop(kind, None)
        else:
            self.firmware_last[kind] = last

    def command_progress(self, name: CommandName, request_id: int | None, status: str) -> None:
        rx = self.incoming
        track_progress(
            rx.writes,
            charger_id=self.charger_id,
            name=name,
            request_id=request_id,
            status=status,
            at=rx.received_at,
        )

    def security_event(self, event_type: str, timestamp: str, tech_info: str | None) -> None:
        """A retry (new message id, same content) keeps its event id; two events of one type
        in one charger-clock second differ by their techInfo and are two events."""
        rx = self.incoming
        self.emit(
            SecurityEventReported(
                event_id=stable_event_id(
                    self.charger_id, "security", event_type, timestamp, tech_info or ""
                ),
                charger_id=self.charger_id,
                received_at=rx.received_at,
                charger_time=parse_timestamp(timestamp),
                event_type=event_type,
                tech_info=tech_info,
            )
        )

    def booted(self, status: str) -> bool:
        """Record the registration status a BootNotification is answered with; returns
        whether it repeats a boot rather than reports one: the station was answered Pending
        or Rejected before on this connection (it must send BootNotification again until
        Accepted: 1.6 4.2, 2.0.1 B02/B03), or we asked for it with TriggerMessage."""
        repeated = (
            self._boot_status in ("Pending", "Rejected") or "BootNotification" in self._triggered
        )
        before = (self.accepted, set(self._triggered), self._boot_status)
        self.incoming.undo.append(partial(self._restore_boot, *before))
        self.accepted = status == "Accepted"
        self._triggered.clear()
        self._boot_status = status
        return repeated

    def _restore_boot(self, accepted: bool, triggered: set[str], boot_status: str | None) -> None:
        self.accepted, self._triggered, self._boot_status = accepted, triggered, boot_status

    def touch_state(self, **values: Any) -> None:
        state.charger_state(self.incoming.writes, self.charger_id, **values)


def _response_payload(response: Any) -> dict[str, Any]:
    payload = payload_of(response)  # a dict for a call_result dataclass or a dict
    if not isinstance(payload, dict):
        raise TypeError(f"handler returned {type(response).__name__}, not a call_result payload")
    return payload
