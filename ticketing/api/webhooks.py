"""Webhooks: configuration (admin), the delivery log, redelivery and test pings.

The secret is in the answer of create and of rotate-secret only (``Cache-Control:
no-store``); no other answer carries it. Reads are for admins and dispatchers: webhook
URLs say where the network's data goes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Request, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import select

from services.api_auth import Principal, require_role
from services.api_params import BigId, SmallId
from services.db import Database
from ticketing.api import app_state
from ticketing.api.patches import refuse_nulls
from ticketing.tx import NotFound
from ticketing.webhooks import registry
from ticketing.webhooks.outbox import DELIVERIES, WEBHOOKS, OrderEventType

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

Admin = Annotated[Principal, require_role("admin")]
Staff = Annotated[Principal, require_role("admin", "dispatcher")]
WebhookId = SmallId
DeliveryId = BigId
DeliveryState = Literal["pending", "delivered", "failed"]

MAX_URL = 2000


def _check_url(value: str) -> str:
    if any(ch.isspace() or ord(ch) < 32 for ch in value):
        raise ValueError("url must not contain whitespace or control characters")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("url must be an absolute http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("url must not carry credentials: receivers check the signature")
    _ = parts.port  # raises ValueError for a malformed port
    return value


def _unique(events: list[OrderEventType]) -> list[OrderEventType]:
    return list(dict.fromkeys(events))


Url = Annotated[str, Field(min_length=1, max_length=MAX_URL), AfterValidator(_check_url)]
Events = Annotated[
    list[OrderEventType],
    Field(max_length=32, description="event types to send; [] = all"),
    AfterValidator(_unique),
]
Description = Annotated[str, Field(max_length=1000)]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Url
    events: Events = Field(default_factory=list)
    description: Description | None = None
    enabled: bool = True


class WebhookUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Url | None = None
    events: Events | None = None
    description: Description | None = None
    enabled: bool | None = None

    _no_null_required = refuse_nulls("url", "events", "enabled")


class WebhookOut(BaseModel):
    id: int
    url: str
    events: list[str]
    enabled: bool
    description: str | None
    created_at: datetime


class WebhookWithSecret(WebhookOut):
    secret: str = Field(description="HMAC-SHA256 key of the signatures; shown only now")


class DeliveryOut(BaseModel):
    id: int
    webhook_id: int
    event_id: str
    event_type: str
    order_id: int | None
    state: str
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None = None


def _with_secret(row: dict[str, Any], secret: str, response: Response) -> WebhookWithSecret:
    response.headers["Cache-Control"] = "no-store"
    return WebhookWithSecret(**row, secret=secret)


async def _webhook_rows(db: Database, webhook_id: int | None = None) -> list[WebhookOut]:
    query = select(*registry.PUBLIC_COLUMNS).order_by(WEBHOOKS.c.id)
    if webhook_id is not None:
        query = query.where(WEBHOOKS.c.id == webhook_id)
    async with db.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [WebhookOut.model_validate(dict(r._mapping)) for r in rows]


@router.post("", status_code=201, response_model=WebhookWithSecret)
async def create_webhook(
    body: WebhookCreate, request: Request, response: Response, _: Admin
) -> WebhookWithSecret:
    """Register a webhook. The answer holds its signing secret: the only time it is shown."""
    now = app_state.now(request)
    row, secret = await app_state.write(
        request,
        lambda conn: registry.create(
            conn,
            url=body.url,
            events=body.events,
            description=body.description,
            enabled=body.enabled,
            now=now,
        ),
    )
    return _with_secret(row, secret, response)


@router.get("", response_model=list[WebhookOut])
async def list_webhooks(request: Request, _: Staff) -> list[WebhookOut]:
    """Every webhook, oldest first (secrets are never shown)."""
    return await _webhook_rows(app_state.db(request))


@router.get("/{webhook_id}", response_model=WebhookOut)
async def get_webhook(webhook_id: WebhookId, request: Request, _: Staff) -> WebhookOut:
    rows = await _webhook_rows(app_state.db(request), webhook_id)
    if not rows:
        raise NotFound(f"webhook {webhook_id} does not exist")
    return rows[0]


@router.patch("/{webhook_id}", response_model=WebhookOut)
async def update_webhook(
    webhook_id: WebhookId, body: WebhookUpdate, request: Request, _: Admin
) -> WebhookOut:
    """Change the URL, events, description or enabled flag. Disabling pauses deliveries."""
    changes = body.model_dump(exclude_unset=True)
    row = await app_state.write(request, lambda c: registry.change(c, webhook_id, changes))
    return WebhookOut.model_validate(row)


@router.delete("/{webhook_id}", status_code=204)
async def delete_webhook(webhook_id: WebhookId, request: Request, _: Admin) -> Response:
    """Delete a webhook with its delivery log; nothing more is sent to it."""
    await app_state.write(request, lambda conn: registry.remove(conn, webhook_id))
    return Response(status_code=204)


@router.post("/{webhook_id}/rotate-secret", response_model=WebhookWithSecret)
async def rotate_secret(
    webhook_id: WebhookId, request: Request, response: Response, _: Admin
) -> WebhookWithSecret:
    """Replace the signing secret (shown once, in this answer); the old one stops at once."""
    row, secret = await app_state.write(
        request, lambda conn: registry.rotate_secret(conn, webhook_id)
    )
    return _with_secret(row, secret, response)


@router.get("/{webhook_id}/deliveries", response_model=DeliveryPage)
async def list_deliveries(
    webhook_id: WebhookId,
    request: Request,
    _: Staff,
    state: DeliveryState | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[
        str | None, Query(pattern="^[0-9]{1,18}$", description="next_cursor of the previous page")
    ] = None,
) -> DeliveryPage:
    """The delivery log of a webhook, newest first: state, attempts, last answer or error."""
    query = (
        select(*(c for c in DELIVERIES.c if c.name != "payload"))
        .where(DELIVERIES.c.webhook_id == webhook_id)
        .order_by(DELIVERIES.c.id.desc())
        .limit(limit + 1)
    )
    if state is not None:
        query = query.where(DELIVERIES.c.state == state)
    if cursor is not None:
        query = query.where(DELIVERIES.c.id < int(cursor))
    async with app_state.db(request).engine.connect() as conn:
        exists = (
            await conn.execute(select(WEBHOOKS.c.id).where(WEBHOOKS.c.id == webhook_id))
        ).first()
        if exists is None:
            raise NotFound(f"webhook {webhook_id} does not exist")
        rows = (await conn.execute(query)).all()
    more = len(rows) > limit
    items = [DeliveryOut.model_validate(dict(r._mapping)) for r in rows[:limit]]
    return DeliveryPage(items=items, next_cursor=str(items[-1].id) if more else None)


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    response_model=DeliveryOut,
)
async def redeliver(
    webhook_id: WebhookId, delivery_id: DeliveryId, request: Request, _: Admin
) -> DeliveryOut:
    """Send a delivered or failed delivery again now, with its attempts reset."""
    now = app_state.now(request)
    row = await app_state.write(
        request,
        lambda conn: registry.redeliver(conn, webhook_id, delivery_id, now=now),
    )
    return DeliveryOut.model_validate(row)


@router.post("/{webhook_id}/test", status_code=202, response_model=DeliveryOut)
async def send_test_ping(webhook_id: WebhookId, request: Request, _: Admin) -> DeliveryOut:
    """Queue a ``work_order.ping`` event to this webhook only; follow it in the delivery log."""
    now = app_state.now(request)
    row = await app_state.write(request, lambda conn: registry.ping(conn, webhook_id, now=now))
    return DeliveryOut.model_validate(row)
