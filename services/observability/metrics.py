"""Prometheus metrics of ChargeOps, all in one registry.

Never a charger id as a label: labels here are bounded sets (OCPP version, action,
error code, reason, consumer name). Charger ids go to logs.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

CHARGERS_CONNECTED = Gauge(
    "chargeops_chargers_connected",
    "Chargers with an open OCPP WebSocket on this node, by OCPP version",
    ["ocpp_version"],
    registry=REGISTRY,
)
FRAMES = Counter(
    "chargeops_ocpp_frames_total",
    "OCPP frames by direction (in/out), message type and action (an answer to our CALL: "
    "that CALL's action; unparsable: none; unknown action: unknown; answering no "
    "outstanding CALL: response)",
    ["direction", "message_type", "action"],
    registry=REGISTRY,
)
CALL_ERRORS = Counter(
    "chargeops_ocpp_callerrors_total",
    "CALLERRORs sent to chargers, by OCPP-J error code",
    ["code"],
    registry=REGISTRY,
)
HANDSHAKES_REFUSED = Counter(
    "chargeops_ocpp_handshakes_refused_total",
    "WebSocket handshakes refused before the upgrade, by reason",
    ["reason"],
    registry=REGISTRY,
)
AUTH_FAILURES = Counter(
    "chargeops_ocpp_auth_failures_total",
    "Charger authentication failures, by reason",
    ["reason"],
    registry=REGISTRY,
)
HANDLER_SECONDS = Histogram(
    "chargeops_ocpp_handler_seconds",
    "Time from a CALL received to its CALLRESULT sent (includes the durable commit)",
    ["action"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
FRAMES_LIMITED = Counter(
    "chargeops_ocpp_frames_limited_total",
    "Frames refused (oversized: connection closed 1009) or delayed (throttled), by reason",
    ["reason"],
    registry=REGISTRY,
)
STALE_RESPONSES = Counter(
    "chargeops_ocpp_stale_responses_total",
    "CALLRESULT/CALLERROR frames from chargers answering no outstanding CSMS call (dropped)",
    registry=REGISTRY,
)
LATE_STATUS_REPORTS = Counter(
    "chargeops_ocpp_late_status_reports_total",
    "Connector status reports older, by the charger's clock, than the connector's current "
    "one (queued while offline): kept in the status history at their time, not applied",
    registry=REGISTRY,
)
REMOTE_START_AUTHORIZATIONS = Counter(
    "chargeops_remote_start_authorizations_total",
    "Id tokens the id-token table does not know, answered Accepted because an operator's "
    "remote start sent them to that charger (csms/remote_starts.py)",
    registry=REGISTRY,
)
CHARGER_STATE_CHANGES = Counter(
    "chargeops_charger_connectivity_changes_total",
    "Charger online/offline transitions",
    ["state"],
    registry=REGISTRY,
)
COMMANDS = Counter(
    "chargeops_commands_total",
    "Commands sent to chargers, by command name and outcome "
    "(answered, offline, timeout, refused, error)",
    ["name", "outcome"],
    registry=REGISTRY,
)

OUTBOX_BACKLOG = Gauge(
    "chargeops_bus_outbox_backlog",
    "Events not yet delivered, per consumer (embedded bus: outbox rows past the consumer's "
    "cursor; NATS bus: the JetStream consumer's events not yet fetched plus those fetched "
    "and not yet handled; relay:nats: outbox rows not yet published)",
    ["consumer"],
    registry=REGISTRY,
)
EVENTS_PUBLISHED = Counter(
    "chargeops_bus_events_published_total",
    "Events published on the bus, by type",
    ["type"],
    registry=REGISTRY,
)
EVENTS_DELIVERED = Counter(
    "chargeops_bus_events_delivered_total",
    "Events handled by a consumer, by consumer and outcome (ok, retry, dead_letter)",
    ["consumer", "outcome"],
    registry=REGISTRY,
)

COMMIT_BATCH_SIZE = Histogram(
    "chargeops_db_commit_batch_size",
    "Write sets per group commit",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
    registry=REGISTRY,
)
COMMIT_SECONDS = Histogram(
    "chargeops_db_commit_seconds",
    "Duration of one group commit",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    registry=REGISTRY,
)
CHECKPOINT_SECONDS = Histogram(
    "chargeops_db_checkpoint_seconds",
    "Duration of the background SQLite WAL checkpoints (embedded mode)",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
WAL_PAGES = Gauge(
    "chargeops_db_wal_pages",
    "Pages in the SQLite write-ahead log at the last checkpoint (embedded mode)",
    registry=REGISTRY,
)
COMMIT_QUEUE = Gauge(
    "chargeops_db_commit_queue",
    "Write sets waiting for the next group commit",
    registry=REGISTRY,
)
COMMIT_FAILURES = Counter(
    "chargeops_db_commit_failures_total",
    "Write sets that failed to commit (the caller got an error)",
    registry=REGISTRY,
)
HTTP_AUTH_FAILURES = Counter(
    "chargeops_http_auth_failures_total",
    "HTTP API requests refused for authentication",
    ["reason"],
    registry=REGISTRY,
)


@lru_cache(maxsize=8192)
def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, cached: label sets here are bounded, lookups are hot."""
    return metric.labels(*labels)


