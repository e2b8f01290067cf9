"""Translation of OCPP payloads into normalized values (pure, no server)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest

from csms.v16 import translate as t16
from csms.v201 import translate as t201
from services.bus.contracts import ConnectorRef, NormalizedStatus

N = NormalizedStatus


# ------------------------------------------------------------------ OCPP 1.6
@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("Available", N.available),
        ("Preparing", N.occupied),
        ("Charging", N.occupied),
        ("SuspendedEVSE", N.occupied),
        ("SuspendedEV", N.occupied),
        ("Finishing", N.occupied),
        ("Reserved", N.reserved),
        ("Unavailable", N.unavailable),
        ("Faulted", N.faulted),
    ],
)
def test_v16_normalize_status(status: str, expected: NormalizedStatus) -> None:
    assert t16.normalize_status(status) is expected


def _schema_enum(folder: str, name: str, field: str) -> set[str]:
    path = resources.files("ocpp") / folder / "schemas" / f"{name}.json"
    schema = json.loads(path.read_text(encoding="utf-8-sig"))
    prop = schema["properties"][field]
    if "$ref" in prop:
        prop = schema["definitions"][prop["$ref"].rsplit("/", 1)[-1]]
    return set(prop["enum"])


def test_v16_every_schema_status_is_mapped() -> None:
    assert _schema_enum("v16", "StatusNotification", "status") == set(t16.STATUS)


@pytest.mark.parametrize(
    ("status", "error_code", "vendor_error_code", "expected"),
    [
        ("Available", "NoError", None, None),
        ("Charging", "NoError", None, None),
        # A vendor code alone, with NoError and not Faulted, reports no fault.
        ("Charging", "NoError", "CX001", None),
        ("Faulted", "NoError", None, ("Faulted", None)),
        ("Faulted", "NoError", "CX017", ("Faulted", "CX017")),
        ("Faulted", "GroundFailure", "CX002", ("GroundFailure", "CX002")),
        ("Faulted", "OtherError", "CX017", ("OtherError", "CX017")),
        # An error while not Faulted (a warning, e.g. derating) is still a fault report.
        ("Charging", "HighTemperature", None, ("HighTemperature", None)),
        ("Available", "WeakSignal", None, ("WeakSignal", None)),
    ],
)
def test_v16_fault_signature(
    status: str,
    error_code: str,
    vendor_error_code: str | None,
    expected: tuple[str, str | None] | None,
) -> None:
    assert t16.fault_signature(status, error_code, vendor_error_code) == expected


# ------------------------------------------------------------------ OCPP 2.0.1
@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("Available", N.available),
        ("Occupied", N.occupied),
        ("Reserved", N.reserved),
        ("Unavailable", N.unavailable),
        ("Faulted", N.faulted),
    ],
)
def test_v201_normalize_status(status: str, expected: NormalizedStatus) -> None:
    assert t201.normalize_status(status) is expected


def test_v201_every_schema_status_is_mapped() -> None:
    assert _schema_enum("v201", "StatusNotificationRequest", "connectorStatus") == set(t201.STATUS)


def chargex(**overrides: Any) -> dict[str, Any]:
    """A ChargeX problem report entry, with snake_case keys as handlers receive them."""
    entry: dict[str, Any] = {
        "event_id": 17,
        "timestamp": "2026-11-27T10:00:00Z",
        "trigger": "Alerting",
        "actual_value": "true",
        "tech_code": "CX017",
        "tech_info": "contactor welded",
        "event_notification_type": "HardWiredNotification",
        "component": {"name": "Connector", "evse": {"id": 1, "connector_id": 1}},
        "variable": {"name": "Problem"},
    }
    entry.update(overrides)
    return entry


def test_v201_chargex_problem_raised() -> None:
    report = t201.problem_report(chargex())
    assert report is not None
    assert report.connector == ConnectorRef(evse_id=1, connector_id=1)
    assert report.connector.key == "1/1"
    assert report.raised is True
    assert report.error_code == "CX017"
    assert report.tech_code == "CX017"
    assert report.tech_info == "contactor welded"
    assert report.component == "Connector"
    assert report.variable == "Problem"
    assert report.event_id == 17
    assert report.timestamp == "2026-11-27T10:00:00Z"


@pytest.mark.parametrize("actual", ["true", "TRUE", " True ", "1", "yes", "on"])
def test_v201_true_values_raise(actual: str) -> None:
    report = t201.problem_report(chargex(actual_value=actual))
    assert report is not None
    assert report.raised is True


@pytest.mark.parametrize("actual", ["false", "0", "no", "off", " FALSE "])
def test_v201_problem_false_clears(actual: str) -> None:
    report = t201.problem_report(chargex(actual_value=actual))
    assert report is not None
    assert report.raised is False
    assert report.error_code == "CX017"


@pytest.mark.parametrize("overrides", [{}, {"cleared": False}])
def test_v201_problem_with_an_empty_value_and_a_tech_code_raises(
    overrides: dict[str, Any],
) -> None:
    """ChargeX's example reports a fault with actualValue "" (and cleared false)."""
    report = t201.problem_report(chargex(actual_value="", **overrides))
    assert report is not None
    assert report.raised is True
    assert report.error_code == "CX017"


