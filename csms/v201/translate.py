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
    component_instance: str | None = None
    variable_instance: str | None = None
    #: the eventId this entry names as its cause (a clearing may name the raise)
    cause: int | None = None
    #: a ``cleared: true`` entry that is no problem report by itself: it clears only a
    #: problem still open on its component and variable
    open_only: bool = False

    @property
    def location(self) -> tuple[object, ...]:
        """Where the problem is: EVSE, connector, component and variable (with instances)."""
        return (
            self.connector.evse_id,
            self.connector.connector_id,
            self.component,
            self.component_instance,
            self.variable,
            self.variable_instance,
        )


def problem_report(event: dict[str, Any]) -> ProblemReport | None:
    """Read one ``eventData`` entry (snake_case keys); None if it neither reports nor
    clears a problem.

    A problem is variable ``Problem`` (as ChargeX reports: trigger Alerting, techCode
    CXnnn on component Connector or EVSE) or any Alerting event carrying a techCode.
    ``cleared: true`` or a false ``actualValue`` (false, 0, no, off) of ``Problem`` clears
    it; any other ``cleared: true`` entry may clear a problem still open on its component
    and variable (``open_only``). Decision: an empty (or other) ``actualValue`` of
    ``Problem`` raises when the entry says ``cleared: false`` or carries a techCode
    (ChargeX's own examples report a fault with ``actualValue: ""``), and clears otherwise.
    """
    component = event.get("component", {})
    variable = event.get("variable", {})
    tech_code = event.get("tech_code")
    is_problem = variable.get("name") == "Problem" or (
        event.get("trigger") == "Alerting" and tech_code is not None
    )
    flag = event.get("cleared")
    if not is_problem and flag is not True:
        return None
    evse = component.get("evse") or {}
    actual = str(event.get("actual_value", "")).strip().lower()
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
        component_instance=component.get("instance"),
        variable_instance=variable.get("instance"),
        cause=event.get("cause"),
        open_only=not is_problem,
    )


@dataclass(frozen=True)
class AvailabilityState:
    """A NotifyEvent entry reporting variable ``AvailabilityState`` of a Connector or an
    EVSE: its status, in StatusNotification's words (ConnectorStatusEnumType)."""

    evse_id: int
    #: None for the EVSE's own state
    connector_id: int | None
    status: str
    timestamp: str


def availability_state(event: dict[str, Any]) -> AvailabilityState | None:
    """Read one ``eventData`` entry (snake_case keys); None unless it reports the
    AvailabilityState of a Connector (with its EVSE and connector id) or of an EVSE with
    a status StatusNotification knows (the ChargingStation's own is not a connector's)."""
    component = event.get("component", {})
    variable = event.get("variable", {})
    if variable.get("name") != "AvailabilityState":
        return None
    evse = component.get("evse") or {}
    name = component.get("name")
    status = str(event.get("actual_value", "")).strip()
    if status not in STATUS or "id" not in evse or name not in ("Connector", "EVSE"):
        return None
    connector_id = evse.get("connector_id") if name == "Connector" else None
    if name == "Connector" and connector_id is None:
        return None
    return AvailabilityState(
        evse_id=int(evse["id"]),
        connector_id=connector_id,
        status=status,
        timestamp=str(event.get("timestamp", "")),
    )
