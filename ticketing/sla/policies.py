"""SLA policies: their validation model, the row type, selection for an order, seeding.

A policy gives the targets (response, on-site, resolution) for one priority (or any) and
one contract type (or any), the calendar they are counted on, the warning fraction, and
the windows the work-order engine uses to auto-close (verification) and reopen.

Decisions:

- Selection: an explicit name (from a fault rule) wins if such a policy exists; otherwise
  the most specific match, (priority, contract) > (priority, any) > (any, contract) >
  (any, any), ties going to the lowest id. The defaults always include the catch-all and
  the store refuses to remove the last one (:mod:`ticketing.sla.policy_store`).
- The row's ``calendar`` column is ``PolicyRow.calendar_kind``: ``PolicyRow.calendar()`` is
  the :class:`Calendar` itself, built once per distinct configuration (cached by content,
  so an edited policy gets a new calendar and ids are never trusted to be unique in time).
- Defaults ship as package data (``default_policies.yaml``), validated by the same model as
  the API input; they are inserted only into an empty table, skipping names another
  replica inserted first.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from importlib import resources
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from sqlalchemy import Table, bindparam, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from services.db import table_of
from ticketing.sla.calendar import Calendar, business_calendar, calendar_of
from ticketing.sla.hours import parse_hours, parse_zone
from ticketing.tables import SlaPolicy

DEFAULTS_RESOURCE = "default_policies.yaml"
#: the largest target or window accepted (ten years; the columns are 32-bit integers)
MAX_SECONDS = 10 * 365 * 86400

Priority = Literal["P1", "P2", "P3", "P4", "P5"]
ContractType = Literal["own", "vendor", "partner"]
CalendarKind = Literal["24x7", "business"]
TargetSeconds = Annotated[int, Field(gt=0, le=MAX_SECONDS)]
WindowSeconds = Annotated[int, Field(ge=0, le=MAX_SECONDS)]
Interval = Annotated[list[Annotated[str, StringConstraints(max_length=5)]], Field(max_length=2)]
PolicyName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][\w .:-]*$"
    ),
]


class NoMatchingPolicy(LookupError):
    """No policy matches an order (the catch-all is missing: a configuration error)."""


class SlaPolicyIn(BaseModel):
    """A policy as given through the API or in the defaults file."""

    model_config = ConfigDict(extra="forbid")

    name: PolicyName
    priority: Priority | None = None
    contract_type: ContractType | None = None
    calendar: CalendarKind = "24x7"
    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "UTC"
    business_hours: dict[str, Annotated[list[Interval], Field(max_length=24)]] = Field(
        default_factory=dict, max_length=7
    )
    holidays: list[date] = Field(default_factory=list, max_length=1000)
    response_s: TargetSeconds | None = None
    on_site_s: TargetSeconds | None = None
    resolution_s: TargetSeconds | None = None
    warn_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.75
    verification_window_s: WindowSeconds = 3600
    reopen_window_s: WindowSeconds = 86400
    require_signoff: bool = False
    escalation_contact: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = (
        None
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        parse_zone(value)
        return value

    @field_validator("business_hours")
    @classmethod
    def _valid_hours(
        cls, value: dict[str, list[list[str]]], info: ValidationInfo
    ) -> dict[str, list[list[str]]]:
        week = parse_hours(value)
        if info.data.get("calendar") == "business" and week.is_closed_all_week:
            raise ValueError("business_hours: a business calendar needs opening hours")
        return value

    @model_validator(mode="after")
    def _usable(self) -> SlaPolicyIn:
        if self.response_s is None and self.on_site_s is None and self.resolution_s is None:
            raise ValueError("set at least one of response_s, on_site_s, resolution_s")
        if self.calendar == "business":
            business_calendar(self.timezone, self.business_hours, self.holidays)
        return self

    def to_values(self) -> dict[str, Any]:
        """The table columns this input sets (all but ``id`` and ``updated_at``)."""
        values = self.model_dump()
        values["holidays"] = [d.isoformat() for d in self.holidays]
        return values


@dataclass(frozen=True)
class PolicyRow:
    """One ``ticketing_sla_policies`` row (its ``calendar`` column is ``calendar_kind``)."""

    id: int
    name: str
    priority: str | None
    contract_type: str | None
    calendar_kind: str
    timezone: str
    business_hours: Mapping[str, Sequence[Sequence[str]]]
    holidays: tuple[str, ...]
    response_s: int | None
    on_site_s: int | None
    resolution_s: int | None
    warn_fraction: float
    verification_window_s: int
    reopen_window_s: int
    require_signoff: bool
    escalation_contact: str | None
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> PolicyRow:
        return cls(
            id=row["id"],
            name=row["name"],
            priority=row["priority"],
            contract_type=row["contract_type"],
            calendar_kind=row["calendar"],
            timezone=row["timezone"],
            business_hours=row["business_hours"] or {},
            holidays=tuple(row["holidays"] or ()),
            response_s=row["response_s"],
            on_site_s=row["on_site_s"],
            resolution_s=row["resolution_s"],
            warn_fraction=row["warn_fraction"],
            verification_window_s=row["verification_window_s"],
            reopen_window_s=row["reopen_window_s"],
            require_signoff=row["require_signoff"],
            escalation_contact=row["escalation_contact"],
            updated_at=row["updated_at"],
        )

    @property
    def is_catch_all(self) -> bool:
        return self.priority is None and self.contract_type is None

    def calendar(self) -> Calendar:
        hours = json.dumps(self.business_hours, sort_keys=True)
        return _calendar(self.calendar_kind, self.timezone, hours, self.holidays)

    def target_seconds(self, target: str) -> int | None:
        """The policy's seconds for ``response``, ``on_site`` or ``resolution`` (None: none)."""
        targets = {
            "response": self.response_s,
            "on_site": self.on_site_s,
            "resolution": self.resolution_s,
        }
        if target not in targets:
            raise ValueError(f"unknown SLA target {target!r} (use {', '.join(targets)})")
        return targets[target]


