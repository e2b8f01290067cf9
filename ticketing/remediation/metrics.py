"""Metrics of remote remediation (on the process registry)."""

from __future__ import annotations

from prometheus_client import Counter

from services.observability.metrics import REGISTRY

REMEDIATIONS = Counter(
    "chargeops_remediations_total",
    "Remote remediations finished, by playbook and outcome (succeeded = resolved remotely, "
    "failed = dispatched after the last step, stopped = taken over, done = lockout accepted, "
    "lockout_failed = a lockout the charger did not accept)",
    ["playbook", "outcome"],
    registry=REGISTRY,
)
ATTEMPTS = Counter(
    "chargeops_remediation_attempts_total",
    "Remote-fix steps tried, by command and outcome (answered, offline, timeout, refused, "
    "error, skipped)",
    ["command", "outcome"],
    registry=REGISTRY,
)
