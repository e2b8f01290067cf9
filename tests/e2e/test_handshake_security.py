"""The OCPP handshake: who gets a socket, and the exact HTTP status of everyone who does not.

Real websockets clients (and the ``ocpp`` library's charge points where a session is
needed) against the whole system; refusals are read from the client's ``InvalidStatus``
and from the Prometheus counters an operator would alert on.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import ssl
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from ocpp.v16 import ChargePoint as Cp16
from ocpp.v16 import call as call16
from ocpp.v201 import ChargePoint as Cp201
from ocpp.v201 import call as call201
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidMessage, InvalidStatus
from websockets.typing import Subprotocol

from csms.auth import ADDRESS_LIMIT_FACTOR
from tests.certs import Authority, CertFiles, client_context
from tests.conftest import (
    PASSWORD,
    Running,
    SystemFactory,
    basic,
    charge_point,
    eventually,
    register,
)

REFUSED = "chargeops_ocpp_handshakes_refused_total"
AUTH_FAILURES = "chargeops_ocpp_auth_failures_total"
OTHER_PASSWORD = "another-password-0123"


# ------------------------------------------------------------------ helpers
async def counter(api: httpx.AsyncClient, name: str, reason: str) -> float:
    """Current value of ``name{reason=...}`` on /metrics (0 when never incremented)."""
    response = await api.get("/metrics")
    assert response.status_code == 200, response.text
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("reason") == reason:
                return float(sample.value)
    return 0.0


async def counter_total(api: httpx.AsyncClient, name: str) -> float:
    """Sum of ``name`` over all its labels."""
    response = await api.get("/metrics")
    assert response.status_code == 200, response.text
    return sum(
        float(sample.value)
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == name
    )


class Counters:
    """Snapshot of the refusal counters, to assert on what one step added."""

    def __init__(self, api: httpx.AsyncClient) -> None:
        self.api = api
        self.before: dict[tuple[str, str], float] = {}

    async def snapshot(self, *reasons: str) -> None:
        for reason in reasons:
            for name in (REFUSED, AUTH_FAILURES):
                self.before[(name, reason)] = await counter(self.api, name, reason)

    async def added(self, name: str, reason: str) -> float:
        return await counter(self.api, name, reason) - self.before[(name, reason)]


def subprotocol_list(offered: Sequence[str] | None) -> list[Subprotocol] | None:
    return None if offered is None else [Subprotocol(p) for p in offered]


async def open_ws(
    url: str,
    *,
    offered: Sequence[str] | None = ("ocpp1.6",),
    headers: dict[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    source: str | None = None,
) -> ClientConnection:
    """``source``: the local address to connect from (any 127.x.y.z reaches the server)."""
    return await connect(
        url,
        subprotocols=subprotocol_list(offered),
        additional_headers=headers or {},
        ssl=ssl_context,
        open_timeout=10,
        **({"local_addr": (source, 0)} if source else {}),
    )


async def refused(
    url: str,
    *,
    offered: Sequence[str] | None = ("ocpp1.6",),
    headers: dict[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    source: str | None = None,
) -> InvalidStatus:
    """Attempt a handshake that must be refused with an HTTP status; return the refusal."""
    with pytest.raises(InvalidStatus) as info:
        ws = await open_ws(
            url, offered=offered, headers=headers, ssl_context=ssl_context, source=source
        )
        await ws.close()
    return info.value


def status(refusal: InvalidStatus) -> int:
    return int(refusal.response.status_code)


def auth(charger_id: str, password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": basic(charger_id, password)}


async def charger(api: httpx.AsyncClient, charger_id: str) -> dict[str, Any]:
    response = await api.get(f"/api/v1/chargers/{charger_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def events(api: httpx.AsyncClient, charger_id: str, type_: str) -> list[dict[str, Any]]:
    response = await api.get(
        f"/api/v1/chargers/{charger_id}/events", params={"type": type_, "limit": 1000}
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


@contextlib.asynccontextmanager
async def session(ws: ClientConnection, charger_id: str, version: str) -> AsyncIterator[Any]:
    """Drive an already open socket with the ``ocpp`` library's charge point."""
    cp = (Cp16 if version == "1.6" else Cp201)(charger_id, ws, response_timeout=10)
    task = asyncio.create_task(cp.start())
    try:
        yield cp
    finally:
        await ws.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def boot(cp: Any) -> str:
    """Send a BootNotification of the charge point's version; return its status."""
    if isinstance(cp, Cp16):
        result = await cp.call(
            call16.BootNotification(charge_point_model="M1", charge_point_vendor="VendorX")
        )
    else:
        result = await cp.call(
            call201.BootNotification(
                charging_station={"model": "M2", "vendor_name": "VendorY"}, reason="PowerUp"
            )
        )
    return str(result.status)


