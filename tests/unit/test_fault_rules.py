"""Fault rules without a database: priorities, the pattern language, first-match order, and
the shipped default rule set classifying every OCPP 1.6 error code and ChargeX code."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest
from pydantic import ValidationError

from ticketing.rules.defaults import DefaultRulesError, default_rules, parse_rules
from ticketing.rules.matcher import FALLBACK, classify_with, match_rule
from ticketing.rules.model import (
    CATEGORIES,
    MATCH_KEYS,
    SEVERITIES,
    Classification,
    FaultSignature,
    Rule,
    RuleIn,
    priority_of,
)

CHARGEX = "https://chargex.inl.gov"
#: every OCPP 1.6 ChargePointErrorCode but NoError -> the category its rules give
OCPP16_ERROR_CODES = {
    "ConnectorLockFailure": "connector_cable",
    "EVCommunicationError": "connector_cable",
    "GroundFailure": "ground_insulation",
    "HighTemperature": "overheating",
    "InternalError": "power_electronics",
    "LocalListConflict": "payment_rfid",
    "OtherError": "other",
    "OverCurrentFailure": "power_electronics",
    "OverVoltage": "site_power",
    "PowerMeterFailure": "power_electronics",
    "PowerSwitchFailure": "power_electronics",
    "ReaderFailure": "payment_rfid",
    "ResetFailure": "firmware",
    "UnderVoltage": "site_power",
    "WeakSignal": "communication",
}
CX_CODES = tuple(f"CX{n:03d}" for n in range(1, 27))
CX_SAFETY = {"CX002", "CX005", "CX017", "CX024", "CX026"}
CX_DRIVER_SIDE = {"CX009", "CX010", "CX020"}
OPERATING = ("available", "occupied", "reserved", "unavailable")


def rule(name: str, match: dict[str, Any], position: int = 10, **kw: Any) -> Rule:
    values: dict[str, Any] = {"category": "other", "severity": "S3", "impact": 2, "urgency": 2}
    values.update(kw)
    return Rule(name=name, match=match, position=position, id=position, **values)


def sig(error_code: str = "X", source: str = "status_notification", **kw: Any) -> FaultSignature:
    return FaultSignature(source=source, error_code=error_code, **kw)


def matches(pattern: Any, key: str = "error_code", **signature: Any) -> bool:
    return match_rule(rule("r", {key: pattern}), sig(**signature))


@pytest.fixture(scope="module")
def defaults() -> list[Rule]:
    return [r.to_rule(rule_id=i, position=i * 10) for i, r in enumerate(default_rules(), 1)]


def classify(rules: list[Rule], **signature: Any) -> Classification:
    result = classify_with(rules, sig(**signature))
    assert result.rule_id is not None
    return result


# ---------------------------------------------------------------- priority
@pytest.mark.parametrize(
    ("impact", "urgency", "priority"),
    [
        (1, 1, "P1"),
        (1, 2, "P2"),
        (2, 1, "P2"),
        (1, 3, "P3"),
        (2, 2, "P3"),
        (3, 1, "P3"),
        (2, 3, "P4"),
        (3, 2, "P4"),
        (3, 3, "P5"),
    ],
)
def test_priority_matrix(impact: int, urgency: int, priority: str) -> None:
    assert priority_of(impact, urgency) == priority


def test_priority_refuses_levels_outside_1_to_3() -> None:
    with pytest.raises(ValueError):
        priority_of(0, 2)
    with pytest.raises(ValueError):
        priority_of(2, 4)


# ---------------------------------------------------------------- patterns
def test_match_keys_are_the_signature_fields_and_code() -> None:
    assert MATCH_KEYS == {f.name for f in fields(FaultSignature)} | {"code"}


def test_glob_is_case_insensitive_and_whole_value() -> None:
    assert matches("CX0*", error_code="cx002")
    assert matches("*Temp*", error_code="HighTemperature")
    assert not matches("*Temp*", error_code="OverVoltage")
    assert matches("GroundFailure", error_code="groundfailure")
    assert not matches("Ground", error_code="GroundFailure")
    assert matches("CX00?", error_code="CX007")
    assert not matches("CX00?", error_code="CX0071")


def test_regex_is_a_full_match_and_case_sensitive() -> None:
    assert matches("re:CX00[1-5]", error_code="CX003")
    assert not matches("re:CX00[1-5]", error_code="CX0031")
    assert not matches("re:CX00[1-5]", error_code="xCX003")
    assert not matches("re:CX00[1-5]", error_code="cx003")
    assert matches("re:(?i)cx00[1-5]", error_code="CX003")


def test_list_means_any_of() -> None:
    assert matches(["OverVoltage", "Ground*"], error_code="GroundFailure")
    assert matches(["OverVoltage", "Ground*"], error_code="OverVoltage")
    assert not matches(["OverVoltage", "Ground*"], error_code="UnderVoltage")


def test_null_matches_only_a_missing_value() -> None:
    assert matches(None, key="vendor_id")
    assert matches(None, key="vendor_id", vendor_id="")  # chargers send "" for "none"
    assert not matches(None, key="vendor_id", vendor_id="ACME")
    assert matches([CHARGEX, None], key="vendor_id")
    assert matches([CHARGEX, None], key="vendor_id", vendor_id=CHARGEX)
    assert not matches([CHARGEX, None], key="vendor_id", vendor_id="ACME")


def test_a_missing_value_never_matches_a_non_null_pattern() -> None:
    assert not matches("*", key="component")
    assert not matches("re:.*", key="component")
    assert not matches(["*", "re:.*"], key="status")
    assert matches("*", key="component", component="Connector")


def test_code_matches_tech_code_or_vendor_error_code() -> None:
    assert matches("CX002", key="code", tech_code="CX002")
    assert matches("CX002", key="code", vendor_error_code="CX002")
    assert matches("CX002", key="code", tech_code="E17", vendor_error_code="CX002")
    assert not matches("CX002", key="code", tech_code="CX003")
    assert not matches("CX002", key="code")
    assert matches(None, key="code")
    assert not matches(None, key="code", vendor_error_code="CX002")


def test_all_patterns_of_a_rule_must_match() -> None:
    r = rule("r", {"source": "status_notification", "error_code": "HighTemperature"})
    assert match_rule(r, sig("HighTemperature"))
    assert not match_rule(r, sig("HighTemperature", source="notify_event"))
    assert match_rule(rule("all", {}), sig("anything", source="derived"))


@pytest.mark.parametrize(
    "pattern",
    ["re:CX(", "re:[", "", [], 7, True, ["ok", 3], [["nested"]], {"a": "b"}],
)
def test_invalid_patterns_are_refused(pattern: Any) -> None:
    body = {
        "name": "bad",
        "match": {"error_code": pattern},
        "category": "other",
        "severity": "S3",
        "impact": 2,
        "urgency": 2,
    }
    with pytest.raises(ValidationError):
        RuleIn.model_validate(body)


def test_rule_in_refuses_unknown_keys_and_half_a_rate() -> None:
    base = {"name": "r", "category": "other", "severity": "S3", "impact": 2, "urgency": 2}
    RuleIn.model_validate(base)
    for bad in (
        {"match": {"errorCode": "X"}},
        {"category": "misc"},
        {"severity": "S5"},
        {"impact": 0},
        {"urgency": 4},
        {"rate_threshold": 5},
        {"severity": "S4"},  # an S4 opening an order on every occurrence
        {"position": 0},
        {"name": ""},
        {"colour": "red"},
    ):
        with pytest.raises(ValidationError):
            RuleIn.model_validate({**base, **bad})
    ok = RuleIn.model_validate({**base, "severity": "S4", "open_order": False})
    assert not ok.open_order


def test_rule_refuses_unknown_keys_and_bad_patterns() -> None:
    with pytest.raises(ValueError, match="unknown keys"):
        rule("r", {"errorCode": "X"})
    with pytest.raises(ValueError, match="regular expression"):
        rule("r", {"error_code": "re:("})


# ---------------------------------------------------------------- first match
def test_first_enabled_match_by_position_wins() -> None:
    specific = rule("specific", {"error_code": "GroundFailure"}, 20, severity="S1", impact=1)
    broad = rule("broad", {"source": "status_notification"}, 30, severity="S2")
    earlier_disabled = rule("off", {"error_code": "*"}, 10, enabled=False, severity="S4")
    catch_all = rule("catch-all", {}, 40)
    rules = [catch_all, broad, earlier_disabled, specific]  # any order: position decides
    assert classify_with(rules, sig("GroundFailure")).rule_name == "specific"
    assert classify_with(rules, sig("OtherError")).rule_name == "broad"
    assert classify_with(rules, sig("Offline", source="derived")).rule_name == "catch-all"
    moved = rule("broad", {"source": "status_notification"}, 5, severity="S2")
    assert classify_with([moved, specific, catch_all], sig("GroundFailure")).rule_name == "broad"


def test_classification_carries_the_rule_and_its_priority() -> None:
    r = rule("r", {}, 10, severity="S1", impact=1, urgency=2, playbook="lockout", skill="x")
    result = classify_with([r], sig())
    assert (result.rule_id, result.rule_name, result.priority) == (10, "r", "P2")
    assert result.lockout and result.playbook == "lockout" and result.skill == "x"
    assert not classify_with([rule("r", {}, severity="S2")], sig()).lockout


def test_no_match_gives_the_fallback() -> None:
    assert classify_with([], sig()) == FALLBACK
    assert FALLBACK.rule_id is None and FALLBACK.open_order


# ---------------------------------------------------------------- the shipped rules
def test_default_rules_validate_and_end_with_the_only_catch_all() -> None:
    rules = default_rules()
    assert len({r.name for r in rules}) == len(rules)
    assert [r.name for r in rules if not r.match] == ["catch-all"]
    catch_all = rules[-1]
    assert (catch_all.category, catch_all.severity, catch_all.open_order) == ("other", "S3", True)
    assert all(r.category in CATEGORIES and r.severity in SEVERITIES for r in rules)
    for r in rules:
        if r.severity == "S1":
            assert r.playbook == "lockout" and r.open_order, r.name
        if r.severity == "S4":
            assert r.rate_threshold or not r.open_order, r.name


@pytest.mark.parametrize("code", OCPP16_ERROR_CODES)
@pytest.mark.parametrize("status", [None, "faulted", *OPERATING])
def test_every_ocpp16_error_code_has_a_rule(
    defaults: list[Rule], code: str, status: str | None
) -> None:
    result = classify(defaults, error_code=code, status=status, ocpp_version="1.6")
    assert result.rule_name != "catch-all"
    assert result.category == OCPP16_ERROR_CODES[code]
    if code in {"GroundFailure", "OverVoltage", "PowerSwitchFailure"}:
        assert result.severity == "S1" and result.lockout
    elif status in OPERATING:
        assert result.severity in {"S3", "S4"}, (code, status, result)
    elif code != "LocalListConflict":
        assert result.severity == "S2", (code, status, result)


def test_an_error_code_while_charging_is_degraded_not_port_down(defaults: list[Rule]) -> None:
    charging = classify(defaults, error_code="HighTemperature", status="occupied")
    faulted = classify(defaults, error_code="HighTemperature", status="faulted")
    assert (charging.category, charging.severity) == ("overheating", "S3")
    assert (faulted.category, faulted.severity) == ("overheating", "S2")
    assert faulted.playbook == "port_down_generic"
    lock = classify(defaults, error_code="ConnectorLockFailure", status="faulted")
    assert lock.playbook == "unlock_connector"
    ground = classify(defaults, error_code="GroundFailure", status="occupied")
    assert ground.severity == "S1"


def test_plain_faulted_is_port_down_in_both_versions(defaults: list[Rule]) -> None:
    v16 = classify(defaults, error_code="Faulted", status="faulted", ocpp_version="1.6")
    v201 = classify(defaults, error_code="Faulted", ocpp_version="2.0.1", connector="1/1")
    assert v16.rule_name == v201.rule_name == "status-faulted"
    assert v16.severity == "S2"


def _cx_signatures(code: str) -> list[FaultSignature]:
    return [
        # 2.0.1 NotifyEvent as csms translates it
        sig(
            code,
            source="notify_event",
            tech_code=code,
            vendor_id=CHARGEX,
            component="Connector",
            variable="Problem",
            ocpp_version="2.0.1",
        ),
        # a plain techCode without the vendor id
        sig(code, source="notify_event", tech_code=code, component="EVSE"),
        # 1.6 StatusNotification: errorCode OtherError (or Faulted) + vendorErrorCode
        sig("OtherError", vendor_id=CHARGEX, vendor_error_code=code, status="faulted"),
        sig("Faulted", vendor_id=CHARGEX, vendor_error_code=code, status="faulted"),
    ]


@pytest.mark.parametrize("code", CX_CODES)
def test_every_chargex_code_has_its_rule(defaults: list[Rule], code: str) -> None:
    for signature in _cx_signatures(code):
        result = classify_with(defaults, signature)
        assert result.rule_name.startswith(code.lower() + "-"), (signature, result)
        if code in CX_SAFETY:
            assert result.severity == "S1" and result.lockout
        elif code in CX_DRIVER_SIDE:
            assert result.severity == "S4"
            assert (result.rate_threshold, result.rate_window_s) == (5, 3600)
        elif code == "CX018":
            assert result.severity == "S3"
        else:
            assert result.severity == "S2"


def test_chargex_codes_from_a_charging_16_connector_are_degraded(defaults: list[Rule]) -> None:
    signature = sig("OtherError", vendor_id=CHARGEX, vendor_error_code="CX003", status="occupied")
    result = classify_with(defaults, signature)
    assert (result.category, result.severity) == ("overheating", "S3")
    safety = sig("OtherError", vendor_id=CHARGEX, vendor_error_code="CX017", status="occupied")
    assert classify_with(defaults, safety).severity == "S1"


def test_a_cx_code_of_another_vendor_is_not_chargex(defaults: list[Rule]) -> None:
    signature = sig("OtherError", vendor_id="ACME", vendor_error_code="CX002", status="faulted")
    assert classify_with(defaults, signature).rule_name == "ocpp16-other-error"


@pytest.mark.parametrize(
    ("component", "category", "severity"),
    [
        ("Connector", "connector_cable", "S2"),
        ("EVSE", "power_electronics", "S2"),
        ("ChargingStation", "other", "S2"),
        ("Controller", "firmware", "S3"),
        ("ISO15118Ctrlr", "firmware", "S3"),
        ("OCPPCommCtrlr", "communication", "S3"),
        ("TokenReader", "payment_rfid", "S3"),
        ("Display", "display_hmi", "S3"),
        ("ExternalTemperatureSensor", "overheating", "S2"),
        ("RCD", "ground_insulation", "S1"),
        ("TiltSensor", "vandalism", "S1"),
    ],
)
def test_201_problem_reports_by_component(
    defaults: list[Rule], component: str, category: str, severity: str
) -> None:
    result = classify(
        defaults,
        source="notify_event",
        error_code=f"{component}.Problem",
        component=component,
        variable="Problem",
        ocpp_version="2.0.1",
    )
    assert (result.category, result.severity) == (category, severity)


@pytest.mark.parametrize(
    ("event_type", "category", "severity", "open_order", "rate"),
    [
        ("TamperDetectionActivated", "vandalism", "S1", True, None),
        ("FailedToAuthenticateAtCsms", "communication", "S3", True, 5),
        ("InvalidFirmwareSignature", "firmware", "S2", True, None),
        ("InvalidCentralSystemCertificate", "communication", "S3", True, None),
        ("InvalidChargePointCertificate", "communication", "S3", True, None),
        ("InvalidTLSVersion", "communication", "S3", True, None),
        ("InvalidTLSCipherSuite", "communication", "S3", True, None),
        ("SettingSystemTime", "other", "S4", False, None),
    ],
)
def test_security_events(
    defaults: list[Rule],
    event_type: str,
    category: str,
    severity: str,
    open_order: bool,
    rate: int | None,
) -> None:
    result = classify(defaults, source="security_event", error_code=event_type)
    assert (result.category, result.severity) == (category, severity)
    assert (result.open_order, result.rate_threshold) == (open_order, rate)


@pytest.mark.parametrize(
    ("kind", "category", "severity", "priority"),
    [
        ("Offline", "communication", "S2", "P2"),
        ("RebootLoop", "firmware", "S2", "P2"),
        ("Flapping", "connector_cable", "S3", "P4"),
        ("SiteDown", "site_power", "S2", "P1"),
    ],
)
def test_derived_faults(
    defaults: list[Rule], kind: str, category: str, severity: str, priority: str
) -> None:
    result = classify(defaults, source="derived", error_code=kind, connector="0")
    assert (result.category, result.severity, result.priority) == (category, severity, priority)


def test_anything_else_reaches_the_catch_all(defaults: list[Rule]) -> None:
    result = classify(defaults, source="notify_event", error_code="Mystery.Thing")
    assert (result.rule_name, result.category, result.severity) == ("catch-all", "other", "S3")
    assert result.open_order


def test_rule_set_documents_are_checked() -> None:
    fields_ = "category: other, severity: S3, impact: 2, urgency: 2"
    catch_all = f"{{name: all, match: {{}}, {fields_}}}"
    one = f"{{name: one, match: {{error_code: X}}, {fields_}}}"
    assert len(parse_rules(f"rules: [{one}, {catch_all}]")) == 2
    for bad in (
        "[]",
        f"rules: [{catch_all}, {one}]",
        f"rules: [{one}]",
        f"rules: [{one}, {one}, {catch_all}]",
        f"rules: [{one.replace('impact: 2', 'impact: 2, position: 5')}, {catch_all}]",
        f"rules: [{one.replace('X', 're:(')}, {catch_all}]",
    ):
        with pytest.raises(DefaultRulesError):
            parse_rules(bad)