@functools.lru_cache(maxsize=256)
def _calendar(kind: str, timezone: str, hours_json: str, holidays: tuple[str, ...]) -> Calendar:
    return calendar_of(kind, timezone, json.loads(hours_json), holidays)


def policies_table() -> Table:
    return table_of(SlaPolicy)


# ------------------------------------------------------------------ reads
def list_policies(conn: Connection) -> list[PolicyRow]:
    t = policies_table()
    rows = conn.execute(select(t).order_by(t.c.id)).mappings()
    return [PolicyRow.from_row(r) for r in rows]


#: Statements built once, their values given as execute parameters (building a Core
#: statement per call cost more than running it).
_T = policies_table()
_BY_ID = select(_T).where(_T.c.id == bindparam("b_id"))
_BY_NAME = select(_T).where(_T.c.name == bindparam("b_name"))
_FOR = select(_T).where(
    or_(_T.c.priority == bindparam("b_priority"), _T.c.priority.is_(None)),
    or_(_T.c.contract_type == bindparam("b_contract"), _T.c.contract_type.is_(None)),
)


def get_policy(conn: Connection, policy_id: int) -> PolicyRow | None:
    row = conn.execute(_BY_ID, {"b_id": policy_id}).mappings().first()
    return None if row is None else PolicyRow.from_row(row)


def get_policy_by_name(conn: Connection, name: str) -> PolicyRow | None:
    row = conn.execute(_BY_NAME, {"b_name": name}).mappings().first()
    return None if row is None else PolicyRow.from_row(row)


def select_policy(
    conn: Connection, *, priority: str, contract_type: str, name: str | None = None
) -> PolicyRow:
    """The policy for an order (see the module docstring for the precedence)."""
    if name is not None:
        named = get_policy_by_name(conn, name)
        if named is not None:
            return named
    params = {"b_priority": priority, "b_contract": contract_type}
    rows = [PolicyRow.from_row(r) for r in conn.execute(_FOR, params).mappings()]
    if not rows:
        raise NoMatchingPolicy(
            f"no SLA policy for priority {priority!r} and contract type {contract_type!r}, "
            "and no catch-all policy (priority and contract type both empty)"
        )
    return min(rows, key=lambda r: (r.priority is None, r.contract_type is None, r.id))


# ------------------------------------------------------------------ defaults
class _DefaultsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    defaults: dict[str, Any] = Field(default_factory=dict)
    policies: list[dict[str, Any]]


def load_defaults() -> list[SlaPolicyIn]:
    """The policies of ``default_policies.yaml``, each validated like an API input."""
    text = resources.files("ticketing.sla").joinpath(DEFAULTS_RESOURCE).read_text("utf-8")
    document = _DefaultsFile.model_validate(yaml.safe_load(text))
    return [SlaPolicyIn.model_validate({**document.defaults, **p}) for p in document.policies]


def seed_defaults(conn: Connection, now: datetime) -> int:
    """Insert the default policies if the table is empty; how many were inserted."""
    t = policies_table()
    if conn.execute(select(func.count()).select_from(t)).scalar_one():
        return 0
    if conn.dialect.name == "postgresql":
        statement: Any = pg_insert(t).on_conflict_do_nothing(index_elements=[t.c.name])
    elif conn.dialect.name == "sqlite":
        statement = sqlite_insert(t).on_conflict_do_nothing(index_elements=[t.c.name])
    else:
        statement = t.insert()
    inserted = 0
    for policy in load_defaults():
        inserted += conn.execute(statement, {**policy.to_values(), "updated_at": now}).rowcount
    return inserted
