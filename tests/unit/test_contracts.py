"""Event contracts: every event type survives the bus (JSON) unchanged, and the set of
types is what consumers are told it is."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from services.bus.contracts import (
    EVENT_TYPES,
    ChargerBooted,
    ChargerConnected,
    ChargerDisconnected,
    ChargerOffline,
    ChargerOnline,
    ConnectorRef,
    ConnectorStatusChanged,
    FaultCleared,
    FaultRaised,
    FirmwareStatusChanged,
    MeterValuesReceived,
    NormalizedStatus,
    SecurityEventReported,
    Severity,
    TransactionEnded,
    TransactionStarted,
    WorkOrderChanged,
    parse_event,
)

AT = datetime(2026, 11, 27, 10, 0, 0, 123000, tzinfo=UTC)
CHARGER_AT = datetime(2026, 11, 27, 9, 59, 58, tzinfo=UTC)
REF = ConnectorRef(evse_id=1, connector_id=2)
COMMON = {"charger_id": "CP-1", "received_at": AT, "charger_time": CHARGER_AT}
FAULT = {
    **COMMON,
    "connector": REF,
    "source": "notify_event",
    "error_code": "CX017",
    "vendor_id": "https://chargex.inl.gov",
    "tech_code": "CX017",
    "info": "contactor",
    "severity": Severity.critical,
    "component": "Connector",
    "variable": "Problem",
    "event_code": 17,
    "status": NormalizedStatus.faulted,
}

EXAMPLES = [
    ChargerConnected(**COMMON, ocpp_version="2.0.1", node_id="node-1", security_profile=2),
    ChargerDisconnected(**COMMON, node_id="node-1", close_code=1006, reason="abnormal"),
    ChargerOnline(**COMMON, ocpp_version="1.6"),
    ChargerOffline(**COMMON, since=AT, reason="grace_expired"),
    ChargerBooted(
        **COMMON,
        ocpp_version="1.6",
        vendor="V",
        model="M",
        serial_number="SN",
        firmware_version="1.0",
        reason="PowerUp",
        registration_status="Accepted",
    ),
    ConnectorStatusChanged(
        **COMMON,
        connector=ConnectorRef(connector_id=1),
        status=NormalizedStatus.faulted,
        raw_status="Faulted",
        previous_status=NormalizedStatus.available,
        error_code="GroundFailure",
        vendor_id="https://chargex.inl.gov",
        vendor_error_code="CX002",
        info="ground",
    ),
    FaultRaised(**FAULT),
    FaultCleared(**{**FAULT, "severity": Severity.info}),
    FirmwareStatusChanged(**COMMON, kind="signed_firmware", status="Installed", request_id=4),
    SecurityEventReported(**COMMON, event_type="TamperDetectionActivated", tech_info="lid"),
    TransactionStarted(
        **COMMON, transaction_id="tx-1", connector=REF, id_token="TAG", meter_start_wh=1000.0
    ),
    TransactionEnded(**COMMON, transaction_id="tx-1", meter_stop_wh=5000.5, reason="Local"),
    MeterValuesReceived(
        **COMMON,
        connector=REF,
        transaction_id="tx-1",
        samples=[{"timestamp": "2026-11-27T10:00:00Z", "sampled_value": [{"value": "1.5"}]}],
    ),
    WorkOrderChanged(
        **COMMON,
        order_id=7,
        change="breached",
        state="dispatched",
        priority="P1",
        severity="S1",
        category="ground_insulation",
        site_id="depot-1",
        connector="1",
        playbook="lockout",
        sla_target="response",
    ),
]


def test_event_types_lists_all_fourteen() -> None:
    assert len(EVENT_TYPES) == 14
    assert {e.type for e in EXAMPLES} == EVENT_TYPES


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: e.type)
def test_round_trip(event: object) -> None:
    raw = event.model_dump_json()  # type: ignore[attr-defined]
    parsed = parse_event(raw)
    assert type(parsed) is type(event)
    assert parsed == event
    assert parsed.received_at == AT
    assert parsed.received_at.tzinfo is not None
    assert parsed.subject == f"events.{event.type}"  # type: ignore[attr-defined]


def test_event_ids_are_unique_unless_given() -> None:
    a = ChargerOnline(charger_id="CP", received_at=AT, ocpp_version="1.6")
    b = ChargerOnline(charger_id="CP", received_at=AT, ocpp_version="1.6")
    assert a.event_id != b.event_id
    c = ChargerOnline(event_id="fixed", charger_id="CP", received_at=AT, ocpp_version="1.6")
    assert parse_event(c.model_dump_json()).event_id == "fixed"


def test_unknown_type_is_refused() -> None:
    with pytest.raises(ValidationError):
        parse_event(
            ChargerOnline(charger_id="CP", received_at=AT, ocpp_version="1.6")
            .model_dump_json()
            .replace("ChargerOnline", "Nope")
        )


def test_unknown_field_is_refused() -> None:
    raw = ChargerOnline(charger_id="CP", received_at=AT, ocpp_version="1.6").model_dump()
    raw["surprise"] = 1
    with pytest.raises(ValidationError):
        ChargerOnline.model_validate(raw)


def test_events_are_immutable() -> None:
    event = ChargerOnline(charger_id="CP", received_at=AT, ocpp_version="1.6")
    with pytest.raises(ValidationError):
        event.charger_id = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("ref", "key"),
    [
        (ConnectorRef(connector_id=1), "1"),
        (ConnectorRef(), "0"),
        (ConnectorRef(connector_id=0), "0"),
        (ConnectorRef(evse_id=1, connector_id=1), "1/1"),
        (ConnectorRef(evse_id=2), "2"),
    ],
)
def test_connector_key(ref: ConnectorRef, key: str) -> None:
    assert ref.key == key
