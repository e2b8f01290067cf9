"""The default rule set shipped in ``default_rules.yaml``, loaded and checked.

The file is package data (read with importlib.resources, parsed with ``yaml.safe_load``),
validated rule by rule with :class:`RuleIn`. Its order is the evaluation order, so it
must not set positions; the seeding numbers them 10, 20, ...
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import yaml
from pydantic import ValidationError

from ticketing.rules.model import RuleIn

DEFAULT_RULES_FILE = "default_rules.yaml"


class DefaultRulesError(ValueError):
    """``default_rules.yaml`` is not a valid rule set."""


def parse_rules(text: str) -> tuple[RuleIn, ...]:
    """Validate a rule-set document (``rules:`` list); the catch-all must be last and only."""
    document: Any = yaml.safe_load(text)
    if not isinstance(document, dict) or not isinstance(document.get("rules"), list):
        raise DefaultRulesError("expected a mapping with a 'rules' list")
    rules: list[RuleIn] = []
    for index, raw in enumerate(document["rules"]):
        try:
            rule = RuleIn.model_validate(raw)
        except ValidationError as exc:
            raise DefaultRulesError(f"rule #{index + 1}: {exc}") from None
        if rule.position is not None:
            raise DefaultRulesError(f"rule {rule.name!r}: positions come from the file order")
        rules.append(rule)
    names = [r.name for r in rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DefaultRulesError(f"duplicate rule names: {duplicates}")
    catch_alls = [r.name for r in rules if not r.match]
    if len(catch_alls) != 1 or rules[-1].match:
        raise DefaultRulesError("exactly one catch-all (match {}) is required, and it is last")
    if not rules[-1].enabled:
        raise DefaultRulesError("the catch-all must be enabled")
    return tuple(rules)


@lru_cache(maxsize=1)
def default_rules() -> tuple[RuleIn, ...]:
    """The shipped default rules, in evaluation order."""
    text = (resources.files("ticketing.rules") / DEFAULT_RULES_FILE).read_text(encoding="utf-8")
    return parse_rules(text)
