"""Command contracts: what an operator or a playbook asks a charger to do, and its answer.

Commands are version-neutral: the parameters below are translated to OCPP 1.6 or 2.0.1
calls by the csms node holding the charger's socket. A command travels as a
:class:`CommandRequest` over the bus (request/reply, :meth:`services.bus.Bus.request_command`)
and comes back as a :class:`CommandReply`; :func:`services.commands.log.send_command`
records both.

Decisions:
- One parameter model per command, ``extra="forbid"`` and every field bounded, so a bad
  body is refused (HTTP 422) before anything reaches a charger.
- Where the versions differ, a body may carry both spellings and each version uses its
  own: ``keys`` (1.6) / ``variables`` (2.0.1) for get-configuration, ``key`` (1.6) /
  ``variable`` (2.0.1) for set-configuration. A field the charger's version cannot express
  (a 2.0.1-only command on 1.6, an ``evse/connector`` key on 1.6) gives outcome
  ``refused`` with the reason, never a guess.
- Connectors use the keys of :class:`services.bus.contracts.ConnectorRef`: ``"1"``
  (1.6 connector, or 2.0.1 EVSE) and ``"1/2"`` (2.0.1 EVSE/connector); ``"0"`` is the
  whole charger.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationInfo,
    field_validator,
    model_validator,
)

if TYPE_CHECKING:
    from services.api_auth import Principal

CommandName = Literal[
    "reset",
    "unlock-connector",
    "change-availability",
    "trigger-message",
    "get-configuration",
    "set-configuration",
    "get-base-report",
    "clear-cache",
    "get-diagnostics",
    "update-firmware",
    "remote-start",
    "remote-stop",
    "data-transfer",
]
COMMAND_NAMES: tuple[CommandName, ...] = get_args(CommandName)

#: ``unavailable``: the command did not reach the charger's node: the bus is down on the
#: sender's side, or the node holding the charger's connection is not reachable over it
#: (the charger is still connected); nothing reached the charger, retrying later may work
Outcome = Literal["answered", "offline", "timeout", "refused", "error", "unavailable"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)

#: commands whose OCPP call carries a request id the charger echoes in later notifications
#: (2.0.1 GetLog, UpdateFirmware, GetBaseReport; RequestStartTransaction's remoteStartId)
REQUEST_ID_COMMANDS: frozenset[str] = frozenset(
    {"get-diagnostics", "update-firmware", "get-base-report", "remote-start"}
)

#: whether a technician may send a command to a charger (the ticketing side decides:
#: "an open order on that charger is assigned to them"); injected into the HTTP app
CommandAuthorizer = Callable[["Principal", str], Awaitable[bool]]

#: why a command to a charger (second argument) may not name a work order (first) as the
#: one it serves, None if it may (ticketing decides: the charger's or its site's order);
#: injected into the HTTP app
CommandOrderCheck = Callable[[int, str], Awaitable[str | None]]

ConnectorKey = Annotated[
    str,
    Field(
        pattern=r"^\d{1,4}(/\d{1,4})?$",
        description='connector key: "1" (1.6 connector / 2.0.1 EVSE), "1/2" (2.0.1 '
        'EVSE/connector), "0" the whole charger',
    ),
]
Url = Annotated[
    str, Field(min_length=8, max_length=512, pattern=r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$")
]
Name50 = Annotated[str, Field(min_length=1, max_length=50)]
Retries = Annotated[int, Field(ge=0, le=100)]
RetryInterval = Annotated[int, Field(ge=0, le=86400, description="seconds")]

DATA_TRANSFER_MAX_BYTES = 8192


def new_command_id() -> str:
    return str(uuid.uuid4())


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ResetParams(_Params):
    """1.6 Reset Soft/Hard; 2.0.1 Reset OnIdle (soft) / Immediate (hard)."""

    type: Literal["soft", "hard"] = "soft"


class UnlockConnectorParams(_Params):
    """On 2.0.1 a bare ``"N"`` means EVSE N, connector 1."""

    connector: ConnectorKey

    @field_validator("connector")
    @classmethod
    def _not_whole_charger(cls, connector: str) -> str:
        if connector.split("/")[0] == "0":
            raise ValueError("unlock needs a connector, not 0")
        return connector


class ChangeAvailabilityParams(_Params):
    connector: ConnectorKey = "0"
    operative: bool


TriggerableMessage = Literal[
    "BootNotification",
    "Heartbeat",
    "StatusNotification",
    "MeterValues",
    "FirmwareStatusNotification",
    "DiagnosticsStatusNotification",
    "LogStatusNotification",
    "TransactionEvent",
]


class TriggerMessageParams(_Params):
    """DiagnosticsStatusNotification (1.6) and LogStatusNotification (2.0.1) stand for each
    other; TransactionEvent is 2.0.1 only. Connector ``"0"`` or none: the whole charger."""

    message: TriggerableMessage
    connector: ConnectorKey | None = None


class VariableRef(_Params):
    """A 2.0.1 device-model variable (component, variable, instances, EVSE, attribute)."""

    component: Name50
    variable: Name50
    component_instance: Name50 | None = None
    variable_instance: Name50 | None = None
    evse: ConnectorKey | None = None
    attribute: Literal["Actual", "Target", "MinSet", "MaxSet"] = "Actual"


class GetConfigurationParams(_Params):
    """1.6 GetConfiguration (``keys``; none = all); 2.0.1 GetVariables (``variables``)."""

    keys: list[Name50] = Field(default_factory=list, max_length=100)
    variables: list[VariableRef] = Field(default_factory=list, max_length=100)


class SetConfigurationParams(_Params):
    """1.6 ChangeConfiguration (``key``); 2.0.1 SetVariables (``variable``). One value."""

    key: Name50 | None = None
    variable: VariableRef | None = None
    value: str = Field(max_length=1000)

    @model_validator(mode="after")
    def _needs_a_target(self) -> SetConfigurationParams:
        if self.key is None and self.variable is None:
            raise ValueError("key (1.6) or variable (2.0.1) is required")
        return self


class GetBaseReportParams(_Params):
    """2.0.1 only; the report arrives as NotifyReport messages (tracked as progress)."""

    report_base: Literal["ConfigurationInventory", "FullInventory", "SummaryInventory"] = (
        "FullInventory"
    )


class ClearCacheParams(_Params):
    pass


class GetDiagnosticsParams(_Params):
    """1.6 GetDiagnostics; 2.0.1 GetLog (``log_type`` is 2.0.1 only)."""

    location: Url
    start: AwareDatetime | None = None
    stop: AwareDatetime | None = None
    retries: Retries | None = None
    retry_interval: RetryInterval | None = None
    log_type: Literal["DiagnosticsLog", "SecurityLog"] = "DiagnosticsLog"

    @field_validator("stop")
    @classmethod
    def _window(cls, stop: datetime | None, info: ValidationInfo) -> datetime | None:
        start = info.data.get("start")
        if start is not None and stop is not None and start > stop:
            raise ValueError("stop must not be before start")
        return stop


class UpdateFirmwareParams(_Params):
    """1.6 UpdateFirmware; 2.0.1 UpdateFirmware (``install_at``, ``signing_certificate``
    and ``signature`` are 2.0.1 only). ``retrieve_at`` defaults to now."""

    location: Url
    retrieve_at: AwareDatetime | None = None
    install_at: AwareDatetime | None = None
    retries: Retries | None = None
    retry_interval: RetryInterval | None = None
    signing_certificate: str | None = Field(default=None, min_length=1, max_length=5500)
    signature: str | None = Field(default=None, min_length=1, max_length=800)


class RemoteStartParams(_Params):
    """1.6 RemoteStartTransaction (id tags up to 20 characters); 2.0.1
    RequestStartTransaction (``connector`` names the EVSE, an ``"N/M"`` key is
    refused; ``id_token_type`` is 2.0.1)."""

    id_token: str = Field(min_length=1, max_length=36)
    id_token_type: Literal[
        "Central", "eMAID", "ISO14443", "ISO15693", "KeyCode", "Local", "MacAddress"
    ] = "ISO14443"
    connector: ConnectorKey | None = None


class RemoteStopParams(_Params):
    """1.6 RemoteStopTransaction (numeric ids); 2.0.1 RequestStopTransaction."""

    transaction_id: str = Field(min_length=1, max_length=36)


class DataTransferParams(_Params):
    """1.6 sends ``data`` as a string (other JSON values are serialized); 2.0.1 as JSON,
    as it is (its keys are not converted between snake_case and camelCase like the other
    payload keys, neither in the request nor in the charger's answer)."""

    vendor_id: str = Field(min_length=1, max_length=255)
    message_id: str | None = Field(default=None, min_length=1, max_length=50)
    data: JsonValue = None

    @field_validator("data")
    @classmethod
    def _bounded(cls, data: JsonValue) -> JsonValue:
        try:
            encoded = orjson.dumps(data)
        except orjson.JSONEncodeError as exc:  # integers past 64 bits, nesting past 254
            raise ValueError(f"cannot be sent to a charger: {exc}") from None
        if len(encoded) > DATA_TRANSFER_MAX_BYTES:
            raise ValueError(f"at most {DATA_TRANSFER_MAX_BYTES} bytes of JSON")
        return data


PARAMS: dict[CommandName, type[BaseModel]] = {
    "reset": ResetParams,
    "unlock-connector": UnlockConnectorParams,
    "change-availability": ChangeAvailabilityParams,
    "trigger-message": TriggerMessageParams,
    "get-configuration": GetConfigurationParams,
    "set-configuration": SetConfigurationParams,
    "get-base-report": GetBaseReportParams,
    "clear-cache": ClearCacheParams,
    "get-diagnostics": GetDiagnosticsParams,
    "update-firmware": UpdateFirmwareParams,
    "remote-start": RemoteStartParams,
    "remote-stop": RemoteStopParams,
    "data-transfer": DataTransferParams,
}


def validate_params(name: CommandName, body: Mapping[str, Any]) -> BaseModel:
    """The parameters of command ``name``; raises pydantic ``ValidationError`` (and
    ``KeyError`` for a name that is not a command)."""
    return PARAMS[name].model_validate(dict(body))


class CommandRequest(BaseModel):
    """A command for one charger, as it travels over the bus."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    command_id: str = Field(min_length=1, max_length=64)
    charger_id: str = Field(min_length=1, max_length=48)
    name: CommandName
    params: dict[str, Any]
    #: "user:<name>" or "system:remediation"
    requested_by: str = Field(min_length=1, max_length=120)
    #: the work order it serves
    order_id: int | None = None
    timeout_s: float = Field(gt=0)
    #: refused (outcome "refused") if a transaction is running on that charger
    forbid_during_transaction: bool = False
    #: the OCPP requestId for :data:`REQUEST_ID_COMMANDS` (send_command assigns one)
    request_id: int | None = Field(default=None, ge=1, le=2**31 - 1)


class CommandReply(BaseModel):
    """What became of a command. ``answered`` includes a charger saying Rejected."""

    model_config = ConfigDict(extra="forbid")

    command_id: str
    outcome: Outcome
    #: the charger's status field (Accepted, Rejected, Scheduled, Unlocked, ...); for a
    #: single 2.0.1 Get/SetVariables result its attributeStatus
    status: str | None = None
    #: the charger's whole answer (snake_case as the ocpp library gives it)
    response: dict[str, Any] | None = None
    #: why refused / the CALLERROR code and description
    detail: str | None = None
    node_id: str | None = None
    sent_at: datetime | None = None
    answered_at: datetime | None = None
    duration_ms: float | None = None


class ProgressEntry(BaseModel):
    """A status a long-running operation reported (FirmwareStatusNotification, ...)."""

    status: str
    at: datetime


class CommandRecord(BaseModel):
    """A command as the log keeps it; ``outcome`` is None while it is in flight, and
    ``error`` once it is long past its timeout without one (the process sending it ended:
    see :mod:`services.commands.history`)."""

    command_id: str
    charger_id: str
    name: str
    params: dict[str, Any]
    requested_by: str
    order_id: int | None
    requested_at: datetime
    timeout_s: float
    forbid_during_transaction: bool
    request_id: int | None
    outcome: str | None
    status: str | None
    response: dict[str, Any] | None
    detail: str | None
    node_id: str | None
    sent_at: datetime | None
    answered_at: datetime | None
    duration_ms: float | None
    progress: list[ProgressEntry]
    progress_status: str | None
    progress_at: datetime | None