# ------------------------------------------------------------------ identity and subprotocol
async def test_unknown_charge_point_id_is_404(running: Running) -> None:
    counters = Counters(running.api)
    await counters.snapshot("unknown_charger")

    refusal = await refused(running.ocpp_url + "CP-NOBODY", headers=auth("CP-NOBODY"))

    assert status(refusal) == 404
    assert await counters.added(REFUSED, "unknown_charger") == 1
    assert await counters.added(AUTH_FAILURES, "unknown_charger") == 1
    missing = await running.api.get("/api/v1/chargers/CP-NOBODY")
    assert missing.status_code == 404  # nothing was commissioned behind the operator's back


async def test_invalid_ids_are_400_and_percent_encoding_is_decoded(running: Running) -> None:
    longest = "L" * 48
    await register(running.api, longest)
    await register(running.api, "CP-1")
    counters = Counters(running.api)
    await counters.snapshot("invalid_id")

    invalid = [
        "L" * 49,  # one over the 48 characters of an OCPP identifierString
        "CP%201",  # space
        "CP%2F1",  # a slash smuggled in percent-encoded
        "CP%231",  # '#'
        "CP%C3%A9",  # non-ASCII
        "CP%251",  # '%' itself
        "",  # no id at all
    ]
    for raw in invalid:
        refusal = await refused(running.ocpp_url + raw, headers=auth(raw or "x"))
        assert status(refusal) == 400, raw
    assert await counters.added(REFUSED, "invalid_id") == len(invalid)

    # 48 characters is the limit, not over it.
    ws = await open_ws(running.ocpp_url + longest, headers=auth(longest))
    async with session(ws, longest, "1.6") as cp:
        assert await boot(cp) == "Accepted"

    # "%2D" is "-": the decoded id is the identity, for the password check and the registry.
    ws = await open_ws(running.ocpp_url + "CP%2D1", headers=auth("CP-1"))
    async with session(ws, "CP-1", "1.6") as cp:
        assert await boot(cp) == "Accepted"
        state = await charger(running.api, "CP-1")
        assert state["online"] is True
        assert state["boot"]["vendor"] == "VendorX"


async def test_missing_or_unsupported_subprotocol_is_400(running: Running) -> None:
    await register(running.api, "CP-SUB")
    counters = Counters(running.api)
    await counters.snapshot("no_subprotocol")
    url = running.ocpp_url + "CP-SUB"

    for offered in (None, ["ocpp2.1"], ["foo"], ["ocpp1.5", "ocpp2.0"]):
        refusal = await refused(url, offered=offered, headers=auth("CP-SUB"))
        assert status(refusal) == 400, offered
    assert await counters.added(REFUSED, "no_subprotocol") == 4

    # The same charger with the same credentials is fine once it offers OCPP.
    ws = await open_ws(url, offered=["ocpp1.6"], headers=auth("CP-SUB"))
    await ws.close()


async def test_subprotocol_offers_on_several_header_lines_are_all_read(running: Running) -> None:
    """A raw handshake whose Sec-WebSocket-Protocol comes as two lines (``ocpp1.6``, then
    ``foo``): ocpp1.6 was offered, so the upgrade succeeds with it."""
    await register(running.api, "CP-LINES")
    reader, writer = await asyncio.open_connection("127.0.0.1", running.system.csms.port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            "GET /ocpp/CP-LINES HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{running.system.csms.port}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: ocpp1.6\r\n"
            "Sec-WebSocket-Protocol: foo\r\n"
            f"Authorization: {basic('CP-LINES', PASSWORD)}\r\n"
            "\r\n"
        )
        writer.write(request.encode())
        await writer.drain()
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
    finally:
        writer.close()
    lines = head.split("\r\n")
    assert lines[0].startswith("HTTP/1.1 101"), head
    assert "sec-websocket-protocol: ocpp1.6" in [line.lower() for line in lines], head


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (["ocpp1.6"], "ocpp1.6"),
        (["ocpp2.0.1"], "ocpp2.0.1"),
        (["ocpp1.6", "ocpp2.0.1"], "ocpp1.6"),
        (["ocpp2.0.1", "ocpp1.6"], "ocpp2.0.1"),
        (["ocpp2.1", "ocpp1.6", "ocpp2.0.1"], "ocpp1.6"),
    ],
)
async def test_subprotocol_is_the_clients_first_supported_choice(
    running: Running, offered: list[str], chosen: str
) -> None:
    await register(running.api, "CP-PROTO")

    ws = await open_ws(running.ocpp_url + "CP-PROTO", offered=offered, headers=auth("CP-PROTO"))
    assert ws.subprotocol == chosen
    version = chosen.removeprefix("ocpp")
    # The server really speaks the negotiated version: a boot of that version is understood.
    async with session(ws, "CP-PROTO", version) as cp:
        assert await boot(cp) == "Accepted"
        assert (await charger(running.api, "CP-PROTO"))["ocpp_version"] == version


