"""The vocabulary of fault rules: signatures, rules, classifications, priorities.

Severity decides what happens (S1 safety: lock the port out and dispatch at once; S2 port
down: remote fix first, then dispatch; S3 degraded; S4 vehicle/driver side: counted, an
order only above ``rate_threshold`` occurrences within ``rate_window_s``). Priority is the
ITIL impact x urgency matrix and decides how fast (the SLA).

A rule's ``match`` is validated and compiled when a :class:`Rule` or :class:`RuleIn` is
built (pattern language: :mod:`ticketing.rules.patterns`), so a stored rule never fails at
classification time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from ticketing.rules.patterns import Predicate, compile_match, compile_pattern

Category = Literal[
    "connector_cable",
    "power_electronics",
    "ground_insulation",
    "overheating",
    "communication",
    "payment_rfid",
    "firmware",
    "display_hmi",
    "site_power",
    "vandalism",
    "other",
]
Severity = Literal["S1", "S2", "S3", "S4"]
Source = Literal["status_notification", "notify_event", "security_event", "derived"]
CATEGORIES: tuple[str, ...] = get_args(Category)
SEVERITIES: tuple[str, ...] = get_args(Severity)
SOURCES: tuple[str, ...] = get_args(Source)
#: derived fault kinds (``source == "derived"``), computed by the work-order engine
DERIVED_KINDS = ("Offline", "RebootLoop", "Flapping", "SiteDown")

_PRIORITY = {
    (1, 1): "P1",
    (1, 2): "P2",
    (2, 1): "P2",
    (1, 3): "P3",
    (2, 2): "P3",
    (3, 1): "P3",
    (2, 3): "P4",
    (3, 2): "P4",
    (3, 3): "P5",
}


def priority_of(impact: int, urgency: int) -> str:
    """ITIL priority of impact x urgency (each 1 = high .. 3 = low): P1 .. P5."""
    try:
        return _PRIORITY[(impact, urgency)]
    except KeyError:
        raise ValueError(f"impact and urgency are 1..3, not {impact}, {urgency}") from None


@dataclass(frozen=True)
class FaultSignature:
    """What is known of one fault when it is classified."""

    source: str  # status_notification | notify_event | security_event | derived
    #: 1.6 errorCode (or "Faulted"), 2.0.1 techCode or Component.Variable, security event
    #: type, or derived kind: Offline | RebootLoop | Flapping | SiteDown
    error_code: str
    ocpp_version: str | None = None  # "1.6" | "2.0.1"
    status: str | None = None  # normalized: available|occupied|reserved|unavailable|faulted
    vendor_id: str | None = None
    vendor_error_code: str | None = None
    tech_code: str | None = None
    component: str | None = None
    variable: str | None = None
    charger_vendor: str | None = None
    charger_model: str | None = None
    connector: str | None = None  # "0" or "1" or "1/2"; "0"/evse-only = charger/EVSE level


#: the keys a rule may match on: every signature field, plus ``code`` (tech_code or
#: vendor_error_code, whichever the charger sent)
MatchKey = Literal[
    "source",
    "error_code",
    "ocpp_version",
    "status",
    "vendor_id",
    "vendor_error_code",
    "tech_code",
    "component",
    "variable",
    "charger_vendor",
    "charger_model",
    "connector",
    "code",
]
MATCH_KEYS: frozenset[str] = frozenset(get_args(MatchKey))


@dataclass(frozen=True)
class Classification:
    """What a fault is and what to do about it: the answer of the first matching rule."""

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

    @property
    def lockout(self) -> bool:
        """S1: take the port out of service (ChangeAvailability Inoperative) and dispatch."""
        return self.severity == "S1"


@dataclass(frozen=True)
class Rule:
    """One fault rule as stored; ``tests`` is its match, compiled on construction."""

    name: str
    category: str
    severity: str
    impact: int
    urgency: int
    match: Mapping[str, Any] = field(default_factory=dict, hash=False)
    id: int | None = None
    position: int = 0
    description: str | None = None
    enabled: bool = True
    sla_policy: str | None = None
    playbook: str | None = None
    skill: str | None = None
    open_order: bool = True
    rate_threshold: int | None = None
    rate_window_s: int | None = None
    origin: str = "default"
    updated_at: datetime | None = None
    tests: tuple[tuple[str, Predicate], ...] = field(
        init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        unknown = set(self.match) - MATCH_KEYS
        if unknown:
            raise ValueError(f"rule {self.name!r} matches on unknown keys {sorted(unknown)}")
        object.__setattr__(self, "tests", compile_match(self.match))

    @property
    def is_catch_all(self) -> bool:
        return not self.match

    @property
    def priority(self) -> str:
        return priority_of(self.impact, self.urgency)

    def classification(self) -> Classification:
        return Classification(
            rule_id=self.id,
            rule_name=self.name,
            category=self.category,
            severity=self.severity,
            impact=self.impact,
            urgency=self.urgency,
            priority=self.priority,
            sla_policy=self.sla_policy,
            playbook=self.playbook,
            skill=self.skill,
            open_order=self.open_order,
            rate_threshold=self.rate_threshold,
            rate_window_s=self.rate_window_s,
        )


# ---------------------------------------------------------------- API / YAML input
PatternText = Annotated[str, StringConstraints(min_length=1, max_length=200)]
PatternIn = (
    PatternText | None | Annotated[list[PatternText | None], Field(min_length=1, max_length=64)]
)
Name = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][\w .:/()-]*$"
    ),
]
Slug = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9_.-]+$")]
Level = Annotated[int, Field(ge=1, le=3)]


class RuleIn(BaseModel):
    """A rule as the API and ``default_rules.yaml`` give it.

    ``position`` is optional: on create, none means just before the catch-all; on update,
    none keeps the rule where it is.
    """

    model_config = ConfigDict(extra="forbid")

    name: Name
    description: Annotated[str, StringConstraints(max_length=2000)] | None = None
    enabled: bool = True
    match: dict[MatchKey, PatternIn] = Field(
        default_factory=dict,
        description="signature field (or `code`) -> glob, `re:` regex, null, or a list of them",
    )
    category: Category
    severity: Severity
    impact: Level
    urgency: Level
    sla_policy: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    playbook: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    skill: Slug | None = None
    open_order: bool = True
    rate_threshold: Annotated[int, Field(ge=1, le=100_000)] | None = None
    rate_window_s: Annotated[int, Field(ge=1, le=90 * 86400)] | None = None
    position: Annotated[int, Field(ge=1, le=1_000_000_000)] | None = None

    @field_validator("match")
    @classmethod
    def _patterns_compile(cls, match: dict[str, Any]) -> dict[str, Any]:
        for key, pattern in match.items():
            try:
                compile_pattern(pattern)
            except ValueError as exc:
                raise ValueError(f"match.{key}: {exc}") from None
        return match

    @model_validator(mode="after")
    def _rate_is_complete(self) -> RuleIn:
        if (self.rate_threshold is None) != (self.rate_window_s is None):
            raise ValueError("rate_threshold and rate_window_s go together")
        if self.severity == "S4" and self.open_order and self.rate_threshold is None:
            raise ValueError(
                "an S4 rule opens orders only above a rate: set rate_threshold and "
                "rate_window_s, or open_order false"
            )
        return self

    def to_rule(self, *, rule_id: int | None = None, position: int = 0) -> Rule:
        """This rule as a matchable :class:`Rule` (tests, dry runs of unsaved rules)."""
        return Rule(
            id=rule_id,
            position=self.position if self.position is not None else position,
            **self.model_dump(exclude={"position"}),
        )
