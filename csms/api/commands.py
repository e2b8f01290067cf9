"""Commands to chargers over HTTP: send one, read the command log.

``POST /chargers/{id}/commands/{name}`` has one route per command (routing is data: a
row of :data:`services.commands.contracts.PARAMS` per command), so each body is typed in
the OpenAPI document and a bad body is a 422 naming the fields. The command goes over the
bus to the node holding the charger's socket (:func:`services.commands.log.send_command`
records it before and after). Answers: 200 with the reply when the charger answered
(Rejected is an answer), 409 offline or refused, 504 no answer in time, 502 the charger
answered with a CALLERROR (or an answer that breaks the schema), 503 the command did not
reach the charger's node (the bus is down, or the node holding the still-connected charger
is not reachable over it: "no csms node holds the charger" is not taken for offline while
the live state says it is connected to a node that beats). Commands to one charger are
sent one at a time (see :mod:`csms.commands.executor`).

Admins and dispatchers may send; a technician when the app's command authorizer agrees;
viewers never. Reads: any role.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from pydantic import BaseModel
from sqlalchemy import select

from csms.api.schemas import Page
from csms.tables import Charger, ChargerState, CsmsNode
from services.api_auth import AnyRole, CurrentPrincipal, Principal
from services.api_params import INT64_MAX
from services.api_params import cursor as parse_cursor
from services.commands.access import deny_all, may_send
from services.commands.contracts import (
    PARAMS,
    CommandAuthorizer,
    CommandName,
    CommandOrderCheck,
    CommandRecord,
    CommandReply,
    CommandRequest,
    new_command_id,
)
from services.commands.history import get_command, list_commands
from services.commands.log import send_command
from services.db import Database, utcnow
from services.problems import Problem, problem_responses
from services.settings import Settings

router = APIRouter(tags=["commands"])

DEFAULT_CALL_TIMEOUT: float = Settings.model_fields["call_timeout"].default

#: HTTP status and problem title of each outcome other than ``answered``
FAILURES: dict[str, tuple[int, str]] = {
    "offline": (409, "Charger offline"),
    "refused": (409, "Command refused"),
    "timeout": (504, "Charger did not answer"),
    "error": (502, "Charger answered with an error"),
    "unavailable": (503, "Command not delivered"),
}
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {**problem_responses(status)[status], "description": description}
    for status, description in (
        (404, "unknown charger"),
        (
            409,
            "the charger is offline, or the command was refused (not expressible in the "
            "charger's OCPP version, a transaction running, or still queued behind another "
            "command to the charger when its timeout ended: never sent)",
        ),
        (502, "the charger answered with a CALLERROR"),
        (504, "the charger did not answer in time"),
        (503, "the command did not reach the charger's csms node (bus or node unreachable)"),
    )
}


async def _authorized_sender(
    charger_id: str, request: Request, principal: CurrentPrincipal
) -> Principal:
    authorizer: CommandAuthorizer = getattr(request.app.state, "command_authorizer", deny_all)
    if not await may_send(principal, charger_id, authorizer):
        raise Problem(
            403,
            "Forbidden",
            f"role {principal.role!r} may not send commands to charger {charger_id!r}",
        )
    return principal


Sender = Annotated[Principal, Depends(_authorized_sender)]
OrderId = Annotated[
    int | None,
    Query(
        ge=1,
        le=INT64_MAX,
        description="the work order this command serves: the charger's, or its site's (422 "
        "otherwise); the command is then listed on it",
    ),
]
ForbidDuringTransaction = Annotated[
    bool, Query(description="refuse (409) if a transaction is running on the charger")
]
Limit = Annotated[int, Query(ge=1, le=1000)]


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def _require_charger(db: Database, charger_id: str) -> None:
    async with db.engine.connect() as conn:
        found = (
            await conn.execute(select(Charger.id).where(Charger.id == charger_id))
        ).scalar_one_or_none()
    if found is None:
        raise Problem(404, "Not Found", f"no charger {charger_id!r}")


async def _connected_node(db: Database, charger_id: str, beat_timeout: float | None) -> str | None:
    """The live csms node the charger is connected to, per the live state (None if none:
    not connected, or its node stopped or is silent past the beat timeout)."""
    live, nodes = ChargerState.__table__, CsmsNode.__table__
    async with db.engine.connect() as conn:
        row = (
            await conn.execute(
                select(live.c.node_id, nodes.c.last_beat, nodes.c.stopped_at)
                .select_from(live.outerjoin(nodes, nodes.c.node_id == live.c.node_id))
                .where(live.c.charger_id == charger_id, live.c.connected.is_(True))
            )
        ).first()
    if row is None or row.last_beat is None or row.stopped_at is not None:
        return None
    if beat_timeout is not None and row.last_beat < utcnow() - timedelta(seconds=beat_timeout):
        return None
    return f"csms node {row.node_id}"


async def _send(
    request: Request,
    principal: Principal,
    charger_id: str,
    name: CommandName,
    params: BaseModel,
    order_id: int | None,
    forbid_during_transaction: bool,
) -> CommandReply:
    state = request.app.state
    await _require_charger(_db(request), charger_id)
    order_check: CommandOrderCheck | None = getattr(state, "command_order_check", None)
    if order_id is not None and order_check is not None:
        why = await order_check(order_id, charger_id)
        if why is not None:
            raise Problem(
                422,
                "Request validation failed",
                f"invalid fields: query.order_id ({why})",
                errors=[{"loc": ["query", "order_id"], "msg": why, "type": "value_error"}],
            )
    settings: Settings | None = getattr(state, "settings", None)
    command = CommandRequest(
        command_id=new_command_id(),
        charger_id=charger_id,
        name=name,
        params=params.model_dump(mode="json"),
        requested_by=f"user:{principal.name}",
        order_id=order_id,
        timeout_s=settings.call_timeout if settings is not None else DEFAULT_CALL_TIMEOUT,
        forbid_during_transaction=forbid_during_transaction,
    )
    db = _db(request)
    beat_timeout = settings.node_beat_timeout if settings is not None else None

    async def connected_to(cid: str) -> str | None:
        return await _connected_node(db, cid, beat_timeout)

    reply = await send_command(state.bus, state.committer, command, state.clock, connected_to)
    if reply.outcome == "answered":
        return reply
    status, title = FAILURES[reply.outcome]
    raise Problem(
        status,
        title,
        reply.detail or reply.outcome,
        command_id=reply.command_id,
        outcome=reply.outcome,
        reply=reply.model_dump(mode="json"),
    )


def _sender(name: CommandName, model: type[BaseModel]) -> Callable[..., Awaitable[CommandReply]]:
    """The endpoint of one command; its body is ``model`` (optional when every field has
    a default)."""
    required = any(field.is_required() for field in model.model_fields.values())

    async def send(
        charger_id: str,
        request: Request,
        principal: Sender,
        order_id: OrderId = None,
        forbid_during_transaction: ForbidDuringTransaction = False,
        body: Any = Body(...) if required else Body(default=None),
    ) -> CommandReply:
        params = body if isinstance(body, BaseModel) else model()
        return await _send(
            request, principal, charger_id, name, params, order_id, forbid_during_transaction
        )

    send.__annotations__ = {**send.__annotations__, "body": model if required else model | None}
    send.__name__ = f"send_{name.replace('-', '_')}"
    send.__doc__ = (model.__doc__ or "").strip() or None
    return send


for _name, _model in PARAMS.items():
    router.add_api_route(
        f"/chargers/{{charger_id}}/commands/{_name}",
        _sender(_name, _model),
        methods=["POST"],
        response_model=CommandReply,
        responses=PROBLEM_RESPONSES,
        summary=f"Send {_name}",
    )


@router.get("/chargers/{charger_id}/commands", response_model=Page[CommandRecord])
async def charger_commands(
    charger_id: str,
    request: Request,
    _: AnyRole,
    name: CommandName | None = None,
    limit: Limit = 100,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> Page[CommandRecord]:
    """A charger's commands and their outcomes, newest first."""
    db = _db(request)
    await _require_charger(db, charger_id)
    items, more = await list_commands(
        db,
        charger_id=charger_id,
        name=name,
        limit=limit,
        before=parse_cursor(cursor),
        now=request.app.state.clock.now(),
    )
    return Page[CommandRecord](items=items, next_cursor=str(more) if more is not None else None)


@router.get("/commands", response_model=Page[CommandRecord])
async def commands(
    request: Request,
    _: AnyRole,
    order_id: Annotated[
        int | None, Query(ge=1, le=INT64_MAX, description="the commands that served this order")
    ] = None,
    charger_id: str | None = None,
    name: CommandName | None = None,
    limit: Limit = 100,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> Page[CommandRecord]:
    """Commands and their outcomes, newest first (filter by work order, charger, name)."""
    items, more = await list_commands(
        _db(request),
        charger_id=charger_id,
        order_id=order_id,
        name=name,
        limit=limit,
        before=parse_cursor(cursor),
        now=request.app.state.clock.now(),
    )
    return Page[CommandRecord](items=items, next_cursor=str(more) if more is not None else None)


@router.get("/commands/{command_id}", response_model=CommandRecord)
async def command(command_id: str, request: Request, _: AnyRole) -> CommandRecord:
    """One command: who sent it when, its parameters, the charger's answer, its progress."""
    found = await get_command(_db(request), command_id, now=request.app.state.clock.now())
    if found is None:
        raise Problem(404, "Not Found", f"no command {command_id!r}")
    return found