# ------------------------------------------------------------------ credentials and state
async def test_bad_or_missing_basic_credentials_are_401_with_a_challenge(
    running: Running,
) -> None:
    await register(running.api, "CP-AUTH")
    await register(running.api, "CP-NEIGHBOUR")
    counters = Counters(running.api)
    await counters.snapshot("bad_credentials", "credentials_missing")
    url = running.ocpp_url + "CP-AUTH"

    wrong_password = await refused(url, headers=auth("CP-AUTH", OTHER_PASSWORD))
    # Another station's id with that station's correct password is not this station.
    wrong_user = await refused(url, headers=auth("CP-NEIGHBOUR", PASSWORD))
    no_credentials = await refused(url, headers={})
    not_basic = await refused(url, headers={"Authorization": "Bearer " + PASSWORD})
    garbage = await refused(url, headers={"Authorization": "Basic !!!not-base64!!!"})

    for refusal in (wrong_password, wrong_user, no_credentials, not_basic, garbage):
        assert status(refusal) == 401
        assert refusal.response.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert await counters.added(AUTH_FAILURES, "bad_credentials") == 2
    assert await counters.added(REFUSED, "bad_credentials") == 2
    assert await counters.added(AUTH_FAILURES, "credentials_missing") == 3
    assert await counters.added(REFUSED, "credentials_missing") == 3
    assert (await charger(running.api, "CP-AUTH"))["online"] is False

    # The right credentials still work: nothing above locked the charger out.
    async with charge_point(running, "CP-AUTH") as cp:
        assert await boot(cp.cp) == "Accepted"


async def test_an_id_with_colons_logs_in_with_basic_auth(running: Running) -> None:
    """':' is allowed in an id, and the username of HTTP Basic is the id: the password is
    what follows the id, not what follows the first colon."""
    cid = "SITE:7:CP-1"
    await register(running.api, cid)
    url = running.ocpp_url + cid
    ws = await open_ws(url, headers=auth(cid))
    async with session(ws, cid, "1.6") as cp:
        assert await boot(cp) == "Accepted"
    for header in (auth(cid, OTHER_PASSWORD), auth(cid, ""), auth("SITE:7", PASSWORD)):
        assert status(await refused(url, headers=header)) == 401, header


async def test_disabled_charger_is_403_until_enabled_again(running: Running) -> None:
    await register(running.api, "CP-OFF")
    patched = await running.api.patch("/api/v1/chargers/CP-OFF", json={"enabled": False})
    assert patched.status_code == 200, patched.text
    counters = Counters(running.api)
    await counters.snapshot("disabled")

    refusal = await refused(running.ocpp_url + "CP-OFF", headers=auth("CP-OFF"))

    assert status(refusal) == 403
    assert await counters.added(REFUSED, "disabled") == 1

    patched = await running.api.patch("/api/v1/chargers/CP-OFF", json={"enabled": True})
    assert patched.status_code == 200, patched.text
    async with charge_point(running, "CP-OFF") as cp:
        assert await boot(cp.cp) == "Accepted"


async def test_tls_profiles_over_plain_websocket_are_403(running: Running) -> None:
    await register(running.api, "CP-P2", security_profile=2)
    await register(running.api, "CP-P3", security_profile=3)
    counters = Counters(running.api)
    await counters.snapshot("tls_required")

    # Correct credentials do not make up for a missing TLS layer.
    p2 = await refused(running.ocpp_url + "CP-P2", headers=auth("CP-P2"))
    p3 = await refused(running.ocpp_url + "CP-P3", headers=auth("CP-P3"))

    assert status(p2) == 403
    assert status(p3) == 403
    assert await counters.added(REFUSED, "tls_required") == 2
    assert await counters.added(AUTH_FAILURES, "tls_required") == 2


