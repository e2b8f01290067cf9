"""Signing of webhook requests (HMAC-SHA256, Stripe style), and how receivers check it.

Every request ChargeOps sends to a webhook is a ``POST`` with a JSON body and these headers:

``X-ChargeOps-Signature: t=<unix seconds>,v1=<hex>``
    ``<hex>`` is ``HMAC-SHA256(key=<webhook secret as UTF-8>, msg=f"{t}.{raw body}")`` in
    lower-case hexadecimal. More than one ``v1=`` may appear; accept the request if any
    of them matches.
``X-ChargeOps-Event``
    the event type, e.g. ``work_order.created`` (the body's ``type``).
``X-ChargeOps-Event-Id``
    the event's id (the body's ``id``): the same for every retry and redelivery, so
    receivers de-duplicate on it.
``X-ChargeOps-Delivery``
    the id of this delivery (one per webhook and event) in ChargeOps' delivery log.

To verify, a receiver takes the raw body bytes exactly as received (before any JSON
parsing), recomputes the HMAC with ``t`` from the header, compares it in constant time,
and refuses a ``t`` further than its tolerance (e.g. 5 minutes) from its own clock, which
bounds replays. :func:`verify` does exactly that.

The secret is made with ``secrets.token_urlsafe(32)``, shown once (on creation and on
rotation) and never returned or logged afterwards.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

SIGNATURE_HEADER = "X-ChargeOps-Signature"
EVENT_HEADER = "X-ChargeOps-Event"
EVENT_ID_HEADER = "X-ChargeOps-Event-Id"
DELIVERY_HEADER = "X-ChargeOps-Delivery"
SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300.0


def new_secret() -> str:
    """A fresh webhook secret (43 URL-safe characters, 256 bits)."""
    return secrets.token_urlsafe(32)


def _bytes(body: str | bytes) -> bytes:
    return body.encode() if isinstance(body, str) else body


def sign(secret: str, timestamp: int, body: str | bytes) -> str:
    """The hex HMAC-SHA256 of ``f"{timestamp}.{body}"`` keyed with ``secret``."""
    message = f"{timestamp}.".encode() + _bytes(body)
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: str | bytes) -> str:
    """The value of the ``X-ChargeOps-Signature`` header: ``t=<unix>,v1=<hex>``."""
    return f"t={timestamp},{SCHEME}={sign(secret, timestamp, body)}"


def request_headers(
    secret: str,
    timestamp: int,
    body: str | bytes,
    *,
    event_type: str,
    event_id: str,
    delivery_id: int,
) -> dict[str, str]:
    """Every header of one webhook request."""
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature_header(secret, timestamp, body),
        EVENT_HEADER: event_type,
        EVENT_ID_HEADER: event_id,
        DELIVERY_HEADER: str(delivery_id),
    }


def _parse(header: str) -> tuple[int, list[str]] | None:
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            if not value.isdigit():
                return None
            timestamp = int(value)
        elif key == SCHEME:
            signatures.append(value)
    if timestamp is None or not signatures:
        return None
    return timestamp, signatures


def verify(
    secret: str,
    header: str,
    body: str | bytes,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: datetime,
) -> bool:
    """True if ``header`` signs ``body`` with ``secret`` at a time within ``tolerance_s``
    of ``now`` (either way). Signatures are compared in constant time."""
    parsed = _parse(header)
    if parsed is None:
        return False
    timestamp, signatures = parsed
    if abs(now.timestamp() - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).encode()
    # Compare against every candidate, without stopping early, so timing tells nothing;
    # as bytes, since compare_digest refuses non-ASCII text (a header may carry anything).
    matches = [hmac.compare_digest(expected, c.encode()) for c in signatures]
    return any(matches)
