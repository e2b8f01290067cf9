"""Chargers: registry CRUD, live state, raw message log, status history, events."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, Response
from pydantic import AwareDatetime
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from csms.api.schemas import (
    ChargerCreate,
    ChargerOut,
    ChargerUpdate,
    ConnectorOut,
    EventOut,
    IntervalOut,
    MessageOut,
    Page,
)
from csms.tables import (
    Charger,
    ChargerState,
    ConnectorState,
    MessageLogEntry,
    ProblemState,
    StatusInterval,
)
from services.api_auth import AdminOrDispatcher, AnyRole
from services.api_params import Offset
from services.api_params import cursor as parse_cursor
from services.bus.tables import OutboxEvent
from services.committer import GroupCommitter
from services.db import Database, utcnow
from services.problems import Problem
from services.registry import ChargerInUse
from services.security import hash_password

router = APIRouter(prefix="/chargers", tags=["chargers"])


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _not_found(charger_id: str) -> Problem:
    return Problem(404, "Not Found", f"no charger {charger_id!r}")


async def _charger_out(db: Database, chargers: list[Charger]) -> list[ChargerOut]:
    ids = [c.id for c in chargers]
    async with db.session() as session:
        states = {
            s.charger_id: s
            for s in (
                await session.execute(select(ChargerState).where(ChargerState.charger_id.in_(ids)))
            ).scalars()
        }
        connectors: dict[str, list[ConnectorState]] = {}
        for row in (
            await session.execute(
                select(ConnectorState)
                .where(ConnectorState.charger_id.in_(ids))
                .order_by(ConnectorState.connector_key)
            )
        ).scalars():
            connectors.setdefault(row.charger_id, []).append(row)
    out = []
    for c in chargers:
        st = states.get(c.id)
        out.append(
            ChargerOut(
                id=c.id,
                security_profile=c.security_profile,
                registration_status=c.registration_status,
                site=c.site,
                vendor=c.vendor,
                model=c.model,
                notes=c.notes,
                enabled=c.enabled,
                created_at=c.created_at,
                updated_at=c.updated_at,
                online=bool(st and st.online),
                connected=bool(st and st.connected),
                ocpp_version=st.ocpp_version if st else None,
                node_id=st.node_id if st else None,
                last_seen=st.last_seen if st else None,
                connected_at=st.connected_at if st else None,
                offline_since=st.offline_since if st else None,
                boot={
                    "vendor": st.vendor,
                    "model": st.model,
                    "serial_number": st.serial_number,
                    "firmware_version": st.firmware_version,
                    "last_boot_at": st.last_boot_at,
                    "firmware_status": st.firmware_status,
                }
                if st
                else {},
                connectors=[
                    ConnectorOut(
                        connector=r.connector_key,
                        evse_id=r.evse_id,
                        connector_id=r.connector_id,
                        status=r.status,
                        raw_status=r.raw_status,
                        error_code=r.error_code,
                        vendor_id=r.vendor_id,
                        vendor_error_code=r.vendor_error_code,
                        info=r.info,
                        charger_time=r.charger_time,
                        updated_at=r.updated_at,
                    )
                    for r in connectors.get(c.id, [])
                ],
            )
        )
    return out


async def _get(db: Database, charger_id: str) -> Charger:
    async with db.session() as session:
        charger = await session.get(Charger, charger_id)
    if charger is None:
        raise _not_found(charger_id)
    return charger


@router.post("", status_code=201, response_model=ChargerOut)
async def create_charger(body: ChargerCreate, request: Request, _: AdminOrDispatcher) -> ChargerOut:
    db = _db(request)
    now = utcnow()
    charger = Charger(
        id=body.id,
        password_hash=hash_password(body.password) if body.password else None,
        security_profile=body.security_profile,
        registration_status="accepted",
        site=body.site,
        vendor=body.vendor,
        model=body.model,
        notes=body.notes,
        enabled=body.enabled,
        created_at=now,
        updated_at=now,
    )
    async with db.session() as session:
        session.add(charger)
        try:
            await session.commit()
        except IntegrityError:
            raise Problem(409, "Conflict", f"charger {body.id!r} already exists") from None
    return (await _charger_out(db, [charger]))[0]


@router.get("", response_model=list[ChargerOut])
async def list_chargers(
    request: Request,
    _: AnyRole,
    site: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> list[ChargerOut]:
    db = _db(request)
    query = select(Charger).order_by(Charger.id).limit(limit).offset(offset)
    if site is not None:
        query = query.where(Charger.site == site)
    async with db.session() as session:
        chargers = list((await session.execute(query)).scalars())
    return await _charger_out(db, chargers)


@router.get("/{charger_id}", response_model=ChargerOut)
async def get_charger(charger_id: str, request: Request, _: AnyRole) -> ChargerOut:
    db = _db(request)
    return (await _charger_out(db, [await _get(db, charger_id)]))[0]


@router.patch("/{charger_id}", response_model=ChargerOut)
async def update_charger(
    charger_id: str, body: ChargerUpdate, request: Request, _: AdminOrDispatcher
) -> ChargerOut:
    db = _db(request)
    changes = body.model_dump(exclude_unset=True)
    async with db.session() as session:
        charger = await session.get(Charger, charger_id)
        if charger is None:
            raise _not_found(charger_id)
        accepting = (
            changes.get("registration_status") == "accepted"
            and charger.registration_status != "accepted"
        )
        password = changes.pop("password", None)
        if password is not None:
            charger.password_hash = hash_password(password)
        for key, value in changes.items():
            if value is None and key in ("security_profile", "registration_status", "enabled"):
                raise Problem(422, "Request validation failed", f"{key} cannot be null")
            setattr(charger, key, value)
        if charger.security_profile in (1, 2) and charger.password_hash is None:
            raise Problem(
                422, "Request validation failed", "security profiles 1 and 2 need a password"
            )
        if accepting and charger.security_profile == 0 and "security_profile" not in changes:
            # A station commissioned without credentials could be anyone using its id.
            raise Problem(
                422,
                "Request validation failed",
                "this charger has no credentials: set a password and security_profile 1-3, "
                "or send security_profile 0 explicitly to accept it without authentication",
            )
        charger.updated_at = utcnow()
        await session.commit()
    return (await _charger_out(db, [charger]))[0]


@router.delete("/{charger_id}", status_code=204)
async def delete_charger(charger_id: str, request: Request, _: AdminOrDispatcher) -> Response:
    db = _db(request)
    async with db.session() as session:
        live = await session.get(ChargerState, charger_id)
        if live is not None and live.connected:
            # Decision: its session would go on writing rows of a charger that no longer
            # exists (they fail, and the charger's reports are lost) and its connectivity
            # history would never be closed.
            raise Problem(
                409,
                "Charger connected",
                f"charger {charger_id} is connected; delete it once it has disconnected",
            )
        in_use: ChargerInUse | None = getattr(request.app.state, "charger_in_use", None)
        reason = await in_use(charger_id) if in_use is not None else None
        if reason is not None and await session.get(Charger, charger_id) is not None:
            raise Problem(409, "Charger in use", reason)
        result = await session.execute(delete(Charger).where(Charger.id == charger_id))
        if not result.rowcount:  # type: ignore[attr-defined]
            raise _not_found(charger_id)
        await session.execute(delete(ChargerState).where(ChargerState.charger_id == charger_id))
        await session.execute(delete(ConnectorState).where(ConnectorState.charger_id == charger_id))
        await session.execute(delete(ProblemState).where(ProblemState.charger_id == charger_id))
        await session.commit()
    return Response(status_code=204)


@router.get("/{charger_id}/messages", response_model=Page[MessageOut])
async def charger_messages(
    charger_id: str,
    request: Request,
    _: AnyRole,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    action: str | None = None,
) -> Page[MessageOut]:
    """The raw frames in and out, newest first.

    ``limit`` counts log rows: a charger's CALL and our answer share a row and come back as
    two frames with the same ``id``. Frames are logged within ``CHARGEOPS_DEFER_INTERVAL``
    of being answered; this process's pending log rows are written before the read."""
    db = _db(request)
    await _get(db, charger_id)
    if cursor is None:
        committer: GroupCommitter = request.app.state.committer
        await committer.flush()
    query = (
        select(MessageLogEntry)
        .where(MessageLogEntry.charger_id == charger_id)
        .order_by(MessageLogEntry.id.desc())
        .limit(limit + 1)
    )
    before = parse_cursor(cursor)
    if before is not None:
        query = query.where(MessageLogEntry.id < before)
    if action is not None:
        query = query.where(MessageLogEntry.action == action)
    async with db.session() as session:
        rows = list((await session.execute(query)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    items: list[MessageOut] = []
    for r in rows:
        if r.reply is not None and r.reply_type is not None and r.reply_at is not None:
            items.append(
                MessageOut(
                    id=r.id,
                    direction="out" if r.direction == "in" else "in",
                    message_type=r.reply_type,
                    action=r.action,
                    message_id=r.message_id,
                    payload=r.reply,
                    at=r.reply_at,
                )
            )
        items.append(
            MessageOut(
                id=r.id,
                direction=r.direction,
                message_type=r.message_type,
                action=r.action,
                message_id=r.message_id,
                payload=r.payload,
                at=r.at,
            )
        )
    return Page[MessageOut](items=items, next_cursor=str(rows[-1].id) if more and rows else None)


@router.get("/{charger_id}/status-history", response_model=list[IntervalOut])
async def status_history(
    charger_id: str,
    request: Request,
    _: AnyRole,
    kind: Annotated[str | None, Query(pattern="^(connector|connectivity)$")] = None,
    connector: str | None = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
) -> list[IntervalOut]:
    """Status intervals, oldest first. Per (kind, connector) they neither overlap nor leave
    gaps: each lasts until the next begins; the current one has ``ended_at`` null."""
    db = _db(request)
    await _get(db, charger_id)
    query = (
        select(StatusInterval)
        .where(StatusInterval.charger_id == charger_id)
        .order_by(StatusInterval.started_at, StatusInterval.id)
    )
    if kind is not None:
        query = query.where(StatusInterval.kind == kind)
    if connector is not None:
        query = query.where(StatusInterval.connector_key == connector)
    async with db.session() as session:
        rows = list((await session.execute(query)).scalars())
    intervals: list[IntervalOut] = []
    open_by_key: dict[tuple[str, str], IntervalOut] = {}
    for row in rows:
        key = (row.kind, row.connector_key)
        previous = open_by_key.get(key)
        if previous is not None:
            previous.ended_at = row.started_at
        interval = IntervalOut(
            kind=row.kind,
            connector=row.connector_key,
            status=row.status,
            raw_status=row.raw_status,
            error_code=row.error_code,
            started_at=row.started_at,
            ended_at=None,
            charger_time=row.charger_time,
        )
        open_by_key[key] = interval
        intervals.append(interval)
    return [
        i
        for i in intervals
        if (until is None or i.started_at < until)
        and (since is None or i.ended_at is None or i.ended_at > since)
    ]


@router.get("/{charger_id}/events", response_model=Page[EventOut])
async def charger_events(
    charger_id: str,
    request: Request,
    _: AnyRole,
    type: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> Page[EventOut]:
    """Normalized events derived from this charger, newest first."""
    db = _db(request)
    await _get(db, charger_id)
    query = (
        select(OutboxEvent)
        .where(OutboxEvent.charger_id == charger_id)
        .order_by(OutboxEvent.seq.desc())
        .limit(limit + 1)
    )
    if type is not None:
        query = query.where(OutboxEvent.type == type)
    before = parse_cursor(cursor)
    if before is not None:
        query = query.where(OutboxEvent.seq < before)
    async with db.session() as session:
        rows = list((await session.execute(query)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    items = []
    for r in rows:
        payload: dict[str, Any] = orjson.loads(r.payload)
        items.append(
            EventOut(
                seq=r.seq,
                event_id=r.event_id,
                type=r.type,
                received_at=r.received_at,
                payload=payload,
            )
        )
    return Page[EventOut](items=items, next_cursor=str(rows[-1].seq) if more and rows else None)
