"""Parsing OCPP-J frames strictly, as the OCPP-J spec reads.

The ``ocpp`` library's ``unpack`` accepts an integer message id and answers an unknown
action with NotSupported; the spec wants a string id (FormationViolation /
RpcFrameworkError otherwise) and NotImplemented for an unknown action. Parsing here
returns the library's own ``Call``/``CallResult``/``CallError`` objects.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import orjson
from ocpp.messages import Call, CallError, CallResult

from csms.protocol.errors import ErrorKind, FrameError

MAX_MESSAGE_ID_LEN = 36

# ocpp.messages.Call | CallResult | CallError; the library ships no type information.
Frame: TypeAlias = Any


def parse_frame(raw: str | bytes) -> Frame:
    try:
        msg: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise FrameError(ErrorKind.rpc_framework, "frame is not valid JSON") from None
    if not isinstance(msg, list) or not msg:
        raise FrameError(ErrorKind.rpc_framework, "frame is not a JSON array")
    message_id = msg[1] if len(msg) > 1 else None
    if not isinstance(message_id, str) or not message_id:
        raise FrameError(ErrorKind.rpc_framework, "message id must be a non-empty string")
    if len(message_id) > MAX_MESSAGE_ID_LEN:
        # Decision: the id was readable, so the CALLERROR echoes it as given (not "-1")
        # and the charger can match the answer to its request.
        raise FrameError(
            ErrorKind.rpc_framework,
            f"message id longer than {MAX_MESSAGE_ID_LEN} characters",
            message_id=message_id,
        )
    type_id = msg[0]
    if type_id == 2:
        if len(msg) != 4:
            raise FrameError(
                ErrorKind.rpc_framework, "CALL must have 4 elements", message_id=message_id
            )
        action, payload = msg[2], msg[3]
        if not isinstance(action, str) or not action:
            raise FrameError(
                ErrorKind.rpc_framework, "action must be a string", message_id=message_id
            )
        if not isinstance(payload, dict):
            raise FrameError(
                ErrorKind.format_violation, "payload must be a JSON object", message_id=message_id
            )
        return Call(message_id, action, payload)
    if type_id == 3:
        if len(msg) != 3 or not isinstance(msg[2], dict):
            raise FrameError(
                ErrorKind.rpc_framework, "CALLRESULT must be [3, id, {}]", message_id=message_id
            )
        return CallResult(message_id, msg[2])
    if type_id == 4:
        if len(msg) < 4 or not isinstance(msg[2], str):
            raise FrameError(ErrorKind.rpc_framework, "malformed CALLERROR", message_id=message_id)
        details = msg[4] if len(msg) > 4 and isinstance(msg[4], dict) else {}
        return CallError(message_id, msg[2], str(msg[3]), details)
    raise FrameError(
        ErrorKind.message_type_not_supported,
        f"message type {type_id!r} is not 2, 3 or 4",
        message_id=message_id,
    )


def call_result_frame(message_id: str, payload: dict[str, Any]) -> str:
    return orjson.dumps([3, message_id, payload]).decode()


def call_error_frame(
    message_id: str, code: str, description: str, details: dict[str, Any] | None = None
) -> str:
    return orjson.dumps([4, message_id, code, description, details or {}]).decode()
