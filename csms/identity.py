"""Charge point identity as established at the WebSocket handshake."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

# OCPP identifierString: a-z A-Z 0-9 * - _ = : + | @ .
CHARGE_POINT_ID = re.compile(r"^[A-Za-z0-9*\-_=:+|@.]{1,48}$")
OCPP_PATH_PREFIX = "/ocpp/"


class InvalidChargePointId(ValueError):
    pass


def charge_point_id_from_path(path: str) -> str:
    """The percent-decoded last path segment of ``/ocpp/{id}``, validated."""
    path = path.split("?", 1)[0]
    if not path.startswith(OCPP_PATH_PREFIX):
        raise InvalidChargePointId("path must be /ocpp/{charge_point_id}")
    raw = path[len(OCPP_PATH_PREFIX) :].rstrip("/")
    if not raw or "/" in raw:
        raise InvalidChargePointId("path must be /ocpp/{charge_point_id}")
    cp_id = unquote(raw)
    if not CHARGE_POINT_ID.fullmatch(cp_id):
        raise InvalidChargePointId(
            "charge point id must be 1..48 characters of A-Z a-z 0-9 * - _ = : + | @ ."
        )
    return cp_id


@dataclass(frozen=True)
class Identity:
    charger_id: str
    security_profile: int
    registration_status: str
    remote_address: str
    # The stored password hash the charger authenticated against (profiles 1 and 2), so that
    # a live session can be ended when an operator changes the password.
    password_hash: str | None = None
