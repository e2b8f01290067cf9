"""Webhook signatures: what a receiver computes from the documented scheme verifies."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

from ticketing.webhooks.outbox import payload
from ticketing.webhooks.signing import new_secret, request_headers, sign, signature_header, verify

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
T = int(NOW.timestamp())
BODY = '{"id":"e-1","type":"work_order.created"}'
SECRET = "whsec-test-0123456789"


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), f"{T}.{BODY}".encode(), hashlib.sha256).hexdigest()
    assert sign(SECRET, T, BODY) == expected
    assert signature_header(SECRET, T, BODY) == f"t={T},v1={expected}"


def test_round_trip_verifies() -> None:
    assert verify(SECRET, signature_header(SECRET, T, BODY), BODY.encode(), now=NOW)


def test_tampered_body_fails() -> None:
    header = signature_header(SECRET, T, BODY)
    assert not verify(SECRET, header, BODY.replace("created", "closed"), now=NOW)


def test_wrong_secret_fails() -> None:
    header = signature_header(SECRET, T, BODY)
    assert not verify(SECRET + "x", header, BODY, now=NOW)


def test_old_and_future_timestamps_fail_outside_tolerance() -> None:
    header = signature_header(SECRET, T, BODY)
    assert verify(SECRET, header, BODY, now=NOW + timedelta(seconds=299), tolerance_s=300)
    assert not verify(SECRET, header, BODY, now=NOW + timedelta(seconds=301), tolerance_s=300)
    assert not verify(SECRET, header, BODY, now=NOW - timedelta(seconds=301), tolerance_s=300)


def test_changed_timestamp_fails() -> None:
    signature = sign(SECRET, T, BODY)
    assert not verify(SECRET, f"t={T + 1},v1={signature}", BODY, now=NOW)


def test_any_matching_v1_is_accepted_and_garbage_is_refused() -> None:
    good = sign(SECRET, T, BODY)
    assert verify(SECRET, f"t={T},v1={'0' * 64},v1={good}", BODY, now=NOW)
    for header in ("", "v1=" + good, f"t={T}", f"t=abc,v1={good}", f"t={T},v1=é"):
        assert not verify(SECRET, header, BODY, now=NOW), header


def test_request_headers_carry_event_ids_and_signature() -> None:
    headers = request_headers(
        SECRET, T, BODY, event_type="work_order.created", event_id="e-1", delivery_id=7
    )
    assert headers["Content-Type"] == "application/json"
    assert headers["X-ChargeOps-Event"] == "work_order.created"
    assert headers["X-ChargeOps-Event-Id"] == "e-1"
    assert headers["X-ChargeOps-Delivery"] == "7"
    assert verify(SECRET, headers["X-ChargeOps-Signature"], BODY, now=NOW)


def test_new_secrets_are_long_and_distinct() -> None:
    first, second = new_secret(), new_secret()
    assert first != second
    assert len(first) >= 43


def test_payload_is_deterministic_with_iso_datetimes() -> None:
    order_a = {"id": 5, "state": "new", "created_at": NOW, "title": "Port 1 faulted"}
    order_b = dict(reversed(list(order_a.items())))
    first = payload(
        event_type="created", event_id="e-1", occurred_at=NOW, order=order_a, data={"b": 1}
    )
    second = payload(
        event_type="created", event_id="e-1", occurred_at=NOW, order=order_b, data={"b": 1}
    )
    assert first == second
    assert first == (
        '{"data":{"b":1},"id":"e-1","occurred_at":"2026-11-27T10:00:00Z","type":'
        '"work_order.created","work_order":{"created_at":"2026-11-27T10:00:00Z","id":5,'
        '"state":"new","title":"Port 1 faulted"}}'
    )
