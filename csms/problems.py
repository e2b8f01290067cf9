"""2.0.1 problem reports (NotifyEvent) become FaultRaised / FaultCleared.

A station clears a problem with an entry on the same component and variable (and EVSE)
that says ``cleared: true`` (or a false ``Problem`` value); it need not repeat the
techCode, and its own eventId is new (it may name the raise as its ``cause``). So the
problems still open are kept per charger (``problem_state``), keyed by where they are and
their techCode, and a clearing is matched to them:

* a clearing with a techCode clears the open problem with that techCode there;
* one without clears the problem its ``cause`` names, or else every open problem there
  (the variable says there is no problem left);
* a clearing that matches nothing is emitted with its own codes, as reported (an entry
  that is no problem report by itself, ``open_only``, is then dropped).

The FaultCleared of a matched clearing carries the cleared raise's error code, techCode,
vendor id and info, so ticketing classifies it like the raise and resolves that order.

Ids: a raise's event id is derived from the station's eventId, timestamp and kind, so a
retry with a new message id is one event. A matched problem remembers the clearing that
closed it (``cleared_by``), so a retried clearing matches it again and gets the same ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from csms import faults
from csms.event_ids import stable_event_id
from csms.protocol.timestamps import parse_timestamp
from csms.tables import ProblemState
from csms.v201.translate import ProblemReport
from services.bus.contracts import FaultCleared, FaultRaised
from services.db import table_of

if TYPE_CHECKING:
    from csms.session import OcppSession

PROBLEM_STATE = table_of(ProblemState)

Row = dict[str, Any]


def _location(row: Mapping[str, Any]) -> tuple[object, ...]:
    return (
        row["evse_id"],
        row["connector_id"],
        row["component"],
        row["component_instance"],
        row["variable"],
        row["variable_instance"],
    )


def problem_key(report: ProblemReport) -> str:
    return hashlib.sha256(repr((*report.location, report.tech_code)).encode()).hexdigest()


async def known_problems(session: OcppSession) -> dict[str, Row]:
    """The charger's problem rows (open and cleared), by problem key."""
    async with session.ctx.db.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(PROBLEM_STATE).where(PROBLEM_STATE.c.charger_id == session.charger_id)
            )
        ).mappings()
        return {row["problem_key"]: dict(row) for row in rows}


def handle(
    session: OcppSession, report: ProblemReport, generated_at: str, known: dict[str, Row]
) -> None:
    """Emit the events of one report and record the problem's state; ``known`` is updated."""
    rx = session.incoming
    own_id = stable_event_id(
        session.charger_id, "notify-event", report.event_id, report.timestamp, report.raised
    )
    charger_time = parse_timestamp(report.timestamp) or parse_timestamp(generated_at)
    common: dict[str, Any] = {
        "charger_id": session.charger_id,
        "received_at": rx.received_at,
        "charger_time": charger_time,
        "connector": report.connector,
        "source": "notify_event",
        "component": report.component,
        "variable": report.variable,
        "event_code": report.event_id,
    }
    if report.raised:
        _record_raise(session, report, own_id, charger_time, known)
        session.emit(_as_reported(FaultRaised, common, own_id, report))
        return
    matched = _matching(report, own_id, known)
    if not matched:
        if report.open_only:
            return
        session.emit(_as_reported(FaultCleared, common, own_id, report))
        return
    for key, row in matched:
        closed = {**row, "cleared_by": own_id, "updated_at": rx.received_at}
        known[key] = closed
        rx.writes.upsert(PROBLEM_STATE, closed)
        session.emit(
            FaultCleared(
                **common,
                event_id=own_id if len(matched) == 1 else stable_event_id(own_id, key),
                error_code=row["error_code"],
                tech_code=row["tech_code"],
                # Decision: as a 1.6 clearing, the cleared fault's info and codes.
                info=row["tech_info"],
                vendor_id=row["vendor_id"],
                severity=faults.severity(
                    faulted=False, error_code=None, vendor_error_code=row["tech_code"]
                ),
            )
        )


def _as_reported(
    kind: type[FaultRaised] | type[FaultCleared],
    common: dict[str, Any],
    event_id: str,
    report: ProblemReport,
) -> FaultRaised | FaultCleared:
    """The event of a report, with the codes and info it carries itself."""
    return kind(
        **common,
        event_id=event_id,
        error_code=report.error_code,
        tech_code=report.tech_code,
        info=report.tech_info,
        vendor_id=_vendor_id(report.tech_code),
        severity=faults.severity(
            faulted=kind is FaultRaised, error_code=None, vendor_error_code=report.tech_code
        ),
    )


def _vendor_id(tech_code: str | None) -> str | None:
    return faults.CHARGEX_VENDOR_ID if tech_code in faults.chargex_codes() else None


def _record_raise(
    session: OcppSession,
    report: ProblemReport,
    own_id: str,
    charger_time: Any,
    known: dict[str, Row],
) -> None:
    key = problem_key(report)
    previous = known.get(key)
    if (
        previous is not None
        and previous["raise_event_id"] == own_id
        and previous["cleared_by"] is not None
    ):
        return  # a late retry of a raise that was cleared since: it stays cleared
    rx = session.incoming
    row: Row = {
        "charger_id": session.charger_id,
        "problem_key": key,
        "evse_id": report.connector.evse_id,
        "connector_id": report.connector.connector_id,
        "component": report.component,
        "component_instance": report.component_instance,
        "variable": report.variable,
        "variable_instance": report.variable_instance,
        "error_code": report.error_code,
        "tech_code": report.tech_code,
        "tech_info": report.tech_info,
        "vendor_id": _vendor_id(report.tech_code),
        "event_code": report.event_id,
        "raise_event_id": own_id,
        "charger_time": charger_time,
        "cleared_by": None,
        "updated_at": rx.received_at,
    }
    known[key] = row
    rx.writes.upsert(PROBLEM_STATE, row)


def _matching(report: ProblemReport, own_id: str, known: dict[str, Row]) -> list[tuple[str, Row]]:
    """The problems a clearing closes: open ones at its location (or already closed by this
    very clearing, when it is a retry)."""
    here = [
        (key, row)
        for key, row in sorted(known.items())
        if _location(row) == report.location and row["cleared_by"] in (None, own_id)
    ]
    if report.tech_code is not None:
        return [(key, row) for key, row in here if row["tech_code"] == report.tech_code]
    if report.cause is not None:
        caused = [(key, row) for key, row in here if row["event_code"] == report.cause]
        if caused:
            return caused
    return here