GC_FROZEN = Gauge(
    "chargeops_gc_frozen_objects",
    "Objects moved out of the garbage collector's scanned generations (gc.freeze)",
    registry=REGISTRY,
)
GC_FULL_SECONDS = Histogram(
    "chargeops_gc_full_collection_seconds",
    "Event-loop pause of the periodic full garbage collection",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)

# ---------------------------------------------------------------- work orders
FAULTS_CLASSIFIED = Counter(
    "chargeops_faults_classified_total",
    "Faults classified by the fault rules, by severity class and category",
    ["severity", "category"],
    registry=REGISTRY,
)
FAULT_TO_ORDER_SECONDS = Histogram(
    "chargeops_fault_to_order_seconds",
    "From the server's receive time of a fault to its work order committed "
    "(opened, appended to or reopened)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
WORK_ORDERS_CREATED = Counter(
    "chargeops_work_orders_created_total",
    "Work orders created, by category and source",
    ["category", "source"],
    registry=REGISTRY,
)
WORK_ORDER_TRANSITIONS = Counter(
    "chargeops_work_order_transitions_total",
    "Work-order state changes, by target state",
    ["state"],
    registry=REGISTRY,
)
WORK_ORDERS_OPEN = Gauge(
    "chargeops_work_orders_open",
    "Work orders not closed or cancelled, by state and priority",
    ["state", "priority"],
    registry=REGISTRY,
)
WORK_ORDERS_AUTO_RESOLVED = Counter(
    "chargeops_work_orders_auto_resolved_total",
    "Work orders resolved without a person, by resolution (self_recovered, resolved_remotely)",
    ["resolution"],
    registry=REGISTRY,
)
DISPATCH_QUEUE = Gauge(
    "chargeops_dispatch_queue_length",
    "Work orders waiting for a technician (state new, nobody assigned)",
    registry=REGISTRY,
)
SLA_WARNINGS = Counter(
    "chargeops_sla_warnings_total",
    "SLA warnings fired (once per order and target), by target and the order's priority",
    ["target", "priority"],
    registry=REGISTRY,
)
SLA_BREACHES = Counter(
    "chargeops_sla_breaches_total",
    "SLA breaches fired (once per order and target), by target and the priority breached",
    ["target", "priority"],
    registry=REGISTRY,
)

# ---------------------------------------------------------------- NATS bus
BUS_CONNECTED = Gauge(
    "chargeops_bus_connected",
    "1 while the bus is connected to NATS, 0 while it is not (NATS bus only)",
    registry=REGISTRY,
)
BUS_RECONNECTS = Counter(
    "chargeops_bus_reconnects_total",
    "Reconnections to NATS after a lost connection",
    registry=REGISTRY,
)
BUS_PUBLISH_FAILURES = Counter(
    "chargeops_bus_publish_failures_total",
    "Events whose publish got no PubAck (the caller got an error)",
    registry=REGISTRY,
)
BUS_COMMAND_SUBSCRIPTIONS = Gauge(
    "chargeops_bus_command_subscriptions",
    "Chargers whose command subject this node subscribes (should equal its connected chargers)",
    registry=REGISTRY,
)