async def test_repeated_failures_are_rate_limited_with_429(
    system_factory: SystemFactory,
) -> None:
    async with system_factory(auth_failures_per_minute=3) as running:
        await register(running.api, "CP-BRUTE")
        url = running.ocpp_url + "CP-BRUTE"
        # Before any failure the right password is admitted.
        ws = await open_ws(url, headers=auth("CP-BRUTE"))
        await ws.close()
        counters = Counters(running.api)
        await counters.snapshot("rate_limited", "bad_credentials")

        for _ in range(3):
            assert status(await refused(url, headers=auth("CP-BRUTE", OTHER_PASSWORD))) == 401
        # Now even the right password is turned away: the password is not being checked.
        limited = await refused(url, headers=auth("CP-BRUTE"))

        assert status(limited) == 429
        assert await counters.added(REFUSED, "rate_limited") == 1
        assert await counters.added(AUTH_FAILURES, "bad_credentials") == 3  # not counted again


async def test_failures_spread_over_many_ids_are_rate_limited_per_source_address(
    system_factory: SystemFactory,
) -> None:
    # Per id 2 a minute; per address ADDRESS_LIMIT_FACTOR times that (a site behind one NAT).
    async with system_factory(auth_failures_per_minute=2) as running:
        await register(running.api, "CP-NEIGHBOUR")
        counters = Counters(running.api)
        await counters.snapshot("rate_limited", "unknown_charger")
        scanner, site = "127.0.0.1", "127.0.0.2"
        # A scanner tries one guessed id after another, once each: no id reaches its limit.
        for n in range(2 * ADDRESS_LIMIT_FACTOR):
            guess = await refused(running.ocpp_url + f"GUESS-{n}", source=scanner)
            assert status(guess) == 404
        # Its address has: even a known charger with the right password is turned away there
        # (the password is not checked), ...
        url = running.ocpp_url + "CP-NEIGHBOUR"
        limited = await refused(url, headers=auth("CP-NEIGHBOUR"), source=scanner)
        assert status(limited) == 429
        assert await counters.added(REFUSED, "rate_limited") == 1
        assert await counters.added(AUTH_FAILURES, "unknown_charger") == 2 * ADDRESS_LIMIT_FACTOR
        # ... while the same charger from another address is admitted: the limit is the
        # address's, not the id's.
        ws = await open_ws(url, headers=auth("CP-NEIGHBOUR"), source=site)
        await ws.close()


async def test_parallel_failures_cannot_outrun_the_limits(system_factory: SystemFactory) -> None:
    """Attempts in flight count against the limits: parallel wrong passwords (one id) and
    parallel guessed ids (one address) are evaluated at most ``limit`` times, the rest 429."""
    limit = 3
    async with system_factory(auth_failures_per_minute=limit) as running:
        await register(running.api, "CP-RUSH")
        url = running.ocpp_url + "CP-RUSH"
        attempts = await asyncio.gather(
            *(
                refused(url, headers=auth("CP-RUSH", OTHER_PASSWORD), source="127.0.0.3")
                for _ in range(4 * limit)
            )
        )
        statuses = sorted(status(a) for a in attempts)
        assert statuses == [401] * limit + [429] * (3 * limit)

        # An address without failures may have a burst in flight (a site's chargers all
        # reconnecting after an outage) ...
        address_limit = limit * ADDRESS_LIMIT_FACTOR
        site = [f"RUSH-OK-{n}" for n in range(2 * address_limit)]
        for charger_id in site:
            r = await running.api.post(
                "/api/v1/chargers", json={"id": charger_id, "security_profile": 0}
            )
            assert r.status_code == 201, r.text
        burst = await asyncio.gather(
            *(open_ws(running.ocpp_url + cid, source="127.0.0.5") for cid in site)
        )
        await asyncio.gather(*(ws.close() for ws in burst))
        # ... but once it has failed, attempts in flight count against its limit.
        assert status(await refused(running.ocpp_url + "RUSH-FIRST", source="127.0.0.4")) == 404
        guesses = await asyncio.gather(
            *(
                refused(running.ocpp_url + f"RUSH-{n}", source="127.0.0.4")
                for n in range(2 * address_limit)
            )
        )
        statuses = sorted(status(g) for g in guesses)
        assert statuses == [404] * (address_limit - 1) + [429] * (address_limit + 1)


