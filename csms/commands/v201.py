"""Commands as OCPP 2.0.1 calls (``ocpp.v201.call``): one translator per command.

A connector key ``"N"`` names EVSE N (``"N/M"`` its connector M); ``"0"`` the station.
Reset: soft = OnIdle (after running transactions), hard = Immediate.
"""

from __future__ import annotations

from typing import Any

from ocpp.v201 import call

from csms.commands.translation import (
    CallContext,
    NotApplicable,
    Translator,
    split_connector,
    timestamp,
    without_nones,
)
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
    VariableRef,
)


def _evse(key: str | None) -> dict[str, Any] | None:
    if key is None or key == "0":
        return None
    evse_id, connector_id = split_connector(key)
    return without_nones(id=evse_id, connector_id=connector_id)


def _component_variable(ref: VariableRef) -> dict[str, Any]:
    return {
        "component": without_nones(
            name=ref.component, instance=ref.component_instance, evse=_evse(ref.evse)
        ),
        "variable": without_nones(name=ref.variable, instance=ref.variable_instance),
        "attribute_type": ref.attribute,
    }


def reset(p: ResetParams, _: CallContext) -> call.Reset:
    return call.Reset(type="Immediate" if p.type == "hard" else "OnIdle")


def unlock_connector(p: UnlockConnectorParams, _: CallContext) -> call.UnlockConnector:
    evse_id, connector_id = split_connector(p.connector)
    return call.UnlockConnector(evse_id=evse_id, connector_id=connector_id or 1)


def change_availability(p: ChangeAvailabilityParams, _: CallContext) -> call.ChangeAvailability:
    return call.ChangeAvailability(
        operational_status="Operative" if p.operative else "Inoperative", evse=_evse(p.connector)
    )


def trigger_message(p: TriggerMessageParams, _: CallContext) -> call.TriggerMessage:
    message = "LogStatusNotification" if p.message == "DiagnosticsStatusNotification" else p.message
    return call.TriggerMessage(requested_message=message, evse=_evse(p.connector))


def get_configuration(p: GetConfigurationParams, _: CallContext) -> call.GetVariables:
    if not p.variables:
        raise NotApplicable(
            "OCPP 2.0.1 GetVariables needs variables (component and variable); "
            "get-base-report reports everything"
        )
    return call.GetVariables(get_variable_data=[_component_variable(v) for v in p.variables])


def set_configuration(p: SetConfigurationParams, _: CallContext) -> call.SetVariables:
    if p.variable is None:
        raise NotApplicable("OCPP 2.0.1 SetVariables needs variable (component and variable)")
    return call.SetVariables(
        set_variable_data=[{**_component_variable(p.variable), "attribute_value": p.value}]
    )


def get_base_report(p: GetBaseReportParams, c: CallContext) -> call.GetBaseReport:
    return call.GetBaseReport(request_id=c.request_id, report_base=p.report_base)


def clear_cache(_p: ClearCacheParams, _: CallContext) -> call.ClearCache:
    return call.ClearCache()


def get_diagnostics(p: GetDiagnosticsParams, c: CallContext) -> call.GetLog:
    return call.GetLog(
        log=without_nones(
            remote_location=p.location,
            oldest_timestamp=timestamp(p.start),
            latest_timestamp=timestamp(p.stop),
        ),
        log_type=p.log_type,
        request_id=c.request_id,
        retries=p.retries,
        retry_interval=p.retry_interval,
    )


def update_firmware(p: UpdateFirmwareParams, c: CallContext) -> call.UpdateFirmware:
    return call.UpdateFirmware(
        request_id=c.request_id,
        firmware=without_nones(
            location=p.location,
            retrieve_date_time=timestamp(p.retrieve_at or c.now),
            install_date_time=timestamp(p.install_at),
            signing_certificate=p.signing_certificate,
            signature=p.signature,
        ),
        retries=p.retries,
        retry_interval=p.retry_interval,
    )


def remote_start(p: RemoteStartParams, c: CallContext) -> call.RequestStartTransaction:
    if p.connector is not None and "/" in p.connector:
        raise NotApplicable(
            f"connector {p.connector!r}: OCPP 2.0.1 RequestStartTransaction names an EVSE "
            "(a number), not one of its connectors"
        )
    evse = _evse(p.connector)
    return call.RequestStartTransaction(
        id_token={"id_token": p.id_token, "type": p.id_token_type},
        remote_start_id=c.request_id,
        evse_id=evse["id"] if evse is not None else None,
    )


def remote_stop(p: RemoteStopParams, _: CallContext) -> call.RequestStopTransaction:
    return call.RequestStopTransaction(transaction_id=p.transaction_id)


def data_transfer(p: DataTransferParams, _: CallContext) -> call.DataTransfer:
    return call.DataTransfer(vendor_id=p.vendor_id, message_id=p.message_id, data=p.data)


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
