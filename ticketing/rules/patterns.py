"""Match patterns of fault rules: what a pattern means and how it is compiled.

A rule's ``match`` maps a signature field (or ``code``) to a pattern:

- a string is a case-insensitive glob (``fnmatch``): ``CX0*``, ``*Temp*``, ``Faulted``;
- a string starting with ``re:`` is a regular expression that must match the whole value
  (case-sensitive unless it says ``(?i)``); it is compiled once, an invalid one is refused;
- ``null`` matches a missing value (an empty string counts as missing: chargers send
  ``vendorErrorCode: ""``);
- a list means any of its items (strings or ``null``).

A missing value never matches a non-null pattern. Every pattern is compiled into a
predicate when a rule is built, so matching is a few precompiled regex calls.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from typing import Any

REGEX_PREFIX = "re:"
#: a pattern item: a glob or ``re:`` regex, or None for "missing"
PatternItem = str | None
Pattern = PatternItem | list[PatternItem]
Predicate = Callable[[str | None], bool]


def _missing(value: str | None) -> bool:
    return value is None


def _item(pattern: PatternItem) -> Predicate:
    if pattern is None:
        return _missing
    if not isinstance(pattern, str):
        raise ValueError(f"a pattern is a string, null or a list of them, not {pattern!r}")
    if not pattern:
        raise ValueError("an empty pattern matches nothing; use null for a missing value")
    if pattern.startswith(REGEX_PREFIX):
        try:
            rx = re.compile(pattern[len(REGEX_PREFIX) :])
        except re.error as exc:
            raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
        return lambda value: value is not None and rx.fullmatch(value) is not None
    glob = re.compile(fnmatch.translate(pattern), re.IGNORECASE)
    return lambda value: value is not None and glob.match(value) is not None


def compile_pattern(pattern: Any) -> Predicate:
    """The predicate of one pattern; ``ValueError`` when it is not a valid pattern."""
    if isinstance(pattern, list):
        if not pattern:
            raise ValueError("an empty list matches nothing")
        predicates = tuple(_item(p) for p in pattern)
        if len(predicates) == 1:
            return predicates[0]
        return lambda value: any(p(value) for p in predicates)
    return _item(pattern)


def compile_match(match: Mapping[str, Any]) -> tuple[tuple[str, Predicate], ...]:
    """``(key, predicate)`` for each entry of a rule's match, in key order."""
    return tuple((key, compile_pattern(match[key])) for key in sorted(match))
