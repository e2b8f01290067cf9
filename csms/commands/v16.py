"""Commands as OCPP 1.6 calls (``ocpp.v16.call``): one translator per command."""

from __future__ import annotations

import orjson
from ocpp.v16 import call

from csms.commands.translation import CallContext, NotApplicable, Translator, timestamp
from services.commands.contracts import (
    ChangeAvailabilityParams,
    ClearCacheParams,
    CommandName,
    DataTransferParams,
    GetBaseReportParams,
    GetConfigurationParams,
    GetDiagnosticsParams,
    RemoteStartParams,
    RemoteStopParams,
    ResetParams,
    SetConfigurationParams,
    TriggerMessageParams,
    UnlockConnectorParams,
    UpdateFirmwareParams,
)

ID_TAG_MAX = 20


def _connector(key: str) -> int:
    if "/" in key:
        raise NotApplicable(
            f"connector {key!r} is a 2.0.1 EVSE/connector key; OCPP 1.6 connectors are numbers"
        )
    return int(key)


def _optional_connector(key: str | None) -> int | None:
    return None if key is None or key == "0" else _connector(key)


def reset(p: ResetParams, _: CallContext) -> call.Reset:
    return call.Reset(type="Hard" if p.type == "hard" else "Soft")


def unlock_connector(p: UnlockConnectorParams, _: CallContext) -> call.UnlockConnector:
    return call.UnlockConnector(connector_id=_connector(p.connector))


def change_availability(p: ChangeAvailabilityParams, _: CallContext) -> call.ChangeAvailability:
    return call.ChangeAvailability(
        connector_id=_connector(p.connector), type="Operative" if p.operative else "Inoperative"
    )


def trigger_message(p: TriggerMessageParams, _: CallContext) -> call.TriggerMessage:
    if p.message == "TransactionEvent":
        raise NotApplicable("TransactionEvent is an OCPP 2.0.1 message")
    message = "DiagnosticsStatusNotification" if p.message == "LogStatusNotification" else p.message
    return call.TriggerMessage(
        requested_message=message, connector_id=_optional_connector(p.connector)
    )


def get_configuration(p: GetConfigurationParams, _: CallContext) -> call.GetConfiguration:
    if p.variables and not p.keys:
        raise NotApplicable("variables are OCPP 2.0.1; OCPP 1.6 takes keys")
    return call.GetConfiguration(key=list(p.keys) or None)


def set_configuration(p: SetConfigurationParams, _: CallContext) -> call.ChangeConfiguration:
    if p.key is None:
        raise NotApplicable("OCPP 1.6 ChangeConfiguration needs key")
    return call.ChangeConfiguration(key=p.key, value=p.value)


def get_base_report(_p: GetBaseReportParams, _: CallContext) -> None:
    raise NotApplicable("get-base-report is OCPP 2.0.1 only (use get-configuration)")


def clear_cache(_p: ClearCacheParams, _: CallContext) -> call.ClearCache:
    return call.ClearCache()


def get_diagnostics(p: GetDiagnosticsParams, _: CallContext) -> call.GetDiagnostics:
    if p.log_type != "DiagnosticsLog":
        raise NotApplicable(f"OCPP 1.6 GetDiagnostics cannot upload a {p.log_type}")
    return call.GetDiagnostics(
        location=p.location,
        retries=p.retries,
        retry_interval=p.retry_interval,
        start_time=timestamp(p.start),
        stop_time=timestamp(p.stop),
    )


def update_firmware(p: UpdateFirmwareParams, c: CallContext) -> call.UpdateFirmware:
    if p.install_at is not None or p.signing_certificate is not None or p.signature is not None:
        raise NotApplicable("install_at, signing_certificate and signature are OCPP 2.0.1")
    return call.UpdateFirmware(
        location=p.location,
        retrieve_date=timestamp(p.retrieve_at or c.now),
        retries=p.retries,
        retry_interval=p.retry_interval,
    )


def remote_start(p: RemoteStartParams, _: CallContext) -> call.RemoteStartTransaction:
    if len(p.id_token) > ID_TAG_MAX:
        raise NotApplicable(f"OCPP 1.6 id tags have at most {ID_TAG_MAX} characters")
    return call.RemoteStartTransaction(
        id_tag=p.id_token, connector_id=_optional_connector(p.connector)
    )


def remote_stop(p: RemoteStopParams, _: CallContext) -> call.RemoteStopTransaction:
    if not p.transaction_id.isdigit():
        raise NotApplicable("OCPP 1.6 transaction ids are integers")
    return call.RemoteStopTransaction(transaction_id=int(p.transaction_id))


def data_transfer(p: DataTransferParams, _: CallContext) -> call.DataTransfer:
    data = p.data if p.data is None or isinstance(p.data, str) else orjson.dumps(p.data).decode()
    return call.DataTransfer(vendor_id=p.vendor_id, message_id=p.message_id, data=data)


TRANSLATORS: dict[CommandName, Translator] = {
    "reset": reset,
    "unlock-connector": unlock_connector,
    "change-availability": change_availability,
    "trigger-message": trigger_message,
    "get-configuration": get_configuration,
    "set-configuration": set_configuration,
    "get-base-report": get_base_report,
    "clear-cache": clear_cache,
    "get-diagnostics": get_diagnostics,
    "update-firmware": update_firmware,
    "remote-start": remote_start,
    "remote-stop": remote_stop,
    "data-transfer": data_transfer,
}
