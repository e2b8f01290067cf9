"""An operator's remote start names an id token the id-token table need not hold; the
charger then authorizes it and starts the transaction with it, and a charger configured to
stop on an invalid id (StopTransactionOnInvalidId, StopTxOnInvalidId) would end the
transaction the operator started if we answered Invalid / Unknown. The token is accepted
from that charger only, for a window and while the transaction started with it runs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201
from sqlalchemy import func, select

from csms.protocol.routing import on
from csms.remote_starts import GRANTS
from csms.state import TRANSACTIONS
from services.db import utcnow
from tests.conftest import Running, charge_point, register


class RemoteStart16(ChargePoint16):  # type: ignore[misc]
    """Answers RemoteStartTransaction with ``answer`` (Accepted unless told otherwise)."""

    answer = "Accepted"

    @on(Action16.remote_start_transaction)
    async def on_remote_start(self, **_: Any) -> result16.RemoteStartTransaction:
        return result16.RemoteStartTransaction(status=self.answer)


class Rejecting16(RemoteStart16):
    answer = "Rejected"


class RemoteStart201(ChargePoint201):  # type: ignore[misc]
    """Answers RequestStartTransaction Accepted and remembers its remoteStartId."""

    remote_start_id: int | None = None

    @on(Action201.request_start_transaction)
    async def on_request_start(
        self, remote_start_id: int, **_: Any
    ) -> result201.RequestStartTransaction:
        self.remote_start_id = remote_start_id
        return result201.RequestStartTransaction(status="Accepted")


BOOT_16 = call16.BootNotification(charge_point_model="M1", charge_point_vendor="VendorX")
BOOT_201 = call201.BootNotification(
    charging_station={"model": "M2", "vendor_name": "VendorY"}, reason="PowerUp"
)


async def remote_start(running: Running, charger_id: str, **body: Any) -> dict[str, Any]:
    r = await running.api.post(f"/api/v1/chargers/{charger_id}/commands/remote-start", json=body)
    assert r.status_code == 200, r.text
    reply: dict[str, Any] = r.json()
    return reply


async def end_window(running: Running, charger_id: str) -> None:
    """What passing ``CHARGEOPS_REMOTE_START_WINDOW`` does to the charger's grants."""
    expired = utcnow() - timedelta(seconds=1)
    async with running.system.db.engine.begin() as conn:
        await conn.execute(
            GRANTS.update().where(GRANTS.c.charger_id == charger_id).values(expires_at=expired)
        )


async def grant_count(running: Running, charger_id: str) -> int:
    async with running.system.db.engine.connect() as conn:
        query = select(func.count()).where(GRANTS.c.charger_id == charger_id)
        return int((await conn.execute(query)).scalar_one())


async def authorize16(cp: Any, id_tag: str) -> str:
    answer = await cp.call(call16.Authorize(id_tag=id_tag))
    status: str = answer.id_tag_info["status"]
    return status


async def test_a_16_remote_start_token_is_accepted_from_that_charger(running: Running) -> None:
    await register(running.api, "CP-RS-16")
    await register(running.api, "CP-RS-16-B")
    r = await running.api.post("/api/v1/id-tokens", json={"token": "CARD-X", "status": "Blocked"})
    assert r.status_code == 201, r.text

    async with (
        charge_point(running, "CP-RS-16", cp_class=RemoteStart16) as cp,
        charge_point(running, "CP-RS-16-B", cp_class=RemoteStart16) as other,
    ):
        assert (await cp.call(BOOT_16)).status == "Accepted"
        assert (await other.call(BOOT_16)).status == "Accepted"
        assert await authorize16(cp, "APP-16") == "Invalid"  # unknown before

        reply = await remote_start(running, "CP-RS-16", id_token="APP-16", connector="1")
        assert reply["status"] == "Accepted", reply
        # AuthorizeRemoteTxRequests=true: the charger asks first, then starts.
        assert await authorize16(cp, "app-16") == "Accepted"  # a CiString
        start = await cp.call(
            call16.StartTransaction(
                connector_id=1, id_tag="APP-16", meter_start=0, timestamp="2026-11-28T09:00:00Z"
            )
        )
        assert start.id_tag_info["status"] == "Accepted"
        # No credential elsewhere: another charger, or another token on this one.
        assert await authorize16(other, "APP-16") == "Invalid"
        assert await authorize16(cp, "APP-17") == "Invalid"

        # After the window, the running transaction keeps it (meter values, the stop).
        await end_window(running, "CP-RS-16")
        assert await authorize16(cp, "APP-16") == "Accepted"
        stop = await cp.call(
            call16.StopTransaction(
                transaction_id=start.transaction_id,
                id_tag="APP-16",
                meter_stop=5000,
                timestamp="2026-11-28T10:00:00Z",
            )
        )
        assert stop.id_tag_info["status"] == "Accepted"
        # Its transaction ended and its window passed: unknown again.
        assert await authorize16(cp, "APP-16") == "Invalid"

        # A remote start never makes a blocked card valid.
        reply = await remote_start(running, "CP-RS-16", id_token="CARD-X", connector="1")
        assert reply["status"] == "Accepted", reply
        assert await authorize16(cp, "CARD-X") == "Blocked"

        # A remote start unused within its window lapses.
        reply = await remote_start(running, "CP-RS-16", id_token="APP-LATE", connector="1")
        assert reply["status"] == "Accepted", reply
        await end_window(running, "CP-RS-16")
        assert await authorize16(cp, "APP-LATE") == "Invalid"


