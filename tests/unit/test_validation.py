"""Payload validation against the ocpp library's schemas: each violated JSON-schema rule
becomes the OCPP-J error kind the spec names, and each version spells the code its way."""

from __future__ import annotations

from typing import Any

import pytest

from csms.protocol.errors import ErrorKind, FrameError, error_code
from csms.protocol.validation import get_validator, validate

STATUS_16 = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
STATUS_201 = {
    "timestamp": "2026-11-27T10:00:00Z",
    "connectorStatus": "Available",
    "evseId": 1,
    "connectorId": 1,
}
HASH_DATA = {
    "hashAlgorithm": "SHA256",
    "issuerNameHash": "a",
    "issuerKeyHash": "b",
    "serialNumber": "c",
    "responderURL": "d",
}
SCHEDULE = {
    "chargingRateUnit": "A",
    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 1.05}],
}


def test_valid_payloads_pass() -> None:
    validate("1.6", "StatusNotification", STATUS_16)
    validate("2.0.1", "StatusNotification", STATUS_201)
    validate("1.6", "Heartbeat", {})
    validate("2.0.1", "Heartbeat", {})
    validate("1.6", "Heartbeat", {"currentTime": "2026-11-27T10:00:00Z"}, response=True)


def test_timestamp_format_is_not_enforced() -> None:
    # Chargers often send timestamps without a zone; they are read leniently later.
    validate("2.0.1", "StatusNotification", {**STATUS_201, "timestamp": "2026-11-27T10:00:00"})


@pytest.mark.parametrize(
    ("version", "action", "payload", "rule", "kind", "field"),
    [
        (
            "1.6",
            "StatusNotification",
            {**STATUS_16, "connectorId": "x"},
            "type",
            ErrorKind.type_constraint,
            "connectorId",
        ),
        (
            "2.0.1",
            "StatusNotification",
            {**STATUS_201, "evseId": "1"},
            "type",
            ErrorKind.type_constraint,
            "evseId",
        ),
        (
            "1.6",
            "StatusNotification",
            {k: v for k, v in STATUS_16.items() if k != "status"},
            "required",
            ErrorKind.occurrence_constraint,
            "payload",
        ),
        (
            "2.0.1",
            "StatusNotification",
            {k: v for k, v in STATUS_201.items() if k != "connectorStatus"},
            "required",
            ErrorKind.occurrence_constraint,
            "payload",
        ),
        (
            "1.6",
            "StatusNotification",
            {**STATUS_16, "foo": 1},
            "additionalProperties",
            ErrorKind.format_violation,
            "payload",
        ),
        (
            "2.0.1",
            "StatusNotification",
            {**STATUS_201, "foo": 1},
            "additionalProperties",
            ErrorKind.format_violation,
            "payload",
        ),
        (
            "1.6",
            "StatusNotification",
            {**STATUS_16, "status": "Sleeping"},
            "enum",
            ErrorKind.property_constraint,
            "status",
        ),
        (
            "2.0.1",
            "StatusNotification",
            {**STATUS_201, "connectorStatus": "Charging"},
            "enum",
            ErrorKind.property_constraint,
            "connectorStatus",
        ),
        (
            "1.6",
            "StatusNotification",
            {**STATUS_16, "info": "x" * 51},
            "maxLength",
            ErrorKind.property_constraint,
            "info",
        ),
        (
            "2.0.1",
            "NotifyEvent",
            {"generatedAt": "2026-11-27T10:00:00Z", "seqNo": 0, "eventData": []},
            "minItems",
            ErrorKind.occurrence_constraint,
            "eventData",
        ),
        (
            "2.0.1",
            "Authorize",
            {
                "idToken": {"idToken": "a", "type": "Central"},
                "iso15118CertificateHashData": [HASH_DATA] * 5,
            },
            "maxItems",
            ErrorKind.occurrence_constraint,
            "iso15118CertificateHashData",
        ),
        (
            "1.6",
            "SetChargingProfile",
            {
                "connectorId": 1,
                "csChargingProfiles": {
                    "chargingProfileId": 1,
                    "stackLevel": 0,
                    "chargingProfilePurpose": "TxProfile",
                    "chargingProfileKind": "Absolute",
                    "chargingSchedule": SCHEDULE,
                },
            },
            "multipleOf",
            ErrorKind.property_constraint,
            "csChargingProfiles.chargingSchedule.chargingSchedulePeriod[0].limit",
        ),
    ],
    ids=[
        "type-16",
        "type-201",
        "required-16",
        "required-201",
        "additional-16",
        "additional-201",
        "enum-16",
        "enum-201",
        "maxLength",
        "minItems",
        "maxItems",
        "multipleOf",
    ],
)
def test_rule_maps_to_error_kind(
    version: str,
    action: str,
    payload: dict[str, Any],
    rule: str,
    kind: ErrorKind,
    field: str,
) -> None:
    with pytest.raises(FrameError) as info:
        validate(version, action, payload)
    assert info.value.kind is kind
    assert info.value.details == {"field": field, "rule": rule}
    assert info.value.description.startswith(f"{action}: ")


