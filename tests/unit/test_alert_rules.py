"""deploy/prometheus: every alert has a promtool unit test, and the unit tests and the scrape
configurations pass promtool.

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
