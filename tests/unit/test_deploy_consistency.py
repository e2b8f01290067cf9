"""deploy/ and the README against the code: every metric and label the alert rules, their
unit tests and the Grafana dashboard use is one the process exports; no metric has an
unbounded label; every CHARGEOPS_* variable the compose files, Kubernetes manifests and
image set is a setting with a valid value (interpolation defaults too), and so is every one
deploy/ and the README name in prose; the commands and probes they use exist; the README's settings
table lists every setting with its real default.

promtool (deploy/README.md) checks the PromQL itself; it cannot know which names the
process exports, which is what goes stale when a metric is renamed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

import ticketing.remediation.metrics
import ticketing.webhooks.delivery  # noqa: F401  (registers the webhook metrics)
from services.cli import app as cli_app
from services.observability.metrics import REGISTRY
from services.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))

#: labels Prometheus' scrape configs add (deploy/prometheus/*.yml, Kubernetes discovery)
TARGET_LABELS = {"job", "instance", "mode", "role", "namespace", "pod"}
#: every label a ChargeOps metric may have: each takes values from a bounded set
BOUNDED_LABELS = {
    "ocpp_version",
    "direction",
    "message_type",
    "action",
    "code",
    "reason",
    "state",
    "name",
    "outcome",
    "consumer",
    "type",
    "severity",
    "category",
    "source",
    "priority",
    "resolution",
    "target",
    "playbook",
    "command",
}
SELECTOR = re.compile(r"\b(chargeops_[a-z0-9_]+)\s*(?:\{([^}]*)\})?")
MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")


def exported() -> dict[str, set[str]]:
    """Series name -> label names, as /metrics shows them (suffixes included)."""
    series: dict[str, set[str]] = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    # Labelled metrics show no sample before their first child: take them from the
    # collectors themselves.
    for collector in list(REGISTRY._collector_to_names):  # noqa: SLF001
        name = getattr(collector, "_name", None)
        labels = set(getattr(collector, "_labelnames", ()))
        kind = getattr(collector, "_type", None)
        if name is None or not labels:
            continue
        if kind == "counter":
            series.setdefault(f"{name}_total", set()).update(labels)
        elif kind == "histogram":
            series.setdefault(f"{name}_bucket", set()).update(labels | {"le"})
            series.setdefault(f"{name}_count", set()).update(labels)
            series.setdefault(f"{name}_sum", set()).update(labels)
        else:
            series.setdefault(name, set()).update(labels)
    return series


def rules() -> Iterator[dict[str, Any]]:
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        yield from group["rules"]


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every rule and dashboard query."""
    for rule in rules():
        yield f"alerts.yml {rule.get('alert') or rule.get('record')}", rule["expr"]
    for path in DASHBOARDS:
        for panel in panels(json.loads(path.read_text())["panels"]):
            for target in panel.get("targets", []):
                yield f"{path.name} panel {panel.get('title')!r}", target["expr"]
    for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for series in test.get("input_series", []):
            yield f"alerts_test.yml {test.get('name')!r}", series["series"]
        for check in test.get("promql_expr_test", []):
            yield f"alerts_test.yml {test.get('name')!r}", check["expr"]


def prose() -> Iterator[tuple[str, str]]:
    """Annotations and panel descriptions: they name metrics for the on-call to look at."""
    for rule in rules():
        for text in rule.get("annotations", {}).values():
            yield f"alerts.yml {rule['alert']}", text
    for path in DASHBOARDS:
        for panel in panels(json.loads(path.read_text())["panels"]):
            if panel.get("description"):
                yield f"{path.name} panel {panel.get('title')!r}", panel["description"]


