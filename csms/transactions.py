"""Charging transactions, de-duplicated on their content.

Chargers retry with new message ids (EVerest does), so a start is identified by
(charger, connector, charger timestamp as an instant, id tag) in 1.6 and by
(charger, transactionId) in 2.0.1; the events they cause carry deterministic ids, so a
retry adds nothing.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from csms.event_ids import stable_event_id
from csms.protocol.timestamps import parse_timestamp
from csms.state import TRANSACTIONS
from services.bus.contracts import ConnectorRef, TransactionEnded, TransactionStarted
from services.committer import WriteSet

if TYPE_CHECKING:
    from csms.session import OcppSession


def _key(*parts: object) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()


async def start_transaction_16(
    session: OcppSession, *, connector_id: int, id_tag: str, meter_start: int, timestamp: str
) -> int:
    """Create (or find the retried) transaction and return its integer id."""
    rx = session.incoming
    started_at = parse_timestamp(timestamp)
    # The instant, not the text: "...00Z" and "...00.000+00:00" are the same start.
    instant = started_at.isoformat() if started_at is not None else timestamp
    dedupe = _key(session.charger_id, connector_id, instant, id_tag)

    def create(conn: Connection) -> int:
        existing = conn.execute(
            select(TRANSACTIONS.c.id).where(TRANSACTIONS.c.dedupe_key == dedupe)
        ).scalar()
        if existing is not None:
            return int(existing)
        result = conn.execute(
            TRANSACTIONS.insert().values(
                dedupe_key=dedupe,
                charger_id=session.charger_id,
                connector_key=str(connector_id),
                id_token=id_tag,
                meter_start_wh=float(meter_start),
                started_at=started_at,
                received_at=rx.received_at,
            )
        )
        new_id = int(result.inserted_primary_key[0])  # type: ignore[index]
        conn.execute(
            TRANSACTIONS.update()
            .where(TRANSACTIONS.c.id == new_id)
            .values(transaction_id=str(new_id))
        )
        return new_id

    writes = WriteSet()
    writes.then(create)
    (transaction_id,) = await session.ctx.committer.commit(writes)
    session.emit(
        TransactionStarted(
            event_id=stable_event_id(session.charger_id, "tx-start", dedupe),
            charger_id=session.charger_id,
            received_at=rx.received_at,
            charger_time=started_at,
            transaction_id=str(transaction_id),
            connector=ConnectorRef(connector_id=connector_id),
            id_token=id_tag,
            meter_start_wh=float(meter_start),
        )
    )
    return int(transaction_id)


async def connector_of(session: OcppSession, transaction_id: str) -> str | None:
    """The connector key of one of the charger's transactions (None if unknown)."""
    async with session.ctx.db.engine.connect() as conn:
        key = (
            await conn.execute(
                select(TRANSACTIONS.c.connector_key).where(
                    TRANSACTIONS.c.charger_id == session.charger_id,
                    TRANSACTIONS.c.transaction_id == transaction_id,
                )
            )
        ).scalar_one_or_none()
    return str(key) if key is not None else None


async def first_seen_201(
    session: OcppSession,
    *,
    transaction_id: str,
    connector: ConnectorRef | None,
    id_token: str | None,
) -> ConnectorRef:
    """The connector of a transaction an Updated or Ended event reports (``connector``
    when the event names its EVSE, which it need only do in the transaction's first
    event); the transaction is recorded first if we have not seen it.

    Its Started never reached us (lost, or the station came to this CSMS during the
    transaction): the transaction is recorded (start time and meter start unknown) so that
    it counts as running, and a TransactionStarted is emitted (``charger_time`` None) so
    consumers see every TransactionEnded after its start. Known transactions are
    remembered per session; an unknown one costs one read."""
    seen = session.transactions_seen.get(transaction_id)
    if seen is not None:
        return connector or seen
    key = await connector_of(session, transaction_id)
    if key is not None:
        known = connector or connector_ref(key)
        _seen(session, transaction_id, known)
        return known
    connector = connector or ConnectorRef()
    _seen(session, transaction_id, connector)
    _record_start(session, transaction_id, connector, id_token, None, None)
    return connector