def test_invalid_response_is_refused() -> None:
    with pytest.raises(FrameError) as info:
        validate("1.6", "Heartbeat", {}, response=True)
    assert info.value.kind is ErrorKind.occurrence_constraint


def test_action_without_schema_is_not_implemented() -> None:
    assert get_validator("1.6", "FooBar") is None
    with pytest.raises(FrameError) as info:
        validate("2.0.1", "FooBar", {})
    assert info.value.kind is ErrorKind.not_implemented


def test_compiled_validators_are_cached() -> None:
    first = get_validator("2.0.1", "NotifyEvent")
    assert first is not None
    assert get_validator("2.0.1", "NotifyEvent") is first
    response = get_validator("2.0.1", "NotifyEvent", response=True)
    assert response is not None
    assert response is not first
    assert get_validator("2.0.1", "NotifyEvent", response=True) is response
    # Same action name, other version: another schema, another validator.
    v16 = get_validator("1.6", "StatusNotification")
    assert v16 is not None
    assert v16 is not get_validator("2.0.1", "StatusNotification")


def test_cache_serves_without_reading_the_schema_again(monkeypatch: pytest.MonkeyPatch) -> None:
    cached = get_validator("1.6", "BootNotification")
    assert cached is not None

    def no_compiling(*_: object, **__: object) -> None:
        raise AssertionError("a cached validator was compiled again")

    monkeypatch.setattr("csms.protocol.validation.fastjsonschema.compile", no_compiling)
    assert get_validator("1.6", "BootNotification") is cached
    validate("1.6", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"})


@pytest.mark.parametrize(
    ("kind", "v16", "v201"),
    [
        (ErrorKind.not_implemented, "NotImplemented", "NotImplemented"),
        (ErrorKind.not_supported, "NotSupported", "NotSupported"),
        (ErrorKind.internal, "InternalError", "InternalError"),
        (ErrorKind.protocol, "ProtocolError", "ProtocolError"),
        (ErrorKind.security, "SecurityError", "SecurityError"),
        (ErrorKind.format_violation, "FormationViolation", "FormatViolation"),
        (
            ErrorKind.property_constraint,
            "PropertyConstraintViolation",
            "PropertyConstraintViolation",
        ),
        (
            ErrorKind.occurrence_constraint,
            "OccurenceConstraintViolation",
            "OccurrenceConstraintViolation",
        ),
        (ErrorKind.type_constraint, "TypeConstraintViolation", "TypeConstraintViolation"),
        (ErrorKind.generic, "GenericError", "GenericError"),
        (ErrorKind.rpc_framework, "FormationViolation", "RpcFrameworkError"),
        (ErrorKind.message_type_not_supported, "ProtocolError", "MessageTypeNotSupported"),
    ],
)
def test_error_codes_as_each_spec_spells_them(kind: ErrorKind, v16: str, v201: str) -> None:
    assert error_code(kind, "1.6") == v16
    assert error_code(kind, "2.0.1") == v201


def test_every_kind_has_a_code_in_both_versions() -> None:
    for kind in ErrorKind:
        assert error_code(kind, "1.6")
        assert error_code(kind, "2.0.1")
