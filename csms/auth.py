"""Handshake admission: charge point id, subprotocol, registry, security profile.

Everything is decided before the WebSocket upgrade, so a refused charger gets a plain
HTTP status (400 bad id / no OCPP subprotocol, 401 bad credentials, 403 disabled or
transport too weak, 404 unknown charger, 429 too many failures) and never a socket.

Security profiles (OCPP security whitepaper):
  0  none (lab and benchmark use only; set explicitly per charger)
  1  HTTP Basic, username = charge point id, password checked against its salted hash
  2  the same, only over TLS
  3  TLS with a client certificate chaining to CHARGEOPS_TLS_CA whose subject CN equals
     the charge point id (a certificate of the CA for another station is refused).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from csms.context import CsmsContext
from csms.identity import Identity, InvalidChargePointId, charge_point_id_from_path
from csms.tables import Charger
from services.db import table_of, utcnow
from services.observability import metrics
from services.security import VerifiedSecretCache, hash_password

SUBPROTOCOLS = ("ocpp2.0.1", "ocpp1.6")
ADDRESS_LIMIT_FACTOR = 10
#: handshakes in flight from one address while it has no recent failure
ADDRESS_BURST = 1000
CHARGERS = table_of(Charger)


@dataclass
class Refusal(Exception):
    status: int
    reason: str
    message: str
    challenge: bool = False


class FailureLimiter:
    """Sliding one-minute window of failures per key (charger id, source address).

    Decision: an attempt holds a slot from before its first await until its outcome is
    known (``reserve``/``release``), so parallel attempts cannot all pass the check before
    any of them has failed: at most ``per_minute`` attempts per key are evaluated while
    the window is full of failures or attempts in flight.
    """

    def __init__(self, per_minute: int, *, burst: int | None = None) -> None:
        """``burst``: how many attempts may be in flight while the key has no failure in
        its window (default: the limit itself)."""
        self._limit = per_minute
        self._burst = per_minute if burst is None else burst
        self._failures: dict[str, deque[float]] = {}
        self._in_flight: dict[str, int] = {}

    def _window(self, key: str) -> deque[float]:
        window = self._failures.setdefault(key, deque())
        cutoff = time.monotonic() - 60.0
        while window and window[0] < cutoff:
            window.popleft()
        return window

    def reserve(self, key: str) -> bool:
        """Take a slot for one attempt; False (nothing taken) when the key is blocked."""
        window = self._window(key)
        in_flight = self._in_flight.get(key, 0)
        if len(window) + in_flight >= (self._limit if window else self._burst):
            return False
        self._in_flight[key] = in_flight + 1
        return True

    def release(self, key: str) -> None:
        """Give the slot back once the attempt's outcome is known (``fail`` first if it
        failed)."""
        in_flight = self._in_flight.pop(key, 1) - 1
        if in_flight > 0:
            self._in_flight[key] = in_flight
        elif not self._failures.get(key):
            self._failures.pop(key, None)

    def fail(self, key: str) -> None:
        self._window(key).append(time.monotonic())
        if len(self._failures) > 100_000:
            for stale in [k for k, w in self._failures.items() if not w][:10_000]:
                self._failures.pop(stale, None)


def offered_subprotocols(header: str | None) -> list[str]:
    if not header:
        return []
    return [p.strip() for p in header.split(",") if p.strip()]


def basic_credentials(header: str | None, cp_id: str) -> tuple[str, str] | None:
    """(username, password) of an HTTP Basic header.

    Decision: the username must be the charge point id, and ids may contain ':'; so the
    split is made after the expected id when the header starts with it, and at the
    first colon otherwise (a username that is then not the id)."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    if decoded.startswith(cp_id + ":"):
        return cp_id, decoded[len(cp_id) + 1 :]
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def certificate_cn(peercert: dict[str, Any] | None) -> str | None:
    if not peercert:
        return None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class Authenticator:
    def __init__(self, ctx: CsmsContext) -> None:
        self.ctx = ctx
        self._secrets = VerifiedSecretCache()
        per_id = ctx.settings.auth_failures_per_minute
        self._limiter = FailureLimiter(per_id)
        # A site's chargers often share one address (NAT, a load balancer): the per-address
        # limit is higher so that one misconfigured charger cannot lock out its neighbours.
        # Decision: such a site's chargers all reconnect at once after an outage, so while
        # the address has no recent failure up to ADDRESS_BURST handshakes may be in flight;
        # after one, attempts in flight count against the limit. Each id stays strictly
        # limited (one charger has one connection), which is what bounds password guesses.
        self._address_limiter = FailureLimiter(per_id * ADDRESS_LIMIT_FACTOR, burst=ADDRESS_BURST)

    async def admit(
        self,
        path: str,
        headers: dict[str, str],
        remote_address: str,
        peercert: dict[str, Any] | None,
        tls: bool,
    ) -> Identity:
        try:
            return await self._admit(path, headers, remote_address, peercert, tls)
        except Refusal as refusal:
            metrics.HANDSHAKES_REFUSED.labels(refusal.reason).inc()
            raise

    async def _admit(
        self,
        path: str,
        headers: dict[str, str],
        remote_address: str,
        peercert: dict[str, Any] | None,
        tls: bool,
    ) -> Identity:
        try:
            cp_id = charge_point_id_from_path(path)
        except InvalidChargePointId as exc:
            raise Refusal(400, "invalid_id", str(exc)) from None
        offered = offered_subprotocols(headers.get("sec-websocket-protocol"))
        if not any(p in SUBPROTOCOLS for p in offered):
            raise Refusal(
                400,
                "no_subprotocol",
                "Sec-WebSocket-Protocol must offer ocpp1.6 or ocpp2.0.1",
            )
        if not self._limiter.reserve(cp_id):
            raise Refusal(429, "rate_limited", "too many failed attempts; retry later")
        if not self._address_limiter.reserve(remote_address):
            self._limiter.release(cp_id)
            raise Refusal(429, "rate_limited", "too many failed attempts; retry later")
        try:
            return await self._check(cp_id, headers, remote_address, peercert, tls)
        finally:
            self._limiter.release(cp_id)
            self._address_limiter.release(remote_address)

    async def _check(
        self,
        cp_id: str,
        headers: dict[str, str],
        remote_address: str,
        peercert: dict[str, Any] | None,
        tls: bool,
    ) -> Identity:
        async with self.ctx.db.engine.connect() as conn:
            row = (await conn.execute(select(CHARGERS).where(CHARGERS.c.id == cp_id))).first()
        credentials = basic_credentials(headers.get("authorization"), cp_id)

        if row is None:
            if not self.ctx.settings.allow_unknown_chargers:
                self._fail(cp_id, remote_address, "unknown_charger")
                raise Refusal(404, "unknown_charger", "unknown charge point id")
            return await self._commission(cp_id, credentials, peercert, tls, remote_address)

        if not row.enabled:
            raise Refusal(403, "disabled", "charge point is disabled")
        profile = int(row.security_profile)
        if profile >= 2 and not tls:
            self._fail(cp_id, remote_address, "tls_required")
            raise Refusal(403, "tls_required", f"security profile {profile} requires TLS")
        if profile == 3:
            cn = certificate_cn(peercert)
            if cn is None:
                self._fail(cp_id, remote_address, "certificate_missing")
                raise Refusal(401, "certificate_missing", "a client certificate is required")
            if cn != cp_id:
                self._fail(cp_id, remote_address, "certificate_cn_mismatch")
                raise Refusal(
                    401,
                    "certificate_cn_mismatch",
                    "client certificate subject CN does not match the charge point id",
                )
        elif profile in (1, 2):
            if credentials is None:
                self._fail(cp_id, remote_address, "credentials_missing")
                raise Refusal(401, "credentials_missing", "HTTP Basic credentials required", True)
            user, password = credentials
            if (
                user != cp_id
                or row.password_hash is None
                or not self._secrets.verify(password, row.password_hash)
            ):
                self._fail(cp_id, remote_address, "bad_credentials")
                raise Refusal(401, "bad_credentials", "invalid credentials", True)
        return Identity(
            cp_id,
            profile,
            row.registration_status,
            remote_address,
            row.password_hash if profile in (1, 2) else None,
        )

    async def _commission(
        self,
        cp_id: str,
        credentials: tuple[str, str] | None,
        peercert: dict[str, Any] | None,
        tls: bool,
        remote_address: str,
    ) -> Identity:
        """Admit an unknown id as ``pending``; its presented password is kept (hashed)."""
        if credentials is not None and credentials[0] != cp_id:
            self._fail(cp_id, remote_address, "bad_credentials")
            raise Refusal(401, "bad_credentials", "username must be the charge point id", True)
        if certificate_cn(peercert) == cp_id:
            profile = 3
        elif credentials is not None:
            profile = 2 if tls else 1
        else:
            profile = 0
        now = utcnow()
        password_hash = hash_password(credentials[1]) if credentials else None
        try:
            async with self.ctx.db.engine.begin() as conn:
                await conn.execute(
                    CHARGERS.insert().values(
                        id=cp_id,
                        password_hash=password_hash,
                        security_profile=profile,
                        registration_status="pending",
                        enabled=True,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            # Two first connections of one unknown id at once: the other one registered it.
            raise Refusal(409, "commissioning_conflict", "registered concurrently; retry") from None
        return Identity(
            cp_id,
            profile,
            "pending",
            remote_address,
            password_hash if profile in (1, 2) else None,
        )

    def _fail(self, cp_id: str, remote_address: str, reason: str) -> None:
        metrics.AUTH_FAILURES.labels(reason).inc()
        self._limiter.fail(cp_id)
        self._address_limiter.fail(remote_address)
