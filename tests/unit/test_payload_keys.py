"""Handler answers become camelCase payloads exactly as the ``ocpp`` library would make them."""

from __future__ import annotations

from typing import Any

import pytest
from ocpp.charge_point import remove_nones, serialize_as_dict
from ocpp.v16 import call_result as r16
from ocpp.v16 import datatypes as d16
from ocpp.v201 import call_result as r201
from ocpp.v201 import datatypes as d201

from csms.protocol.keys import payload_of, to_camel

ANSWERS: list[Any] = [
    r16.Heartbeat(current_time="2026-11-27T10:00:00.000Z"),
    r16.BootNotification(current_time="2026-11-27T10:00:00.000Z", interval=300, status="Accepted"),
    r16.Authorize(id_tag_info={"status": "Accepted", "expiry_date": None, "parent_id_tag": "G1"}),
    r16.StartTransaction(
        transaction_id=7, id_tag_info=d16.IdTagInfo(status="Accepted", parent_id_tag=None)
    ),
    r16.DataTransfer(status="UnknownVendorId"),
    r201.Authorize(
        id_token_info=d201.IdTokenInfoType(
            status="Accepted",
            group_id_token=d201.IdTokenType(id_token="G1", type="Central"),
            personal_message=None,
        )
    ),
    r201.BootNotification(
        current_time="2026-11-27T10:00:00.000Z",
        interval=60,
        status="Pending",
        status_info=d201.StatusInfoType(reason_code="Commissioning", additional_info=None),
        custom_data={"vendor_id": "x", "nested_list": [{"some_key": 1}, None]},
    ),
    {"current_time": "2026-11-27T10:00:00.000Z", "skip": None},
]


@pytest.mark.parametrize("answer", ANSWERS, ids=lambda a: type(a).__name__)
def test_payload_matches_the_library(answer: Any) -> None:
    if isinstance(answer, dict):
        expected = to_camel(answer)
    else:
        expected = to_camel(remove_nones(serialize_as_dict(answer)))
    assert payload_of(answer) == expected
    assert "None" not in repr(payload_of(answer))
