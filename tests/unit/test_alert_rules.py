"""deploy/prometheus: every alert has a promtool unit test, the unit tests and the scrape
configurations pass promtool, and every scrape job an alert selects exists in every
Prometheus configuration shipped (compose, distributed, Kubernetes).

promtool is no Python package: the tests that run it find it on PATH or in $PROMTOOL
(`.ci/run` unpacks Debian's `prometheus` package for it) and are skipped without it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERT_TESTS = PROMETHEUS / "alerts_test.yml"
CONFIGS = sorted(PROMETHEUS.glob("prometheus*.yml"))
K8S = ROOT / "deploy" / "k8s"


def rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
    ]


def promtool() -> str:
    found = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not found:
        pytest.skip("promtool not found (PATH or $PROMTOOL; deploy/README.md)")
    return found


def run(*args: str) -> None:
    done = subprocess.run(args, cwd=PROMETHEUS, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    fired: set[str] = set()
    for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for check in test.get("alert_rule_test", []):
            if check.get("exp_alerts"):
                fired.add(check["alertname"])
    alerts = {rule["alert"] for rule in rules()}
    assert len(alerts) >= 20
    assert sorted(alerts - fired) == [], "alerts without a unit test in alerts_test.yml"


def test_alert_rules_pass_promtool() -> None:
    tool = promtool()
    run(tool, "check", "rules", ALERTS.name)
    run(tool, "test", "rules", ALERT_TESTS.name)


@pytest.mark.parametrize("config", CONFIGS, ids=[path.name for path in CONFIGS])
def test_scrape_config_passes_promtool(config: Path, tmp_path: Path) -> None:
    tool = promtool()
    # Debian's promtool is built without Kubernetes discovery: check the rest of the file
    # with static targets in its place.
    text = re.sub(
        r"kubernetes_sd_configs:\n\s+- role: pod", "static_configs: []", config.read_text()
    )
    shutil.copy(ALERTS, tmp_path / ALERTS.name)
    (tmp_path / config.name).write_text(text)
    done = subprocess.run(
        [tool, "check", "config", config.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def jobs(config: Path) -> set[str]:
    """Job labels a configuration's targets get: job names, or what relabelling sets."""
    names: set[str] = set()
    for scrape in yaml.safe_load(config.read_text())["scrape_configs"]:
        names.add(scrape["job_name"])
        for relabel in scrape.get("relabel_configs", []):
            if relabel.get("target_label") == "job":
                names.add(relabel["replacement"])
    return names


@pytest.mark.parametrize("config", CONFIGS, ids=[path.name for path in CONFIGS])
def test_every_job_the_alerts_select_is_scraped(config: Path) -> None:
    selected = {job for rule in rules() for job in re.findall(r'\bjob="([^"]+)"', rule["expr"])}
    assert {"chargeops", "chargeops-readyz"} <= selected
    assert sorted(selected - jobs(config)) == [], f"{config.name} scrapes no such job"


def test_kubernetes_readyz_probe_targets_the_shipped_pods() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus-kubernetes.yml").read_text())
    (probe,) = (s for s in config["scrape_configs"] if s["job_name"] == "chargeops-readyz")
    keep = next(r for r in probe["relabel_configs"] if r.get("action") == "keep")
    app, port = keep["regex"].split(";")
    address = next(r for r in probe["relabel_configs"] if r.get("target_label") == "__address__")
    service = address["replacement"].split(".")[0]

    resources = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    docs = [
        doc
        for name in resources
        for doc in yaml.safe_load_all((K8S / name).read_text())
        if doc is not None
    ]
    pod_specs = [
        doc["spec"]["template"]
        for doc in docs
        if doc["kind"] == "Deployment"
        and doc["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == app
    ]
    assert pod_specs, f"no Deployment of pods labelled {app}"
    ports = {
        p["name"]
        for spec in pod_specs
        for container in spec["spec"]["containers"]
        for p in container["ports"]
    }
    assert port in ports
    services = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "Service"}
    assert service in services, f"the probe goes through Service {service}, which is not applied"
    selector = services[service]["spec"]["selector"]
    assert selector["app.kubernetes.io/name"] != app, "the blackbox Service selects ChargeOps pods"
    port_number = int(address["replacement"].rsplit(":", 1)[1])
    assert port_number in {p["port"] for p in services[service]["spec"]["ports"]}
