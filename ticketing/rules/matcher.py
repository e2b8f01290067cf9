"""Matching fault signatures against rules: first enabled match by position wins.

Pattern semantics are those of :mod:`ticketing.rules.patterns` (glob, ``re:`` regex, list
= any of, null = missing). The key ``code`` matches the tech_code or the vendor_error_code
(2.0.1 sends a techCode, 1.6 a vendorErrorCode; ChargeX codes arrive both ways): a
pattern matches if either present value matches, and ``null`` if neither is present.
"""

from __future__ import annotations

from collections.abc import Sequence

from ticketing.rules.model import Classification, FaultSignature, Rule

#: the answer when no rule matches (only possible if the catch-all is missing)
FALLBACK = Classification(
    rule_id=None,
    rule_name="(no rule matched)",
    category="other",
    severity="S3",
    impact=2,
    urgency=2,
    priority="P3",
    sla_policy=None,
    playbook="none",
    skill="general",
    open_order=True,
    rate_threshold=None,
    rate_window_s=None,
)


def _values(signature: FaultSignature, key: str) -> tuple[str | None, ...]:
    if key == "code":
        present = tuple(v for v in (signature.tech_code, signature.vendor_error_code) if v)
        return present or (None,)
    value: str | None = getattr(signature, key)
    return (value or None,)


def match_rule(rule: Rule, signature: FaultSignature) -> bool:
    """True if every pattern of ``rule`` matches ``signature`` (enabled is not checked)."""
    return all(any(test(v) for v in _values(signature, key)) for key, test in rule.tests)


def first_match(rules: Sequence[Rule], signature: FaultSignature) -> Rule | None:
    """The first enabled rule, by ascending position, that matches ``signature``."""
    for rule in sorted(rules, key=lambda r: r.position):
        if rule.enabled and match_rule(rule, signature):
            return rule
    return None


def classify_with(rules: Sequence[Rule], signature: FaultSignature) -> Classification:
    """Classify ``signature`` with ``rules``; :data:`FALLBACK` if none matches."""
    rule = first_match(rules, signature)
    return rule.classification() if rule is not None else FALLBACK
