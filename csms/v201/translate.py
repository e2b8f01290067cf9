"""OCPP 2.0.1 payloads -> normalized values. Pure functions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.bus.contracts import ConnectorRef, NormalizedStatus

STATUS = {
    "Available": NormalizedStatus.available,
    "Occupied": NormalizedStatus.occupied,
    "Reserved": NormalizedStatus.reserved,
    "Unavailable": NormalizedStatus.unavailable,
    "Faulted": NormalizedStatus.faulted,
}

TRUE_VALUES = frozenset({"true", "1", "yes", "on"})
FALSE_VALUES = frozenset({"false", "0", "no", "off"})


def normalize_status(status: str) -> NormalizedStatus:
    return STATUS[status]


@dataclass(frozen=True)
class ProblemReport:
    """A NotifyEvent entry that reports (or clears) a problem."""

    connector: ConnectorRef
    raised: bool
    error_code: str
    tech_code: str | None
    tech_info: str | None
    component: str
    variable: str
    event_id: int
    timestamp: str


def problem_report(event: dict[str, Any]) -> ProblemReport | None:
    """Read one ``eventData`` entry (snake_case keys); None if it reports no problem.

    A problem is variable ``Problem`` (as ChargeX reports: trigger Alerting, techCode
    CXnnn on component Connector or EVSE) or any Alerting event carrying a techCode.
    ``cleared: true`` or a false ``actualValue`` (false, 0, no, off) of ``Problem`` clears
    it. Decision: an empty (or other) ``actualValue`` of ``Problem`` raises when the entry
    says ``cleared: false`` or carries a techCode (ChargeX's own examples report a fault
    with ``actualValue: ""``), and clears otherwise.
    """
    component = event.get("component", {})
    variable = event.get("variable", {})
    tech_code = event.get("tech_code")
    is_problem = variable.get("name") == "Problem" or (
        event.get("trigger") == "Alerting" and tech_code is not None
    )
    if not is_problem:
        return None
    evse = component.get("evse") or {}
    actual = str(event.get("actual_value", "")).strip().lower()
    flag = event.get("cleared")
    if flag is True:
        cleared = True
    elif variable.get("name") != "Problem" or actual in TRUE_VALUES:
        cleared = False
    elif actual in FALSE_VALUES:
        cleared = True
    else:
        cleared = flag is None and tech_code is None
    return ProblemReport(
        connector=ConnectorRef(evse_id=evse.get("id", 0), connector_id=evse.get("connector_id")),
        raised=not cleared,
        error_code=tech_code or f"{component.get('name')}.{variable.get('name')}",
        tech_code=tech_code,
        tech_info=event.get("tech_info"),
        component=str(component.get("name")),
        variable=str(variable.get("name")),
        event_id=int(event.get("event_id", 0)),
        timestamp=str(event.get("timestamp", "")),
    )