# ------------------------------------------------------------------ TLS (profiles 2 and 3)
class Pki:
    def __init__(self, directory: Path) -> None:
        self.ca = Authority.create(directory, "chargeops")
        self.server = self.ca.server()
        self.rogue_ca = Authority.create(directory, "rogue")

    def settings(self) -> dict[str, Any]:
        return {
            "tls_cert": self.server.cert,
            "tls_key": self.server.key,
            "tls_ca": self.ca.cert_path,
        }

    def context(self, client: CertFiles | None = None) -> ssl.SSLContext:
        return client_context(self.ca.cert_path, client)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


def wss_url(running: Running, charger_id: str) -> str:
    return f"wss://127.0.0.1:{running.system.csms.port}/ocpp/{charger_id}"


async def test_profile_2_basic_auth_over_tls(system_factory: SystemFactory, pki: Pki) -> None:
    async with system_factory(**pki.settings()) as running:
        await register(running.api, "CP-TLS2", security_profile=2)
        url = wss_url(running, "CP-TLS2")

        ws = await open_ws(url, headers=auth("CP-TLS2"), ssl_context=pki.context())
        async with session(ws, "CP-TLS2", "1.6") as cp:
            assert await boot(cp) == "Accepted"
            state = await charger(running.api, "CP-TLS2")
            assert state["online"] is True

        # TLS is the transport, not the credential: the password is still checked.
        wrong = await refused(
            url, headers=auth("CP-TLS2", OTHER_PASSWORD), ssl_context=pki.context()
        )
        assert status(wrong) == 401
        assert status(await refused(url, headers={}, ssl_context=pki.context())) == 401


async def test_profile_3_client_certificate_must_name_the_station(
    system_factory: SystemFactory, pki: Pki
) -> None:
    own = pki.ca.client("CP-TLS3")
    neighbour = pki.ca.client("CP-TLS3-B")
    rogue = pki.rogue_ca.client("CP-TLS3")
    async with system_factory(**pki.settings()) as running:
        await register(running.api, "CP-TLS3", security_profile=3)
        await register(running.api, "CP-TLS3-B", security_profile=3)
        counters = Counters(running.api)
        await counters.snapshot("certificate_cn_mismatch", "certificate_missing")
        url = wss_url(running, "CP-TLS3")

        # A valid certificate of the same CA, issued to another station: impersonation.
        mismatch = await refused(url, ssl_context=pki.context(neighbour))
        assert status(mismatch) == 401
        assert await counters.added(REFUSED, "certificate_cn_mismatch") == 1
        assert await counters.added(AUTH_FAILURES, "certificate_cn_mismatch") == 1

        # Basic credentials are no substitute for the certificate on profile 3.
        missing = await refused(url, headers=auth("CP-TLS3"), ssl_context=pki.context())
        assert status(missing) == 401
        assert await counters.added(REFUSED, "certificate_missing") == 1

        # A certificate with the right CN from a CA the server does not trust: the TLS
        # handshake itself fails, so no HTTP request is ever read and there is no socket.
        # Under TLS 1.2 the client certificate is verified inside the handshake, which the
        # server aborts; under TLS 1.3 it drops the connection before any HTTP response.
        refusals_before = await counter_total(running.api, REFUSED)
        tls12 = pki.context(rogue)
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await open_ws(url, ssl_context=tls12)
        with pytest.raises(InvalidMessage) as dropped:
            await open_ws(url, ssl_context=pki.context(rogue))
        assert isinstance(dropped.value.__cause__, EOFError | OSError)
        assert await counter_total(running.api, REFUSED) == refusals_before
        assert (await charger(running.api, "CP-TLS3"))["online"] is False

        # The station's own certificate: admitted, and the session works.
        ws = await open_ws(url, ssl_context=pki.context(own))
        async with session(ws, "CP-TLS3", "1.6") as cp:
            assert await boot(cp) == "Accepted"
            state = await charger(running.api, "CP-TLS3")
            assert state["online"] is True
            assert state["security_profile"] == 3


