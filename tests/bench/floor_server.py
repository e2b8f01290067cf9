"""The floor: the least work a server must do per frame for the durability the issue asks.

Not ChargeOps and not a design for it: a yardstick between the echo ceiling and ChargeOps.
It answers the benchmark's frames the way the targets require and does nothing else:

- `websockets` on uvloop, orjson, request and response validated with the same compiled
  validators ChargeOps uses (`csms.protocol.validation`, fastjsonschema over the `ocpp`
  library's schemas);
- Heartbeat: answered at once (nothing to store);
- StatusNotification: the event row (unique id, JSON payload), the connector's live-state
  upsert and a status-history row, the three the issue requires; event ids as ChargeOps makes
  them (`new_event_id`: a per-process prefix and a counter, so their unique index grows at
  its right edge; random uuid4 ids cost the floor a third of its status throughput here);
- MeterValues: the event row and the sampled-values row with its content de-duplication key;
- the rows of every frame are committed by one writer thread with stdlib `sqlite3`
  (`executemany` per table, WAL, `synchronous` as given), taking whatever is queued (up to
  200 frames, as ChargeOps' group committer does), and each frame is answered only after its
  commit.

Tables and indexes are the ones any such server needs: events and status history indexed
per charger (they are read per charger), meter rows unique on their content key.

Left out on purpose (so it is a strict lower bound of the cost): the raw frame log, charger
registry and authentication, sessions and presence, pydantic event models, metrics, bus
consumers, error handling. Run by `benchlib.FloorServer` (`ocpp_throughput.py --targets floor`).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import tempfile
import threading
from datetime import UTC, datetime
from typing import Any

import orjson
from benchlib import serve_bare
from websockets.asyncio.server import ServerConnection

from csms.protocol.validation import get_validator
from services.bus.contracts import new_event_id

MAX_BATCH = 200

SCHEMA = (
    "CREATE TABLE events (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE,"
    " charger_id TEXT NOT NULL, type TEXT NOT NULL, received_at TEXT NOT NULL,"
    " payload TEXT NOT NULL)",
    "CREATE INDEX events_charger ON events (charger_id, seq)",
    "CREATE TABLE connector_state (charger_id TEXT NOT NULL, connector_key TEXT NOT NULL,"
    " status TEXT, error_code TEXT, charger_time TEXT, updated_at TEXT,"
    " PRIMARY KEY (charger_id, connector_key))",
    "CREATE TABLE status_history (id INTEGER PRIMARY KEY, charger_id TEXT NOT NULL,"
    " connector_key TEXT NOT NULL, status TEXT NOT NULL, started_at TEXT NOT NULL)",
    "CREATE INDEX status_history_charger ON status_history (charger_id, connector_key, started_at)",
    "CREATE TABLE meter_values (id INTEGER PRIMARY KEY, dedupe_key TEXT NOT NULL UNIQUE,"
    " charger_id TEXT NOT NULL, connector_key TEXT NOT NULL, sampled_values TEXT NOT NULL)",
)
INSERT = {
    "events": "INSERT INTO events (event_id, charger_id, type, received_at, payload)"
    " VALUES (?, ?, ?, ?, ?)",
    "connector_state": "INSERT INTO connector_state VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (charger_id, connector_key) DO UPDATE SET status = excluded.status,"
    " error_code = excluded.error_code, charger_time = excluded.charger_time,"
    " updated_at = excluded.updated_at",
    "status_history": "INSERT INTO status_history (charger_id, connector_key, status, started_at)"
    " VALUES (?, ?, ?, ?)",
    "meter_values": "INSERT OR IGNORE INTO meter_values"
    " (dedupe_key, charger_id, connector_key, sampled_values) VALUES (?, ?, ?, ?)",
}

Rows = list[tuple[str, tuple[Any, ...]]]


class Writer:
    """One thread, one connection: commits whatever frames are queued, then answers them."""

    def __init__(self, path: str, synchronous: str, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        for statement in SCHEMA:
            self.db.execute(statement)
        self.queue: list[tuple[Rows, asyncio.Future[None]]] = []
        self.ready = threading.Condition()
        threading.Thread(target=self._run, name="floor-writer", daemon=True).start()

    def write(self, rows: Rows) -> asyncio.Future[None]:
        future = self.loop.create_future()
        with self.ready:
            self.queue.append((rows, future))
            self.ready.notify()
        return future

    def _run(self) -> None:
        while True:
            with self.ready:
                while not self.queue:
                    self.ready.wait()
                batch, self.queue = self.queue[:MAX_BATCH], self.queue[MAX_BATCH:]
            by_table: dict[str, list[tuple[Any, ...]]] = {}
            for rows, _ in batch:
                for table, row in rows:
                    by_table.setdefault(table, []).append(row)
            self.db.execute("BEGIN")
            for table, table_rows in by_table.items():
                self.db.executemany(INSERT[table], table_rows)
            self.db.execute("COMMIT")
            self.loop.call_soon_threadsafe(_answer, [future for _, future in batch])


def _answer(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


def rows_for(charger_id: str, version: str, action: str, payload: Any, now: str) -> Rows:
    """The durable rows of one frame (none for a Heartbeat)."""
    if action == "Heartbeat":
        return []
    event_id = new_event_id()
    if version == "1.6":
        connector = str(payload.get("connectorId", 0))
    else:
        connector = f"{payload.get('evseId', 0)}/{payload.get('connectorId', 0)}"
    if action == "StatusNotification":
        status = payload.get("status") or payload.get("connectorStatus")
        error = payload.get("errorCode")
        charger_time = payload.get("timestamp")
        event = {
            "event_id": event_id,
            "type": "ConnectorStatusChanged",
            "charger_id": charger_id,
            "received_at": now,
            "charger_time": charger_time,
            "connector": connector,
            "status": status,
            "error_code": error,
        }
        return [
            ("events", (event_id, charger_id, event["type"], now, orjson.dumps(event).decode())),
            ("connector_state", (charger_id, connector, status, error, charger_time, now)),
            ("status_history", (charger_id, connector, status, now)),
        ]
    samples = payload.get("meterValue", [])
    sampled = orjson.dumps(samples).decode()
    first = samples[0]["timestamp"] if samples else ""
    event = {
        "event_id": event_id,
        "type": "MeterValuesReceived",
        "charger_id": charger_id,
        "received_at": now,
        "connector": connector,
        "meter_values": samples,
    }
    return [
        ("events", (event_id, charger_id, event["type"], now, orjson.dumps(event).decode())),
        ("meter_values", (f"{charger_id}|{connector}|{first}", charger_id, connector, sampled)),
    ]


def answer_for(action: str, now: str) -> dict[str, Any]:
    return {"currentTime": now} if action == "Heartbeat" else {}


async def serve_floor(port: int, synchronous: str, ready: Any) -> None:
    folder = tempfile.mkdtemp(prefix="chargeops-floor-")
    writer = Writer(os.path.join(folder, "floor.db"), synchronous, asyncio.get_running_loop())

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        charger_id = ws.request.path.rsplit("/", 1)[-1]
        version = "1.6" if ws.subprotocol == "ocpp1.6" else "2.0.1"
        async for message in ws:
            call = orjson.loads(message)
            action, payload = call[2], call[3]
            request_validator = get_validator(version, action)
            assert request_validator is not None
            request_validator(payload)
            now = datetime.now(UTC).isoformat()
            rows = rows_for(charger_id, version, action, payload, now)
            if rows:
                await writer.write(rows)
            answer = answer_for(action, now)
            answer_validator = get_validator(version, action, response=True)
            assert answer_validator is not None
            answer_validator(answer)
            await ws.send(orjson.dumps([3, call[1], answer]).decode())

    await serve_bare(handler, port, ready)
