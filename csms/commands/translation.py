"""What the per-version command translators share: their context, their error, and
connector keys and timestamps in OCPP form."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from csms.protocol.timestamps import format_timestamp


class NotApplicable(Exception):
    """The command (or one of its parameters) cannot be expressed in the charger's OCPP
    version; the command is ``refused`` with this message."""


@dataclass(frozen=True)
class CallContext:
    #: the OCPP requestId / remoteStartId of the command
    request_id: int
    now: datetime


#: turns a command's parameter model into an ``ocpp`` library call payload
Translator = Callable[[Any, CallContext], Any]


def split_connector(key: str) -> tuple[int, int | None]:
    """``"2"`` -> (2, None); ``"2/1"`` -> (2, 1)."""
    first, _, second = key.partition("/")
    return int(first), (int(second) if second else None)


def timestamp(value: datetime | None) -> str | None:
    return format_timestamp(value) if value is not None else None


def without_nones(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}
