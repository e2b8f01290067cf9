"""Handlers for every message an OCPP 2.0.1 charging station sends to the CSMS."""

from __future__ import annotations

from typing import Any

from ocpp.v201 import ChargePoint, call_result
from ocpp.v201.enums import Action

from csms import faults, problems, remote_starts
from csms.authorization import authorize_201
from csms.protocol.routing import on
from csms.protocol.timestamps import format_timestamp, parse_timestamp
from csms.session import BOOT_STATUS, OcppSession
from csms.transactions import (
    first_seen_201,
    record_token_201,
    start_transaction_201,
    stop_transaction,
)
from csms.v201.translate import availability_state, normalize_status, problem_report
from services.bus.contracts import (
    ChargerBooted,
    ConnectorRef,
    FaultCleared,
    FaultRaised,
    NormalizedStatus,
)


def _id_token_info(status: str, expires_at: Any = None, group: str | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"status": status}
    if expires_at is not None:
        info["cacheExpiryDateTime"] = format_timestamp(expires_at)
    if group:
        info["groupIdToken"] = {"idToken": group, "type": "Central"}
    return info


class V201Session(OcppSession, ChargePoint):  # type: ignore[misc]
    ocpp_version = "2.0.1"
    action_enum = Action
    # OCPP 2.0.1 part 2: the messages a charging station sends to the CSMS
    charge_point_actions = frozenset(
        {
            "Authorize",
            "BootNotification",
            "ClearedChargingLimit",
            "DataTransfer",
            "FirmwareStatusNotification",
            "Get15118EVCertificate",
            "GetCertificateStatus",
            "Heartbeat",
            "LogStatusNotification",
            "MeterValues",
            "NotifyChargingLimit",
            "NotifyCustomerInformation",
            "NotifyDisplayMessages",
            "NotifyEVChargingNeeds",
            "NotifyEVChargingSchedule",
            "NotifyEvent",
            "NotifyMonitoringReport",
            "NotifyReport",
            "PublishFirmwareStatusNotification",
            "ReportChargingProfiles",
            "ReservationStatusUpdate",
            "SecurityEventNotification",
            "SignCertificate",
            "StatusNotification",
            "TransactionEvent",
        }
    )
    # Decision: 2.0.1 only. OCPP 1.6 (4.2) forbids a pending station to send requests
    # unless triggered, but names no CALLERROR for the Central System, and allows
    # transactions before acceptance (4.2.1); a 1.6 station's messages are handled as before.
    refuse_unless_accepted = True

    @on(Action.boot_notification)
    async def on_boot_notification(
        self, charging_station: dict[str, Any], reason: str, **_: Any
    ) -> call_result.BootNotification:
        rx = self.incoming
        status = BOOT_STATUS[await self.registration_status()]
        repeated = self.booted(status) or reason == "Triggered"
        vendor = charging_station["vendor_name"]
        model = charging_station["model"]
        serial = charging_station.get("serial_number")
        firmware = charging_station.get("firmware_version")
        self.touch_state(
            vendor=vendor,
            model=model,
            serial_number=serial,
            firmware_version=firmware,
            last_boot_at=rx.received_at,
            last_seen=rx.received_at,
        )
        self.emit(
            ChargerBooted(
                charger_id=self.charger_id,
                received_at=rx.received_at,
                ocpp_version="2.0.1",
                vendor=vendor,
                model=model,
                serial_number=serial,
                firmware_version=firmware,
                reason=reason,
                registration_status=status,
                repeated=repeated,
            )
        )
        return call_result.BootNotification(
            current_time=format_timestamp(rx.received_at),
            interval=self.ctx.settings.heartbeat_interval,
            status=status,
        )

    @on(Action.heartbeat)
    async def on_heartbeat(self, **_: Any) -> call_result.Heartbeat:
        rx = self.incoming
        return call_result.Heartbeat(current_time=format_timestamp(rx.received_at))

    @on(Action.status_notification)
    async def on_status_notification(
        self, timestamp: str, connector_status: str, evse_id: int, connector_id: int, **_: Any
    ) -> call_result.StatusNotification:
        ref = ConnectorRef(evse_id=evse_id, connector_id=connector_id)
        await self.connector_status(ref, connector_status, timestamp, "StatusNotification")
        return call_result.StatusNotification()

    async def connector_status(
        self, ref: ConnectorRef, connector_status: str, timestamp: str, via: str
    ) -> None:
        """A connector's status, reported by StatusNotification or by NotifyEvent
        (``via``): live state, history, ConnectorStatusChanged, FaultRaised / FaultCleared.

        Decision: a station may report one change both ways; the second report, through
        the other message, of the state the first set is that same change and is dropped
        (a repeated StatusNotification Faulted stays an occurrence, as in 1.6). A
        NotifyEvent AvailabilityState is a state variable (Delta or Periodic): reporting
        the state the connector is in is no change and no occurrence."""
        rx = self.incoming
        charger_time = parse_timestamp(timestamp)
        status = normalize_status(connector_status)
        live = self.connectors.get(ref.key)
        if (
            live is not None
            and live.raw_status == connector_status
            and (via != "StatusNotification" or live.via != via)
        ):
            return
        faulted = status is NormalizedStatus.faulted
        error_code = "Faulted" if faulted else None
        if await self.late_report(
            ref, status, connector_status, error_code=error_code, charger_time=charger_time
        ):
            return
        event_id = (
            self.fault_event_id(ref, connector_status, error_code, None, charger_time)
            if faulted
            else None
        )
        previous = self.set_connector(
            ref,
            status,
            connector_status,
            charger_time=charger_time,
            error_code=error_code,
            fault_event_id=event_id,
            via=via,
        )
        was_faulted = previous is not None and previous.status is NormalizedStatus.faulted
        common = {
            "charger_id": self.charger_id,
            "received_at": rx.received_at,
            "charger_time": charger_time,
            "connector": ref,
            # the same fault whichever message reported the status (one rule, one order)
            "source": "status_notification",
            "error_code": "Faulted",
            "status": status,
        }
        if event_id is not None:
            # Each Faulted report is an occurrence; a retry (same frame) keeps its id.
            self.emit(
                FaultRaised(
                    **common,
                    event_id=event_id,
                    severity=faults.severity(faulted=True, error_code=None),
                )
            )
        elif was_faulted:
            self.emit(
                FaultCleared(**common, severity=faults.severity(faulted=False, error_code=None))
            )

    @on(Action.notify_event)
    async def on_notify_event(
        self, generated_at: str, event_data: list[dict[str, Any]], **_: Any
    ) -> call_result.NotifyEvent:
        for entry in event_data:
            reported = availability_state(entry)
            if reported is not None:
                for ref in self._refs_of(reported.evse_id, reported.connector_id):
                    await self.connector_status(
                        ref, reported.status, reported.timestamp, "NotifyEvent"
                    )
        reports = [r for r in map(problem_report, event_data) if r is not None]
        if reports:
            known = await problems.known_problems(self)
            for report in reports:
                problems.handle(self, report, generated_at, known)
        return call_result.NotifyEvent()

    def _refs_of(self, evse_id: int, connector_id: int | None) -> list[ConnectorRef]:
        """The connectors a NotifyEvent AvailabilityState is about. Decision: an EVSE's state
        is that of each of its connectors known from earlier reports (an EVSE faulted or
        occupied is unusable through any of them); with none known, of the EVSE itself."""
        if connector_id is not None:
            return [ConnectorRef(evse_id=evse_id, connector_id=connector_id)]
        known = [live.ref for live in self.connectors.values() if live.ref.evse_id == evse_id]
        return known or [ConnectorRef(evse_id=evse_id)]

    @on(Action.security_event_notification)
    async def on_security_event_notification(
        self, type: str, timestamp: str, **kwargs: Any
    ) -> call_result.SecurityEventNotification:
        self.security_event(type, timestamp, kwargs.get("tech_info"))
        return call_result.SecurityEventNotification()

    @on(Action.authorize)
    async def on_authorize(self, id_token: dict[str, Any], **_: Any) -> call_result.Authorize:
        verdict = await authorize_201(self.ctx, id_token, self.charger_id)
        return call_result.Authorize(
            id_token_info=_id_token_info(verdict.status, verdict.expires_at, verdict.group_id)
        )

    @on(Action.transaction_event)
    async def on_transaction_event(
        self,
        event_type: str,
        timestamp: str,
        transaction_info: dict[str, Any],
        **kwargs: Any,
    ) -> call_result.TransactionEvent:
        transaction_id = transaction_info["transaction_id"]
        evse = kwargs.get("evse")
        given = (
            ConnectorRef(evse_id=evse["id"], connector_id=evse.get("connector_id"))
            if evse
            else None
        )
        token = kwargs.get("id_token")
        id_token = token.get("id_token") if token is not None else None
        samples = kwargs.get("meter_value") or []
        energy = _energy_wh(samples)
        if event_type == "Started":
            connector = given or ConnectorRef()
            start_transaction_201(
                self,
                transaction_id=transaction_id,
                connector=connector,
                id_token=id_token,
                meter_start_wh=energy,
                timestamp=timestamp,
            )
        else:
            # Later events need not name the EVSE: their samples are the transaction's.
            connector = await first_seen_201(
                self, transaction_id=transaction_id, connector=given, id_token=id_token
            )
            if id_token and kwargs.get("trigger_reason") != "StopAuthorized":
                record_token_201(self, transaction_id=transaction_id, id_token=id_token)
        if samples:
            # A transaction's samples come in its TransactionEvents (2.0.1 has no
            # MeterValues with a transaction): they are MeterValuesReceived, as 1.6's are.
            self.record_meter_values(connector, transaction_id, samples)
        if event_type == "Ended":
            self.transactions_seen.pop(transaction_id, None)
            stop_transaction(
                self,
                transaction_id=transaction_id,
                meter_stop=energy,
                timestamp=timestamp,
                # stoppedReason may be left out only when it is Local (2.0.1 TransactionType); the
                # triggerReason (StopAuthorized, EVCommunicationLost, ...) is no stop reason.
                reason=transaction_info.get("stopped_reason") or "Local",
            )
        if token is None:
            return call_result.TransactionEvent()
        verdict = await authorize_201(self.ctx, token, self.charger_id)
        if verdict.grant_id is not None:
            remote_starts.bind(self, verdict.grant_id, transaction_id)
        return call_result.TransactionEvent(
            id_token_info=_id_token_info(verdict.status, verdict.expires_at, verdict.group_id)
        )

    @on(Action.meter_values)
    async def on_meter_values(
        self, evse_id: int, meter_value: list[dict[str, Any]], **_: Any
    ) -> call_result.MeterValues:
        self.record_meter_values(ConnectorRef(evse_id=evse_id), None, meter_value)
        return call_result.MeterValues()

    @on(Action.firmware_status_notification)
    async def on_firmware_status_notification(
        self, status: str, **kwargs: Any
    ) -> call_result.FirmwareStatusNotification:
        self.firmware_event("firmware", status, kwargs.get("request_id"))
        self.touch_state(firmware_status=status)
        return call_result.FirmwareStatusNotification()

    @on(Action.log_status_notification)
    async def on_log_status_notification(
        self, status: str, **kwargs: Any
    ) -> call_result.LogStatusNotification:
        self.firmware_event("log", status, kwargs.get("request_id"))
        return call_result.LogStatusNotification()

    @on(Action.notify_report)
    async def on_notify_report(
        self, request_id: int, tbc: bool = False, **_: Any
    ) -> call_result.NotifyReport:
        # The report itself is kept in the raw message log; its arrival is the progress
        # of the get-base-report command that asked for it.
        self.command_progress("get-base-report", request_id, "Reporting" if tbc else "Reported")
        return call_result.NotifyReport()

    @on(Action.data_transfer)
    async def on_data_transfer(self, **_: Any) -> call_result.DataTransfer:
        return call_result.DataTransfer(status="UnknownVendorId")


def _energy_wh(samples: list[dict[str, Any]]) -> float | None:
    """The Energy.Active.Import.Register reading (Wh) of the last sample, if any.

    2.0.1's unitOfMeasure is a unit (Wh by default, or kWh) and a power-of-ten
    ``multiplier`` (0 by default): 12.5 Wh with multiplier 3 is 12,500 Wh."""
    for sample in reversed(samples):
        for value in sample.get("sampled_value", []):
            measurand = value.get("measurand", "Energy.Active.Import.Register")
            if measurand == "Energy.Active.Import.Register":
                unit = value.get("unit_of_measure") or {}
                scale = 10.0 ** int(unit.get("multiplier", 0))
                if unit.get("unit") == "kWh":
                    scale *= 1000.0
                return float(value["value"]) * scale
    return None