def test_every_metric_and_label_deploy_uses_is_exported() -> None:
    series = exported()
    wrong = []
    for where, expr in queries():
        used: set[str] = set()
        for name, matchers in SELECTOR.findall(expr):
            if name not in series:
                wrong.append(f"{where}: no metric {name}")
                continue
            used |= series[name]
            for label in MATCHER.findall(matchers):
                if label not in series[name] | TARGET_LABELS:
                    wrong.append(f"{where}: {name} has no label {label!r}")
        for grouping in GROUPING.findall(expr):
            for label in filter(None, (x.strip() for x in grouping.split(","))):
                if label not in used | TARGET_LABELS:
                    wrong.append(f"{where}: no metric of the query has a label {label!r}")
    for where, text in prose():
        for name in re.findall(r"\bchargeops_[a-z0-9_]+", text):
            if not {name, f"{name}_total", f"{name}_count"} & series.keys():
                wrong.append(f"{where}: text names no metric {name}")
    assert not wrong, "\n".join(wrong)


def test_queries_were_found() -> None:
    # The parsing above must not pass by finding nothing.
    found = list(queries())
    assert sum(where.startswith("alerts.yml") for where, _ in found) >= 20
    assert sum(".json" in where for where, _ in found) >= 20


def test_no_metric_has_an_unbounded_label() -> None:
    unbounded = {
        f"{name}{{{label}}}"
        for name, labels in exported().items()
        for label in labels - BOUNDED_LABELS - {"le", "quantile"}
        if name.startswith("chargeops_")
    }
    assert not unbounded, f"labels without a bounded value set (no charger ids): {unbounded}"


# ------------------------------------------------------------------ deploy/ settings


def setting_names() -> set[str]:
    return {f"CHARGEOPS_{name.upper()}" for name in Settings.model_fields}


def deploy_environment() -> Iterator[tuple[str, str, str]]:
    """(file, variable, value) of every CHARGEOPS_* variable deploy/ hands the process."""
    for path in sorted(DEPLOY.glob("compose*.yaml")):
        compose = yaml.safe_load(path.read_text())
        for service, spec in compose["services"].items():
            environment = spec.get("environment") or {}
            if isinstance(environment, list):
                environment = dict(item.split("=", 1) for item in environment)
            for key, value in environment.items():
                if key.startswith("CHARGEOPS_"):
                    yield f"{path.name} {service}", key, str(value)
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in ("ConfigMap", "Secret"):
                data = {**doc.get("data", {}), **doc.get("stringData", {})}
                for key, value in data.items():
                    yield path.name, key, str(value)
            if doc and doc.get("kind") == "Deployment":
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    for item in container.get("env", []):
                        yield path.name, item["name"], str(item.get("value", ""))
    dockerfile = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    for line in dockerfile.splitlines():
        if line.startswith("ENV "):
            for key, value in re.findall(r"(CHARGEOPS_[A-Z0-9_]+)=(\S+)", line):
                yield "Dockerfile", key, value


def test_deploy_sets_only_real_settings_with_valid_values() -> None:
    known = setting_names()
    found = list(deploy_environment())
    assert len(found) >= 10
    wrong = [f"{where}: {key} is no setting" for where, key, _ in found if key not in known]
    assert not wrong, "\n".join(wrong)
    # Values (secrets aside) must pass validation: a ${NAME:-default} interpolation with its
    # default, a required ${NAME:?...} or ${NAME} with a plain stand-in.
    for where, key, value in found:
        if key == "CHARGEOPS_ADMIN_TOKEN":
            continue
        resolved = re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)
        resolved = re.sub(r"\$\{[A-Z0-9_]+(?::\?[^}]*)?\}", "standin1", resolved)
        field = key.removeprefix("CHARGEOPS_").lower()
        try:
            Settings(_env_file=None, **{field: resolved})  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"{where}: {key}={value!r} is refused: {exc}")


#: CHARGEOPS_* names deploy/ uses that are no setting: compose's published ports and the
#: JetStream stream name in CHARGEOPS_BUS_URL.
NOT_SETTINGS = {"CHARGEOPS_OCPP_PUBLISH", "CHARGEOPS_HTTP_PUBLISH", "CHARGEOPS_EVENTS"}


