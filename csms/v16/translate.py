"""OCPP 1.6 payloads -> normalized values. Pure functions."""

from __future__ import annotations

from services.bus.contracts import NormalizedStatus

STATUS = {
    "Available": NormalizedStatus.available,
    "Preparing": NormalizedStatus.occupied,
    "Charging": NormalizedStatus.occupied,
    "SuspendedEVSE": NormalizedStatus.occupied,
    "SuspendedEV": NormalizedStatus.occupied,
    "Finishing": NormalizedStatus.occupied,
    "Reserved": NormalizedStatus.reserved,
    "Unavailable": NormalizedStatus.unavailable,
    "Faulted": NormalizedStatus.faulted,
}


def normalize_status(status: str) -> NormalizedStatus:
    return STATUS[status]


def fault_signature(
    status: str, error_code: str, vendor_error_code: str | None
) -> tuple[str, str | None] | None:
    """The fault a StatusNotification reports, or None when it reports none.

    A fault is an ``errorCode`` other than NoError, or status Faulted (then with
    errorCode NoError the fault is the vendor's code, or plain "Faulted").
    """
    if error_code != "NoError":
        return (error_code, vendor_error_code)
    if status == "Faulted":
        return ("Faulted", vendor_error_code)
    return None
