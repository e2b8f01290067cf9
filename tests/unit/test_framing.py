"""Strict OCPP-J frame parsing: what is a CALL, CALLRESULT or CALLERROR, and which error
kind every malformed frame gets (so the session can answer with the right CALLERROR)."""

from __future__ import annotations

import orjson
import pytest
from ocpp.messages import Call, CallError, CallResult

from csms.protocol.errors import ErrorKind, FrameError
from csms.protocol.framing import (
    MAX_MESSAGE_ID_LEN,
    call_error_frame,
    call_result_frame,
    parse_frame,
)


def test_call() -> None:
    frame = parse_frame('[2, "m-1", "Heartbeat", {}]')
    assert isinstance(frame, Call)
    assert (frame.unique_id, frame.action, frame.payload) == ("m-1", "Heartbeat", {})


def test_bytes_are_parsed_like_text() -> None:
    frame = parse_frame(b'[2, "m-2", "StatusNotification", {"connectorId": 1}]')
    assert isinstance(frame, Call)
    assert frame.payload == {"connectorId": 1}


def test_call_result() -> None:
    frame = parse_frame('[3, "m-3", {"status": "Accepted"}]')
    assert isinstance(frame, CallResult)
    assert (frame.unique_id, frame.payload) == ("m-3", {"status": "Accepted"})


def test_call_error_with_and_without_details() -> None:
    frame = parse_frame('[4, "m-4", "NotSupported", "no", {"a": 1}]')
    assert isinstance(frame, CallError)
    assert (frame.unique_id, frame.error_code, frame.error_description) == (
        "m-4",
        "NotSupported",
        "no",
    )
    assert frame.error_details == {"a": 1}
    bare = parse_frame('[4, "m-5", "GenericError", "x"]')
    assert isinstance(bare, CallError)
    assert bare.error_details == {}
    odd = parse_frame('[4, "m-6", "GenericError", "x", "not an object"]')
    assert odd.error_details == {}


def test_message_id_of_maximum_length_is_accepted() -> None:
    message_id = "x" * MAX_MESSAGE_ID_LEN
    assert parse_frame(f'[2, "{message_id}", "Heartbeat", {{}}]').unique_id == message_id


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        '[2, "m", "Heartbeat", {}',
        "",
        '{"messageTypeId": 2}',
        '"a string"',
        "42",
        "null",
        "[]",
        "[2]",
        '[2, 123, "Heartbeat", {}]',
        '[2, null, "Heartbeat", {}]',
        '[2, "", "Heartbeat", {}]',
    ],
    ids=[
        "invalid-json",
        "truncated",
        "empty",
        "object",
        "string",
        "number",
        "null",
        "empty-array",
        "no-id",
        "integer-id",
        "null-id",
        "empty-id",
    ],
)
def test_frames_without_a_readable_message_id(raw: str) -> None:
    with pytest.raises(FrameError) as info:
        parse_frame(raw)
    assert info.value.kind is ErrorKind.rpc_framework
    # No id could be read: the session answers with message id "-1".
    assert info.value.message_id is None


def test_a_message_id_too_long_is_refused_but_echoed() -> None:
    message_id = "x" * (MAX_MESSAGE_ID_LEN + 1)
    with pytest.raises(FrameError) as info:
        parse_frame(f'[2, "{message_id}", "Heartbeat", {{}}]')
    assert info.value.kind is ErrorKind.rpc_framework
    # The id was readable: the CALLERROR carries it, so the charger can match the answer.
    assert info.value.message_id == message_id


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ('[2, "m", "Heartbeat"]', ErrorKind.rpc_framework),
        ('[2, "m", "Heartbeat", {}, {}]', ErrorKind.rpc_framework),
        ('[2, "m", 5, {}]', ErrorKind.rpc_framework),
        ('[2, "m", "", {}]', ErrorKind.rpc_framework),
        ('[2, "m", "Heartbeat", []]', ErrorKind.format_violation),
        ('[2, "m", "Heartbeat", "x"]', ErrorKind.format_violation),
        ('[3, "m", []]', ErrorKind.rpc_framework),
        ('[3, "m", {}, {}]', ErrorKind.rpc_framework),
        ('[4, "m", "GenericError"]', ErrorKind.rpc_framework),
        ('[4, "m", 7, "x", {}]', ErrorKind.rpc_framework),
        ('[7, "m", "Heartbeat", {}]', ErrorKind.message_type_not_supported),
        ('[0, "m"]', ErrorKind.message_type_not_supported),
        ('["2", "m", "Heartbeat", {}]', ErrorKind.message_type_not_supported),
    ],
    ids=[
        "call-3-elements",
        "call-5-elements",
        "action-not-string",
        "action-empty",
        "payload-array",
        "payload-string",
        "result-payload-array",
        "result-4-elements",
        "error-too-short",
        "error-code-not-string",
        "type-7",
        "type-0",
        "type-as-string",
    ],
)
def test_malformed_frames_keep_their_message_id(raw: str, kind: ErrorKind) -> None:
    with pytest.raises(FrameError) as info:
        parse_frame(raw)
    assert info.value.kind is kind
    assert info.value.message_id == "m"


def test_result_and_error_frames_round_trip() -> None:
    result = parse_frame(call_result_frame("r-1", {"currentTime": "2026-01-01T00:00:00.000Z"}))
    assert isinstance(result, CallResult)
    assert result.payload == {"currentTime": "2026-01-01T00:00:00.000Z"}

    text = call_error_frame("r-2", "FormatViolation", "bad", {"field": "evseId"})
    assert orjson.loads(text) == [4, "r-2", "FormatViolation", "bad", {"field": "evseId"}]
    error = parse_frame(text)
    assert isinstance(error, CallError)
    assert error.error_details == {"field": "evseId"}
    # Details default to an empty object, as OCPP-J requires the fifth element.
    assert orjson.loads(call_error_frame("r-3", "GenericError", "x")) == [
        4,
        "r-3",
        "GenericError",
        "x",
        {},
    ]