async def test_a_rejected_remote_start_grants_nothing(running: Running) -> None:
    await register(running.api, "CP-RS-REJ")
    async with charge_point(running, "CP-RS-REJ", cp_class=Rejecting16) as cp:
        assert (await cp.call(BOOT_16)).status == "Accepted"
        reply = await remote_start(running, "CP-RS-REJ", id_token="APP-REJ", connector="1")
        assert reply["status"] == "Rejected", reply
        assert await authorize16(cp, "APP-REJ") == "Invalid"
        assert await grant_count(running, "CP-RS-REJ") == 0


def _event(
    event_type: str, seq_no: int, trigger: str, id_token: dict[str, str], **extra: Any
) -> call201.TransactionEvent:
    return call201.TransactionEvent(
        event_type=event_type,
        timestamp=f"2026-11-28T09:0{seq_no}:00Z",
        trigger_reason=trigger,
        seq_no=seq_no,
        transaction_info={"transaction_id": "TX-RS-201", **extra},
        id_token=id_token,
        **({"evse": {"id": 1, "connector_id": 1}} if event_type == "Started" else {}),
    )


async def test_a_201_remote_start_token_is_accepted_from_that_station(running: Running) -> None:
    await register(running.api, "CS-RS-201")
    await register(running.api, "CS-RS-201-B")
    # Stored as an eMAID: the ISO14443 token of the same characters is another credential,
    # unknown to the table, so the remote start is what lets the station use it.
    r = await running.api.post("/api/v1/id-tokens", json={"token": "APP-201", "type": "eMAID"})
    assert r.status_code == 201, r.text
    token = {"id_token": "APP-201", "type": "ISO14443"}

    async with (
        charge_point(running, "CS-RS-201", "2.0.1", cp_class=RemoteStart201) as cs,
        charge_point(running, "CS-RS-201-B", "2.0.1", cp_class=RemoteStart201) as other,
    ):
        assert (await cs.call(BOOT_201)).status == "Accepted"
        assert (await other.call(BOOT_201)).status == "Accepted"
        answer = await cs.call(call201.Authorize(id_token=token))
        assert answer.id_token_info["status"] == "Unknown"  # before the remote start

        reply = await remote_start(running, "CS-RS-201", id_token="APP-201", connector="1")
        assert reply["status"] == "Accepted", reply
        answer = await cs.call(call201.Authorize(id_token=token))  # AuthorizeRemoteStart
        assert answer.id_token_info["status"] == "Accepted"
        # Only the type sent: the same characters as a KeyCode are not what we sent.
        keycode = {"id_token": "APP-201", "type": "KeyCode"}
        answer = await cs.call(call201.Authorize(id_token=keycode))
        assert answer.id_token_info["status"] == "Unknown"
        started = await cs.call(
            _event("Started", 0, "RemoteStart", token, remote_start_id=cs.cp.remote_start_id)
        )
        assert started.id_token_info["status"] == "Accepted"
        answer = await other.call(call201.Authorize(id_token=token))
        assert answer.id_token_info["status"] == "Unknown"

        # Past the window the running transaction keeps it (StopTxOnInvalidId).
        await end_window(running, "CS-RS-201")
        updated = await cs.call(_event("Updated", 1, "MeterValuePeriodic", token))
        assert updated.id_token_info["status"] == "Accepted"
        ended = await cs.call(_event("Ended", 2, "StopAuthorized", token))
        assert ended.id_token_info["status"] == "Accepted"
        answer = await cs.call(call201.Authorize(id_token=token))
        assert answer.id_token_info["status"] == "Unknown"

    async with running.system.db.engine.connect() as conn:
        row = (
            await conn.execute(
                select(TRANSACTIONS.c.id_token, TRANSACTIONS.c.stopped_at).where(
                    TRANSACTIONS.c.charger_id == "CS-RS-201"
                )
            )
        ).one()
    assert row.id_token == "APP-201" and row.stopped_at is not None
