"""Dead and silent connections are found and closed; the charger then goes offline."""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

from websockets.asyncio.client import connect

from tests.conftest import Running, SystemFactory, charger_events, eventually


async def _register_open(running: Running, charger_id: str) -> None:
    r = await running.api.post("/api/v1/chargers", json={"id": charger_id, "security_profile": 0})
    assert r.status_code == 201, r.text


async def _charger(running: Running, charger_id: str) -> dict[str, Any]:
    body: dict[str, Any] = (await running.api.get(f"/api/v1/chargers/{charger_id}")).json()
    return body


async def test_zombie_socket_is_closed_by_ping_timeout(system_factory: SystemFactory) -> None:
    async with system_factory(
        ping_interval=0.2, ping_timeout=0.2, close_timeout=0.2, offline_grace=0.1
    ) as running:
        await _register_open(running, "CP-ZOMBIE")
        port = running.system.csms.port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                "GET /ocpp/CP-ZOMBIE HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Protocol: ocpp1.6\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        status = await reader.readline()
        assert b" 101 " in status
        # From here on the peer never answers a ping: a zombie.

        # It was online (an event, not the live state: that may already be offline again
        # if this test process stalls for longer than ping interval + timeout here).
        await eventually(lambda: charger_events(running, "CP-ZOMBIE", "ChargerOnline"))

        async def offline() -> bool:
            return (await _charger(running, "CP-ZOMBIE"))["online"] is False

        await eventually(offline)
        disconnected = await charger_events(running, "CP-ZOMBIE", "ChargerDisconnected")
        # 1011 sent by the server after the ping timeout; 1006 as no close frame came back.
        assert disconnected and disconnected[0]["payload"]["close_code"] in (1006, 1011)
        writer.close()

        # The charger can come back at once.
        async with connect(f"{running.ocpp_url}CP-ZOMBIE", subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
            await ws.send('[2,"1","Heartbeat",{}]')
            reply = await ws.recv()
            assert reply.startswith('[3,"1",')
            assert (await _charger(running, "CP-ZOMBIE"))["online"] is True


async def test_silent_charger_is_disconnected_and_offline_since_last_message(
    system_factory: SystemFactory,
) -> None:
    async with system_factory(heartbeat_interval=1, offline_grace=0.2) as running:
        await _register_open(running, "CP-SILENT")
        async with connect(f"{running.ocpp_url}CP-SILENT", subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
            await ws.send('[2,"1","Heartbeat",{}]')
            await ws.recv()
            # Pings are answered (the socket is alive) but no OCPP message follows.
            await ws.wait_closed()
            assert ws.close_code == 1000
        [offline] = await eventually(lambda: charger_events(running, "CP-SILENT", "ChargerOffline"))
        assert offline["payload"]["reason"] == "heartbeat_timeout"
        body = await _charger(running, "CP-SILENT")
        assert body["online"] is False
        history = (
            await running.api.get(
                "/api/v1/chargers/CP-SILENT/status-history", params={"kind": "connectivity"}
            )
        ).json()
        assert [h["status"] for h in history] == ["online", "offline"]
        assert history[1]["started_at"] == body["last_seen"]