# ------------------------------------------------------------------ commissioning
@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_unknown_charger_is_commissioned_as_pending_then_accepted(
    system_factory: SystemFactory, version: str
) -> None:
    async with system_factory(allow_unknown_chargers=True) as running:
        url = running.ocpp_url + "CP-NEW"
        subprotocol = "ocpp" + version

        ws = await open_ws(url, offered=[subprotocol], headers=auth("CP-NEW"))
        async with session(ws, "CP-NEW", version) as cp:
            assert await boot(cp) == "Pending"
            state = await charger(running.api, "CP-NEW")
            assert state["registration_status"] == "pending"
            assert state["security_profile"] == 1  # it presented Basic credentials over ws

            patched = await running.api.patch(
                "/api/v1/chargers/CP-NEW", json={"registration_status": "accepted"}
            )
            assert patched.status_code == 200, patched.text
            # A pending station retries BootNotification on the same connection.
            assert await boot(cp) == "Accepted"

        # Trust on first use: the password it presented is now its password.
        impostor = await refused(url, offered=[subprotocol], headers=auth("CP-NEW", OTHER_PASSWORD))
        assert status(impostor) == 401
        assert (await charger(running.api, "CP-NEW"))["registration_status"] == "accepted"

        ws = await open_ws(url, offered=[subprotocol], headers=auth("CP-NEW"))
        async with session(ws, "CP-NEW", version) as cp:
            assert await boot(cp) == "Accepted"


async def test_commissioning_refuses_a_username_other_than_the_id(
    system_factory: SystemFactory,
) -> None:
    async with system_factory(allow_unknown_chargers=True) as running:
        refusal = await refused(running.ocpp_url + "CP-NEW2", headers=auth("CP-ELSE"))

        assert status(refusal) == 401
        missing = await running.api.get("/api/v1/chargers/CP-NEW2")
        assert missing.status_code == 404


# ------------------------------------------------------------------ reconnect
async def test_reconnect_replaces_the_old_connection_without_going_offline(
    running: Running,
) -> None:
    await register(running.api, "CP-TWICE")
    grace = running.system.settings.offline_grace

    async with charge_point(running, "CP-TWICE") as first:
        assert await boot(first.cp) == "Accepted"
        async with charge_point(running, "CP-TWICE") as second:
            # The server closes the first socket as soon as the second is admitted.
            await asyncio.wait_for(first.ws.wait_closed(), timeout=10)
            assert first.ws.close_code == 1000
            assert await boot(second.cp) == "Accepted"

            async def old_disconnect_recorded() -> bool:
                return len(await events(running.api, "CP-TWICE", "ChargerDisconnected")) == 1

            await eventually(old_disconnect_recorded)
            # Give a (wrong) offline transition more than the grace period to appear.
            await asyncio.sleep(grace * 3)

            state = await charger(running.api, "CP-TWICE")
            assert state["online"] is True
            assert state["connected"] is True
            assert await events(running.api, "CP-TWICE", "ChargerOffline") == []
            assert len(await events(running.api, "CP-TWICE", "ChargerOnline")) == 1
            assert len(await events(running.api, "CP-TWICE", "ChargerConnected")) == 2
            # The surviving connection is the one in use.
            await second.call(call16.Heartbeat())

    # The offline detection was live all along: the last socket closing does go offline.
    async def offline_once() -> bool:
        return len(await events(running.api, "CP-TWICE", "ChargerOffline")) == 1

    await eventually(offline_once)


# ------------------------------------------------------------------ shutdown
async def test_shutdown_closes_a_charger_admitted_a_moment_before(
    system_factory: SystemFactory,
) -> None:
    """A socket whose session is still starting (not yet in presence) when the server
    stops is closed with 1001 too, instead of keeping the shutdown waiting for it."""
    system = system_factory()
    running = await system.__aenter__()
    await register(running.api, "CP-LATE")
    ws = await open_ws(running.ocpp_url + "CP-LATE", headers=auth("CP-LATE"))

    # Stop right away. The bound turns a hang into a failure; it measures nothing.
    stop = asyncio.create_task(system.__aexit__(None, None, None))
    done, _ = await asyncio.wait({stop}, timeout=20)
    if not done:
        await ws.close()  # let the stuck shutdown finish before failing
        await stop
        pytest.fail("shutdown waited for a connection it never closed")
    await stop
    await asyncio.wait_for(ws.wait_closed(), timeout=10)
    assert ws.close_code == 1001
