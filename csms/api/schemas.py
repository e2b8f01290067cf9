"""Bodies and answers of the csms HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from csms.identity import CHARGE_POINT_ID
from services.api_params import UtcDatetime

RegistrationStatus = Literal["accepted", "pending", "rejected"]


class ChargerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=CHARGE_POINT_ID.pattern, description="OCPP charge point identity")
    password: str | None = Field(
        default=None,
        min_length=16,
        max_length=40,
        description="HTTP Basic password (profiles 1 and 2)",
    )
    security_profile: int = Field(default=1, ge=0, le=3)
    site: str | None = Field(default=None, max_length=100)
    vendor: str | None = Field(default=None, max_length=100)
    model: str | None = Field(default=None, max_length=100)
    notes: str | None = Field(default=None, max_length=4000)
    enabled: bool = True

    @model_validator(mode="after")
    def _password_for_basic(self) -> ChargerCreate:
        if self.security_profile in (1, 2) and self.password is None:
            raise ValueError("security profiles 1 and 2 need a password")
        return self


class ChargerUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: str | None = Field(
        default=None,
        min_length=16,
        max_length=40,
        description="new HTTP Basic password; a live connection is closed (1008) within ~5 s",
    )
    security_profile: int | None = Field(
        default=None,
        ge=0,
        le=3,
        description="a change closes the charger's live connection (1008) within ~5 s",
    )
    registration_status: RegistrationStatus | None = None
    site: str | None = Field(default=None, max_length=100)
    vendor: str | None = Field(default=None, max_length=100)
    model: str | None = Field(default=None, max_length=100)
    notes: str | None = Field(default=None, max_length=4000)
    enabled: bool | None = None


class ConnectorOut(BaseModel):
    connector: str
    evse_id: int | None
    connector_id: int | None
    status: str
    raw_status: str
    error_code: str | None
    vendor_id: str | None
    vendor_error_code: str | None
    info: str | None
    charger_time: datetime | None
    updated_at: datetime


class ChargerOut(BaseModel):
    id: str
    security_profile: int
    registration_status: str
    site: str | None
    vendor: str | None
    model: str | None
    notes: str | None
    enabled: bool
    created_at: datetime
    updated_at: datetime
    online: bool
    connected: bool
    ocpp_version: str | None
    node_id: str | None
    last_seen: datetime | None
    connected_at: datetime | None
    offline_since: datetime | None
    boot: dict[str, Any]
    connectors: list[ConnectorOut]


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


class MessageOut(BaseModel):
    id: int
    direction: str
    message_type: int
    action: str | None
    message_id: str | None
    payload: str
    at: datetime


class IntervalOut(BaseModel):
    kind: str
    connector: str
    status: str
    raw_status: str | None
    error_code: str | None
    started_at: datetime
    ended_at: datetime | None
    charger_time: datetime | None


class EventOut(BaseModel):
    seq: int
    event_id: str
    type: str
    received_at: datetime
    payload: dict[str, Any]


IdTokenStatus = Literal["Accepted", "Blocked", "Expired", "Invalid"]
IdTokenType = Literal[
    "Central", "eMAID", "ISO14443", "ISO15693", "KeyCode", "Local", "MacAddress", "NoAuthorization"
]


#: 1-36 printable ASCII characters, no whitespace and no "/" (the token is a path segment)
ID_TOKEN_PATTERN = r"^[\x21-\x2E\x30-\x7E]{1,36}$"


class IdTokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(
        pattern=ID_TOKEN_PATTERN,
        description="OCPP CiString: case-insensitive, printable ASCII without spaces or '/'",
    )
    type: IdTokenType | None = Field(
        default=None,
        description="the 2.0.1 idToken type it must be presented with; none: any type",
    )
    status: IdTokenStatus = "Accepted"
    expires_at: UtcDatetime | None = None
    group_id: str | None = Field(default=None, max_length=36)


class IdTokenUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: IdTokenType | None = None
    status: IdTokenStatus | None = None
    expires_at: UtcDatetime | None = None
    group_id: str | None = Field(default=None, max_length=36)


class IdTokenOut(BaseModel):
    token: str
    type: str | None
    status: str
    expires_at: datetime | None
    group_id: str | None
    created_at: datetime
    updated_at: datetime
