"""The OCPP WebSocket server: ``ws(s)://HOST:PORT/ocpp/{charge_point_id}``.

Decisions: permessage-deflate is off (57 KB per connection for frames of a few hundred
bytes); frames above ``max_frame_bytes`` are refused by websockets from the frame
header, without buffering them, and the connection is closed with 1009; dead peers are
found with WebSocket ping/pong and closed.
"""

from __future__ import annotations

import asyncio
import http
import logging
import ssl
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from csms.auth import SUBPROTOCOLS, Authenticator, Refusal
from csms.context import CsmsContext
from csms.presence import Presence
from csms.session import OcppSession
from csms.v16.handlers import V16Session
from csms.v201.handlers import V201Session
from services.observability import metrics
from services.settings import ConfigError, PortUnavailable

log = logging.getLogger(__name__)

SESSION_CLASSES: dict[str, type[OcppSession]] = {"ocpp1.6": V16Session, "ocpp2.0.1": V201Session}


def tls_context(ctx: CsmsContext) -> ssl.SSLContext | None:
    s = ctx.settings
    if s.tls_cert is None or s.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(s.tls_cert), str(s.tls_key))
    except ssl.SSLError as exc:
        raise ConfigError(
            f"CHARGEOPS_TLS_CERT / CHARGEOPS_TLS_KEY: cannot load {s.tls_cert} with key "
            f"{s.tls_key}: {exc.reason or exc}"
        ) from None
    if s.tls_ca is not None:
        try:
            context.load_verify_locations(str(s.tls_ca))
        except ssl.SSLError as exc:
            raise ConfigError(
                f"CHARGEOPS_TLS_CA: cannot load {s.tls_ca}: {exc.reason or exc}"
            ) from None
        # Optional at the TLS layer: profile 2 chargers present no certificate. Profile 3
        # chargers must, and their CN is checked against the id at the handshake.
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


class OcppServer:
    def __init__(self, ctx: CsmsContext, presence: Presence) -> None:
        self.ctx = ctx
        self.presence = presence
        self.authenticator = Authenticator(ctx)
        self._ssl = tls_context(ctx)
        self._server: Server | None = None
        self.port: int | None = None

    async def start(self) -> None:
        s = self.ctx.settings
        try:
            self._server = await self._listen()
        except OSError as exc:
            raise PortUnavailable.of("OCPP", s.ocpp_host, s.ocpp_port, exc) from None
        sock = next(iter(self._server.sockets))
        self.port = int(sock.getsockname()[1])
        log.info(
            "OCPP server listening on %s:%d (%s)",
            s.ocpp_host,
            self.port,
            "wss" if self._ssl else "ws",
        )

    async def _listen(self) -> Server:
        s = self.ctx.settings
        return await serve(
            self._handle,
            s.ocpp_host,
            s.ocpp_port,
            subprotocols=list(SUBPROTOCOLS),  # type: ignore[arg-type]
            select_subprotocol=_prefer_client_order,
            process_request=self._process_request,
            max_size=s.max_frame_bytes,
            ping_interval=s.ping_interval,
            ping_timeout=s.ping_timeout,
            close_timeout=s.close_timeout,
            compression=None,
            ssl=self._ssl,
            server_header="ChargeOps",
        )

    async def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close(close_connections=False)

    async def close(self) -> None:
        await self.presence.close_all(1001, "server shutting down")
        if self._server is not None:
            # websockets' Server.close() is idempotent: after stop_accepting() the call
            # below closes nothing. A socket admitted whose session is not in presence yet
            # (still loading its state) must be closed here, or wait_closed() waits forever.
            await asyncio.gather(
                *(c.close(1001, "server shutting down") for c in self._server.connections),
                return_exceptions=True,
            )
            self._server.close(close_connections=True)
            await self._server.wait_closed()
            self._server = None

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        headers = {k.lower(): v for k, v in request.headers.raw_items()}
        # Sec-WebSocket-Protocol may come as several header lines: all of them are offers
        # (websockets' own negotiation reads them all too).
        offers = request.headers.get_all("Sec-WebSocket-Protocol")
        if offers:
            headers["sec-websocket-protocol"] = ", ".join(offers)
        peer = connection.remote_address
        remote = str(peer[0]) if peer else "unknown"
        ssl_object = connection.transport.get_extra_info("ssl_object")
        peercert = ssl_object.getpeercert() if ssl_object is not None else None
        try:
            identity = await self.authenticator.admit(
                request.path, headers, remote, peercert, tls=ssl_object is not None
            )
        except Refusal as refusal:
            log.info("handshake from %s for %s refused: %s", remote, request.path, refusal.reason)
            response = connection.respond(http.HTTPStatus(refusal.status), refusal.message + "\n")
            if refusal.challenge:
                response.headers["WWW-Authenticate"] = 'Basic realm="ChargeOps OCPP"'
            return response
        connection.chargeops_identity = identity  # type: ignore[attr-defined]
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        identity = connection.chargeops_identity  # type: ignore[attr-defined]
        version = connection.subprotocol or ""
        session = SESSION_CLASSES[version](identity, connection, self.ctx)
        label = session.ocpp_version
        metrics.CHARGERS_CONNECTED.labels(label).inc()
        try:
            await self.presence.connected(session)
            await session.run()
        except Exception:
            log.exception("charger %s: session failed", identity.charger_id)
        finally:
            metrics.CHARGERS_CONNECTED.labels(label).dec()
            await self.presence.disconnected(session)


def _prefer_client_order(_connection: ServerConnection, offered: Any) -> Any:
    for protocol in offered:
        if protocol in SUBPROTOCOLS:
            return protocol
    return None


__all__ = ["OcppServer", "Headers"]