def record_token_201(session: OcppSession, *, transaction_id: str, id_token: str) -> None:
    """The token a later event of a transaction carries is its token if it had none: a
    transaction started before authorization (cable plugged in first: Started without an
    idToken) is authorized by the token of a later Updated (triggerReason Authorized or
    RemoteStart). A token the transaction already has is kept (the caller leaves out the
    token of a stop, StopAuthorized, which need not be the one that started it).

    Decision: only the transactions table records it; its TransactionStarted went out
    without a token and contracts have no event for a token authorized later."""

    def update(conn: Connection) -> None:
        conn.execute(
            TRANSACTIONS.update()
            .where(
                TRANSACTIONS.c.charger_id == session.charger_id,
                TRANSACTIONS.c.transaction_id == transaction_id,
                TRANSACTIONS.c.id_token.is_(None),
            )
            .values(id_token=id_token)
        )

    session.incoming.writes.then(update)


def connector_ref(key: str) -> ConnectorRef:
    """The 2.0.1 connector a connector key names ("1/2": EVSE 1 connector 2, "1": EVSE 1)."""
    evse, _, connector = key.partition("/")
    return ConnectorRef(evse_id=int(evse), connector_id=int(connector) if connector else None)


def _seen(session: OcppSession, transaction_id: str, connector: ConnectorRef) -> None:
    seen = session.transactions_seen
    if transaction_id not in seen:

        def forget() -> None:
            seen.pop(transaction_id, None)

        session.incoming.undo.append(forget)
    seen[transaction_id] = connector


def start_transaction_201(
    session: OcppSession,
    *,
    transaction_id: str,
    connector: ConnectorRef,
    id_token: str | None,
    meter_start_wh: float | None,
    timestamp: str,
) -> None:
    started_at = parse_timestamp(timestamp)
    _seen(session, transaction_id, connector)
    _record_start(session, transaction_id, connector, id_token, meter_start_wh, started_at)


def _record_start(
    session: OcppSession,
    transaction_id: str,
    connector: ConnectorRef,
    id_token: str | None,
    meter_start_wh: float | None,
    started_at: datetime | None,
) -> None:
    """The transaction row (once) and its TransactionStarted (stable id: once)."""
    rx = session.incoming
    rx.writes.insert_ignore(
        TRANSACTIONS,
        {
            "dedupe_key": _key(session.charger_id, transaction_id),
            "transaction_id": transaction_id,
            "charger_id": session.charger_id,
            "connector_key": connector.key,
            "id_token": id_token,
            "meter_start_wh": meter_start_wh,
            "meter_stop_wh": None,
            "started_at": started_at,
            "stopped_at": None,
            "stop_reason": None,
            "received_at": rx.received_at,
        },
    )
    session.emit(
        TransactionStarted(
            event_id=stable_event_id(session.charger_id, "tx-start", transaction_id),
            charger_id=session.charger_id,
            received_at=rx.received_at,
            charger_time=started_at,
            transaction_id=transaction_id,
            connector=connector,
            id_token=id_token,
            meter_start_wh=meter_start_wh,
        )
    )


def stop_transaction(
    session: OcppSession,
    *,
    transaction_id: str,
    meter_stop: float | None,
    timestamp: str,
    reason: str | None,
) -> None:
    rx = session.incoming
    stopped_at = parse_timestamp(timestamp)
    values: dict[str, Any] = {"stopped_at": stopped_at, "stop_reason": reason}
    if meter_stop is not None:
        values["meter_stop_wh"] = meter_stop

    def close(conn: Connection) -> None:
        conn.execute(
            TRANSACTIONS.update()
            .where(
                TRANSACTIONS.c.charger_id == session.charger_id,
                TRANSACTIONS.c.transaction_id == transaction_id,
                TRANSACTIONS.c.stopped_at.is_(None),
            )
            .values(**values)
        )

    rx.writes.then(close)
    session.emit(
        TransactionEnded(
            event_id=stable_event_id(session.charger_id, "tx-end", transaction_id),
            charger_id=session.charger_id,
            received_at=rx.received_at,
            charger_time=stopped_at,
            transaction_id=transaction_id,
            meter_stop_wh=meter_stop,
            reason=reason,
        )
    )
