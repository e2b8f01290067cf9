"""Versioned event contracts: what csms tells the rest of ChargeOps.

Each event has a unique ``event_id`` (consumers are idempotent on it), the charger's own
timestamp (``charger_time``, when the message carried one) and the server's receive time
(``received_at``). ``type`` names the contract and ``version`` its schema version: a
breaking change gets a new version, consumers accept the versions they know.
"""

from __future__ import annotations

import itertools
import secrets
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

_ID_PREFIX = secrets.token_hex(10)
_ID_COUNTER = itertools.count(1)


def new_event_id() -> str:
    """A unique event id in UUID text form: 80 random bits per process + a counter.

    As unique as uuid4 for our purposes (a process would need 2**48 events to wrap) at a
    fraction of its cost on the hot path."""
    p = _ID_PREFIX
    return f"{p[:8]}-{p[8:12]}-{p[12:16]}-{p[16:20]}-{next(_ID_COUNTER):012x}"


class NormalizedStatus(StrEnum):
    available = "available"
    occupied = "occupied"
    reserved = "reserved"
    unavailable = "unavailable"
    faulted = "faulted"


class Severity(StrEnum):
    """How bad a fault is as the charger reported it (the rules in ticketing classify further)."""

    info = "info"
    warning = "warning"
    error = "error"
    critical = "critical"


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str = Field(default_factory=new_event_id)
    version: int = 1
    charger_id: str
    received_at: datetime
    charger_time: datetime | None = None

    @property
    def subject(self) -> str:
        return f"events.{self.type}"  # type: ignore[attr-defined]


class ConnectorRef(BaseModel):
    """A connector: 1.6 uses ``connector_id`` (0 = the whole charger); 2.0.1 adds ``evse_id``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    evse_id: int | None = None
    connector_id: int | None = None

    @property
    def key(self) -> str:
        if self.evse_id is None:
            return str(self.connector_id if self.connector_id is not None else 0)
        if self.connector_id is None:
            return f"{self.evse_id}"
        return f"{self.evse_id}/{self.connector_id}"


class ChargerConnected(_Event):
    type: Literal["ChargerConnected"] = "ChargerConnected"
    ocpp_version: str
    node_id: str
    security_profile: int


class ChargerDisconnected(_Event):
    type: Literal["ChargerDisconnected"] = "ChargerDisconnected"
    node_id: str
    close_code: int | None = None
    reason: str = ""


class ChargerOnline(_Event):
    type: Literal["ChargerOnline"] = "ChargerOnline"
    ocpp_version: str


class ChargerOffline(_Event):
    type: Literal["ChargerOffline"] = "ChargerOffline"
    since: datetime
    reason: str


class ChargerBooted(_Event):
    type: Literal["ChargerBooted"] = "ChargerBooted"
    ocpp_version: str
    vendor: str
    model: str
    serial_number: str | None = None
    firmware_version: str | None = None
    reason: str | None = None
    registration_status: str
    #: not a new boot: the station repeated BootNotification on one connection because it
    #: was answered Pending or Rejected, or was asked for it (TriggerMessage; 2.0.1 reason
    #: Triggered)
    repeated: bool = False


class ConnectorStatusChanged(_Event):
    type: Literal["ConnectorStatusChanged"] = "ConnectorStatusChanged"
    connector: ConnectorRef
    status: NormalizedStatus
    raw_status: str
    previous_status: NormalizedStatus | None = None
    error_code: str | None = None
    vendor_id: str | None = None
    vendor_error_code: str | None = None
    info: str | None = None


class _FaultFields(_Event):
    connector: ConnectorRef
    source: Literal["status_notification", "notify_event"]
    error_code: str
    vendor_id: str | None = None
    vendor_error_code: str | None = None
    tech_code: str | None = None
    info: str | None = None
    severity: Severity
    component: str | None = None
    variable: str | None = None
    event_code: int | None = None
    #: the connector's normalized status when reported (StatusNotification faults)
    status: NormalizedStatus | None = None


class FaultRaised(_FaultFields):
    type: Literal["FaultRaised"] = "FaultRaised"


class FaultCleared(_FaultFields):
    type: Literal["FaultCleared"] = "FaultCleared"


FirmwareKind = Literal["firmware", "signed_firmware", "diagnostics", "log"]


class FirmwareStatusChanged(_Event):
    type: Literal["FirmwareStatusChanged"] = "FirmwareStatusChanged"
    kind: FirmwareKind
    status: str
    request_id: int | None = None


class SecurityEventReported(_Event):
    type: Literal["SecurityEventReported"] = "SecurityEventReported"
    event_type: str
    tech_info: str | None = None


class TransactionStarted(_Event):
    type: Literal["TransactionStarted"] = "TransactionStarted"
    transaction_id: str
    connector: ConnectorRef
    id_token: str | None = None
    meter_start_wh: float | None = None


class TransactionEnded(_Event):
    type: Literal["TransactionEnded"] = "TransactionEnded"
    transaction_id: str
    meter_stop_wh: float | None = None
    reason: str | None = None


class MeterValuesReceived(_Event):
    type: Literal["MeterValuesReceived"] = "MeterValuesReceived"
    connector: ConnectorRef
    transaction_id: str | None = None
    samples: list[dict[str, Any]]


class WorkOrderChanged(_Event):
    """A work order changed in a way others act on (remediation, notifications).

    ``charger_id`` is empty for site-level orders."""

    type: Literal["WorkOrderChanged"] = "WorkOrderChanged"
    order_id: int
    change: str  # created | assigned | warning | breached | escalated | resolved | ...
    state: str
    priority: str
    severity: str
    category: str
    site_id: str | None = None
    connector: str | None = None
    playbook: str | None = None
    sla_target: str | None = None


Event = Annotated[
    ChargerConnected
    | ChargerDisconnected
    | ChargerOnline
    | ChargerOffline
    | ChargerBooted
    | ConnectorStatusChanged
    | FaultRaised
    | FaultCleared
    | FirmwareStatusChanged
    | SecurityEventReported
    | TransactionStarted
    | TransactionEnded
    | MeterValuesReceived
    | WorkOrderChanged,
    Field(discriminator="type"),
]

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
EVENT_TYPES: frozenset[str] = frozenset(
    str(cls.model_fields["type"].default)
    for cls in (
        ChargerConnected,
        ChargerDisconnected,
        ChargerOnline,
        ChargerOffline,
        ChargerBooted,
        ConnectorStatusChanged,
        FaultRaised,
        FaultCleared,
        FirmwareStatusChanged,
        SecurityEventReported,
        TransactionStarted,
        TransactionEnded,
        MeterValuesReceived,
        WorkOrderChanged,
    )
)


def parse_event(raw: str | bytes) -> Event:
    return EVENT_ADAPTER.validate_json(raw)
