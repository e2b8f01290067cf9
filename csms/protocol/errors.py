"""OCPP-J CALLERROR codes, spelled as each version's spec spells them.

1.6 (OCPP-J 1.6 section 4.2.3): NotImplemented, NotSupported, InternalError, ProtocolError,
SecurityError, FormationViolation, PropertyConstraintViolation, OccurenceConstraintViolation
(sic), TypeConstraintViolation, GenericError.
2.0.1 (OCPP-J 2.0.1 section 4.3): the same, with FormatViolation and
OccurrenceConstraintViolation spelled correctly, plus RpcFrameworkError and
MessageTypeNotSupported.

``FrameError`` is raised by the protocol layer with a version-neutral ``kind``; the
session turns it into the version's code at the edge.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorKind(StrEnum):
    not_implemented = "not_implemented"
    not_supported = "not_supported"
    internal = "internal"
    protocol = "protocol"
    security = "security"
    format_violation = "format_violation"
    property_constraint = "property_constraint"
    occurrence_constraint = "occurrence_constraint"
    type_constraint = "type_constraint"
    generic = "generic"
    rpc_framework = "rpc_framework"
    message_type_not_supported = "message_type_not_supported"


_V16 = {
    ErrorKind.not_implemented: "NotImplemented",
    ErrorKind.not_supported: "NotSupported",
    ErrorKind.internal: "InternalError",
    ErrorKind.protocol: "ProtocolError",
    ErrorKind.security: "SecurityError",
    ErrorKind.format_violation: "FormationViolation",
    ErrorKind.property_constraint: "PropertyConstraintViolation",
    ErrorKind.occurrence_constraint: "OccurenceConstraintViolation",
    ErrorKind.type_constraint: "TypeConstraintViolation",
    ErrorKind.generic: "GenericError",
    ErrorKind.rpc_framework: "FormationViolation",
    ErrorKind.message_type_not_supported: "ProtocolError",
}
_V201 = {
    **_V16,
    ErrorKind.format_violation: "FormatViolation",
    ErrorKind.occurrence_constraint: "OccurrenceConstraintViolation",
    ErrorKind.rpc_framework: "RpcFrameworkError",
    ErrorKind.message_type_not_supported: "MessageTypeNotSupported",
}


def error_code(kind: ErrorKind, ocpp_version: str) -> str:
    return (_V16 if ocpp_version == "1.6" else _V201)[kind]


class FrameError(Exception):
    """A frame or payload the server refuses; answered with a CALLERROR."""

    def __init__(
        self,
        kind: ErrorKind,
        description: str,
        *,
        message_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(description)
        self.kind = kind
        self.description = description
        self.message_id = message_id
        self.details = details or {}
