"""Fault rules over HTTP: list, read, create, edit, delete, and dry-run a fault signature.

Reads are open to any role, edits to admins and dispatchers. Edits run in the group
commit (:func:`ticketing.tx.transact`); the classifier of every process sees them on its
next call (see :mod:`ticketing.rules.store`). The dry run answers with the same cached
classifier the work-order engine uses.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, StringConstraints

from services.api_auth import AdminOrDispatcher, AnyRole
from services.api_params import SmallId
from ticketing.api import app_state
from ticketing.rules import store
from ticketing.rules.model import (
    Classification,
    FaultSignature,
    Rule,
    RuleIn,
    Source,
)

router = APIRouter(prefix="/fault-rules", tags=["fault rules"])

RuleId = SmallId
Text = Annotated[str, StringConstraints(min_length=1, max_length=255)]


class RuleOut(BaseModel):
    id: int
    position: int
    name: str
    description: str | None
    enabled: bool
    match: dict[str, Any]
    category: str
    severity: str
    impact: int
    urgency: int
    priority: str
    sla_policy: str | None
    playbook: str | None
    skill: str | None
    open_order: bool
    rate_threshold: int | None
    rate_window_s: int | None
    origin: str
    updated_at: datetime | None
    catch_all: bool

    @classmethod
    def of(cls, rule: Rule) -> RuleOut:
        return cls(
            id=rule.id or 0,
            position=rule.position,
            name=rule.name,
            description=rule.description,
            enabled=rule.enabled,
            match=dict(rule.match),
            category=rule.category,
            severity=rule.severity,
            impact=rule.impact,
            urgency=rule.urgency,
            priority=rule.priority,
            sla_policy=rule.sla_policy,
            playbook=rule.playbook,
            skill=rule.skill,
            open_order=rule.open_order,
            rate_threshold=rule.rate_threshold,
            rate_window_s=rule.rate_window_s,
            origin=rule.origin,
            updated_at=rule.updated_at,
            catch_all=rule.is_catch_all,
        )


class SignatureIn(BaseModel):
    """A fault signature to classify, as the work-order engine would build it."""

    model_config = ConfigDict(extra="forbid")

    source: Source
    error_code: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    ocpp_version: Literal["1.6", "2.0.1"] | None = None
    status: Literal["available", "occupied", "reserved", "unavailable", "faulted"] | None = None
    vendor_id: Text | None = None
    vendor_error_code: Text | None = None
    tech_code: Text | None = None
    component: Text | None = None
    variable: Text | None = None
    charger_vendor: Text | None = None
    charger_model: Text | None = None
    connector: Annotated[str, StringConstraints(pattern=r"^\d{1,5}(/\d{1,5})?$")] | None = None

    def signature(self) -> FaultSignature:
        return FaultSignature(**self.model_dump())


class ClassificationOut(BaseModel):
    """The classification of a signature: the matched rule (id null if none) and its answer."""

    rule_id: int | None
    rule_name: str
    category: str
    severity: str
    impact: int
    urgency: int
    priority: str
    sla_policy: str | None
    playbook: str | None
    skill: str | None
    open_order: bool
    rate_threshold: int | None
    rate_window_s: int | None
    lockout: bool

    @classmethod
    def of(cls, result: Classification) -> ClassificationOut:
        return cls(**asdict(result), lockout=result.lockout)


@router.get("", response_model=list[RuleOut])
async def list_fault_rules(request: Request, _: AnyRole) -> list[RuleOut]:
    """Every rule in evaluation order (ascending position; the first enabled match wins)."""
    rules = await app_state.read(request, store.list_rules)
    return [RuleOut.of(r) for r in rules]


@router.get("/{rule_id}", response_model=RuleOut)
async def get_fault_rule(request: Request, rule_id: RuleId, _: AnyRole) -> RuleOut:
    rule = await app_state.read(request, lambda conn: store.get_rule(conn, rule_id))
    return RuleOut.of(rule)


@router.post("", response_model=RuleOut, status_code=201)
async def create_fault_rule(
    request: Request, response: Response, body: RuleIn, _: AdminOrDispatcher
) -> RuleOut:
    """Add a rule. Without ``position`` it goes just before the catch-all; a held position
    moves its holder (and the rules right after it) down by one."""
    now = app_state.now(request)
    rule = await app_state.write(request, lambda conn: store.create_rule(conn, body, now))
    response.headers["Location"] = str(request.url_for("get_fault_rule", rule_id=rule.id))
    return RuleOut.of(rule)


@router.put("/{rule_id}", response_model=RuleOut)
async def update_fault_rule(
    request: Request, rule_id: RuleId, body: RuleIn, _: AdminOrDispatcher
) -> RuleOut:
    """Replace a rule. Without ``position`` it keeps its place. The catch-all keeps an empty
    match, stays enabled and last (409 otherwise)."""
    now = app_state.now(request)
    rule = await app_state.write(request, lambda conn: store.update_rule(conn, rule_id, body, now))
    return RuleOut.of(rule)


@router.delete("/{rule_id}", status_code=204)
async def delete_fault_rule(request: Request, rule_id: RuleId, _: AdminOrDispatcher) -> None:
    """Delete a rule (409 for the catch-all)."""
    await app_state.write(request, lambda conn: store.delete_rule(conn, rule_id))


@router.post("/dry-run", response_model=ClassificationOut)
async def dry_run(request: Request, body: SignatureIn, _: AnyRole) -> ClassificationOut:
    """Classify a fault signature with the current rules, changing nothing."""
    signature = body.signature()
    result = await app_state.read(request, lambda conn: store.classify(conn, signature))
    return ClassificationOut.of(result)
