"""Handlers for every message an OCPP 1.6 charge point sends to the central system."""

from __future__ import annotations

from typing import Any

from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action

from csms import faults, remote_starts
from csms.authorization import authorize
from csms.protocol.routing import on
from csms.protocol.timestamps import format_timestamp, parse_timestamp
from csms.session import BOOT_STATUS, OcppSession
from csms.transactions import connector_of, start_transaction_16, stop_transaction
from csms.v16.translate import fault_signature, normalize_status
from services.bus.contracts import (
    ChargerBooted,
    ConnectorRef,
    FaultCleared,
    FaultRaised,
)

#: 1.6 parentIdTag is a CiString20Type; the API allows longer groups (2.0.1's are 36).
PARENT_ID_TAG_MAX = 20


def _id_tag_info(status: str, expires_at: Any = None, group: str | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"status": status}
    if expires_at is not None:
        info["expiryDate"] = format_timestamp(expires_at)
    # Decision: a group too long for parentIdTag is left out (the field is optional; the
    # charger then cannot match by group) rather than cut, which could match another group.
    if group and len(group) <= PARENT_ID_TAG_MAX:
        info["parentIdTag"] = group
    return info


class V16Session(OcppSession, ChargePoint):  # type: ignore[misc]
    ocpp_version = "1.6"
    action_enum = Action
    # OCPP 1.6 Core and profiles, and the Security extension: what a charge point sends
    charge_point_actions = frozenset(
        {
            "Authorize",
            "BootNotification",
            "DataTransfer",
            "DiagnosticsStatusNotification",
            "FirmwareStatusNotification",
            "Heartbeat",
            "LogStatusNotification",
            "MeterValues",
            "SecurityEventNotification",
            "SignCertificate",
            "SignedFirmwareStatusNotification",
            "StartTransaction",
            "StatusNotification",
            "StopTransaction",
        }
    )

    @on(Action.boot_notification)
    async def on_boot_notification(
        self, charge_point_vendor: str, charge_point_model: str, **kwargs: Any
    ) -> call_result.BootNotification:
        rx = self.incoming
        status = BOOT_STATUS[await self.registration_status()]
        repeated = self.booted(status)
        interval = self.ctx.settings.heartbeat_interval
        self.touch_state(
            vendor=charge_point_vendor,
            model=charge_point_model,
            serial_number=kwargs.get("charge_point_serial_number")
            or kwargs.get("charge_box_serial_number"),
            firmware_version=kwargs.get("firmware_version"),
            last_boot_at=rx.received_at,
            last_seen=rx.received_at,
        )
        self.emit(
            ChargerBooted(
                charger_id=self.charger_id,
                received_at=rx.received_at,
                ocpp_version="1.6",
                vendor=charge_point_vendor,
                model=charge_point_model,
                serial_number=kwargs.get("charge_point_serial_number")
                or kwargs.get("charge_box_serial_number"),
                firmware_version=kwargs.get("firmware_version"),
                registration_status=status,
                repeated=repeated,
            )
        )
        return call_result.BootNotification(
            current_time=format_timestamp(rx.received_at), interval=interval, status=status
        )

    @on(Action.heartbeat)
    async def on_heartbeat(self, **_: Any) -> call_result.Heartbeat:
        rx = self.incoming
        return call_result.Heartbeat(current_time=format_timestamp(rx.received_at))

    @on(Action.status_notification)
    async def on_status_notification(
        self, connector_id: int, error_code: str, status: str, **kwargs: Any
    ) -> call_result.StatusNotification:
        rx = self.incoming
        ref = ConnectorRef(connector_id=connector_id)
        charger_time = parse_timestamp(kwargs.get("timestamp"))
        vendor_id = kwargs.get("vendor_id")
        vendor_error_code = kwargs.get("vendor_error_code")
        info = kwargs.get("info")
        if await self.late_report(
            ref,
            normalize_status(status),
            status,
            error_code=error_code,
            charger_time=charger_time,
        ):
            return call_result.StatusNotification()
        now = fault_signature(status, error_code, vendor_error_code)
        event_id = (
            self.fault_event_id(ref, status, error_code, vendor_error_code, charger_time)
            if now is not None
            else None
        )
        previous = self.set_connector(
            ref,
            normalize_status(status),
            status,
            error_code=error_code,
            vendor_id=vendor_id,
            vendor_error_code=vendor_error_code,
            info=info,
            charger_time=charger_time,
            fault_event_id=event_id,
        )
        before = (
            fault_signature(
                previous.raw_status, previous.error_code or "NoError", previous.vendor_error_code
            )
            if previous is not None
            else None
        )
        common = {
            "charger_id": self.charger_id,
            "received_at": rx.received_at,
            "charger_time": charger_time,
            "connector": ref,
            "source": "status_notification",
        }
        if before is not None and before != now:
            self.emit(
                FaultCleared(
                    **common,
                    error_code=before[0],
                    vendor_error_code=before[1],
                    vendor_id=previous.vendor_id if previous else None,
                    # Decision: like 2.0.1, `status` is the connector's new status (ticketing
                    # resolves only on a healthy one); `info` is the cleared fault's, as are
                    # the codes above.
                    info=previous.info if previous else None,
                    status=normalize_status(status),
                    severity=faults.severity(
                        faulted=False,
                        error_code=before[0],
                        vendor_error_code=before[1],
                        vendor_id=previous.vendor_id if previous else None,
                    ),
                )
            )
        if now is not None and event_id is not None:
            # Every report of a fault is an occurrence (ticketing counts repeats); a retry
            # of the same report (new message id) keeps its event id.
            self.emit(
                FaultRaised(
                    **common,
                    event_id=event_id,
                    error_code=now[0],
                    vendor_error_code=now[1],
                    vendor_id=vendor_id,
                    info=info,
                    status=normalize_status(status),
                    severity=faults.severity(
                        faulted=status == "Faulted",
                        error_code=error_code,
                        vendor_error_code=vendor_error_code,
                        vendor_id=vendor_id,
                    ),
                )
            )
        return call_result.StatusNotification()

    @on(Action.authorize)
    async def on_authorize(self, id_tag: str, **_: Any) -> call_result.Authorize:
        verdict = await authorize(self.ctx, id_tag, charger_id=self.charger_id)
        return call_result.Authorize(
            id_tag_info=_id_tag_info(verdict.status, verdict.expires_at, verdict.group_id)
        )

    @on(Action.start_transaction)
    async def on_start_transaction(
        self, connector_id: int, id_tag: str, meter_start: int, timestamp: str, **_: Any
    ) -> call_result.StartTransaction:
        verdict = await authorize(self.ctx, id_tag, charger_id=self.charger_id)
        transaction_id = await start_transaction_16(
            self,
            connector_id=connector_id,
            id_tag=id_tag,
            meter_start=meter_start,
            timestamp=timestamp,
        )
        if verdict.grant_id is not None:
            remote_starts.bind(self, verdict.grant_id, str(transaction_id))
        return call_result.StartTransaction(
            transaction_id=transaction_id,
            id_tag_info=_id_tag_info(verdict.status, verdict.expires_at, verdict.group_id),
        )

    @on(Action.stop_transaction)
    async def on_stop_transaction(
        self, meter_stop: int, timestamp: str, transaction_id: int, **kwargs: Any
    ) -> call_result.StopTransaction:
        id_tag = kwargs.get("id_tag")
        samples = kwargs.get("transaction_data") or []
        if samples:
            # The samples are the transaction's connector's (as in its MeterValues, so a
            # sample sent in both is stored once); "0" only for a transaction we never saw.
            connector = await connector_of(self, str(transaction_id)) or "0"
            for sample in samples:
                self.store_meter_value(connector, str(transaction_id), sample)
        stop_transaction(
            self,
            transaction_id=str(transaction_id),
            meter_stop=float(meter_stop),
            timestamp=timestamp,
            reason=kwargs.get("reason") or "Local",
        )
        if id_tag is None:
            return call_result.StopTransaction()
        verdict = await authorize(self.ctx, id_tag, charger_id=self.charger_id)
        return call_result.StopTransaction(
            id_tag_info=_id_tag_info(verdict.status, verdict.expires_at, verdict.group_id)
        )

    @on(Action.meter_values)
    async def on_meter_values(
        self, connector_id: int, meter_value: list[dict[str, Any]], **kwargs: Any
    ) -> call_result.MeterValues:
        tx = kwargs.get("transaction_id")
        tx_id = str(tx) if tx is not None else None
        self.record_meter_values(ConnectorRef(connector_id=connector_id), tx_id, meter_value)
        return call_result.MeterValues()

    @on(Action.data_transfer)
    async def on_data_transfer(self, **_: Any) -> call_result.DataTransfer:
        # No vendor extensions are registered: the spec's answer is UnknownVendorId.
        return call_result.DataTransfer(status="UnknownVendorId")

    @on(Action.diagnostics_status_notification)
    async def on_diagnostics_status_notification(
        self, status: str, **_: Any
    ) -> call_result.DiagnosticsStatusNotification:
        self.firmware_event("diagnostics", status, None)
        return call_result.DiagnosticsStatusNotification()

    @on(Action.firmware_status_notification)
    async def on_firmware_status_notification(
        self, status: str, **_: Any
    ) -> call_result.FirmwareStatusNotification:
        self.firmware_event("firmware", status, None)
        self.touch_state(firmware_status=status)
        return call_result.FirmwareStatusNotification()

    @on(Action.signed_firmware_status_notification)
    async def on_signed_firmware_status_notification(
        self, status: str, **kwargs: Any
    ) -> call_result.SignedFirmwareStatusNotification:
        self.firmware_event("signed_firmware", status, kwargs.get("request_id"))
        self.touch_state(firmware_status=status)
        return call_result.SignedFirmwareStatusNotification()

    @on(Action.log_status_notification)
    async def on_log_status_notification(
        self, status: str, **kwargs: Any
    ) -> call_result.LogStatusNotification:
        self.firmware_event("log", status, kwargs.get("request_id"))
        return call_result.LogStatusNotification()

    @on(Action.security_event_notification)
    async def on_security_event_notification(
        self, type: str, timestamp: str, **kwargs: Any
    ) -> call_result.SecurityEventNotification:
        self.security_event(type, timestamp, kwargs.get("tech_info"))
        return call_result.SecurityEventNotification()

    @on(Action.sign_certificate)
    async def on_sign_certificate(self, **_: Any) -> call_result.SignCertificate:
        # ChargeOps does not run a certificate authority (yet): refuse explicitly.
        return call_result.SignCertificate(status="Rejected")
