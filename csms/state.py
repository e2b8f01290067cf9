"""Write sets that keep the live-state and history tables current.

Status history is append-only: each row starts an interval that lasts until the next
row of the same (charger, kind, connector) begins. Intervals therefore cannot overlap
or leave gaps by construction, and the write is a plain batched insert.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from csms.tables import (
    LOG_KEY_LEN,
    ChargerState,
    ConnectorState,
    MessageLogEntry,
    MeterValue,
    StatusInterval,
    Transaction,
)
from services.committer import WriteSet
from services.db import table_of

CHARGER_STATE = table_of(ChargerState)
CONNECTOR_STATE = table_of(ConnectorState)
STATUS_HISTORY = table_of(StatusInterval)
MESSAGE_LOG = table_of(MessageLogEntry)
TRANSACTIONS = table_of(Transaction)
METER_VALUES = table_of(MeterValue)

CONNECTIVITY = "connectivity"
CONNECTOR = "connector"


def log_row(
    charger_id: str,
    direction: str,
    message_type: int,
    action: str | None,
    message_id: str | None,
    payload: str,
    at: datetime,
    *,
    reply: str | None = None,
    reply_type: int | None = None,
    reply_at: datetime | None = None,
) -> dict[str, Any]:
    """One row of the raw log: a frame, and in the same row the answer to it if any.

    An action or message id longer than its column is cut to fit (PostgreSQL would refuse
    the row); ``payload`` keeps the frame whole."""
    return {
        "charger_id": charger_id,
        "direction": direction,
        "message_type": message_type,
        "action": action[:LOG_KEY_LEN] if action is not None else None,
        "message_id": message_id[:LOG_KEY_LEN] if message_id is not None else None,
        "payload": payload,
        "at": at,
        "reply": reply,
        "reply_type": reply_type,
        "reply_at": reply_at,
    }


def charger_state(writes: WriteSet, charger_id: str, **values: Any) -> None:
    writes.upsert(CHARGER_STATE, {"charger_id": charger_id, **values})


def history(
    writes: WriteSet,
    charger_id: str,
    kind: str,
    connector_key: str,
    status: str,
    started_at: datetime,
    *,
    raw_status: str | None = None,
    error_code: str | None = None,
    charger_time: datetime | None = None,
) -> None:
    writes.insert(
        STATUS_HISTORY,
        {
            "charger_id": charger_id,
            "kind": kind,
            "connector_key": connector_key,
            "status": status,
            "raw_status": raw_status,
            "error_code": error_code,
            "started_at": started_at,
            "charger_time": charger_time,
        },
    )


def connectivity_row(charger_id: str, status: str, started_at: datetime) -> dict[str, Any]:
    """A status-history row starting a charger's online/offline interval."""
    return {
        "charger_id": charger_id,
        "kind": CONNECTIVITY,
        "connector_key": "",
        "status": status,
        "started_at": started_at,
    }


def connector_state(writes: WriteSet, charger_id: str, connector_key: str, **values: Any) -> None:
    writes.upsert(
        CONNECTOR_STATE, {"charger_id": charger_id, "connector_key": connector_key, **values}
    )


def meter_values(
    writes: WriteSet,
    dedupe_key: str,
    charger_id: str,
    connector_key: str,
    transaction_id: str | None,
    sampled_at: datetime | None,
    received_at: datetime,
    sampled_values: Any,
) -> None:
    writes.insert_ignore(
        METER_VALUES,
        {
            "dedupe_key": dedupe_key,
            "charger_id": charger_id,
            "connector_key": connector_key,
            "transaction_id": transaction_id,
            "sampled_at": sampled_at,
            "received_at": received_at,
            "sampled_values": orjson.dumps(sampled_values).decode(),
        },
    )