def test_deploy_text_names_only_real_settings() -> None:
    # Comments and READMEs tell operators which variable to set: a renamed setting must
    # not live on there.
    known = setting_names() | NOT_SETTINGS
    files = [p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix != ".json"]
    named = {
        (path.relative_to(ROOT).as_posix(), name)
        for path in [*files, ROOT / "README.md"]
        for name in re.findall(r"\bCHARGEOPS_[A-Z0-9_]*[A-Z0-9]\b", path.read_text())
    }
    assert len(named) >= 20
    wrong = sorted(f"{where}: {name}" for where, name in named if name not in known)
    assert not wrong, "\n".join(wrong)


def test_deploy_runs_commands_that_exist() -> None:
    commands = set(typer.main.get_command(cli_app).commands)  # type: ignore[attr-defined]
    used: list[tuple[str, str]] = []
    for path in sorted(DEPLOY.glob("compose*.yaml")):
        for service, spec in yaml.safe_load(path.read_text())["services"].items():
            if str(spec.get("image", "")).startswith("chargeops") and "command" in spec:
                used.append((f"{path.name} {service}", spec["command"][0]))
    for doc in yaml.safe_load_all((DEPLOY / "k8s" / "deployment.yaml").read_text()):
        for container in doc["spec"]["template"]["spec"]["containers"]:
            used.append(("deployment.yaml", (container.get("args") or container["command"])[0]))
    cmd = re.search(r'^CMD \["([a-z-]+)"', (DEPLOY / "Dockerfile").read_text(), re.M)
    assert cmd is not None
    used.append(("Dockerfile", cmd.group(1)))
    assert {"serve", "csms", "ticketing", "migrate"} <= {command for _, command in used}
    wrong = [f"{where}: chargeops {command}" for where, command in used if command not in commands]
    assert not wrong, "\n".join(wrong)


# ------------------------------------------------------------------ README settings table


def readme_settings() -> dict[str, str]:
    """Setting -> default as the README's table gives it (`A` / `B` rows split)."""
    table: dict[str, str] = {}
    row = re.compile(r"^\|\s*((?:`CHARGEOPS_[A-Z0-9_]+`\s*/?\s*)+)\|\s*([^|]*?)\s*\|")
    for line in (ROOT / "README.md").read_text().splitlines():
        match = row.match(line)
        if match is None:
            continue
        names = re.findall(r"CHARGEOPS_[A-Z0-9_]+", match.group(1))
        defaults = [d.strip().strip("`") for d in match.group(2).split(" / ")]
        if len(defaults) == 1:
            defaults *= len(names)
        assert len(defaults) == len(names), line
        table.update(zip(names, defaults, strict=True))
    return table


def shown(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_readme_lists_every_setting_with_its_default() -> None:
    table = readme_settings()
    defaults = {
        f"CHARGEOPS_{name.upper()}": shown(field.default)
        for name, field in Settings.model_fields.items()
    }
    assert sorted(set(defaults) - set(table)) == [], "settings missing from the README table"
    assert sorted(set(table) - set(defaults)) == [], "README table rows that are no setting"
    wrong = {name: (table[name], real) for name, real in defaults.items() if table[name] != real}
    assert not wrong, f"README default != real default: {wrong}"


def test_deploy_readme_describes_every_alert() -> None:
    # Rows name alerts as "ChargeOpsA / B / C": B and C stand for ChargeOpsB, ChargeOpsC.
    readme = (DEPLOY / "README.md").read_text()
    table = readme[readme.index("| alert | fires when |") :]
    described: set[str] = set()
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        for part in line.split("|")[1].split("/"):
            name = part.strip().split(" (")[0]
            described.add(name if name.startswith("ChargeOps") else f"ChargeOps{name}")
    alerts = {rule["alert"] for rule in rules()}
    assert sorted(alerts - described) == [], "alerts missing from deploy/README.md"
    assert sorted(described - alerts) == [], "deploy/README.md rows that are no alert"
