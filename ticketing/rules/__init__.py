"""Fault rules: every fault a charger reports (and every derived fault) is classified by the
first enabled matching rule into a category, severity, priority and what to do about it.

``model`` holds the vocabulary, ``patterns`` the match language, ``matcher`` the pure
matching, ``defaults`` the shipped rule set, ``store`` the table, its cache and its edits.
"""

from ticketing.rules.matcher import classify_with, match_rule
from ticketing.rules.model import (
    CATEGORIES,
    SEVERITIES,
    Classification,
    FaultSignature,
    Rule,
    RuleIn,
    priority_of,
)
from ticketing.rules.store import classify, seed_defaults

__all__ = [
    "CATEGORIES",
    "SEVERITIES",
    "Classification",
    "FaultSignature",
    "Rule",
    "RuleIn",
    "classify",
    "classify_with",
    "match_rule",
    "priority_of",
    "seed_defaults",
]