def test_v201_problem_with_an_empty_value_and_cleared_false_raises() -> None:
    entry = chargex(actual_value="", cleared=False)
    del entry["tech_code"]
    report = t201.problem_report(entry)
    assert report is not None
    assert report.raised is True


def test_v201_problem_with_an_empty_value_and_nothing_else_clears() -> None:
    entry = chargex(actual_value="")
    del entry["tech_code"]
    report = t201.problem_report(entry)
    assert report is not None
    assert report.raised is False


def test_v201_cleared_flag_clears_even_with_a_true_value() -> None:
    report = t201.problem_report(chargex(cleared=True))
    assert report is not None
    assert report.raised is False


def test_v201_problem_without_actual_value_is_cleared() -> None:
    entry = chargex()
    del entry["actual_value"]
    del entry["tech_code"]
    report = t201.problem_report(entry)
    assert report is not None
    assert report.raised is False


def test_v201_evse_level_problem() -> None:
    report = t201.problem_report(
        chargex(component={"name": "EVSE", "evse": {"id": 2}}, tech_code="CX015")
    )
    assert report is not None
    assert report.connector == ConnectorRef(evse_id=2, connector_id=None)
    assert report.connector.key == "2"
    assert report.component == "EVSE"


def test_v201_station_level_problem_without_evse() -> None:
    report = t201.problem_report(chargex(component={"name": "ChargingStation"}))
    assert report is not None
    assert report.connector == ConnectorRef(evse_id=0)
    assert report.connector.key == "0"


def test_v201_problem_without_tech_code_names_component_and_variable() -> None:
    entry = chargex()
    del entry["tech_code"]
    report = t201.problem_report(entry)
    assert report is not None
    assert report.raised is True
    assert report.tech_code is None
    assert report.error_code == "Connector.Problem"


def test_v201_alerting_with_tech_code_on_another_variable_is_a_problem() -> None:
    report = t201.problem_report(
        chargex(variable={"name": "Temperature"}, actual_value="93", tech_code="CX003")
    )
    assert report is not None
    # Only a Problem variable is cleared by its value; here the alert itself is the fault.
    assert report.raised is True
    assert report.error_code == "CX003"
    assert report.variable == "Temperature"
    cleared = t201.problem_report(
        chargex(variable={"name": "Temperature"}, actual_value="40", cleared=True)
    )
    assert cleared is not None
    assert cleared.raised is False


@pytest.mark.parametrize(
    "entry",
    [
        # Periodic availability report.
        {
            "event_id": 1,
            "timestamp": "2026-11-27T10:00:00Z",
            "trigger": "Periodic",
            "actual_value": "Available",
            "event_notification_type": "HardWiredNotification",
            "component": {"name": "Connector", "evse": {"id": 1, "connector_id": 1}},
            "variable": {"name": "AvailabilityState"},
        },
        # An alert without a techCode on another variable.
        {
            "event_id": 2,
            "timestamp": "2026-11-27T10:00:00Z",
            "trigger": "Alerting",
            "actual_value": "80",
            "event_notification_type": "CustomMonitor",
            "component": {"name": "EVSE", "evse": {"id": 1}},
            "variable": {"name": "Temperature"},
        },
        # A delta with a techCode is not an alert.
        {
            "event_id": 3,
            "timestamp": "2026-11-27T10:00:00Z",
            "trigger": "Delta",
            "actual_value": "12",
            "tech_code": "X1",
            "event_notification_type": "HardWiredMonitor",
            "component": {"name": "EVSE", "evse": {"id": 1}},
            "variable": {"name": "Power"},
        },
    ],
    ids=["periodic-availability", "alert-without-techcode", "delta-with-techcode"],
)
def test_v201_non_problem_events_return_none(entry: dict[str, Any]) -> None:
    assert t201.problem_report(entry) is None


def test_v201_a_bare_clearing_of_another_variable_clears_only_what_is_open() -> None:
    """``cleared: true`` without techCode on a variable that is no Problem reports no
    problem of its own: it may only clear one still open there (``open_only``)."""
    entry = {
        "event_id": 4,
        "timestamp": "2026-11-27T10:05:00Z",
        "trigger": "Alerting",
        "actual_value": "40",
        "cleared": True,
        "cause": 2,
        "event_notification_type": "CustomMonitor",
        "component": {"name": "EVSE", "instance": "Main", "evse": {"id": 1}},
        "variable": {"name": "Temperature", "instance": "Cable"},
    }
    report = t201.problem_report(entry)
    assert report is not None
    assert (report.raised, report.open_only, report.cause) == (False, True, 2)
    assert report.location == (1, None, "EVSE", "Main", "Temperature", "Cable")
    problem = t201.problem_report(chargex())
    assert problem is not None and problem.open_only is False
