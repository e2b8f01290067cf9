"""How severe a reported fault is, as far as the charger's own report tells.

This is only the charger-side reading (info / warning / error / critical); ticketing's
fault rules classify, prioritise and decide what to do.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from importlib import resources

from services.bus.contracts import Severity

CHARGEX_VENDOR_ID = "https://chargex.inl.gov"
#: the vendorIds under which a 1.6 vendorErrorCode is a ChargeX code (as the fault rules)
CHARGEX_VENDOR_IDS = frozenset({None, CHARGEX_VENDOR_ID, CHARGEX_VENDOR_ID + "/"})

#: OCPP 1.6 error codes that indicate a hazard.
SAFETY_ERROR_CODES = frozenset({"GroundFailure", "OverVoltage", "OverCurrentFailure"})


@lru_cache(maxsize=1)
def chargex_codes() -> dict[str, tuple[str, str]]:
    """ChargeX minimum required error codes: code -> (name, note)."""
    text = (resources.files("csms") / "chargex_error_codes.csv").read_text()
    return {row["code"]: (row["name"], row["note"]) for row in csv.DictReader(text.splitlines())}


def severity(
    *,
    faulted: bool,
    error_code: str | None,
    vendor_error_code: str | None = None,
    vendor_id: str | None = None,
) -> Severity:
    """``vendor_error_code`` is a ChargeX code (CXnnn) only under ChargeX's vendorId or
    none: another vendor's "CX002" is that vendor's own code."""
    code = vendor_error_code or ""
    name_note = chargex_codes().get(code) if vendor_id in CHARGEX_VENDOR_IDS else None
    if name_note is not None and name_note[1] == "safety":
        return Severity.critical
    if error_code in SAFETY_ERROR_CODES:
        return Severity.critical
    if name_note is not None and name_note[1] == "driver/vehicle side":
        return Severity.info
    if name_note is not None and name_note[1] == "degraded":
        return Severity.warning  # the port still charges (derating), whatever the report
    return Severity.error if faulted else Severity.warning
