"""`/api/v1/work-orders`: list, read, create by hand, move through states, comment,
assign, decline, escalate. Technicians see and change only their own orders (others
answer 404); viewers read only.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import Select, and_, exists, func, select
from sqlalchemy.engine import Connection

from services.api_auth import AdminOrDispatcher, AnyRole, Principal, require_role
from services.api_params import INT32_MAX, Offset
from services.api_params import BigId as OrderId
from services.problems import Problem
from ticketing import tx
from ticketing.api import app_state
from ticketing.rules.model import CATEGORIES, SEVERITIES, priority_of
from ticketing.sites import site_exists
from ticketing.tables import Technician
from ticketing.work_orders import dispatching, store, transitions, views
from ticketing.work_orders.context import OpContext
from ticketing.work_orders.faults import site_of
from ticketing.work_orders.policy import policy_id_for
from ticketing.work_orders.sla_clocks import CLOCKS
from ticketing.work_orders.states import HOLD_REASONS, STATES
from ticketing.work_orders.timeline import WORK_ORDERS

router = APIRouter(prefix="/work-orders", tags=["work orders"])
#: who may change an order (comment, decline, move it; a technician only some moves):
#: everyone but viewers
Changer = Annotated[Principal, require_role("admin", "dispatcher", "technician")]

#: What a technician may do to an order assigned to them (cancel, close, reassign: no).
TECHNICIAN_MOVES = frozenset({"accepted", "en_route", "on_site", "on_hold", "resolved", "verified"})
SORTS = {
    "created_at": WORK_ORDERS.c.created_at,
    "updated_at": WORK_ORDERS.c.updated_at,
    "priority": WORK_ORDERS.c.priority,
    "id": WORK_ORDERS.c.id,
}
Sort = Literal[
    "created_at", "-created_at", "updated_at", "-updated_at", "priority", "-priority", "id", "-id"
]


# ---------------------------------------------------------------- models
class SlaTargetOut(BaseModel):
    target: str
    state: str
    due_at: datetime | None
    remaining_s: float | None
    overrun_s: float | None
    target_s: int
    paused: bool
    warned_at: datetime | None
    breached_at: datetime | None
    stopped_at: datetime | None


class EntryOut(BaseModel):
    seq: int
    at: datetime
    actor: str
    kind: str
    from_state: str | None
    to_state: str | None
    note: str | None
    changes: dict[str, Any]


class WorkOrderOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    source: str
    type: str
    state: str
    hold_reason: str | None
    resolution: str | None
    close_reason: str | None
    title: str
    description: str | None
    charger_id: str | None
    connector: str | None
    site_id: str | None
    category: str
    severity: str
    impact: int
    urgency: int
    priority: str
    rule_name: str | None
    sla_policy_id: int | None
    playbook: str | None
    skill: str | None
    error_code: str | None
    absorbed_by: int | None
    parent_id: int | None
    assignee_id: int | None
    team_id: int | None
    occurrences: int
    first_seen: datetime
    last_seen: datetime
    on_site_at: datetime | None
    resolved_at: datetime | None
    verify_after: datetime | None
    closed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int
    sla: list[SlaTargetOut]
    legal_transitions: list[str]


class WorkOrderDetail(WorkOrderOut):
    timeline: list[EntryOut]


class WorkOrderPage(BaseModel):
    items: list[WorkOrderOut]
    total: int
    limit: int
    offset: int


def _text(max_length: int, min_length: int = 1) -> Any:
    """A text field compared without its surrounding whitespace: whitespace alone is empty
    (a title or comment of spaces was accepted, and a reason of spaces passed for one)."""
    return StringConstraints(strip_whitespace=True, min_length=min_length, max_length=max_length)


class WorkOrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Literal["manual", "complaint", "inspection"] = "manual"
    type: Literal["corrective", "drill"] = "corrective"
    title: Annotated[str, _text(300)]
    description: str | None = Field(default=None, max_length=10_000)
    charger_id: str | None = Field(default=None, min_length=1, max_length=48)
    connector: str | None = Field(default=None, pattern=r"^\d{1,3}(/\d{1,3})?$")
    site_id: str | None = Field(default=None, min_length=1, max_length=64)
    category: Literal[CATEGORIES] = "other"  # type: ignore[valid-type]
    severity: Literal[SEVERITIES] = "S3"  # type: ignore[valid-type]
    impact: int = Field(default=2, ge=1, le=3)
    urgency: int = Field(default=2, ge=1, le=3)
    skill: str | None = Field(default=None, max_length=64)


class TransitionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: Literal[STATES]  # type: ignore[valid-type]
    note: str | None = Field(default=None, max_length=10_000)
    reason: Annotated[str, _text(2000, min_length=0)] | None = None
    resolution: Literal[transitions.RESOLUTIONS] | None = None  # type: ignore[valid-type]
    technician_id: int | None = Field(default=None, ge=1, le=INT32_MAX)


class CommentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, _text(10_000)]


class AssignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    technician_id: int = Field(ge=1, le=INT32_MAX)
    note: str | None = Field(default=None, max_length=2000)


class DeclineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=2000)


class EscalateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    team_id: int = Field(ge=1, le=INT32_MAX)
    reason: Annotated[str, _text(2000)]


class LegalOut(BaseModel):
    state: str
    legal_transitions: list[str]
    hold_reasons: list[str]


# ---------------------------------------------------------------- helpers
def _technician_id(conn: Connection, principal: Principal) -> int | None:
    """The technician record acting for ``principal`` (None: not a technician)."""
    if principal.role != "technician":
        return None
    tech = conn.execute(
        select(Technician.__table__.c.id).where(Technician.__table__.c.user_name == principal.name)
    ).scalar()
    return int(tech) if tech is not None else -1  # a technician without a record sees nothing


def _visible(
    conn: Connection, principal: Principal, order: store.Order | None, order_id: int
) -> store.Order:
    if order is None:
        raise tx.NotFound(f"work order {order_id} does not exist")
    tech = _technician_id(conn, principal)
    if tech is not None and order["assignee_id"] != tech:
        raise tx.NotFound(f"work order {order_id} does not exist")
    return order


def _check_site(conn: Connection, body: WorkOrderIn) -> None:
    """A new order's site exists and, with a charger, is the charger's site (when it has
    one): an order for a missing site, or for a charger at another site, would be
    dispatched to the technicians of the wrong place or of none."""
    if body.site_id is None:
        return
    if not site_exists(conn, body.site_id):
        raise tx.Invalid(f"no site {body.site_id!r}", field="site_id")
    if body.charger_id is not None:
        placed = site_of(conn, body.charger_id)
        if placed is not None and placed != body.site_id:
            raise tx.Invalid(
                f"charger {body.charger_id!r} is at site {placed!r}, not {body.site_id!r}",
                field="site_id",
            )


def _out(conn: Connection, orders: list[store.Order], now: datetime) -> list[WorkOrderOut]:
    slas = views.sla_views(conn, orders, now)
    return [
        WorkOrderOut.model_validate(
            {**o, "sla": slas.get(int(o["id"]), []), "legal_transitions": views.legal(o)}
        )
        for o in orders
    ]


def _detail(conn: Connection, order: store.Order, now: datetime) -> WorkOrderDetail:
    (base,) = _out(conn, [order], now)
    return WorkOrderDetail.model_validate(
        {**base.model_dump(), "timeline": views.timeline(conn, int(order["id"]))}
    )


def _ctx(request: Request, principal: Principal) -> OpContext:
    return OpContext(
        now=app_state.now(request), actor=f"user:{principal.name}", bus=request.app.state.bus
    )


async def _act(
    request: Request,
    principal: Principal,
    order_id: int,
    fn: Callable[[Connection, OpContext, store.Order], store.Order],
) -> WorkOrderDetail:
    ctx = _ctx(request, principal)

    def op(conn: Connection, ctx: OpContext) -> WorkOrderDetail:
        order = _visible(conn, principal, store.load(conn, order_id), order_id)
        updated = fn(conn, ctx, order)
        return _detail(conn, updated, ctx.now)

    return await store.run(app_state.committer(request), ctx, op)


# ---------------------------------------------------------------- routes
@router.get("", response_model=WorkOrderPage)
async def list_work_orders(
    request: Request,
    principal: AnyRole,
    state: Annotated[list[str] | None, Query()] = None,
    priority: Annotated[list[str] | None, Query()] = None,
    charger_id: str | None = None,
    site_id: str | None = None,
    assignee_id: Annotated[int | None, Query(ge=1, le=INT32_MAX)] = None,
    source: str | None = None,
    category: str | None = None,
    sla_state: Annotated[
        Literal["running", "paused", "warning", "breached", "met", "cancelled"] | None, Query()
    ] = None,
    open_only: bool = False,
    sort: Sort = "-created_at",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> WorkOrderPage:
    """Work orders, filtered, sorted and paged (``total`` counts all matches)."""
    for value, allowed, name in (
        (state, STATES, "state"),
        (priority, ("P1", "P2", "P3", "P4", "P5"), "priority"),
    ):
        bad = [v for v in value or () if v not in allowed]
        if bad:
            raise Problem(422, "Request validation failed", f"unknown {name}: {', '.join(bad)}")
    now = app_state.now(request)

    def read(conn: Connection) -> WorkOrderPage:
        conditions: list[Any] = []
        tech = _technician_id(conn, principal)
        if tech is not None:
            conditions.append(WORK_ORDERS.c.assignee_id == tech)
        if state:
            conditions.append(WORK_ORDERS.c.state.in_(state))
        if open_only:
            conditions.append(WORK_ORDERS.c.state.notin_(("closed", "cancelled")))
        if priority:
            conditions.append(WORK_ORDERS.c.priority.in_(priority))
        for column, value in (
            (WORK_ORDERS.c.charger_id, charger_id),
            (WORK_ORDERS.c.site_id, site_id),
            (WORK_ORDERS.c.assignee_id, assignee_id),
            (WORK_ORDERS.c.source, source),
            (WORK_ORDERS.c.category, category),
        ):
            if value is not None:
                conditions.append(column == value)
        if sla_state is not None:
            conditions.append(
                exists().where(CLOCKS.c.order_id == WORK_ORDERS.c.id, CLOCKS.c.state == sla_state)
            )
        where = and_(*conditions) if conditions else None
        query: Select[Any] = select(WORK_ORDERS)
        count: Select[Any] = select(func.count()).select_from(WORK_ORDERS)
        if where is not None:
            query, count = query.where(where), count.where(where)
        column = SORTS[sort.lstrip("-")]
        query = query.order_by(column.desc() if sort.startswith("-") else column.asc())
        query = query.order_by(WORK_ORDERS.c.id.desc()).limit(limit).offset(offset)
        rows = [dict(r) for r in conn.execute(query).mappings()]
        total = int(conn.execute(count).scalar_one())
        return WorkOrderPage(items=_out(conn, rows, now), total=total, limit=limit, offset=offset)

    return await app_state.read(request, read)


@router.get("/queue", response_model=WorkOrderPage)
async def dispatch_queue(
    request: Request,
    _: AdminOrDispatcher,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> WorkOrderPage:
    """Orders waiting for a technician (nobody fitted), most urgent first."""
    now = app_state.now(request)

    def read(conn: Connection) -> WorkOrderPage:
        where = dispatching.IN_QUEUE
        rows = [
            dict(r)
            for r in conn.execute(
                select(WORK_ORDERS)
                .where(where)
                .order_by(WORK_ORDERS.c.priority, WORK_ORDERS.c.created_at)
                .limit(limit)
            ).mappings()
        ]
        total = conn.execute(select(func.count()).select_from(WORK_ORDERS).where(where))
        return WorkOrderPage(
            items=_out(conn, rows, now), total=int(total.scalar_one()), limit=limit, offset=0
        )

    return await app_state.read(request, read)


@router.post("", response_model=WorkOrderDetail, status_code=201)
async def create_work_order(
    request: Request, body: WorkOrderIn, principal: AdminOrDispatcher
) -> WorkOrderDetail:
    """Open an order by hand (a complaint, an inspection finding, a drill)."""
    if body.charger_id is None and body.site_id is None:
        raise tx.Invalid("a work order needs a charger_id or a site_id")
    if body.connector is not None and body.charger_id is None:
        raise tx.Invalid("a connector needs a charger_id", field="connector")
    known = app_state.charger_known(request)
    if body.charger_id is not None and known is not None and not await known(body.charger_id):
        raise tx.Invalid(f"no charger {body.charger_id!r} is registered", field="charger_id")
    ctx = _ctx(request, principal)

    def op(conn: Connection, ctx: OpContext) -> WorkOrderDetail:
        priority = priority_of(body.impact, body.urgency)
        fields = {
            **body.model_dump(),
            "priority": priority,
            "sla_policy_id": policy_id_for(conn, priority=priority, team_id=None, assignee_id=None),
        }
        _check_site(conn, body)
        if body.charger_id is not None and body.site_id is None:
            fields["site_id"] = site_of(conn, body.charger_id)
        order = store.create(conn, ctx, fields, note=f"opened by {principal.name}")
        order = dispatching.auto_assign(conn, ctx, order)
        return _detail(conn, order, ctx.now)

    return await store.run(app_state.committer(request), ctx, op)


@router.get("/{order_id}", response_model=WorkOrderDetail)
async def get_work_order(
    request: Request, order_id: OrderId, principal: AnyRole
) -> WorkOrderDetail:
    """One order with its SLA targets and its whole timeline."""
    now = app_state.now(request)

    def read(conn: Connection) -> WorkOrderDetail:
        order = _visible(conn, principal, store.load(conn, order_id, lock=False), order_id)
        return _detail(conn, order, now)

    return await app_state.read(request, read)


@router.get("/{order_id}/transitions", response_model=LegalOut)
async def legal_transitions(request: Request, order_id: OrderId, principal: AnyRole) -> LegalOut:
    """The states this order may move to now."""

    def read(conn: Connection) -> LegalOut:
        order = _visible(conn, principal, store.load(conn, order_id, lock=False), order_id)
        return LegalOut(
            state=order["state"],
            legal_transitions=views.legal(order),
            hold_reasons=list(HOLD_REASONS),
        )

    return await app_state.read(request, read)


@router.post("/{order_id}/transitions", response_model=WorkOrderDetail)
async def transition(
    request: Request, order_id: OrderId, body: TransitionIn, principal: Changer
) -> WorkOrderDetail:
    """Move the order; 409 with ``legal_transitions`` when the move is not allowed."""
    release = principal.role == "technician" and body.to not in TECHNICIAN_MOVES

    def fn(conn: Connection, ctx: OpContext, order: store.Order) -> store.Order:
        # a technician takes their own order off hold back to where it was, whatever that
        # state (held while dispatched: back to dispatched); other moves as TECHNICIAN_MOVES
        if release and not (order["state"] == "on_hold" and body.to == order["held_from"]):
            raise tx.Forbidden(f"a technician may not move an order to {body.to!r}")
        return transitions.transition(
            conn,
            ctx,
            order,
            body.to,
            note=body.note,
            reason=body.reason,
            resolution=body.resolution,
            technician_id=body.technician_id if principal.role != "technician" else None,
        )

    return await _act(request, principal, order_id, fn)


@router.get("/{order_id}/comments", response_model=list[EntryOut])
async def list_comments(request: Request, order_id: OrderId, principal: AnyRole) -> list[EntryOut]:
    def read(conn: Connection) -> list[EntryOut]:
        _visible(conn, principal, store.load(conn, order_id, lock=False), order_id)
        return [
            EntryOut.model_validate(e)
            for e in views.timeline(conn, order_id)
            if e["kind"] == "comment"
        ]

    return await app_state.read(request, read)


@router.post("/{order_id}/comments", response_model=WorkOrderDetail, status_code=201)
async def add_comment(
    request: Request, order_id: OrderId, body: CommentIn, principal: Changer
) -> WorkOrderDetail:
    def fn(conn: Connection, ctx: OpContext, order: store.Order) -> store.Order:
        return store.change(conn, ctx, order, kind="comment", note=body.text)

    return await _act(request, principal, order_id, fn)


@router.post("/{order_id}/assign", response_model=WorkOrderDetail)
async def assign(
    request: Request, order_id: OrderId, body: AssignIn, principal: AdminOrDispatcher
) -> WorkOrderDetail:
    def fn(conn: Connection, ctx: OpContext, order: store.Order) -> store.Order:
        return dispatching.assign(conn, ctx, order, body.technician_id, body.note)

    return await _act(request, principal, order_id, fn)


@router.post("/{order_id}/decline", response_model=WorkOrderDetail)
async def decline(
    request: Request, order_id: OrderId, body: DeclineIn, principal: Changer
) -> WorkOrderDetail:
    """The assignee (or a dispatcher for them) declines; the next candidate gets it."""

    def fn(conn: Connection, ctx: OpContext, order: store.Order) -> store.Order:
        return dispatching.decline(conn, ctx, order, body.note)

    return await _act(request, principal, order_id, fn)


@router.post("/{order_id}/escalate", response_model=WorkOrderDetail)
async def escalate(
    request: Request, order_id: OrderId, body: EscalateIn, principal: AdminOrDispatcher
) -> WorkOrderDetail:
    """Hand the order to a vendor or partner team, with a reason."""

    def fn(conn: Connection, ctx: OpContext, order: store.Order) -> store.Order:
        return dispatching.escalate(conn, ctx, order, body.team_id, body.reason)

    return await _act(request, principal, order_id, fn)
